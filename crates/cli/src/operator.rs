//! The operator commands of the `honeybee` CLI (`pots`, `install`, `start`, `stop`,
//! `restart`, `logs`, `metrics`, `nodes`, `enroll`): thin clients of the Core's REST API.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

/// How long `start`, `stop`, `restart`, `logs` and `metrics` wait for the node's answer.
const ANSWER_WAIT_SECONDS: u64 = 120;
/// How often `install` looks at the pot's progress.
const PROGRESS_POLL: Duration = Duration::from_millis(500);
/// How long `install` follows an install before giving up on an answer.
const INSTALL_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// A client of one Core's API.
pub struct Operator {
    client: reqwest::Client,
    api: String,
}

impl Operator {
    /// A client of the API at `api`, sending `token` as a bearer token when given and
    /// trusting the CA certificates in `ca_file` for an `https://` API.
    pub fn new(api: &str, token: Option<&str>, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the API token contains characters not allowed in a header")?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .min_tls_version(reqwest::tls::Version::TLS_1_3);
        if let Some(ca_file) = ca_file {
            let pem = std::fs::read(ca_file)
                .with_context(|| format!("reading --ca-file {}", ca_file.display()))?;
            for certificate in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing --ca-file {}", ca_file.display()))?
            {
                builder = builder.add_root_certificate(certificate);
            }
        } else if api.starts_with("https://") {
            bail!("an https:// API needs --ca-file (the core's tls/ca.pem) to verify the core");
        }
        Ok(Operator {
            client: builder.build().context("building the HTTP client")?,
            api: api.trim_end_matches('/').to_owned(),
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.api);
        let mut request = self.client.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("reaching the core API at {url}"))?;
        answer_body(response).await
    }

    /// `honeybee nodes`: every node with its state.
    pub async fn list_nodes(&self) -> anyhow::Result<()> {
        let nodes = self.get("/api/v1/nodes").await?;
        println!(
            "{:<18} {:<20} {:<7} {:<10} {:<8} LAST SEEN",
            "NODE", "NAME", "TYPE", "STATUS", "REVOKED"
        );
        for node in nodes["nodes"].as_array().into_iter().flatten() {
            println!(
                "{:<18} {:<20} {:<7} {:<10} {:<8} {}",
                node["node_id"],
                text(&node["node_name"]),
                text(&node["node_type"]),
                text(&node["status"]),
                if node["revoked"] == true { "yes" } else { "no" },
                text(&node["last_seen"]),
            );
        }
        Ok(())
    }

    /// `honeybee nodes revoke`: cuts the node off and refuses it from now on.
    pub async fn revoke_node(&self, node: &str) -> anyhow::Result<()> {
        let node_id = self.node_id(node).await?;
        let answer = self
            .send(
                reqwest::Method::POST,
                &format!("/api/v1/nodes/{node_id}/revoke"),
                None,
            )
            .await?;
        let connection = if answer["disconnected"] == true {
            "its connection was closed"
        } else {
            "it was not connected to this core"
        };
        println!(
            "node {node_id} revoked at {}; {connection}",
            text(&answer["revoked_at"])
        );
        Ok(())
    }

    /// `honeybee enroll create`: prints a new enrollment token (shown only this once).
    pub async fn create_enrollment_token(
        &self,
        name: &str,
        uses: u32,
        ttl_seconds: u64,
    ) -> anyhow::Result<()> {
        let answer = self
            .send(
                reqwest::Method::POST,
                "/api/v1/enrollment-tokens",
                Some(json!({"name": name, "uses": uses, "ttl_seconds": ttl_seconds})),
            )
            .await?;
        println!(
            "Enrollment token {} for {} node(s), valid until {} (shown once):\n  {}\nOn the node: HONEYBEE_ENROLLMENT_TOKEN=<token> honeybee-node ... (or auth.enrollment_token in config.yaml)",
            answer["id"],
            answer["uses_total"],
            text(&answer["expires_at"]),
            text(&answer["token"]),
        );
        Ok(())
    }

    /// `honeybee enroll list`: every enrollment token, without secrets.
    pub async fn list_enrollment_tokens(&self) -> anyhow::Result<()> {
        let tokens = self.get("/api/v1/enrollment-tokens").await?;
        println!(
            "{:<6} {:<20} {:<9} {:<10} EXPIRES",
            "ID", "NAME", "USES LEFT", "STATUS"
        );
        for token in tokens["enrollment_tokens"].as_array().into_iter().flatten() {
            println!(
                "{:<6} {:<20} {:<9} {:<10} {}",
                token["id"],
                text(&token["name"]),
                format!("{}/{}", token["uses_left"], token["uses_total"]),
                text(&token["status"]),
                text(&token["expires_at"]),
            );
        }
        Ok(())
    }

