//! Nothing outside a signature is trusted: a header that names another
//! federation, non-canonical bytes, entry times and sequence numbers the
//! exporter changed, and a tail left out after the latest final checkpoint
//! are each caught or reported (issue: an access log any outsider can
//! verify).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use civmesh_policy::audit::{
    decode_bundle, encode_bundle, verify_bundle, verify_bundle_for_subject, verify_stream, ArchivedCommand,
    AuditBundle, BundleError, BundleReader, Checks, FailureKind,
};
use support::recorded::*;

/// Commands: 1 genesis, 2 publish, 3 grant, 4-7 accesses, 8-9 cosigns
/// (final at 4 leaves), 10-13 accesses, 14-15 cosigns (final at 8).
const FIRST_CHECKPOINT_SEQUENCE: u64 = 9;

fn first_failure(commands: Vec<ArchivedCommand>, log: &RecordedLog) -> (FailureKind, Option<u64>) {
    let report = verify(&bundle_of(log, commands), &[]);
    let first = report.failures.first().unwrap_or_else(|| panic!("not caught: {report:?}"));
    (first.kind, first.command_sequence)
}

#[test]
fn a_header_naming_another_federation_is_refused() {
    let (_fx, log) = recorded_federation();
    let forged =
        AuditBundle { federation_name: "another city".into(), ..bundle_of(&log, log.commands.clone()) };
    match verify_bundle(&forged, Some(&forged.ca_certificate_der), &[], &mut |_| {}) {
        Err(BundleError::NoGenesis(detail)) => {
            assert!(detail.contains("another city") && detail.contains("test city"), "{detail}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|(report, _)| report)),
    }
    let report = verify(&bundle_of(&log, log.commands.clone()), &[]);
    assert_eq!(report.federation_name, "test city", "the name comes from the signed genesis");
}

/// The envelope's wire bytes with the body's length (byte 1, under 251)
/// written in its three-byte form: the same envelope, not canonical.
fn lengthened(envelope: &[u8]) -> Vec<u8> {
    assert!(envelope[1] < 251, "a body under 251 bytes");
    let mut long = vec![envelope[0], 251, envelope[1], 0];
    long.extend_from_slice(&envelope[2..]);
    long
}

#[test]
fn non_canonical_bytes_are_invalid_where_they_are() {
    let (_fx, log) = recorded_federation();
    // A cosignature's envelope (short enough for a one-byte length).
    let mut commands = log.commands.clone();
    let target = FIRST_CHECKPOINT_SEQUENCE;
    commands[index(target)].envelope = lengthened(&commands[index(target)].envelope);
    let report = verify(&bundle_of(&log, commands), &[]);
    let first = &report.failures[0];
    assert_eq!((first.kind, first.command_sequence), (FailureKind::MalformedCommand, Some(target)));
    assert!(first.detail.contains("canonical"), "{}", first.detail);

    // An archived command whose own encoding is not canonical: its
    // sequence (under 251) written long. The bundle is refused, naming
    // the command and its byte offset.
    let bundle = bundle_of(&log, log.commands.clone());
    let bytes = encode_bundle(&bundle).unwrap();
    let mut offset = 12;
    let mut piece_at = Vec::new();
    while offset < bytes.len() {
        piece_at.push(offset);
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        offset += 4 + length;
    }
    // Piece 0 is the header; piece 2 is command 2, its sequence the first byte.
    let at = piece_at[2];
    let length = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut long = bytes[..at].to_vec();
    long.extend_from_slice(&(length + 2).to_le_bytes());
    long.extend_from_slice(&[251, bytes[at + 4], 0]);
    long.extend_from_slice(&bytes[at + 5..]);
    match decode_bundle(&long) {
        Err(BundleError::Corrupt(detail)) => {
            assert!(detail.contains(&format!("command 2 at byte {at}")), "{detail}");
            assert!(detail.contains("canonical"), "{detail}");
        }
        other => panic!("expected a corrupt bundle, got {other:?}"),
    }
}

#[test]
fn entry_times_and_sequence_numbers_are_bound_by_the_checkpoints() {
    let (fx, log) = recorded_federation();
    // Every entry time from command 2 on one millisecond later: the replay
    // accepts each command as before, but the leaves bind their times.
    let mut later = log.commands.clone();
    for command in &mut later[1..] {
        command.entry_time_ms += 1;
    }
    assert_eq!(
        first_failure(later, &log),
        (FailureKind::CheckpointRootMismatch, Some(FIRST_CHECKPOINT_SEQUENCE))
    );

    // A copy of command 2 slipped in as command 4, marked rejected (the
    // replay rejects it too: its nonce is spent), everything renumbered.
    // Every command still replays as the log says; the leaves after it
    // bind a different history.
    let mut inserted = log.commands.clone();
    inserted.insert(index(4), ArchivedCommand { accepted: false, ..log.commands[index(2)].clone() });
    for (position, command) in inserted.iter_mut().enumerate() {
        command.sequence = position as u64 + 1;
    }
    assert_eq!(
        first_failure(inserted, &log),
        (FailureKind::CheckpointRootMismatch, Some(FIRST_CHECKPOINT_SEQUENCE + 1))
    );

    // A rejected command's `accepted` flag flipped: the replay disagrees.
    let mut grown = log;
    assert!(!grown
        .record(&fx.market.key, civmesh_policy::Command::RevokeGrant { grant_id: 9, reason: "x".into() }));
    let mut flipped = grown.commands.clone();
    let last = flipped.len() - 1;
    flipped[last].accepted = true;
    assert_eq!(first_failure(flipped, &grown), (FailureKind::ReplayRejected, Some(last as u64 + 1)));
}

#[test]
fn leaves_after_the_latest_final_checkpoint_are_reported_unanchored() {
    let (fx, mut log) = recorded_federation();
    for subject in 8..11u8 {
        assert!(log.record(&fx.market.key, access(&fx.jingansi.key, subject, Some(1), true)));
    }
    let report = verify(&bundle_of(&log, log.commands.clone()), &[]);
    assert!(report.ok, "{:?}", report.failures);
    assert_eq!((report.leaves, report.anchored_leaves, report.unanchored_leaves), (11, 8, 3));

    // An exporter leaves out the last two accesses: nothing in the bundle
    // can show it, but the report says only 8 leaves are proven complete,
    // and an auditor who requires it fails the bundle.
    let hidden = log.commands[..log.commands.len() - 2].to_vec();
    let mut report = verify(&bundle_of(&log, hidden), &[]);
    assert!(report.ok);
    assert_eq!((report.anchored_leaves, report.unanchored_leaves), (8, 1));
    report.require_anchored();
    assert!(!report.ok);
    let failure = &report.failures[0];
    assert_eq!((failure.kind, failure.leaf), (FailureKind::Unanchored, Some(8)));

    // The subject report says which of a subject's accesses are anchored.
    let bundle = bundle_of(&log, log.commands.clone());
    let anchored = |subject: u8| {
        let (_, _, accesses) =
            verify_bundle_for_subject(&bundle, None, &[], &mut lookup(subject), &mut |_| {}).unwrap();
        accesses.iter().map(|access| (access.leaf, access.anchored)).collect::<Vec<_>>()
    };
    assert_eq!(anchored(2), [(2, true)]);
    assert_eq!(anchored(9), [(9, false)]);
}

#[test]
fn a_fully_anchored_bundle_passes_when_anchoring_is_required() {
    let (_fx, log) = recorded_federation();
    let mut report = verify(&bundle_of(&log, log.commands.clone()), &[]);
    assert_eq!((report.anchored_leaves, report.unanchored_leaves), (8, 0));
    report.require_anchored();
    assert!(report.ok, "{:?}", report.failures);
}

/// Issue 19's test: a signature valid under ZIP 215 but not under RFC 8032
/// without the cofactor (R of order 8) gets one verdict at apply on every
/// replica and in the auditor's replay, in its parallel batched pass too.
#[test]
fn a_signature_only_zip_215_accepts_gets_one_verdict_at_apply_and_in_the_audit() {
    let (fx, log) = recorded_federation();
    let command = access(&fx.jingansi.key, 11, Some(1), true);
    let envelope =
        civmesh_certs::SignedEnvelope::sign_zip215_only(&seed_of(&fx.market.key), &command, support::NOW_MS)
            .unwrap();
    let replicas = [log.state.clone(), log.state.clone()];
    for mut replica in replicas {
        assert_eq!(replica.apply(&envelope, support::NOW_MS), Ok(civmesh_policy::Applied::AccessLogged(8)));
    }
    let log = with_a_zip215_only_signature(&fx, &log);
    for threads in [1, 2] {
        let bundle = bundle_of(&log, log.commands.clone());
        let (report, _) =
            civmesh_policy::audit::verify_bundle_on(&bundle, None, &[], threads, &mut |_| {}).unwrap();
        assert!(report.ok, "{threads} thread(s): {:?}", report.failures);
        assert_eq!(report.access_entries, 9);
    }
}

/// A bundle read as a stream, in windows of any size, verifies exactly as
/// the whole bundle in memory does; a stream cut short is an error, with no
/// report.
#[test]
fn a_streamed_replay_in_small_windows_gives_the_same_report() {
    let (fx, mut log) = recorded_federation();
    for subject in 8..11u8 {
        assert!(log.record(&fx.market.key, access(&fx.jingansi.key, subject, Some(1), true)));
    }
    let bundle = bundle_of(&log, log.commands.clone());
    let whole = verify(&bundle, &[]);
    let bytes = encode_bundle(&bundle).unwrap();
    for window_commands in [1, 2, 7, 100] {
        let checks = Checks { window_commands, ..Checks::new(None, &[]) };
        let reader = BundleReader::open(bytes.as_slice()).unwrap();
        let mut reports = Vec::new();
        let (report, state, _) = verify_stream(reader, checks, &mut |done| reports.push(done), None).unwrap();
        assert_eq!(report, whole, "windows of {window_commands}");
        assert_eq!(state.commands_applied, 18);
        assert_eq!(reports, [18]);
    }
    let cut = BundleReader::open(&bytes[..bytes.len() - 10]).unwrap();
    match verify_stream(cut, Checks::new(None, &[]), &mut |_| {}, None) {
        Err(BundleError::Corrupt(detail)) => assert!(detail.contains("command 18 at byte"), "{detail}"),
        other => panic!("expected a corrupt bundle, got {:?}", other.map(|(report, ..)| report)),
    }
}
