//! Listing cursors: where a listing resumes, sealed by the owner so the
//! requester can neither read nor change it.
//!
//! A cursor is `1 ‖ salt (32 bytes) ‖ ChaCha20-Poly1305(body)`, keyed by
//! HKDF-SHA256 of the owner's cursor key with the random salt (a fresh key
//! per cursor, so nonces never repeat however many cursors are made). The
//! body binds the requester, the listing (dataset, grant and filters), the
//! scan position and when it was made.

use std::path::Path;

use civmesh_certs::{codec, NodeId, UnixMillis};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The cursor key's file in the node's data directory (mode 0600).
pub const CURSOR_KEY_FILE: &str = "list-cursor.key";
/// The longest cursor accepted, in bytes.
pub const CURSOR_BYTES_MAX: usize = 2_048;
const CURSOR_VERSION: u8 = 1;
/// Every cursor's plaintext is padded to this length.
const PLAIN_BYTES: usize = 1_536;
const SALT_BYTES: usize = 32;
const KEY_BYTES: usize = 32;
const CONTEXT: &[u8] = b"civmesh/list-cursor/v1";

/// What a cursor holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorBody {
    /// The node the listing is for.
    pub requester: NodeId,
    /// The listing's identity: SHA-256 of its dataset, grant and filters.
    pub listing: [u8; 32],
    /// Where the scan resumes (after this entry).
    pub position: Vec<u8>,
    /// When the owner made it.
    pub issued_at_ms: UnixMillis,
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum CursorError {
    /// Not a cursor this owner made, or changed since.
    #[error("the cursor is not one this owner made, or it was altered")]
    Forged,
    /// A cursor of another listing or another requester.
    #[error("the cursor belongs to another listing")]
    OtherListing,
    /// Older than the owner keeps cursors valid.
    #[error("the cursor is out of date; start the listing again")]
    Expired,
}

/// Why the cursor key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum CursorKeyError {
    /// The file could not be read or written.
    #[error("the listing cursor key {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold a key.
    #[error("the listing cursor key {0} is not {KEY_BYTES} bytes")]
    Malformed(std::path::PathBuf),
    /// The system random source failed.
    #[error("the system random source failed")]
    Random,
}

/// Seals and opens cursors with this owner's key.
pub struct CursorSealer {
    key: [u8; KEY_BYTES],
    random: SystemRandom,
}

impl std::fmt::Debug for CursorSealer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("CursorSealer")
    }
}

struct CipherKey;

impl ring::hkdf::KeyType for CipherKey {
    fn len(&self) -> usize {
        KEY_BYTES
    }
}

impl CursorSealer {
    /// A sealer with `key`.
    pub fn new(key: [u8; KEY_BYTES]) -> Self {
        CursorSealer { key, random: SystemRandom::new() }
    }

