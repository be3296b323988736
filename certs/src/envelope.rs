//! Signed envelopes: every command, request, correction, outcome and access
//! record civmesh exchanges or stores is one of these.
//!
//! The signed bytes are the canonical encoding of (payload, signer, issued_at,
//! nonce), kept verbatim, so verifiers never re-encode to check a signature.
//! The signature is Ed25519 over a domain tag followed by those bytes.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::identity::NodeId;
use crate::key::NodeKey;
use crate::replay_guard::ReplayGuard;
use crate::UnixMillis;

/// The envelope wire format's version byte.
pub const ENVELOPE_FORMAT_VERSION: u8 = 1;
/// The largest envelope accepted, in bytes on the wire.
pub const ENVELOPE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Prefix of every signed message, so an envelope signature can never be
/// mistaken for a signature made for another purpose.
const SIGNING_DOMAIN: &[u8] = b"civmesh/envelope/v1\0";
/// Bytes of random nonce per envelope.
pub const NONCE_BYTES: usize = 16;

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The bytes are not a well-formed envelope (truncated, corrupt, too large).
    #[error("malformed envelope: {0}")]
    Malformed(#[from] CodecError),
    /// The envelope's format version is not one this build understands.
    #[error("unknown envelope format version {0} (expected {ENVELOPE_FORMAT_VERSION})")]
    VersionUnknown(u8),
    /// The envelope or its signed body is not in canonical form.
    #[error("envelope is not canonically encoded")]
    NonCanonical,
    /// The signer's key is not a valid Ed25519 public key.
    #[error("envelope signer key is not a valid Ed25519 key")]
    SignerKeyInvalid,
    /// The signature does not verify under the signer's key.
    #[error("envelope signature does not verify for signer {0}")]
    SignatureInvalid(NodeId),
    /// The envelope is signed by someone other than expected.
    #[error("envelope signed by {actual}, expected {expected}")]
    UnexpectedSigner {
        /// Who should have signed.
        expected: NodeId,
        /// Who did.
        actual: NodeId,
    },
    /// The timestamp is outside the accepted window around now.
    #[error("envelope issued at {issued_at_ms}, outside ±{skew_ms_max} ms of now ({now_ms})")]
    TimestampOutsideWindow {
        /// The envelope's time.
        issued_at_ms: UnixMillis,
        /// The verifier's time.
        now_ms: UnixMillis,
        /// The window's half-width.
        skew_ms_max: u64,
    },
    /// This signer's nonce was seen before: a replay.
    #[error("envelope from {0} replays a nonce already seen")]
    Replayed(NodeId),
    /// The replay cache is full of envelopes still inside the window.
    #[error("replay cache is full ({0} nonces in the window); refusing until older ones expire")]
    ReplayCacheFull(usize),
    /// This signer has used up its share of the replay cache: its own
    /// envelopes are refused until older ones expire; other signers'
    /// are not affected.
    #[error("signer {signer} has {count} nonces in the window, its quota; refusing until older ones expire")]
    SignerQuotaFull {
        /// The signer over its quota.
        signer: NodeId,
        /// How many of its nonces are in the window.
        count: usize,
    },
    /// The system random source failed while making a nonce.
    #[error("the system random source failed")]
    RandomSourceFailed,
}

#[derive(Serialize, Deserialize)]
struct EnvelopeBody<T> {
    payload: T,
    signer: NodeId,
    issued_at_ms: UnixMillis,
    nonce: [u8; NONCE_BYTES],
}

impl<T> From<EnvelopeBody<T>> for VerifiedEnvelope<T> {
    fn from(body: EnvelopeBody<T>) -> Self {
        VerifiedEnvelope {
            payload: body.payload,
            signer: body.signer,
            issued_at_ms: body.issued_at_ms,
            nonce: body.nonce,
        }
    }
}

/// A body to sign, as encoded; the same bytes as [`EnvelopeBody`].
#[derive(Serialize)]
struct BodyRef<'a, T> {
    payload: &'a T,
    signer: NodeId,
    issued_at_ms: UnixMillis,
    nonce: [u8; NONCE_BYTES],
}

/// The wire form, as decoded.
#[derive(Serialize, Deserialize)]
struct EnvelopeWire {
    version: u8,
    body: Vec<u8>,
    signature: Vec<u8>,
}

