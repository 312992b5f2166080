//! Installing a pot: the definition from the potstore or a git clone, the instance
//! directory laid out through directory handles for the pot's own user, the templates, the
//! install steps; and rendering templates again when a node value changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use honeybee_protocol::{format_timestamp, InstallPot, PotStatus};

use super::caught::run_caught;
use super::git_source;
use super::logs::RotatingLog;
use super::manager::{pump_lines, Outcome, PotManager, PotSlot, INSTALL_ERROR_TAIL_LINES};
use super::manifest::{self, Manifest};
use super::pot_users;
use super::privilege::RunAs;
use super::redact::{redact_credentials, redact_values};
use super::safe_fs;
use super::scheduling;
use super::shared_temp;
use super::state::InstalledPot;
use super::stopping::{end_user_processes, terminate_pot};

/// Longest a single install step may run.
const INSTALL_STEP_TIMEOUT: Duration = Duration::from_secs(15 * 60);
pub(super) const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// In the pot's control directory: the output of its install steps.
const INSTALL_LOG: &str = "install.log";

impl PotManager {
    pub(super) async fn install(
        self: &Arc<Self>,
        install: InstallPot,
        command_id: Option<u64>,
    ) -> Outcome {
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
            if let Some(message) = self.settings.pot_user_clash(&pot_id, pots.keys()) {
                drop(pots);
                tracing::warn!(pot_id, "{message}");
                return Outcome::failed(message);
            }
            pots.insert(
                pot_id.clone(),
                PotSlot::new(install.honeypot_type.clone(), None, PotStatus::Installing),
            );
        }
        let source = install
            .git_url
            .as_deref()
            .map_or_else(|| "potstore".to_owned(), redact_credentials);
        self.report(
            &pot_id,
            PotStatus::Installing,
            Some(format!(
                "installing {} from {source}",
                install.honeypot_type
            )),
            command_id,
        );
        // A bug that panics while installing must still end in `Failed` and an answer, not
        // in a slot left `Installing` that refuses every retry.
        let installing = {
            let manager = self.clone();
            let install = install.clone();
            run_caught("InstallPot", async move {
                manager.install_files(&install, command_id).await
            })
            .await
        };
        match installing.and_then(|result| result) {
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
                if let Err(error) = self.forget_pot_user(&pot_id).await {
                    return Outcome::failed(format!("{reason}; and {error}"));
                }
                Outcome::failed(reason)
            }
        }
    }

    /// Ends the processes of a pot's user and removes the user (uninstall, failed install).
    /// When processes of it survive, `Err` and nothing else happens: its deny lines, its
    /// identity for ingest and the user itself stay, so that what still runs can neither
    /// queue jobs nor pass for another sender, and its uid is not given to anyone else.
    pub(super) async fn forget_pot_user(&self, pot_id: &str) -> Result<(), String> {
        let Some(user) = self.settings.existing_pot_user(pot_id) else {
            return Ok(());
        };
        end_user_processes(&user, Duration::ZERO)
            .await
            .map_err(|error| {
                self.settings.processes_survived.increment();
                format!("pot user {} is kept: {error}", user.name)
            })?;
        // With nothing of it running any more: its jobs, its deny lines and its files in the
        // directories everyone may write to go before its uid can be given to someone else.
        let leaving = user.clone();
        // A subordinate id has no account: no cron or at jobs, no deny lines, no userdel.
        let has_account = self.settings.pot_users_have_accounts();
        let cleaned = tokio::task::spawn_blocking(move || {
            let forgotten = if has_account {
                scheduling::forget_scheduling(&leaving, &scheduling::SchedulingPaths::system())
            } else {
                Ok(())
            };
            let roots: Vec<PathBuf> = shared_temp::SHARED_WRITABLE_DIRS
                .iter()
                .map(PathBuf::from)
                .collect();
            (
                forgotten,
                shared_temp::remove_entries_of(leaving.uid, &roots),
            )
        })
        .await;
        match cleaned {
            Ok((forgotten, swept)) => {
                if let Err(error) = forgotten {
                    tracing::warn!(pot_id, user = %user.name, %error, "removing the pot user's cron and at jobs or deny lines failed");
                }
                if swept.removed > 0 {
                    tracing::info!(pot_id, user = %user.name, removed = swept.removed, "removed the pot user's files from /tmp, /var/tmp and /dev/shm");
                }
                for problem in swept.problems {
                    tracing::warn!(pot_id, user = %user.name, %problem, "a file of the pot user in a shared directory may be left");
                }
            }
            Err(error) => {
                tracing::error!(pot_id, user = %user.name, %error, "cleaning up after the pot user failed")
            }
        }
        self.settings.identities.remove(user.uid);
        if !has_account {
            return Ok(());
        }
        pot_users::remove_pot_user(&user.name).map_err(|error| {
            tracing::warn!(pot_id, user = %user.name, %error, "removing the pot's user failed");
            error
        })
    }

    /// Fetches the definition, lays out the instance directory and runs the install steps.
    async fn install_files(
        &self,
        install: &InstallPot,
        command_id: Option<u64>,
    ) -> Result<InstalledPot, String> {
        let pot_id = &install.pot_id;
        if let Some(url) = &install.git_url {
            // Refused before anything is created for the pot.
            git_source::check_git_url(url, &self.settings.git)?;
        }
        let user = self.settings.pot_user(pot_id, &install.honeypot_type)?;
        if let Some(user) = &user {
            // A user left over from an earlier pot of this id must not run anything now.
            end_user_processes(user, Duration::ZERO).await?;
        }
        let sources_base = self.settings.base_dir.join(".sources");
        let sources = sources_base.join(pot_id);
        let result = match &install.git_url {
            Some(url) => {
                let cloned = async {
                    let home = prepare_clone_home(&sources_base, pot_id, user.as_ref())?;
                    git_source::clone_as_pot_user(
                        url,
                        install.git_branch.as_deref(),
                        &home,
                        user.as_ref(),
                        &self.settings.git,
                    )
                    .await?;
                    // The checkout belongs to the pot user: opened below the root-owned
                    // `.sources` without following any link.
                    let root = safe_fs::open_trusted_dir(&sources_base)
                        .map_err(|error| error.to_string())?;
                    safe_fs::open_dir_beneath(
                        &root,
                        &sources_base,
                        &Path::new(pot_id).join("checkout"),
                    )
                    .map_err(|error| error.to_string())
                }
                .await;
                match cloned {
                    Ok(checkout) => {
                        self.lay_out(
                            install,
                            &checkout,
                            &sources.join("checkout"),
                            user.as_ref(),
                            command_id,
                        )
                        .await
                    }
                    Err(reason) => Err(reason),
                }
            }
            None => match safe_fs::open_trusted_dir(&self.settings.potstore_dir) {
                Ok(potstore) => {
                    self.lay_out(
                        install,
                        &potstore,
                        &self.settings.potstore_dir,
                        user.as_ref(),
                        command_id,
                    )
                    .await
                }
                Err(error) => Err(error.to_string()),
            },
        };
        let _ = std::fs::remove_dir_all(&sources);
        result
    }

    async fn lay_out(
        &self,
        install: &InstallPot,
        potstore: &std::os::fd::OwnedFd,
        potstore_dir: &Path,
        user: Option<&RunAs>,
        command_id: Option<u64>,
    ) -> Result<InstalledPot, String> {
        let pot_id = &install.pot_id;
        let manifest_text = safe_fs::read_file_beneath(
            potstore,
            potstore_dir,
            Path::new(manifest::MANIFEST_FILE),
            safe_fs::SourceOwners::Anyone,
        )
        .map_err(|error| format!("reading the potstore manifest: {error}"))?;
        let manifest = Manifest::parse(
            &String::from_utf8_lossy(&manifest_text),
            &potstore_dir.join(manifest::MANIFEST_FILE),
        )
        .map_err(|error| error.to_string())?;
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
                return Err(redact_config_values(
                    &format!(
                        "requirement {executable:?} of {} is not installed on this node",
                        definition.id
                    ),
                    &definition,
                    &values,
                ));
            }
        }
        let ports = parse_ports(&render(&definition.ports)?)
            .map_err(|reason| redact_config_values(&reason, &definition, &values))?;

        if instance.exists() {
            std::fs::remove_dir_all(&instance)
                .map_err(|error| format!("removing a stale {}: {error}", instance.display()))?;
        }
        // Everything is created through directory handles, given to the pot user as it is
        // created, and read from the potstore without following any link (a `files` entry
        // that is a link to /etc/ssh fails here).
        let text = |error: safe_fs::SafeFsError| error.to_string();
        let base = safe_fs::open_trusted_dir(&self.settings.base_dir).map_err(text)?;
        let instance_dir =
            safe_fs::ensure_dir_beneath(&base, &self.settings.base_dir, Path::new(pot_id), user)
                .map_err(text)?;
        if let Some(files) = &definition.files {
            safe_fs::copy_tree_beneath(
                potstore,
                potstore_dir,
                Path::new(files),
                &instance_dir,
                &instance.join("files"),
                user,
            )
            .map_err(|error| format!("copying the pot files: {error}"))?;
        }
        let kit = safe_fs::open_trusted_dir(&self.settings.kit_dir).map_err(text)?;
        safe_fs::copy_tree_beneath(
            &kit,
            &self.settings.kit_dir,
            Path::new(""),
            &instance_dir,
            &instance.join("kit"),
            user,
        )
        .map_err(|error| format!("copying the kit: {error}"))?;
        for directory in &definition.directories {
            safe_fs::ensure_dir_beneath(&instance_dir, &instance, Path::new(directory), user)
                .map_err(text)?;
        }
        let mut template_sources = BTreeMap::new();
        for template in &definition.templates {
            let source = Path::new("files").join(&template.source);
            let source_text =
                safe_fs::read_file_beneath(&instance_dir, &instance, &source, pot_files(user))
                    .map_err(|error| format!("reading template: {error}"))?;
            let source_text = String::from_utf8(source_text)
                .map_err(|_| format!("template {} is not UTF-8", template.source))?;
            let rendered = render(&source_text)
                .map_err(|error| format!("template {}: {error}", template.source))?;
            safe_fs::write_file_beneath(
                &instance_dir,
                &instance,
                Path::new(&template.target),
                rendered.as_bytes(),
                user,
            )
            .map_err(text)?;
            template_sources.insert(template.source.clone(), source_text);
        }

        let steps = definition.install.len();
        for (index, step) in definition.install.iter().enumerate() {
            let argv: Vec<String> = step
                .iter()
                .map(|part| render(part))
                .collect::<Result<_, _>>()?;
            if argv.is_empty() {
                continue;
            }
            // Shown as the manifest writes it: the rendered argv carries config values, which
            // may be secrets, to everyone who can read statuses.
            let shown = step.join(" ");
            self.report(
                pot_id,
                PotStatus::Installing,
                Some(format!("step {}/{steps}: {shown}", index + 1)),
                command_id,
            );
            self.run_install_step(pot_id, user, &definition.env, &values, &instance, &argv)
                .await
                .map_err(|reason| {
                    // The step's output and the program it names may quote config values.
                    let reason = redact_config_values(&reason, &definition, &values);
                    format!(
                        "install step {}/{steps} ({shown}) failed: {reason}",
                        index + 1
                    )
                })?;
        }
        Ok(InstalledPot {
            pot_id: pot_id.clone(),
            pot_type: definition.id.clone(),
            version: definition.version.clone(),
            source: install
                .git_url
                .as_deref()
                .map_or_else(|| "potstore".to_owned(), redact_credentials),
            definition,
            values,
            template_sources,
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
        let user = self.settings.pot_user(pot_id, &installed.pot_type)?;
        let text = |error: safe_fs::SafeFsError| error.to_string();
        let base = safe_fs::open_trusted_dir(&self.settings.base_dir).map_err(text)?;
        let instance = &installed.instance_dir;
        let instance_name = instance
            .file_name()
            .ok_or_else(|| format!("instance directory {} has no name", instance.display()))?;
        let instance_dir =
            safe_fs::open_dir_beneath(&base, &self.settings.base_dir, Path::new(instance_name))
                .map_err(text)?;
        for template in installed.definition.templates.clone() {
            // The source kept at install time; a pot installed by an earlier version has its
            // sources read once from its directory, without following links.
            let source_text = match installed.template_sources.get(&template.source) {
                Some(source_text) => source_text.clone(),
                None => {
                    let source = Path::new("files").join(&template.source);
                    let bytes = safe_fs::read_file_beneath(
                        &instance_dir,
                        instance,
                        &source,
                        pot_files(user.as_ref()),
                    )
                    .map_err(|error| format!("reading template: {error}"))?;
                    String::from_utf8(bytes)
                        .map_err(|_| format!("template {} is not UTF-8", template.source))?
                }
            };
            let rendered = manifest::render(&source_text, &installed.values)
                .map_err(|error| format!("template {}: {error}", template.source))?;
            safe_fs::write_file_beneath(
                &instance_dir,
                instance,
                Path::new(&template.target),
                rendered.as_bytes(),
                user.as_ref(),
            )
            .map_err(text)?;
            installed
                .template_sources
                .insert(template.source.clone(), source_text);
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
        user: Option<&RunAs>,
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
        if let Some(user) = user {
            command.uid(user.uid).gid(user.gid);
        }
        Ok(command)
    }

    async fn run_install_step(
        &self,
        pot_id: &str,
        user: Option<&RunAs>,
        env: &BTreeMap<String, String>,
        values: &BTreeMap<String, String>,
        instance: &Path,
        argv: &[String],
    ) -> Result<(), String> {
        let mut child = self
            .pot_command(user, env, values, instance, instance, argv)?
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
                let _ = terminate_pot(&mut child, pid, Duration::from_secs(5), user).await;
                return Err(format!(
                    "timed out after {} s",
                    INSTALL_STEP_TIMEOUT.as_secs()
                ));
            }
        };
        // A step may leave a background process holding its output open: end the group,
        // and give the readers a bounded time to finish.
        let _ = terminate_pot(&mut child, pid, Duration::ZERO, user).await;
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
}

