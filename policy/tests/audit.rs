//! The auditor's verification: an untampered bundle verifies; tampering with
//! any entry, signature or checkpoint, dropping or reordering entries, a
//! permit the policy did not allow, a rewritten history, another CA and a
//! damaged file are each caught and pinpointed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use civmesh_policy::audit::{
    decode_bundle, encode_bundle, verify_bundle, verify_bundle_for_subject, ArchivedCommand, AuditBundle,
    BundleError, CheckpointBody, FailureKind, PROGRESS_COMMANDS_INTERVAL,
};
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::Command;
use support::recorded::*;
use support::*;

#[test]
fn an_untampered_bundle_verifies() {
    let (_fx, log) = recorded_federation();
    let report = verify(&bundle_of(&log, log.commands.clone()), &[]);
    assert!(report.ok, "{:?}", report.failures);
    assert_eq!((report.access_entries, report.permits, report.denials, report.checkpoints), (8, 6, 2, 2));
    let latest = report.latest_checkpoint.clone().unwrap();
    assert_eq!(latest.tree_size, 8);
    // The next run remembers it; the same history verifies against it.
    assert!(verify(&bundle_of(&log, log.commands.clone()), &[latest]).ok);
}

#[test]
fn tampering_with_entries_signatures_and_checkpoints_is_pinpointed() {
    let (_fx, log) = recorded_federation();
    // Commands: 1 genesis, 2 publish, 3 grant, 4-7 accesses, 8-9 cosigns, 10-13 accesses, 14-15 cosigns.
    type Tamper = fn(&mut Vec<ArchivedCommand>);
    let cases: [(&str, Tamper, u64, FailureKind); 5] = [
        (
            "a flipped signature bit in access 5",
            |c| *c[index(5)].envelope.last_mut().unwrap() ^= 1,
            5,
            FailureKind::ReplayRejected,
        ),
        (
            "a changed byte in access 11's body",
            |c| c[index(11)].envelope[40] ^= 0x10,
            11,
            FailureKind::ReplayRejected,
        ),
        (
            "a forged cosignature",
            |c| *c[index(9)].envelope.last_mut().unwrap() ^= 1,
            9,
            FailureKind::ReplayRejected,
        ),
        (
            "access 6 dropped",
            |c| {
                c.remove(index(6));
            },
            7,
            FailureKind::SequenceGap,
        ),
        ("a denial recorded as rejected", |c| c[index(5)].accepted = false, 5, FailureKind::ReplayAccepted),
    ];
    for (name, tamper, sequence, kind) in cases {
        let mut commands = log.commands.clone();
        tamper(&mut commands);
        let report = verify(&bundle_of(&log, commands), &[]);
        assert!(!report.ok, "{name}: not caught");
        let first = &report.failures[0];
        assert_eq!(
            (first.command_sequence, first.kind),
            (Some(sequence), kind),
            "{name}: {:?}",
            report.failures
        );
    }
}

#[test]
fn reordered_entries_and_a_wrong_signed_root_fail_the_checkpoint() {
    let (fx, log) = recorded_federation();
    let mut reordered = log.commands.clone();
    reordered.swap(index(4), index(6));
    for (position, command) in reordered.iter_mut().enumerate() {
        command.sequence = position as u64 + 1;
    }
    let report = verify(&bundle_of(&log, reordered), &[]);
    let first = &report.failures[0];
    assert_eq!(
        (first.kind, first.command_sequence, first.leaf, first.access_entry),
        (FailureKind::CheckpointRootMismatch, Some(9), Some(3), None)
    );

    // Two signers sign a root that is not the entries' root: the log takes
    // it (signers vouch for roots), the auditor does not.
    let lying = with_a_lying_checkpoint(&fx, &log);
    let report = verify(&bundle_of(&lying, lying.commands.clone()), &[]);
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert_eq!(
        (report.failures[0].kind, report.failures[0].command_sequence),
        (FailureKind::CheckpointRootMismatch, Some(18))
    );
}

