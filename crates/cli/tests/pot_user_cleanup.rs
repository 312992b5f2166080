//! What a pot's user leaves outside its pot directory, against the real node run as root:
//! it may not queue cron or at jobs (it is listed in the deny files while installed, and a
//! job it has is removed before the pot starts again), and at uninstall its jobs and its
//! files in `/tmp` and `/dev/shm` go — without root following a link it planted there. And
//! a pot directory left by an earlier version under the one shared user is handed to the
//! pot's own user only after every process of that shared user has ended. And a pot whose
//! processes fight the stop (killing every process of its user, the node's helpers
//! included, while forking) still ends, and its user is removed at uninstall.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::eventually;
use support::sensor::*;

const MANIFEST: &str = r#"
[[pots]]
id = "sleeper"
version = "1.0.0"
start = ["sh", "-c", "echo started; exec sleep 3600"]
"#;

/// Runs `script` as the pot's user, the way a process of the pot would.
fn run_as_pot_user(uid: u32, gid: u32, script: &str) {
    let status = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .args(["sh", "-c", script])
        .current_dir("/")
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
}

fn lists(deny_file: &str, user: &str) -> bool {
    std::fs::read_to_string(deny_file)
        .unwrap_or_default()
        .lines()
        .any(|line| line.trim() == user)
}

fn present(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// A file in a spool directory, created (with the directory) as root and given to `uid`: the
/// node looks at the files, not at how `crontab` or `at` made them.
fn plant_job(directory: &str, name: &str, uid: u32, gid: u32) -> PathBuf {
    std::fs::create_dir_all(directory).unwrap();
    let job = Path::new(directory).join(name);
    std::fs::write(&job, "* * * * * /tmp/come-back\n").unwrap();
    std::os::unix::fs::chown(&job, Some(uid), Some(gid)).unwrap();
    job
}

#[tokio::test]
async fn an_uninstalled_pot_user_leaves_no_jobs_no_deny_lines_and_no_files_in_shared_directories() {
    let sensor = Sensor::start_with(true, |dir| {
        let store = dir.join("potstore");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join("manifest.toml"), MANIFEST).unwrap();
        format!("  potstore: {}\n", store.display())
    })
    .await;
    let pot_id = format!("leftovers-{}", std::process::id());
    let answer = sensor
        .command(install(&pot_id, "sleeper", json!({}), None), 60)
        .await;
    assert_eq!(answer["success"], true, "{answer}");
    let user = pot_user_name(&pot_id);
    let uid = user_uid(&user).expect("the pot's user exists");
    let gid = std::fs::metadata(sensor.pots_dir().join(&pot_id))
        .unwrap()
        .gid();
    assert_ne!(uid, 0);

    // While installed, the pot's user may not use crontab or at. Without /etc/at.deny
    // (and at.allow) only root may use at: the node does not create it.
    let at_deny_present = Path::new("/etc/at.deny").exists();
    for deny_file in ["/etc/cron.deny", "/etc/at.deny"] {
        if deny_file == "/etc/at.deny" && !at_deny_present {
            continue;
        }
        assert!(lists(deny_file, &user), "{deny_file} lists {user}");
        assert!(!lists(deny_file, "root"), "{deny_file} never lists root");
    }

    // What an attacker owning the pot's user leaves behind: files and a directory in /tmp
    // and /dev/shm, and a link in /tmp to a file of root's.
    let root_file = sensor.dir.path().join("root-file");
    std::fs::write(&root_file, "root's own\n").unwrap();
    let tag = format!("honeybee-cleanup-{}", std::process::id());
    let tmp = PathBuf::from("/tmp");
    let shm = PathBuf::from("/dev/shm");
    run_as_pot_user(
        uid,
        gid,
        &format!(
            "echo x > /tmp/{tag}-file && mkdir /tmp/{tag}-dir && echo y > /tmp/{tag}-dir/inner && echo z > /dev/shm/{tag}-shm && ln -s {} /tmp/{tag}-link",
            root_file.display()
        ),
    );
    let planted = [
        tmp.join(format!("{tag}-file")),
        tmp.join(format!("{tag}-dir")),
        shm.join(format!("{tag}-shm")),
        tmp.join(format!("{tag}-link")),
    ];
    for path in &planted {
        assert_eq!(
            path.symlink_metadata().unwrap().uid(),
            uid,
            "{}",
            path.display()
        );
    }
    // A crontab queued before the pot user was denied (by an earlier version) is gone
    // before the pot runs again: a stopped pot does not come back through cron.
    let crontab = plant_job("/var/spool/cron/crontabs", &user, uid, gid);
    let stopped = sensor.command(json!({"StopPot": pot_id}), 60).await;
    assert_eq!(stopped["success"], true, "{stopped}");
    let deployed = sensor.command(json!({"DeployPot": pot_id}), 60).await;
    assert_eq!(deployed["success"], true, "{deployed}");
    assert!(
        !present(&crontab),
        "the crontab is removed at the next start"
    );
    let crontab = plant_job("/var/spool/cron/crontabs", &user, uid, gid);
    let at_job = plant_job("/var/spool/cron/atjobs", &format!("a{tag}"), uid, gid);
    // Someone else's file in the same places stays.
    let bystander = tmp.join(format!("{tag}-root"));
    std::fs::write(&bystander, "root's\n").unwrap();

    let uninstalled = sensor.command(json!({"UninstallPot": pot_id}), 60).await;
    assert_eq!(uninstalled["success"], true, "{uninstalled}");
    assert_eq!(user_uid(&user), None);
    for path in planted.iter().chain([&crontab, &at_job]) {
        assert!(!present(path), "{} is left", path.display());
    }
    assert_eq!(std::fs::read_to_string(&root_file).unwrap(), "root's own\n");
    assert!(present(&bystander));
    std::fs::remove_file(&bystander).unwrap();
    for deny_file in ["/etc/cron.deny", "/etc/at.deny"] {
        assert!(!lists(deny_file, &user), "{deny_file} still lists {user}");
    }
}

