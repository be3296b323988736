//! The evaluation against a hand-computed week.

use super::calendar::next_bucket_start;
use super::*;
use crate::correction::{CorrectionStage, CorrectionTrack};
use crate::model::{Dataset, Demand, DemandId, Grant, LegalBasis, SharingCategory, SubjectKeyHash};
use civmesh_certs::{NodeId, OrgId};
use std::collections::{BTreeMap, BTreeSet};
use CorrectionStage::*;

const HOUR_MS: u64 = 60 * 60 * 1000;
/// Monday 2026-11-30 00:00 in Asia/Shanghai.
const MONDAY_MS: u64 = 1_795_968_000_000;
const OWNER: &str = "dept/market-supervision";
const DATASET: &str = "market-supervision/enterprise-registry";

fn at(day: u64, hour: u64) -> UnixMillis {
    MONDAY_MS + day * 24 * HOUR_MS + hour * HOUR_MS
}

fn track(street: &str, stages: &[(CorrectionStage, UnixMillis)], reason_code: &str) -> CorrectionTrack {
    CorrectionTrack {
        dataset: DATASET.into(),
        owner: OrgId::new(OWNER).unwrap(),
        submitter_org: OrgId::new(street).unwrap(),
        submitter: NodeId([1; 32]),
        subject: SubjectKeyHash([0; 32]),
        fields: BTreeSet::new(),
        stages: stages.to_vec(),
        reason_code: (!reason_code.is_empty()).then(|| reason_code.parse().unwrap()),
        applied_version: None,
        record_written_at_ms: None,
    }
}

/// The scripted week: nine corrections, three demands (Mon = day 0).
pub(super) fn scripted_week() -> PolicyState {
    let (jingansi, nanjingxilu) = ("street/jingansi", "street/nanjingxilu");
    let tracks = [
        // c1: applied after 2 h.
        track(
            jingansi,
            &[(Submitted, at(0, 9)), (Delivered, at(0, 9)), (Accepted, at(0, 11)), (Applied, at(0, 11))],
            "",
        ),
        // c2: rejected by the reviewer after 24 h.
        track(
            jingansi,
            &[(Submitted, at(0, 10)), (Delivered, at(0, 10)), (Rejected, at(1, 10))],
            "rejected_by_reviewer",
        ),
        // c3: the street's own mistake, rejected at once.
        track(
            nanjingxilu,
            &[(Submitted, at(1, 9)), (Delivered, at(1, 9)), (Rejected, at(1, 9))],
            "field_unknown",
        ),
        // c4: applied after 48 h.
        track(
            nanjingxilu,
            &[(Submitted, at(1, 14)), (Delivered, at(1, 14)), (Accepted, at(3, 14)), (Applied, at(3, 14))],
            "",
        ),
        // c5: the street's own mistake.
        track(jingansi, &[(Submitted, at(2, 8)), (Delivered, at(2, 8)), (Rejected, at(2, 8))], "wrong_type"),
        // c6: a conflict.
        track(jingansi, &[(Submitted, at(3, 9)), (Delivered, at(3, 9)), (Conflict, at(3, 12))], ""),
        // c7: applied after 6 h, outcome delivered later.
        track(
            nanjingxilu,
            &[
                (Submitted, at(4, 9)),
                (Delivered, at(4, 9)),
                (Accepted, at(4, 15)),
                (Applied, at(4, 15)),
                (OutcomeDelivered, at(4, 16)),
            ],
            "",
        ),
        // c8: awaiting review since Saturday 10:00.
        track(jingansi, &[(Submitted, at(5, 10)), (Delivered, at(5, 10))], ""),
        // c9: submitted Sunday night, not delivered yet.
        track(nanjingxilu, &[(Submitted, at(6, 20))], ""),
    ];
    let mut state = PolicyState::default();
    for (index, track) in tracks.into_iter().enumerate() {
        state.corrections.insert([index as u8 + 1; 32], track);
    }
    state.datasets.insert(
        DATASET.into(),
        Dataset {
            id: DATASET.into(),
            owner: OrgId::new(OWNER).unwrap(),
            title: "Enterprises".into(),
            subject_key_field: "credit_code".into(),
            sharing: SharingCategory::Conditional,
            fields: Vec::new(),
            scope_fields: Vec::new(),
            version: 1,
        },
    );
    let demand = |id: DemandId, filed_at_ms| Demand {
        id,
        requester: OrgId::new("street/jingansi").unwrap(),
        dataset: DATASET.into(),
        fields: BTreeSet::new(),
        purpose: "street-inspection".into(),
        legal_basis: LegalBasis::StatutoryDuty,
        filed_at_ms,
        reason: None,
        until_ms: None,
        refused: None,
    };
    let grant = |id, demand, issued_at_ms| Grant {
        id,
        dataset: DATASET.into(),
        grantor: OrgId::new(OWNER).unwrap(),
        grantee: OrgId::new("street/jingansi").unwrap(),
        fields: BTreeSet::new(),
        purpose: "street-inspection".into(),
        legal_basis: LegalBasis::StatutoryDuty,
        scope: Vec::new(),
        valid_from_ms: 0,
        valid_until_ms: u64::MAX,
        masking: BTreeMap::new(),
        consent_required: false,
        demand: Some(demand),
        issued_at_ms,
        revoked: None,
        retention: None,
        assessment: None,
    };
    // d1 granted after 24 h; d2 never; d3 granted after 6 h (and again later).
    for (id, filed) in [(1, at(0, 8)), (2, at(2, 12)), (3, at(3, 0))] {
        state.demands.insert(id, demand(id, filed));
    }
    for (id, demand, issued) in [(1, 1, at(1, 8)), (2, 3, at(3, 6)), (3, 3, at(4, 0))] {
        state.grants.insert(id, grant(id, demand, issued));
    }
    state
}

