//! The REST API against its own OpenAPI document: schemathesis (installed by
//! scripts/setup-test-deps.sh) reads `/api/v1/openapi.json` from a real `honeybee-core` and
//! sends it generated requests, valid and invalid, with every check it has: no server
//! error, only documented status codes and content types, responses matching their schemas,
//! invalid requests refused and valid ones accepted. Any finding fails the test with
//! schemathesis's report.
//!
//! The Core is a throwaway one: schemathesis sends commands, creates and revokes enrollment
//! tokens and revokes nodes. A revoked node only turns later commands into the documented
//! 409 (not connected), so nothing is excluded.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use support::raw_node::RawNode;
use support::*;

/// The version scripts/setup-test-deps.sh pins; the options below are this version's.
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// Fixed, so a failure found once is found again on every run (and by `st replay`).
const SEED: &str = "20240115";

/// Test cases per operation and phase: enough to reach every parameter's edge cases while
/// the whole run stays well under a minute on a small machine.
const MAX_EXAMPLES_PER_OPERATION: &str = "40";

/// The schemathesis CLI in the virtualenv scripts/setup-test-deps.sh makes.
fn schemathesis_program() -> PathBuf {
    let venv = PathBuf::from(
        std::env::var("HONEYBEE_TEST_SCHEMATHESIS_VENV")
            .unwrap_or_else(|_| "/opt/honeybee-test/schemathesis-venv".into()),
    );
    let program = venv.join("bin/st");
    assert!(
        program.exists(),
        "no schemathesis at {}: run scripts/setup-test-deps.sh (scripts/test.sh does)",
        program.display()
    );
    program
}

#[tokio::test]
async fn the_api_answers_exactly_as_its_openapi_document_says() {
    let program = schemathesis_program();
    let dir = tempfile::tempdir().unwrap();
    let ports = CorePorts::free();
    let _core = start_core(dir.path(), &ports, "[api]\nauth = \"tokens\"\n");
    let admin_token = eventually(Duration::from_secs(15), "the admin token", || {
        let path = dir.path().join("core-data/admin-token");
        async move {
            let text = std::fs::read_to_string(path).ok()?;
            let text = text.trim().to_owned();
            (!text.is_empty()).then_some(text)
        }
    })
    .await;
    wait_for_port(ports.node_address().parse().unwrap()).await;

    // A registered node that answers commands, and stored events: without them most
    // operations would only ever answer 404 or an empty list, and their schemas would go
    // unchecked.
    let mut node =
        RawNode::register(ports.node_port, 1, &["command_answers", "uninstall_pot"]).await;
    node.send_events(
        "cowrie-01",
        &[
            (
                "cowrie.login.failed",
                json!({"src_ip": "203.0.113.7", "username": "root", "password": "123456"}),
            ),
            (
                "cowrie.command.input",
                json!({"src_ip": "203.0.113.7", "input": "uname -a"}),
            ),
            ("cowrie.session.closed", json!({"ip": "198.51.100.2"})),
        ],
    )
    .await;
    let _answers = node.answer_commands();
    let client = authorized_client(&admin_token);
    wait_for_events(&client, &ports.api_base(), "", 3).await;

    let started = Instant::now();
    let mut schemathesis = tokio::process::Command::new(&program);
    schemathesis
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", ports.api_base()))
        .args(["--header", &format!("Authorization: Bearer {admin_token}")])
        .args(["--checks", "all"])
        .args(["--seed", SEED])
        .args(["--max-examples", MAX_EXAMPLES_PER_OPERATION])
        // One worker: the stateful phase's order, and so its findings, stay the same.
        .args(["--workers", "1"])
        // Nothing remembered between runs: a database of earlier failures would make a run
        // depend on the ones before it.
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "10"])
        .arg("--no-color")
        // Its files (reports, caches) go to the throwaway directory.
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(300), schemathesis.output())
        .await
        .expect("schemathesis finishes within 300 s")
        .unwrap();
    let report = format!(
        "schemathesis {SCHEMATHESIS_VERSION} ran for {:?}\n{}{}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found the API and its document disagree:\n{report}"
    );
    eprintln!("{report}");
}
