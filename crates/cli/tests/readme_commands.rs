//! README's commands as a new user types them: `honeybee up` with its default, relative
//! data directory, then a pot installed with the CLI (the install steps and the pot run in
//! other directories, so every path they get must be absolute).

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

#[tokio::test]
async fn honeybee_up_with_its_relative_data_directory_installs_and_runs_a_pot() {
    let dir = tempfile::tempdir().unwrap();
    // Pot users must pass through the working directory, as through a normal home.
    let status = Command::new("chmod")
        .arg("755")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let ports = CorePorts::free();
    let event_port = free_port();
    let mut up = Command::new(env!("CARGO_BIN_EXE_honeybee"));
    up.args(readme_up_arguments(&ports, event_port))
        .current_dir(dir.path());
    let up = Daemon::spawn_command("honeybee-up", up, dir.path());

    let token = file_text_when_written(
        dir.path().join("honeybee-data/core/admin-token"),
        "the admin token",
    )
    .await;
    let node_id = wait_for_online_node(&authorized_client(&token), &ports.api_base()).await;

    let pot_port = free_port();
    let cli = |arguments: &[&str]| {
        let (success, output) = run_cli(&ports.api_base(), Some(&token), arguments);
        assert!(success, "honeybee {arguments:?}: {output}");
        output
    };
    let node = node_id.to_string();
    let installed = cli(&[
        "install",
        &node,
        "tcp-banner",
        "ftp-01",
        "--set",
        &format!("ports={pot_port}"),
    ]);
    assert!(installed.contains("running"), "{installed}\n{}", up.log());
    // The pot answers on its port with its banner.
    let banner = eventually(Duration::from_secs(15), "the pot's banner", || async {
        use tokio::io::AsyncReadExt;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", pot_port))
            .await
            .ok()?;
        let mut buffer = [0u8; 128];
        let read = stream.read(&mut buffer).await.ok()?;
        Some(String::from_utf8_lossy(&buffer[..read]).into_owned())
    })
    .await;
    assert!(banner.contains("FTP server ready"), "{banner}");
    let listed = cli(&["pots"]);
    assert!(listed.contains("ftp-01"), "{listed}");
    cli(&["stop", &node, "ftp-01"]);
    // No CLI verb for it: the pot and its user go through the API.
    let answer: serde_json::Value = authorized_client(&token)
        .post(format!(
            "{}/api/v1/nodes/{node_id}/commands?wait=60",
            ports.api_base()
        ))
        .json(&serde_json::json!({"UninstallPot": "ftp-01"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["answer"]["success"], true, "{answer}");
}
