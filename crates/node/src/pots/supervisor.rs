//! Supervision of a running pot: start it, wait until its ports listen, restart it with
//! backoff when it dies, give up (and say why) when it keeps crashing, stop it on request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use honeybee_protocol::PotStatus;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::logs::RotatingLog;
use super::manager::{pump_lines, PotManager, StartNotice};
use super::privilege::RunAs;
use super::procfs;
use super::safe_fs;
use super::stopping::{end_user_processes, terminate_pot};

/// More crashes than this within [`CRASH_WINDOW`] and the pot stays `Failed`.
const MAX_CRASHES: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const HEALTH_POLL: Duration = Duration::from_millis(100);
/// In the pot's control directory: pid (= process group) and start time of the running pot.
const PID_FILE: &str = "pot.pid";
/// In the pot's control directory: its captured output.
pub(super) const POT_LOG: &str = "pot.log";
/// How long ending a leftover process group may take after SIGKILL.
const REAP_DEADLINE: Duration = Duration::from_secs(5);
/// How long SIGKILL to the legacy shared user's processes may take to empty the table.
const LEGACY_KILL_DEADLINE: Duration = Duration::from_secs(10);

enum RunEnd {
    /// Stop was requested; the pot is down.
    Stopped,
    /// The pot exited or failed its health check on its own.
    Crashed(String),
    /// It cannot run at all (port taken, command missing): restarting will not help.
    Unstartable(String),
}

