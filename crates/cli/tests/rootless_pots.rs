//! README's commands as a normal user types them in their home: `honeybee up` (not root)
//! enters a user namespace of its own, and a pot installed with the CLI runs as one of the
//! user's subordinate ids — a uid nobody else has, which cannot read the node's secrets nor
//! signal it. A user without subordinate ids gets its pots refused with the fix.
//!
//! The users come from `scripts/setup-test-deps.sh`: `honeybee-rootless` (a home, subordinate
//! ids) and `honeybee-test` (a system user without either).

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;
use tokio::io::AsyncReadExt;

/// A normal user: name, uid, gid, home.
struct NormalUser {
    name: &'static str,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl NormalUser {
    fn named(name: &'static str) -> Self {
        let entry = nix::unistd::User::from_name(name)
            .unwrap()
            .unwrap_or_else(|| panic!("user {name} exists (scripts/setup-test-deps.sh)"));
        NormalUser {
            name,
            uid: entry.uid.as_raw(),
            gid: entry.gid.as_raw(),
            home: entry.dir,
        }
    }

    /// A fresh directory of the user's own in `parent`, which others may pass through.
    fn directory_in(&self, parent: &Path) -> tempfile::TempDir {
        let directory = tempfile::Builder::new()
            .prefix("honeybee-readme-")
            .tempdir_in(parent)
            .unwrap();
        std::os::unix::fs::chown(directory.path(), Some(self.uid), Some(self.gid)).unwrap();
        let status = Command::new("chmod")
            .arg("755")
            .arg(directory.path())
            .status()
            .unwrap();
        assert!(status.success());
        directory
    }

    /// `program arguments…` as this user, in `directory`, with a login's environment.
    fn command(&self, directory: &Path, program: &str, arguments: &[String]) -> Command {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(program)
            .args(arguments)
            .current_dir(directory)
            .env_clear()
            .env("HOME", &self.home)
            .env("USER", self.name)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("RUST_LOG", "info");
        command
    }

    /// The user's block of subordinate uids, from `/etc/subuid`.
    fn subordinate_uids(&self) -> std::ops::Range<u32> {
        let table = std::fs::read_to_string("/etc/subuid").unwrap();
        table
            .lines()
            .find_map(|line| {
                let mut fields = line.split(':');
                let owner = fields.next()?;
                if owner != self.name && owner != self.uid.to_string() {
                    return None;
                }
                let first: u32 = fields.next()?.parse().ok()?;
                let count: u32 = fields.next()?.parse().ok()?;
                Some(first..first + count)
            })
            .expect("the user has subordinate ids")
    }
}

/// `honeybee up` as `user` in `directory` with the README's defaults (only the ports move).
fn honeybee_up_as(
    user: &NormalUser,
    directory: &Path,
    ports: &CorePorts,
    event_port: u16,
) -> Daemon {
    let arguments = readme_up_arguments(ports, event_port);
    let command = user.command(directory, env!("CARGO_BIN_EXE_honeybee"), &arguments);
    Daemon::spawn_command("honeybee-up", command, directory)
}

