//! The pot manager: carries out the Core's pot commands (install, start, stop, restart,
//! uninstall, status, info, logs, metrics), keeps the installed pots and their desired state
//! on disk, and reports every change as a `PotStatusUpdate` plus one `CommandAnswer` per
//! command.
//!
//! Commands for one pot run one at a time (a per-pot lock); commands for different pots,
//! and a long install, never block each other or the uplink.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use honeybee_protocol::{
    format_timestamp, Command, CommandAnswer, InstallPot, Message, NodeEvent, NodeEventKind,
    PotStatus, PotStatusUpdate,
};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::logs::{self, RotatingLog};
use super::manifest::{self, Manifest};
use super::privilege::{chown_tree, RunAs};
use super::procfs;
use super::state::{self, InstalledPot};
use super::supervisor::POT_LOG;

/// Lines of the install output quoted in a failure.
const INSTALL_ERROR_TAIL_LINES: usize = 20;
/// Longest a single install step may run.
const INSTALL_STEP_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Lines answered to `GetPotLogs`.
const LOG_TAIL_LINES: usize = 200;
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// In the pot's control directory: the output of its install steps.
const INSTALL_LOG: &str = "install.log";
/// Longest line of pot output kept.
const MAX_LOG_LINE_BYTES: usize = 16 * 1024;

/// Everything the manager needs from the node's configuration.
#[derive(Debug, Clone)]
pub(crate) struct PotSettings {
    pub node_id: u64,
    /// One directory per pot instance lives here (owned by the pot user).
    pub base_dir: PathBuf,
    /// One root-owned directory per pot for what the pot must not touch: its captured
    /// output, install log and pid file.
    pub control_base: PathBuf,
    /// `pots.json`.
    pub state_file: PathBuf,
    pub potstore_dir: PathBuf,
    /// The Python kit (and Cowrie plugin), copied into each instance as `{kit}`.
    pub kit_dir: PathBuf,
    pub python: String,
    pub event_port: u16,
    pub run_as: Option<RunAs>,
    pub stop_grace: Duration,
    /// First delay before restarting a pot that died.
    pub restart_backoff: Duration,
    pub log_max_bytes: u64,
    pub log_files: usize,
    /// Node-wide defaults for config keys a pot type declares (e.g. `ssh_port`).
    pub default_config: BTreeMap<String, String>,
}

/// Tells whoever started a pot how the first start went (its pid, or why it failed), and
/// which command asked for it.
pub(super) type StartNotice = Option<(oneshot::Sender<Result<u32, String>>, Option<u64>)>;

impl PotSettings {
    /// The pot's control directory, created when missing.
    pub(super) fn control_dir(&self, pot_id: &str) -> PathBuf {
        let directory = self.control_base.join(pot_id);
        if let Err(error) = std::fs::create_dir_all(&directory) {
            tracing::warn!(pot_id, %error, "creating the pot's control directory failed");
        }
        directory
    }
}

/// The live state of one pot.
#[derive(Debug)]
pub(super) struct PotSlot {
    /// `None` while it is being installed.
    pub installed: Option<InstalledPot>,
    pub pot_type: String,
    pub status: PotStatus,
    pub message: Option<String>,
    pub pid: Option<u32>,
    pub started_at: Option<Instant>,
    pub restarts: u32,
    pub supervisor: Option<(CancellationToken, JoinHandle<()>)>,
    /// CPU seconds at the previous metrics answer, for a CPU % over that interval.
    pub cpu_sample: Option<(Instant, f64)>,
}

impl PotSlot {
    fn new(pot_type: String, installed: Option<InstalledPot>, status: PotStatus) -> Self {
        PotSlot {
            installed,
            pot_type,
            status,
            message: None,
            pid: None,
            started_at: None,
            restarts: 0,
            supervisor: None,
            cpu_sample: None,
        }
    }
}

pub(crate) struct PotManager {
    pub(super) settings: PotSettings,
    outbox: mpsc::Sender<Message>,
    pub(super) pots: Mutex<BTreeMap<String, PotSlot>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises snapshot-and-save of `pots.json` across concurrent commands.
    save_lock: Mutex<()>,
    /// Set when the node stops: no pot is started any more (an install finishing late).
    stopping: std::sync::atomic::AtomicBool,
}

/// The outcome of a command: the `CommandAnswer` fields.
struct Outcome {
    success: bool,
    message: String,
    data: Option<Value>,
}

impl Outcome {
    fn ok(message: impl Into<String>) -> Self {
        Outcome {
            success: true,
            message: message.into(),
            data: None,
        }
    }

    fn failed(message: impl Into<String>) -> Self {
        Outcome {
            success: false,
            message: message.into(),
            data: None,
        }
    }

    fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

impl PotManager {
    /// Loads the installed pots and starts those that should run.
    pub fn start(
        settings: PotSettings,
        outbox: mpsc::Sender<Message>,
    ) -> Result<Arc<Self>, String> {
        std::fs::create_dir_all(&settings.base_dir)
            .map_err(|error| format!("creating {}: {error}", settings.base_dir.display()))?;
        let installed = state::load(&settings.state_file)?;
        let manager = Arc::new(PotManager {
            settings,
            outbox,
            pots: Mutex::new(BTreeMap::new()),
            locks: Mutex::new(HashMap::new()),
            save_lock: Mutex::new(()),
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        let mut to_start = Vec::new();
        {
            let mut pots = manager.lock_pots();
            for pot in installed {
                if pot.desired_running {
                    to_start.push(pot.pot_id.clone());
                }
                let pot_type = pot.pot_type.clone();
                pots.insert(
                    pot.pot_id.clone(),
                    PotSlot::new(pot_type, Some(pot), PotStatus::Stopped),
                );
            }
        }
        for pot_id in to_start {
            tracing::info!(
                pot_id,
                "starting pot that was running before the node stopped"
            );
            manager.launch_supervisor(&pot_id, None);
        }
        Ok(manager)
    }

    pub(super) fn lock_pots(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PotSlot>> {
        self.pots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pot_lock(&self, pot_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(pot_id.to_owned())
            .or_default()
            .clone()
    }

    /// One `PotStatusUpdate` per pot: sent after every (re)registration with the Core.
    pub fn status_snapshot(&self) -> Vec<Message> {
        let pots = self.lock_pots();
        pots.iter()
            .map(|(pot_id, slot)| self.status_message(pot_id, slot, None))
            .collect()
    }

    fn status_message(&self, pot_id: &str, slot: &PotSlot, command_id: Option<u64>) -> Message {
        Message::PotStatusUpdate(PotStatusUpdate {
            node_id: self.settings.node_id,
            pot_id: pot_id.to_owned(),
            pot_type: slot.pot_type.clone(),
            status: slot.status,
            message: slot.message.clone(),
            command_id,
        })
    }

    /// Records a pot's new status and reports it to the Core.
    pub(super) fn report(
        &self,
        pot_id: &str,
        status: PotStatus,
        message: Option<String>,
        command_id: Option<u64>,
    ) {
        let update = {
            let mut pots = self.lock_pots();
            let Some(slot) = pots.get_mut(pot_id) else {
                return;
            };
            slot.status = status;
            slot.message = message;
            self.status_message(pot_id, slot, command_id)
        };
        match status {
            PotStatus::Failed => {
                tracing::warn!(pot_id, detail = ?update_detail(&update), "pot failed")
            }
            _ => {
                tracing::info!(pot_id, status = ?status, detail = ?update_detail(&update), "pot status")
            }
        }
        self.send(update);
    }

    /// A status update for a pot that has no slot (e.g. a refused install).
    fn report_unslotted(
        &self,
        pot_id: &str,
        pot_type: &str,
        message: String,
        command_id: Option<u64>,
    ) {
        tracing::warn!(pot_id, detail = %message, "pot command failed");
        self.send(Message::PotStatusUpdate(PotStatusUpdate {
            node_id: self.settings.node_id,
            pot_id: pot_id.to_owned(),
            pot_type: pot_type.to_owned(),
            status: PotStatus::Failed,
            message: Some(message),
            command_id,
        }));
    }

    fn send(&self, message: Message) {
        // Statuses are state, re-sent in full after every reconnection: when the outbox is
        // full (the Core unreachable for long) dropping one loses nothing lasting.
        if self.outbox.try_send(message).is_err() {
            tracing::debug!("pot report dropped: the uplink outbox is full");
        }
    }

    fn persist(&self) {
        let _saving = self.save_lock.lock().unwrap_or_else(|p| p.into_inner());
        let installed: Vec<InstalledPot> = self
            .lock_pots()
            .values()
            .filter_map(|slot| slot.installed.clone())
            .collect();
        if let Err(error) = state::save(&self.settings.state_file, &installed) {
            tracing::error!(%error, path = %self.settings.state_file.display(), "saving the installed pots failed");
        }
    }

    /// Carries out one command from the Core and answers it.
    pub async fn handle(self: Arc<Self>, command: Command, command_id: Option<u64>) {
        let name = command.variant_name();
        let pot_id = command.pot_id().map(str::to_owned);
        let outcome = match command {
            Command::InstallPot(install) => self.install(install, command_id).await,
            Command::DeployPot(pot_id) => self.deploy(&pot_id, command_id).await,
            Command::StopPot(pot_id) => self.stop(&pot_id, command_id).await,
            Command::RestartPot(pot_id) => self.restart(&pot_id, command_id).await,
            Command::UninstallPot(pot_id) => self.uninstall(&pot_id).await,
            Command::GetPotStatus(pot_id) => self.get_status(&pot_id, command_id),
            Command::GetPotInfo(pot_id) => self.info(&pot_id),
            Command::GetPotLogs(pot_id) => self.logs(&pot_id),
            Command::GetPotMetrics(pot_id) => self.metrics(&pot_id),
            Command::GetInstalledPots => self.installed_pots(command_id),
            Command::Restart | Command::UpdateConfig => {
                let message = format!("{name} is not supported by this node version");
                self.send(Message::NodeEvent(NodeEvent {
                    kind: NodeEventKind::Error,
                    message: Some(message.clone()),
                }));
                Outcome::failed(message)
            }
        };
        let answer = Message::CommandAnswer(CommandAnswer {
            node_id: self.settings.node_id,
            command_id,
            command: name.to_owned(),
            pot_id,
            success: outcome.success,
            message: Some(outcome.message),
            data: outcome.data,
        });
        // Unlike statuses, an answer is waited for: it is never dropped.
        let _ = self.outbox.send(answer).await;
    }

    /// The installed pot, or an outcome saying it is not installed (also reported).
    fn installed(&self, pot_id: &str) -> Result<InstalledPot, Outcome> {
        let found = self
            .lock_pots()
            .get(pot_id)
            .and_then(|slot| slot.installed.clone());
        // No status update for a pot that does not exist: the Core would keep a row for it.
        found
            .ok_or_else(|| Outcome::failed(format!("pot {pot_id:?} is not installed on this node")))
    }

    async fn install(self: &Arc<Self>, install: InstallPot, command_id: Option<u64>) -> Outcome {
        let pot_id = install.pot_id.clone();
        if !manifest::valid_id(&pot_id) {
            let message =
                format!("invalid pot id {pot_id:?}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit");
            self.report_unslotted(&pot_id, &install.honeypot_type, message.clone(), command_id);
            return Outcome::failed(message);
        }
        let lock = self.pot_lock(&pot_id);
        let _guard = lock.lock().await;
        {
            let mut pots = self.lock_pots();
            if let Some(existing) = pots.get(&pot_id) {
                let message = format!(
                    "pot id {pot_id:?} is already installed (type {}); uninstall it first",
                    existing.pot_type
                );
                drop(pots);
                // The existing pot's status stays as it is; only this command fails.
                tracing::warn!(pot_id, "refused a second install under one pot id");
                return Outcome::failed(message);
            }
            pots.insert(
                pot_id.clone(),
                PotSlot::new(install.honeypot_type.clone(), None, PotStatus::Installing),
            );
        }
        let source = install.git_url.clone().unwrap_or_else(|| "potstore".into());
        self.report(
            &pot_id,
            PotStatus::Installing,
            Some(format!(
                "installing {} from {source}",
                install.honeypot_type
            )),
            command_id,
        );
        match self.install_files(&install, command_id).await {
            Ok(installed) => {
                let auto_start = install.auto_start;
                if let Some(slot) = self.lock_pots().get_mut(&pot_id) {
                    slot.installed = Some(installed);
                }
                self.persist();
                self.report(
                    &pot_id,
                    PotStatus::Stopped,
                    Some("installed".into()),
                    command_id,
                );
                if auto_start {
                    return self.start_and_wait(&pot_id, command_id).await;
                }
                Outcome::ok(format!("installed {pot_id}"))
            }
            Err(reason) => {
                let instance = self.settings.base_dir.join(&pot_id);
                let _ = std::fs::remove_dir_all(&instance);
                self.report(&pot_id, PotStatus::Failed, Some(reason.clone()), command_id);
                self.lock_pots().remove(&pot_id);
                Outcome::failed(reason)
            }
        }
    }

    /// Fetches the definition, lays out the instance directory and runs the install steps.
    async fn install_files(
        &self,
        install: &InstallPot,
        command_id: Option<u64>,
    ) -> Result<InstalledPot, String> {
        let pot_id = &install.pot_id;
        let sources = self.settings.base_dir.join(".sources").join(pot_id);
        let potstore_dir = match &install.git_url {
            Some(url) => {
                clone_repository(url, install.git_branch.as_deref(), &sources).await?;
                sources.clone()
            }
            None => self.settings.potstore_dir.clone(),
        };
        let result = self.lay_out(install, &potstore_dir, command_id).await;
        let _ = std::fs::remove_dir_all(&sources);
        result
    }

    async fn lay_out(
        &self,
        install: &InstallPot,
        potstore_dir: &Path,
        command_id: Option<u64>,
    ) -> Result<InstalledPot, String> {
        let pot_id = &install.pot_id;
        let manifest = Manifest::load(potstore_dir).map_err(|error| error.to_string())?;
        let definition = manifest
            .find(&install.honeypot_type)
            .map_err(|error| error.to_string())?
            .clone();
        let instance = self.settings.base_dir.join(pot_id);
        let values = self.placeholder_values(install, &definition, &instance)?;
        let render = |text: &str| manifest::render(text, &values);

        for requirement in &definition.requirements {
            let executable = render(requirement)?;
            if !executable_exists(&executable) {
                return Err(format!(
                    "requirement {executable:?} of {} is not installed on this node",
                    definition.id
                ));
            }
        }
        let ports = parse_ports(&render(&definition.ports)?)?;

        if instance.exists() {
            std::fs::remove_dir_all(&instance)
                .map_err(|error| format!("removing a stale {}: {error}", instance.display()))?;
        }
        let io = |what: &str, path: &Path, error: std::io::Error| {
            format!("{what} {}: {error}", path.display())
        };
        std::fs::create_dir_all(&instance).map_err(|e| io("creating", &instance, e))?;
        if let Some(files) = &definition.files {
            copy_tree(&potstore_dir.join(files), &instance.join("files"))
                .map_err(|e| io("copying the pot files to", &instance, e))?;
        }
        copy_tree(&self.settings.kit_dir, &instance.join("kit"))
            .map_err(|e| io("copying the kit to", &instance, e))?;
        for directory in &definition.directories {
            std::fs::create_dir_all(instance.join(directory))
                .map_err(|e| io("creating", &instance.join(directory), e))?;
        }
        for template in &definition.templates {
            let source = instance.join("files").join(&template.source);
            let text =
                std::fs::read_to_string(&source).map_err(|e| io("reading template", &source, e))?;
            let rendered =
                render(&text).map_err(|error| format!("template {}: {error}", template.source))?;
            let target = instance.join(&template.target);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
            }
            std::fs::write(&target, rendered).map_err(|e| io("writing", &target, e))?;
        }
        chown_tree(&instance, self.settings.run_as.as_ref())
            .map_err(|e| io("giving the pot user", &instance, e))?;

        let steps = definition.install.len();
        for (index, step) in definition.install.iter().enumerate() {
            let argv: Vec<String> = step
                .iter()
                .map(|part| render(part))
                .collect::<Result<_, _>>()?;
            if argv.is_empty() {
                continue;
            }
            self.report(
                pot_id,
                PotStatus::Installing,
                Some(format!("step {}/{steps}: {}", index + 1, argv.join(" "))),
                command_id,
            );
            self.run_install_step(pot_id, &definition.env, &values, &instance, &argv)
                .await
                .map_err(|reason| {
                    format!(
                        "install step {}/{steps} ({}) failed: {reason}",
                        index + 1,
                        argv.join(" ")
                    )
                })?;
        }
        Ok(InstalledPot {
            pot_id: pot_id.clone(),
            pot_type: definition.id.clone(),
            version: definition.version.clone(),
            source: install.git_url.clone().unwrap_or_else(|| "potstore".into()),
            definition,
            values,
            ports,
            instance_dir: instance,
            desired_running: install.auto_start,
            installed_at: format_timestamp(Utc::now()),
        })
    }

    /// The placeholders the node itself provides, as they are now.
    fn node_values(
        &self,
        pot_id: &str,
        pot_type: &str,
        instance: &Path,
    ) -> BTreeMap<String, String> {
        let path = |p: PathBuf| p.display().to_string();
        BTreeMap::from([
            ("instance".to_owned(), path(instance.to_path_buf())),
            ("files".to_owned(), path(instance.join("files"))),
            ("kit".to_owned(), path(instance.join("kit"))),
            ("python".to_owned(), self.settings.python.clone()),
            ("pot_id".to_owned(), pot_id.to_owned()),
            ("pot_type".to_owned(), pot_type.to_owned()),
            (
                "event_port".to_owned(),
                self.settings.event_port.to_string(),
            ),
        ])
    }

    /// Before each start: when a node value changed since the install (the ingest port, the
    /// interpreter), the pot's templates are rendered again, so it reports to where the node
    /// listens now. No pot process runs at this point.
    pub(super) fn refresh_node_values(&self, pot_id: &str) -> Result<(), String> {
        let Some(mut installed) = self
            .lock_pots()
            .get(pot_id)
            .and_then(|slot| slot.installed.clone())
        else {
            return Ok(());
        };
        let current = self.node_values(pot_id, &installed.pot_type, &installed.instance_dir);
        if current
            .iter()
            .all(|(key, value)| installed.values.get(key) == Some(value))
        {
            return Ok(());
        }
        tracing::info!(
            pot_id,
            "node settings changed since the install; rendering the pot's templates again"
        );
        installed.values.extend(current);
        let files = installed.instance_dir.join("files");
        for template in &installed.definition.templates {
            let source = files.join(&template.source);
            let text = std::fs::read_to_string(&source)
                .map_err(|error| format!("reading template {}: {error}", source.display()))?;
            let rendered = manifest::render(&text, &installed.values)
                .map_err(|error| format!("template {}: {error}", template.source))?;
            write_inside(
                &installed.instance_dir,
                &template.target,
                &rendered,
                self.settings.run_as.as_ref(),
            )?;
        }
        if let Some(slot) = self.lock_pots().get_mut(pot_id) {
            slot.installed = Some(installed);
        }
        self.persist();
        Ok(())
    }

    /// Config defaults, node defaults, the command's config, then the node's own values.
    fn placeholder_values(
        &self,
        install: &InstallPot,
        definition: &manifest::PotDefinition,
        instance: &Path,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut values = definition.config.clone();
        for (key, value) in &self.settings.default_config {
            if values.contains_key(key) {
                values.insert(key.clone(), value.clone());
            }
        }
        for (key, value) in install.config.iter().flatten() {
            if value.chars().any(char::is_control) {
                return Err(format!(
                    "config value for {key:?} contains control characters"
                ));
            }
            if manifest::BUILTIN_PLACEHOLDERS.contains(&key.as_str()) {
                return Err(format!(
                    "config key {key:?} is set by the node and cannot be overridden"
                ));
            }
            values.insert(key.clone(), value.clone());
        }
        values.extend(self.node_values(&install.pot_id, &definition.id, instance));
        Ok(values)
    }

    /// A command for a pot's process: its user, its environment, its own process group.
    pub(super) fn pot_command(
        &self,
        env: &BTreeMap<String, String>,
        values: &BTreeMap<String, String>,
        instance: &Path,
        working_dir: &Path,
        argv: &[String],
    ) -> Result<tokio::process::Command, String> {
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir(working_dir)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .env("HOME", instance)
            .env("LANG", "C.UTF-8")
            .env("HONEYBEE_EVENT_HOST", "127.0.0.1")
            .env("HONEYBEE_EVENT_PORT", self.settings.event_port.to_string())
            .env(
                "HONEYBEE_POT_ID",
                values.get("pot_id").cloned().unwrap_or_default(),
            )
            .env(
                "HONEYBEE_HONEYPOT_TYPE",
                values.get("pot_type").cloned().unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, manifest::render(value, values)?);
        }
        if let Some(run_as) = &self.settings.run_as {
            command.uid(run_as.uid).gid(run_as.gid);
        }
        Ok(command)
    }

    async fn run_install_step(
        &self,
        pot_id: &str,
        env: &BTreeMap<String, String>,
        values: &BTreeMap<String, String>,
        instance: &Path,
        argv: &[String],
    ) -> Result<(), String> {
        let mut child = self
            .pot_command(env, values, instance, instance, argv)?
            .spawn()
            .map_err(|error| format!("cannot run {:?}: {error}", argv[0]))?;
        let log = Arc::new(Mutex::new(RotatingLog::new(
            self.settings.control_dir(pot_id).join(INSTALL_LOG),
            self.settings.log_max_bytes,
            self.settings.log_files,
        )));
        let tail = Arc::new(Mutex::new(Vec::<String>::new()));
        let pumps = [
            child
                .stdout
                .take()
                .map(|out| pump_lines(out, log.clone(), Some(tail.clone()))),
            child
                .stderr
                .take()
                .map(|err| pump_lines(err, log.clone(), Some(tail.clone()))),
        ];
        let pid = child.id().unwrap_or(0);
        let status = match tokio::time::timeout(INSTALL_STEP_TIMEOUT, child.wait()).await {
            Ok(status) => status.map_err(|error| format!("waiting for the step: {error}"))?,
            Err(_) => {
                terminate_group(&mut child, pid, Duration::from_secs(5)).await;
                return Err(format!(
                    "timed out after {} s",
                    INSTALL_STEP_TIMEOUT.as_secs()
                ));
            }
        };
        // A step may leave a background process holding its output open: end the group,
        // and give the readers a bounded time to finish.
        terminate_group(&mut child, pid, Duration::ZERO).await;
        for pump in pumps.into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
        }
        if status.success() {
            return Ok(());
        }
        let lines = tail.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let start = lines.len().saturating_sub(INSTALL_ERROR_TAIL_LINES);
        Err(format!("{status}; output:\n{}", lines[start..].join("\n")))
    }

    async fn deploy(self: &Arc<Self>, pot_id: &str, command_id: Option<u64>) -> Outcome {
        let lock = self.pot_lock(pot_id);
        let _guard = lock.lock().await;
        if let Err(outcome) = self.installed(pot_id) {
            return outcome;
        }
        let running = self
            .lock_pots()
            .get(pot_id)
            .and_then(|slot| slot.supervisor.as_ref())
            .is_some_and(|(_, task)| !task.is_finished());
        if running {
            self.get_status(pot_id, command_id);
            return Outcome::ok(format!("{pot_id} is already running"));
        }
        self.set_desired(pot_id, true);
        self.start_and_wait(pot_id, command_id).await
    }

    /// Starts the supervisor and waits for the first outcome (healthy, or why not).
    async fn start_and_wait(self: &Arc<Self>, pot_id: &str, command_id: Option<u64>) -> Outcome {
        let (started_sender, started) = oneshot::channel();
        self.launch_supervisor(pot_id, Some((started_sender, command_id)));
        match started.await {
            Ok(Ok(pid)) => Outcome::ok(format!("{pot_id} is running (pid {pid})"))
                .with_data(json!({"pid": pid})),
            Ok(Err(reason)) => Outcome::failed(reason),
            Err(_) => Outcome::failed(format!("{pot_id} stopped before it was running")),
        }
    }

    fn launch_supervisor(self: &Arc<Self>, pot_id: &str, started: StartNotice) {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some((sender, _)) = started {
                let _ = sender.send(Err("the node is stopping".into()));
            }
            return;
        }
        let stop = CancellationToken::new();
        let manager = self.clone();
        let task = tokio::spawn(manager.clone().supervise(
            pot_id.to_owned(),
            stop.clone(),
            started,
        ));
        if let Some(slot) = self.lock_pots().get_mut(pot_id) {
            slot.supervisor = Some((stop, task));
            slot.restarts = 0;
        }
    }

