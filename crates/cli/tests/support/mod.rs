//! Test harness for end-to-end tests: starts the real binaries on free loopback ports,
//! talks to them over real TCP/HTTP, and polls with deadlines instead of sleeping.

#![allow(dead_code)] // Each test binary uses a different subset of the harness.

pub mod raw_node;
pub mod sensor;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A port that was free a moment ago. Ports come from 20000-31999, below the kernel's
/// ephemeral range (32768 and up): an outgoing connection of another test (a slowloris test
/// opens hundreds) can never take one between this check and its use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000
            + (std::process::id()
                .wrapping_mul(7919)
                .wrapping_add(step * 104_729)
                % 12_000);
        let port = port as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A child process killed when dropped; its output goes to a log file shown on failure.
pub struct Daemon {
    name: &'static str,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &'static str, program: &str, arguments: &[String], log_dir: &Path) -> Self {
        let mut command = Command::new(program);
        command.args(arguments).env("RUST_LOG", "debug");
        Self::spawn_command(name, command, log_dir)
    }

    /// Starts a prepared command (environment, working directory) as a daemon.
    pub fn spawn_command(name: &'static str, mut command: Command, log_dir: &Path) -> Self {
        let log_path = log_dir.join(format!("{name}-{}.log", free_port()));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = command
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|error| panic!("starting {name}: {error}"));
        Daemon {
            name,
            child: Some(child),
            log_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends `signal` without waiting for anything.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The exit status, once the process has exited (bounded wait).
    pub async fn exit_status(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon still running");
        eventually(Duration::from_secs(15), "the daemon to exit", || {
            let result = child.try_wait().unwrap();
            async move { result }
        })
        .await
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends `signal` and waits (bounded) for a clean exit.
    pub async fn stop_with(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("daemon still running");
        let status = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exited = eventually(Duration::from_secs(15), "the daemon to exit", || {
            let result = child.try_wait().unwrap();
            async move { result }
        })
        .await;
        exited
    }
}

impl Drop for Daemon {
    /// SIGTERM first, so a node stops its pots; SIGKILL if it does not exit in 10 s.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.name,
                self.log_path.display(),
                self.log()
            );
        }
    }
}

pub struct CorePorts {
    pub node_port: u16,
    pub api_port: u16,
}

impl CorePorts {
    pub fn free() -> Self {
        CorePorts {
            node_port: free_port(),
            api_port: free_port(),
        }
    }

    pub fn node_address(&self) -> String {
        format!("127.0.0.1:{}", self.node_port)
    }

    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }
}

/// A command that runs a Python `script` (with `arguments`) as the unprivileged user
/// `nobody`, from `/`: another unix user on this machine, as a honeypot's user would be.
pub fn python_as_nobody(script: &str, arguments: &[&str]) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .args(arguments)
        .current_dir("/");
    command
}

/// The trimmed text of a file another process writes (a token, a fingerprint), once it is
/// there and not empty.
pub async fn file_text_when_written(path: PathBuf, what: &str) -> String {
    eventually(Duration::from_secs(15), what, || {
        let path = path.clone();
        async move {
            let text = std::fs::read_to_string(path).ok()?;
            let text = text.trim().to_owned();
            (!text.is_empty()).then_some(text)
        }
    })
    .await
}

