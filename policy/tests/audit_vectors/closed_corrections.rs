//! The closed-corrections vectors: a correction closed (its outcome
//! delivered) stays in the state a day, then leaves it after the first
//! command a day later (Appendix B 2.6), and an event naming it is then
//! `correction_unknown`, no longer `correction_stage_out_of_order`. A leaf
//! after it binds the difference: the checkpoint's root covers the applied
//! digest, which chains each rejection's code.

use std::collections::BTreeSet;

use civmesh_policy::correction::{CorrectionEvent, CorrectionStage};
use civmesh_policy::model::SubjectKeyHash;

use super::*;

/// A day after [`NOW_MS`]: the correction closed at `NOW_MS` is released
/// after the first command at this entry time.
const DAY_LATER_MS: u64 = NOW_MS + civmesh_policy::state::CORRECTION_CLOSED_KEPT_MS;

// Where some commands are in the closed-corrections bundle (`09`).
/// The receipt retried after the correction was released.
const RECEIPT_UNKNOWN: u64 = 23;
/// The cosignature that makes the checkpoint over leaf 10 final.
const FINAL_COSIGNATURE: u64 = 27;

/// An event of correction `id` from the street (jingansi) to the market's
/// enterprise registry.
fn event(fx: &Fixture, id: u8, stage: CorrectionStage) -> Command {
    use CorrectionStage::*;
    Command::RecordCorrectionEvent(CorrectionEvent {
        correction: [id; 32],
        dataset: ENTERPRISES.into(),
        subject: SubjectKeyHash([id; 32]),
        submitter: fx.jingansi.key.node_id(),
        stage,
        payload_sha256: [id; 32],
        fields: BTreeSet::from(["operating_address".to_string()]),
        reason_code: None,
        version: (stage == Applied).then_some(2),
        operator: if matches!(stage, Submitted | Accepted) { "Li Wei".into() } else { String::new() },
        record_written_at_ms: stage.is_owner_decision().then_some(NOW_MS - 60_000),
    })
}

/// Commands 16 to 23: correction 1 submitted, delivered, accepted, applied
/// (leaf 9) and its outcome delivered, all at `NOW_MS`; its receipt
/// retried 1 ms before a day later (out of order: it is kept), at a day
/// later (out of order: it is released only after this command), and
/// again at a day later (unknown: released).
fn lifecycle(fx: &Fixture) -> Vec<Step<'_>> {
    use CorrectionStage::*;
    use RejectionCode::*;
    let (street, market) = (&fx.jingansi.key, &fx.market.key);
    let now = |key, stage| Step { key, at_ms: NOW_MS, command: event(fx, 1, stage), refused: None };
    let receipt =
        |at_ms, refused| Step { key: street, at_ms, command: event(fx, 1, OutcomeDelivered), refused };
    vec![
        now(street, Submitted),
        now(market, Delivered),
        now(market, Accepted),
        now(market, Applied),
        now(street, OutcomeDelivered),
        receipt(DAY_LATER_MS - 1, Some(CorrectionStageOutOfOrder)),
        receipt(DAY_LATER_MS, Some(CorrectionStageOutOfOrder)),
        receipt(DAY_LATER_MS, Some(CorrectionUnknown)),
    ]
}

/// `log`, the lifecycle (16 to 23), an access a day later (24, leaf 10)
/// and a final checkpoint over it (25 to 27).
fn with_closed_correction(fx: &Fixture, log: &RecordedLog) -> RecordedLog {
    let mut more = continued(log, lifecycle(fx));
    assert_eq!(more.commands.len() as u64, RECEIPT_UNKNOWN);
    assert!(!more.state.corrections.contains_key(&[1; 32]), "released");
    let submission = (&fx.jingansi.key, event(fx, 2, CorrectionStage::Submitted));
    let step = Step { key: submission.0, at_ms: DAY_LATER_MS, command: submission.1, refused: None };
    let envelope = civmesh_certs::SignedEnvelope::sign(step.key, &step.command, step.at_ms).unwrap();
    assert!(more.record_envelope_at(&envelope, step.at_ms));
    let last = (&fx.market.key, access_at(&fx.jingansi.key, 9, Some(1), true, DAY_LATER_MS));
    close_with_checkpoint(
        &mut more,
        DAY_LATER_MS,
        last,
        [&fx.hub.key, &fx.civil.key],
        (10, FINAL_COSIGNATURE),
    );
    more
}

/// The closed-corrections bundle, and a copy that says the receipt after
/// the release was accepted.
pub(super) fn closed_correction_vectors(fx: &Fixture, log: &RecordedLog) -> Vec<Made> {
    let closed = with_closed_correction(fx, log);
    let summary = Summary {
        commands: FINAL_COSIGNATURE,
        access_entries: 9,
        leaves: 10,
        permits: 7,
        checkpoints: 3,
        anchored_leaves: 10,
        root: hex_root(&closed, 10),
        ..genuine_summary(log)
    };
    vec![
        made(
            "09-closed-corrections.bundle",
            "00, then correction 1 submitted, delivered, accepted, applied (leaf 9) and its outcome \
             delivered (16 to 20, closed); its receipt retried 1 ms before a day later (21: out of order, \
             kept), a day later (22: out of order, released after it) and again (23: unknown); a day \
             later, correction 2 submitted (24), an access (25, leaf 10) and a final checkpoint at 10",
            encoded(&closed, closed.commands.clone()),
            Expect::Verified(summary),
        ),
        made(
            "59-released-receipt-marked-accepted.bundle",
            "09 with command 23, the receipt of a released correction, marked accepted",
            tampered(&closed, &|c| c[index(RECEIPT_UNKNOWN)].accepted = true),
            failed(FailureKind::ReplayRejected, Some(RECEIPT_UNKNOWN), None, None),
        ),
    ]
}
