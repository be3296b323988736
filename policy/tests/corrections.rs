//! Correction lifecycle events in the log: who may log which stage, the
//! order of stages, and statistics every replica computes alike.

// A scripted scenario reads best in one piece: the 80-line bound is for
// non-test code.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use civmesh_certs::NodeKey;
use civmesh_policy::correction::CORRECTION_CHANGES_MAX;
use civmesh_policy::correction::{AutoAcceptRule, CorrectionEvent, CorrectionStage, CorrectionStage::*};
use civmesh_policy::correction_tally::{correction_stats, CorrectionTally};
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::state::COMMAND_SKEW_MS_MAX;
use civmesh_policy::{Command, CorrectionReasonCode, RejectionCode};
use support::*;

fn event(id: u8, submitter: &NodeKey, stage: CorrectionStage) -> Command {
    Command::RecordCorrectionEvent(CorrectionEvent {
        correction: [id; 32],
        dataset: ENTERPRISES.into(),
        subject: SubjectKeyHash([9; 32]),
        submitter: submitter.node_id(),
        stage,
        payload_sha256: [id; 32],
        fields: BTreeSet::from(["operating_address".to_string()]),
        reason_code: (stage == Rejected).then_some(CorrectionReasonCode::RecordUnknown),
        version: (stage == Applied).then_some(2),
        operator: if matches!(stage, Submitted | Accepted) { "Li Wei".into() } else { String::new() },
        record_written_at_ms: stage.is_owner_decision().then_some(WRITTEN_MS),
    })
}

/// When the owner wrote the record version the events' corrections were
/// checked against: a minute before [`NOW_MS`].
const WRITTEN_MS: u64 = NOW_MS - 60_000;

/// `command` (a correction event) with another record write time.
fn written_at(command: Command, record_written_at_ms: Option<u64>) -> Command {
    let Command::RecordCorrectionEvent(mut event) = command else { unreachable!() };
    event.record_written_at_ms = record_written_at_ms;
    Command::RecordCorrectionEvent(event)
}

/// `command` (a correction event) changing `count` fields.
fn with_fields(command: Command, count: usize) -> Command {
    let Command::RecordCorrectionEvent(mut event) = command else { unreachable!() };
    event.fields = (0..count).map(|index| format!("field_{index}")).collect();
    Command::RecordCorrectionEvent(event)
}

/// A fixture in which jingansi holds a grant showing the field the
/// corrections change (a submission needs one).
fn fixture() -> Fixture {
    let mut fx = Fixture::new();
    fx.grant(grant_spec(ENTERPRISES, &fx.jingansi.org.clone(), &["name", "operating_address"], "inspection"));
    fx
}

fn at(
    state: &mut civmesh_policy::PolicyState,
    key: &NodeKey,
    command: Command,
    offset_ms: u64,
) -> Result<(), RejectionCode> {
    let envelope = sign(key, command);
    state.apply(&envelope, NOW_MS + offset_ms).map(|_| ()).map_err(|rejection| rejection.code)
}

