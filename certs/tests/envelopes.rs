//! Signed envelopes: round trips, tamper detection by property test, typed
//! errors for bad bytes, and replay rejection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use civmesh_certs::{EnvelopeError, NodeKey, ReplayGuard, SignedEnvelope, ENVELOPE_BYTES_MAX};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Payload {
    text: String,
    numbers: Vec<u64>,
    bytes: Vec<u8>,
}

fn payload_strategy() -> impl Strategy<Value = Payload> {
    (
        ".{0,64}",
        proptest::collection::vec(any::<u64>(), 0..16),
        proptest::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(|(text, numbers, bytes)| Payload { text, numbers, bytes })
}

fn key() -> &'static NodeKey {
    static KEY: std::sync::OnceLock<NodeKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| NodeKey::generate().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sign_then_verify_round_trips(payload in payload_strategy(), issued_at_ms in any::<u64>(), nonce in any::<[u8; 16]>()) {
        let envelope = SignedEnvelope::sign_with_nonce(key(), &payload, issued_at_ms, nonce).unwrap();
        let wire = envelope.to_bytes().unwrap();
        let parsed = SignedEnvelope::<Payload>::from_bytes(&wire).unwrap();
        prop_assert_eq!(&parsed, &envelope);
        let verified = parsed.verify_signature().unwrap();
        prop_assert_eq!(verified.payload, payload);
        prop_assert_eq!(verified.signer, key().node_id());
        prop_assert_eq!(verified.issued_at_ms, issued_at_ms);
        prop_assert_eq!(verified.nonce, nonce);
    }

    /// Flipping any single bit of the wire bytes (body, signer, signature,
    /// framing) makes the envelope fail to parse or fail to verify.
    #[test]
    fn any_single_bit_flip_fails(payload in payload_strategy(), bit in any::<prop::sample::Index>()) {
        let envelope = SignedEnvelope::sign(key(), &payload, 1_700_000_000_000).unwrap();
        let mut wire = envelope.to_bytes().unwrap();
        let bit = bit.index(wire.len() * 8);
        wire[bit / 8] ^= 1 << (bit % 8);
        let outcome = SignedEnvelope::<Payload>::from_bytes(&wire).and_then(|e| e.verify_signature());
        prop_assert!(outcome.is_err(), "bit {} flipped and still verified", bit);
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn arbitrary_bytes_are_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let outcome = SignedEnvelope::<Payload>::from_bytes(&bytes).and_then(|e| e.verify_signature());
        prop_assert!(outcome.is_err());
    }
}

