//! `GET /v1/deletions`: who holds copies under which grant, the deletions
//! they confirmed, and those overdue, as this replica's log state has them.

use axum::extract::State;
use axum::Json;
use civmesh_certs::{now_unix_millis, UnixMillis};
use civmesh_policy::deletion::{DeletionCause, Holding};
use civmesh_policy::model::GrantId;
use civmesh_policy::PolicyState;
use serde::{Deserialize, Serialize};

use crate::api::Shared;

/// The most rows of each list one answer carries.
pub const DELETIONS_ROWS_MAX: usize = 10_000;

/// The answer of `GET /v1/deletions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionsView {
    /// When the answer was computed (the node's clock).
    pub at_ms: UnixMillis,
    /// Per grant and holder node: what the log knows of its copies.
    pub holdings: Vec<HoldingView>,
    /// Deletions due, past their bound, without a receipt.
    pub overdue: Vec<OverdueView>,
}

/// One holder node's copies under one grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldingView {
    /// The grant.
    pub grant: GrantId,
    /// The grant's dataset.
    pub dataset: String,
    /// The holder's organisation.
    pub holder_org: String,
    /// The holder node.
    pub holder: String,
    /// What the log knows.
    #[serde(flatten)]
    pub holding: Holding,
}

/// One overdue deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverdueView {
    /// The grant.
    pub grant: GrantId,
    /// The holder's organisation.
    pub holder_org: String,
    /// The holder node.
    pub holder: String,
    /// What is due.
    pub cause: DeletionCause,
    /// When it was due.
    pub due_at_ms: UnixMillis,
}

/// `GET /v1/deletions`.
pub(crate) async fn deletions(State(state): State<Shared>) -> Json<DeletionsView> {
    let at_ms = now_unix_millis();
    Json(state.log.state().read(|applied| view(&applied.policy, at_ms)))
}

fn view(policy: &PolicyState, at_ms: UnixMillis) -> DeletionsView {
    let org_of = |node: &civmesh_certs::NodeId| {
        policy.members.get(node).map(|member| member.org.to_string()).unwrap_or_default()
    };
    let holdings = policy
        .holdings
        .iter()
        .flat_map(|(grant, holders)| holders.iter().map(move |(holder, holding)| (*grant, holder, holding)))
        .take(DELETIONS_ROWS_MAX)
        .map(|(grant, holder, holding)| HoldingView {
            grant,
            dataset: policy.grants.get(&grant).map(|grant| grant.dataset.clone()).unwrap_or_default(),
            holder_org: org_of(holder),
            holder: holder.to_string(),
            holding: holding.clone(),
        })
        .collect();
    let overdue = policy
        .deletions_overdue(at_ms)
        .into_iter()
        .take(DELETIONS_ROWS_MAX)
        .map(|overdue| OverdueView {
            grant: overdue.grant,
            holder_org: org_of(&overdue.holder),
            holder: overdue.holder.to_string(),
            cause: overdue.cause,
            due_at_ms: overdue.due_at_ms,
        })
        .collect();
    DeletionsView { at_ms, holdings, overdue }
}