#[test]
fn each_stage_is_logged_by_its_party_and_in_order() {
    let mut fx = fixture();
    let (street, market, civil, other_street) =
        (&fx.jingansi.key, &fx.market.key, &fx.civil.key, &fx.nanjingxilu.key);
    type Case<'a> = (&'a str, &'a NodeKey, Command, Option<RejectionCode>);
    let invalid = Some(RejectionCode::InvalidArgument);
    let cases: Vec<Case> = vec![
        (
            "delivered before submitted",
            market,
            event(1, street, Delivered),
            Some(RejectionCode::CorrectionUnknown),
        ),
        (
            "submitted for another node",
            other_street,
            event(1, street, Submitted),
            Some(RejectionCode::NotAuthorised),
        ),
        (
            "submitted by the owner itself",
            market,
            event(1, market, Submitted),
            Some(RejectionCode::InvalidArgument),
        ),
        (
            "an operator's name over the bound",
            street,
            {
                let Command::RecordCorrectionEvent(mut long) = event(1, street, Submitted) else {
                    unreachable!()
                };
                long.operator = "x".repeat(civmesh_policy::correction::CORRECTION_TEXT_BYTES_MAX + 1);
                Command::RecordCorrectionEvent(long)
            },
            Some(RejectionCode::InvalidArgument),
        ),
        ("submitted changing no field", street, with_fields(event(1, street, Submitted), 0), invalid),
        (
            // Within the bound: refused only because no grant shows them.
            "submitted changing the bound of fields",
            street,
            with_fields(event(1, street, Submitted), CORRECTION_CHANGES_MAX),
            Some(RejectionCode::CorrectionNotGranted),
        ),
        (
            "submitted changing one field over the bound",
            street,
            with_fields(event(1, street, Submitted), CORRECTION_CHANGES_MAX + 1),
            invalid,
        ),
        ("submitted", street, event(1, street, Submitted), None),
        (
            "an operator's name at the bound",
            street,
            {
                let Command::RecordCorrectionEvent(mut long) = event(3, street, Submitted) else {
                    unreachable!()
                };
                long.operator = "x".repeat(civmesh_policy::correction::CORRECTION_TEXT_BYTES_MAX);
                Command::RecordCorrectionEvent(long)
            },
            None,
        ),
        ("submitted twice", street, event(1, street, Submitted), Some(RejectionCode::CorrectionDuplicate)),
        ("delivered by a non-owner", civil, event(1, street, Delivered), Some(RejectionCode::NotAuthorised)),
        (
            "applied before accepted",
            market,
            event(1, street, Applied),
            Some(RejectionCode::CorrectionStageOutOfOrder),
        ),
        (
            "delivered naming another submitter",
            market,
            event(1, other_street, Delivered),
            Some(RejectionCode::InvalidArgument),
        ),
        ("delivered", market, event(1, street, Delivered), None),
        (
            "delivered twice",
            market,
            event(1, street, Delivered),
            Some(RejectionCode::CorrectionStageOutOfOrder),
        ),
        (
            "a record write time on a stage that is not a decision",
            market,
            written_at(event(1, street, Delivered), Some(WRITTEN_MS)),
            Some(RejectionCode::InvalidArgument),
        ),
        (
            "a record written after the entry time (beyond the skew)",
            market,
            written_at(event(1, street, Accepted), Some(NOW_MS + COMMAND_SKEW_MS_MAX + 1)),
            Some(RejectionCode::InvalidArgument),
        ),
        (
            "accepted, the record written at the skew's edge",
            market,
            written_at(event(1, street, Accepted), Some(NOW_MS + COMMAND_SKEW_MS_MAX)),
            None,
        ),
        ("applied", market, event(1, street, Applied), None),
        (
            "outcome receipt by the owner",
            market,
            event(1, street, OutcomeDelivered),
            Some(RejectionCode::NotAuthorised),
        ),
        ("outcome receipt", street, event(1, street, OutcomeDelivered), None),
    ];
    for (name, key, command, expected) in cases {
        let before = fx.state.corrections.clone();
        let outcome = at(&mut fx.state, key, command, 0);
        assert_eq!(outcome.err(), expected, "{name}");
        if expected.is_some() {
            assert_eq!(fx.state.corrections, before, "{name}: a rejection changes nothing");
        }
    }
    let track = &fx.state.corrections[&[1; 32]];
    assert_eq!(track.stage(), OutcomeDelivered);
    assert_eq!(track.applied_version, Some(2));
    assert_eq!(track.record_written_at_ms, Some(WRITTEN_MS));
    assert_eq!(track.submitter_org.to_string(), "street/jingansi");

    let mut forged = event(2, street, Submitted);
    if let Command::RecordCorrectionEvent(event) = &mut forged {
        event.payload_sha256 = [3; 32];
    }
    assert_eq!(at(&mut fx.state, street, forged, 0).err(), Some(RejectionCode::InvalidArgument));
}