    fn set_desired(&self, pot_id: &str, running: bool) {
        if let Some(installed) = self
            .lock_pots()
            .get_mut(pot_id)
            .and_then(|slot| slot.installed.as_mut())
        {
            installed.desired_running = running;
        }
        self.persist();
    }

    /// Stops the pot's processes (if running) and waits until they are gone.
    async fn halt(&self, pot_id: &str) {
        let supervisor = self
            .lock_pots()
            .get_mut(pot_id)
            .and_then(|slot| slot.supervisor.take());
        if let Some((stop, task)) = supervisor {
            stop.cancel();
            let _ = task.await;
        }
    }

    async fn stop(self: &Arc<Self>, pot_id: &str, command_id: Option<u64>) -> Outcome {
        let lock = self.pot_lock(pot_id);
        let _guard = lock.lock().await;
        if let Err(outcome) = self.installed(pot_id) {
            return outcome;
        }
        self.set_desired(pot_id, false);
        self.halt(pot_id).await;
        self.report(
            pot_id,
            PotStatus::Stopped,
            Some("stopped on command".into()),
            command_id,
        );
        Outcome::ok(format!("{pot_id} stopped"))
    }

    async fn restart(self: &Arc<Self>, pot_id: &str, command_id: Option<u64>) -> Outcome {
        let lock = self.pot_lock(pot_id);
        let _guard = lock.lock().await;
        if let Err(outcome) = self.installed(pot_id) {
            return outcome;
        }
        self.halt(pot_id).await;
        self.report(
            pot_id,
            PotStatus::Stopped,
            Some("restarting".into()),
            command_id,
        );
        self.set_desired(pot_id, true);
        self.start_and_wait(pot_id, command_id).await
    }

