//! Correction attachments: the photos and scans a street sends as evidence.
//!
//! The submitter uploads each file to its own node (`POST
//! /v1/corrections/attachments`, kept by SHA-256), signs the request with
//! the digests, and after the owner stored the request its worker sends
//! each attachment over `/civmesh/correction/1` in chunks of at most
//! [`ATTACHMENT_CHUNK_BYTES_MAX`] ([`AttachmentChunk`]), in order, each
//! acknowledged; a repeated chunk is acknowledged and ignored, so a
//! retry after a crash or a lost answer only resends. The owner keeps the
//! chunks (synced), and when the last one arrives checks the whole against
//! the signed digest: equal, it keeps the attachment beside the correction;
//! different, it keeps nothing and refuses. Only the digests are signed,
//! and nothing of an attachment enters the policy log.

use std::sync::atomic::Ordering;

use civmesh_certs::{NodeId, SignedEnvelope};
use civmesh_policy::correction::{CorrectionId, CorrectionRequest, CORRECTION_ATTACHMENTS_MAX};
use serde::{Deserialize, Serialize};

use crate::corrections::worker::SendError;
use crate::corrections::{
    hex_id, CorrectionAck, CorrectionError, CorrectionMessage, CorrectionService, Side,
};
use crate::records::RecordStoreError;

/// Attachments one correction carries at most, unless `civmesh.toml` says.
pub const ATTACHMENTS_MAX_DEFAULT: usize = 5;
/// The largest attachment, unless `civmesh.toml` says, in bytes.
pub const ATTACHMENT_BYTES_MAX_DEFAULT: u64 = 20 * 1024 * 1024;
/// How long the owner waits for a correction's attachments before it
/// decides without them (the view then shows which did not arrive).
pub const ATTACHMENT_WAIT_MS_MAX: u64 = 60_000;
/// The bytes of one chunk at most (well under the correction protocol's
/// message bound, `CORRECTION_MESSAGE_BYTES_MAX`).
pub const ATTACHMENT_CHUNK_BYTES_MAX: usize = 192 * 1024;

