//! What a verified replay released, per department and per grant, and the
//! releases an auditor should look at: sensitive fields released with no
//! separate consent on file, and releases the log recorded outside their
//! grant's window. Fed each access entry in log order by the replay
//! ([`super::verify_stream_collecting`]) with the state it was logged in.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use civmesh_certs::UnixMillis;
use serde::{Deserialize, Serialize};

use crate::access::{AccessLogEntry, AccessOutcome, SubjectRelease};
use crate::model::{ConsentKey, Grant, GrantId, LegalBasis};
use crate::state::PolicyState;

/// The most flags a tally lists one by one (it counts them all).
pub const FLAGS_LISTED_MAX: usize = 200;

/// Counts of accesses to one department's data, or under one grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessCounts {
    /// Access entries (queries, listing pages, pushes).
    pub accesses: u64,
    /// Of which permits.
    pub permits: u64,
    /// Of which denials.
    pub denials: u64,
    /// Subjects released, summed over the permits.
    pub subjects_released: u64,
    /// Fields released, summed over the subjects released.
    pub fields_released: u64,
    /// The names of the fields released.
    pub field_names: BTreeSet<String>,
    /// Entries after the latest final checkpoint.
    pub unanchored: u64,
    /// Entries flagged.
    pub flagged: u64,
}

/// One department's (a dataset owner's) accesses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepartmentAccesses {
    /// The owning organisation, by name.
    pub department: String,
    /// What it released and denied.
    pub counts: AccessCounts,
}

/// The accesses under one grant, or under none (public fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantAccesses {
    /// The grant (`None`: accesses that named none).
    pub grant: Option<GrantId>,
    /// The dataset.
    pub dataset: String,
    /// Who issued it.
    pub grantor: Option<String>,
    /// Who holds it.
    pub grantee: Option<String>,
    /// Its legal basis.
    pub legal_basis: Option<LegalBasis>,
    /// Its window, `[from, until)`.
    pub valid_from_ms: Option<UnixMillis>,
    /// The end of its window.
    pub valid_until_ms: Option<UnixMillis>,
    /// What it released and denied.
    pub counts: AccessCounts,
}

/// Why an access is flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// Sensitive fields (PIPL Art. 28) released for a subject with no
    /// separate consent on file (Art. 29): lawful only on another basis.
    SensitiveWithoutConsent,
    /// A release the log recorded when its grant was not usable (before or
    /// after its window, or revoked), though the owner decided within it.
    OutsideGrantWindow,
    /// A release, under a grant that needs each subject's consent, of a
    /// subject whose consent was withdrawn (Art. 15): there must be none,
    /// since apply re-justifies every release; counted independently.
    ReleasedAfterWithdrawal,
}

/// One flagged access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessFlag {
    /// Why.
    pub kind: FlagKind,
    /// The access entry.
    pub access_entry: u64,
    /// When the owner decided.
    pub decided_at_ms: UnixMillis,
    /// When the log recorded it (the entry time).
    pub logged_at_ms: UnixMillis,
    /// The owning department.
    pub department: String,
    /// The requesting organisation.
    pub requester: String,
    /// The grant relied on.
    pub grant: Option<GrantId>,
    /// The fields concerned: the sensitive ones, or every field released.
    pub fields: Vec<String>,
    /// The subjects concerned.
    pub subjects: u64,
}

/// A replay's accesses, tallied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessSummary {
    /// Per owning department, by name.
    pub departments: Vec<DepartmentAccesses>,
    /// Per grant, by id (accesses under no grant first).
    pub grants: Vec<GrantAccesses>,
    /// Flagged accesses, in log order, at most [`FLAGS_LISTED_MAX`].
    pub flags: Vec<AccessFlag>,
    /// How many accesses each kind of flag holds, listed or not.
    pub flag_counts: BTreeMap<FlagKind, u64>,
}

