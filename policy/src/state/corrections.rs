//! Corrections in the log: who logs which stage, in which order, and what
//! the owner may accept without review.

use std::collections::{BTreeMap, BTreeSet};

use civmesh_certs::{NodeId, OrgId, UnixMillis};
use serde::{Deserialize, Serialize};

use super::rejection::{check_text, reject, Rejection, RejectionCode};
use super::replay::COMMAND_SKEW_MS_MAX;
use super::{Applied, PolicyState};
use crate::correction::{
    AutoAcceptRule, CorrectionEvent, CorrectionId, CorrectionReasonCode, CorrectionStage, CorrectionTrack,
    CORRECTION_CHANGES_MAX, CORRECTION_TEXT_BYTES_MAX,
};
use crate::model::{DatasetId, FieldName, FieldValue, Grant, GrantId, NAME_BYTES_MAX};

/// How long a closed correction (its outcome delivered) stays in the
/// state, in ms of entry time: a retried receipt or a resent submission
/// meets it there. Then it leaves, and an event naming it is
/// `correction_unknown`.
pub const CORRECTION_CLOSED_KEPT_MS: u64 = 24 * 60 * 60 * 1000;
/// The most corrections one organisation may have open (submitted, its
/// outcome not yet delivered): one more submission is `overloaded`. A
/// street submits about 230 a day; open tracks are state, and this keeps
/// one hostile street from filling the state image.
pub const CORRECTIONS_OPEN_PER_SUBMITTER_MAX: u64 = 10_000;
/// The most closed corrections that leave the state after one command:
/// more than the one a command can close, so the kept ones never pile up.
pub const CORRECTIONS_RELEASED_PER_COMMAND_MAX: usize = 8;

/// A correction refused by [`PolicyState::check_correction`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct CorrectionRefusal {
    /// What kind of refusal.
    pub code: CorrectionReasonCode,
    /// What exactly, for people.
    pub detail: String,
}

fn refuse(code: CorrectionReasonCode, detail: impl Into<String>) -> CorrectionRefusal {
    CorrectionRefusal { code, detail: detail.into() }
}

/// A correction [`PolicyState::check_correction`] admits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionClearance {
    /// The grant that shows the submitter every changed field unmasked
    /// and has the record in scope (the lowest id, if several do).
    pub grant: GrantId,
    /// Whether an operator must review it: always when it changes a field
    /// a scope condition of the submitter's grants tests; otherwise unless
    /// an auto-accept rule covers the changed fields.
    pub review_required: bool,
}

impl PolicyState {
    /// Rejects a signer that may not log this stage. The owner's stages are
    /// logged by the organisation that owned the dataset when the
    /// correction was submitted, whoever owns the dataset the event names;
    /// the submitter logs its own submission and outcome receipt.
    pub(super) fn check_correction_logger(
        &self,
        org: &OrgId,
        signer: &NodeId,
        event: &CorrectionEvent,
    ) -> Result<(), Rejection> {
        if !event.stage.logged_by_owner() {
            if event.submitter != *signer {
                return Err(reject(
                    RejectionCode::NotAuthorised,
                    "the submitter logs its own corrections' submission and outcome receipt",
                ));
            }
            return Ok(());
        }
        match self.corrections.get(&event.correction) {
            Some(track) if track.owner != *org => Err(reject(
                RejectionCode::NotAuthorised,
                format!("{org} did not own {} when the correction was submitted", track.dataset),
            )),
            Some(_) => Ok(()),
            None => self.check_owner(org, &event.dataset),
        }
    }