fn week_query(bucket: &str) -> EvaluationQuery {
    EvaluationQuery::from_dates(Some("2026-11-30"), Some("2026-12-06"), Some(bucket)).unwrap()
}

#[test]
fn the_scripted_week_equals_the_hand_computed_figures() {
    let evaluation = evaluate(&scripted_week(), &week_query("week")).unwrap();
    assert_eq!(evaluation.from, "2026-11-30T00:00:00+08:00");
    assert_eq!(evaluation.to, "2026-12-07T00:00:00+08:00");
    let expected = DepartmentRow {
        bucket: "2026-11-30".into(),
        owner: OWNER.into(),
        dataset: DATASET.into(),
        submitted: 9,
        applied: 3,
        rejected_by_owner: 1,
        // 3 of 4: the two automatic rejections do not count against the owner.
        acceptance_rate: Some(0.75),
        // Turnarounds 2, 6, 24, 48 h: nearest-rank p50 is the 2nd, p90 the 4th.
        turnaround_ms_p50: Some(6 * HOUR_MS),
        turnaround_ms_p90: Some(48 * HOUR_MS),
        automatic_rejections: 2,
        conflicts: 1,
        // c8, delivered Saturday 10:00, measured at Monday 00:00.
        backlog: 1,
        backlog_oldest_age_ms: Some(38 * HOUR_MS),
        // d1 after 24 h, d3 after 6 h (its first grant).
        demands_granted: 2,
        demand_to_grant_ms_p50: Some(6 * HOUR_MS),
        demand_to_grant_ms_p90: Some(24 * HOUR_MS),
        // d2, filed Wednesday 12:00.
        demands_waiting: 1,
        demands_waiting_oldest_age_ms: Some(108 * HOUR_MS),
        // No decision in this log carries a record write time.
        record_age_ms_p50: None,
        record_age_ms_p90: None,
    };
    assert_eq!(evaluation.departments, vec![expected]);
    let street = |street: &str, submitted, share_accepted, applied, mistakes| StreetRow {
        bucket: "2026-11-30".into(),
        street: street.into(),
        submitted,
        share_accepted,
        applied,
        mistakes,
    };
    assert_eq!(
        evaluation.streets,
        vec![
            // c1 applied, c2 rejected, c5 a mistake (c6's conflict is neither).
            street("street/jingansi", 5, Some(1.0 / 3.0), 1, 1),
            // c4, c7 applied, c3 a mistake.
            street("street/nanjingxilu", 4, Some(2.0 / 3.0), 2, 1),
        ]
    );
    assert!(evaluation.notes.is_empty(), "{:?}", evaluation.notes);
}