/// Tallies access entries as a replay yields them.
#[derive(Debug, Default)]
pub struct AccessTally {
    departments: BTreeMap<String, AccessCounts>,
    grants: BTreeMap<Option<GrantId>, GrantAccesses>,
    flags: Vec<AccessFlag>,
    flag_counts: BTreeMap<FlagKind, u64>,
    /// Entries not yet under a final checkpoint: leaf, department, grant.
    pending: VecDeque<(u64, String, Option<GrantId>)>,
}

impl AccessTally {
    /// An empty tally.
    pub fn new() -> Self {
        AccessTally::default()
    }

    /// Counts `entry`, logged at `logged_at_ms` as leaf `leaf`; `state` is
    /// the state it was logged in.
    pub fn observe(
        &mut self,
        state: &PolicyState,
        entry: &AccessLogEntry,
        leaf: u64,
        logged_at_ms: UnixMillis,
    ) {
        let department = state
            .datasets
            .get(&entry.header.dataset)
            .map_or_else(|| entry.owner.to_string(), |dataset| dataset.owner.to_string());
        let grant_id = entry.header.grant;
        let grant = grant_id.and_then(|id| state.grants.get(&id));
        let flags = flags_of(state, entry, grant, &department, logged_at_ms);
        let add = |counts: &mut AccessCounts| {
            count(counts, &entry.outcome);
            counts.flagged += u64::from(!flags.is_empty());
        };
        add(self.departments.entry(department.clone()).or_default());
        add(&mut self
            .grants
            .entry(grant_id)
            .or_insert_with(|| grant_row(grant_id, grant, &entry.header.dataset))
            .counts);
        for flag in flags {
            *self.flag_counts.entry(flag.kind).or_default() += 1;
            if self.flags.len() < FLAGS_LISTED_MAX {
                self.flags.push(flag);
            }
        }
        let anchored = state.last_checkpoint.as_ref().map_or(0, |last| last.body.tree_size);
        while self.pending.front().is_some_and(|(pending, ..)| *pending < anchored) {
            self.pending.pop_front();
        }
        self.pending.push_back((leaf, department, grant_id));
    }

    /// The summary, once the replay has ended with `anchored_leaves` under
    /// its latest final checkpoint.
    pub fn finish(mut self, anchored_leaves: u64) -> AccessSummary {
        for (leaf, department, grant) in &self.pending {
            if *leaf >= anchored_leaves {
                self.departments.entry(department.clone()).or_default().unanchored += 1;
                if let Some(row) = self.grants.get_mut(grant) {
                    row.counts.unanchored += 1;
                }
            }
        }
        AccessSummary {
            departments: self
                .departments
                .into_iter()
                .map(|(department, counts)| DepartmentAccesses { department, counts })
                .collect(),
            grants: self.grants.into_values().collect(),
            flags: self.flags,
            flag_counts: self.flag_counts,
        }
    }
}

fn count(counts: &mut AccessCounts, outcome: &AccessOutcome) {
    counts.accesses += 1;
    match outcome {
        AccessOutcome::Permit { released } => {
            counts.permits += 1;
            counts.subjects_released += released.len() as u64;
            for release in released {
                counts.fields_released += release.fields.len() as u64;
                counts.field_names.extend(release.fields.iter().cloned());
            }
        }
        AccessOutcome::Deny { .. } => counts.denials += 1,
    }
}

fn grant_row(id: Option<GrantId>, grant: Option<&Grant>, dataset: &str) -> GrantAccesses {
    GrantAccesses {
        grant: id,
        dataset: grant.map_or_else(|| dataset.to_string(), |grant| grant.dataset.clone()),
        grantor: grant.map(|grant| grant.grantor.to_string()),
        grantee: grant.map(|grant| grant.grantee.to_string()),
        legal_basis: grant.map(|grant| grant.legal_basis),
        valid_from_ms: grant.map(|grant| grant.valid_from_ms),
        valid_until_ms: grant.map(|grant| grant.valid_until_ms),
        counts: AccessCounts::default(),
    }
}