    async fn uninstall(self: &Arc<Self>, pot_id: &str) -> Outcome {
        let lock = self.pot_lock(pot_id);
        let _guard = lock.lock().await;
        let Some(installed) = self
            .lock_pots()
            .get(pot_id)
            .and_then(|slot| slot.installed.clone())
        else {
            // Nothing to remove is what the operator wanted: this also clears a pot the Core
            // still lists after a failed install.
            return Outcome::ok(format!(
                "{pot_id} is not installed on this node; nothing to remove"
            ));
        };
        self.halt(pot_id).await;
        self.lock_pots().remove(pot_id);
        self.persist();
        let _ = std::fs::remove_dir_all(self.settings.control_base.join(pot_id));
        if let Err(error) = std::fs::remove_dir_all(&installed.instance_dir) {
            return Outcome::failed(format!(
                "{pot_id} was removed from the node but {} could not be deleted: {error}",
                installed.instance_dir.display()
            ));
        }
        tracing::info!(pot_id, "pot uninstalled");
        Outcome::ok(format!("{pot_id} uninstalled"))
    }

    fn get_status(&self, pot_id: &str, command_id: Option<u64>) -> Outcome {
        let update = self.lock_pots().get(pot_id).map(|slot| {
            (
                self.status_message(pot_id, slot, command_id),
                slot.status,
                slot.message.clone(),
            )
        });
        match update {
            Some((message, status, detail)) => {
                self.send(message);
                Outcome::ok(format!("{pot_id} is {status:?}"))
                    .with_data(json!({"status": format!("{status:?}"), "message": detail}))
            }
            None => Outcome::failed(format!("pot {pot_id:?} is not installed on this node")),
        }
    }