    /// `honeybee enroll revoke`: the token enrolls nobody from now on.
    pub async fn revoke_enrollment_token(&self, token_id: u64) -> anyhow::Result<()> {
        self.send(
            reqwest::Method::DELETE,
            &format!("/api/v1/enrollment-tokens/{token_id}"),
            None,
        )
        .await?;
        println!("enrollment token {token_id} revoked");
        Ok(())
    }

    /// The node id for an id or a node name.
    async fn node_id(&self, node: &str) -> anyhow::Result<u64> {
        if let Ok(node_id) = node.parse::<u64>() {
            return Ok(node_id);
        }
        let nodes = self.get("/api/v1/nodes").await?;
        let matches: Vec<u64> = nodes["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|candidate| candidate["node_name"] == node)
            .filter_map(|candidate| candidate["node_id"].as_u64())
            .collect();
        match matches.as_slice() {
            [node_id] => Ok(*node_id),
            [] => bail!("no node named {node:?} (see GET /api/v1/nodes)"),
            _ => bail!("several nodes are named {node:?}; use the node id"),
        }
    }

    /// Sends a command; with `wait`, returns the node's answer.
    async fn command(
        &self,
        node: &str,
        command: Value,
        wait: Option<u64>,
    ) -> anyhow::Result<Value> {
        let node_id = self.node_id(node).await?;
        self.command_to(node_id, command, wait).await
    }

    async fn command_to(
        &self,
        node_id: u64,
        command: Value,
        wait: Option<u64>,
    ) -> anyhow::Result<Value> {
        let mut url = format!("{}/api/v1/nodes/{node_id}/commands", self.api);
        if let Some(seconds) = wait {
            url.push_str(&format!("?wait={seconds}"));
        }
        let response = self
            .client
            .post(&url)
            .json(&command)
            .send()
            .await
            .with_context(|| format!("reaching the core API at {url}"))?;
        let body = answer_body(response).await?;
        if wait.is_some() && body["status"] != "answered" {
            bail!(
                "no answer from the node in time (command {}); check GET /api/v1/commands/{}",
                body["command_id"],
                body["command_id"]
            );
        }
        Ok(body)
    }

    /// `honeybee pots`: every pot of every node.
    pub async fn list_pots(&self) -> anyhow::Result<()> {
        let pots = self.get("/api/v1/honeypots").await?;
        println!(
            "{:<18} {:<20} {:<12} {:<10} MESSAGE",
            "NODE", "POT", "TYPE", "STATUS"
        );
        for pot in pots["honeypots"].as_array().into_iter().flatten() {
            println!(
                "{:<18} {:<20} {:<12} {:<10} {}",
                pot["node_id"],
                text(&pot["pot_id"]),
                text(&pot["pot_type"]),
                text(&pot["status"]),
                text(&pot["message"]),
            );
        }
        Ok(())
    }

    /// `honeybee install`: installs a pot and shows its progress until it is done.
    pub async fn install(
        &self,
        node: &str,
        pot_type: &str,
        pot_id: &str,
        settings: &[String],
        git: Option<(String, Option<String>)>,
        start: bool,
    ) -> anyhow::Result<()> {
        let mut config = BTreeMap::new();
        for setting in settings {
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| anyhow!("--set {setting:?}: expected key=value"))?;
            config.insert(key.to_owned(), value.to_owned());
        }
        let (git_url, git_branch) = git.map_or((None, None), |(url, branch)| (Some(url), branch));
        let command = json!({"InstallPot": {
            "pot_id": pot_id,
            "honeypot_type": pot_type,
            "git_url": git_url,
            "git_branch": git_branch,
            "config": config,
            "auto_start": start,
        }});
        let node_id = self.node_id(node).await?;
        let sent = self.command_to(node_id, command, None).await?;
        let command_id = sent["command_id"]
            .as_u64()
            .context("the core returned no command id")?;
        println!("installing {pot_type} as {pot_id} (command {command_id})");
        if sent["status"] != "pending" {
            println!(
                "sent; this node does not report command answers: follow it with `honeybee pots`"
            );
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + INSTALL_DEADLINE;
        let mut last_progress = String::new();
        loop {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "no answer to command {command_id} after {} minutes; see `honeybee pots`",
                    INSTALL_DEADLINE.as_secs() / 60
                );
            }
            if let Some(pot) = self.pot(node_id, pot_id).await? {
                let progress = format!("{}: {}", text(&pot["status"]), text(&pot["message"]));
                if progress != last_progress {
                    println!("  {progress}");
                    last_progress = progress;
                }
            }
            let url = format!("{}/api/v1/commands/{command_id}", self.api);
            let response = self
                .client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("reaching {url}"))?;
            if response.status().is_success() {
                let answered: Value = response.json().await?;
                return report(&answered["answer"]);
            }
            // 404 means no answer yet; anything else will not change by waiting.
            if response.status() != reqwest::StatusCode::NOT_FOUND {
                let status = response.status();
                let body: Value = response.json().await.unwrap_or_default();
                bail!(
                    "reading the answer to command {command_id} failed with {status}: {} (command answers need an admin token)",
                    text(&body["error"])
                );
            }
            tokio::time::sleep(PROGRESS_POLL).await;
        }
    }

    async fn pot(&self, node_id: u64, pot_id: &str) -> anyhow::Result<Option<Value>> {
        let node = self.get(&format!("/api/v1/nodes/{node_id}")).await?;
        Ok(node["honeypots"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|pot| pot["pot_id"] == pot_id)
            .cloned())
    }

    /// `honeybee start|stop|restart`.
    pub async fn lifecycle(&self, variant: &str, node: &str, pot_id: &str) -> anyhow::Result<()> {
        let answered = self
            .command(node, json!({ variant: pot_id }), Some(ANSWER_WAIT_SECONDS))
            .await?;
        report(&answered["answer"])
    }

    /// `honeybee logs`: the pot's recent output.
    pub async fn logs(&self, node: &str, pot_id: &str) -> anyhow::Result<()> {
        let answered = self
            .command(
                node,
                json!({ "GetPotLogs": pot_id }),
                Some(ANSWER_WAIT_SECONDS),
            )
            .await?;
        let answer = &answered["answer"];
        if answer["success"] != true {
            return report(answer);
        }
        for line in answer["data"]["lines"].as_array().into_iter().flatten() {
            println!("{}", text(line));
        }
        Ok(())
    }

    /// `honeybee metrics`: CPU, memory, uptime and restarts of a pot.
    pub async fn metrics(&self, node: &str, pot_id: &str) -> anyhow::Result<()> {
        let answered = self
            .command(
                node,
                json!({ "GetPotMetrics": pot_id }),
                Some(ANSWER_WAIT_SECONDS),
            )
            .await?;
        let answer = &answered["answer"];
        if answer["success"] != true {
            return report(answer);
        }
        let data = &answer["data"];
        println!("pid:        {}", data["pid"]);
        println!("cpu:        {}%", data["cpu_percent"]);
        println!("memory:     {} bytes resident", data["rss_bytes"]);
        println!("uptime:     {} s", data["uptime_seconds"]);
        println!("restarts:   {}", data["restarts"]);
        println!("processes:  {}", data["processes"]);
        Ok(())
    }
}