/// The wire form, as encoded; the same bytes as [`EnvelopeWire`].
#[derive(Serialize)]
struct EnvelopeWireRef<'a> {
    version: u8,
    body: &'a [u8],
    signature: &'a [u8],
}

/// A payload signed by a node. Construct with [`SignedEnvelope::sign`];
/// read only through [`SignedEnvelope::verify_signature`] or
/// [`SignedEnvelope::verify`].
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SignedEnvelope<T> {
    body: Vec<u8>,
    signature: Vec<u8>,
    #[serde(skip)]
    payload_type: PhantomData<fn() -> T>,
}

impl<T> Clone for SignedEnvelope<T> {
    fn clone(&self) -> Self {
        SignedEnvelope {
            body: self.body.clone(),
            signature: self.signature.clone(),
            payload_type: PhantomData,
        }
    }
}

impl<T> PartialEq for SignedEnvelope<T> {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body && self.signature == other.signature
    }
}

impl<T> Eq for SignedEnvelope<T> {}

impl<T> std::fmt::Debug for SignedEnvelope<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the body: it may hold personal data.
        write!(f, "SignedEnvelope({} body bytes)", self.body.len())
    }
}

/// A verified envelope's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEnvelope<T> {
    /// The payload.
    pub payload: T,
    /// Who signed it.
    pub signer: NodeId,
    /// When the signer says it signed it.
    pub issued_at_ms: UnixMillis,
    /// The signer's nonce.
    pub nonce: [u8; NONCE_BYTES],
}

impl<T: Serialize + DeserializeOwned> SignedEnvelope<T> {
    /// Signs `payload` as `key` at `issued_at_ms`, with a fresh random nonce.
    pub fn sign(key: &NodeKey, payload: &T, issued_at_ms: UnixMillis) -> Result<Self, EnvelopeError> {
        use ring::rand::SecureRandom;
        let mut nonce = [0u8; NONCE_BYTES];
        ring::rand::SystemRandom::new().fill(&mut nonce).map_err(|_| EnvelopeError::RandomSourceFailed)?;
        Self::sign_with_nonce(key, payload, issued_at_ms, nonce)
    }

    /// Signs with a caller-chosen nonce (deterministic tests and benchmarks).
    pub fn sign_with_nonce(
        key: &NodeKey,
        payload: &T,
        issued_at_ms: UnixMillis,
        nonce: [u8; NONCE_BYTES],
    ) -> Result<Self, EnvelopeError> {
        let body = codec::encode(&BodyRef { payload, signer: key.node_id(), issued_at_ms, nonce })?;
        let signature = key.sign(&signing_message(&body)).to_vec();
        Ok(SignedEnvelope { body, signature, payload_type: PhantomData })
    }

    /// Signs `payload` with the key whose seed is `seed` so that ZIP 215
    /// accepts the signature and RFC 8032's cofactorless check does not:
    /// R is a point of order 8 and S = k·a ([`crate::signature`]). Only
    /// for tests that every verifier gives such a signature one verdict.
    #[cfg(any(test, feature = "fixtures"))]
    pub fn sign_zip215_only(
        seed: &[u8; 32],
        payload: &T,
        issued_at_ms: UnixMillis,
    ) -> Result<Self, EnvelopeError> {
        let (public_key, sign) = crate::signature::zip215_only_signer(seed);
        let body = codec::encode(&BodyRef {
            payload,
            signer: NodeId(public_key),
            issued_at_ms,
            nonce: [7; NONCE_BYTES],
        })?;
        let signature = sign(&signing_message(&body)).to_vec();
        Ok(SignedEnvelope { body, signature, payload_type: PhantomData })
    }

    /// Checks the signature against the signer named inside, and decodes.
    /// This is the check the state machine repeats at apply time.
    pub fn verify_signature(&self) -> Result<VerifiedEnvelope<T>, EnvelopeError> {
        let body = self.decode_body()?;
        if !crate::signature::verify(&body.signer.0, &signing_message(&self.body), &self.signature) {
            return Err(EnvelopeError::SignatureInvalid(body.signer));
        }
        Ok(body.into())
    }

    /// Decodes as [`SignedEnvelope::verify_signature`] does, and queues the
    /// signature in `batch` instead of checking it: the contents count as
    /// verified only once the batch verifies.
    pub fn queue_signature(
        &self,
        batch: &mut crate::signature::Batch,
    ) -> Result<VerifiedEnvelope<T>, EnvelopeError> {
        let body = self.decode_body()?;
        batch.queue(&body.signer.0, &signing_message(&self.body), &self.signature);
        Ok(body.into())
    }

