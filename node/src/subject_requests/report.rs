//! The subject-access report an owner produces for an access request
//! (PIPL Art. 45): every entry of its replica's access log in which one of
//! its organisation's nodes answered for the record, whichever
//! organisation asked. Entries name the subject by its hash under the
//! pair key of the owner's and the requester's organisations; the owner
//! derives each pair key from its own organisation's key.
//!
//! The log is read newest first, a page at a time, within bounds on the
//! entries read and the accesses listed: in a long log the latest accesses
//! are always in the report, and the report says from which entry it
//! starts and whether it reaches the first entry this replica holds.

use std::collections::BTreeMap;

use civmesh_certs::{NodeId, OrgId};
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
const REPORT_READ_ENTRIES: u64 = 1_000;

/// The report, as the owner gives it to the subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessReport {
    /// The dataset holding the subject's record.
    pub dataset: String,
    /// Its owner.
    pub owner_org: String,
    /// When the report was made (ISO 8601, Asia/Shanghai).
    pub made_at: String,
    /// Every access to the record in the entries read, newest first.
    pub accesses: Vec<ReportedAccess>,
    /// Access-log entries read.
    pub entries_read: u64,
    /// The earliest entry the report covers: it lists every access from
    /// this entry to `to_entry` (none if no entry was read).
    pub from_entry: Option<u64>,
    /// The latest entry the report covers: the newest when it was made.
    pub to_entry: Option<u64>,
    /// The first entry this replica holds (later than 0 if it joined by
    /// snapshot: earlier accesses are in the auditor's bundle).
    pub held_from: Option<u64>,
    /// The report reaches back to `held_from`: every entry this replica
    /// holds was read and every access listed (no bound was reached).
    /// Otherwise accesses before `from_entry` are not in it.
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
            let lookup = Lookup { dataset: dataset.to_string(), owner_nodes, hashes };
            Some((owner, (lookup, policy.access_log_length)))
        })
        .ok_or(ReportError::NoSubjectKey)?;
    let (lookup, length) = lookup;
    let history = query.log.history().clone();
    let scanned = tokio::task::spawn_blocking(move || {
        let read = |from, limit| history.access_entries(from, limit);
        scan_newest_first(read, length, &SCAN_BOUNDS, |entry| reported(entry, &lookup))
    })
    .await
    .map_err(|error| ReportError::Task(error.to_string()))??;
    Ok(AccessReport {
        dataset: dataset.to_string(),
        owner_org: owner_org.to_string(),
        made_at: format_time(civmesh_certs::now_unix_millis()),
        accesses: scanned.found,
        entries_read: scanned.entries_read,
        from_entry: scanned.from_entry,
        to_entry: length.checked_sub(1).filter(|_| scanned.entries_read > 0),
        held_from: scanned.held_from,
        complete: scanned.complete,
    })
}

/// The bounds of one scan.
pub(super) struct ScanBounds {
    /// The most entries read.
    pub entries_max: u64,
    /// The most items found.
    pub found_max: usize,
    /// Entries read at a time.
    pub page_entries: u64,
}

const SCAN_BOUNDS: ScanBounds = ScanBounds {
    entries_max: REPORT_ENTRIES_SCANNED_MAX,
    found_max: REPORT_ACCESSES_MAX,
    page_entries: REPORT_READ_ENTRIES,
};

/// What a scan found, newest first, and how far back it reached.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Scanned<R> {
    pub found: Vec<R>,
    pub entries_read: u64,
    /// The earliest entry whose items are all in `found`.
    pub from_entry: Option<u64>,
    pub held_from: Option<u64>,
    /// `from_entry` is `held_from`, or nothing is held.
    pub complete: bool,
}

/// Reads the entries before `length` newest first, a page at a time, with
/// `read(from, limit)` (as [`civmesh_consensus::History::access_entries`]: the first held at
/// or after `from`, and up to `limit` consecutive ones), keeping what
/// `find` finds, within `bounds`. A gap in the history ends the scan,
/// incomplete.
pub(super) fn scan_newest_first<T, R, E>(
    mut read: impl FnMut(u64, usize) -> Result<(u64, Vec<T>), E>,
    length: u64,
    bounds: &ScanBounds,
    mut find: impl FnMut(&T) -> Option<R>,
) -> Result<Scanned<R>, E> {
    let (first, probe) = read(0, 1)?;
    let held_from = (!probe.is_empty()).then_some(first);
    let mut scanned =
        Scanned { found: Vec::new(), entries_read: 0, from_entry: None, held_from, complete: false };
    let Some(held_from) = held_from.filter(|held_from| *held_from < length) else {
        scanned.complete = true;
        return Ok(scanned);
    };
    let mut high = length;
    while high > held_from && scanned.entries_read < bounds.entries_max {
        let wanted = bounds.page_entries.min(high - held_from).min(bounds.entries_max - scanned.entries_read);
        let low = high - wanted;
        let (start, entries) = read(low, usize::try_from(wanted).unwrap_or(usize::MAX))?;
        if start != low || entries.len() as u64 != wanted {
            return Ok(scanned);
        }
        for (position, entry) in (low..high).rev().zip(entries.iter().rev()) {
            if let Some(item) = find(entry) {
                if scanned.found.len() == bounds.found_max {
                    return Ok(scanned);
                }
                scanned.found.push(item);
            }
            scanned.entries_read += 1;
            scanned.from_entry = Some(position);
        }
        high = low;
    }
    scanned.complete = high == held_from;
    Ok(scanned)
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
