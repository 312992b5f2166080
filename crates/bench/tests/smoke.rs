//! Keeps the benchmark harness working: every scenario runs at a tiny size against the
//! debug binaries (built next to this test by `cargo test --workspace --all-targets`) and
//! must report everything stored, nothing lost or repeated. Numbers are not checked here:
//! speed is measured by `scripts/bench.sh`, not by tests.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn run_bench(arguments: &[&str]) -> Value {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_honeybee-bench"));
    let bin_dir = bench.parent().unwrap().to_path_buf();
    assert!(
        bin_dir.join("honeybee-core").is_file() && bin_dir.join("honeybee-node").is_file(),
        "honeybee-core and honeybee-node must be built in {} (cargo test --workspace --all-targets builds them)",
        bin_dir.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = Command::new(&bench)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--json")
        .arg(&report)
        .args(arguments)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "honeybee-bench {arguments:?} failed:\n{printed}"
    );
    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
}

#[test]
fn the_pipeline_scenario_counts_every_event_through_honeybee_and_rsyslog() {
    let report = run_bench(&[
        "pipeline",
        "--nodes",
        "2",
        "--pots",
        "3",
        "--events",
        "3000",
        "--compare-rsyslog",
        "--timeout",
        "120",
    ]);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{report}");
    for run in runs {
        assert_eq!(
            (
                run["events_sent"].as_u64(),
                run["events_stored"].as_u64(),
                run["lost"].as_u64(),
                run["duplicates"].as_u64()
            ),
            (Some(3000), Some(3000), Some(0), Some(0)),
            "{run}"
        );
        assert!(run["latency"]["samples"].as_u64().unwrap() > 0, "{run}");
        assert!(run["events_per_second"].as_f64().unwrap() > 0.0, "{run}");
    }
    assert_eq!(runs[1]["system"], "honeybee");
    assert!(
        runs[1]["disk_bytes_per_event"].as_f64().unwrap() > 0.0,
        "the sealed event files are measured: {report}"
    );
}

#[test]
fn the_fixed_rate_scenario_samples_the_latency_of_every_event() {
    let report = run_bench(&[
        "pipeline", "--nodes", "1", "--pots", "2", "--events", "400", "--rate", "400",
    ]);
    let run = &report["runs"][0];
    assert_eq!(run["lost"], 0, "{run}");
    assert_eq!(run["latency"]["samples"], 400, "{run}");
    // The first stage (write to received by the Core) is part of the whole latency.
    assert_eq!(run["latency_to_core"]["samples"], 400, "{run}");
    assert!(
        run["latency_to_core"]["max_ms"].as_f64().unwrap()
            <= run["latency"]["max_ms"].as_f64().unwrap(),
        "{run}"
    );
}

#[test]
fn the_connection_scenario_holds_every_simulated_node() {
    let report = run_bench(&[
        "connections",
        "--nodes",
        "40",
        "--heartbeat-interval",
        "0.5",
        "--rounds",
        "2",
    ]);
    let run = &report["run"];
    assert_eq!(run["registered"], 40, "{run}");
    assert!(
        run["core_rss_with_nodes_mib"].as_f64().unwrap() > 0.0,
        "{run}"
    );
}

#[test]
fn the_query_scenario_answers_every_filter() {
    let report = run_bench(&["query", "--events", "5000"]);
    let run = &report["run"];
    let queries = run["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 12, "{run}");
    assert_eq!(
        queries[0]["results_on_first_page"], 100,
        "the unfiltered newest page is full: {run}"
    );
    assert!(
        run["deep_pagination"]["samples"].as_u64().unwrap() > 1,
        "{run}"
    );
    assert_eq!(run["after_id_pages"]["samples"], 20, "{run}");
    let stats = run["stats"].as_array().unwrap();
    assert_eq!(
        stats[1]["results_on_first_page"], 5000,
        "statistics of everything count every event: {run}"
    );
    assert!(run["disk_bytes_per_event"].as_f64().unwrap() > 0.0, "{run}");
}