/// Runs the operator CLI against the API at `api_base`, with `token` if given; returns
/// whether it succeeded and everything it printed.
pub fn run_cli(api_base: &str, token: Option<&str>, arguments: &[&str]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_honeybee"));
    command
        .arg("--api")
        .arg(api_base)
        .env_remove("HONEYBEE_TOKEN");
    if let Some(token) = token {
        command.env("HONEYBEE_TOKEN", token);
    }
    let output = command.args(arguments).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// `toml` with `[server] enrollment = "open"` added unless it sets an enrollment policy:
/// inside its `[server]` table, else as a table of its own at the end (keys before its first
/// table header still belong to the table written before it).
fn with_open_enrollment(toml: &str) -> String {
    if toml.contains("enrollment") {
        return toml.to_owned();
    }
    match toml.find("[server]\n") {
        Some(at) => {
            let after = at + "[server]\n".len();
            format!(
                "{}enrollment = \"open\"\n{}",
                &toml[..after],
                &toml[after..]
            )
        }
        None => format!("{toml}\n[server]\nenrollment = \"open\"\n"),
    }
}

/// Starts `honeybee-core` with a config file (`extra_toml` appended) and the flags.
pub fn start_core(dir: &Path, ports: &CorePorts, extra_toml: &str) -> Daemon {
    start_core_with_storage(dir, ports, "", extra_toml)
}

/// [`start_core`] with more `[storage]` settings (`storage_lines`, `key = value` lines).
pub fn start_core_with_storage(
    dir: &Path,
    ports: &CorePorts,
    storage_lines: &str,
    extra_toml: &str,
) -> Daemon {
    let config = dir.join("bee_config.toml");
    std::fs::write(
        &config,
        // Authentication has its own tests; here the API and enrollment are open unless the
        // test says otherwise.
        format!(
            "[storage]\nsqlite_synchronous = \"normal\"\n{storage_lines}{}{}",
            if extra_toml.contains("[api]") {
                ""
            } else {
                "[api]\nauth = \"none\"\n"
            },
            with_open_enrollment(extra_toml)
        ),
    )
    .unwrap();
    Daemon::spawn(
        "honeybee-core",
        env!("CARGO_BIN_EXE_honeybee-core"),
        &[
            "--config".into(),
            config.display().to_string(),
            "--data-dir".into(),
            dir.join("core-data").display().to_string(),
            "--node-port".into(),
            ports.node_port.to_string(),
            "--api-port".into(),
            ports.api_port.to_string(),
        ],
        dir,
    )
}

/// `honeybee up` as README gives it — no `--data-dir`, so `./honeybee-data` relative to
/// where it runs — with only the ports moved, so tests do not collide.
pub fn readme_up_arguments(ports: &CorePorts, event_port: u16) -> Vec<String> {
    vec![
        "up".into(),
        "--node-port".into(),
        ports.node_port.to_string(),
        "--api-port".into(),
        ports.api_port.to_string(),
        "--event-port".into(),
        event_port.to_string(),
    ]
}

/// Starts `honeybee-node` with fast reconnects and the given ingest port.
pub fn start_node(dir: &Path, core: &CorePorts, event_port: u16) -> Daemon {
    start_node_with(dir, core, event_port, "")
}

/// Like [`start_node`], with more config sections (YAML, e.g. `"ingest:\n  idle_timeout: 2\n"`;
/// lines indented by two spaces at the start belong to `honeypot:`).
pub fn start_node_with(dir: &Path, core: &CorePorts, event_port: u16, sections: &str) -> Daemon {
    Daemon::spawn_command(
        "honeybee-node",
        node_command(dir, core, event_port, sections),
        dir,
    )
}

/// The command [`start_node_with`] runs (to change its user, say).
pub fn node_command(dir: &Path, core: &CorePorts, event_port: u16, sections: &str) -> Command {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "node:\n  name: e2e-node\nserver:\n  reconnect_delay: 0.05\n  max_reconnect_delay: 0.3\n  connect_timeout: 2\nhoneypot:\n  restart_backoff: 0.05\n  stop_grace: 3\n{sections}"
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_honeybee-node"));
    command
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("node-data"))
        .arg("--core")
        .arg(core.node_address())
        .arg("--event-port")
        .arg(event_port.to_string())
        .env("RUST_LOG", "debug");
    command
}

/// An HTTP client that sends `token` as a bearer token.
pub fn authorized_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Waits until a TCP port accepts connections.
pub async fn wait_for_port(address: SocketAddr) {
    eventually(
        Duration::from_secs(15),
        &format!("{address} to accept connections"),
        || async move {
            tokio::net::TcpStream::connect(address)
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await
}

/// Waits for the one node to be registered and online; returns its id.
pub async fn wait_for_online_node(client: &reqwest::Client, api_base: &str) -> u64 {
    let url = format!("{api_base}/api/v1/nodes");
    eventually(Duration::from_secs(15), "a node to be online", || {
        let url = url.clone();
        async move {
            let nodes = get_json(client, &url).await?;
            let node = nodes["nodes"].as_array()?.first()?.clone();
            (node["online"] == true).then(|| node["node_id"].as_u64().unwrap())
        }
    })
    .await
}

/// Fetches every stored event matching `filter` (a query string), following cursors.
pub async fn all_events(client: &reqwest::Client, api_base: &str, filter: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{api_base}/api/v1/events?limit=1000&{filter}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page = get_json(client, &url)
            .await
            .unwrap_or_else(|| panic!("GET {url} failed"));
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return events,
        }
    }
}

/// Polls until at least `count` events match `filter`; returns them.
pub async fn wait_for_events(
    client: &reqwest::Client,
    api_base: &str,
    filter: &str,
    count: usize,
) -> Vec<Value> {
    eventually(
        Duration::from_secs(30),
        &format!("{count} events matching {filter:?}"),
        || async move {
            let events = all_events(client, api_base, filter).await;
            (events.len() >= count).then_some(events)
        },
    )
    .await
}

/// Writes JSON lines to the node's ingest port on one connection.
pub async fn send_lines(event_port: u16, lines: &[String]) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", event_port))
        .await
        .unwrap();
    for line in lines {
        stream.write_all(line.as_bytes()).await.unwrap();
        stream.write_all(b"\n").await.unwrap();
    }
    stream.shutdown().await.unwrap();
}

/// The virtualenv with Cowrie and paramiko that scripts/setup-test-deps.sh makes.
pub fn cowrie_venv() -> PathBuf {
    let venv = PathBuf::from(
        std::env::var("HONEYBEE_TEST_VENV")
            .unwrap_or_else(|_| "/opt/honeybee-test/cowrie-venv".into()),
    );
    assert!(
        venv.join("bin/cowrie").exists(),
        "no Cowrie virtualenv at {}: run scripts/setup-test-deps.sh (scripts/test.sh does)",
        venv.display()
    );
    venv
}

/// A real SSH attack on a Cowrie on `ssh_port`: login root/hunter2, one command.
pub fn ssh_attack(ssh_port: u16) {
    let attack = Command::new(cowrie_venv().join("bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cowrie_ssh_session.py"))
        .arg(ssh_port.to_string())
        .output()
        .unwrap();
    assert!(
        attack.status.success(),
        "ssh session failed: {}",
        String::from_utf8_lossy(&attack.stderr)
    );
}
