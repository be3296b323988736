//! What an operator does from the console that the policy log records: the
//! command, signed by this node, names the signed-in operator
//! ([`Command::ByOperator`]), so the log and the auditor see who decided.

use civmesh_policy::{Applied, Command};

use crate::api::{ApiError, Shared};

/// How long a decision waits for this node's replica to apply it, so the
/// page that follows shows it.
const CATCH_UP_MS_MAX: u64 = 3_000;

/// Signs `command` as this node, naming `operator`, and commits it: the
/// log's outcome, or its rejection as a 409 naming the code. Then waits (at
/// most [`CATCH_UP_MS_MAX`]) until this node's replica has applied it.
pub(super) async fn commit(state: &Shared, operator: &str, command: Command) -> Result<Applied, ApiError> {
    let command = Command::ByOperator { operator: operator.to_string(), command: Box::new(command) };
    let applied = crate::api::grants::commit_as_node(state, command).await?;
    let catch_up = std::time::Duration::from_millis(CATCH_UP_MS_MAX);
    let _ = state.log.linearizable_read_index(catch_up).await;
    Ok(applied)
}
