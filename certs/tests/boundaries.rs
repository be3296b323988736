//! Every bound and boundary in certs, at the value and one past it: the
//! decode and envelope size limits, the replay window's edges, a
//! certificate's validity edges, the key file's size limit; and the
//! accessors whose results other crates rely on (digests, parts, the
//! debug forms that must not leak). Written to kill cargo-mutants'
//! survivors (`scripts/mutants.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use civmesh_certs::codec::{self, CodecError, DECODE_BYTES_MAX};
use civmesh_certs::{
    CaCertificate, CertificateError, EnvelopeError, FederationCa, IssueRequest, KeyError, NodeCertificate,
    NodeKey, OrgId, ReplayGuard, RevocationSet, Role, SignedEnvelope, ENVELOPE_BYTES_MAX, NONCE_BYTES,
};

const NOW_MS: u64 = 1_800_000_000_000;

#[test]
fn decode_takes_exactly_its_bound_and_counts_trailing_bytes() {
    let bytes = codec::encode(&vec![7u8; 100]).unwrap();
    let value: Vec<u8> = codec::decode_exact(&bytes, bytes.len()).unwrap();
    assert_eq!(value, vec![7u8; 100]);
    assert!(matches!(
        codec::decode_exact::<Vec<u8>>(&bytes, bytes.len() - 1),
        Err(CodecError::TooLarge { bytes, bytes_max }) if bytes == bytes_max + 1
    ));
    let mut trailing = bytes.clone();
    trailing.extend([0, 0, 0]);
    assert!(matches!(codec::decode_exact::<Vec<u8>>(&trailing, 1 << 20), Err(CodecError::TrailingBytes(3))));
    // No caller's bound goes past 16 MiB.
    assert_eq!(DECODE_BYTES_MAX, 16 * 1024 * 1024);
    let huge = vec![0u8; DECODE_BYTES_MAX + 1];
    assert!(matches!(
        codec::decode_exact::<Vec<u8>>(&huge, usize::MAX),
        Err(CodecError::TooLarge { bytes_max, .. }) if bytes_max == DECODE_BYTES_MAX
    ));
}

/// The streamed encode writes what `encode` makes, and the streamed decode
/// keeps the slice decode's rules: its bound, and no trailing bytes.
#[test]
fn a_value_streamed_through_a_reader_keeps_the_bound_and_refuses_trailing_bytes() {
    let value = vec![7u8; 100];
    let mut written = Vec::new();
    assert_eq!(codec::encode_into_writer(&value, &mut written).unwrap(), written.len());
    assert_eq!(written, codec::encode(&value).unwrap());
    let read: Vec<u8> = codec::decode_large_from_reader(written.as_slice(), written.len()).unwrap();
    assert_eq!(read, value);
    assert!(matches!(
        codec::decode_large_from_reader::<Vec<u8>, _>(written.as_slice(), written.len() - 1),
        Err(CodecError::TooLarge { bytes, bytes_max }) if bytes == bytes_max + 1
    ));
    let mut trailing = written.clone();
    trailing.extend([0, 0, 0]);
    assert!(matches!(
        codec::decode_large_from_reader::<Vec<u8>, _>(trailing.as_slice(), 1 << 20),
        Err(CodecError::TrailingBytes(3))
    ));
    assert!(matches!(
        codec::decode_large_from_reader::<Vec<u8>, _>(&written[..50], 1 << 20),
        Err(CodecError::Malformed(_))
    ));
}

#[test]
fn sha256_is_sha256() {
    let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let hex: String = codec::sha256(b"abc").iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, expected);
}