/// The flags a permit earns: sensitive fields with no separate consent on
/// file, and a grant not usable when the log recorded the release
/// ([`Grant::check_usable`], the one rule).
fn flags_of(
    state: &PolicyState,
    entry: &AccessLogEntry,
    grant: Option<&Grant>,
    department: &str,
    logged_at_ms: UnixMillis,
) -> Vec<AccessFlag> {
    let AccessOutcome::Permit { released } = &entry.outcome else { return Vec::new() };
    let requester = state.members.get(&entry.requester).map(|member| member.org.clone());
    let flag = |kind, fields: Vec<String>, subjects| AccessFlag {
        kind,
        access_entry: entry.sequence,
        decided_at_ms: entry.decided_at_ms,
        logged_at_ms,
        department: department.to_string(),
        requester: requester.as_ref().map_or_else(|| entry.requester.to_string(), ToString::to_string),
        grant: entry.header.grant,
        fields,
        subjects,
    };
    let mut flags = Vec::new();
    let (sensitive, subjects) = sensitive_without_consent(state, entry, grant, released);
    if subjects > 0 {
        flags.push(flag(FlagKind::SensitiveWithoutConsent, sensitive.into_iter().collect(), subjects));
    }
    let withdrawn = released_after_withdrawal(state, grant, released);
    if withdrawn > 0 {
        let fields: BTreeSet<String> =
            released.iter().flat_map(|release| release.fields.iter().cloned()).collect();
        flags.push(flag(FlagKind::ReleasedAfterWithdrawal, fields.into_iter().collect(), withdrawn));
    }
    if let (Some(grant), Some(requester)) = (grant, &requester) {
        let usable =
            |at_ms| grant.check_usable(requester, &entry.header.dataset, Some(&entry.header.purpose), at_ms);
        if usable(logged_at_ms).is_err() || usable(entry.decided_at_ms).is_err() {
            let fields: BTreeSet<String> =
                released.iter().flat_map(|release| release.fields.iter().cloned()).collect();
            flags.push(flag(
                FlagKind::OutsideGrantWindow,
                fields.into_iter().collect(),
                released.len() as u64,
            ));
        }
    }
    flags
}

/// How many subjects `released` under `grant` had their consent withdrawn
/// (on file, not given) when it was logged, if the grant needs consent.
fn released_after_withdrawal(state: &PolicyState, grant: Option<&Grant>, released: &[SubjectRelease]) -> u64 {
    let Some(grant) = grant.filter(|grant| grant.needs_consent()) else { return 0 };
    let withdrawn = |release: &&SubjectRelease| {
        let key = ConsentKey {
            subject: release.subject,
            dataset: grant.dataset.clone(),
            grantee: grant.grantee.clone(),
            purpose: grant.purpose.clone(),
        };
        state.consents.get(&key).is_some_and(|consent| !consent.given)
    };
    released.iter().filter(withdrawn).count() as u64
}

/// The sensitive fields released for subjects whose consent on file does
/// not cover sensitive fields, and how many such subjects.
fn sensitive_without_consent(
    state: &PolicyState,
    entry: &AccessLogEntry,
    grant: Option<&Grant>,
    released: &[SubjectRelease],
) -> (BTreeSet<String>, u64) {
    let Some(dataset) = state.datasets.get(&entry.header.dataset) else { return (BTreeSet::new(), 0) };
    let is_sensitive = |field: &String| dataset.is_sensitive(field);
    let consented = |release: &SubjectRelease| {
        grant.is_some_and(|grant| {
            let key = ConsentKey {
                subject: release.subject,
                dataset: grant.dataset.clone(),
                grantee: grant.grantee.clone(),
                purpose: grant.purpose.clone(),
            };
            state.consents.get(&key).is_some_and(|consent| consent.given && consent.covers_sensitive)
        })
    };
    let mut fields = BTreeSet::new();
    let mut subjects = 0;
    for release in released {
        let sensitive: Vec<&String> = release.fields.iter().filter(|field| is_sensitive(field)).collect();
        if !sensitive.is_empty() && !consented(release) {
            subjects += 1;
            fields.extend(sensitive.into_iter().cloned());
        }
    }
    (fields, subjects)
}

#[cfg(test)]
#[path = "tally_tests.rs"]
mod tests;
