//! Attacks of a compromised pot (and of hostile potstores and git URLs) against the real
//! node, run as root: each test does what an attacker who owns a pot's unix user would do,
//! then checks that it got nothing.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::sensor::*;
use support::*;

/// The pot types these tests install, in a potstore directory of their own.
const MANIFEST: &str = r#"
[[pots]]
id = "hostile"
version = "1.0.0"
files = "hostile"
start = ["{python}", "-u", "{files}/hostile.py"]

[[pots]]
id = "sleeper"
version = "1.0.0"
start = ["sh", "-c", "echo started; exec sleep 3600"]

[[pots]]
id = "templated"
version = "1.0.0"
files = "templated"
directories = ["state"]
start = ["sleep", "3600"]
[[pots.templates]]
source = "app.cfg"
target = "state/app.cfg"

[[pots]]
id = "linked"
version = "1.0.0"
files = "etc-link"
start = ["sleep", "3600"]

[[pots]]
id = "leaky"
version = "1.0.0"
start = ["sleep", "3600"]
install = [["sh", "-c", "echo installing for $1; echo argv: \"$0\" \"$@\" >&2; exit 3", "{hostname}", "{hostname}"]]
[pots.config]
hostname = "default-host"
"#;

/// What a pot does once an attacker owns it: leave its process group, send an event naming
/// another pot, and spread a burst over several connections to multiply its rate.
const HOSTILE_POT: &str = r#"
import json, os, socket, time

port = int(os.environ["HONEYBEE_EVENT_PORT"])

def send(events):
    connection = socket.create_connection(("127.0.0.1", port))
    connection.sendall("".join(json.dumps(event) + "\n" for event in events).encode())
    connection.shutdown(socket.SHUT_WR)
    connection.recv(1)
    connection.close()

child = os.fork()
if child == 0:
    os.setsid()
    time.sleep(3600)
    os._exit(0)
print("escaped", child, flush=True)
send([{"pot_id": "victim", "pot_type": "cowrie", "event_type": "hostile.claim"}])
for connection in range(5):
    send([{"event_type": "hostile.flood", "n": connection * 30 + n} for n in range(30)])
print("flooded", flush=True)
time.sleep(3600)
"#;

fn write_potstore(root: &Path) {
    let store = root.join("potstore");
    std::fs::create_dir_all(store.join("hostile")).unwrap();
    std::fs::create_dir_all(store.join("templated")).unwrap();
    std::fs::write(store.join("manifest.toml"), MANIFEST).unwrap();
    std::fs::write(store.join("hostile/hostile.py"), HOSTILE_POT).unwrap();
    std::fs::write(
        store.join("templated/app.cfg"),
        "event_port = {event_port}\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc", store.join("etc-link")).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Runs `script` with `sh -c` as `uid`; whether it succeeded.
fn run_as(uid: u32, script: &str) -> bool {
    Command::new("sh")
        .args(["-c", script])
        .uid(uid)
        .gid(uid)
        .current_dir("/")
        .status()
        .unwrap()
        .success()
}

async fn pot_log_lines(sensor: &Sensor, pot_id: &str) -> Vec<String> {
    let logs = sensor.command(json!({"GetPotLogs": pot_id}), 10).await;
    logs["data"]["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|line| line.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn node_metric(metrics_port: u16, name: &str) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}")) as u64
}