    fn info(&self, pot_id: &str) -> Outcome {
        let pots = self.lock_pots();
        let Some((slot, installed)) = pots
            .get(pot_id)
            .and_then(|slot| Some((slot, slot.installed.as_ref()?)))
        else {
            return Outcome::failed(format!("pot {pot_id:?} is not installed on this node"));
        };
        let config: BTreeMap<&String, &String> = installed
            .values
            .iter()
            .filter(|(key, _)| installed.definition.config.contains_key(*key))
            .collect();
        Outcome::ok(format!(
            "{pot_id}: {} {}",
            installed.pot_type, installed.version
        ))
        .with_data(json!({
            "pot_id": pot_id,
            "pot_type": installed.pot_type,
            "version": installed.version,
            "description": installed.definition.description,
            "protocols": installed.definition.protocols,
            "source": installed.source,
            "status": format!("{:?}", slot.status),
            "ports": installed.ports,
            "pid": slot.pid,
            "uptime_seconds": slot.started_at.map(|at| at.elapsed().as_secs_f64()),
            "restarts": slot.restarts,
            "install_path": installed.instance_dir,
            "installed_at": installed.installed_at,
            "desired_running": installed.desired_running,
            "config": config,
        }))
    }

    fn logs(&self, pot_id: &str) -> Outcome {
        if self.installed(pot_id).is_err() {
            return Outcome::failed(format!("pot {pot_id:?} is not installed on this node"));
        }
        let path = self.settings.control_base.join(pot_id).join(POT_LOG);
        let lines = logs::tail(&path, LOG_TAIL_LINES);
        Outcome::ok(format!("{} lines of {pot_id}'s output", lines.len()))
            .with_data(json!({"lines": lines}))
    }