impl PotManager {
    pub(super) async fn supervise(
        self: Arc<Self>,
        pot_id: String,
        stop: CancellationToken,
        mut started: StartNotice,
    ) {
        if self
            .lock_pots()
            .get(&pot_id)
            .is_none_or(|slot| slot.installed.is_none())
        {
            return;
        }
        let mut crashes: VecDeque<Instant> = VecDeque::new();
        let mut backoff = self.settings.restart_backoff;
        loop {
            let command_id = started.as_ref().and_then(|(_, id)| *id);
            let run_started = Instant::now();
            let end = self
                .run_once(&pot_id, &stop, &mut started, command_id)
                .await;
            // A pot that ran well for a while starts again from the first delay.
            if run_started.elapsed() > CRASH_WINDOW {
                backoff = self.settings.restart_backoff;
            }
            self.clear_process(&pot_id);
            let reason = match end {
                RunEnd::Stopped => return,
                RunEnd::Unstartable(reason) => {
                    self.report(&pot_id, PotStatus::Failed, Some(reason.clone()), command_id);
                    notify(&mut started, Err(reason));
                    return;
                }
                RunEnd::Crashed(reason) => reason,
            };
            let now = Instant::now();
            crashes.push_back(now);
            while crashes
                .front()
                .is_some_and(|at| now.duration_since(*at) > CRASH_WINDOW)
            {
                crashes.pop_front();
            }
            if crashes.len() > MAX_CRASHES {
                let message = format!(
                    "{reason}; crashed {} times within {} s, not restarting it (send DeployPot or RestartPot to try again)",
                    crashes.len(),
                    CRASH_WINDOW.as_secs()
                );
                self.report(
                    &pot_id,
                    PotStatus::Failed,
                    Some(message.clone()),
                    command_id,
                );
                notify(&mut started, Err(message));
                if let Some(slot) = self.lock_pots().get_mut(&pot_id) {
                    slot.supervisor = None;
                }
                return;
            }
            let restarts = {
                let mut pots = self.lock_pots();
                pots.get_mut(&pot_id).map_or(0, |slot| {
                    slot.restarts += 1;
                    slot.restarts
                })
            };
            self.report(
                &pot_id,
                PotStatus::Failed,
                Some(format!(
                    "{reason}; restart {restarts} in {:.1} s",
                    backoff.as_secs_f64()
                )),
                command_id,
            );
            notify(&mut started, Err(reason));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Starts the pot once and runs it until it ends or is stopped.
    async fn run_once(
        &self,
        pot_id: &str,
        stop: &CancellationToken,
        started: &mut StartNotice,
        command_id: Option<u64>,
    ) -> RunEnd {
        reap_leftover(
            pot_id,
            &self.settings.control_dir(pot_id),
            self.settings.stop_grace,
        )
        .await;
        if let Err(reason) = self.refresh_node_values(pot_id) {
            return RunEnd::Unstartable(reason);
        }
        let Some(installed) = self
            .lock_pots()
            .get(pot_id)
            .and_then(|slot| slot.installed.clone())
        else {
            return RunEnd::Stopped;
        };
        let installed = &installed;
        let user = match self.settings.pot_user(pot_id, &installed.pot_type) {
            Ok(user) => user,
            Err(reason) => return RunEnd::Unstartable(reason),
        };
        if let Some(user) = &user {
            // Anything of the pot's user still running (left by a node that was killed, or
            // escaped from an earlier run) ends before the pot starts again.
            if let Err(reason) = end_user_processes(user, self.settings.stop_grace).await {
                self.settings.processes_survived.increment();
                return RunEnd::Unstartable(format!(
                    "not starting: processes of its user are still running: {reason}"
                ));
            }
            if let Err(reason) = self.adopt_instance(&installed.instance_dir, user).await {
                return RunEnd::Unstartable(reason);
            }
        }
        let user = user.as_ref();
        for port in &installed.ports {
            if port_in_use(*port) {
                return RunEnd::Unstartable(format!("port {port} is already in use on this node"));
            }
        }
        let definition = &installed.definition;
        let argv: Result<Vec<String>, String> = definition
            .start
            .iter()
            .map(|part| super::manifest::render(part, &installed.values))
            .collect();
        let argv = match argv {
            Ok(argv) => argv,
            Err(reason) => return RunEnd::Unstartable(reason),
        };
        let working_dir = match &definition.working_dir {
            Some(relative) => installed.instance_dir.join(relative),
            None => installed.instance_dir.clone(),
        };
        let mut command = match self.pot_command(
            user,
            &definition.env,
            &installed.values,
            &installed.instance_dir,
            &working_dir,
            &argv,
        ) {
            Ok(command) => command,
            Err(reason) => return RunEnd::Unstartable(reason),
        };
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                return RunEnd::Unstartable(super::install::redact_config_values(
                    &format!("cannot start {:?}: {error}", argv[0]),
                    definition,
                    &installed.values,
                ))
            }
        };
        let pid = child.id().unwrap_or(0);
        // Remembered (pid and start time, in the node's own directory) so that a node killed
        // without a chance to stop its pots can end this process group when it starts again.
        let control = self.settings.control_dir(pot_id);
        let identity = procfs::start_time(pid).map(|start| format!("{pid} {start}\n"));
        if let Some(Err(error)) = identity.map(|text| std::fs::write(control.join(PID_FILE), text))
        {
            tracing::warn!(pot_id = %pot_id, %error, "writing the pot's pid file failed");
        }
        let log = Arc::new(Mutex::new(RotatingLog::new(
            control.join(POT_LOG),
            self.settings.log_max_bytes,
            self.settings.log_files,
        )));
        if let Some(out) = child.stdout.take() {
            pump_lines(out, log.clone(), None);
        }
        if let Some(err) = child.stderr.take() {
            pump_lines(err, log, None);
        }
        if let Some(slot) = self.lock_pots().get_mut(pot_id) {
            slot.pid = Some(pid);
            slot.started_at = Some(Instant::now());
            slot.cpu_sample = None;
        }

        // Healthy once every port listens.
        let deadline = Instant::now() + Duration::from_secs_f64(definition.health_timeout);
        loop {
            if installed.ports.iter().all(|port| port_listening(*port)) {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = terminate_pot(&mut child, pid, self.settings.stop_grace, user).await;
                    return RunEnd::Stopped;
                }
                status = child.wait() => {
                    let _ = terminate_pot(&mut child, pid, Duration::ZERO, user).await;
                    return RunEnd::Crashed(format!("exited during start-up with {}", describe(status)));
                }
                _ = tokio::time::sleep(HEALTH_POLL) => {}
            }
            if Instant::now() > deadline {
                let _ = terminate_pot(&mut child, pid, self.settings.stop_grace, user).await;
                return RunEnd::Crashed(format!(
                    "health check failed: ports {:?} not listening after {} s",
                    installed.ports, definition.health_timeout
                ));
            }
        }
        self.report(
            pot_id,
            PotStatus::Running,
            Some(format!("running (pid {pid})")),
            command_id,
        );
        notify(started, Ok(pid));