#[test]
fn envelopes_round_trip_up_to_their_bound_and_expose_their_parts() {
    let key = NodeKey::generate().unwrap();
    let big = vec![1u8; 3 * 1024 * 1024];
    let envelope = SignedEnvelope::sign(&key, &big, NOW_MS).unwrap();
    let wire = envelope.to_bytes().unwrap();
    let parsed = SignedEnvelope::<Vec<u8>>::from_bytes(&wire).unwrap();
    assert_eq!(parsed, envelope);
    assert_eq!(parsed.verify_signature().unwrap().payload, big);
    assert_eq!(ENVELOPE_BYTES_MAX, 4 * 1024 * 1024);
    let oversized = vec![0u8; ENVELOPE_BYTES_MAX + 1];
    assert!(SignedEnvelope::<Vec<u8>>::from_bytes(&oversized).unwrap_err().to_string().contains("4194304"));

    let small = SignedEnvelope::sign(&key, &"hello".to_string(), NOW_MS).unwrap();
    let other = SignedEnvelope::sign(&key, &"hello".to_string(), NOW_MS).unwrap();
    assert_ne!(small, other, "two signings differ in their nonces");
    let rebuilt =
        SignedEnvelope::<String>::from_parts(small.body_bytes().to_vec(), small.signature_bytes().to_vec());
    assert_eq!(rebuilt, small);
    assert_eq!(rebuilt.verify_signature().unwrap().payload, "hello");
    assert_eq!(small.signature_bytes().len(), 64);
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(&(small.body_bytes().len() as u64).to_le_bytes());
    context.update(small.body_bytes());
    context.update(small.signature_bytes());
    assert_eq!(small.digest().as_slice(), context.finish().as_ref());
    assert_ne!(small.digest(), other.digest());
    assert_eq!(format!("{small:?}"), format!("SignedEnvelope({} body bytes)", small.body_bytes().len()));

    let mut wrong_version = small.to_bytes().unwrap();
    wrong_version[0] = 2;
    assert!(matches!(
        SignedEnvelope::<String>::from_bytes(&wrong_version),
        Err(EnvelopeError::VersionUnknown(2))
    ));
}

#[test]
fn the_replay_window_includes_its_edges_and_remembers_what_it_took() {
    let signer = NodeKey::generate().unwrap().node_id();
    let skew_ms = 1_000;
    let mut guard = ReplayGuard::new(skew_ms, 100);
    let nonce = |n: u8| [n; NONCE_BYTES];
    for (issued_at_ms, inside) in [
        (NOW_MS - skew_ms, true),
        (NOW_MS - skew_ms - 1, false),
        (NOW_MS + skew_ms, true),
        (NOW_MS + skew_ms + 1, false),
    ] {
        assert_eq!(
            guard.check(&signer, &nonce(9), issued_at_ms, NOW_MS).is_ok(),
            inside,
            "at {issued_at_ms}"
        );
    }
    guard.check_and_record(&signer, &nonce(1), NOW_MS, NOW_MS).unwrap();
    guard.check_and_record(&signer, &nonce(2), NOW_MS, NOW_MS).unwrap();
    assert!(matches!(
        guard.check_and_record(&signer, &nonce(1), NOW_MS, NOW_MS),
        Err(EnvelopeError::Replayed(_))
    ));
    assert_eq!((guard.nonces_remembered(), guard.nonces_remembered_for(&signer)), (2, 2));
}

#[test]
fn a_certificate_is_valid_at_both_ends_of_its_window_and_revoked_by_node_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ca = FederationCa::init(&dir.path().join("ca"), "test city", NOW_MS - 86_400_000, 365).unwrap();
    let ca_certificate = CaCertificate::from_pem(ca.certificate_pem()).unwrap();
    let key = NodeKey::generate().unwrap();
    let org = OrgId::new("street/jingansi").unwrap();
    let mut request = IssueRequest::for_days(org, Role::Street, key.node_id(), NOW_MS, 30).unwrap();
    // Whole seconds: X.509 times have no milliseconds.
    request.not_before_ms = NOW_MS;
    request.not_after_ms = NOW_MS + 10_000;
    let certificate = NodeCertificate::from_pem(&ca.issue(&request).unwrap()).unwrap();
    let none = RevocationSet::default();
    let at = |at_ms: u64| certificate.verify(&ca_certificate, at_ms, &none);
    assert!(at(NOW_MS).is_ok() && at(NOW_MS + 10_000).is_ok());
    assert!(matches!(at(NOW_MS - 1), Err(CertificateError::NotYetValid { .. })));
    assert!(matches!(at(NOW_MS + 10_001), Err(CertificateError::Expired { .. })));
    let by_node = RevocationSet { nodes: [key.node_id()].into(), ..RevocationSet::default() };
    assert!(matches!(
        certificate.verify(&ca_certificate, NOW_MS, &by_node),
        Err(CertificateError::Revoked(_))
    ));
}