    fn metrics(&self, pot_id: &str) -> Outcome {
        let (pid, restarts, started_at, previous) = {
            let pots = self.lock_pots();
            let Some(slot) = pots.get(pot_id).filter(|slot| slot.installed.is_some()) else {
                return Outcome::failed(format!("pot {pot_id:?} is not installed on this node"));
            };
            (slot.pid, slot.restarts, slot.started_at, slot.cpu_sample)
        };
        let Some(pid) = pid else {
            return Outcome::ok(format!("{pot_id} is not running")).with_data(json!({
                "pid": null, "cpu_percent": 0.0, "cpu_seconds": 0.0, "rss_bytes": 0,
                "uptime_seconds": 0.0, "restarts": restarts, "processes": 0,
            }));
        };
        // Scanning /proc takes a while: not under the pots lock.
        let usage = procfs::group_usage(pid);
        let now = Instant::now();
        let uptime = started_at.map_or(0.0, |at| at.elapsed().as_secs_f64());
        // CPU % over the interval since the previous answer, or since the start.
        let (since, cpu_before) = previous.unwrap_or((started_at.unwrap_or(now), 0.0));
        let interval = now.duration_since(since).as_secs_f64();
        let cpu_percent = if interval > 0.0 {
            ((usage.cpu_seconds - cpu_before).max(0.0) / interval) * 100.0
        } else {
            0.0
        };
        if let Some(slot) = self.lock_pots().get_mut(pot_id) {
            slot.cpu_sample = Some((now, usage.cpu_seconds));
        }
        Outcome::ok(format!(
            "{pot_id}: {} processes, {} bytes resident",
            usage.processes, usage.rss_bytes
        ))
        .with_data(json!({
            "pid": pid,
            "cpu_percent": (cpu_percent * 100.0).round() / 100.0,
            "cpu_seconds": usage.cpu_seconds,
            "rss_bytes": usage.rss_bytes,
            "uptime_seconds": uptime,
            "restarts": restarts,
            "processes": usage.processes,
        }))
    }

