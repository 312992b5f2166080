//! The pot manager: carries out the Core's pot commands (install, start, stop, restart,
//! uninstall, status, info, logs, metrics), keeps the installed pots and their desired state
//! on disk, and reports every change as a `PotStatusUpdate` plus one `CommandAnswer` per
//! command.
//!
//! Commands for one pot run one at a time (a per-pot lock); commands for different pots,
//! and a long install, never block each other or the uplink.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use honeybee_protocol::{
    Command, CommandAnswer, Message, NodeEvent, NodeEventKind, PotStatus, PotStatusUpdate,
};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::caught::run_caught;
use super::git_source::GitPolicy;
use super::logs::{self, RotatingLog};
use super::pot_users;
use super::privilege::{PotPrivilege, RunAs};
use super::procfs;
use super::redact::redact_credentials;
use super::scheduling;
use super::state::{self, InstalledPot};
use super::stopping::end_user_processes;
use super::supervisor::POT_LOG;
use crate::pot_identities::{PotIdentities, PotIdentity};

/// Lines of the install output quoted in a failure.
pub(super) const INSTALL_ERROR_TAIL_LINES: usize = 20;
/// Lines answered to `GetPotLogs`.
const LOG_TAIL_LINES: usize = 200;
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
    /// Per-pot users (root) or the node's own user (opted in).
    pub privilege: PotPrivilege,
    /// uid → pot, shared with ingest.
    pub identities: Arc<PotIdentities>,
    /// Which git URLs installs accept.
    pub git: GitPolicy,
    pub stop_grace: Duration,
    /// First delay before restarting a pot that died.
    pub restart_backoff: Duration,
    pub log_max_bytes: u64,
    pub log_files: usize,
    /// Node-wide defaults for config keys a pot type declares (e.g. `ssh_port`).
    pub default_config: BTreeMap<String, String>,
    /// Counts stops (and uninstalls, starts) refused because processes of a pot's user
    /// survived SIGKILL.
    pub processes_survived: Arc<honeybee_telemetry::Counter>,
}

/// Tells whoever started a pot how the first start went (its pid, or why it failed), and
/// which command asked for it.
pub(super) type StartNotice = Option<(oneshot::Sender<Result<u32, String>>, Option<u64>)>;