#[test]
fn a_key_file_is_read_up_to_sixteen_kibibytes_and_its_debug_form_is_the_peer_id() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: usize| {
        let path = dir.path().join(name);
        std::fs::write(&path, vec![b'x'; bytes]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let within = NodeKey::load(&write("within.key", 16 * 1024));
    assert!(within.is_err() && !matches!(within, Err(KeyError::TooLarge(_))), "{within:?}");
    assert!(matches!(NodeKey::load(&write("over.key", 16 * 1024 + 1)), Err(KeyError::TooLarge(_))));
    let key = NodeKey::generate().unwrap();
    assert_eq!(format!("{key:?}"), format!("NodeKey({})", key.node_id()));
}

#[test]
fn organisations_and_roles_read_as_written() {
    let org = OrgId::new("street/jingansi").unwrap();
    assert_eq!(org.to_string(), "street/jingansi");
    assert_eq!(format!("{org:?}"), "OrgId(street/jingansi)");
    assert_eq!(String::from(org.clone()), "street/jingansi");
    assert_eq!(Role::Street.to_string(), "street");
}

#[test]
fn a_huge_claimed_length_is_a_typed_error_not_an_allocation() {
    let claim = codec::encode(&u64::MAX).unwrap();
    assert!(codec::decode_exact::<Vec<u8>>(&claim, 1 << 20).is_err());
}

#[test]
fn envelopes_differ_by_signature_alone_and_name_their_signer() {
    let key = NodeKey::generate().unwrap();
    let envelope = SignedEnvelope::sign(&key, &"hello".to_string(), NOW_MS).unwrap();
    let mut signature = envelope.signature_bytes().to_vec();
    signature[0] ^= 1;
    let forged = SignedEnvelope::<String>::from_parts(envelope.body_bytes().to_vec(), signature);
    assert_ne!(forged, envelope, "same body, another signature");
    assert_eq!(envelope.signer().unwrap(), key.node_id());
}

#[test]
fn a_signers_count_falls_as_its_nonces_leave_the_window() {
    let signer = NodeKey::generate().unwrap().node_id();
    let skew_ms = 1_000;
    let mut guard = ReplayGuard::new(skew_ms, 100);
    guard.check_and_record(&signer, &[1; NONCE_BYTES], NOW_MS, NOW_MS).unwrap();
    guard.check_and_record(&signer, &[2; NONCE_BYTES], NOW_MS + 500, NOW_MS + 500).unwrap();
    // At NOW + 1,200 the first has left the window, the second not.
    guard.check_and_record(&signer, &[3; NONCE_BYTES], NOW_MS + 1_200, NOW_MS + 1_200).unwrap();
    assert_eq!((guard.nonces_remembered(), guard.nonces_remembered_for(&signer)), (2, 2));
}

#[test]
fn a_node_id_that_is_no_ed25519_key_reads_as_hex() {
    let invalid = (0..=255u8)
        .map(|byte| civmesh_certs::NodeId([byte; 32]))
        .find(|node| node.to_peer_id().is_err())
        .expect("some 32-byte value is not an Ed25519 point");
    let hex: String = invalid.0.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(invalid.to_string(), format!("invalid-ed25519:{hex}"));
    assert_eq!(format!("{invalid:?}"), format!("NodeId(invalid-ed25519:{hex})"));
}
