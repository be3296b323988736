//! The auditor's view of personal information after its release (PIPL
//! Art. 15, 19, 47, 55): per holder, the deletions it confirmed and those
//! overdue, and the grants of sensitive fields without an impact
//! assessment, all computed from a replayed state.

use std::collections::BTreeMap;

use civmesh_certs::{NodeId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::deletion::OverdueDeletion;
use crate::model::GrantId;
use crate::subject_request::SubjectRequestCounts;
use crate::PolicyState;

/// One holder node's deletions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderDeletions {
    /// Its organisation.
    pub holder_org: String,
    /// The node.
    pub holder: NodeId,
    /// Grants under which it was released records.
    pub grants_held: u64,
    /// Receipts it logged.
    pub receipts: u64,
    /// Deletions due, past their bound, without a receipt.
    pub overdue: u64,
}

/// The lifecycle section of an audit report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleReport {
    /// The time it is computed at: the log's latest entry time.
    pub at_ms: UnixMillis,
    /// Per holder node.
    pub holders: Vec<HolderDeletions>,
    /// Every overdue deletion.
    pub overdue: Vec<OverdueDeletion>,
    /// Grants of sensitive fields that name no impact assessment: 0 unless
    /// issued before the rule (apply refuses them).
    pub sensitive_grants_without_assessment: Vec<GrantId>,
    /// Per owner: subject requests answered, answered late, refused, and
    /// open past their deadline now.
    pub subject_requests: Vec<OwnerRequests>,
}

/// One owner's subject requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRequests {
    /// The owner.
    pub owner: String,
    /// What it answered.
    #[serde(flatten)]
    pub counts: SubjectRequestCounts,
    /// Requests open past their deadline.
    pub overdue: u64,
}

impl LifecycleReport {
    /// Whether nothing is overdue or was answered late, and no sensitive
    /// grant lacks its assessment.
    pub fn clean(&self) -> bool {
        self.overdue.is_empty()
            && self.sensitive_grants_without_assessment.is_empty()
            && self.subject_requests.iter().all(|owner| owner.overdue == 0 && owner.counts.answered_late == 0)
    }
}

/// The report for `state` at its latest entry time.
pub fn lifecycle_report(state: &PolicyState) -> LifecycleReport {
    let at_ms = state.last_entry_time_ms;
    let overdue = state.deletions_overdue(at_ms);
    let mut holders: BTreeMap<NodeId, HolderDeletions> = BTreeMap::new();
    for holder_map in state.holdings.values() {
        for (holder, holding) in holder_map {
            let row = holders.entry(*holder).or_insert_with(|| HolderDeletions {
                holder_org: state
                    .members
                    .get(holder)
                    .map(|member| member.org.to_string())
                    .unwrap_or_default(),
                holder: *holder,
                grants_held: 0,
                receipts: 0,
                overdue: 0,
            });
            row.grants_held += 1;
            row.receipts += holding.receipts;
        }
    }
    for deletion in &overdue {
        if let Some(row) = holders.get_mut(&deletion.holder) {
            row.overdue += 1;
        }
    }
    let sensitive_grants_without_assessment = state
        .grants
        .values()
        .filter(|grant| grant.assessment.is_none() && state.grants_sensitive_field(grant))
        .map(|grant| grant.id)
        .collect();
    LifecycleReport {
        at_ms,
        holders: holders.into_values().collect(),
        overdue,
        sensitive_grants_without_assessment,
        subject_requests: owner_requests(state, at_ms),
    }
}

fn owner_requests(state: &PolicyState, at_ms: UnixMillis) -> Vec<OwnerRequests> {
    let mut owners: BTreeMap<String, OwnerRequests> = state
        .subject_request_counts
        .iter()
        .map(|(owner, counts)| {
            let row = OwnerRequests { owner: owner.to_string(), counts: *counts, overdue: 0 };
            (owner.to_string(), row)
        })
        .collect();
    for request in state.subject_requests_overdue(at_ms) {
        let owner = request.owner.to_string();
        let blank =
            || OwnerRequests { owner: owner.clone(), counts: SubjectRequestCounts::default(), overdue: 0 };
        owners.entry(owner.clone()).or_insert_with(blank).overdue += 1;
    }
    owners.into_values().collect()
}
