//! Honeypots run by the Node on command, driven only through the Core's REST API: the light
//! `tcp-banner` pot through its whole lifecycle, installs from a git repository, failing
//! installs, and a real Cowrie.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::sensor::*;
use support::*;

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

/// A git repository `<root>/potstore-repo` with its own manifest: one good pot (the
/// tcp-banner files), one that keeps crashing and one whose install step fails.
fn git_potstore(root: &Path) {
    let repository = root.join("potstore-repo");
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
    commit_all(&repository);
}

/// A sensor whose node trusts the test's https git server.
async fn git_sensor() -> (Sensor, HttpsGitServer) {
    let sensor = Sensor::start_with(true, |dir| {
        format!("  git_ca_file: {}\n", dir.join("git-ca.pem").display())
    })
    .await;
    let repositories = sensor.dir.path().join("repositories");
    std::fs::create_dir_all(&repositories).unwrap();
    git_potstore(&repositories);
    let server = HttpsGitServer::start(&repositories, sensor.dir.path()).await;
    (sensor, server)
}

#[tokio::test]
async fn pots_install_from_a_git_repository_and_failed_installs_say_why() {
    let (sensor, server) = git_sensor().await;
    let url = server.url("potstore-repo");
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
    let bad = sensor.dir.path().join("repositories/bad-repo");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("manifest.toml"),
        "[[pots]]\nid = \"x\"\nthis is not toml\n",
    )
    .unwrap();
    commit_all(&bad);
    let cases = [
        (
            install("bad-1", "x", json!({}), Some(&server.url("bad-repo"))),
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
                Some(&server.url("no-such-repo")),
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
    run_cli(&sensor.ports.api_base(), None, arguments)
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
    // The temporary directory is private to root, like /root: the pot user cannot pass
    // through it. A base_dir configured in there is an error naming what to fix.
    let sensor = Sensor::start_with(false, |dir| {
        format!("  base_dir: {}/configured-pots\n", dir.display())
    })
    .await;
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

/// `honeybee up` as root from /root: the default pot directory under the data directory is
/// out of the pot users' reach, so pots live under /var/lib/honeybee/pots/<node id>, and
/// the node says so.
#[tokio::test]
async fn pots_of_a_node_whose_data_directory_is_private_live_in_the_system_location() {
    let sensor = Sensor::start_with(false, |_| String::new()).await;
    let port = free_port();
    let answer = sensor
        .command(
            install(
                "moved-1",
                "tcp-banner",
                json!({"ports": port.to_string()}),
                None,
            ),
            60,
        )
        .await;
    assert_eq!(answer["success"], true, "{answer}");
    let system_directory = format!("/var/lib/honeybee/pots/{}", sensor.node_id);
    assert!(
        Path::new(&system_directory).join("moved-1").is_dir(),
        "the pot is in {system_directory}"
    );
    let log = sensor.node.as_ref().unwrap().log();
    assert!(
        log.contains("out of the pot users' reach") && log.contains(&system_directory),
        "{log}"
    );
    let answer = sensor.command(json!({"UninstallPot": "moved-1"}), 60).await;
    assert_eq!(answer["success"], true, "{answer}");
}