impl PotSettings {
    /// The pot's control directory, created (0700, like its parent) when missing.
    pub(super) fn control_dir(&self, pot_id: &str) -> PathBuf {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let directory = self.control_base.join(pot_id);
        let created = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&directory);
        let private = [&self.control_base, &directory]
            .into_iter()
            .try_for_each(|path| {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            });
        if let Err(error) = created.and(private) {
            tracing::warn!(pot_id, %error, "creating the pot's control directory failed");
        }
        directory
    }

    /// The user pot `pot_id` runs as: its own (created when missing, and registered so that
    /// ingest knows its events), or `None` when pots run as the node's own user.
    pub(super) fn pot_user(&self, pot_id: &str, pot_type: &str) -> Result<Option<RunAs>, String> {
        let user = match &self.privilege {
            PotPrivilege::NodeUser => return Ok(None),
            PotPrivilege::SubordinateIds { prefix, ids } => {
                // No account and no cron or at for a subordinate id: nothing to create.
                pot_users::subordinate_pot_user(prefix, pot_id, *ids)
            }
            PotPrivilege::PerPotUsers { prefix } => {
                let user = pot_users::ensure_pot_user(&pot_users::pot_user_name(prefix, pot_id))?;
                // Every time, not only at creation: users made by earlier versions are
                // denied too, and a job queued before that is removed before the pot runs
                // again.
                scheduling::deny_scheduling(&user, &scheduling::SchedulingPaths::system())
                    .map_err(|error| {
                        format!(
                            "keeping pot user {} away from cron and at: {error}",
                            user.name
                        )
                    })?;
                user
            }
        };
        self.identities.insert(
            user.uid,
            PotIdentity {
                pot_id: pot_id.to_owned(),
                pot_type: pot_type.to_owned(),
            },
        );
        Ok(Some(user))
    }

    /// The pot's user if it exists, without creating it.
    pub(super) fn existing_pot_user(&self, pot_id: &str) -> Option<RunAs> {
        match &self.privilege {
            PotPrivilege::NodeUser => None,
            PotPrivilege::SubordinateIds { prefix, ids } => {
                Some(pot_users::subordinate_pot_user(prefix, pot_id, *ids))
            }
            PotPrivilege::PerPotUsers { prefix } => {
                pot_users::existing_user(&pot_users::pot_user_name(prefix, pot_id))
            }
        }
    }

    /// Whether pots run as system accounts (created and removed with them).
    pub(super) fn pot_users_have_accounts(&self) -> bool {
        matches!(self.privilege, PotPrivilege::PerPotUsers { .. })
    }

    /// Why pot `pot_id` cannot be installed beside the `installed` ones: in the node's user
    /// namespace another of them has the subordinate id it would run as.
    pub(super) fn pot_user_clash<'a>(
        &self,
        pot_id: &str,
        installed: impl IntoIterator<Item = &'a String>,
    ) -> Option<String> {
        let PotPrivilege::SubordinateIds { ids, .. } = &self.privilege else {
            return None;
        };
        pot_users::clashing_pot(pot_id, installed, *ids).map(|other| {
            format!("pot id {pot_id:?} would run as the same subordinate id as pot {other:?}; choose another pot id")
        })
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
    pub(super) fn new(
        pot_type: String,
        installed: Option<InstalledPot>,
        status: PotStatus,
    ) -> Self {
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
pub(super) struct Outcome {
    success: bool,
    message: String,
    data: Option<Value>,
}

impl Outcome {
    pub(super) fn ok(message: impl Into<String>) -> Self {
        Outcome {
            success: true,
            message: message.into(),
            data: None,
        }
    }

    pub(super) fn failed(message: impl Into<String>) -> Self {
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

    pub(super) fn pot_lock(&self, pot_id: &str) -> Arc<tokio::sync::Mutex<()>> {
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
            // Whatever a message quotes (a git URL, git's or a step's output), no credentials
            // leave the node.
            slot.message = message.map(|text| redact_credentials(&text));
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
    pub(super) fn report_unslotted(
        &self,
        pot_id: &str,
        pot_type: &str,
        message: String,
        command_id: Option<u64>,
    ) {
        let message = redact_credentials(&message);
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

    pub(super) fn persist(&self) {
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

    /// The directory the pots live in.
    pub fn base_dir(&self) -> &std::path::Path {
        &self.settings.base_dir
    }

    /// Carries out one command from the Core and answers it.
    pub async fn handle(self: Arc<Self>, command: Command, command_id: Option<u64>) {
        let name = command.variant_name();
        let pot_id = command.pot_id().map(str::to_owned);
        // Whatever happens while carrying it out, the command gets its answer.
        let manager = self.clone();
        let outcome = run_caught(
            name,
            async move { manager.carry_out(command, command_id).await },
        )
        .await
        .unwrap_or_else(Outcome::failed);
        let answer = Message::CommandAnswer(CommandAnswer {
            node_id: self.settings.node_id,
            command_id,
            command: name.to_owned(),
            pot_id,
            success: outcome.success,
            message: Some(redact_credentials(&outcome.message)),
            data: outcome.data,
        });
        // Unlike statuses, an answer is waited for: it is never dropped.
        let _ = self.outbox.send(answer).await;
    }

    /// Carries out `command`; [`PotManager::handle`] sends the answer.
    async fn carry_out(self: Arc<Self>, command: Command, command_id: Option<u64>) -> Outcome {
        let name = command.variant_name();
        match command {
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
        }
    }

    /// The installed pot, or an outcome saying it is not installed (also reported).
    pub(super) fn installed(&self, pot_id: &str) -> Result<InstalledPot, Outcome> {
        let found = self
            .lock_pots()
            .get(pot_id)
            .and_then(|slot| slot.installed.clone());
        // No status update for a pot that does not exist: the Core would keep a row for it.
        found
            .ok_or_else(|| Outcome::failed(format!("pot {pot_id:?} is not installed on this node")))
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
    pub(super) async fn start_and_wait(
        self: &Arc<Self>,
        pot_id: &str,
        command_id: Option<u64>,
    ) -> Outcome {
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

    /// Stops the pot's processes (if running) and waits until they are gone. `Err` when
    /// processes of the pot's user are still there afterwards: whatever the supervisor did,
    /// the answer comes from the process table.
    async fn halt(&self, pot_id: &str) -> Result<(), String> {
        let supervisor = self
            .lock_pots()
            .get_mut(pot_id)
            .and_then(|slot| slot.supervisor.take());
        if let Some((stop, task)) = supervisor {
            stop.cancel();
            let _ = task.await;
        }
        match self.settings.existing_pot_user(pot_id) {
            Some(user) => end_user_processes(&user, Duration::ZERO).await,
            None => Ok(()),
        }
    }

    /// Reports a pot whose processes outlived a stop as failed, with why.
    fn report_survivors(&self, pot_id: &str, error: &str, command_id: Option<u64>) -> Outcome {
        self.settings.processes_survived.increment();
        let message = format!("{pot_id} could not be stopped: {error}");
        self.report(pot_id, PotStatus::Failed, Some(message.clone()), command_id);
        Outcome::failed(message)
    }

    async fn stop(self: &Arc<Self>, pot_id: &str, command_id: Option<u64>) -> Outcome {
        let lock = self.pot_lock(pot_id);
        let _guard = lock.lock().await;
        if let Err(outcome) = self.installed(pot_id) {
            return outcome;
        }
        self.set_desired(pot_id, false);
        if let Err(error) = self.halt(pot_id).await {
            return self.report_survivors(pot_id, &error, command_id);
        }
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
        if let Err(error) = self.halt(pot_id).await {
            return self.report_survivors(pot_id, &error, command_id);
        }
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
        // Its processes first (nothing may write into the directory being removed), the
        // user last (its uid must not be reused while files of it remain). A pot whose
        // processes survive stays installed, with its user, deny lines and identity.
        if let Err(error) = self.halt(pot_id).await {
            return self.report_survivors(pot_id, &error, None);
        }
        self.lock_pots().remove(pot_id);
        self.persist();
        let _ = std::fs::remove_dir_all(self.settings.control_base.join(pot_id));
        let removed = std::fs::remove_dir_all(&installed.instance_dir);
        if let Err(error) = self.forget_pot_user(pot_id).await {
            return Outcome::failed(format!("{pot_id} was removed from the node but {error}"));
        }
        if let Err(error) = removed {
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
                if let Err(error) = manager.halt(&pot_id).await {
                    tracing::error!(pot_id, %error, "a pot's processes outlived the node's stop");
                }
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
