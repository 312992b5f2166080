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
fn run_suite(program: &str, arguments: &[&str], ports: &CorePorts, event_port: u16) {
    let output = Command::new(program)
        .args(arguments)
        .current_dir(repository_root())
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
        &[
            "-m",
            "unittest",
            "-v",
            "integrations/python/tests/test_honeybee.py",
        ],
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
        &["integrations/php/tests/forwarder_test.php"],
        &ports,
        event_port,
    );
}