/// Why the owner refused an attachment chunk (the submitter reads it in
/// [`CorrectionAck::Refused`]).
#[derive(Debug, thiserror::Error)]
enum ChunkRefusal {
    /// No inbox entry from this peer for the correction.
    #[error("no such correction from this node in this inbox")]
    NoSuchCorrection,
    /// The stored request does not decode.
    #[error("the stored request does not decode")]
    RequestCorrupt,
    /// The entry could not be read.
    #[error(transparent)]
    Entry(#[from] CorrectionError),
    /// The chunk does not fit the attachment or its bounds.
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    /// The record store failed.
    #[error("{0}")]
    Store(#[from] RecordStoreError),
}

/// Why the submitter could not send an attachment to the owner.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendAttachmentError {
    /// The request names no attachment at that index.
    #[error("no such attachment")]
    IndexUnknown,
    /// The record store failed.
    #[error("{0}")]
    Store(#[from] RecordStoreError),
    /// This node does not hold it.
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    /// A chunk did not reach the owner.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The owner refused a chunk.
    #[error("the owner refused attachment {index}: {reason}")]
    Refused {
        /// The attachment's index.
        index: u32,
        /// Why, in the owner's words.
        reason: String,
    },
}

/// The bounds a node enforces, from `[corrections]` in `civmesh.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachmentLimits {
    /// Attachments per correction at most.
    pub attachments_max: usize,
    /// Bytes per attachment at most.
    pub attachment_bytes_max: u64,
}

impl Default for AttachmentLimits {
    fn default() -> Self {
        AttachmentLimits {
            attachments_max: ATTACHMENTS_MAX_DEFAULT,
            attachment_bytes_max: ATTACHMENT_BYTES_MAX_DEFAULT,
        }
    }
}

impl From<crate::config::CorrectionsSection> for AttachmentLimits {
    fn from(section: crate::config::CorrectionsSection) -> Self {
        AttachmentLimits {
            attachments_max: section.attachments_max.min(CORRECTION_ATTACHMENTS_MAX),
            attachment_bytes_max: section.attachment_bytes_max,
        }
    }
}

/// Why an attachment was refused. Nothing of a refused attachment is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// More attachments than the bound.
    #[error("{count} attachments, at most {max} (attachments_max in civmesh.toml)")]
    TooMany {
        /// How many were given.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// An attachment over the size bound.
    #[error("attachment {name} is {bytes} bytes, over the bound of {max} bytes (attachment_bytes_max in civmesh.toml)")]
    TooLarge {
        /// The file, or the attachment's index.
        name: String,
        /// Its size.
        bytes: u64,
        /// The bound.
        max: u64,
    },
    /// The bytes that arrived are not the ones whose digest was signed.
    #[error("attachment {index}'s bytes do not match its signed SHA-256 (signed {signed}, received {received}); nothing kept")]
    DigestMismatch {
        /// The attachment's index in the request.
        index: u32,
        /// The signed digest, hex.
        signed: String,
        /// The digest of what arrived, hex.
        received: String,
    },
    /// A digest the request names that this node does not hold.
    #[error("attachment {0} was not uploaded to this node (POST /v1/corrections/attachments)")]
    NotUploaded(String),
    /// An index the request does not have.
    #[error("correction {correction} has no attachment {index}")]
    IndexUnknown {
        /// The correction, hex.
        correction: String,
        /// The index asked for.
        index: u32,
    },
    /// The attachment has not (all) arrived yet.
    #[error("attachment {index} of correction {correction} has not arrived")]
    NotArrived {
        /// The correction, hex.
        correction: String,
        /// The index.
        index: u32,
    },
    /// A chunk that does not continue the bytes received so far.
    #[error("attachment {index}: a chunk at offset {offset} of {total} bytes, expected offset {expected}")]
    OutOfOrder {
        /// The index.
        index: u32,
        /// The chunk's offset.
        offset: u64,
        /// The attachment's announced size.
        total: u64,
        /// The offset expected.
        expected: u64,
    },
}

/// One chunk of one attachment, from the submitter to the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentChunk {
    /// The correction.
    #[serde(with = "civmesh_policy::hex_digest")]
    pub correction: CorrectionId,
    /// Which attachment (its index in the request's digests).
    pub index: u32,
    /// The attachment's size.
    pub total_bytes: u64,
    /// Where this chunk starts.
    pub offset: u64,
    /// At most [`ATTACHMENT_CHUNK_BYTES_MAX`] bytes.
    pub bytes: Vec<u8>,
}

/// The chunks of `bytes` for attachment `index` of `correction`, in order
/// (one empty chunk for an empty attachment).
pub fn chunks(correction: CorrectionId, index: u32, bytes: &[u8]) -> Vec<AttachmentChunk> {
    let total_bytes = bytes.len() as u64;
    let mut chunks: Vec<AttachmentChunk> = bytes
        .chunks(ATTACHMENT_CHUNK_BYTES_MAX)
        .enumerate()
        .map(|(number, chunk)| AttachmentChunk {
            correction,
            index,
            total_bytes,
            offset: (number * ATTACHMENT_CHUNK_BYTES_MAX) as u64,
            bytes: chunk.to_vec(),
        })
        .collect();
    if chunks.is_empty() {
        chunks.push(AttachmentChunk { correction, index, total_bytes, offset: 0, bytes: Vec::new() });
    }
    chunks
}

/// What to do with an arriving chunk, given the bytes already received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkFit {
    /// Received before: acknowledge, keep nothing.
    Repeat,
    /// The next chunk, not the last: keep it.
    Next,
    /// The last chunk: assemble and check.
    Last,
}