#[tokio::test]
async fn a_compromised_pot_cannot_speak_for_another_escape_its_stop_outpace_its_limit_or_touch_another_pot(
) {
    let metrics_port = free_port();
    let sensor = Sensor::start_with(true, |dir| {
        write_potstore(dir);
        format!(
            "  potstore: {}\ningest:\n  max_events_per_second: 50\nmetrics:\n  listen: 127.0.0.1:{metrics_port}\n",
            dir.join("potstore").display()
        )
    })
    .await;

    let answer = sensor
        .command(install("hostile-1", "hostile", json!({}), None), 60)
        .await;
    assert_eq!(answer["success"], true, "{answer}");
    let pid = answer["data"]["pid"].as_u64().unwrap();
    let sleeper = sensor
        .command(install("sleeper-1", "sleeper", json!({}), None), 60)
        .await;
    assert_eq!(sleeper["success"], true, "{sleeper}");

    // Each pot runs as a user of its own, owning its directory alone.
    let hostile_uid = process_uid(pid);
    assert_eq!(Some(hostile_uid), user_uid(&pot_user_name("hostile-1")));
    let sleeper_uid = process_uid(sleeper["data"]["pid"].as_u64().unwrap());
    assert_eq!(Some(sleeper_uid), user_uid(&pot_user_name("sleeper-1")));
    assert_ne!(hostile_uid, sleeper_uid);
    assert_ne!(hostile_uid, 0);
    let sleeper_dir = sensor.pots_dir().join("sleeper-1");
    assert_eq!(std::fs::metadata(&sleeper_dir).unwrap().uid(), sleeper_uid);
    assert_eq!(mode(&sleeper_dir), 0o700);
    assert!(
        !run_as(
            hostile_uid,
            &format!("echo x > {}/planted", sleeper_dir.display())
        ),
        "one pot's user cannot write into another pot"
    );
    assert!(!sleeper_dir.join("planted").exists());

    // Its event naming another pot is stamped with its own id and type.
    let claims = wait_for_events(
        &sensor.client,
        &sensor.ports.api_base(),
        "event_type=hostile.claim",
        1,
    )
    .await;
    assert_eq!(claims[0]["pot_id"], "hostile-1", "{}", claims[0]);
    assert_eq!(claims[0]["pot_type"], "hostile");
    assert!(
        all_events(&sensor.client, &sensor.ports.api_base(), "pot_id=victim")
            .await
            .is_empty()
    );
    // A sender that is not that pot's user cannot use the id of a pot the node runs; its
    // other events still arrive (in order, so the forged one would be stored first).
    send_lines(
        sensor.event_port,
        &[
            json!({"pot_id": "sleeper-1", "event_type": "forged.claim"}).to_string(),
            json!({"pot_id": "manual-1", "event_type": "manual.ok"}).to_string(),
        ],
    )
    .await;
    wait_for_events(
        &sensor.client,
        &sensor.ports.api_base(),
        "event_type=manual.ok",
        1,
    )
    .await;
    assert!(all_events(
        &sensor.client,
        &sensor.ports.api_base(),
        "event_type=forged.claim"
    )
    .await
    .is_empty());
    assert_eq!(
        node_metric(
            metrics_port,
            "honeybee_node_ingest_pot_claims_refused_total"
        )
        .await,
        1
    );

    // Five connections of 30 events each, under a limit of 50 per second: within each
    // connection's own budget, over the pot's.
    let flood = wait_for_events(
        &sensor.client,
        &sensor.ports.api_base(),
        "pot_id=hostile-1&event_type=hostile.flood",
        150,
    )
    .await;
    assert_eq!(flood.len(), 150, "nothing lost");
    assert!(
        node_metric(metrics_port, "honeybee_node_ingest_events_delayed_total").await > 0,
        "the pot's connections share one rate"
    );
    assert!(
        node_metric(
            metrics_port,
            "honeybee_node_ingest_pot_claims_overridden_total"
        )
        .await
            >= 1
    );

    // The process that left the pot's group with setsid() does not survive the stop.
    let escaped = eventually(
        Duration::from_secs(30),
        "the pot to report its escaped child",
        || async {
            pot_log_lines(&sensor, "hostile-1")
                .await
                .iter()
                .find_map(|line| {
                    line.strip_prefix("escaped ")
                        .and_then(|pid| pid.trim().parse::<u64>().ok())
                })
        },
    )
    .await;
    assert!(process_alive(escaped));
    assert_eq!(process_uid(escaped), hostile_uid);
    let stopped = sensor.command(json!({"StopPot": "hostile-1"}), 30).await;
    assert_eq!(stopped["success"], true, "{stopped}");
    eventually(
        Duration::from_secs(20),
        "the escaped process to be ended",
        || async { (!process_alive(escaped)).then_some(()) },
    )
    .await;

    // Uninstalling removes the pot's user.
    let uninstalled = sensor
        .command(json!({"UninstallPot": "hostile-1"}), 30)
        .await;
    assert_eq!(uninstalled["success"], true, "{uninstalled}");
    assert_eq!(user_uid(&pot_user_name("hostile-1")), None);
    assert!(sensor.pots_dir().join("sleeper-1").exists());
}