    /// Decodes as [`SignedEnvelope::verify_signature`] does, without the
    /// signature check: only for an envelope whose signature the caller has
    /// already verified (an auditor's parallel pass over a bundle).
    pub fn decode_already_verified(&self) -> Result<VerifiedEnvelope<T>, EnvelopeError> {
        let body = self.decode_body()?;
        Ok(body.into())
    }

    /// [`SignedEnvelope::verify_signature`], then the replay window and the
    /// seen-nonce cache. Use where envelopes arrive from the network.
    pub fn verify(
        &self,
        guard: &mut ReplayGuard,
        now_ms: UnixMillis,
    ) -> Result<VerifiedEnvelope<T>, EnvelopeError> {
        let verified = self.verify_signature()?;
        guard.check_and_record(&verified.signer, &verified.nonce, verified.issued_at_ms, now_ms)?;
        Ok(verified)
    }

    /// [`SignedEnvelope::verify`], and that `expected` signed it.
    pub fn verify_from(
        &self,
        expected: &NodeId,
        guard: &mut ReplayGuard,
        now_ms: UnixMillis,
    ) -> Result<VerifiedEnvelope<T>, EnvelopeError> {
        let signer = self.signer()?;
        if signer != *expected {
            return Err(EnvelopeError::UnexpectedSigner { expected: *expected, actual: signer });
        }
        self.verify(guard, now_ms)
    }

    /// The payload, without checking the signature: only for routing a
    /// message to where its signature will be checked.
    pub fn unverified_payload(&self) -> Result<T, EnvelopeError> {
        Ok(self.decode_body()?.payload)
    }

    /// The claimed signer, without checking the signature.
    pub fn signer(&self) -> Result<NodeId, EnvelopeError> {
        Ok(self.decode_body()?.signer)
    }

    /// The body, which must be canonically encoded: the signature covers
    /// these bytes, and a value has one encoding.
    fn decode_body(&self) -> Result<EnvelopeBody<T>, EnvelopeError> {
        codec::decode_canonical(&self.body, ENVELOPE_BYTES_MAX).map_err(canonical_or_malformed)
    }
}

impl<T> SignedEnvelope<T> {
    /// The wire form: version byte, signed body, signature.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EnvelopeError> {
        Ok(codec::encode(&EnvelopeWireRef {
            version: ENVELOPE_FORMAT_VERSION,
            body: &self.body,
            signature: &self.signature,
        })?)
    }

    /// Parses the wire form. The signature is not checked here.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let wire: EnvelopeWire =
            codec::decode_canonical(bytes, ENVELOPE_BYTES_MAX).map_err(canonical_or_malformed)?;
        if wire.version != ENVELOPE_FORMAT_VERSION {
            return Err(EnvelopeError::VersionUnknown(wire.version));
        }
        Ok(SignedEnvelope { body: wire.body, signature: wire.signature, payload_type: PhantomData })
    }

    /// SHA-256 over the signed body and the signature: the envelope's id in
    /// logs and Merkle trees.
    pub fn digest(&self) -> [u8; 32] {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(&(self.body.len() as u64).to_le_bytes());
        context.update(&self.body);
        context.update(&self.signature);
        let mut out = [0u8; 32];
        out.copy_from_slice(context.finish().as_ref());
        out
    }

    /// The signed body bytes (canonical encoding).
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// The Ed25519 signature bytes.
    pub fn signature_bytes(&self) -> &[u8] {
        &self.signature
    }

    /// The bytes of the body and the signature: about the envelope's
    /// encoded size, for byte bounds on batches.
    pub fn wire_bytes(&self) -> usize {
        self.body.len() + self.signature.len()
    }

    /// Rebuilds an envelope from its parts, e.g. from an audit bundle.
    pub fn from_parts(body: Vec<u8>, signature: Vec<u8>) -> Self {
        SignedEnvelope { body, signature, payload_type: PhantomData }
    }
}

fn canonical_or_malformed(error: CodecError) -> EnvelopeError {
    match error {
        CodecError::NonCanonical => EnvelopeError::NonCanonical,
        other => EnvelopeError::Malformed(other),
    }
}

fn signing_message(body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_DOMAIN.len() + body.len());
    message.extend_from_slice(SIGNING_DOMAIN);
    message.extend_from_slice(body);
    message
}
