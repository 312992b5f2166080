//! Finding and ending every process a pot's user runs, signalled by root itself.
//!
//! Earlier versions signalled from a helper running as the pot's user (`kill -1`). A pot owns
//! that user, so it could defeat the helper: a process looping `kill(-1, SIGKILL)` kills
//! every helper as soon as it exists (kill(-1) spares only its caller), and a pot that used
//! up its user's process limit makes the helper's exec fail. Root is bound by neither.
//!
//! Root signals each process through a pidfd, never through a bare pid read from `/proc`:
//! the pidfd names one process for good, so a pid reused after the scan is never signalled.
//! The owner is checked again through `/proc/<pid>/status` after the pidfd is open: if that
//! pid still shows the pot's uid, the process behind the pidfd is the one shown (a process
//! that is still there keeps its pid), and if it has died meanwhile, signalling it does
//! nothing. Processes forked between two scans are found by the next scan, so the scans
//! repeat until none is left or a deadline passes.

use std::time::Duration;

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use tokio::time::Instant;

use super::privilege::RunAs;

/// Pause between scans once a scan found nothing new to signal (killed processes still
/// being torn down by the kernel).
const KILL_POLL: Duration = Duration::from_millis(10);

/// Why a pot user's processes are still there.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EndProcessesError {
    #[error("processes {pids:?} of pot user {user} survived SIGKILL for {waited:?}")]
    Survived {
        user: String,
        pids: Vec<u32>,
        waited: Duration,
    },
}

/// Whether the `/proc/<pid>/status` text shows a live process (not a zombie) whose real,
/// effective, saved or filesystem uid is `uid`. A process whose main thread exited while
/// other threads run on shows `Z` too: it is a zombie only with a single thread left.
fn status_shows_live_owner(status: &str, uid: u32) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    let threads = field("Threads:").and_then(|count| count.parse::<u32>().ok());
    let zombie = field("State:").is_some_and(|state| state.starts_with('Z'))
        && threads.is_none_or(|count| count <= 1);
    let owned = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .is_some_and(|line| {
            line.split_whitespace()
                .skip(1)
                .any(|field| field.parse::<u32>() == Ok(uid))
        });
    owned && !zombie
}

fn pid_shows_live_owner(pid: u32, uid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|status| status_shows_live_owner(&status, uid))
}

/// Live processes (not zombies) whose real, effective, saved or filesystem uid is `uid`.
pub(crate) fn processes_of(uid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| pid_shows_live_owner(*pid, uid))
        .collect()
}

/// One scan: `signal` to every live process of `uid`, each through its pidfd after the owner
/// was confirmed with the pidfd open. Returns how many were signalled. Each process is
/// signalled as soon as the scan reaches it: a child it forks meanwhile gets a higher pid
/// (until pids wrap), which the same scan reaches later.
fn signal_processes_of(uid: u32, signal: Signal) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut signalled = 0;
    for pid in entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
    {
        let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            continue;
        };
        if !pid_shows_live_owner(pid, uid) {
            continue;
        }
        // Gone since the scan: nothing to end.
        let Ok(pidfd) = pidfd_open(raw, PidfdFlags::empty()) else {
            continue;
        };
        // The owner was read before the pidfd existed; the pid may belong to another
        // process by now. Read again, with the process pinned.
        if !pid_shows_live_owner(pid, uid) {
            continue;
        }
        if pidfd_send_signal(&pidfd, signal).is_ok() {
            signalled += 1;
        }
    }
    signalled
}

/// [`processes_of`] on the blocking pool: a scan reads every process's status file.
async fn live_processes_of(uid: u32) -> Vec<u32> {
    tokio::task::spawn_blocking(move || processes_of(uid))
        .await
        .unwrap_or_default()
}

/// [`signal_processes_of`] on the blocking pool.
async fn signal_live_processes_of(uid: u32, signal: Signal) -> usize {
    tokio::task::spawn_blocking(move || signal_processes_of(uid, signal))
        .await
        .unwrap_or(0)
}

/// SIGTERM to everything `user` runs, then SIGKILL after `grace` to whatever is left, until
/// nothing is; `Err` when processes are still there `deadline` after the first SIGKILL.
pub(crate) async fn end_all_processes_of(
    user: &RunAs,
    grace: Duration,
    deadline: Duration,
) -> Result<(), EndProcessesError> {
    if live_processes_of(user.uid).await.is_empty() {
        return Ok(());
    }
    if !grace.is_zero() {
        signal_live_processes_of(user.uid, Signal::TERM).await;
        let until = Instant::now() + grace;
        while !live_processes_of(user.uid).await.is_empty() && Instant::now() < until {
            tokio::time::sleep(KILL_POLL).await;
        }
    }
    let started = Instant::now();
    loop {
        // Back to back while each scan finds something: a pot forking as fast as it can
        // must lose the race to a scan that kills all it sees.
        let signalled = signal_live_processes_of(user.uid, Signal::KILL).await;
        let left = live_processes_of(user.uid).await;
        if left.is_empty() {
            return Ok(());
        }
        if started.elapsed() > deadline {
            return Err(EndProcessesError::Survived {
                user: user.name.clone(),
                pids: left,
                waited: deadline,
            });
        }
        if signalled == 0 {
            tokio::time::sleep(KILL_POLL).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_found_by_uid() {
        let me = nix::unistd::getuid().as_raw();
        assert!(processes_of(me).contains(&std::process::id()));
    }

    #[test]
    fn any_of_the_four_uids_counts_and_zombies_do_not() {
        let status = |state: &str, uids: &str| format!("Name:\tx\nState:\t{state}\nUid:\t{uids}\n");
        assert!(status_shows_live_owner(
            &status("S (sleeping)", "0\t0\t0\t0"),
            0
        ));
        for uids in ["7\t0\t0\t0", "0\t7\t0\t0", "0\t0\t7\t0", "0\t0\t0\t7"] {
            assert!(
                status_shows_live_owner(&status("R (running)", uids), 7),
                "{uids}"
            );
        }
        assert!(!status_shows_live_owner(
            &status("S (sleeping)", "0\t0\t0\t0"),
            7
        ));
        assert!(!status_shows_live_owner(
            &status("Z (zombie)", "7\t7\t7\t7"),
            7
        ));
        // A main thread that exited while others run on: shown as a zombie, still alive.
        let threaded = |threads: u32| {
            format!("Name:\tx\nState:\tZ (zombie)\nUid:\t7\t7\t7\t7\nThreads:\t{threads}\n")
        };
        assert!(status_shows_live_owner(&threaded(2), 7));
        assert!(!status_shows_live_owner(&threaded(1), 7));
    }

    /// The real thing: a process whose main thread ends with `SYS_exit` while another
    /// thread runs on is found, though the kernel calls it a zombie.
    #[test]
    fn a_process_whose_main_thread_exited_is_still_found() {
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import ctypes, threading, time\n\
                 threading.Thread(target=lambda: time.sleep(600)).start()\n\
                 ctypes.CDLL(None).syscall(60, 0)",
            ])
            .spawn()
            .unwrap();
        let pid = child.id();
        let status_path = format!("/proc/{pid}/status");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = std::fs::read_to_string(&status_path).unwrap_or_default();
            if status.contains("State:\tZ") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the main thread never exited: {status}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let me = nix::unistd::getuid().as_raw();
        assert!(
            processes_of(me).contains(&pid),
            "the threaded zombie is seen as alive"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
