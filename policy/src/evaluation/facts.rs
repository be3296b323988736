//! What the evaluation reads from the policy state, copied out of it: per
//! correction and per demand only the times the figures are made of, grouped
//! by owner and dataset and by street. Copying is one pass over the log's
//! corrections, demands and grants; the figures (every bucket against every
//! group) are then computed from the copy, without holding the state.
//!
//! Closed corrections leave the state a day after they close
//! ([`crate::state::CORRECTION_CLOSED_KEPT_MS`]); a replica's store keeps
//! them by the time they closed, and [`EvaluationFacts::add_closed`] adds
//! those a period needs: one closed before the period starts counts in none
//! of its buckets.

use std::collections::{BTreeMap, BTreeSet};

use civmesh_certs::UnixMillis;

use super::Outcome;
use crate::correction::{CorrectionId, CorrectionReasonCode, CorrectionStage, CorrectionTrack};
use crate::model::{DatasetId, DemandId};
use crate::state::PolicyState;

/// The policy state as the evaluation needs it (see [`EvaluationFacts::of`]).
#[derive(Debug, Clone, Default)]
pub struct EvaluationFacts {
    /// The first and the last event time in the log (correction stages,
    /// demands filed, grants issued); `None` for an empty log.
    pub(super) span: Option<(UnixMillis, UnixMillis)>,
    /// Each owner's and dataset's corrections and demands.
    pub(super) groups: BTreeMap<(String, DatasetId), Group>,
    /// Each street's (submitting organisation's) corrections.
    pub(super) streets: BTreeMap<String, Vec<TrackFacts>>,
    /// Each holder's deletions, as of the log's latest entry.
    pub(super) deletions: Vec<crate::audit::HolderDeletions>,
    /// The corrections copied so far, by id and the time they were
    /// submitted, so one copied from the state and also found closed in a
    /// store counts once. (Not by id alone: once a track is released, a
    /// submission may reuse its id, and both count.)
    copied: BTreeSet<(CorrectionId, Option<UnixMillis>)>,
}

/// One owner's and dataset's corrections and demands.
#[derive(Debug, Clone, Default)]
pub(super) struct Group {
    /// Its corrections.
    pub(super) tracks: Vec<TrackFacts>,
    /// The demands on its dataset.
    pub(super) demands: Vec<DemandFacts>,
}

/// One correction's times, as the evaluation counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TrackFacts {
    /// When it was submitted.
    pub(super) submitted: Option<UnixMillis>,
    /// When it was delivered to the owner.
    pub(super) delivered: Option<UnixMillis>,
    /// The first time it was accepted, rejected or found in conflict.
    pub(super) first_decided: Option<UnixMillis>,
    /// Its final outcome and when it was reached.
    pub(super) outcome: Option<(Outcome, UnixMillis)>,
    /// When the record version the owner checked it against was written.
    pub(super) record_written_at_ms: Option<UnixMillis>,
}

/// One demand's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DemandFacts {
    /// When it was filed.
    pub(super) filed_at_ms: UnixMillis,
    /// When the first grant answering it was issued.
    pub(super) granted_at_ms: Option<UnixMillis>,
}

impl EvaluationFacts {
    /// Copies what the evaluation reads from `state`: one pass over its
    /// corrections, demands and grants (datasets are only looked up), so a
    /// caller holding a lock on the state holds it only this long.
    pub fn of(state: &PolicyState) -> Self {
        let mut facts = EvaluationFacts::default();
        let mut granted_at: BTreeMap<DemandId, UnixMillis> = BTreeMap::new();
        for grant in state.grants.values() {
            facts.saw(grant.issued_at_ms);
            if let Some(demand) = grant.demand {
                let at = granted_at.entry(demand).or_insert(grant.issued_at_ms);
                *at = (*at).min(grant.issued_at_ms);
            }
        }
        for (id, track) in &state.corrections {
            facts.add_track(id, track);
        }
        for demand in state.demands.values() {
            facts.saw(demand.filed_at_ms);
            if let Some(dataset) = state.datasets.get(&demand.dataset) {
                let granted_at_ms = granted_at.get(&demand.id).copied();
                let copied = DemandFacts { filed_at_ms: demand.filed_at_ms, granted_at_ms };
                facts.group(dataset.owner.as_str(), &dataset.id).demands.push(copied);
            }
        }
        facts.deletions = crate::audit::lifecycle_report(state).holders;
        facts
    }

    /// Adds closed corrections that left the state (a store's), skipping
    /// those already copied.
    pub fn add_closed<'a>(
        &mut self,
        closed: impl IntoIterator<Item = (&'a CorrectionId, &'a CorrectionTrack)>,
    ) {
        for (id, track) in closed {
            self.add_track(id, track);
        }
    }

    /// How many corrections were copied.
    pub fn corrections_copied(&self) -> usize {
        self.copied.len()
    }

    fn add_track(&mut self, id: &CorrectionId, track: &CorrectionTrack) {
        if !self.copied.insert((*id, track.reached_at(CorrectionStage::Submitted))) {
            return;
        }
        track.stages.iter().for_each(|(_, at)| self.saw(*at));
        let copied = TrackFacts::of(track);
        self.group(track.owner.as_str(), &track.dataset).tracks.push(copied);
        match self.streets.get_mut(track.submitter_org.as_str()) {
            Some(tracks) => tracks.push(copied),
            None => {
                self.streets.insert(track.submitter_org.to_string(), vec![copied]);
            }
        }
    }

    /// Widens the span of event times to hold `at`.
    fn saw(&mut self, at: UnixMillis) {
        self.span = Some(self.span.map_or((at, at), |(first, last)| (first.min(at), last.max(at))));
    }

    /// The group of `owner` and `dataset`, made if new.
    fn group(&mut self, owner: &str, dataset: &DatasetId) -> &mut Group {
        self.groups.entry((owner.to_string(), dataset.clone())).or_default()
    }
}

impl TrackFacts {
    /// The times of `track` the evaluation counts.
    fn of(track: &CorrectionTrack) -> Self {
        let first_decided = track
            .stages
            .iter()
            .filter(|(stage, _)| {
                matches!(
                    stage,
                    CorrectionStage::Accepted | CorrectionStage::Rejected | CorrectionStage::Conflict
                )
            })
            .map(|(_, at)| *at)
            .min();
        TrackFacts {
            submitted: track.reached_at(CorrectionStage::Submitted),
            delivered: track.reached_at(CorrectionStage::Delivered),
            first_decided,
            outcome: outcome_of(track),
            record_written_at_ms: track.record_written_at_ms,
        }
    }

    /// When the correction was delivered, if at `at` it was delivered and
    /// not yet decided (accepted, rejected or in conflict).
    pub(super) fn awaiting_review_at(&self, at: UnixMillis) -> Option<UnixMillis> {
        let delivered = self.delivered.filter(|delivered| *delivered < at)?;
        let decided = self.first_decided.is_some_and(|decided| decided < at);
        (!decided).then_some(delivered)
    }
}

/// The final outcome of a correction and when it was reached.
fn outcome_of(track: &CorrectionTrack) -> Option<(Outcome, UnixMillis)> {
    let decision = track.decision()?;
    let at = track.reached_at(decision)?;
    let outcome = match decision {
        CorrectionStage::Applied => Outcome::Applied,
        CorrectionStage::Rejected
            if track.reason_code.is_some_and(CorrectionReasonCode::is_submitter_mistake) =>
        {
            Outcome::Mistake
        }
        CorrectionStage::Rejected => Outcome::RejectedByOwner,
        _ => Outcome::Conflict,
    };
    Some((outcome, at))
}