#[test]
fn a_permit_the_policy_did_not_allow_is_flagged_by_the_replay() {
    let (fx, log) = recorded_federation();
    // Test-only path: a release of a field no grant allows, signed by the
    // owner and put into the record as accepted (the real log rejects it).
    let commands = with_appended(&log, &fx.market.key, unjustified_permit(&fx));
    let report = verify(&bundle_of(&log, commands), &[]);
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    let failure = &report.failures[0];
    assert_eq!(
        (failure.kind, failure.command_sequence, failure.access_entry),
        (FailureKind::ReleaseNotAllowed, Some(16), Some(8))
    );
    assert!(failure.detail.contains("legal_rep_phone"), "{}", failure.detail);
}

#[test]
fn a_rewritten_history_is_caught_against_checkpoints_seen_before() {
    let (fx, log) = recorded_federation();
    let seen = verify(&bundle_of(&log, log.commands.clone()), &[]).latest_checkpoint.unwrap();
    // Another history of the same length: one denial becomes a permit-less
    // denial for another subject, re-signed by the owner, checkpoints redone.
    let other = rewritten_history(&fx, &log);
    assert!(verify(&bundle_of(&other, other.commands.clone()), &[]).ok, "consistent in itself");
    let report = verify(&bundle_of(&other, other.commands.clone()), &[seen]);
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].kind, FailureKind::HistoryRewritten);
}

#[test]
fn a_malformed_command_is_pinpointed_and_counted_as_applied() {
    let (_fx, log) = recorded_federation();
    let mut commands = log.commands.clone();
    commands[index(5)].envelope.truncate(3);
    let (report, state) = verify_bundle(&bundle_of(&log, commands), None, &[], &mut |_| {}).unwrap();
    assert_eq!(
        (report.failures[0].command_sequence, report.failures[0].kind),
        (Some(5), FailureKind::MalformedCommand)
    );
    assert_eq!(state.commands_applied, log.commands.len() as u64);
    assert_eq!(state.access_log_length, 7, "the malformed access is not an entry");
}

#[test]
fn progress_is_reported_every_interval_and_at_the_end() {
    let (fx, mut log) = recorded_federation();
    let interval = PROGRESS_COMMANDS_INTERVAL;
    while (log.commands.len() as u64) < 2 * interval + 5 {
        // Rejected (no such grant) but archived like any command.
        log.record(&fx.market.key, Command::RevokeGrant { grant_id: 99, reason: "none".into() });
    }
    let mut reports = Vec::new();
    verify_bundle(&bundle_of(&log, log.commands.clone()), None, &[], &mut |done| reports.push(done)).unwrap();
    assert_eq!(reports, [interval, 2 * interval, 2 * interval + 5]);
    let mut reports = Vec::new();
    let exact = log.commands[..interval as usize].to_vec();
    verify_bundle(&bundle_of(&log, exact), None, &[], &mut |done| reports.push(done)).unwrap();
    assert_eq!(reports, [interval]);
}

#[test]
fn another_federation_and_damaged_files_are_refused() {
    let (_fx, log) = recorded_federation();
    let bundle = bundle_of(&log, log.commands.clone());
    let other_ca = Fixture::new();
    let other_der =
        civmesh_certs::CaCertificate::from_pem(other_ca.ca.certificate_pem()).unwrap().der().to_vec();
    assert!(matches!(
        verify_bundle(&bundle, Some(&other_der), &[], &mut |_| {}),
        Err(BundleError::OtherFederation)
    ));
    // A header naming another CA than its genesis did is refused too, even
    // when that CA is the one trusted.
    let relabelled = AuditBundle { ca_certificate_der: other_der.clone(), ..bundle.clone() };
    for trusted in [None, Some(other_der.as_slice())] {
        assert!(matches!(
            verify_bundle(&relabelled, trusted, &[], &mut |_| {}),
            Err(BundleError::NoGenesis(_))
        ));
    }
    let no_commands = AuditBundle { commands: Vec::new(), ..bundle.clone() };
    assert!(matches!(verify_bundle(&no_commands, None, &[], &mut |_| {}), Err(BundleError::NoGenesis(_))));
    let bytes = encode_bundle(&bundle).unwrap();
    for cut in [bytes.len() - 1, bytes.len() / 2, 13] {
        assert!(matches!(decode_bundle(&bytes[..cut]), Err(BundleError::Corrupt(_))), "cut at {cut}");
    }
    let mut future = bytes.clone();
    future[8] = 4;
    assert!(matches!(decode_bundle(&future), Err(BundleError::UnknownFormatVersion(4))));
}