/// The real (outside) uid of process `pid`, from `/proc/<pid>/status` read here, as root
/// in the system's namespace.
fn real_uid(pid: u64) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_normal_user_runs_readme_pots_as_subordinate_ids_the_node_is_safe_from() {
    let user = NormalUser::named("honeybee-rootless");
    let home = user.directory_in(&user.home);
    let ports = CorePorts::free();
    let event_port = free_port();
    let mut up = honeybee_up_as(&user, home.path(), &ports, event_port);
    let data = home.path().join("honeybee-data");
    let token = file_text_when_written(data.join("core/admin-token"), "the admin token").await;
    let client = authorized_client(&token);
    let node_id = wait_for_online_node(&client, &ports.api_base()).await;
    assert!(
        up.log().contains(&format!(
            "pots:          {}",
            data.join("node/pots").display()
        )),
        "the pots stay under the user's data directory:\n{}",
        up.log()
    );

    let pot_port = free_port();
    let (installed, output) = run_cli(
        &ports.api_base(),
        Some(&token),
        &[
            "install",
            &node_id.to_string(),
            "tcp-banner",
            "ftp-01",
            "--set",
            &format!("ports={pot_port}"),
        ],
    );
    assert!(installed, "{output}\n{}", up.log());
    // The CLI waits for the pot to run and names its process: `ftp-01 is running (pid N)`.
    let pid: u64 = output
        .split("is running (pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no pid in the install's output: {output}"));

    // The pot runs as one of the user's subordinate ids: not the user, not root.
    let pot_uid = real_uid(pid);
    assert!(
        user.subordinate_uids().contains(&pot_uid),
        "pot uid {pot_uid} outside {:?}",
        user.subordinate_uids()
    );
    assert_eq!(
        std::fs::metadata(data.join("node/pots/ftp-01"))
            .unwrap()
            .uid(),
        pot_uid,
        "the pot's directory is its own"
    );
    // That uid can neither read the node's secrets nor signal the node.
    let as_pot = |arguments: &[&str]| {
        Command::new("setpriv")
            .arg(format!("--reuid={pot_uid}"))
            .arg(format!("--regid={pot_uid}"))
            .arg("--clear-groups")
            .arg("--")
            .args(arguments)
            .output()
            .unwrap()
    };
    let totp_key = data.join("node/totp.key");
    assert!(
        totp_key.exists(),
        "the node keeps its key at {}",
        totp_key.display()
    );
    let read = as_pot(&["cat", totp_key.to_str().unwrap()]);
    assert!(!read.status.success(), "the pot read the node's totp.key");
    let signal = as_pot(&["kill", "-0", &up.pid().to_string()]);
    assert!(!signal.status.success(), "the pot may signal the node");

    // The pot works: a visitor gets the banner, and the event arrives under the pot's id.
    let mut visitor = tokio::net::TcpStream::connect(("127.0.0.1", pot_port))
        .await
        .unwrap();
    let mut banner = [0u8; 3];
    tokio::time::timeout(Duration::from_secs(10), visitor.read_exact(&mut banner))
        .await
        .expect("a banner within 10 s")
        .unwrap();
    assert_eq!(&banner, b"220");
    drop(visitor);
    let events = wait_for_events(
        &client,
        &ports.api_base(),
        "pot_id=ftp-01&event_type=tcp_banner.connect",
        1,
    )
    .await;
    assert_eq!(events[0]["pot_type"], "tcp-banner");

    let (stopped, output) = run_cli(
        &ports.api_base(),
        Some(&token),
        &["stop", &node_id.to_string(), "ftp-01"],
    );
    assert!(stopped, "{output}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the pot's process is gone once stop answered"
    );
    // Uninstalled: its files go (removed by the node, root over the pot's id in its
    // namespace), and the node runs on.
    let (uninstalled, output) = run_cli(
        &ports.api_base(),
        Some(&token),
        &["uninstall", &node_id.to_string(), "ftp-01"],
    );
    assert!(uninstalled, "{output}");
    assert!(!data.join("node/pots/ftp-01").exists());
    let status = up.stop_with("INT").await;
    assert!(status.success(), "{status}\n{}", up.log());
}

#[tokio::test]
async fn a_user_without_subordinate_ids_gets_its_pots_refused_with_the_fix() {
    // A system user: no subordinate ids, no home.
    let user = NormalUser::named("honeybee-test");
    let scratch = tempfile::tempdir().unwrap();
    let status = Command::new("chmod")
        .arg("755")
        .arg(scratch.path())
        .status()
        .unwrap();
    assert!(status.success());
    let directory = user.directory_in(scratch.path());
    let ports = CorePorts::free();
    let event_port = free_port();
    let mut up = honeybee_up_as(&user, directory.path(), &ports, event_port);
    let token = file_text_when_written(
        directory.path().join("honeybee-data/core/admin-token"),
        "the admin token",
    )
    .await;
    let node_id = wait_for_online_node(&authorized_client(&token), &ports.api_base()).await;
    let (installed, output) = run_cli(
        &ports.api_base(),
        Some(&token),
        &["install", &node_id.to_string(), "tcp-banner", "ftp-01"],
    );
    assert!(!installed, "{output}");
    assert!(
        output.contains("subordinate ids") && output.contains("uidmap"),
        "the refusal says what to do: {output}"
    );
    let status = up.stop_with("INT").await;
    assert!(status.success(), "{status}\n{}", up.log());
}