        tokio::select! {
            _ = stop.cancelled() => {
                let _ = terminate_pot(&mut child, pid, self.settings.stop_grace, user).await;
                RunEnd::Stopped
            }
            status = child.wait() => {
                // The leader is gone; anything left in its group goes too.
                let _ = terminate_pot(&mut child, pid, Duration::ZERO, user).await;
                RunEnd::Crashed(format!("exited with {}", describe(status)))
            }
        }
    }

    /// Gives the pot's directory to its own user when it belongs to someone else (a pot
    /// installed by an earlier version, under the user all pots shared then). Every process
    /// of that shared user ends first: one left running could otherwise swap names in the
    /// directory (say, for a hard link to another pot's file) while it is handed over.
    async fn adopt_instance(&self, instance: &std::path::Path, user: &RunAs) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::symlink_metadata(instance)
            .map_err(|error| format!("reading {}: {error}", instance.display()))?
            .uid();
        if owner == user.uid {
            return Ok(());
        }
        let Some(name) = instance.file_name() else {
            return Err(format!(
                "instance directory {} has no name",
                instance.display()
            ));
        };
        if let Some(shared) = self.legacy_shared_user(owner) {
            tracing::info!(user = %shared.name, uid = shared.uid, "ending the processes of the user all pots shared in earlier versions before handing a pot's directory over");
            super::user_processes::end_all_processes_of(
                &shared,
                self.settings.stop_grace,
                LEGACY_KILL_DEADLINE,
            )
            .await
            .map_err(|error| {
                format!(
                    "not handing {} to its own user: {error}",
                    instance.display()
                )
            })?;
        }
        tracing::info!(instance = %instance.display(), user = %user.name, previous_owner = owner, "giving a pot's directory to its own user");
        let text = |error: safe_fs::SafeFsError| error.to_string();
        let base = safe_fs::open_trusted_dir(&self.settings.base_dir).map_err(text)?;
        let directory =
            safe_fs::open_dir_beneath(&base, &self.settings.base_dir, std::path::Path::new(name))
                .map_err(text)?;
        safe_fs::chown_tree_beneath(&directory, instance, &[owner], user).map_err(text)
    }

    /// The user every pot ran as in earlier versions (named `honeypot.run_as` itself), when
    /// `uid` is that user.
    fn legacy_shared_user(&self, uid: u32) -> Option<RunAs> {
        let super::privilege::PotPrivilege::PerPotUsers { prefix } = &self.settings.privilege
        else {
            return None;
        };
        super::pot_users::existing_user(prefix).filter(|shared| shared.uid == uid && uid != 0)
    }

    fn clear_process(&self, pot_id: &str) {
        let mut pots = self.lock_pots();
        if let Some(slot) = pots.get_mut(pot_id) {
            slot.pid = None;
            slot.started_at = None;
            if slot.installed.is_some() {
                let _ = std::fs::remove_file(self.settings.control_dir(pot_id).join(PID_FILE));
            }
        }
    }
}

/// Ends a process group a previous node process left running (it was killed before it could
/// stop its pots). The pid file lives in the node's own directory and records the start time,
/// so a reused pid is never hit; zombies are not waited for; every wait is bounded.
async fn reap_leftover(pot_id: &str, control: &std::path::Path, grace: Duration) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let pid_file = control.join(PID_FILE);
    let recorded = std::fs::read_to_string(&pid_file).ok();
    let _ = std::fs::remove_file(&pid_file);
    let Some((pid, start)) = recorded.as_deref().and_then(|text| {
        let mut fields = text.split_whitespace();
        Some((
            fields.next()?.parse::<u32>().ok()?,
            fields.next()?.parse::<u64>().ok()?,
        ))
    }) else {
        return;
    };
    if procfs::start_time(pid) != Some(start) {
        return;
    }
    tracing::warn!(
        pot_id,
        pid,
        "ending a pot process group left running by a previous node process"
    );
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while procfs::group_usage(pid).processes > 0 && Instant::now() < deadline {
        tokio::time::sleep(HEALTH_POLL).await;
    }
    let _ = killpg(group, Signal::SIGKILL);
    let deadline = Instant::now() + REAP_DEADLINE;
    while procfs::group_usage(pid).processes > 0 && Instant::now() < deadline {
        tokio::time::sleep(HEALTH_POLL).await;
    }
}

fn notify(started: &mut StartNotice, result: Result<u32, String>) {
    if let Some((sender, _)) = started.take() {
        let _ = sender.send(result);
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("an unknown status ({error})"),
    }
}

/// Whether another process holds the port (a listener on any address). The standard
/// library's bind sets SO_REUSEADDR, so connections lingering in TIME_WAIT after a restart
/// do not count as a clash.
fn port_in_use(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_err()
}

/// Whether some process listens on the port, read from `/proc/net/tcp{,6}` so that the
/// check itself makes no connection (which a honeypot would log as an attack).
fn port_listening(port: u16) -> bool {
    const LISTEN: &str = "0A";
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields
                    .get(1)
                    .and_then(|address| address.rsplit(':').next())
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok());
                fields.get(3) == Some(&LISTEN) && local_port == Some(port)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_ports_are_seen_without_connecting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(port_listening(port));
        assert!(port_in_use(port));
        drop(listener);
        assert!(!port_listening(port));
        assert!(!port_in_use(port));
    }
}
