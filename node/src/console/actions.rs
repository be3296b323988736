//! What an operator does from the console that the policy log records: the
//! command, signed by this node, names the signed-in operator
//! ([`Command::ByOperator`]), so the log and the auditor see who decided.

use civmesh_policy::{Applied, Command};

use crate::api::{ApiError, Shared};

/// Signs `command` as this node, naming `operator`, and commits it: the
/// log's outcome, or its rejection as a 409 naming the code.
pub(super) async fn commit(state: &Shared, operator: &str, command: Command) -> Result<Applied, ApiError> {
    let command = Command::ByOperator { operator: operator.to_string(), command: Box::new(command) };
    crate::api::grants::commit_as_node(state, command).await
}