    fn installed_pots(&self, command_id: Option<u64>) -> Outcome {
        let (messages, listing): (Vec<Message>, Vec<Value>) = self
            .lock_pots()
            .iter()
            .map(|(pot_id, slot)| {
                (
                    self.status_message(pot_id, slot, command_id),
                    json!({"pot_id": pot_id, "pot_type": slot.pot_type, "status": format!("{:?}", slot.status)}),
                )
            })
            .unzip();
        for message in messages {
            self.send(message);
        }
        Outcome::ok(format!("{} pots installed", listing.len())).with_data(json!({"pots": listing}))
    }

    /// Stops every running pot (node shutdown); their desired state is kept, so they come
    /// back when the node starts again.
    pub async fn stop_all(self: &Arc<Self>) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let pot_ids: Vec<String> = self.lock_pots().keys().cloned().collect();
        // All at once: the node's shutdown waits for the slowest pot, not for their sum.
        let mut halting = tokio::task::JoinSet::new();
        for pot_id in pot_ids {
            let manager = self.clone();
            halting.spawn(async move {
                let was_running = manager
                    .lock_pots()
                    .get(&pot_id)
                    .is_some_and(|slot| slot.supervisor.is_some());
                manager.halt(&pot_id).await;
                if was_running {
                    manager.report(
                        &pot_id,
                        PotStatus::Stopped,
                        Some("node stopping".into()),
                        None,
                    );
                }
            });
        }
        while halting.join_next().await.is_some() {}
    }
}

fn update_detail(message: &Message) -> Option<&str> {
    match message {
        Message::PotStatusUpdate(update) => update.message.as_deref(),
        _ => None,
    }
}

/// Copies lines of a child's output into the pot's log (and, for installs, a tail buffer).
/// A line longer than [`MAX_LOG_LINE_BYTES`] is cut there: a pot cannot make the node buffer
/// without bound.
pub(super) fn pump_lines(
    output: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    log: Arc<Mutex<RotatingLog>>,
    tail: Option<Arc<Mutex<Vec<String>>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut framer = honeybee_protocol::LineFramer::new(MAX_LOG_LINE_BYTES);
        let mut reader = output;
        let mut buffer = vec![0u8; 8192];
        let mut lines = Vec::new();
        loop {
            let count = match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(count) => count,
            };
            framer.push(&buffer[..count]);
            while let Some(framed) = framer.next_line() {
                lines.push(match framed {
                    honeybee_protocol::FramedLine::Line(line) => line.to_vec(),
                    honeybee_protocol::FramedLine::TooLong => b"[line too long, cut]".to_vec(),
                });
            }
            for line in lines.drain(..) {
                write_log_line(&log, tail.as_ref(), &line);
            }
        }
        if let Some(rest) = framer.finish() {
            let rest = rest.to_vec();
            write_log_line(&log, tail.as_ref(), &rest);
        }
    })
}