    /// Checks a correction stage against the correction's track so far.
    /// A submission needs a usable grant of the submitter's organisation
    /// that shows every named field unmasked, at the entry time.
    pub(super) fn validate_correction_event(
        &self,
        event: &CorrectionEvent,
        signer_org: &OrgId,
        entry_time_ms: UnixMillis,
    ) -> Result<(), Rejection> {
        check_event_shape(event, entry_time_ms)?;
        let dataset = self
            .datasets
            .get(&event.dataset)
            .ok_or_else(|| reject(RejectionCode::DatasetUnknown, format!("no dataset {}", event.dataset)))?;
        let Some(track) = self.corrections.get(&event.correction) else {
            if event.stage != CorrectionStage::Submitted {
                return Err(reject(RejectionCode::CorrectionUnknown, "no such correction was submitted"));
            }
            if dataset.owner == *signer_org {
                return Err(reject(
                    RejectionCode::InvalidArgument,
                    "an owner changes its own records directly, not by correction",
                ));
            }
            self.check_submission_granted(event, signer_org, entry_time_ms)?;
            let open = self.corrections_open_by_submitter.get(signer_org).copied().unwrap_or(0);
            if open >= CORRECTIONS_OPEN_PER_SUBMITTER_MAX {
                return Err(reject(
                    RejectionCode::Overloaded,
                    format!("{signer_org} has {CORRECTIONS_OPEN_PER_SUBMITTER_MAX} corrections open"),
                ));
            }
            return Ok(());
        };
        if event.stage == CorrectionStage::Submitted {
            return Err(reject(RejectionCode::CorrectionDuplicate, "this correction was submitted before"));
        }
        if track.submitter != event.submitter || track.dataset != event.dataset {
            return Err(reject(
                RejectionCode::InvalidArgument,
                "the event names another submitter or dataset than the submission",
            ));
        }
        if !track.allows(event.stage) {
            return Err(reject(
                RejectionCode::CorrectionStageOutOfOrder,
                format!("{:?} cannot follow {:?}", event.stage, track.stage()),
            ));
        }
        Ok(())
    }

    /// A submitter needs a usable grant that shows every changed field unmasked.
    fn check_submission_granted(
        &self,
        event: &CorrectionEvent,
        signer_org: &OrgId,
        entry_time_ms: UnixMillis,
    ) -> Result<(), Rejection> {
        let granted = self.grants.values().any(|grant| {
            grant.check_usable(signer_org, &event.dataset, None, entry_time_ms).is_ok()
                && event.fields.iter().all(|field| grant.shows_unmasked(field))
        });
        if !granted {
            return Err(reject(
                RejectionCode::CorrectionNotGranted,
                format!("{signer_org} holds no grant on {} that shows every changed field", event.dataset),
            ));
        }
        Ok(())
    }

    /// Records a stage on the correction's track; an owner's outcome is
    /// also a leaf of the audit tree ([`Applied::CorrectionOutcomeLogged`]).
    pub(super) fn record_correction_event(
        &mut self,
        event: CorrectionEvent,
        signer_org: OrgId,
        at_ms: UnixMillis,
    ) -> Applied {
        let outcome = event.stage.is_owner_outcome();
        if event.stage == CorrectionStage::Submitted {
            self.open_track(event, signer_org, at_ms);
        } else if let Some(track) = self.corrections.get_mut(&event.correction) {
            let tally =
                self.correction_tallies.entry((track.owner.clone(), track.dataset.clone())).or_default();
            tally.remove(track);
            track.stages.push((event.stage, at_ms));
            if event.record_written_at_ms.is_some() {
                track.record_written_at_ms = event.record_written_at_ms;
            }
            match event.stage {
                CorrectionStage::Rejected => track.reason_code = event.reason_code,
                CorrectionStage::Applied => track.applied_version = event.version,
                CorrectionStage::OutcomeDelivered => {
                    self.corrections_closed.push_back((at_ms, event.correction));
                    super::count_down(&mut self.corrections_open_by_submitter, &track.submitter_org);
                }
                _ => {}
            }
            tally.add(track);
        }
        if outcome {
            Applied::CorrectionOutcomeLogged
        } else {
            Applied::Done
        }
    }

    fn open_track(&mut self, event: CorrectionEvent, submitter_org: OrgId, at_ms: UnixMillis) {
        let Some(owner) = self.datasets.get(&event.dataset).map(|dataset| dataset.owner.clone()) else {
            return;
        };
        let track = CorrectionTrack {
            dataset: event.dataset,
            owner,
            submitter_org,
            submitter: event.submitter,
            subject: event.subject,
            fields: event.fields,
            stages: vec![(CorrectionStage::Submitted, at_ms)],
            reason_code: None,
            applied_version: None,
            record_written_at_ms: None,
        };
        self.correction_tallies.entry((track.owner.clone(), track.dataset.clone())).or_default().add(&track);
        *self.corrections_open_by_submitter.entry(track.submitter_org.clone()).or_default() += 1;
        self.corrections.insert(event.correction, track);
    }

