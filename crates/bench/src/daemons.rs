//! The processes under test: a real `honeybee-core` and real `honeybee-node`s started from
//! the release binaries with benchmark configs, plus what `/proc` says about any process
//! (CPU time, resident memory) so each side's cost can be reported.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Linux reports `/proc/<pid>/stat` times in USER_HZ, which the kernel ABI fixes at 100.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A child process that is killed when dropped, with its output in a log file.
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn spawn(
        name: &str,
        program: &Path,
        arguments: &[String],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let output = std::fs::File::create(&log)
            .with_context(|| format!("creating log file {}", log.display()))?;
        let child = Command::new(program)
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Daemon {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn usage(&self) -> anyhow::Result<ProcessUsage> {
        ProcessUsage::of(self.pid())
    }

    /// Fails with the process's log when it has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!(
                "{} exited with {status}; its log ends with:\n{tail}",
                self.name
            );
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a process has used so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessUsage {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    /// Resident memory now.
    pub rss_bytes: u64,
    /// Highest resident memory so far (`VmHWM`).
    pub peak_rss_bytes: u64,
}

impl ProcessUsage {
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // The command name may hold spaces and parentheses; the fields after its closing
        // parenthesis are fixed: utime and stime are the 12th and 13th of them.
        let after_name = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .context("parsing /proc stat")?;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |index: usize| -> anyhow::Result<f64> {
            Ok(fields
                .get(index)
                .context("a short /proc stat line")?
                .parse::<f64>()?)
        };
        let cpu_seconds = (ticks(11)? + ticks(12)?) / CLOCK_TICKS_PER_SECOND;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let kibibytes = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(ProcessUsage {
            cpu_seconds,
            rss_bytes: kibibytes("VmRSS:") * 1024,
            peak_rss_bytes: kibibytes("VmHWM:") * 1024,
        })
    }
}

/// Where the HoneyBee binaries are: next to this one unless told otherwise.
pub fn binary(bin_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found; build the binaries first (`cargo build --release`) or pass --bin-dir",
            path.display()
        );
    }
    Ok(path)
}

/// Ports of one Core.
#[derive(Debug, Clone, Copy)]
pub struct CorePorts {
    pub node_port: u16,
    pub api_port: u16,
}

/// Starts a Core in `dir` with the shipped defaults except: the API is open (loopback
/// only), nodes enroll openly (loopback), logs at `warn`, and `extra_toml` appended.
/// `toml` with `[server] enrollment = "open"` added (inside its `[server]` table if it has
/// one).
fn with_open_enrollment(toml: &str) -> String {
    match toml.find("[server]\n") {
        Some(at) => {
            let after = at + "[server]\n".len();
            format!(
                "{}enrollment = \"open\"\n{}",
                &toml[..after],
                &toml[after..]
            )
        }
        None => format!("[server]\nenrollment = \"open\"\n{toml}"),
    }
}

pub fn start_core(
    bin_dir: &Path,
    dir: &Path,
    extra_toml: &str,
) -> anyhow::Result<(Daemon, CorePorts)> {
    let ports = CorePorts {
        node_port: free_port()?,
        api_port: free_port()?,
    };
    let config = dir.join("bee_config.toml");
    std::fs::write(
        &config,
        // The simulated nodes enroll without tokens (a benchmark Core on loopback only).
        format!(
            "[logging]\nlevel = \"warn\"\n[api]\nauth = \"none\"\n{}",
            with_open_enrollment(extra_toml)
        ),
    )?;
    let daemon = Daemon::spawn(
        "honeybee-core",
        &binary(bin_dir, "honeybee-core")?,
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
    )?;
    Ok((daemon, ports))
}

/// Starts node number `index` in its own directory under `dir`; returns it and its ingest
/// port.
pub fn start_node(
    bin_dir: &Path,
    dir: &Path,
    index: usize,
    core: CorePorts,
) -> anyhow::Result<(Daemon, u16)> {
    let node_dir = dir.join(format!("node-{index:03}"));
    std::fs::create_dir_all(&node_dir)?;
    let event_port = free_port()?;
    let config = node_dir.join("config.yaml");
    std::fs::write(
        &config,
        format!("node:\n  name: bench-node-{index:03}\nlog:\n  level: warn\nhoneypot:\n  enabled: false\n"),
    )?;
    let daemon = Daemon::spawn(
        &format!("honeybee-node-{index:03}"),
        &binary(bin_dir, "honeybee-node")?,
        &[
            "--config".into(),
            config.display().to_string(),
            "--data-dir".into(),
            node_dir.join("data").display().to_string(),
            "--core".into(),
            format!("127.0.0.1:{}", core.node_port),
            "--event-port".into(),
            event_port.to_string(),
        ],
        &node_dir,
    )?;
    Ok((daemon, event_port))
}

/// Waits until something accepts connections on `address`.
pub async fn wait_for_port(address: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {address} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the Core lists `count` connected nodes.
pub async fn wait_for_nodes(api_port: u16, count: usize, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{api_port}/api/v1/nodes");
    let deadline = Instant::now() + timeout;
    loop {
        let connected = match client.get(&url).send().await {
            Ok(response) => response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|body| {
                    body["nodes"].as_array().map(|nodes| {
                        nodes
                            .iter()
                            .filter(|node| node["connected"] == true)
                            .count()
                    })
                })
                .unwrap_or(0),
            Err(_) => 0,
        };
        if connected >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{connected} of {count} nodes connected after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