#[tokio::test]
async fn a_pot_of_the_old_shared_user_is_handed_over_only_after_that_users_processes_end() {
    // The user all pots shared in earlier versions is named `honeypot.run_as` itself.
    let shared = format!("hbl{}", std::process::id());
    let status = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            &shared,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let shared_uid = user_uid(&shared).unwrap();
    let sensor = Sensor::start_with(true, |dir| {
        let store = dir.join("potstore");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join("manifest.toml"), MANIFEST).unwrap();
        format!("  potstore: {}\n  run_as: {shared}\n", store.display())
    })
    .await;
    let answer = sensor
        .command(install("legacy-1", "sleeper", json!({}), None), 60)
        .await;
    assert_eq!(answer["success"], true, "{answer}");
    let stopped = sensor.command(json!({"StopPot": "legacy-1"}), 60).await;
    assert_eq!(stopped["success"], true, "{stopped}");
    let instance = sensor.pots_dir().join("legacy-1");
    let pot_uid = std::fs::metadata(&instance).unwrap().uid();

    // As an earlier version left it: the directory is the shared user's, and a process of
    // that user (an escaped pot) still runs and could swap names in it.
    let status = Command::new("chown")
        .args(["-R", &format!("{shared_uid}:{shared_uid}")])
        .arg(&instance)
        .status()
        .unwrap();
    assert!(status.success());
    let mut leftover = Command::new("setpriv")
        .arg(format!("--reuid={shared_uid}"))
        .arg(format!("--regid={shared_uid}"))
        .arg("--clear-groups")
        .args(["sleep", "3600"])
        .current_dir("/")
        .spawn()
        .unwrap();

    let deployed = sensor.command(json!({"DeployPot": "legacy-1"}), 60).await;
    assert_eq!(deployed["success"], true, "{deployed}");
    let ended = eventually(
        std::time::Duration::from_secs(20),
        "the shared user's process to be ended",
        || {
            let exited = leftover.try_wait().unwrap();
            async move { exited }
        },
    )
    .await;
    assert!(!ended.success(), "ended by a signal: {ended:?}");
    assert_eq!(std::fs::metadata(&instance).unwrap().uid(), pot_uid);
    assert_eq!(
        process_uid(deployed["data"]["pid"].as_u64().unwrap()),
        pot_uid
    );

    let uninstalled = sensor
        .command(json!({"UninstallPot": "legacy-1"}), 60)
        .await;
    assert_eq!(uninstalled["success"], true, "{uninstalled}");
    let status = Command::new("userdel").arg(&shared).status().unwrap();
    assert!(status.success());
}

/// Processes of `uid` that are not zombies, with their command lines.
fn live_processes_of(uid: u32) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
                let zombie = status
                    .lines()
                    .any(|line| line.starts_with("State:") && line.contains('Z'));
                let owned = status.lines().any(|line| {
                    line.starts_with("Uid:")
                        && line
                            .split_whitespace()
                            .skip(1)
                            .any(|field| field == uid.to_string())
                });
                owned && !zombie
            })
        })
        .map(|pid| {
            let command = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            (pid, String::from_utf8_lossy(&command).replace('\0', " "))
        })
        .collect()
}

/// If the test fails with the attacker still running, it must not outlive the test: root
/// kills what it finds of the uid until nothing is left, then removes the user.
struct AttackerCleanup {
    uid: u32,
    user: String,
}

impl Drop for AttackerCleanup {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let left = live_processes_of(self.uid);
            if left.is_empty() {
                break;
            }
            for (pid, _) in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = Command::new("userdel").arg(&self.user).status();
    }
}