#[test]
fn a_subject_access_report_lists_who_saw_what_and_why() {
    let (fx, log) = recorded_federation();
    let bundle = bundle_of(&log, log.commands.clone());
    let subject_report = |subject: u8| {
        verify_bundle_for_subject(&bundle, None, &[], &mut lookup(subject), &mut |_| {}).unwrap().2
    };
    let accesses = subject_report(2);
    assert_eq!(accesses.len(), 1);
    let access = &accesses[0];
    assert_eq!(access.requester, fx.jingansi.key.node_id().to_string());
    assert_eq!(access.requester_org.as_ref().map(|o| o.to_string()).as_deref(), Some("street/jingansi"));
    assert_eq!(
        (access.outcome.as_str(), access.purpose.as_str(), access.grant),
        ("permit", "inspection", Some(1))
    );
    assert_eq!(access.fields_released, vec!["name".to_string(), "operating_address".to_string()]);
    assert_eq!(access.legal_basis, Some(civmesh_policy::model::LegalBasis::StatutoryDuty));
    let denied = subject_report(1);
    assert_eq!((denied.len(), denied[0].outcome.as_str()), (1, "deny"));
    assert!(subject_report(99).is_empty());
}

#[test]
fn correction_outcomes_are_leaves_of_the_tree() {
    use civmesh_policy::correction::{CorrectionEvent, CorrectionStage};
    let (fx, mut log) = recorded_federation();
    let event = |stage: CorrectionStage| {
        Command::RecordCorrectionEvent(CorrectionEvent {
            correction: [5; 32],
            dataset: ENTERPRISES.into(),
            subject: SubjectKeyHash([2; 32]),
            submitter: fx.jingansi.key.node_id(),
            stage,
            payload_sha256: [5; 32],
            fields: ["operating_address".to_string()].into(),
            reason_code: None,
            version: (stage == CorrectionStage::Applied).then_some(2),
            operator: String::new(),
            record_written_at_ms: None,
        })
    };
    assert!(log.record(&fx.jingansi.key, event(CorrectionStage::Submitted)));
    for stage in [CorrectionStage::Delivered, CorrectionStage::Accepted, CorrectionStage::Applied] {
        assert!(log.record(&fx.market.key, event(stage)));
    }
    assert_eq!(
        (log.state.access_log_length, log.state.audit_frontier.size()),
        (8, 9),
        "only the outcome is a leaf"
    );
    let body = CheckpointBody { tree_size: 9, root: log.root_at(9), log_index: 30 };
    assert!(log.record(&fx.hub.key, Command::CosignCheckpoint(body.clone())));
    assert!(log.record(&fx.civil.key, Command::CosignCheckpoint(body)));
    let report = verify(&bundle_of(&log, log.commands.clone()), &[]);
    assert!(report.ok, "{:?}", report.failures);
    assert_eq!((report.access_entries, report.leaves, report.checkpoints), (8, 9, 3));
    // The applied outcome (command 19) altered: caught there.
    let mut commands = log.commands.clone();
    *commands[index(19)].envelope.last_mut().unwrap() ^= 1;
    let report = verify(&bundle_of(&log, commands), &[]);
    assert_eq!(
        (report.failures[0].command_sequence, report.failures[0].kind),
        (Some(19), FailureKind::ReplayRejected)
    );
}