/// The JSON body of a response, or an error carrying the API's `error` message.
async fn answer_body(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("the core answered {status}: {}", text(&body["error"]));
    }
    Ok(body)
}

/// Prints a node's answer; an unsuccessful one becomes the command's error.
fn report(answer: &Value) -> anyhow::Result<()> {
    if answer["success"] == true {
        println!("{}", text(&answer["message"]));
        Ok(())
    } else {
        bail!("{}", text(&answer["message"]))
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A duration such as `90s`, `30m`, `24h`, `7d` or plain seconds, in seconds.
pub fn parse_duration_seconds(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (number, unit) = match text.find(|character: char| !character.is_ascii_digit()) {
        Some(index) => text.split_at(index),
        None => (text, "s"),
    };
    let multiplier = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("invalid duration {text:?}: use a number with s, m, h or d, e.g. 24h"),
    };
    let value: u64 = number.parse().map_err(|_| {
        anyhow!("invalid duration {text:?}: use a number with s, m, h or d, e.g. 24h")
    })?;
    value
        .checked_mul(multiplier)
        .filter(|seconds| *seconds > 0)
        .ok_or_else(|| anyhow!("invalid duration {text:?}: must be positive"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration_seconds;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration_seconds("24h").unwrap(), 86_400);
        assert_eq!(parse_duration_seconds("7d").unwrap(), 604_800);
        assert_eq!(parse_duration_seconds("90").unwrap(), 90);
        assert_eq!(parse_duration_seconds("30m").unwrap(), 1800);
        for bad in ["", "0h", "5w", "h", "-1s"] {
            let error = parse_duration_seconds(bad).unwrap_err().to_string();
            assert!(error.contains("invalid duration"), "{bad}: {error}");
        }
    }
}
