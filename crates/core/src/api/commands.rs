//! Commands to nodes: `POST /api/v1/nodes/{node_id}/commands` (optionally waiting for the
//! answer) and `GET /api/v1/commands/{command_id}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use honeybee_protocol::{format_timestamp, Command};
use serde::Serialize;
use serde_json::Value;

use super::integer_parameter::parse_unsigned_integer;
use super::nodes::parse_node_id;
use super::{ApiError, ApiState};
use crate::commands::CommandOutcome;
use crate::sessions::SendCommandError;

/// Where command answers are read. Answers carry what nodes report about their pots
/// (configuration values, the tail of an install's output…), so reading them is for admins
/// like sending commands is (`api/auth.rs`).
pub(super) const COMMANDS_PATH: &str = "/api/v1/commands";

/// Longest `?wait=` accepted, in seconds (an install can take minutes).
pub(super) const MAX_WAIT_SECONDS: f64 = 600.0;

pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/nodes/{node_id}/commands", post(send_command))
        .route(&format!("{COMMANDS_PATH}/{{command_id}}"), get(get_command))
}

#[derive(Debug, Serialize)]
struct AnswerView {
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pot_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
    received_at: String,
}

#[derive(Debug, Serialize)]
struct CommandView {
    command_id: u64,
    node_id: u64,
    command: String,
    /// `sent` (no answer expected: the node does not correlate answers), `pending` (no
    /// answer yet) or `answered`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<AnswerView>,
}

impl From<CommandOutcome> for CommandView {
    fn from(outcome: CommandOutcome) -> Self {
        CommandView {
            command_id: outcome.command_id,
            node_id: outcome.node_id,
            command: outcome.command,
            status: "answered",
            answer: Some(AnswerView {
                success: outcome.success,
                pot_id: outcome.pot_id,
                message: outcome.message,
                data: outcome.data,
                received_at: format_timestamp(outcome.received_at),
            }),
        }
    }
}

/// Queues a Protocol v2 command (the contract's shape, e.g. `{"StopPot": "cowrie-01"}`)
/// for a connected node. 202 with the `command_id`; with `?wait=SECONDS`, 200 with the
/// node's answer once it arrives (or 202 `pending` when the wait runs out). 409: the node is
/// not connected, or does not speak the extension the command needs.
async fn send_command(
    State(state): State<Arc<ApiState>>,
    Path(node_id): Path<String>,
    Query(parameters): Query<HashMap<String, String>>,
    body: Result<Json<Command>, JsonRejection>,
) -> Result<(StatusCode, Json<CommandView>), ApiError> {
    let node_id = parse_node_id(&node_id)?;
    let wait = parse_wait(&parameters)?;
    let Json(command) = body.map_err(|rejection| {
        ApiError::BadRequest(format!("invalid command: {}", rejection.body_text()))
    })?;
    let name = command.variant_name().to_owned();
    if state.store.get_node(node_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("node {node_id} not found")));
    }
    let command_id = state.commands.issue(node_id);
    // Registered before sending, so a fast answer cannot slip past the waiter.
    let waiter = wait.map(|_| state.commands.wait_for(command_id));
    // However this request ends (even a client hanging up mid-wait), its waiter goes.
    let _forget = ForgetWaiter {
        commands: &state.commands,
        command_id,
    };
    let delivery = match state.sessions.send_command(node_id, command, command_id) {
        Ok(delivery) => delivery,
        Err(error) => {
            return Err(ApiError::Conflict(match error {
                SendCommandError::NotConnected => {
                    format!("node {node_id} is not connected to this core")
                }
                SendCommandError::QueueFull => {
                    format!("node {node_id} has too many commands pending; retry later")
                }
                SendCommandError::Unsupported { capability } => format!(
                    "node {node_id} does not support {name} (it did not announce the {capability:?} extension)"
                ),
            }));
        }
    };
    let pending = CommandView {
        command_id,
        node_id,
        command: name,
        status: if delivery.correlated {
            "pending"
        } else {
            "sent"
        },
        answer: None,
    };
    let (Some(wait), Some(waiter), true) = (wait, waiter, delivery.correlated) else {
        return Ok((StatusCode::ACCEPTED, Json(pending)));
    };
    match tokio::time::timeout(wait, waiter).await {
        Ok(Ok(outcome)) => Ok((StatusCode::OK, Json(CommandView::from(outcome)))),
        _ => Ok((StatusCode::ACCEPTED, Json(pending))),
    }
}

