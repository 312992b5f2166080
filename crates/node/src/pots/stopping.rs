//! Ending a pot's processes: SIGTERM, a grace period, SIGKILL — to its process group, and,
//! when the pot has a user of its own, to everything that user runs (a pot that left its
//! group with `setsid()` is still the pot's user).

use std::time::Duration;

use super::pot_users;
use super::privilege::RunAs;

/// How long SIGKILL to a pot user's processes may take to empty the process table.
const KILL_DEADLINE: Duration = Duration::from_secs(10);

/// SIGTERM to the child's whole process group, SIGKILL after `grace`; then everything the
/// pot's user still runs. `pid` is the one recorded at spawn (the child may be reaped
/// already, and then has no id).
pub(super) async fn terminate_pot(
    child: &mut tokio::process::Child,
    pid: u32,
    grace: Duration,
    user: Option<&RunAs>,
) {
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
    if let Some(user) = user {
        end_user_processes(user, grace).await;
    }
}

/// Ends everything `user` runs; a failure is logged (the pot is reported stopped either way:
/// what survives SIGKILL is beyond the node).
pub(super) async fn end_user_processes(user: &RunAs, grace: Duration) {
    let left = pot_users::processes_of(user.uid);
    if left.is_empty() {
        return;
    }
    tracing::info!(user = %user.name, processes = left.len(), "ending the processes a pot left outside its process group");
    if let Err(error) = pot_users::end_all_processes_of(user, grace, KILL_DEADLINE).await {
        tracing::error!(user = %user.name, %error, "a pot's processes could not be ended");
    }
}
