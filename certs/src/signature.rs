//! The one Ed25519 verification rule: ZIP 215
//! (<https://zips.z.cash/zip-0215>), single or batched, through
//! `ed25519-zebra`.
//!
//! Every signature civmesh checks (envelopes at the edge and at apply on
//! every replica, certificates, the auditor's replay) is checked here, so
//! every verifier gives every signature the same verdict. Under ZIP 215 a
//! batch of signatures verifies exactly when each verifies on its own,
//! which plain RFC 8032 implementations do not promise: without it, a
//! crafted signature could pass one replica's batch and fail another's
//! single check. ZIP 215 accepts every signature RFC 8032 accepts (signing
//! is unchanged: ring).
//!
//! The rule: S must be below the group order; A and R may be any encoding
//! of a curve point (non-canonical ones included); the check is the
//! cofactored equation `[8][S]B = [8]R + [8][k]A`, k = SHA-512(R ‖ A ‖ M).

use ed25519_zebra::batch;
use ed25519_zebra::{Signature, VerificationKey, VerificationKeyBytes};

/// The bytes of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// Whether `signature` is `public_key`'s over `message`, under ZIP 215.
pub fn verify(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let Ok(signature) = <[u8; SIGNATURE_BYTES]>::try_from(signature) else { return false };
    VerificationKey::try_from(*public_key)
        .and_then(|key| key.verify(&Signature::from_bytes(&signature), message))
        .is_ok()
}

/// Signatures checked together: about twice as cheap per signature as one
/// at a time, and, under ZIP 215, true exactly when every one verifies.
#[derive(Default)]
pub struct Batch {
    verifier: batch::Verifier,
    malformed: bool,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Adds `public_key`'s `signature` over `message`.
    pub fn queue(&mut self, public_key: &[u8; 32], message: &[u8], signature: &[u8]) {
        let Ok(signature) = <[u8; SIGNATURE_BYTES]>::try_from(signature) else {
            self.malformed = true;
            return;
        };
        let key = VerificationKeyBytes::from(*public_key);
        self.verifier.queue((key, Signature::from_bytes(&signature), message));
    }

    /// Whether every queued signature verifies. The random coefficients
    /// come from the operating system; a batch that fails says only that
    /// one did not, so the caller checks them one by one to say which.
    pub fn verify(self) -> bool {
        !self.malformed && self.verifier.verify(rand_core::OsRng).is_ok()
    }
}

/// The public key of the Ed25519 key with `seed`, and a signer that makes
/// signatures only ZIP 215 accepts: R is a point of order 8, S = k·a, so
/// `[S]B − [k]A` is the identity, not R (RFC 8032 without the cofactor
/// refuses), while `[8]([S]B − R − [k]A)` is the identity (ZIP 215
/// accepts). Anyone holding the key can make one, which is why every
/// verifier must use the same rule.
#[cfg(any(test, feature = "fixtures"))]
pub fn zip215_only_signer(seed: &[u8; 32]) -> ([u8; 32], impl Fn(&[u8]) -> [u8; SIGNATURE_BYTES]) {
    use curve25519_dalek::{constants, scalar::Scalar};
    let expanded = ring::digest::digest(&ring::digest::SHA512, seed);
    let mut clamped = [0u8; 32];
    clamped.copy_from_slice(&expanded.as_ref()[..32]);
    clamped[0] &= 248;
    clamped[31] &= 127;
    clamped[31] |= 64;
    let secret = Scalar::from_bytes_mod_order(clamped);
    let public_key = (constants::ED25519_BASEPOINT_POINT * secret).compress().to_bytes();
    let r = constants::EIGHT_TORSION[1].compress().to_bytes();
    let sign = move |message: &[u8]| {
        let mut context = ring::digest::Context::new(&ring::digest::SHA512);
        context.update(&r);
        context.update(&public_key);
        context.update(message);
        let mut wide = [0u8; 64];
        wide.copy_from_slice(context.finish().as_ref());
        let s = Scalar::from_bytes_mod_order_wide(&wide) * secret;
        let mut signature = [0u8; SIGNATURE_BYTES];
        signature[..32].copy_from_slice(&r);
        signature[32..].copy_from_slice(&s.to_bytes());
        signature
    };
    (public_key, sign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeKey;

    #[test]
    fn single_and_batch_agree_on_good_and_bad_signatures() {
        let keys: Vec<NodeKey> = (0..4).map(|_| NodeKey::generate().unwrap()).collect();
        let signed: Vec<([u8; 32], Vec<u8>, [u8; 64])> = keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let message = format!("message {index}").into_bytes();
                (key.node_id().0, message.clone(), key.sign(&message))
            })
            .collect();
        let batch_of = |items: &[([u8; 32], Vec<u8>, [u8; 64])]| {
            let mut batch = Batch::new();
            for (key, message, signature) in items {
                batch.queue(key, message, signature);
            }
            batch.verify()
        };
        assert!(signed.iter().all(|(key, message, signature)| verify(key, message, signature)));
        assert!(batch_of(&signed));
        let mut damaged = signed.clone();
        damaged[2].2[5] ^= 1;
        assert!(!verify(&damaged[2].0, &damaged[2].1, &damaged[2].2));
        assert!(!batch_of(&damaged));
        let mut other_message = signed.clone();
        other_message[0].1.push(b'!');
        assert!(!batch_of(&other_message));
        assert!(!verify(&signed[0].0, &signed[0].1, &signed[0].2[..63]), "a short signature");
        let mut short = Batch::new();
        short.queue(&signed[0].0, &signed[0].1, &signed[0].2[..63]);
        assert!(!short.verify());
        assert!(Batch::new().verify(), "an empty batch holds nothing false");
    }

    #[test]
    fn a_signature_only_zip_215_accepts_gets_one_verdict_from_single_and_batch() {
        let seed = [42u8; 32];
        let (public_key, sign) = zip215_only_signer(&seed);
        let message = b"a command";
        let signature = sign(message);
        // RFC 8032 without the cofactor (ring, which civmesh verified with
        // before) refuses it; ZIP 215 accepts it, alone and in a batch.
        let ring_verdict = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public_key)
            .verify(message, &signature)
            .is_ok();
        assert!(!ring_verdict);
        assert!(verify(&public_key, message, &signature));
        let mut batch = Batch::new();
        batch.queue(&public_key, message, &signature);
        let other = NodeKey::generate().unwrap();
        batch.queue(&other.node_id().0, b"x", &other.sign(b"x"));
        assert!(batch.verify());
        // It is the key's: ring derives the same public key from the seed.
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        assert_eq!(ring::signature::KeyPair::public_key(&pair).as_ref(), public_key);
        // And it is bound to its message like any signature.
        assert!(!verify(&public_key, b"another command", &signature));
    }
}