    /// Takes out the closed corrections kept [`CORRECTION_CLOSED_KEPT_MS`]
    /// at the latest entry time, oldest first, at most
    /// [`CORRECTIONS_RELEASED_PER_COMMAND_MAX`]. Runs after every command,
    /// applied or rejected. Their statistics stay in the tallies.
    pub(super) fn release_closed_corrections(&mut self) -> Vec<(CorrectionId, UnixMillis, CorrectionTrack)> {
        let mut released = Vec::new();
        while released.len() < CORRECTIONS_RELEASED_PER_COMMAND_MAX {
            let Some(&(closed_at_ms, id)) = self.corrections_closed.front() else { break };
            // Released at closed_at_ms + KEPT <= the latest entry time, as
            // integers (never, past u64::MAX).
            let due = closed_at_ms.checked_add(CORRECTION_CLOSED_KEPT_MS);
            if due.is_none_or(|due_ms| due_ms > self.last_entry_time_ms) {
                break;
            }
            self.corrections_closed.pop_front();
            let track = self.corrections.remove(&id);
            debug_assert!(track.is_some(), "a closed correction is kept until it is released");
            released.extend(track.map(|track| (id, closed_at_ms, track)));
        }
        released
    }

    pub(super) fn validate_auto_accept_rule(
        &self,
        rule: &AutoAcceptRule,
        signer_org: &OrgId,
    ) -> Result<(), Rejection> {
        if rule.fields.is_empty() {
            return Err(reject(RejectionCode::InvalidArgument, "a rule names at least one field"));
        }
        self.check_fields(&rule.dataset, rule.fields.iter())?;
        if *signer_org == rule.submitter {
            return Err(reject(RejectionCode::InvalidArgument, "an owner does not correct itself"));
        }
        Ok(())
    }

    pub(super) fn set_auto_accept_rule(&mut self, rule: AutoAcceptRule) -> Applied {
        self.auto_accept_rules.insert((rule.dataset, rule.submitter), rule.fields);
        Applied::Done
    }

    pub(super) fn validate_auto_accept_rule_removal(
        &self,
        dataset: &DatasetId,
        submitter: &OrgId,
    ) -> Result<(), Rejection> {
        if self.auto_accept_rules.contains_key(&(dataset.clone(), submitter.clone())) {
            return Ok(());
        }
        Err(reject(
            RejectionCode::AutoAcceptRuleUnknown,
            format!("no auto-accept rule for {submitter} on {dataset}"),
        ))
    }

    pub(super) fn remove_auto_accept_rule(&mut self, dataset: DatasetId, submitter: OrgId) -> Applied {
        self.auto_accept_rules.remove(&(dataset, submitter));
        Applied::Done
    }

    /// Whether an auto-accept rule covers a correction from `submitter` to
    /// `dataset` that changes exactly `fields`.
    pub fn auto_accepts(&self, dataset: &DatasetId, submitter: &OrgId, fields: &BTreeSet<FieldName>) -> bool {
        self.auto_accept_rules
            .get(&(dataset.clone(), submitter.clone()))
            .is_some_and(|allowed| fields.is_subset(allowed))
    }