#[tokio::test]
async fn a_pot_never_gets_a_root_only_file_through_a_planted_template_link_nor_a_linked_files_entry(
) {
    let mut sensor = Sensor::start_with(true, |dir| {
        write_potstore(dir);
        format!("  potstore: {}\n", dir.join("potstore").display())
    })
    .await;
    let secret = sensor.dir.path().join("secret.key");
    std::fs::write(&secret, "TOP-SECRET-KEY\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut command = install("templated-1", "templated", json!({}), None);
    command["InstallPot"]["auto_start"] = json!(false);
    let answer = sensor.command(command, 60).await;
    assert_eq!(answer["success"], true, "{answer}");
    let instance = sensor.pots_dir().join("templated-1");
    let uid = std::fs::metadata(&instance).unwrap().uid();
    assert_ne!(uid, 0);

    // The pot's user points its template source at a root-only file...
    assert!(run_as(
        uid,
        &format!(
            "ln -sf {} {}/files/app.cfg",
            secret.display(),
            instance.display()
        )
    ));
    // ... and the node's ingest port changes, so the templates are rendered again.
    sensor.event_port = free_port();
    sensor.restart_node().await;
    let deployed = sensor
        .command(json!({"DeployPot": "templated-1"}), 60)
        .await;
    assert_eq!(deployed["success"], true, "{deployed}");
    let rendered = std::fs::read_to_string(instance.join("state/app.cfg")).unwrap();
    assert!(!rendered.contains("TOP-SECRET"), "{rendered}");
    assert_eq!(
        rendered,
        format!("event_port = {}\n", sensor.event_port),
        "rendered from the source kept at install"
    );
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "TOP-SECRET-KEY\n"
    );

    // A potstore whose `files` entry is a link to /etc: refused, nothing copied.
    let linked = sensor
        .command(install("linked-1", "linked", json!({}), None), 60)
        .await;
    assert_eq!(linked["success"], false, "{linked}");
    let message = linked["message"].as_str().unwrap();
    assert!(
        message.contains("symbolic link") && message.contains("etc-link"),
        "{message}"
    );
    assert!(!sensor.pots_dir().join("linked-1").exists());
}

/// A repository served over https with one pot type, `files` given as `files_entry`.
fn repository(root: &Path, name: &str, files_link: Option<&str>) {
    let repository = root.join(name);
    std::fs::create_dir_all(repository.join("files")).unwrap();
    std::fs::write(repository.join("files/readme"), "x").unwrap();
    let files = match files_link {
        Some(target) => {
            std::os::unix::fs::symlink(target, repository.join("linked")).unwrap();
            "linked"
        }
        None => "files",
    };
    std::fs::write(
        repository.join("manifest.toml"),
        format!(
            "[[pots]]\nid = \"remote\"\nversion = \"1.0.0\"\nfiles = \"{files}\"\nstart = [\"sh\", \"-c\", \"echo started; exec sleep 3600\"]\n"
        ),
    )
    .unwrap();
    commit_all(&repository);
}

