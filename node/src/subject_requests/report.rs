//! The subject-access report an owner produces for an access request
//! (PIPL Art. 45): every entry of its replica's access log in which one of
//! its organisation's nodes answered for the record, whichever
//! organisation asked. Entries name the subject by its hash under the
//! pair key of the owner's and the requester's organisations; the owner
//! derives each pair key from its own organisation's key.

use std::collections::BTreeMap;

use civmesh_certs::{NodeId, OrgId};
use civmesh_consensus::History;
use civmesh_policy::evaluation::format_time;
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::{AccessKind, AccessLogEntry, AccessOutcome, ReasonCode};
use serde::{Deserialize, Serialize};

use crate::query::QueryService;

/// The most access-log entries one report reads.
pub const REPORT_ENTRIES_SCANNED_MAX: u64 = 1_000_000;
/// The most accesses one report lists.
pub const REPORT_ACCESSES_MAX: usize = 10_000;
/// Entries read from the history at a time.
const REPORT_READ_ENTRIES: usize = 1_000;

/// The report, as the owner gives it to the subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessReport {
    /// The dataset holding the subject's record.
    pub dataset: String,
    /// Its owner.
    pub owner_org: String,
    /// When the report was made (ISO 8601, Asia/Shanghai).
    pub made_at: String,
    /// Every access to the record, in log order.
    pub accesses: Vec<ReportedAccess>,
    /// Access-log entries read.
    pub entries_read: u64,
    /// The first entry this replica holds (later than 0 if it joined by
    /// snapshot: earlier accesses are in the auditor's bundle).
    pub held_from: Option<u64>,
    /// Every entry this replica holds was read and every access listed
    /// (no bound was reached).
    pub complete: bool,
}

/// One access to the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedAccess {
    /// Its position in the access log.
    pub sequence: u64,
    /// When the owner decided (ISO 8601, Asia/Shanghai).
    pub at: String,
    /// The organisation that asked.
    pub requester_org: String,
    /// A query, a listing's page or a push.
    pub kind: AccessKind,
    /// For what.
    pub purpose: String,
    /// The grant relied on.
    pub grant: Option<u64>,
    /// The fields released (none for a denial).
    pub fields: Vec<String>,
    /// `permit` or `deny`.
    pub outcome: String,
    /// Why denied.
    pub reason: Option<ReasonCode>,
}

/// Why the report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// This node holds no key of its organisation, or is no active member.
    #[error("this node holds no subject key for its organisation")]
    NoSubjectKey,
    /// The history could not be read.
    #[error("{0}")]
    History(#[from] civmesh_consensus::HistoryError),
    /// The reading task failed.
    #[error("the report could not be made: {0}")]
    Task(String),
}

/// What the scan needs: the record's hash per requester node, and the
/// owner's nodes.
struct Lookup {
    dataset: String,
    owner_nodes: Vec<NodeId>,
    hashes: BTreeMap<NodeId, (OrgId, SubjectKeyHash)>,
}

/// The report of every access to record `record_key` of `dataset`, which
/// this node's organisation owns.
pub async fn access_report(
    query: &QueryService,
    dataset: &str,
    record_key: &str,
) -> Result<AccessReport, ReportError> {
    let me = query.key.node_id();
    let (owner_org, lookup) = query
        .log
        .state()
        .read(|applied| {
            let policy = &applied.policy;
            let owner = policy.active_member(&me)?.org.clone();
            let mut per_org: BTreeMap<&OrgId, SubjectKeyHash> = BTreeMap::new();
            let mut hashes = BTreeMap::new();
            for member in policy.members.values() {
                let hash = match per_org.get(&member.org) {
                    Some(hash) => *hash,
                    None => {
                        let pair_key = query.subject_keys.for_requester(&member.org)?;
                        *per_org.entry(&member.org).or_insert(SubjectKeyHash::of(&pair_key, record_key))
                    }
                };
                hashes.insert(member.node_id, (member.org.clone(), hash));
            }
            let owner_nodes = policy
                .members
                .values()
                .filter(|member| member.org == owner)
                .map(|member| member.node_id)
                .collect();
            Some((owner, Lookup { dataset: dataset.to_string(), owner_nodes, hashes }))
        })
        .ok_or(ReportError::NoSubjectKey)?;
    let history = query.log.history().clone();
    let scanned = tokio::task::spawn_blocking(move || scan(&history, &lookup))
        .await
        .map_err(|error| ReportError::Task(error.to_string()))??;
    let (accesses, entries_read, held_from, complete) = scanned;
    Ok(AccessReport {
        dataset: dataset.to_string(),
        owner_org: owner_org.to_string(),
        made_at: format_time(civmesh_certs::now_unix_millis()),
        accesses,
        entries_read,
        held_from,
        complete,
    })
}

type Scanned = (Vec<ReportedAccess>, u64, Option<u64>, bool);

/// Reads the history from its first held entry, within the bounds.
fn scan(history: &History, lookup: &Lookup) -> Result<Scanned, ReportError> {
    let mut accesses = Vec::new();
    let mut read = 0u64;
    let mut held_from = None;
    let mut from = 0;
    loop {
        let (start, entries) = history.access_entries(from, REPORT_READ_ENTRIES)?;
        held_from = held_from.or((!entries.is_empty()).then_some(start));
        let Some(last) = entries.last().map(|entry| entry.sequence) else {
            return Ok((accesses, read, held_from, true));
        };
        for entry in &entries {
            read += 1;
            if let Some(access) = reported(entry, lookup) {
                if accesses.len() == REPORT_ACCESSES_MAX {
                    return Ok((accesses, read, held_from, false));
                }
                accesses.push(access);
            }
        }
        if read >= REPORT_ENTRIES_SCANNED_MAX {
            let more = !history.access_entries(last + 1, 1)?.1.is_empty();
            return Ok((accesses, read, held_from, !more));
        }
        from = last + 1;
    }
}

/// The access `entry` made to the record, if one of the owner's nodes
/// answered it and it released the record or, denied, named it.
fn reported(entry: &AccessLogEntry, lookup: &Lookup) -> Option<ReportedAccess> {
    if entry.header.dataset != lookup.dataset || !lookup.owner_nodes.contains(&entry.owner) {
        return None;
    }
    let (requester_org, subject) = lookup.hashes.get(&entry.requester)?;
    let (outcome, reason, fields) = match &entry.outcome {
        AccessOutcome::Permit { released } => {
            let release = released.iter().find(|release| release.subject == *subject)?;
            ("permit", None, release.fields.clone())
        }
        AccessOutcome::Deny { reason } => {
            entry.header.subjects.contains(subject).then_some(())?;
            ("deny", Some(*reason), Vec::new())
        }
    };
    Some(ReportedAccess {
        sequence: entry.sequence,
        at: format_time(entry.decided_at_ms),
        requester_org: requester_org.to_string(),
        kind: entry.kind(),
        purpose: entry.header.purpose.clone(),
        grant: entry.header.grant,
        fields,
        outcome: outcome.to_string(),
        reason,
    })
}