    /// The owner's check of a delivered correction against the policy, all
    /// of it but the record lookup and the value types: the dataset exists;
    /// `submitter` is an active member with a current certificate whose
    /// organisation holds a grant usable at `at_ms`
    /// ([`crate::model::Grant::check_usable`], any purpose); every changed
    /// field is in the schema, is not the subject key, and one such grant
    /// shows all of them unmasked and has `current` (the record's values as
    /// they stand) in its scope.
    ///
    /// Review is required when a changed field is one that a scope condition
    /// of any of the submitter's usable grants tests (so a correction never
    /// moves a record between scopes unreviewed); otherwise auto-accept
    /// applies iff [`PolicyState::auto_accepts`] covers the changed fields.
    pub fn check_correction(
        &self,
        submitter: &NodeId,
        dataset: &str,
        current: &BTreeMap<FieldName, FieldValue>,
        changes: &BTreeMap<FieldName, FieldValue>,
        at_ms: UnixMillis,
    ) -> Result<CorrectionClearance, CorrectionRefusal> {
        use CorrectionReasonCode as Code;
        let schema = self
            .datasets
            .get(dataset)
            .ok_or_else(|| refuse(Code::DatasetUnknown, format!("no dataset {dataset}")))?;
        let org = self
            .active_member(submitter)
            .filter(|member| member.certificate_not_after_ms > at_ms)
            .map(|member| &member.org)
            .ok_or_else(|| refuse(Code::DatasetNotVisible, format!("{submitter} is not an active member")))?;
        let usable: Vec<&Grant> = self
            .grants
            .values()
            .filter(|grant| grant.check_usable(org, dataset, None, at_ms).is_ok())
            .collect();
        if usable.is_empty() {
            return Err(refuse(Code::DatasetNotVisible, format!("{org} holds no usable grant on {dataset}")));
        }
        if let Some(field) = changes.keys().find(|field| schema.field(field).is_none()) {
            return Err(refuse(Code::FieldUnknown, format!("field {field:?} is not in the schema")));
        }
        if changes.contains_key(&schema.subject_key_field) {
            return Err(refuse(Code::SubjectKeyImmutable, "the subject key cannot be corrected"));
        }
        if let Some(field) =
            changes.keys().find(|field| !usable.iter().any(|grant| grant.fields.contains(*field)))
        {
            return Err(refuse(Code::FieldNotVisible, format!("no grant lets {org} see {field:?}")));
        }
        let showing: Vec<&Grant> = usable
            .iter()
            .copied()
            .filter(|grant| changes.keys().all(|field| grant.shows_unmasked(field)))
            .collect();
        if showing.is_empty() {
            return Err(refuse(
                Code::FieldMasked,
                format!("no grant of {org} shows every changed field unmasked"),
            ));
        }
        let grant = showing
            .iter()
            .find(|grant| grant.in_scope(|field| current.get(field)))
            .ok_or_else(|| refuse(Code::RecordOutOfScope, "the record is outside the scope of the grants"))?;
        let touches_scope =
            usable.iter().flat_map(|grant| grant.scope_fields()).any(|field| changes.contains_key(field));
        let fields: BTreeSet<FieldName> = changes.keys().cloned().collect();
        let review_required = touches_scope || !self.auto_accepts(&schema.id, org, &fields);
        Ok(CorrectionClearance { grant: grant.id, review_required })
    }
}

/// Checks an event's own bounds: the payload hash, the fields, the
/// operator's name, and a record write time only on an owner's decision,
/// not after the entry time.
fn check_event_shape(event: &CorrectionEvent, entry_time_ms: UnixMillis) -> Result<(), Rejection> {
    if event.payload_sha256 != event.correction {
        return Err(reject(RejectionCode::InvalidArgument, "the payload hash is not the correction id"));
    }
    if event.fields.is_empty() || event.fields.len() > CORRECTION_CHANGES_MAX {
        return Err(reject(
            RejectionCode::InvalidArgument,
            format!("a correction changes 1..={CORRECTION_CHANGES_MAX} fields"),
        ));
    }
    for field in &event.fields {
        check_text("field", field, NAME_BYTES_MAX)?;
    }
    if event.operator.len() > CORRECTION_TEXT_BYTES_MAX {
        return Err(reject(RejectionCode::InvalidArgument, "the operator's name is too long"));
    }
    let Some(written_at_ms) = event.record_written_at_ms else { return Ok(()) };
    if !event.stage.is_owner_decision() {
        return Err(reject(
            RejectionCode::InvalidArgument,
            "only the owner's decision carries the record's write time",
        ));
    }
    // The owner wrote the version before it signed the event, whose own
    // time may be ahead of the entry time by the allowed skew.
    if written_at_ms > entry_time_ms.saturating_add(COMMAND_SKEW_MS_MAX) {
        return Err(reject(
            RejectionCode::InvalidArgument,
            format!("the record was written at {written_at_ms}, after the entry time {entry_time_ms}"),
        ));
    }
    Ok(())
}