#[test]
fn auto_accept_rules_are_the_owners_and_cover_field_subsets() {
    let mut fx = Fixture::new();
    let street_org = fx.jingansi.org.clone();
    let rule = |fields: &[&str]| {
        Command::SetAutoAcceptRule(AutoAcceptRule {
            dataset: ENTERPRISES.into(),
            submitter: street_org.clone(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
        })
    };
    let (street, market) = (&fx.jingansi.key, &fx.market.key);
    assert_eq!(
        at(&mut fx.state, street, rule(&["operating_address"]), 0).err(),
        Some(RejectionCode::NotAuthorised)
    );
    assert_eq!(at(&mut fx.state, market, rule(&["colour"]), 0).err(), Some(RejectionCode::FieldUnknown));
    at(&mut fx.state, market, rule(&["operating_address", "name"]), 0).unwrap();
    let fields = |names: &[&str]| names.iter().map(|f| f.to_string()).collect::<BTreeSet<_>>();
    assert!(fx.state.auto_accepts(&ENTERPRISES.to_string(), &street_org, &fields(&["operating_address"])));
    assert!(!fx.state.auto_accepts(&ENTERPRISES.to_string(), &street_org, &fields(&["legal_rep_phone"])));
    assert!(!fx.state.auto_accepts(&ENTERPRISES.to_string(), &fx.nanjingxilu.org, &fields(&["name"])));
    let remove = Command::RemoveAutoAcceptRule { dataset: ENTERPRISES.into(), submitter: street_org.clone() };
    at(&mut fx.state, market, remove.clone(), 0).unwrap();
    assert_eq!(at(&mut fx.state, market, remove, 0).err(), Some(RejectionCode::AutoAcceptRuleUnknown));
    assert!(!fx.state.auto_accepts(&ENTERPRISES.to_string(), &street_org, &fields(&["name"])));
}

#[test]
fn statistics_come_from_the_log_alone() {
    let mut fx = fixture();
    let (street, market) = (&fx.jingansi.key, &fx.market.key);
    // Three applied after 100, 200 and 300 ms; one rejected; one pending.
    // Entry times only move forward: each correction starts a second later.
    for (id, turnaround_ms) in [(1u8, 100u64), (2, 200), (3, 300)] {
        let start = u64::from(id) * 1_000;
        at(&mut fx.state, street, event(id, street, Submitted), start).unwrap();
        at(&mut fx.state, market, event(id, street, Delivered), start + 10).unwrap();
        at(&mut fx.state, market, event(id, street, Accepted), start + 20).unwrap();
        at(&mut fx.state, market, event(id, street, Applied), start + turnaround_ms).unwrap();
    }
    at(&mut fx.state, street, event(4, street, Submitted), 4_000).unwrap();
    at(&mut fx.state, market, event(4, street, Delivered), 4_010).unwrap();
    at(&mut fx.state, market, event(4, street, Rejected), 4_020).unwrap();
    at(&mut fx.state, street, event(5, street, Submitted), 5_000).unwrap();
    // The statistics kept at each event are the ones the tracks give when
    // counted afresh.
    let mut recounted = std::collections::BTreeMap::new();
    for track in fx.state.corrections.values() {
        let group = (track.owner.clone(), track.dataset.clone());
        recounted.entry(group).or_insert_with(CorrectionTally::default).add(track);
    }
    assert_eq!(fx.state.correction_tallies, recounted);
    let stats = correction_stats(&fx.state.correction_tallies);
    assert_eq!(stats.len(), 1);
    let row = &stats[0];
    assert_eq!((row.owner.as_str(), row.dataset.as_str()), ("dept/market-supervision", ENTERPRISES));
    assert_eq!(row.by_stage.get(&Applied), Some(&3));
    assert_eq!(row.by_stage.get(&Rejected), Some(&1));
    assert_eq!(row.by_stage.get(&Submitted), Some(&1));
    // Exactly 200 and 300 ms, each rounded up to its histogram bucket.
    assert_eq!((row.turnaround_ms_p50, row.turnaround_ms_p90), (Some(207), Some(319)));
    assert_eq!(row.acceptance_rate, Some(0.75));
    assert_eq!(
        fx.state.corrections[&[4; 32]].reason_code.map(CorrectionReasonCode::as_str),
        Some("record_unknown")
    );
}

/// A closed correction (its outcome delivered) stays in the state a day:
/// a retried receipt or a resent submission meets it there. The first
/// command a day after it closed, even a rejected one, hands it over for
/// the store to keep, with its statistics kept; an event naming it is then
/// `correction_unknown`. The evaluation from the state and what was handed
/// over is the evaluation from before.
#[test]
fn a_closed_correction_leaves_the_state_a_day_after_it_closed() {
    use civmesh_policy::evaluation::{evaluate, EvaluationFacts, EvaluationQuery};
    use civmesh_policy::state::CORRECTION_CLOSED_KEPT_MS;
    let mut fx = fixture();
    let (street, market) = (&fx.jingansi.key, &fx.market.key);
    let state = &mut fx.state;
    let lifecycle = [(street, Submitted), (market, Delivered), (market, Accepted), (market, Applied)];
    for (offset, (key, stage)) in (0..).zip(lifecycle.into_iter().chain([(street, OutcomeDelivered)])) {
        at(state, key, event(1, street, stage), offset).unwrap();
    }
    at(state, street, event(2, street, Submitted), 5).unwrap();
    let closed_at_ms = NOW_MS + 4;
    let last_kept_ms = closed_at_ms + CORRECTION_CLOSED_KEPT_MS - 1 - NOW_MS;
    // Commands signed a day later are signed at their own time.
    let later = |key: &NodeKey, command: Command, offset_ms: u64| {
        civmesh_certs::SignedEnvelope::sign(key, &command, NOW_MS + offset_ms).unwrap()
    };
    let kept = [
        (Submitted, RejectionCode::CorrectionDuplicate),
        (OutcomeDelivered, RejectionCode::CorrectionStageOutOfOrder),
    ];
    for (stage, code) in kept {
        let outcome =
            state.apply(&later(street, event(1, street, stage), last_kept_ms), NOW_MS + last_kept_ms);
        assert_eq!(outcome.map_err(|rejection| rejection.code), Err(code), "{stage:?} within the day");
    }
    assert!(state.corrections.contains_key(&[1; 32]));
    let query = EvaluationQuery {
        from_ms: Some(NOW_MS - 1),
        to_ms: Some(NOW_MS + 2 * CORRECTION_CLOSED_KEPT_MS),
        ..EvaluationQuery::default()
    };
    let evaluation_before = evaluate(state, &query).unwrap();
    let stats_before = correction_stats(&state.correction_tallies);

    let unknown = event(3, street, Delivered);
    let (outcome, appended) = state
        .apply_appending(&later(market, unknown, last_kept_ms + 1), closed_at_ms + CORRECTION_CLOSED_KEPT_MS);
    assert!(outcome.is_err(), "a rejected command releases them too");
    let [(id, released_at_ms, track)] = appended.closed_corrections.as_slice() else {
        panic!("released {:?}", appended.closed_corrections)
    };
    assert_eq!((*id, *released_at_ms, track.stage()), ([1; 32], closed_at_ms, OutcomeDelivered));
    assert!(!state.corrections.contains_key(&[1; 32]) && state.corrections.contains_key(&[2; 32]));
    assert!(state.corrections_closed.is_empty());
    assert_eq!(correction_stats(&state.correction_tallies), stats_before, "statistics are kept");

    let mut facts = EvaluationFacts::of(state);
    facts.add_closed(appended.closed_corrections.iter().map(|(id, _, track)| (id, track)));
    facts.add_closed([(&[2u8; 32], &state.corrections[&[2; 32]])]);
    assert_eq!(facts.corrections_copied(), 2, "one copied from the state and found closed counts once");
    assert_eq!(facts.evaluate(&query).unwrap(), evaluation_before);
    assert_ne!(evaluate(state, &query).unwrap(), evaluation_before, "the state alone no longer counts it");

    let receipt = later(street, event(1, street, OutcomeDelivered), last_kept_ms + 2);
    let outcome = state.apply(&receipt, closed_at_ms + CORRECTION_CLOSED_KEPT_MS + 1);
    assert_eq!(outcome.map_err(|rejection| rejection.code), Err(RejectionCode::CorrectionUnknown));

    // A submission reusing the released id opens a new track; the released
    // one still counts beside it.
    let reused = later(street, event(1, street, Submitted), last_kept_ms + 3);
    state.apply(&reused, closed_at_ms + CORRECTION_CLOSED_KEPT_MS + 2).unwrap();
    let mut facts = EvaluationFacts::of(state);
    facts.add_closed(appended.closed_corrections.iter().map(|(id, _, track)| (id, track)));
    assert_eq!(facts.corrections_copied(), 3, "the released track and the new one under its id");
}

/// One organisation has at most `CORRECTIONS_OPEN_PER_SUBMITTER_MAX`
/// corrections open: one more submission is `overloaded`, another street is
/// not held back, and a correction whose outcome is delivered makes room.
#[test]
fn a_street_has_a_bounded_number_of_corrections_open() {
    use civmesh_policy::state::CORRECTIONS_OPEN_PER_SUBMITTER_MAX;
    let mut fx = fixture();
    fx.grant(grant_spec(ENTERPRISES, &fx.nanjingxilu.org.clone(), &["operating_address"], "inspection"));
    let (street, other_street, market) = (&fx.jingansi.key, &fx.nanjingxilu.key, &fx.market.key);
    let state = &mut fx.state;
    let numbered = |number: u64, key: &NodeKey, stage| {
        let Command::RecordCorrectionEvent(mut event) = event(0, key, stage) else { unreachable!() };
        let id = civmesh_certs::codec::sha256(&number.to_be_bytes());
        (event.correction, event.payload_sha256) = (id, id);
        Command::RecordCorrectionEvent(event)
    };
    for number in 0..CORRECTIONS_OPEN_PER_SUBMITTER_MAX {
        at(state, street, numbered(number, street, Submitted), 0).unwrap();
    }
    let open = |state: &civmesh_policy::PolicyState, org: &civmesh_certs::OrgId| {
        state.corrections_open_by_submitter.get(org).copied()
    };
    assert_eq!(open(state, &fx.jingansi.org), Some(CORRECTIONS_OPEN_PER_SUBMITTER_MAX));
    let one_more = numbered(CORRECTIONS_OPEN_PER_SUBMITTER_MAX, street, Submitted);
    assert_eq!(at(state, street, one_more.clone(), 1), Err(RejectionCode::Overloaded));
    at(state, other_street, numbered(u64::MAX, other_street, Submitted), 1).unwrap();
    // Correction 0 runs its course; its receipt closes it and makes room.
    for (key, stage) in
        [(market, Delivered), (market, Accepted), (market, Applied), (street, OutcomeDelivered)]
    {
        at(state, key, numbered(0, street, stage), 2).unwrap();
    }
    assert_eq!(open(state, &fx.jingansi.org), Some(CORRECTIONS_OPEN_PER_SUBMITTER_MAX - 1));
    at(state, street, one_more, 3).unwrap();
    assert_eq!(open(state, &fx.nanjingxilu.org), Some(1));
}
