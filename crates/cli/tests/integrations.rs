//! The honeypot integration kits against the real binaries: the Python kit's and the PHP
//! forwarder's own test suites run against a live Core and Node, and a real Cowrie with the
//! HoneyBee output plugin is attacked over SSH.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs a test suite program with the live Core and Node described in its environment.
/// It runs in `work_dir` (a temporary directory): whatever it writes stays out of the
/// repository; `suite` is its path inside the repository.
fn run_suite(
    program: &str,
    arguments: &[&str],
    suite: &str,
    work_dir: &Path,
    ports: &CorePorts,
    event_port: u16,
) {
    let output = Command::new(program)
        .args(arguments)
        .arg(repository_root().join(suite))
        .current_dir(work_dir)
        .env("HONEYBEE_TEST_API", ports.api_base())
        .env("HONEYBEE_TEST_CORE", ports.node_address())
        .env("HONEYBEE_TEST_EVENT_PORT", event_port.to_string())
        .env("HONEYBEE_NODE_BIN", env!("CARGO_BIN_EXE_honeybee-node"))
        .output()
        .unwrap_or_else(|error| {
            panic!("running {program}: {error} (run scripts/setup-test-deps.sh)")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {arguments:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    eprintln!("{stdout}{stderr}");
}

async fn live_core_and_node(dir: &Path) -> (CorePorts, u16, Daemon, Daemon) {
    let ports = CorePorts::free();
    let event_port = free_port();
    let core = start_core(dir, &ports, "");
    let node = start_node(dir, &ports, event_port);
    wait_for_online_node(&reqwest::Client::new(), &ports.api_base()).await;
    (ports, event_port, core, node)
}

#[tokio::test]
async fn the_python_kit_suite_passes_against_a_live_node() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, event_port, _core, _node) = live_core_and_node(dir.path()).await;
    run_suite(
        "python3",
        &[],
        "integrations/python/tests/test_honeybee.py",
        dir.path(),
        &ports,
        event_port,
    );
}

#[tokio::test]
async fn the_php_forwarder_suite_passes_against_a_live_node() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, event_port, _core, _node) = live_core_and_node(dir.path()).await;
    run_suite(
        "php",
        &[],
        "integrations/php/tests/forwarder_test.php",
        dir.path(),
        &ports,
        event_port,
    );
}

const COWRIE_USER: &str = "honeybee-test";

/// A Cowrie state directory owned by the unprivileged test user, with only the settings
/// this test changes (Cowrie reads its bundled defaults first).
fn cowrie_state_dir(parent: &Path, ssh_port: u16, event_port: u16, pot_id: &str) -> PathBuf {
    let state = parent.join("cowrie");
    for directory in [
        "etc",
        "var/log/cowrie",
        "var/lib/cowrie/downloads",
        "var/lib/cowrie/tty",
        "var/run",
    ] {
        std::fs::create_dir_all(state.join(directory)).unwrap();
    }
    std::fs::write(
        state.join("etc/cowrie.cfg"),
        format!(
            "[honeypot]\nhostname = svr04\nsensor_name = {pot_id}\n\n\
             [ssh]\nenabled = true\nlisten_endpoints = tcp:{ssh_port}:interface=127.0.0.1\n\n\
             [telnet]\nenabled = false\n\n\
             [output_honeybee]\nenabled = true\nport = {event_port}\npot_id = {pot_id}\n"
        ),
    )
    .unwrap();
    // The temporary parent is private to root; the test user must reach its state.
    let status = Command::new("chmod")
        .arg("755")
        .arg(parent)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("chown")
        .args(["-R", COWRIE_USER])
        .arg(&state)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "chown to {COWRIE_USER} failed: is the test setup run as root?"
    );
    state
}

#[tokio::test]
async fn a_real_cowrie_reports_an_ssh_attack_through_the_honeybee_plugin() {
    let venv = cowrie_venv();
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let (ports, event_port, _core, _node) = live_core_and_node(dir.path()).await;
    let ssh_port = free_port();
    let pot_id = "cowrie-e2e";
    let state = cowrie_state_dir(dir.path(), ssh_port, event_port, pot_id);

    // Cowrie refuses to run as root: drop to the test user, with a clean environment.
    let mut command = Command::new("setpriv");
    command
        .args([
            format!("--reuid={COWRIE_USER}"),
            format!("--regid={COWRIE_USER}"),
            "--init-groups".into(),
        ])
        .arg(venv.join("bin/cowrie"))
        .arg("start")
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", venv.join("bin").display()),
        )
        .env("HOME", &state)
        .env("COWRIE_STDOUT", "yes")
        .current_dir(&state);
    let mut cowrie = Daemon::spawn_command("cowrie", command, dir.path());
    wait_for_port(format!("127.0.0.1:{ssh_port}").parse().unwrap()).await;

    ssh_attack(ssh_port);

    let url = format!(
        "{}/api/v1/events?pot_id={pot_id}&limit=1000",
        ports.api_base()
    );
    let events = eventually(
        std::time::Duration::from_secs(60),
        "Cowrie's session events",
        || {
            let client = client.clone();
            let url = url.clone();
            async move {
                let page = get_json(&client, &url).await?;
                let events = page["events"].as_array()?.clone();
                // The port probe is a session too: wait for the close of the login's session.
                let login = events
                    .iter()
                    .find(|e| e["event_type"] == "cowrie.login.success")?;
                events
                    .iter()
                    .any(|e| {
                        e["event_type"] == "cowrie.session.closed"
                            && e["data"]["session"] == login["data"]["session"]
                    })
                    .then_some(events)
            }
        },
    )
    .await;
    let login = events
        .iter()
        .find(|e| e["event_type"] == "cowrie.login.success")
        .unwrap_or_else(|| panic!("no cowrie.login.success in {events:#?}"));
    assert_eq!(login["data"]["username"], "root");
    assert_eq!(login["data"]["password"], "hunter2");
    assert_eq!(login["pot_type"], "cowrie");
    assert_eq!(login["data"]["src_ip"], "127.0.0.1");
    let session = login["data"]["session"].as_str().unwrap().to_owned();
    for event_type in [
        "cowrie.session.connect",
        "cowrie.command.input",
        "cowrie.session.closed",
    ] {
        let event = events
            .iter()
            .find(|e| e["event_type"] == event_type && e["data"]["session"] == session.as_str())
            .unwrap_or_else(|| panic!("no {event_type} for session {session}"));
        // Cowrie's own timestamp is kept, with its microseconds.
        let timestamp = event["timestamp"].as_str().unwrap();
        assert!(
            timestamp.ends_with('Z') && timestamp.len() == 27,
            "{timestamp}"
        );
        assert!(
            event["data"].get("eventid").is_none(),
            "eventid became event_type"
        );
    }
    let command = events
        .iter()
        .find(|e| e["event_type"] == "cowrie.command.input")
        .unwrap();
    assert_eq!(command["data"]["input"], "uname -a");

    // A clean stop of Cowrie reaches the Core too.
    cowrie.stop_with("TERM").await;
    let stopped_url = format!(
        "{}/api/v1/events?pot_id={pot_id}&event_type=honeypot.stopped",
        ports.api_base()
    );
    eventually(
        std::time::Duration::from_secs(15),
        "honeypot.stopped from the plugin",
        || {
            let client = client.clone();
            let url = stopped_url.clone();
            async move {
                let page = get_json(&client, &url).await?;
                (!page["events"].as_array()?.is_empty()).then_some(())
            }
        },
    )
    .await;
}