#[test]
fn data_freshness_is_the_age_of_the_records_at_the_decision() {
    // The scripted week, with the write time of the record version the
    // owner checked each decided correction against (c5's is unknown).
    let mut state = scripted_week();
    let written = [
        // c1, applied Mon 11:00, on a record written 10 days before: 240 h.
        (1, at(0, 11) - 240 * HOUR_MS),
        // c2, rejected Tue 10:00, record written Mon 10:00: 24 h.
        (2, at(0, 10)),
        // c3, the street's mistake Tue 09:00, record written Tue 08:00: 1 h.
        (3, at(1, 8)),
        // c4, applied Thu 14:00, record written Mon 14:00: 72 h.
        (4, at(0, 14)),
        // c6, a conflict Thu 12:00 with an import written Thu 11:00: 1 h.
        (6, at(3, 11)),
        // c7, applied Fri 15:00, record written 30 days before: 720 h.
        (7, at(4, 15) - 720 * HOUR_MS),
    ];
    for (correction, written_at_ms) in written {
        let track = state.corrections.get_mut(&[correction; 32]).unwrap();
        track.record_written_at_ms = Some(written_at_ms);
    }
    let ages = |evaluation: &Evaluation| -> Vec<(Option<u64>, Option<u64>)> {
        evaluation.departments.iter().map(|row| (row.record_age_ms_p50, row.record_age_ms_p90)).collect()
    };
    // The week: ages 1, 1, 24, 72, 240, 720 h; nearest rank p50 is the
    // 3rd, p90 the 6th.
    let week = evaluate(&state, &week_query("week")).unwrap();
    assert_eq!(ages(&week), [(Some(24 * HOUR_MS), Some(720 * HOUR_MS))]);
    // Each day its own decisions: Mon c1; Tue c3, c2 (1 h, 24 h); Wed c5
    // (no write time); Thu c6, c4 (1 h, 72 h); Fri c7; none at the weekend.
    let days = evaluate(&state, &week_query("day")).unwrap();
    assert_eq!(
        ages(&days),
        [
            (Some(240 * HOUR_MS), Some(240 * HOUR_MS)),
            (Some(HOUR_MS), Some(24 * HOUR_MS)),
            (None, None),
            (Some(HOUR_MS), Some(72 * HOUR_MS)),
            (Some(720 * HOUR_MS), Some(720 * HOUR_MS)),
            (None, None),
            (None, None),
        ]
    );
}

#[test]
fn daily_buckets_measure_backlog_at_each_day_end() {
    let evaluation = evaluate(&scripted_week(), &week_query("day")).unwrap();
    let days: Vec<&str> = evaluation.departments.iter().map(|row| row.bucket.as_str()).collect();
    assert_eq!(
        days,
        ["2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04", "2026-12-05", "2026-12-06"]
    );
    let monday = &evaluation.departments[0];
    assert_eq!((monday.submitted, monday.applied, monday.acceptance_rate), (2, 1, Some(1.0)));
    assert_eq!((monday.turnaround_ms_p50, monday.turnaround_ms_p90), (Some(2 * HOUR_MS), Some(2 * HOUR_MS)));
    // c2 delivered Monday 10:00; d1 filed Monday 08:00.
    assert_eq!((monday.backlog, monday.backlog_oldest_age_ms), (1, Some(14 * HOUR_MS)));
    assert_eq!((monday.demands_waiting, monday.demands_waiting_oldest_age_ms), (1, Some(16 * HOUR_MS)));
    let tuesday = &evaluation.departments[1];
    assert_eq!(
        (tuesday.submitted, tuesday.rejected_by_owner, tuesday.automatic_rejections, tuesday.acceptance_rate),
        (2, 1, 1, Some(0.0))
    );
    assert_eq!(tuesday.turnaround_ms_p50, Some(24 * HOUR_MS));
    assert_eq!((tuesday.backlog, tuesday.backlog_oldest_age_ms), (1, Some(10 * HOUR_MS)));
    assert_eq!((tuesday.demands_granted, tuesday.demand_to_grant_ms_p50), (1, Some(24 * HOUR_MS)));
    assert_eq!(tuesday.demands_waiting, 0);
    // d2 waits from Wednesday noon; d3, filed at Thursday 00:00, is
    // Thursday's and granted by 06:00.
    let (wednesday, thursday) = (&evaluation.departments[2], &evaluation.departments[3]);
    assert_eq!((wednesday.demands_waiting, wednesday.demands_waiting_oldest_age_ms), (1, Some(12 * HOUR_MS)));
    assert_eq!((thursday.demands_waiting, thursday.demands_granted), (1, 1));
    let saturday = &evaluation.departments[5];
    assert_eq!((saturday.acceptance_rate, saturday.turnaround_ms_p50), (None, None));
    assert_eq!((saturday.backlog, saturday.backlog_oldest_age_ms), (1, Some(14 * HOUR_MS)));
}

#[test]
fn months_split_the_week_and_defaults_follow_the_log() {
    let months = evaluate(&scripted_week(), &week_query("month")).unwrap();
    let buckets: Vec<(&str, u64)> =
        months.departments.iter().map(|row| (row.bucket.as_str(), row.submitted)).collect();
    assert_eq!(buckets, [("2026-11-30", 2), ("2026-12-01", 7)]);
    // No period: from the first event (d1 filed Monday 08:00) to just after the last.
    let all = evaluate(&scripted_week(), &EvaluationQuery::default()).unwrap();
    assert_eq!(all.from, "2026-11-30T08:00:00+08:00");
    assert_eq!(all.to, "2026-12-06T20:00:00+08:00");
    assert_eq!(all.departments.len(), 7);
    assert_eq!(all.departments.iter().map(|row| row.submitted).sum::<u64>(), 9);
    // An empty log evaluates to nothing.
    let empty = evaluate(&PolicyState::default(), &EvaluationQuery::default()).unwrap();
    assert!(empty.departments.is_empty() && empty.streets.is_empty());
}