fn write_log_line(log: &Mutex<RotatingLog>, tail: Option<&Arc<Mutex<Vec<String>>>>, line: &[u8]) {
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .write_line(line);
    if let Some(tail) = tail {
        let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.push(String::from_utf8_lossy(line).into_owned());
        if tail.len() > INSTALL_ERROR_TAIL_LINES * 4 {
            tail.drain(..INSTALL_ERROR_TAIL_LINES * 2);
        }
    }
}

/// SIGTERM to the child's whole process group, SIGKILL after `grace`: no orphans. `pid` is
/// the one recorded at spawn (the child may be reaped already, and then has no id).
pub(super) async fn terminate_group(child: &mut tokio::process::Child, pid: u32, grace: Duration) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    if pid == 0 {
        return;
    }
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(pid, "pot ignored SIGTERM; killing its process group");
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Whatever the leader left behind in its group goes too.
    let _ = killpg(group, Signal::SIGKILL);
}

async fn clone_repository(url: &str, branch: Option<&str>, target: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(target);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| format!("creating {}: {error}", parent.display()))?;
    }
    let mut command = tokio::process::Command::new("git");
    command.args(["clone", "--quiet", "--depth", "1"]);
    if let Some(branch) = branch {
        command.args(["--branch", branch]);
    }
    command
        .arg("--")
        .arg(url)
        .arg(target)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .map_err(|_| format!("git clone {url} timed out"))?
        .map_err(|error| format!("cannot run git: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "git clone {url} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

fn executable_exists(name: &str) -> bool {
    if name.contains('/') {
        return Path::new(name).is_file();
    }
    DEFAULT_PATH
        .split(':')
        .any(|directory| Path::new(directory).join(name).is_file())
}

fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| match part.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(format!("invalid port {part:?} in {text:?}")),
        })
        .collect()
}

/// Writes `relative` below `root` as root into a directory the pot user owns: no component
/// may be a symbolic link (the pot could point it anywhere), and the file is opened without
/// following one. The file is then given to the pot user.
fn write_inside(
    root: &Path,
    relative: &str,
    content: &str,
    run_as: Option<&RunAs>,
) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !manifest::safe_relative(relative) {
        return Err(format!("path {relative:?} leaves the instance directory"));
    }
    let target = root.join(relative);
    let mut walked = root.to_path_buf();
    for component in Path::new(relative).components() {
        walked.push(component);
        if std::fs::symlink_metadata(&walked).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!(
                "refusing to write through the symbolic link {}",
                walked.display()
            ));
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&target)
        .map_err(|error| format!("writing {}: {error}", target.display()))?;
    file.write_all(content.as_bytes())
        .map_err(|error| format!("writing {}: {error}", target.display()))?;
    chown_tree(&target, run_as)
        .map_err(|error| format!("giving {} to the pot user: {error}", target.display()))
}

fn copy_tree(source: &Path, target: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(target)?;
    for entry in std::fs::read_dir(source)? {
        let entry = entry?;
        let destination = target.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            // A link could hand any file the node can read to the pot user.
            return Err(std::io::Error::other(format!(
                "refusing the symbolic link {}",
                entry.path().display()
            )));
        }
        if kind.is_dir() {
            copy_tree(&entry.path(), &destination)?;
        } else {
            std::fs::copy(entry.path(), destination)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_never_copied_or_written_through_symbolic_links() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("ok.txt"), "ok").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", source.join("link")).unwrap();
        let error = copy_tree(&source, &dir.path().join("copy"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("symbolic link"), "{error}");

        let instance = dir.path().join("instance");
        std::fs::create_dir_all(instance.join("etc")).unwrap();
        write_inside(&instance, "etc/real.cfg", "x", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(instance.join("etc/real.cfg")).unwrap(),
            "x"
        );
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "secret").unwrap();
        std::os::unix::fs::symlink(&secret, instance.join("etc/cowrie.cfg")).unwrap();
        let error = write_inside(&instance, "etc/cowrie.cfg", "overwritten", None).unwrap_err();
        assert!(error.contains("symbolic link"), "{error}");
        std::os::unix::fs::symlink(dir.path(), instance.join("state")).unwrap();
        assert!(write_inside(&instance, "state/secret", "overwritten", None).is_err());
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
        assert!(write_inside(&instance, "../escape", "x", None).is_err());
    }

    #[test]
    fn ports_are_parsed_and_bad_ones_named() {
        assert_eq!(parse_ports("2222, 2223").unwrap(), vec![2222, 2223]);
        assert_eq!(parse_ports("").unwrap(), Vec::<u16>::new());
        assert!(parse_ports("22,x").unwrap_err().contains("\"x\""));
        assert!(parse_ports("70000").is_err());
    }
}