#[tokio::test]
async fn git_installs_take_https_only_never_show_credentials_and_the_data_directory_is_private() {
    let sensor = Sensor::start_with(true, |dir| {
        // What an earlier version left: readable by everyone.
        let data = dir.join("node-data");
        std::fs::create_dir_all(data.join("old-dir")).unwrap();
        std::fs::write(data.join("old-file"), "x").unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(data.join("old-dir"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::set_permissions(
            data.join("old-file"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        format!("  git_ca_file: {}\n", dir.join("git-ca.pem").display())
    })
    .await;
    let repositories = sensor.dir.path().join("repositories");
    repository(&repositories, "good", None);
    repository(&repositories, "linked", Some("/etc"));
    let server = HttpsGitServer::start(&repositories, sensor.dir.path()).await;

    // Credentials in the URL are used, and shown nowhere.
    let with_credentials = format!("https://user:s3cr3t-pass@127.0.0.1:{}/good", server.port);
    let answer = sensor
        .command(
            install("remote-1", "remote", json!({}), Some(&with_credentials)),
            120,
        )
        .await;
    assert_eq!(answer["success"], true, "{answer}");
    let info = sensor.command(json!({"GetPotInfo": "remote-1"}), 10).await;
    assert_eq!(
        info["data"]["source"],
        format!("https://***@127.0.0.1:{}/good", server.port)
    );
    let unreachable = format!("https://user:s3cr3t-pass@127.0.0.1:{}/x", free_port());
    let failed = sensor
        .command(
            install("remote-2", "remote", json!({}), Some(&unreachable)),
            120,
        )
        .await;
    assert_eq!(failed["success"], false, "{failed}");
    let status = sensor.wait_for_status("remote-2", "Failed").await;
    for shown in [
        answer.to_string(),
        info.to_string(),
        failed.to_string(),
        status.to_string(),
        std::fs::read_to_string(sensor.data_dir().join("pots.json")).unwrap(),
        sensor.node_log(),
    ] {
        assert!(!shown.contains("s3cr3t"), "credentials shown: {shown}");
    }
    assert!(
        failed["message"].as_str().unwrap().contains("***@"),
        "{failed}"
    );

    // Only https: the node's own files, programs and plain git are refused.
    let marker = sensor.dir.path().join("ext-ran");
    let root_only_repository = repositories.join("good");
    for url in [
        format!("file://{}", root_only_repository.display()),
        root_only_repository.display().to_string(),
        "git://127.0.0.1/good".to_owned(),
        format!("ext::sh -c touch% {}", marker.display()),
        format!("http://127.0.0.1:{}/good", server.port),
    ] {
        let refused = sensor
            .command(install("refused-1", "remote", json!({}), Some(&url)), 60)
            .await;
        assert_eq!(refused["success"], false, "{url}: {refused}");
        let message = refused["message"].as_str().unwrap();
        assert!(
            message.contains("is refused") && message.contains("only https://"),
            "{url}: {message}"
        );
    }
    assert!(!marker.exists());
    assert!(!sensor.pots_dir().join("refused-1").exists());

    // A `files` entry that is a link in the repository: refused.
    let linked = sensor
        .command(
            install("linked-1", "remote", json!({}), Some(&server.url("linked"))),
            120,
        )
        .await;
    assert_eq!(linked["success"], false, "{linked}");
    assert!(
        linked["message"]
            .as_str()
            .unwrap()
            .contains("symbolic link"),
        "{linked}"
    );

    // The data directory: private files, pass-through-only directories above the pots.
    let data = sensor.data_dir();
    let pot_uid = std::fs::metadata(sensor.pots_dir().join("remote-1"))
        .unwrap()
        .uid();
    eventually(
        Duration::from_secs(30),
        "the pot's output to be logged",
        || async {
            data.join("pot-state/remote-1/pot.log")
                .exists()
                .then_some(())
        },
    )
    .await;
    for (path, expected) in [
        (data.clone(), 0o711),
        (sensor.pots_dir(), 0o711),
        (sensor.pots_dir().join("remote-1"), 0o700),
        (data.join("node_id"), 0o600),
        (data.join("totp.key"), 0o600),
        (data.join("pots.json"), 0o600),
        (data.join("spool"), 0o700),
        (data.join("pot-state"), 0o700),
        (data.join("pot-state/remote-1"), 0o700),
        (data.join("pot-state/remote-1/pot.log"), 0o600),
        (data.join("old-dir"), 0o700),
        (data.join("old-file"), 0o600),
        (data.join("kit"), 0o700),
    ] {
        assert_eq!(mode(&path), expected, "{}", path.display());
    }
    assert_ne!(pot_uid, 0);
    assert!(
        !run_as(pot_uid, &format!("cat {}", data.join("node_id").display())),
        "a pot user cannot read the node's identity"
    );
}

#[tokio::test]
async fn a_node_that_is_not_root_runs_pots_only_when_the_operator_opts_in() {
    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    write_potstore(dir.path());
    let ports = CorePorts::free();
    let _core = start_core(dir.path(), &ports, "");
    let client = reqwest::Client::new();
    let start_as_nobody = |sections: &str| {
        let data = dir.path().join("node-data");
        std::fs::create_dir_all(&data).unwrap();
        let status = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success());
        let mut command = node_command(
            dir.path(),
            &ports,
            free_port(),
            &format!(
                "  potstore: {}\n{sections}",
                dir.path().join("potstore").display()
            ),
        );
        command.uid(NOBODY).gid(NOBODY);
        Daemon::spawn_command("honeybee-node", command, dir.path())
    };
    let command = |node_id: u64, body: Value| {
        let client = client.clone();
        let url = format!(
            "{}/api/v1/nodes/{node_id}/commands?wait=60",
            ports.api_base()
        );
        async move {
            // Not answered while the node (re)connects: `null`, and the caller asks again.
            let response: Value = match client.post(url).json(&body).send().await {
                Ok(response) => response.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            response["answer"].clone()
        }
    };

    let mut node = start_as_nobody("");
    let node_id = wait_for_online_node(&client, &ports.api_base()).await;
    let refused = command(node_id, install("sleeper-1", "sleeper", json!({}), None)).await;
    assert_eq!(refused["success"], false, "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("honeypot.allow_unprivileged") && message.contains("not root"),
        "{message}"
    );
    assert!(node.stop_with("TERM").await.success());

    let node = start_as_nobody("  allow_unprivileged: true\n");
    let answer = eventually(
        Duration::from_secs(60),
        "the opted-in node to run the pot",
        || {
            let answer = command(node_id, install("sleeper-2", "sleeper", json!({}), None));
            async move {
                let answer = answer.await;
                (!answer.is_null()).then_some(answer)
            }
        },
    )
    .await;
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(process_uid(answer["data"]["pid"].as_u64().unwrap()), NOBODY);
    assert!(
        node.log().contains("honeypot.allow_unprivileged IS SET"),
        "{}",
        node.log()
    );
}

#[tokio::test]
async fn a_failed_install_never_shows_the_pots_config_values() {
    let sensor = Sensor::start_with(true, |dir| {
        write_potstore(dir);
        format!("  potstore: {}\n", dir.join("potstore").display())
    })
    .await;
    // The failing step prints the value on stdout and its whole argv on stderr.
    let failed = sensor
        .command(
            install(
                "leaky-1",
                "leaky",
                json!({"hostname": "s3cr3t-value"}),
                None,
            ),
            60,
        )
        .await;
    assert_eq!(failed["success"], false, "{failed}");
    let status = sensor.wait_for_status("leaky-1", "Failed").await;
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("install step 1/1")
            && message.contains("exit status: 3")
            && message.contains("installing for ***")
            && message.contains("argv: *** ***"),
        "the failure still says what happened: {message}"
    );
    for shown in [failed.to_string(), status.to_string(), sensor.node_log()] {
        assert!(
            !shown.contains("s3cr3t-value"),
            "a config value was shown: {shown}"
        );
    }
}

/// A repository served over https whose `files/readme` says `readme`, and whose install step
/// writes the owner of the pot's git checkout (files and `.git`) into the instance.
fn repository_telling_its_owner(root: &Path, name: &str, readme: &str) {
    let repository = root.join(name);
    std::fs::create_dir_all(repository.join("files")).unwrap();
    std::fs::write(repository.join("files/readme"), readme).unwrap();
    std::fs::write(
        repository.join("manifest.toml"),
        r#"[[pots]]
id = "remote"
version = "1.0.0"
files = "files"
install = [["sh", "-c", "stat -c %u {instance}/../.sources/{pot_id}/checkout/manifest.toml {instance}/../.sources/{pot_id}/checkout/.git > {instance}/checkout-owner"]]
start = ["sh", "-c", "echo started; exec sleep 3600"]
"#,
    )
    .unwrap();
    commit_all(&repository);
}

#[tokio::test]
async fn the_git_clone_runs_as_the_pot_user_and_ignores_the_nodes_git_configuration() {
    let sensor = Sensor::start_with_env(true, |dir| {
        let home = dir.join("node-home");
        std::fs::create_dir_all(&home).unwrap();
        (
            format!("  git_ca_file: {}\n", dir.join("git-ca.pem").display()),
            vec![("HOME".to_owned(), home.display().to_string())],
        )
    })
    .await;
    let repositories = sensor.dir.path().join("repositories");
    repository_telling_its_owner(&repositories, "good", "the repository asked for\n");
    repository_telling_its_owner(
        &repositories,
        "evil",
        "a repository root's config swapped in\n",
    );
    let server = HttpsGitServer::start(&repositories, sensor.dir.path()).await;

    // The node's HOME holds a git configuration that sends the clone elsewhere...
    let home = sensor.dir.path().join("node-home");
    std::fs::write(
        home.join(".gitconfig"),
        format!(
            "[url \"{}\"]\n\tinsteadOf = {}\n",
            server.url("evil"),
            server.url("good")
        ),
    )
    .unwrap();
    // ... and it does, for a git that reads it.
    let probe = sensor.dir.path().join("probe");
    let status = Command::new("git")
        .args(["clone", "--quiet", &server.url("good")])
        .arg(&probe)
        .env("HOME", &home)
        .env("GIT_SSL_CAINFO", &server.ca_file)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(probe.join("files/readme")).unwrap(),
        "a repository root's config swapped in\n"
    );

    let answer = sensor
        .command(
            install("cloned-1", "remote", json!({}), Some(&server.url("good"))),
            120,
        )
        .await;
    assert_eq!(answer["success"], true, "{answer}");
    let instance = sensor.pots_dir().join("cloned-1");
    assert_eq!(
        std::fs::read_to_string(instance.join("files/readme")).unwrap(),
        "the repository asked for\n",
        "the node's git configuration was not applied"
    );
    let pot_uid = user_uid(&pot_user_name("cloned-1")).unwrap();
    assert_ne!(pot_uid, 0);
    let owners = std::fs::read_to_string(instance.join("checkout-owner")).unwrap();
    let owners: Vec<&str> = owners.lines().collect();
    assert_eq!(
        owners,
        vec![pot_uid.to_string(), pot_uid.to_string()],
        "the checkout belongs to the pot's user"
    );
}