/// `text` without the pot's config values (those its manifest declares, as set for this
/// pot): the node's own values (paths, ports, ids) stay readable.
pub(super) fn redact_config_values(
    text: &str,
    definition: &manifest::PotDefinition,
    values: &BTreeMap<String, String>,
) -> String {
    redact_values(
        text,
        definition
            .config
            .keys()
            .filter(|key| !manifest::BUILTIN_PLACEHOLDERS.contains(&key.as_str()))
            .filter_map(|key| values.get(key))
            .map(String::as_str),
    )
}

/// `<base>/.sources/<pot_id>`, the home of the clone: `.sources` is the node's (0711, so a
/// pot user can pass to its own), the pot's directory in it is the pot user's (0700).
fn prepare_clone_home(
    sources_base: &Path,
    pot_id: &str,
    user: Option<&RunAs>,
) -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |path: &Path, error: std::io::Error| format!("creating {}: {error}", path.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(sources_base)
        .map_err(|error| io(sources_base, error))?;
    std::fs::set_permissions(sources_base, std::fs::Permissions::from_mode(0o711))
        .map_err(|error| io(sources_base, error))?;
    let home = sources_base.join(pot_id);
    let _ = std::fs::remove_dir_all(&home);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&home)
        .map_err(|error| io(&home, error))?;
    if let Some(user) = user {
        // Only root can add entries to `.sources`: the fresh directory cannot be a link.
        std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid))
            .map_err(|error| io(&home, error))?;
    }
    Ok(home)
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

/// Whose files root may read in a pot's directory: root's and the pot's own (the node's own
/// user's when pots run as it).
fn pot_files(user: Option<&RunAs>) -> safe_fs::SourceOwners {
    safe_fs::SourceOwners::RootOrPot(
        user.map_or_else(|| rustix::process::geteuid().as_raw(), |user| user.uid),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_parsed_and_bad_ones_named() {
        assert_eq!(parse_ports("2222, 2223").unwrap(), vec![2222, 2223]);
        assert_eq!(parse_ports("").unwrap(), Vec::<u16>::new());
        assert!(parse_ports("22,x").unwrap_err().contains("\"x\""));
        assert!(parse_ports("70000").is_err());
    }
}
