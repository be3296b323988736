//! civmesh identity: everything a node signs, verifies and trusts goes through
//! this crate.
//!
//! - [`NodeKey`]: an Ed25519 key in a PKCS#8 file (mode 0600), which is also
//!   the node's libp2p identity; [`NodeId`] is its public half, shown as a
//!   libp2p PeerId.
//! - [`FederationCa`]: the federation root, which issues node certificates
//!   binding an [`OrgId`], a [`Role`] and a [`NodeId`].
//! - [`NodeCertificate`]: parsing and verification of those certificates.
//! - [`SignedEnvelope`]: canonical bincode bytes of a payload with its signer,
//!   time and nonce, signed with Ed25519; [`ReplayGuard`] rejects replays.
//! - [`signature`]: the one verification rule (ZIP 215), single and batched.
//!
//! The crate is pure and synchronous: no async runtime, and the only I/O is
//! reading and writing key and certificate files the caller names.

mod ca;
mod certificate;
pub mod codec;
mod envelope;
mod identity;
mod key;
mod replay_guard;
pub mod signature;

pub use ca::{
    CaError, FederationCa, IssueRequest, CA_CERT_FILE_NAME, CA_KEY_FILE_NAME, CERTIFICATE_VALIDITY_DAYS_MAX,
};
pub use certificate::{
    CaCertificate, CertificateError, NodeCertificate, RevocationSet, VerifiedIdentity, CERTIFICATE_BYTES_MAX,
};
pub use envelope::{
    EnvelopeError, SignedEnvelope, VerifiedEnvelope, ENVELOPE_BYTES_MAX, ENVELOPE_FORMAT_VERSION, NONCE_BYTES,
};
pub use identity::{IdentityError, NodeId, OrgId, Role};
pub use key::{write_new_file_synced, KeyError, NodeKey};
pub use replay_guard::{MemoryNonces, NonceStore, ReplayGuard, ReplayGuardDecodeError, WindowNonce};

/// Milliseconds since the Unix epoch, the one time unit every civmesh
/// signature and validity check uses.
pub type UnixMillis = u64;

/// The current wall-clock time in milliseconds since the Unix epoch.
pub fn now_unix_millis() -> UnixMillis {
    let elapsed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}
