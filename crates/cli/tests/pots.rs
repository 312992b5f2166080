//! Honeypots run by the Node on command, driven only through the Core's REST API: the light
//! `tcp-banner` pot through its whole lifecycle, installs from a git repository, failing
//! installs, and a real Cowrie.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// The Core and a Node (run as root here, so its pots run as the `honeybee` user).
struct Sensor {
    client: reqwest::Client,
    ports: CorePorts,
    event_port: u16,
    node_id: u64,
    _core: Daemon,
    node: Option<Daemon>,
    dir: tempfile::TempDir,
}

impl Sensor {
    async fn start() -> Self {
        Self::start_in(true).await
    }

    /// `open`: whether the pot user may pass through the test's temporary directory.
    async fn start_in(open: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Pots run as an unprivileged user, who must reach their directories in here (or,
        // to test the refusal, must not).
        let mode = if open { "755" } else { "700" };
        let status = Command::new("chmod")
            .arg(mode)
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let ports = CorePorts::free();
        let event_port = free_port();
        let core = start_core(dir.path(), &ports, "");
        let node = start_node(dir.path(), &ports, event_port);
        let client = reqwest::Client::new();
        let node_id = wait_for_online_node(&client, &ports.api_base()).await;
        Sensor {
            client,
            ports,
            event_port,
            node_id,
            _core: core,
            node: Some(node),
            dir,
        }
    }

    async fn restart_node(&mut self) {
        let mut node = self.node.take().unwrap();
        assert!(node.stop_with("TERM").await.success());
        self.node = Some(start_node(self.dir.path(), &self.ports, self.event_port));
    }

    /// SIGKILL: the node gets no chance to stop its pots.
    fn kill_and_start_node(&mut self) {
        self.node.take().unwrap().kill_hard();
        self.node = Some(start_node(self.dir.path(), &self.ports, self.event_port));
    }

    /// Sends a command and waits (up to `wait` seconds) for the node's answer.
    async fn command(&self, command: Value, wait: u64) -> Value {
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

    async fn pot(&self, pot_id: &str) -> Option<Value> {
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

    async fn wait_for_status(&self, pot_id: &str, status: &str) -> Value {
        eventually(
            Duration::from_secs(60),
            &format!("{pot_id} to be {status}"),
            || async move { self.pot(pot_id).await.filter(|pot| pot["status"] == status) },
        )
        .await
    }

    fn pots_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("node-data/pots")
    }
}

fn install(pot_id: &str, pot_type: &str, config: Value, git_url: Option<&str>) -> Value {
    json!({"InstallPot": {
        "pot_id": pot_id,
        "honeypot_type": pot_type,
        "git_url": git_url,
        "config": config,
        "auto_start": true,
    }})
}

/// Logs in to a tcp-banner pot the FTP way and returns the banner it sent.
async fn ftp_login(port: u16, user: &str, password: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut banner = vec![0u8; 256];
    let count = stream.read(&mut banner).await.unwrap();
    stream
        .write_all(format!("USER {user}\r\nPASS {password}\r\n").as_bytes())
        .await
        .unwrap();
    let mut replies = Vec::new();
    // The pot answers both lines; reading until then means it has processed them.
    while !String::from_utf8_lossy(&replies).contains("530") {
        let mut chunk = [0u8; 256];
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "the pot closed the connection early");
        replies.extend_from_slice(&chunk[..read]);
    }
    String::from_utf8_lossy(&banner[..count]).into_owned()
}

async fn login_events(sensor: &Sensor, pot_id: &str, count: usize) -> Vec<Value> {
    wait_for_events(
        &sensor.client,
        &sensor.ports.api_base(),
        &format!("pot_id={pot_id}&event_type=tcp_banner.login"),
        count,
    )
    .await
}

/// A process that exists and is not a zombie waiting to be reaped.
fn process_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

async fn port_accepts(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

#[tokio::test]
async fn the_light_pot_lives_its_whole_lifecycle_through_the_api() {
    let mut sensor = Sensor::start().await;
    let port = free_port();

    // Install with auto_start: answered once it listens.
    let answer = sensor
        .command(
            install(
                "banner-1",
                "tcp-banner",
                json!({"ports": port.to_string(), "banner": "220 honeybee test\\r\\n"}),
                None,
            ),
            120,
        )
        .await;
    assert_eq!(answer["success"], true, "{answer}");
    let first_pid = answer["data"]["pid"].as_u64().unwrap();
    let pot = sensor.wait_for_status("banner-1", "Running").await;
    assert_eq!(pot["pot_type"], "tcp-banner");

    // An attack reaches the Core, attributed to the pot.
    let banner = ftp_login(port, "root", "hunter2").await;
    assert_eq!(banner, "220 honeybee test\r\n");
    let events = login_events(&sensor, "banner-1", 1).await;
    assert_eq!(events[0]["pot_type"], "tcp-banner");
    assert_eq!(events[0]["data"]["username"], "root");
    assert_eq!(events[0]["data"]["password"], "hunter2");
    assert_eq!(events[0]["data"]["src_ip"], "127.0.0.1");

    // Info, metrics and logs are real.
    let info = sensor.command(json!({"GetPotInfo": "banner-1"}), 10).await;
    assert_eq!(info["data"]["pid"].as_u64(), Some(first_pid), "{info}");
    assert_eq!(info["data"]["ports"], json!([port]));
    assert_eq!(info["data"]["version"], "1.0.0");
    let install_path = info["data"]["install_path"].as_str().unwrap().to_owned();
    assert!(Path::new(&install_path)
        .join("files/tcp_banner.py")
        .is_file());
    let metrics = sensor
        .command(json!({"GetPotMetrics": "banner-1"}), 10)
        .await;
    assert_eq!(metrics["data"]["pid"].as_u64(), Some(first_pid));
    assert!(
        metrics["data"]["rss_bytes"].as_u64().unwrap() > 1024 * 1024,
        "{metrics}"
    );
    assert_eq!(metrics["data"]["restarts"], 0);
    let logs = sensor.command(json!({"GetPotLogs": "banner-1"}), 10).await;
    let lines: Vec<&str> = logs["data"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line.contains(&format!("listening on ports {port}"))),
        "{lines:?}"
    );
    // It runs unprivileged.
    let owner = std::fs::read_to_string(format!("/proc/{first_pid}/status")).unwrap();
    let uid_line = owner
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_owned();
    assert!(
        !uid_line.split_whitespace().skip(1).any(|uid| uid == "0"),
        "{uid_line}"
    );

    // One id, one pot; one port, one pot.
    let duplicate = sensor
        .command(install("banner-1", "tcp-banner", json!({}), None), 10)
        .await;
    assert_eq!(duplicate["success"], false);
    assert!(
        duplicate["message"]
            .as_str()
            .unwrap()
            .contains("already installed"),
        "{duplicate}"
    );
    let clash = sensor
        .command(
            install(
                "banner-2",
                "tcp-banner",
                json!({"ports": port.to_string()}),
                None,
            ),
            60,
        )
        .await;
    assert_eq!(clash["success"], false);
    assert!(
        clash["message"]
            .as_str()
            .unwrap()
            .contains(&format!("port {port} is already in use")),
        "{clash}"
    );
    assert!(sensor.pot("banner-2").await.unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("already in use"));
    assert_eq!(
        sensor
            .command(json!({"UninstallPot": "banner-2"}), 10)
            .await["success"],
        true
    );

    // A killed pot is restarted and reported.
    let status = Command::new("kill")
        .args(["-9", &first_pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let restarted_pid = eventually(
        Duration::from_secs(30),
        "the pot to be restarted",
        || async {
            let info = sensor.command(json!({"GetPotInfo": "banner-1"}), 10).await;
            let pid = info["data"]["pid"].as_u64()?;
            (pid != first_pid && info["data"]["status"] == "Running").then_some(pid)
        },
    )
    .await;
    assert_eq!(
        sensor
            .command(json!({"GetPotMetrics": "banner-1"}), 10)
            .await["data"]["restarts"],
        1
    );
    ftp_login(port, "admin", "after-crash").await;
    login_events(&sensor, "banner-1", 2).await;

    // Stop closes the port; deploy and restart bring it back.
    let stopped = sensor.command(json!({"StopPot": "banner-1"}), 30).await;
    assert_eq!(stopped["success"], true, "{stopped}");
    assert!(!port_accepts(port).await, "the port is closed once stopped");
    assert_eq!(sensor.pot("banner-1").await.unwrap()["status"], "Stopped");
    assert!(!process_alive(restarted_pid), "no orphan left");
    assert_eq!(
        sensor.command(json!({"DeployPot": "banner-1"}), 60).await["success"],
        true
    );
    assert!(port_accepts(port).await);
    let before_restart =
        sensor.command(json!({"GetPotInfo": "banner-1"}), 10).await["data"]["pid"].clone();
    let restarted = sensor.command(json!({"RestartPot": "banner-1"}), 60).await;
    assert_eq!(restarted["success"], true, "{restarted}");
    assert_ne!(restarted["data"]["pid"], before_restart);

    // A restarted node brings the pot back as it was.
    sensor.restart_node().await;
    eventually(
        Duration::from_secs(60),
        "the pot back after the node restart",
        || async {
            let info = sensor.command(json!({"GetPotInfo": "banner-1"}), 10).await;
            (info["data"]["status"] == "Running").then_some(())
        },
    )
    .await;
    assert!(port_accepts(port).await);
    sensor.wait_for_status("banner-1", "Running").await;

    // A node killed outright leaves its pot running; started again, it takes it over.
    let orphan = sensor.command(json!({"GetPotInfo": "banner-1"}), 10).await["data"]["pid"]
        .as_u64()
        .unwrap();
    sensor.kill_and_start_node();
    let adopted = eventually(
        Duration::from_secs(60),
        "the pot running under the new node",
        || async {
            let info = sensor.command(json!({"GetPotInfo": "banner-1"}), 10).await;
            let pid = info["data"]["pid"].as_u64()?;
            (info["data"]["status"] == "Running" && pid != orphan).then_some(pid)
        },
    )
    .await;
    assert!(!process_alive(orphan), "the old process group was ended");
    assert!(process_alive(adopted));
    ftp_login(port, "root", "after-node-crash").await;

    // Uninstall: gone from disk and from every list.
    let uninstalled = sensor
        .command(json!({"UninstallPot": "banner-1"}), 30)
        .await;
    assert_eq!(uninstalled["success"], true, "{uninstalled}");
    assert!(!Path::new(&install_path).exists());
    assert!(sensor.pot("banner-1").await.is_none());
    let listed = sensor.command(json!("GetInstalledPots"), 10).await;
    assert_eq!(listed["data"]["pots"], json!([]), "{listed}");
    assert!(!port_accepts(port).await);
}

/// A git repository with its own manifest: one good pot (the tcp-banner files) and one whose
/// install step fails.
fn git_potstore(parent: &Path) -> String {
    let repository = parent.join("potstore-repo");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../potstore/tcp-banner");
    std::fs::create_dir_all(repository.join("banner")).unwrap();
    std::fs::copy(
        shipped.join("tcp_banner.py"),
        repository.join("banner/tcp_banner.py"),
    )
    .unwrap();
    std::fs::write(
        repository.join("manifest.toml"),
        r#"
[[pots]]
id = "git-banner"
version = "2.0.0"
description = "tcp-banner, from a git repository"
files = "banner"
ports = "{ports}"
start = ["{python}", "-u", "{files}/tcp_banner.py", "--ports", "{ports}", "--banner", "{banner}"]
[pots.config]
ports = "2424"
banner = "+OK POP3 ready\\r\\n"
[pots.env]
PYTHONPATH = "{kit}"

[[pots]]
id = "crasher"
version = "0.1.0"
start = ["sh", "-c", "echo dying; exit 7"]

[[pots]]
id = "broken-install"
version = "0.1.0"
install = [["sh", "-c", "echo preparing; echo boom: dependency missing >&2; exit 3"]]
start = ["true"]
"#,
    )
    .unwrap();
    let git = |arguments: &[&str]| {
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
            .current_dir(&repository)
            .status()
            .unwrap();
        assert!(status.success(), "git {arguments:?}");
    };
    git(&["init", "--quiet"]);
    git(&["add", "."]);
    git(&["commit", "--quiet", "-m", "potstore"]);
    format!("file://{}", repository.display())
}

#[tokio::test]
async fn pots_install_from_a_git_repository_and_failed_installs_say_why() {
    let sensor = Sensor::start().await;
    let url = git_potstore(sensor.dir.path());
    let port = free_port();

    let answer = sensor
        .command(
            install(
                "pop-1",
                "git-banner",
                json!({"ports": port.to_string()}),
                Some(&url),
            ),
            120,
        )
        .await;
    assert_eq!(answer["success"], true, "{answer}");
    let banner = ftp_login(port, "mail", "secret").await;
    assert_eq!(banner, "+OK POP3 ready\r\n");
    login_events(&sensor, "pop-1", 1).await;
    let info = sensor.command(json!({"GetPotInfo": "pop-1"}), 10).await;
    assert_eq!(info["data"]["source"], url);
    assert_eq!(info["data"]["version"], "2.0.0");

    // A failing install step: Failed, with the step and the tail of its output.
    let broken = sensor
        .command(
            install("broken-1", "broken-install", json!({}), Some(&url)),
            60,
        )
        .await;
    assert_eq!(broken["success"], false);
    let message = broken["message"].as_str().unwrap();
    assert!(
        message.contains("install step 1/1") && message.contains("exit status: 3"),
        "{message}"
    );
    assert!(message.contains("boom: dependency missing"), "{message}");
    let pot = sensor.wait_for_status("broken-1", "Failed").await;
    assert!(pot["message"].as_str().unwrap().contains("boom"), "{pot}");
    assert!(
        !sensor.pots_dir().join("broken-1").exists(),
        "a failed install leaves nothing behind"
    );

    // A pot that keeps crashing is restarted a few times, then left Failed with the reason.
    sensor
        .command(install("crash-1", "crasher", json!({}), Some(&url)), 60)
        .await;
    let pot = eventually(
        Duration::from_secs(60),
        "the crash loop to be given up",
        || async {
            sensor.pot("crash-1").await.filter(|pot| {
                pot["status"] == "Failed"
                    && pot["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("not restarting")
            })
        },
    )
    .await;
    let message = pot["message"].as_str().unwrap();
    assert!(
        message.contains("exit status: 7") && message.contains("crashed 6 times"),
        "{message}"
    );
    let metrics = sensor
        .command(json!({"GetPotMetrics": "crash-1"}), 10)
        .await;
    assert_eq!(metrics["data"]["restarts"], 5, "{metrics}");
    assert_eq!(metrics["data"]["pid"], Value::Null);

    // A bad manifest, an unknown type, a missing repository: Failed with the reason.
    let bad = sensor.dir.path().join("bad-repo");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("manifest.toml"),
        "[[pots]]\nid = \"x\"\nthis is not toml\n",
    )
    .unwrap();
    for arguments in [
        &["init", "--quiet"][..],
        &["add", "."],
        &["commit", "--quiet", "-m", "bad"],
    ] {
        let status = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
            .args(arguments)
            .current_dir(&bad)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let cases = [
        (
            install(
                "bad-1",
                "x",
                json!({}),
                Some(&format!("file://{}", bad.display())),
            ),
            "parsing potstore manifest",
        ),
        (
            install("bad-2", "no-such-pot", json!({}), None),
            "unknown pot type \"no-such-pot\"",
        ),
        (
            install(
                "bad-3",
                "git-banner",
                json!({}),
                Some("file:///nonexistent/repo"),
            ),
            "git clone",
        ),
        (
            install("../escape", "tcp-banner", json!({}), None),
            "invalid pot id",
        ),
    ];
    for (command, expected) in cases {
        let answer = sensor.command(command.clone(), 60).await;
        assert_eq!(answer["success"], false, "{command}");
        assert!(
            answer["message"].as_str().unwrap().contains(expected),
            "{command}: {answer}"
        );
    }
}

#[tokio::test]
async fn cowrie_installed_through_the_api_reports_an_ssh_login() {
    let sensor = Sensor::start().await;
    let (ssh_port, telnet_port) = (free_port(), free_port());
    let answer = sensor
        .command(
            install(
                "cowrie-1",
                "cowrie",
                json!({"ssh_port": ssh_port.to_string(), "telnet_port": telnet_port.to_string(), "hostname": "web01"}),
                None,
            ),
            600,
        )
        .await;
    assert_eq!(answer["success"], true, "{answer}");
    sensor.wait_for_status("cowrie-1", "Running").await;

    ssh_attack(ssh_port);
    let logins = wait_for_events(
        &sensor.client,
        &sensor.ports.api_base(),
        "pot_id=cowrie-1&event_type=cowrie.login.success",
        1,
    )
    .await;
    assert_eq!(logins[0]["pot_type"], "cowrie");
    assert_eq!(logins[0]["data"]["username"], "root");
    assert_eq!(logins[0]["data"]["password"], "hunter2");
    let stopped = sensor
        .command(json!({"UninstallPot": "cowrie-1"}), 60)
        .await;
    assert_eq!(stopped["success"], true, "{stopped}");
}

/// Runs the `honeybee` CLI against the sensor's Core (a separate process: blocking here
/// holds up nothing it needs).
fn cli(sensor: &Sensor, arguments: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_honeybee"))
        .arg("--api")
        .arg(sensor.ports.api_base())
        .args(arguments)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn the_cli_installs_lists_inspects_and_stops_pots() {
    let sensor = Sensor::start().await;
    let port = free_port();
    let node = sensor.node_id.to_string();
    let ports_setting = format!("ports={port}");
    let arguments = [
        "install",
        "e2e-node",
        "tcp-banner",
        "cli-pot",
        "--set",
        &ports_setting,
    ];
    let (ok, output) = cli(&sensor, &arguments);
    assert!(ok, "{output}");
    assert!(
        output.contains("installing tcp-banner as cli-pot"),
        "{output}"
    );
    assert!(
        output.contains("cli-pot is running (pid"),
        "progress and result shown: {output}"
    );

    let (ok, output) = cli(&sensor, &["pots"]);
    assert!(
        ok && output.contains("cli-pot") && output.contains("Running"),
        "{output}"
    );
    let (ok, output) = cli(&sensor, &["logs", &node, "cli-pot"]);
    assert!(
        ok && output.contains(&format!("listening on ports {port}")),
        "{output}"
    );
    let (ok, output) = cli(&sensor, &["metrics", &node, "cli-pot"]);
    assert!(
        ok && output.contains("memory:") && output.contains("restarts:   0"),
        "{output}"
    );
    let (ok, output) = cli(&sensor, &["stop", &node, "cli-pot"]);
    assert!(ok && output.contains("cli-pot stopped"), "{output}");
    assert!(!port_accepts(port).await);

    let (ok, output) = cli(&sensor, &["start", &node, "no-such-pot"]);
    assert!(!ok, "{output}");
    assert!(output.contains("not installed"), "{output}");
    let (ok, output) = cli(&sensor, &["start", "no-such-node", "cli-pot"]);
    assert!(
        !ok && output.contains("no node named \"no-such-node\""),
        "{output}"
    );
}

#[tokio::test]
async fn a_node_whose_pot_directory_the_pot_user_cannot_reach_says_so_and_still_forwards() {
    // The temporary directory is private to root: the pot user cannot pass through it.
    let sensor = Sensor::start_in(false).await;
    let answer = sensor
        .command(install("unreachable-1", "tcp-banner", json!({}), None), 10)
        .await;
    assert_eq!(answer["success"], false);
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("cannot reach honeypot.base_dir") && message.contains("chmod o+x"),
        "{message}"
    );
    send_lines(
        sensor.event_port,
        &[json!({"pot_id": "manual", "event_type": "still.forwarding"}).to_string()],
    )
    .await;
    wait_for_events(
        &sensor.client,
        &sensor.ports.api_base(),
        "event_type=still.forwarding",
        1,
    )
    .await;
}