/// The attacker's launcher forks children that loop `kill(-1, SIGKILL)` (killing every
/// other process of the pot's user, a helper the node would run as that user included) and
/// now and then move to a fresh process (fork, and the parent exits), so the node chases
/// pids that keep changing. (A fighter that forked and fought on beside its child killed
/// the child first on a fast machine: one pid forever, and the test never saw a fork.)
/// Forking takes
/// a python process a millisecond or more, so a fighter kills many times between forks:
/// a helper of the pot's user never gets the millisecond it needs to run. Killed children
/// are reaped at once (SIGCHLD ignored), so the dead do not use up the process limit that
/// bounds the attacker should the test fail.
const STOP_FIGHTER: &str = r#"
import os, resource, signal
resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
def fight():
    while True:
        for _ in range(20000):
            try:
                os.kill(-1, 9)
            except OSError:
                pass
        try:
            if os.fork() != 0:
                os._exit(0)
        except OSError:
            pass
for _ in range(4):
    if os.fork() == 0:
        fight()
signal.pause()
"#;

/// Root's stand-in for an init, one per attacker: it runs the attacker as the pot's user,
/// adopts the attacker's orphans (child subreaper) and reaps every process below it,
/// exiting once none is left. Without it, orphans killed by the node would stay zombies of
/// the pot's user under an init that does not reap (`userdel` refuses such a user), and
/// this test process would have to become the subreaper of everything the other tests run.
const ATTACKER_INIT: &str = r#"
import ctypes, os, sys
PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
if os.fork() == 0:
    os.execvp("setpriv", ["setpriv", "--reuid=" + sys.argv[1], "--regid=" + sys.argv[2], "--clear-groups", "/usr/bin/python3", "-c", sys.argv[3]])
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"#;

/// Starts the attacker as the pot's user and waits until it fights: a process it forked
/// runs. Two fighters may kill each other at the same instant; an attacker that died out
/// that way is started again. Returns the attackers' inits.
async fn start_stop_fighter(uid: u32, gid: u32) -> Vec<std::process::Child> {
    let launch = || {
        Command::new("/usr/bin/python3")
            .args(["-c", ATTACKER_INIT])
            .args([uid.to_string(), gid.to_string(), STOP_FIGHTER.to_owned()])
            .current_dir("/")
            .spawn()
            .unwrap()
    };
    let mut inits = vec![launch()];
    // Forked once at least: two processes of the attacker were seen, at once or in turn.
    let mut seen = std::collections::HashSet::new();
    eventually(
        std::time::Duration::from_secs(20),
        "the attacker to fork",
        || {
            let running = live_processes_of(uid);
            seen.extend(
                running
                    .iter()
                    .filter(|(_, command)| command.contains("python3"))
                    .map(|(pid, _)| *pid),
            );
            let died_out = running.is_empty()
                && inits
                    .iter_mut()
                    .all(|init| init.try_wait().unwrap().is_some());
            if died_out {
                inits.push(launch());
            }
            let fighting = seen.len() >= 2 && !running.is_empty();
            async move { fighting.then_some(()) }
        },
    )
    .await;
    inits
}

/// Waits until nothing of `uid` runs and every attacker init has reaped all below it and
/// exited.
async fn assert_all_ended(uid: u32, mut inits: Vec<std::process::Child>) {
    eventually(
        std::time::Duration::from_secs(20),
        "every process of the pot's user to end",
        || {
            let left = live_processes_of(uid);
            let inits_done = inits
                .iter_mut()
                .all(|init| init.try_wait().unwrap().is_some());
            async move { (left.is_empty() && inits_done).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn a_pot_killing_every_process_of_its_user_still_ends_at_stop_and_uninstall() {
    let sensor = Sensor::start_with(true, |dir| {
        let store = dir.join("potstore");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join("manifest.toml"), MANIFEST).unwrap();
        format!("  potstore: {}\n", store.display())
    })
    .await;
    let pot_id = format!("fighter-{}", std::process::id());
    let answer = sensor
        .command(install(&pot_id, "sleeper", json!({}), None), 60)
        .await;
    assert_eq!(answer["success"], true, "{answer}");
    // Stopped first: no supervisor restarting the pot (and ending its user's processes
    // before each start) takes part; the stop and the uninstall alone must end them.
    let stopped = sensor.command(json!({"StopPot": pot_id}), 60).await;
    assert_eq!(stopped["success"], true, "{stopped}");
    let user = pot_user_name(&pot_id);
    let uid = user_uid(&user).expect("the pot's user exists");
    let gid = std::fs::metadata(sensor.pots_dir().join(&pot_id))
        .unwrap()
        .gid();
    let _cleanup = AttackerCleanup {
        uid,
        user: user.clone(),
    };

    let inits = start_stop_fighter(uid, gid).await;
    let stopped = sensor.command(json!({"StopPot": pot_id}), 60).await;
    assert_eq!(stopped["success"], true, "{stopped}");
    assert_all_ended(uid, inits).await;

    let inits = start_stop_fighter(uid, gid).await;
    let uninstalled = sensor.command(json!({"UninstallPot": pot_id}), 60).await;
    assert_eq!(uninstalled["success"], true, "{uninstalled}");
    assert_all_ended(uid, inits).await;
    assert_eq!(user_uid(&user), None, "the pot's user is removed");
    for deny_file in ["/etc/cron.deny", "/etc/at.deny"] {
        assert!(!lists(deny_file, &user), "{deny_file} still lists {user}");
    }
}