#[test]
fn truncated_envelopes_are_typed_errors() {
    let payload = Payload { text: "x".into(), numbers: vec![1], bytes: vec![2; 40] };
    let wire = SignedEnvelope::sign(key(), &payload, 1).unwrap().to_bytes().unwrap();
    for cut in 0..wire.len() {
        match SignedEnvelope::<Payload>::from_bytes(&wire[..cut]).and_then(|e| e.verify_signature()) {
            Err(EnvelopeError::Malformed(_)) | Err(EnvelopeError::SignatureInvalid(_)) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn oversized_and_unknown_version_are_refused() {
    let oversized = vec![0u8; ENVELOPE_BYTES_MAX + 1];
    assert!(matches!(SignedEnvelope::<Payload>::from_bytes(&oversized), Err(EnvelopeError::Malformed(_))));
    let payload = Payload { text: String::new(), numbers: vec![], bytes: vec![] };
    let mut wire = SignedEnvelope::sign(key(), &payload, 1).unwrap().to_bytes().unwrap();
    wire[0] = 9;
    assert_eq!(SignedEnvelope::<Payload>::from_bytes(&wire).unwrap_err(), EnvelopeError::VersionUnknown(9));
}

/// Writes the one-byte length at `at` in its three-byte form (tag 251 and a
/// u16): the same value, not its canonical encoding.
fn lengthen_varint(bytes: &[u8], at: usize) -> Vec<u8> {
    assert!(bytes[at] < 251);
    let mut long = bytes[..at].to_vec();
    long.extend_from_slice(&[251, bytes[at], 0]);
    long.extend_from_slice(&bytes[at + 1..]);
    long
}

#[test]
fn non_canonical_envelopes_are_refused_even_when_signed() {
    let payload = Payload { text: "x".into(), numbers: vec![1], bytes: vec![2; 40] };
    let envelope = SignedEnvelope::sign(key(), &payload, 1).unwrap();
    let wire = envelope.to_bytes().unwrap();
    // The wire form: version, then the body's length at byte 1.
    let long_wire = lengthen_varint(&wire, 1);
    assert_eq!(SignedEnvelope::<Payload>::from_bytes(&long_wire).unwrap_err(), EnvelopeError::NonCanonical);
    // A body whose first length (the text's) is written long, and signed
    // as it stands: the signature holds, the encoding does not.
    let long_body = lengthen_varint(envelope.body_bytes(), 0);
    let mut message = b"civmesh/envelope/v1\0".to_vec();
    message.extend_from_slice(&long_body);
    let signed = SignedEnvelope::<Payload>::from_parts(long_body, key().sign(&message).to_vec());
    assert_eq!(signed.verify_signature().unwrap_err(), EnvelopeError::NonCanonical);
    assert_eq!(signed.unverified_payload().unwrap_err(), EnvelopeError::NonCanonical);
    // The same bytes in canonical form verify.
    assert_eq!(
        SignedEnvelope::<Payload>::from_bytes(&wire).unwrap().verify_signature().unwrap().payload,
        payload
    );
}

#[test]
fn replays_and_stale_timestamps_are_refused() {
    let now_ms = 1_800_000_000_000;
    let payload = Payload { text: "query".into(), numbers: vec![], bytes: vec![] };
    let mut guard = ReplayGuard::new(30_000, 1000);
    let envelope = SignedEnvelope::sign(key(), &payload, now_ms).unwrap();
    envelope.verify(&mut guard, now_ms).unwrap();
    assert_eq!(envelope.verify(&mut guard, now_ms + 1), Err(EnvelopeError::Replayed(key().node_id())));

    let stale = SignedEnvelope::sign(key(), &payload, now_ms - 31_000).unwrap();
    assert!(matches!(stale.verify(&mut guard, now_ms), Err(EnvelopeError::TimestampOutsideWindow { .. })));
    let future = SignedEnvelope::sign(key(), &payload, now_ms + 31_000).unwrap();
    assert!(matches!(future.verify(&mut guard, now_ms), Err(EnvelopeError::TimestampOutsideWindow { .. })));

    // Once the first envelope's time has left the window, it is still refused:
    // by the window now, not the cache, and the cache has let it go.
    assert!(matches!(
        envelope.verify(&mut guard, now_ms + 60_000),
        Err(EnvelopeError::TimestampOutsideWindow { .. })
    ));
    let fresh = SignedEnvelope::sign(key(), &payload, now_ms + 60_000).unwrap();
    fresh.verify(&mut guard, now_ms + 60_000).unwrap();
    assert_eq!(guard.nonces_remembered(), 1);
}

#[test]
fn replay_cache_bound_fails_closed() {
    let now_ms = 1_800_000_000_000;
    let payload = Payload { text: String::new(), numbers: vec![], bytes: vec![] };
    let mut guard = ReplayGuard::new(30_000, 2);
    for _ in 0..2 {
        SignedEnvelope::sign(key(), &payload, now_ms).unwrap().verify(&mut guard, now_ms).unwrap();
    }
    let third = SignedEnvelope::sign(key(), &payload, now_ms).unwrap();
    assert_eq!(third.verify(&mut guard, now_ms), Err(EnvelopeError::ReplayCacheFull(2)));
}

#[test]
fn verify_from_checks_the_expected_signer() {
    let other = NodeKey::generate().unwrap();
    let payload = Payload { text: String::new(), numbers: vec![], bytes: vec![] };
    let envelope = SignedEnvelope::sign(&other, &payload, 5).unwrap();
    let mut guard = ReplayGuard::new(30_000, 10);
    assert!(matches!(
        envelope.verify_from(&key().node_id(), &mut guard, 5),
        Err(EnvelopeError::UnexpectedSigner { .. })
    ));
}

#[test]
fn one_signer_over_its_quota_does_not_block_another() {
    let now_ms = 1_800_000_000_000;
    let payload = Payload { text: String::new(), numbers: vec![], bytes: vec![] };
    let other = NodeKey::generate().unwrap();
    let mut guard = ReplayGuard::with_signer_quota(30_000, 10, 2);
    for _ in 0..2 {
        SignedEnvelope::sign(key(), &payload, now_ms).unwrap().verify(&mut guard, now_ms).unwrap();
    }
    let third = SignedEnvelope::sign(key(), &payload, now_ms).unwrap();
    assert_eq!(
        third.verify(&mut guard, now_ms),
        Err(EnvelopeError::SignerQuotaFull { signer: key().node_id(), count: 2 })
    );
    SignedEnvelope::sign(&other, &payload, now_ms).unwrap().verify(&mut guard, now_ms).unwrap();
    assert_eq!(guard.nonces_remembered_for(&key().node_id()), 2);
    assert_eq!(guard.nonces_remembered_for(&other.node_id()), 1);
    // Once its nonces leave the window, the signer has its quota back.
    let later = SignedEnvelope::sign(key(), &payload, now_ms + 60_000).unwrap();
    later.verify(&mut guard, now_ms + 60_000).unwrap();
    assert_eq!(guard.nonces_remembered_for(&key().node_id()), 1);
    assert_eq!(guard.nonces_remembered_for(&other.node_id()), 0);
}

#[test]
fn the_window_never_moves_back() {
    let now_ms = 1_800_000_000_000;
    let payload = Payload { text: String::new(), numbers: vec![], bytes: vec![] };
    let mut guard = ReplayGuard::new(30_000, 10);
    let old = SignedEnvelope::sign(key(), &payload, now_ms).unwrap();
    old.verify(&mut guard, now_ms).unwrap();
    // Time moves on: the old nonce leaves the cache.
    SignedEnvelope::sign(key(), &payload, now_ms + 60_000)
        .unwrap()
        .verify(&mut guard, now_ms + 60_000)
        .unwrap();
    assert_eq!(guard.nonces_remembered(), 1);
    // Presented again with an old "now", it is still refused: the window is
    // measured from the latest now seen.
    assert!(matches!(old.verify(&mut guard, now_ms), Err(EnvelopeError::TimestampOutsideWindow { .. })));
    assert_eq!(guard.now_ms_latest(), now_ms + 60_000);
    // `check` refuses a replay without recording anything.
    let fresh = SignedEnvelope::sign(key(), &payload, now_ms + 60_000).unwrap();
    let verified = fresh.verify_signature().unwrap();
    guard.check(&verified.signer, &verified.nonce, verified.issued_at_ms, now_ms + 60_000).unwrap();
    assert_eq!(guard.nonces_remembered(), 1);
}
