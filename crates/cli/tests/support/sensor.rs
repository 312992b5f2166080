//! A Core plus a Node run as root (so each pot runs as a user of its own), driven through
//! the Core's API; and what pot tests need around it: custom potstores, an https git
//! server, pot users and processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;

/// The Core and a Node (run as root here, so its pots run as users of their own).
pub struct Sensor {
    pub client: reqwest::Client,
    pub ports: CorePorts,
    pub event_port: u16,
    pub node_id: u64,
    pub core: Daemon,
    pub node: Option<Daemon>,
    /// Extra node config: lines of the `honeypot:` section (indented by two spaces), then
    /// other sections.
    pub node_sections: String,
    /// Environment variables set for the node process (on top of the test's own).
    pub node_env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
}

impl Sensor {
    pub async fn start() -> Self {
        Self::start_with(true, |_| String::new()).await
    }

    /// `open`: whether pot users may pass through the test's temporary directory;
    /// `sections` builds the extra node config from that directory.
    pub async fn start_with(open: bool, sections: impl FnOnce(&Path) -> String) -> Self {
        Self::start_with_env(open, |dir| (sections(dir), Vec::new())).await
    }

    /// Like [`Sensor::start_with`]; `setup` also returns environment variables for the node
    /// process (say, a `HOME` of the test's making).
    pub async fn start_with_env(
        open: bool,
        setup: impl FnOnce(&Path) -> (String, Vec<(String, String)>),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Pots run as unprivileged users, who must reach their directories in here (or,
        // to test the refusal, must not).
        let mode = if open { "755" } else { "700" };
        let status = Command::new("chmod")
            .arg(mode)
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let (node_sections, node_env) = setup(dir.path());
        let ports = CorePorts::free();
        let event_port = free_port();
        let core = start_core(dir.path(), &ports, "");
        let node = spawn_node(dir.path(), &ports, event_port, &node_sections, &node_env);
        let client = reqwest::Client::new();
        let node_id = wait_for_online_node(&client, &ports.api_base()).await;
        Sensor {
            client,
            ports,
            event_port,
            node_id,
            core,
            node: Some(node),
            node_sections,
            node_env,
            dir,
        }
    }

    pub async fn restart_node(&mut self) {
        let mut node = self.node.take().unwrap();
        assert!(node.stop_with("TERM").await.success());
        self.node = Some(self.start_node());
    }

    fn start_node(&self) -> Daemon {
        spawn_node(
            self.dir.path(),
            &self.ports,
            self.event_port,
            &self.node_sections,
            &self.node_env,
        )
    }

    /// SIGKILL: the node gets no chance to stop its pots.
    pub fn kill_and_start_node(&mut self) {
        self.node.take().unwrap().kill_hard();
        self.node = Some(self.start_node());
    }

    /// Sends a command and waits (up to `wait` seconds) for the node's answer.
    pub async fn command(&self, command: Value, wait: u64) -> Value {
        let url = format!(
            "{}/api/v1/nodes/{}/commands?wait={wait}",
            self.ports.api_base(),
            self.node_id
        );
        // The node may be reconnecting (after its restart): retry while it is not connected.
        eventually(
            Duration::from_secs(30),
            "the node to take the command",
            || {
                let request = self.client.post(&url).json(&command).send();
                let command = command.clone();
                async move {
                    let response = request.await.ok()?;
                    if response.status() == 409 {
                        return None;
                    }
                    assert_eq!(
                        response.status(),
                        200,
                        "command {command} was not answered in time"
                    );
                    let body: Value = response.json().await.ok()?;
                    Some(body["answer"].clone())
                }
            },
        )
        .await
    }

    pub async fn pot(&self, pot_id: &str) -> Option<Value> {
        let pots = get_json(
            &self.client,
            &format!("{}/api/v1/honeypots", self.ports.api_base()),
        )
        .await?;
        pots["honeypots"]
            .as_array()?
            .iter()
            .find(|pot| pot["pot_id"] == pot_id)
            .cloned()
    }

    pub async fn wait_for_status(&self, pot_id: &str, status: &str) -> Value {
        eventually(
            Duration::from_secs(60),
            &format!("{pot_id} to be {status}"),
            || async move { self.pot(pot_id).await.filter(|pot| pot["status"] == status) },
        )
        .await
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("node-data")
    }

    pub fn pots_dir(&self) -> PathBuf {
        self.data_dir().join("pots")
    }

    pub fn node_log(&self) -> String {
        self.node.as_ref().map(Daemon::log).unwrap_or_default()
    }
}

impl Drop for Sensor {
    /// Stops the node (and so its pots), then removes the users of the pots it still had:
    /// test runs must not fill the system's range of user ids.
    fn drop(&mut self) {
        drop(self.node.take());
        let installed = std::fs::read_to_string(self.data_dir().join("pots.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<Vec<Value>>(&text).ok())
            .unwrap_or_default();
        for pot in installed {
            if let Some(pot_id) = pot["pot_id"].as_str() {
                let _ = Command::new("userdel")
                    .arg(pot_user_name(pot_id))
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

fn spawn_node(
    dir: &Path,
    ports: &CorePorts,
    event_port: u16,
    sections: &str,
    env: &[(String, String)],
) -> Daemon {
    let mut command = node_command(dir, ports, event_port, sections);
    command.envs(env.iter().map(|(key, value)| (key, value)));
    Daemon::spawn_command("honeybee-node", command, dir)
}

/// `honeybee-<first 10 hex digits of sha256(pot id)>`, the documented user name of a pot
/// (with the default `honeypot.run_as`).
pub fn pot_user_name(pot_id: &str) -> String {
    let output = Command::new("sh")
        .args(["-c", &format!("printf %s '{pot_id}' | sha256sum")])
        .output()
        .unwrap();
    format!(
        "honeybee-{}",
        &String::from_utf8_lossy(&output.stdout)[..10]
    )
}

pub fn install(pot_id: &str, pot_type: &str, config: Value, git_url: Option<&str>) -> Value {
    json!({"InstallPot": {
        "pot_id": pot_id,
        "honeypot_type": pot_type,
        "git_url": git_url,
        "config": config,
        "auto_start": true,
    }})
}

/// A process that exists and is not a zombie waiting to be reaped.
pub fn process_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// The real uid of a process.
pub fn process_uid(pid: u64) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The uid of a user, `None` when there is no such user.
pub fn user_uid(name: &str) -> Option<u32> {
    let output = Command::new("id").args(["-u", name]).output().unwrap();
    output.status.success().then(|| {
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap()
    })
}

pub async fn port_accepts(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// Runs git in `directory` with a fixed identity.
pub fn git_in(directory: &Path, arguments: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=HoneyBee Test",
            "-c",
            "user.email=test@honeybee.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(arguments)
        .current_dir(directory)
        .status()
        .unwrap();
    assert!(status.success(), "git {arguments:?}");
}

/// Makes `directory` a git repository with everything in it committed.
pub fn commit_all(directory: &Path) {
    git_in(directory, &["init", "--quiet"]);
    git_in(directory, &["add", "."]);
    git_in(directory, &["commit", "--quiet", "-m", "potstore"]);
}

/// A TLS git server (smart HTTP over `git http-backend`) serving the repositories below
/// `root`, with a self-signed certificate in `ca.pem` for `honeypot.git_ca_file`.
pub struct HttpsGitServer {
    pub port: u16,
    pub ca_file: PathBuf,
    _daemon: Daemon,
}

impl HttpsGitServer {
    pub async fn start(root: &Path, log_dir: &Path) -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let ca_file = log_dir.join("git-ca.pem");
        let key_file = log_dir.join("git-key.pem");
        std::fs::write(&ca_file, certified.cert.pem()).unwrap();
        std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();
        // The pot users run the clone: they read the CA file.
        let status = Command::new("chmod")
            .arg("644")
            .arg(&ca_file)
            .status()
            .unwrap();
        assert!(status.success());
        let port = free_port();
        let mut command = Command::new("python3");
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/https_git_server.py"))
            .arg(root)
            .arg(port.to_string())
            .arg(&ca_file)
            .arg(&key_file);
        let daemon = Daemon::spawn_command("https-git-server", command, log_dir);
        wait_for_port(([127, 0, 0, 1], port).into()).await;
        HttpsGitServer {
            port,
            ca_file,
            _daemon: daemon,
        }
    }

    /// The URL of repository `name` (a directory below the server's root).
    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }
}
