//! Ending a pot's processes: SIGTERM, a grace period, SIGKILL — to its process group, and,
//! when the pot has a user of its own, to everything that user runs (a pot that left its
//! group with `setsid()` is still the pot's user).

use std::time::Duration;

use super::privilege::RunAs;
use super::user_processes;

/// How long SIGKILL to a pot user's processes may take to empty the process table.
const KILL_DEADLINE: Duration = Duration::from_secs(10);

/// SIGTERM to the child's whole process group, SIGKILL after `grace`; then everything the
/// pot's user still runs. `pid` is the one recorded at spawn (the child may be reaped
/// already, and then has no id). `Err` when processes of the pot's user survived.
pub(super) async fn terminate_pot(
    child: &mut tokio::process::Child,
    pid: u32,
    grace: Duration,
    user: Option<&RunAs>,
) -> Result<(), String> {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    if pid != 0 {
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
    match user {
        Some(user) => end_user_processes(user, grace).await,
        None => Ok(()),
    }
}

/// Ends everything `user` runs. A failure is logged and returned: the callers must not call
/// the pot stopped, nor hand its uid back, while processes of it run.
pub(super) async fn end_user_processes(user: &RunAs, grace: Duration) -> Result<(), String> {
    let left = user_processes::processes_of(user.uid);
    if left.is_empty() {
        return Ok(());
    }
    tracing::info!(user = %user.name, processes = left.len(), "ending the processes a pot left outside its process group");
    user_processes::end_all_processes_of(user, grace, KILL_DEADLINE)
        .await
        .map_err(|error| {
            tracing::error!(user = %user.name, %error, "a pot's processes could not be ended");
            error.to_string()
        })
}