/// Where `chunk` fits after `received` bytes, under `limits`.
pub fn fit(
    chunk: &AttachmentChunk,
    received: u64,
    limits: AttachmentLimits,
) -> Result<ChunkFit, AttachmentError> {
    if chunk.total_bytes > limits.attachment_bytes_max {
        return Err(AttachmentError::TooLarge {
            name: chunk.index.to_string(),
            bytes: chunk.total_bytes,
            max: limits.attachment_bytes_max,
        });
    }
    let out_of_order = || AttachmentError::OutOfOrder {
        index: chunk.index,
        offset: chunk.offset,
        total: chunk.total_bytes,
        expected: received,
    };
    let end = chunk.offset.checked_add(chunk.bytes.len() as u64).ok_or_else(out_of_order)?;
    if chunk.bytes.len() > ATTACHMENT_CHUNK_BYTES_MAX || end > chunk.total_bytes {
        return Err(out_of_order());
    }
    if chunk.offset < received {
        return Ok(ChunkFit::Repeat);
    }
    if chunk.offset > received {
        return Err(out_of_order());
    }
    Ok(if end == chunk.total_bytes { ChunkFit::Last } else { ChunkFit::Next })
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    digest
}

/// Bytes enough for [`content_type`] to tell a file's type.
pub const CONTENT_TYPE_BYTES: usize = 16;

/// The content type, from the bytes' own signature (never from a name the
/// submitter chose): JPEG, PNG, GIF, WebP, HEIC, PDF, or octet-stream.
pub fn content_type(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xff, 0xd8, 0xff, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        [_, _, _, _, b'f', b't', b'y', b'p', b'h', b'e', b'i', b'c', ..] => "image/heic",
        [b'%', b'P', b'D', b'F', ..] => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// A file name extension for a content type.
pub fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/heic" => "heic",
        "application/pdf" => "pdf",
        _ => "bin",
    }
}

/// An attachment as a correction's view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentView {
    /// Its index in the request (`GET /v1/corrections/{id}/attachments/{index}`).
    pub index: u32,
    /// The signed SHA-256, hex.
    pub sha256: String,
    /// Whether this node holds it whole (and checked, at the owner).
    pub held: bool,
    /// Its size, when held.
    pub bytes: Option<u64>,
}

/// The answer of `POST /v1/corrections/attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    /// The SHA-256 to name in the correction, hex.
    pub sha256: String,
    /// The size.
    pub bytes: u64,
    /// The content type, from the bytes.
    pub content_type: String,
}

impl CorrectionService {
    /// Whether this node holds every attachment `request` names.
    pub(super) fn attachments_held(&self, request: &CorrectionRequest) -> bool {
        request
            .attachment_sha256
            .iter()
            .all(|digest| self.records.attachment_len(digest).is_ok_and(|held| held.is_some()))
    }

    /// The bounds on attachments this node enforces.
    pub fn attachment_limits(&self) -> AttachmentLimits {
        AttachmentLimits {
            attachments_max: self.attachments_max.load(Ordering::Relaxed),
            attachment_bytes_max: self.attachment_bytes_max.load(Ordering::Relaxed),
        }
    }

    /// Sets the bounds (from `[corrections]` in `civmesh.toml`).
    pub fn set_attachment_limits(&self, limits: AttachmentLimits) {
        self.attachments_max.store(limits.attachments_max, Ordering::Relaxed);
        self.attachment_bytes_max.store(limits.attachment_bytes_max, Ordering::Relaxed);
    }

    /// Keeps an attachment at the submitter (synced), by its SHA-256, for a
    /// correction to name; returns the digest.
    pub fn upload_attachment(&self, bytes: &[u8]) -> Result<[u8; 32], CorrectionError> {
        let max = self.attachment_limits().attachment_bytes_max;
        if bytes.len() as u64 > max {
            return Err(AttachmentError::TooLarge {
                name: "uploaded".into(),
                bytes: bytes.len() as u64,
                max,
            }
            .into());
        }
        let digest = sha256(bytes);
        self.records
            .put_attachment(&digest, bytes)
            .map_err(|error| CorrectionError::Store(error.to_string()))?;
        Ok(digest)
    }