/// Removes a command's waiter when the request handling it ends.
struct ForgetWaiter<'a> {
    commands: &'a crate::commands::CommandTracker,
    command_id: u64,
}

impl Drop for ForgetWaiter<'_> {
    fn drop(&mut self) {
        self.commands.forget_waiter(self.command_id);
    }
}

fn parse_wait(parameters: &HashMap<String, String>) -> Result<Option<Duration>, ApiError> {
    if let Some(unknown) = parameters.keys().find(|key| key.as_str() != "wait") {
        return Err(ApiError::BadRequest(format!(
            "unknown query parameter {unknown:?}; known: wait"
        )));
    }
    let Some(text) = parameters.get("wait") else {
        return Ok(None);
    };
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=MAX_WAIT_SECONDS).contains(&seconds) => {
            Ok(Some(Duration::from_secs_f64(seconds)))
        }
        _ => Err(ApiError::BadRequest(format!(
            "invalid wait {text:?}: expected seconds from 0 to {MAX_WAIT_SECONDS}"
        ))),
    }
}

/// A command id from the path: decimal digits only, so `-1` or `+1` is a 400 naming the
/// value (as the document says), never a 404 for some other id.
fn parse_command_id(text: &str) -> Result<u64, ApiError> {
    parse_unsigned_integer(text).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "invalid command id {text:?}: expected an unsigned integer"
        ))
    })
}

/// The answer to a command, while the Core still remembers it.
async fn get_command(
    State(state): State<Arc<ApiState>>,
    Path(command_id): Path<String>,
) -> Result<Json<CommandView>, ApiError> {
    let command_id = parse_command_id(&command_id)?;
    state
        .commands
        .answer(command_id)
        .map(|outcome| Json(CommandView::from(outcome)))
        .ok_or_else(|| ApiError::NotFound(format!("no answer for command {command_id} (yet)")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_command_id_that_is_not_plain_digits_is_a_bad_request() {
        assert_eq!(parse_command_id("7").unwrap(), 7);
        for text in ["-1", "+1", "1.5", "", "18446744073709551616"] {
            match parse_command_id(text) {
                Err(ApiError::BadRequest(message)) => {
                    assert!(message.contains(&format!("{text:?}")), "{message}")
                }
                other => panic!("{text:?}: expected a bad request, got {other:?}"),
            }
        }
    }

    /// Every variant the document's `Command` schema lists is one the API reads, in each
    /// form the schema allows (schemathesis checks the other way: nothing else is read).
    #[test]
    fn every_documented_command_variant_is_accepted() {
        let document: Value = serde_json::from_str(super::super::OPENAPI_DOCUMENT).unwrap();
        let alternatives = document["components"]["schemas"]["Command"]["oneOf"]
            .as_array()
            .unwrap();
        let mut documented = Vec::new();
        for alternative in alternatives {
            let bodies = match alternative["type"].as_str().unwrap() {
                "string" => alternative["enum"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|name| (name.as_str().unwrap().to_owned(), name.clone()))
                    .collect::<Vec<_>>(),
                _ => {
                    let name = alternative["required"][0].as_str().unwrap().to_owned();
                    let payload = match &alternative["properties"][&name] {
                        schema if schema["type"] == "string" => vec![json!("cowrie-01")],
                        schema if schema["$ref"].as_str().unwrap().ends_with("/InstallPot") => {
                            vec![
                                json!({"pot_id": "cowrie-01", "honeypot_type": "cowrie", "git_url": null}),
                            ]
                        }
                        _ => vec![Value::Null, json!({}), json!({"ignored": 1})],
                    };
                    payload
                        .into_iter()
                        .map(|payload| (name.clone(), json!({ name.clone(): payload })))
                        .collect()
                }
            };
            for (name, body) in bodies {
                let command: Command = serde_json::from_value(body.clone())
                    .unwrap_or_else(|error| panic!("{body} is refused: {error}"));
                assert_eq!(command.variant_name(), name);
                documented.push(name);
            }
        }
        documented.sort();
        documented.dedup();
        assert_eq!(documented.len(), 12, "{documented:?}");
    }

    #[test]
    fn wait_is_seconds_from_zero_to_the_maximum() {
        let wait = |text: &str| parse_wait(&HashMap::from([("wait".to_owned(), text.to_owned())]));
        assert_eq!(wait("1.5").unwrap(), Some(Duration::from_millis(1500)));
        for refused in ["", "-1", "601", "NaN", "inf"] {
            assert!(wait(refused).is_err(), "{refused:?}");
        }
    }
}