    /// The key in `node_dir`, made (mode 0600, synced) if there is none yet.
    pub fn load_or_create(node_dir: &Path) -> Result<Self, CursorKeyError> {
        let path = node_dir.join(CURSOR_KEY_FILE);
        let io = |source| CursorKeyError::Io { path: path.clone(), source };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key = <[u8; KEY_BYTES]>::try_from(bytes.as_slice())
                    .map_err(|_| CursorKeyError::Malformed(path.clone()))?;
                Ok(CursorSealer::new(key))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_BYTES];
                SystemRandom::new().fill(&mut key).map_err(|_| CursorKeyError::Random)?;
                civmesh_certs::write_new_file_synced(&path, &key, 0o600).map_err(io)?;
                Ok(CursorSealer::new(key))
            }
            Err(error) => Err(io(error)),
        }
    }

    fn cipher(&self, salt: &[u8]) -> Result<LessSafeKey, CursorError> {
        let prk = Salt::new(HKDF_SHA256, salt).extract(&self.key);
        let okm = prk.expand(&[CONTEXT], CipherKey).map_err(|_| CursorError::Forged)?;
        let mut key = [0u8; KEY_BYTES];
        okm.fill(&mut key).map_err(|_| CursorError::Forged)?;
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key).map_err(|_| CursorError::Forged)?;
        Ok(LessSafeKey::new(unbound))
    }

    /// `body`, sealed; `None` if the random source or encoding failed.
    pub fn seal(&self, body: &CursorBody) -> Option<Vec<u8>> {
        let mut salt = [0u8; SALT_BYTES];
        self.random.fill(&mut salt).ok()?;
        // Padded to one length, so a cursor's size tells nothing of where it is.
        let encoded = codec::encode(body).ok()?;
        let length =
            u16::try_from(encoded.len()).ok().filter(|length| usize::from(*length) + 2 <= PLAIN_BYTES)?;
        let mut sealed = Vec::with_capacity(PLAIN_BYTES + 16);
        sealed.extend_from_slice(&length.to_be_bytes());
        sealed.extend_from_slice(&encoded);
        sealed.resize(PLAIN_BYTES, 0);
        let cipher = self.cipher(&salt).ok()?;
        cipher
            .seal_in_place_append_tag(Nonce::assume_unique_for_key([0; 12]), Aad::from(CONTEXT), &mut sealed)
            .ok()?;
        let mut cursor = Vec::with_capacity(1 + SALT_BYTES + sealed.len());
        cursor.push(CURSOR_VERSION);
        cursor.extend_from_slice(&salt);
        cursor.extend_from_slice(&sealed);
        Some(cursor)
    }

    /// Opens `cursor` for `requester`'s listing `listing` at `now_ms`,
    /// refusing it if forged, another's, or older than `age_ms_max`.
    pub fn open(
        &self,
        cursor: &[u8],
        requester: &NodeId,
        listing: &[u8; 32],
        now_ms: UnixMillis,
        age_ms_max: u64,
    ) -> Result<Vec<u8>, CursorError> {
        if cursor.len() > CURSOR_BYTES_MAX || cursor.len() <= 1 + SALT_BYTES || cursor[0] != CURSOR_VERSION {
            return Err(CursorError::Forged);
        }
        let (salt, sealed) = cursor[1..].split_at(SALT_BYTES);
        let mut sealed = sealed.to_vec();
        let plain = self
            .cipher(salt)?
            .open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::from(CONTEXT), &mut sealed)
            .map_err(|_| CursorError::Forged)?;
        let length = plain.get(..2).map(|bytes| usize::from(u16::from_be_bytes([bytes[0], bytes[1]])));
        let encoded = length.and_then(|length| plain.get(2..2 + length)).ok_or(CursorError::Forged)?;
        let body: CursorBody =
            codec::decode_exact(encoded, CURSOR_BYTES_MAX).map_err(|_| CursorError::Forged)?;
        if body.requester != *requester || body.listing != *listing {
            return Err(CursorError::OtherListing);
        }
        if now_ms.saturating_sub(body.issued_at_ms) > age_ms_max || body.issued_at_ms > now_ms + age_ms_max {
            return Err(CursorError::Expired);
        }
        Ok(body.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(requester: NodeId) -> CursorBody {
        CursorBody {
            requester,
            listing: [7; 32],
            position: b"market\0street\0jingansi\0k1".to_vec(),
            issued_at_ms: 1_000,
        }
    }

    fn requester() -> NodeId {
        civmesh_certs::NodeKey::generate().unwrap().node_id()
    }

    #[test]
    fn a_cursor_opens_for_its_listing_only_and_until_it_expires() {
        let sealer = CursorSealer::new([1; 32]);
        let me = requester();
        let cursor = sealer.seal(&body(me)).unwrap();
        assert!(!cursor.windows(8).any(|window| window == b"jingansi"), "the position is not readable");
        assert_eq!(sealer.open(&cursor, &me, &[7; 32], 2_000, 10_000).unwrap(), body(me).position);
        let cases = [
            (CursorSealer::new([2; 32]).open(&cursor, &me, &[7; 32], 2_000, 10_000), CursorError::Forged),
            (sealer.open(&cursor, &requester(), &[7; 32], 2_000, 10_000), CursorError::OtherListing),
            (sealer.open(&cursor, &me, &[8; 32], 2_000, 10_000), CursorError::OtherListing),
            (sealer.open(&cursor, &me, &[7; 32], 20_000, 10_000), CursorError::Expired),
            (sealer.open(&cursor[..10], &me, &[7; 32], 2_000, 10_000), CursorError::Forged),
            (sealer.open(&[], &me, &[7; 32], 2_000, 10_000), CursorError::Forged),
        ];
        for (opened, expected) in cases {
            assert_eq!(opened.unwrap_err(), expected);
        }
        assert_ne!(sealer.seal(&body(me)).unwrap(), cursor, "each cursor has its own salt");
        let longer = CursorBody { position: vec![b'k'; 600], ..body(me) };
        assert_eq!(sealer.seal(&longer).unwrap().len(), cursor.len(), "every cursor has one length");
    }

    #[test]
    fn the_key_file_is_made_once_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let me = requester();
        let cursor = CursorSealer::load_or_create(dir.path()).unwrap().seal(&body(me)).unwrap();
        let mode = std::fs::metadata(dir.path().join(CURSOR_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let reloaded = CursorSealer::load_or_create(dir.path()).unwrap();
        assert!(reloaded.open(&cursor, &me, &[7; 32], 2_000, 10_000).is_ok(), "cursors outlive a restart");
        std::fs::write(dir.path().join(CURSOR_KEY_FILE), b"short").unwrap();
        assert!(matches!(CursorSealer::load_or_create(dir.path()), Err(CursorKeyError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn any_change_to_a_cursor_is_refused(index in 0usize..200, bit in 0u8..8) {
            let sealer = CursorSealer::new([3; 32]);
            let me = requester();
            let mut cursor = sealer.seal(&body(me)).unwrap();
            let index = index % cursor.len();
            cursor[index] ^= 1 << bit;
            prop_assert!(sealer.open(&cursor, &me, &[7; 32], 2_000, 10_000).is_err());
        }
    }
}
