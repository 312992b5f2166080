//! Running a piece of command handling so that a panic in it (a bug) becomes an error the
//! handler can answer with, instead of a command the Core waits for forever and a pot slot
//! stuck in a transitional state.

use std::future::Future;

/// Runs `work` on its own task and returns its output, or, if it panicked, a message for
/// the operator (the panic itself is logged with `what`).
pub(super) async fn run_caught<T, F>(what: &str, work: F) -> Result<T, String>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(output) => Ok(output),
        Err(error) => {
            let detail = match error.try_into_panic() {
                Ok(payload) => payload
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned()),
                Err(error) => error.to_string(),
            };
            tracing::error!(what, detail, "a pot command failed inside the node (a bug)");
            Err(format!(
                "{what} failed inside the node (an internal error, logged by the node); the command was not carried out completely"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_answerable_error_and_a_result_passes_through() {
        assert_eq!(run_caught("adding", async { 2 + 2 }).await, Ok(4));
        let caught = run_caught("InstallPot", async {
            let argv: Vec<String> = Vec::new();
            argv[0].clone()
        })
        .await
        .unwrap_err();
        assert!(
            caught.contains("InstallPot failed inside the node"),
            "{caught}"
        );
    }
}
