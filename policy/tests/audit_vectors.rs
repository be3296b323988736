//! The audit test vectors in docs/audit-vectors/: a genuine bundle and
//! tampered copies, each with the result docs/audit-bundle.md says a
//! verifier must give. This test checks civmesh's verifier gives exactly
//! those results; an independent verifier is checked the same way.
//!
//! The vectors are written once and committed. To write them again (after
//! a format change): `CIVMESH_WRITE_AUDIT_VECTORS=1 cargo test -p
//! civmesh-policy --test audit_vectors`. The writer states each expected
//! result by hand and refuses to write a vector the verifier disagrees with.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "audit_vectors/closed_corrections.rs"]
mod closed_corrections;
#[path = "audit_vectors/deletions.rs"]
mod deletions;
#[path = "audit_vectors/republished.rs"]
mod republished;
#[path = "audit_vectors/sensitive_withdrawn.rs"]
mod sensitive_withdrawn;
#[path = "audit_vectors/subject_requests.rs"]
mod subject_requests;
mod support;

use std::path::{Path, PathBuf};

use civmesh_policy::audit::{
    encode_bundle, verify_stream, ArchivedCommand, AuditBundle, AuditFailure, BundleReader, CheckpointBody,
    Checks, FailureKind, SeenCheckpoint,
};
use civmesh_policy::command::OPERATOR_NAME_BYTES_MAX;
use civmesh_policy::model::LegalBasis;
use civmesh_policy::{Command, DemandSpec, RejectionCode};
use serde::{Deserialize, Serialize};
use support::recorded::*;
use support::*;

const WRITE_ENV: &str = "CIVMESH_WRITE_AUDIT_VECTORS";

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/audit-vectors")
}

/// One vector: a bundle file, how it was made, what the verifier is given
/// besides the bundle and the CA (`ca.pem`), and the result it must give.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Vector {
    file: String,
    made_by: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    seen: Vec<SeenCheckpoint>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    require_anchored: bool,
    expect: Expect,
}