    /// Attachment `index` of correction `id`, as this node holds it.
    pub fn attachment(&self, id: &CorrectionId, index: u32) -> Result<Vec<u8>, CorrectionError> {
        let digest = self.attachment_digest(id, index)?;
        self.records
            .attachment(&digest)
            .map_err(|error| CorrectionError::Store(error.to_string()))?
            .ok_or_else(|| AttachmentError::NotArrived { correction: hex_id(id), index }.into())
    }

    /// The content type of attachment `index` of correction `id`, from its
    /// first bytes (the rest is not read).
    pub fn attachment_type(&self, id: &CorrectionId, index: u32) -> Result<&'static str, CorrectionError> {
        let digest = self.attachment_digest(id, index)?;
        let head = self
            .records
            .attachment_head(&digest, CONTENT_TYPE_BYTES)
            .map_err(|error| CorrectionError::Store(error.to_string()))?
            .ok_or(AttachmentError::NotArrived { correction: hex_id(id), index })?;
        Ok(content_type(&head))
    }

    /// The digest the request of correction `id` names for attachment `index`.
    fn attachment_digest(&self, id: &CorrectionId, index: u32) -> Result<[u8; 32], CorrectionError> {
        let entry = self.load(id)?.ok_or_else(|| CorrectionError::Unknown(hex_id(id)))?;
        let request = SignedEnvelope::<CorrectionRequest>::from_bytes(&entry.request_bytes)
            .and_then(|envelope| envelope.unverified_payload())
            .map_err(|error| CorrectionError::Store(error.to_string()))?;
        let digest = request
            .attachment_sha256
            .get(index as usize)
            .ok_or(AttachmentError::IndexUnknown { correction: hex_id(id), index })?;
        Ok(*digest)
    }

    /// Sends attachment `index` to the owner, chunk by chunk.
    pub(super) async fn send_attachment(
        &self,
        id: &CorrectionId,
        request: &CorrectionRequest,
        index: u32,
    ) -> Result<(), SendAttachmentError> {
        let digest =
            request.attachment_sha256.get(index as usize).ok_or(SendAttachmentError::IndexUnknown)?;
        let bytes =
            self.records.attachment(digest)?.ok_or_else(|| AttachmentError::NotUploaded(hex_id(digest)))?;
        for chunk in chunks(*id, index, &bytes) {
            match self.send_to_owner(&request.dataset, &CorrectionMessage::Attachment(chunk)).await? {
                CorrectionAck::Stored => {}
                CorrectionAck::Refused(reason) => return Err(SendAttachmentError::Refused { index, reason }),
            }
        }
        Ok(())
    }

    /// The owner's side of an attachment chunk from `peer`.
    pub(super) async fn receive_attachment(&self, peer: NodeId, chunk: AttachmentChunk) -> CorrectionAck {
        match self.keep_chunk(peer, chunk).await {
            Ok(()) => CorrectionAck::Stored,
            Err(refusal) => CorrectionAck::Refused(refusal.to_string()),
        }
    }

    /// Keeps a chunk (synced) if it continues what arrived; the last one is
    /// checked against the signed digest, and the whole kept only if it
    /// matches.
    async fn keep_chunk(&self, peer: NodeId, chunk: AttachmentChunk) -> Result<(), ChunkRefusal> {
        let id = chunk.correction;
        let _guard = self.entries_lock.lock().await;
        let entry = match self.load(&id)? {
            Some(entry) if entry.side == Side::Inbox && entry.submitter == peer => entry,
            _ => return Err(ChunkRefusal::NoSuchCorrection),
        };
        let request = SignedEnvelope::<CorrectionRequest>::from_bytes(&entry.request_bytes)
            .and_then(|envelope| envelope.unverified_payload())
            .map_err(|_| ChunkRefusal::RequestCorrupt)?;
        let limits = self.attachment_limits();
        let signed = request
            .attachment_sha256
            .get(chunk.index as usize)
            .ok_or(AttachmentError::IndexUnknown { correction: hex_id(&id), index: chunk.index })?;
        if request.attachment_sha256.len() > limits.attachments_max {
            let count = request.attachment_sha256.len();
            return Err(AttachmentError::TooMany { count, max: limits.attachments_max }.into());
        }
        if self.records.attachment_len(signed)?.is_some() {
            return Ok(());
        }
        let parts = self.records.attachment_parts(&id, chunk.index)?;
        let received: u64 = parts.iter().map(|(_, bytes)| bytes.len() as u64).sum();
        match fit(&chunk, received, limits)? {
            ChunkFit::Repeat => {}
            ChunkFit::Next => {
                self.records.put_attachment_part(&id, chunk.index, chunk.offset, &chunk.bytes)?
            }
            ChunkFit::Last => {
                let mut whole = Vec::with_capacity(chunk.total_bytes as usize);
                for (_, bytes) in parts {
                    whole.extend_from_slice(&bytes);
                }
                whole.extend_from_slice(&chunk.bytes);
                let _ = self.records.delete_attachment_parts(&id, chunk.index);
                let arrived = sha256(&whole);
                if arrived != *signed {
                    tracing::warn!(correction = %hex_id(&id), index = chunk.index, "an attachment does not match its signed digest; dropped");
                    let (signed, received) = (hex_id(signed), hex_id(&arrived));
                    return Err(
                        AttachmentError::DigestMismatch { index: chunk.index, signed, received }.into()
                    );
                }
                self.records.put_attachment(signed, &whole)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: AttachmentLimits = AttachmentLimits { attachments_max: 5, attachment_bytes_max: 1 << 20 };

    #[test]
    fn chunks_cover_the_bytes_in_order_and_fit_one_after_another() {
        let bytes: Vec<u8> = (0..ATTACHMENT_CHUNK_BYTES_MAX * 2 + 10).map(|i| i as u8).collect();
        let chunks = chunks([7; 32], 1, &bytes);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks.iter().flat_map(|chunk| chunk.bytes.clone()).collect::<Vec<_>>(), bytes);
        let mut received = 0;
        for (number, chunk) in chunks.iter().enumerate() {
            let expected = if number == 2 { ChunkFit::Last } else { ChunkFit::Next };
            assert_eq!(fit(chunk, received, LIMITS), Ok(expected));
            received += chunk.bytes.len() as u64;
        }
        assert_eq!(fit(&chunks[0], received, LIMITS), Ok(ChunkFit::Repeat), "a retry is acknowledged");
        assert!(matches!(fit(&chunks[2], 0, LIMITS), Err(AttachmentError::OutOfOrder { expected: 0, .. })));
        assert_eq!(fit(&super::chunks([7; 32], 0, &[])[0], 0, LIMITS), Ok(ChunkFit::Last));
    }

    #[test]
    fn oversized_or_overlong_chunks_are_refused() {
        let big = AttachmentChunk {
            correction: [1; 32],
            index: 0,
            total_bytes: (1 << 20) + 1,
            offset: 0,
            bytes: vec![],
        };
        assert_eq!(
            fit(&big, 0, LIMITS),
            Err(AttachmentError::TooLarge { name: "0".into(), bytes: (1 << 20) + 1, max: 1 << 20 })
        );
        let past_end =
            AttachmentChunk { correction: [1; 32], index: 0, total_bytes: 3, offset: 0, bytes: vec![0; 4] };
        assert!(matches!(fit(&past_end, 0, LIMITS), Err(AttachmentError::OutOfOrder { .. })));
        let overflow = AttachmentChunk {
            correction: [1; 32],
            index: 0,
            total_bytes: 3,
            offset: u64::MAX,
            bytes: vec![0; 4],
        };
        assert!(fit(&overflow, 0, LIMITS).is_err());
    }

    #[test]
    fn content_types_come_from_the_bytes() {
        assert_eq!(content_type(&[0xff, 0xd8, 0xff, 0xe0, 0]), "image/jpeg");
        assert_eq!(content_type(b"%PDF-1.7"), "application/pdf");
        assert_eq!(content_type(b"\x89PNG\r\n"), "image/png");
        assert_eq!(content_type(b"hello"), "application/octet-stream");
        assert_eq!(extension("application/pdf"), "pdf");
        assert_eq!(
            crate::corrections::hex_id(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