#[test]
fn bad_queries_are_typed_errors_naming_the_value() {
    assert_eq!(
        EvaluationQuery::from_dates(None, None, Some("fortnight")),
        Err(EvaluationError::BucketUnknown("fortnight".into()))
    );
    for bad in ["2026-13-01", "2026-02-30", "26-11-30", "2026-11-30T00:00", "", "1969-12-31"] {
        assert_eq!(
            EvaluationQuery::from_dates(Some(bad), None, None),
            Err(EvaluationError::DateInvalid(bad.into())),
            "{bad}"
        );
    }
    assert!(matches!(
        EvaluationQuery::from_dates(Some("2026-12-02"), Some("2026-12-01"), None),
        Err(EvaluationError::RangeEmpty { .. })
    ));
    let decade = EvaluationQuery::from_dates(Some("2020-01-01"), Some("2029-12-31"), Some("day")).unwrap();
    // 3,653 days: the error counts them all, not only the bound's worth.
    assert_eq!(evaluate(&scripted_week(), &decade), Err(EvaluationError::TooManyBuckets(3_653)));
}

#[test]
fn dates_round_trip_in_shanghai() {
    assert_eq!(parse_date("2026-11-30"), Ok(MONDAY_MS));
    assert_eq!(format_date(MONDAY_MS), "2026-11-30");
    assert_eq!(format_date(MONDAY_MS - 1), "2026-11-29");
    assert_eq!(format_time(MONDAY_MS + 9 * HOUR_MS + 61_000), "2026-11-30T09:01:01+08:00");
    assert_eq!(parse_date("2024-02-29").map(format_date), Ok("2024-02-29".to_string()));
    assert_eq!(next_bucket_start(MONDAY_MS + 3 * 24 * HOUR_MS, Bucket::Week), MONDAY_MS + 7 * 24 * HOUR_MS);
    assert_eq!(
        next_bucket_start(parse_date("2026-12-31").unwrap(), Bucket::Month),
        parse_date("2027-01-01").unwrap()
    );
}

#[test]
fn an_end_date_includes_its_day_and_shows_as_that_day() {
    let end_ms = parse_date_end("2026-11-30").unwrap();
    assert_eq!(end_ms, MONDAY_MS + 24 * HOUR_MS);
    assert_eq!(format_date_end(end_ms), "2026-11-30");
    assert!(matches!(parse_date_end("2026-02-30"), Err(EvaluationError::DateInvalid(_))));
    assert!(matches!(parse_date_end("30.11.2026"), Err(EvaluationError::DateInvalid(_))));
}

#[test]
fn an_event_at_midnight_belongs_to_the_day_it_starts() {
    let mut state = PolicyState::default();
    let midnight = at(1, 0);
    let submitted = track("street/jingansi", &[(Submitted, midnight), (Delivered, midnight)], "");
    let decided = track(
        "street/jingansi",
        &[(Submitted, at(0, 10)), (Delivered, at(0, 10)), (Rejected, midnight)],
        "rejected_by_reviewer",
    );
    state.corrections.insert([1; 32], submitted);
    state.corrections.insert([2; 32], decided);
    let days = evaluate(&state, &week_query("day")).unwrap();
    let figures = |row: &DepartmentRow| (row.submitted, row.rejected_by_owner, row.backlog);
    let monday_to_wednesday: Vec<_> = days.departments.iter().map(figures).take(3).collect();
    // Monday ends with the second still waiting and the first not yet
    // delivered; Tuesday starts with both.
    assert_eq!(monday_to_wednesday, [(1, 0, 1), (1, 1, 1), (0, 0, 1)]);
}

#[test]
fn a_period_after_the_log_or_of_no_length_is_empty() {
    let state = scripted_week();
    let after_the_log = EvaluationQuery { from_ms: Some(at(9, 0)), to_ms: None, bucket: Bucket::Day };
    assert!(matches!(evaluate(&state, &after_the_log), Err(EvaluationError::RangeEmpty { .. })));
    let no_length = EvaluationQuery { from_ms: Some(at(1, 0)), to_ms: Some(at(1, 0)), bucket: Bucket::Day };
    assert!(matches!(evaluate(&state, &no_length), Err(EvaluationError::RangeEmpty { .. })));
    // From a time inside the log, the end defaults to just after its last event.
    let from_tuesday = EvaluationQuery { from_ms: Some(at(1, 0)), to_ms: None, bucket: Bucket::Day };
    assert_eq!(evaluate(&state, &from_tuesday).unwrap().to, "2026-12-06T20:00:00+08:00");
}