/// A verifier's result: the bundle cannot be read or trusted at all, or it
/// verifies, or it fails, first at `first`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expect {
    Error(String),
    Verified(Summary),
    Failed(FirstFailure),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Summary {
    commands: u64,
    access_entries: u64,
    leaves: u64,
    permits: u64,
    denials: u64,
    checkpoints: u64,
    anchored_leaves: u64,
    unanchored_leaves: u64,
    root: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FirstFailure {
    kind: FailureKind,
    command_sequence: Option<u64>,
    access_entry: Option<u64>,
    leaf: Option<u64>,
}

impl From<&AuditFailure> for FirstFailure {
    fn from(failure: &AuditFailure) -> Self {
        FirstFailure {
            kind: failure.kind,
            command_sequence: failure.command_sequence,
            access_entry: failure.access_entry,
            leaf: failure.leaf,
        }
    }
}

/// What civmesh's verifier says of `bytes`, read as a stream.
fn verdict(bytes: &[u8], trusted_ca_der: &[u8], seen: &[SeenCheckpoint], require_anchored: bool) -> Expect {
    let verified = BundleReader::open(bytes)
        .and_then(|reader| verify_stream(reader, Checks::new(Some(trusted_ca_der), seen), &mut |_| {}, None));
    let mut report = match verified {
        Ok((report, _, _)) => report,
        Err(error) => return Expect::Error(error.code().to_string()),
    };
    if require_anchored {
        report.require_anchored();
    }
    match report.failures.first() {
        Some(first) => Expect::Failed(first.into()),
        None => Expect::Verified(Summary {
            commands: report.commands,
            access_entries: report.access_entries,
            leaves: report.leaves,
            permits: report.permits,
            denials: report.denials,
            checkpoints: report.checkpoints,
            anchored_leaves: report.anchored_leaves,
            unanchored_leaves: report.unanchored_leaves,
            root: report.root,
        }),
    }
}

fn ca_der(pem: &str) -> Vec<u8> {
    civmesh_certs::CaCertificate::from_pem(pem).unwrap().der().to_vec()
}

#[test]
fn the_vectors_give_their_documented_results() {
    if std::env::var_os(WRITE_ENV).is_some() {
        write_vectors();
    }
    let dir = vectors_dir();
    let trusted = ca_der(&std::fs::read_to_string(dir.join("ca.pem")).unwrap());
    let vectors: Vec<Vector> =
        serde_json::from_slice(&std::fs::read(dir.join("vectors.json")).unwrap()).unwrap();
    let tampered = vectors.iter().filter(|vector| !matches!(vector.expect, Expect::Verified(_))).count();
    assert!(tampered >= 20, "at least 20 tampered vectors, found {tampered}");
    let mut wrong = Vec::new();
    for vector in &vectors {
        let bytes = std::fs::read(dir.join(&vector.file)).unwrap();
        let actual = verdict(&bytes, &trusted, &vector.seen, vector.require_anchored);
        if actual != vector.expect {
            wrong.push(format!(
                "{} ({}): expected {:?}, got {actual:?}",
                vector.file, vector.made_by, vector.expect
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A failure expected first: its kind and where.
fn failed(
    kind: FailureKind,
    command_sequence: Option<u64>,
    access_entry: Option<u64>,
    leaf: Option<u64>,
) -> Expect {
    Expect::Failed(FirstFailure { kind, command_sequence, access_entry, leaf })
}

fn error(code: &str) -> Expect {
    Expect::Error(code.to_string())
}

/// The vectors as made: file name, how, the bytes, seen checkpoints,
/// whether anchoring is required, and the expected result.
struct Made {
    file: &'static str,
    made_by: &'static str,
    bytes: Vec<u8>,
    seen: Vec<SeenCheckpoint>,
    require_anchored: bool,
    expect: Expect,
}

fn made(file: &'static str, made_by: &'static str, bytes: Vec<u8>, expect: Expect) -> Made {
    Made { file, made_by, bytes, seen: Vec::new(), require_anchored: false, expect }
}

fn write_vectors() {
    let (fx, log) = recorded_federation();
    let ca_pem = fx.ca.certificate_pem().to_string();
    let trusted = ca_der(&ca_pem);
    let mut all = bundle_vectors(&fx, &log);
    all.extend(signature_rule_vectors(&fx, &log));
    all.extend(file_vectors(&log));
    all.extend(replay_vectors(&log));
    all.extend(outcome_vectors(&fx, &log));
    all.extend(operator_vectors(&fx, &log));
    all.extend(deletions::deletion_vectors(&fx, &log));
    all.extend(subject_requests::subject_request_vectors(&fx, &log));
    all.extend(republished::republication_vectors(&fx, &log));
    all.extend(sensitive_withdrawn::sensitive_withdrawal_vectors(&fx, &log));
    all.extend(closed_corrections::closed_correction_vectors(&fx, &log));
    let dir = vectors_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
    let mut vectors = Vec::new();
    for vector in all {
        let actual = verdict(&vector.bytes, &trusted, &vector.seen, vector.require_anchored);
        assert_eq!(actual, vector.expect, "{}: {}", vector.file, vector.made_by);
        std::fs::write(dir.join(vector.file), &vector.bytes).unwrap();
        vectors.push(Vector {
            file: vector.file.to_string(),
            made_by: vector.made_by.to_string(),
            seen: vector.seen,
            require_anchored: vector.require_anchored,
            expect: vector.expect,
        });
    }
    let mut json = serde_json::to_vec_pretty(&vectors).unwrap();
    json.push(b'\n');
    std::fs::write(dir.join("vectors.json"), json).unwrap();
}

fn encoded(log: &RecordedLog, commands: Vec<ArchivedCommand>) -> Vec<u8> {
    encode_bundle(&bundle_of(log, commands)).unwrap()
}

/// `log`'s bundle after `tamper` changed its commands.
fn tampered(log: &RecordedLog, tamper: &dyn Fn(&mut Vec<ArchivedCommand>)) -> Vec<u8> {
    let mut commands = log.commands.clone();
    tamper(&mut commands);
    encoded(log, commands)
}

/// One command of a scenario: who signs it, its entry time, and the code
/// it is refused with (`None`: accepted).
struct Step<'a> {
    key: &'a civmesh_certs::NodeKey,
    at_ms: u64,
    command: Command,
    refused: Option<RejectionCode>,
}

/// A step at [`NOW_MS`].
fn step(key: &civmesh_certs::NodeKey, command: Command, refused: Option<RejectionCode>) -> Step<'_> {
    Step { key, at_ms: NOW_MS, command, refused }
}

/// `log` continued by `steps`, from command 16 on: each is refused with
/// its code, or accepted and recorded.
fn continued<'a>(log: &RecordedLog, steps: impl IntoIterator<Item = Step<'a>>) -> RecordedLog {
    let mut more = RecordedLog {
        state: log.state.clone(),
        commands: log.commands.clone(),
        leaves: log.leaves.clone(),
        made_final: Vec::new(),
    };
    for (sequence, step) in (16..).zip(steps) {
        let envelope = civmesh_certs::SignedEnvelope::sign(step.key, &step.command, step.at_ms).unwrap();
        let outcome = more.state.clone().apply(&envelope, step.at_ms).map_err(|rejection| rejection.code);
        assert_eq!(outcome.err(), step.refused, "command {sequence}: {:?}", step.command);
        assert_eq!(more.record_envelope_at(&envelope, step.at_ms), step.refused.is_none());
    }
    more
}

/// Ends a scenario at `at_ms`: `last` (a command and the key that signs
/// it), then the cosignatures of `signers` over the tree at `tree_size`,
/// which make it final as command `final_cosignature`.
fn close_with_checkpoint(
    more: &mut RecordedLog,
    at_ms: u64,
    last: (&civmesh_certs::NodeKey, Command),
    signers: [&civmesh_certs::NodeKey; 2],
    (tree_size, final_cosignature): (u64, u64),
) {
    let record = |more: &mut RecordedLog, key: &civmesh_certs::NodeKey, command: Command| {
        let envelope = civmesh_certs::SignedEnvelope::sign(key, &command, at_ms).unwrap();
        more.record_envelope_at(&envelope, at_ms)
    };
    assert!(record(more, last.0, last.1));
    let body = CheckpointBody { tree_size, root: more.root_at(tree_size), log_index: final_cosignature + 1 };
    for signer in signers {
        assert!(record(more, signer, Command::CosignCheckpoint(body.clone())));
    }
    assert_eq!(more.made_final, [tree_size]);
    assert_eq!(more.commands.len() as u64, final_cosignature);
}

fn hex_root(log: &RecordedLog, size: u64) -> String {
    civmesh_policy::hex_digest::to_hex(&log.root_at(size))
}

/// What a verifier says of the genuine bundle.
fn genuine_summary(log: &RecordedLog) -> Summary {
    Summary {
        commands: 15,
        access_entries: 8,
        leaves: 8,
        permits: 6,
        denials: 2,
        checkpoints: 2,
        anchored_leaves: 8,
        unanchored_leaves: 0,
        root: hex_root(log, 8),
    }
}

/// The genuine bundle with an access signed so that only ZIP 215 accepts
/// it: every verifier must accept it.
fn signature_rule_vectors(fx: &Fixture, log: &RecordedLog) -> Vec<Made> {
    let zip215 = with_a_zip215_only_signature(fx, log);
    let summary = Summary {
        commands: 16,
        access_entries: 9,
        leaves: 9,
        permits: 7,
        unanchored_leaves: 1,
        root: hex_root(&zip215, 9),
        ..genuine_summary(log)
    };
    vec![made(
        "03-zip215-signature.bundle",
        "00 and an access signed with R of order 8: valid under ZIP 215, not without the cofactor",
        encoded(&zip215, zip215.commands.clone()),
        Expect::Verified(summary),
    )]
}

/// The genuine bundles, and the checks that need more than the bundle.
fn bundle_vectors(fx: &Fixture, log: &RecordedLog) -> Vec<Made> {
    let genuine = encoded(log, log.commands.clone());
    let summary = genuine_summary(log);
    let mut tail = RecordedLog {
        state: log.state.clone(),
        commands: log.commands.clone(),
        leaves: log.leaves.clone(),
        made_final: Vec::new(),
    };
    for subject in 8..11u8 {
        assert!(tail.record(&fx.market.key, access(&fx.jingansi.key, subject, Some(1), true)));
    }
    let with_tail = encoded(&tail, tail.commands.clone());
    let tail_summary = Summary {
        commands: 18,
        access_entries: 11,
        leaves: 11,
        permits: 9,
        unanchored_leaves: 3,
        root: hex_root(&tail, 11),
        ..summary.clone()
    };
    let seen = vec![SeenCheckpoint { tree_size: 8, root: hex_root(log, 8) }];
    let other = rewritten_history(fx, log);
    vec![
        made(
            "00-genuine.bundle",
            "genesis, dataset, grant, 8 accesses (2 denied), final checkpoints at 4 and 8",
            genuine.clone(),
            Expect::Verified(summary.clone()),
        ),
        made(
            "01-genuine-tail.bundle",
            "00 and three more accesses after the last final checkpoint",
            with_tail.clone(),
            Expect::Verified(tail_summary),
        ),
        Made {
            require_anchored: true,
            ..made(
                "01-genuine-tail.bundle",
                "01, verified with every leaf required anchored",
                with_tail,
                failed(FailureKind::Unanchored, None, None, Some(8)),
            )
        },
        Made {
            seen: seen.clone(),
            ..made(
                "00-genuine.bundle",
                "00, against its own latest checkpoint seen before",
                genuine,
                Expect::Verified(summary),
            )
        },
        Made {
            seen,
            ..made(
                "02-rewritten-history.bundle",
                "another history, consistent in itself, against 00's checkpoint seen before",
                encoded(&other, other.commands.clone()),
                failed(FailureKind::HistoryRewritten, None, None, Some(7)),
            )
        },
    ]
}

/// Damaged files and headers: errors before any replay.
fn file_vectors(log: &RecordedLog) -> Vec<Made> {
    let genuine = encoded(log, log.commands.clone());
    let bundle = bundle_of(log, log.commands.clone());
    let pieces = piece_offsets(&genuine);
    let other_ca = Fixture::new();
    let other_ca_der = ca_der(other_ca.ca.certificate_pem());
    let mut no_genesis = log.commands[1..].to_vec();
    renumber(&mut no_genesis);
    vec![
        made(
            "10-not-a-bundle.bundle",
            "the magic's first byte changed",
            with_byte(&genuine, 0, b'X'),
            error("not_a_bundle"),
        ),
        made(
            "11-unknown-version.bundle",
            "format version 4",
            with_byte(&genuine, 8, 4),
            error("unknown_format_version"),
        ),
        made(
            "12-truncated.bundle",
            "cut in the middle of a command",
            genuine[..genuine.len() / 2].to_vec(),
            error("corrupt"),
        ),
        made(
            "13-trailing-byte.bundle",
            "one byte after the last command",
            [genuine.clone(), vec![0]].concat(),
            error("corrupt"),
        ),
        made(
            "14-non-canonical-header.bundle",
            "the header's first length (the name's) in three bytes",
            lengthened_piece(&genuine, pieces[0]),
            error("corrupt"),
        ),
        made(
            "15-non-canonical-command.bundle",
            "command 2's sequence number written in three bytes",
            lengthened_piece(&genuine, pieces[2]),
            error("corrupt"),
        ),
        made(
            "16-other-ca.bundle",
            "the header names another CA",
            encode_bundle(&AuditBundle { ca_certificate_der: other_ca_der, ..bundle.clone() }).unwrap(),
            error("other_federation"),
        ),
        made(
            "17-other-name.bundle",
            "the header names another federation",
            encode_bundle(&AuditBundle { federation_name: "another city".into(), ..bundle.clone() }).unwrap(),
            error("no_genesis"),
        ),
        made(
            "18-no-genesis.bundle",
            "the genesis left out, the rest renumbered",
            encoded(log, no_genesis),
            error("no_genesis"),
        ),
    ]
}

/// Tampered commands: each caught by the replay, at its first failure.
fn replay_vectors(log: &RecordedLog) -> Vec<Made> {
    let tampered = |tamper: &dyn Fn(&mut Vec<ArchivedCommand>)| tampered(log, tamper);
    vec![
        made(
            "20-access-signature.bundle",
            "a bit of access 5's signature flipped",
            tampered(&|c| flip_last(&mut c[index(5)].envelope)),
            failed(FailureKind::ReplayRejected, Some(5), None, None),
        ),
        made(
            "21-access-body.bundle",
            "a byte of access 11's signed body changed",
            tampered(&|c| c[index(11)].envelope[40] ^= 0x10),
            failed(FailureKind::ReplayRejected, Some(11), None, None),
        ),
        made(
            "22-cosignature.bundle",
            "a bit of cosignature 9's signature flipped",
            tampered(&|c| flip_last(&mut c[index(9)].envelope)),
            failed(FailureKind::ReplayRejected, Some(9), None, None),
        ),
        made(
            "23-dropped.bundle",
            "access 6 left out, not renumbered",
            tampered(&|c| {
                c.remove(index(6));
            }),
            failed(FailureKind::SequenceGap, Some(7), None, None),
        ),
        made(
            "24-dropped-renumbered.bundle",
            "access 13 left out, renumbered: the checkpoint at 8 cosigns leaves not there",
            tampered(&|c| {
                c.remove(index(13));
                renumber(c);
            }),
            failed(FailureKind::ReplayRejected, Some(13), None, None),
        ),
        made(
            "25-reordered.bundle",
            "accesses 4 and 6 swapped, renumbered",
            tampered(&|c| {
                c.swap(index(4), index(6));
                renumber(c);
            }),
            failed(FailureKind::CheckpointRootMismatch, Some(9), None, Some(3)),
        ),
        made(
            "26-out-of-order.bundle",
            "commands 10 and 11 swapped, not renumbered",
            tampered(&|c| c.swap(index(10), index(11))),
            failed(FailureKind::SequenceGap, Some(11), None, None),
        ),
        made(
            "27-entry-times.bundle",
            "every entry time from command 2 on 1 ms later",
            tampered(&|c| c[1..].iter_mut().for_each(|command| command.entry_time_ms += 1)),
            failed(FailureKind::CheckpointRootMismatch, Some(9), None, Some(3)),
        ),
        made(
            "28-inserted-copy.bundle",
            "a copy of command 2 as command 4, marked rejected, renumbered",
            tampered(&|c| {
                let copy = ArchivedCommand { accepted: false, ..c[index(2)].clone() };
                c.insert(index(4), copy);
                renumber(c);
            }),
            failed(FailureKind::CheckpointRootMismatch, Some(10), None, Some(3)),
        ),
    ]
}

/// Outcomes the log did not record truthfully: each caught by the replay.
fn outcome_vectors(fx: &Fixture, log: &RecordedLog) -> Vec<Made> {
    let tampered = |tamper: &dyn Fn(&mut Vec<ArchivedCommand>)| tampered(log, tamper);
    let lying = with_a_lying_checkpoint(fx, log);
    let rejected = civmesh_policy::Command::RevokeGrant { grant_id: 9, reason: "none such".into() };
    vec![
        made(
            "29-denial-marked-rejected.bundle",
            "denial 5 marked rejected",
            tampered(&|c| c[index(5)].accepted = false),
            failed(FailureKind::ReplayAccepted, Some(5), None, None),
        ),
        made(
            "30-rejected-marked-accepted.bundle",
            "as command 16: a revocation of no grant, marked accepted",
            encoded(log, with_appended(log, &fx.market.key, rejected)),
            failed(FailureKind::ReplayRejected, Some(16), None, None),
        ),
        made(
            "31-non-canonical-envelope.bundle",
            "cosignature 9's envelope: its body length in three bytes",
            tampered(&|c| c[index(9)].envelope = lengthened(&c[index(9)].envelope, 1)),
            failed(FailureKind::MalformedCommand, Some(9), None, None),
        ),
        made(
            "32-truncated-envelope.bundle",
            "access 5's envelope cut to 3 bytes",
            tampered(&|c| c[index(5)].envelope.truncate(3)),
            failed(FailureKind::MalformedCommand, Some(5), None, None),
        ),
        made(
            "33-unjustified-permit.bundle",
            "as command 16: the owner's record of a release no grant allows",
            encoded(log, with_appended(log, &fx.market.key, unjustified_permit(fx))),
            failed(FailureKind::ReleaseNotAllowed, Some(16), Some(8), None),
        ),
        made(
            "34-lying-checkpoint.bundle",
            "a 9th access, and 2 signers cosign a root that is not the entries'",
            encoded(&lying, lying.commands.clone()),
            failed(FailureKind::CheckpointRootMismatch, Some(18), None, Some(8)),
        ),
        made(
            "35-forged-request.bundle",
            "as command 16: a query record whose request signature is another message's",
            encoded(log, with_appended(log, &fx.market.key, forged_request(fx))),
            failed(FailureKind::ReplayRejected, Some(16), None, None),
        ),
        made(
            "36-genesis-not-by-ca.bundle",
            "the genesis signed by the hub's key, not the CA's",
            tampered(&|c| c[0].envelope = resigned(&c[0].envelope, &fx.hub.key)),
            failed(FailureKind::ReplayRejected, Some(1), None, None),
        ),
    ]
}

/// Where each piece (the header, then each command) starts in a bundle.
fn piece_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut offset = 12;
    while offset < bytes.len() {
        offsets.push(offset);
        offset += 4 + u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
    }
    offsets
}

/// The bundle with the first byte of the piece at `at` (a varint under
/// 251) written in its three-byte form, the piece's length fixed.
fn lengthened_piece(bytes: &[u8], at: usize) -> Vec<u8> {
    let length = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut long = bytes[..at].to_vec();
    long.extend_from_slice(&(length + 2).to_le_bytes());
    long.extend_from_slice(&lengthened(&bytes[at + 4..], 0));
    long
}

/// `bytes` with the varint at `at` (under 251) in its three-byte form.
fn lengthened(bytes: &[u8], at: usize) -> Vec<u8> {
    assert!(bytes[at] < 251);
    [&bytes[..at], &[251, bytes[at], 0][..], &bytes[at + 1..]].concat()
}

fn with_byte(bytes: &[u8], at: usize, value: u8) -> Vec<u8> {
    let mut changed = bytes.to_vec();
    changed[at] = value;
    changed
}

fn flip_last(bytes: &mut [u8]) {
    if let Some(last) = bytes.last_mut() {
        *last ^= 1;
    }
}

fn renumber(commands: &mut [ArchivedCommand]) {
    for (position, command) in commands.iter_mut().enumerate() {
        command.sequence = position as u64 + 1;
    }
}

/// The same command signed by `key` instead.
fn resigned(envelope: &[u8], key: &civmesh_certs::NodeKey) -> Vec<u8> {
    let command = civmesh_policy::SignedCommand::from_bytes(envelope).unwrap().unverified_payload().unwrap();
    sign(key, command).to_bytes().unwrap()
}

/// A query record whose requester signature is another message's.
fn forged_request(fx: &Fixture) -> civmesh_policy::Command {
    let civmesh_policy::Command::RecordAccess(mut record) = access(&fx.jingansi.key, 1, Some(1), true) else {
        unreachable!("access() makes a query record")
    };
    let other = civmesh_certs::SignedEnvelope::sign(&fx.jingansi.key, &"another message".to_string(), NOW_MS)
        .unwrap();
    record.request = civmesh_certs::SignedEnvelope::from_parts(
        record.request.body_bytes().to_vec(),
        other.signature_bytes().to_vec(),
    );
    civmesh_policy::Command::RecordAccess(record)
}

fn by(operator: &str, command: Command) -> Command {
    Command::ByOperator { operator: operator.into(), command: Box::new(command) }
}

/// `log` and commands operators made through the console: two accepted
/// (the outcome is the wrapped command's: a grant, a demand), eight refused
/// (each with the code that enters the applied digest; the last a refused
/// wrapper again, whose nonce the first time spent), an access under the
/// wrapped grant and a checkpoint over it, made final by command 28.
/// The root it cosigns covers every outcome before it.
fn with_operators(fx: &Fixture, log: &RecordedLog) -> RecordedLog {
    let mut more = RecordedLog {
        state: log.state.clone(),
        commands: log.commands.clone(),
        leaves: log.leaves.clone(),
        made_final: Vec::new(),
    };
    let street = fx.nanjingxilu.org.clone();
    let grant = grant_spec(ENTERPRISES, &street, &["name", "operating_address"], "inspection");
    let demand = DemandSpec {
        dataset: ENTERPRISES.into(),
        fields: ["name".to_string()].into(),
        purpose: "inspection".into(),
        legal_basis: LegalBasis::StatutoryDuty,
        reason: "the street's inspections".into(),
        until_ms: None,
    };
    let longest = format!("{}ab", "名".repeat(42));
    assert_eq!(longest.len(), OPERATOR_NAME_BYTES_MAX);
    let revoke = || Command::RevokeGrant { grant_id: 1, reason: "ended".into() };
    let refusals = [
        (&fx.market.key, by("王芳", by("王芳", revoke())), RejectionCode::NotAuthorised),
        (&fx.market.key, by(" \u{3000}", revoke()), RejectionCode::InvalidArgument),
        (
            &fx.market.key,
            by("王芳", access(&fx.jingansi.key, 9, Some(1), true)),
            RejectionCode::NotAuthorised,
        ),
        (&fx.market.key, by("李\u{85}伟", revoke()), RejectionCode::InvalidArgument),
        (&fx.market.key, by(&"名".repeat(43), revoke()), RejectionCode::InvalidArgument),
        (&fx.outsider.key, by("", by("王芳", revoke())), RejectionCode::InvalidArgument),
        (&fx.market.key, by("王芳", by("王芳", by("王芳", revoke()))), RejectionCode::SignatureInvalid),
    ];
    assert!(more.record(&fx.market.key, by("王芳", Command::IssueGrant(grant))));
    assert!(more.record(&fx.jingansi.key, by(&longest, Command::FileDemandWithReason(demand))));
    let mut refused = Vec::new();
    for (key, command, code) in refusals {
        refused.push((sign(key, command), code));
    }
    // The white-space name's wrapper again: refused, it still spent its nonce.
    refused.push((refused[1].0.clone(), RejectionCode::Replayed));
    for (envelope, code) in refused {
        let rejection = more.state.clone().apply(&envelope, NOW_MS).unwrap_err();
        assert_eq!(rejection.code, code, "{rejection}");
        assert!(!more.record_envelope(&envelope));
    }
    assert_eq!(more.commands.len(), 25);
    assert!(more.record(&fx.market.key, access(&fx.nanjingxilu.key, 10, Some(2), true)));
    let body = CheckpointBody { tree_size: 9, root: more.root_at(9), log_index: 30 };
    assert!(more.record(&fx.hub.key, Command::CosignCheckpoint(body.clone())));
    assert!(more.record(&fx.civil.key, Command::CosignCheckpoint(body)));
    assert_eq!(more.made_final, [9]);
    more
}

/// Operators' commands (`ByOperator`): the bundle verifies, with every
/// refusal's code bound by the checkpoint's root; outcomes the log did not
/// record truthfully are caught.
fn operator_vectors(fx: &Fixture, log: &RecordedLog) -> Vec<Made> {
    let operators = with_operators(fx, log);
    let tampered = |tamper: &dyn Fn(&mut Vec<ArchivedCommand>)| tampered(&operators, tamper);
    let summary = Summary {
        commands: 28,
        access_entries: 9,
        leaves: 9,
        permits: 7,
        checkpoints: 3,
        anchored_leaves: 9,
        root: hex_root(&operators, 9),
        ..genuine_summary(log)
    };
    vec![
        made(
            "04-operators.bundle",
            "00, then operators' commands: a wrapped grant and demand (the name 128 bytes) accepted; \
             refused, a wrapper in a wrapper, a name of white space, a wrapped access, a name with a \
             control character, one of 129 bytes, an unknown signer's wrapper in a wrapper with an \
             empty name, three wrappers (undecodable), the white-space name's again (replayed); an \
             access under the wrapped grant, and a final checkpoint at 9",
            encoded(&operators, operators.commands.clone()),
            Expect::Verified(summary),
        ),
        made(
            "37-operator-refusal-marked-accepted.bundle",
            "04 with command 18, a wrapper in a wrapper, marked accepted",
            tampered(&|c| c[index(18)].accepted = true),
            failed(FailureKind::ReplayRejected, Some(18), None, None),
        ),
        made(
            "38-operator-grant-marked-rejected.bundle",
            "04 with command 16, the wrapped grant, marked rejected",
            tampered(&|c| c[index(16)].accepted = false),
            failed(FailureKind::ReplayAccepted, Some(16), None, None),
        ),
    ]
}
