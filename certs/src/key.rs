//! Node keys: Ed25519 with ring, kept in PKCS#8 PEM files that only their
//! owner may read. The same key is the node's libp2p identity.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::identity::NodeId;

/// The PEM label of a PKCS#8 private key file.
const PKCS8_PEM_LABEL: &str = "PRIVATE KEY";
/// The only mode a key file may have: readable and writable by its owner.
pub(crate) const KEY_FILE_MODE: u32 = 0o600;
/// The largest key file read, in bytes; a real one is under 200.
const KEY_FILE_BYTES_MAX: u64 = 16 * 1024;

/// Why a key could not be made, written or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Refusing to overwrite an existing key file.
    #[error("key file {0} already exists; refusing to overwrite it")]
    AlreadyExists(PathBuf),
    /// The key file may be read by other users.
    #[error("key file {path} has mode {mode:04o}; it must be 0600 (run: chmod 600 {path})")]
    PermissionsTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is larger than any key file could be.
    #[error("key file {0} is too large to be a key")]
    TooLarge(PathBuf),
    /// The file is not PEM with a `PRIVATE KEY` block.
    #[error("key is not a PEM-encoded PKCS#8 private key: {0}")]
    PemMalformed(String),
    /// The DER is not a PKCS#8 Ed25519 key that ring accepts.
    #[error("key is not a PKCS#8 v2 Ed25519 private key: {0}")]
    NotPkcs8Ed25519(String),
    /// The system random number generator failed.
    #[error("could not generate a key: the system random source failed")]
    RandomSourceFailed,
}

/// A node's Ed25519 signing key.
pub struct NodeKey {
    pkcs8_der: Vec<u8>,
    key_pair: Ed25519KeyPair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.node_id())
    }
}

impl NodeKey {
    /// Generates a fresh key from the system's secure random source.
    pub fn generate() -> Result<Self, KeyError> {
        let document =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::RandomSourceFailed)?;
        Self::from_pkcs8_der(document.as_ref())
    }

    /// Loads a key from PKCS#8 v2 DER bytes.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let key_pair =
            Ed25519KeyPair::from_pkcs8(der).map_err(|error| KeyError::NotPkcs8Ed25519(error.to_string()))?;
        let key = NodeKey { pkcs8_der: der.to_vec(), key_pair };
        // The seed must be extractable for the libp2p identity.
        key.seed()?;
        Ok(key)
    }

    /// Loads a key from PKCS#8 PEM text.
    pub fn from_pkcs8_pem(text: &str) -> Result<Self, KeyError> {
        let block = pem::parse(text).map_err(|error| KeyError::PemMalformed(error.to_string()))?;
        if block.tag() != PKCS8_PEM_LABEL {
            return Err(KeyError::PemMalformed(format!(
                "expected a {PKCS8_PEM_LABEL} block, found {}",
                block.tag()
            )));
        }
        Self::from_pkcs8_der(block.contents())
    }

    /// Loads a key file, refusing one that group or others may access.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io_error = |source| KeyError::Io { path: path.to_path_buf(), source };
        let metadata = std::fs::metadata(path).map_err(io_error)?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::PermissionsTooOpen { path: path.to_path_buf(), mode });
        }
        if metadata.len() > KEY_FILE_BYTES_MAX {
            return Err(KeyError::TooLarge(path.to_path_buf()));
        }
        let text = std::fs::read_to_string(path).map_err(io_error)?;
        Self::from_pkcs8_pem(&text)
    }

    /// Writes the key as PKCS#8 PEM to a new file with mode 0600, and
    /// fsyncs it and its directory before returning.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        write_new_file_synced(path, self.to_pkcs8_pem().as_bytes(), KEY_FILE_MODE).map_err(|source| {
            match source.kind() {
                std::io::ErrorKind::AlreadyExists => KeyError::AlreadyExists(path.to_path_buf()),
                _ => KeyError::Io { path: path.to_path_buf(), source },
            }
        })?;
        debug_assert!(Self::load(path).map(|k| k.node_id() == self.node_id()).unwrap_or(false));
        Ok(())
    }

    /// The key as PKCS#8 PEM text.
    pub fn to_pkcs8_pem(&self) -> String {
        pem::encode(&pem::Pem::new(PKCS8_PEM_LABEL, self.pkcs8_der.clone()))
    }

    /// The key as PKCS#8 DER bytes.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8_der
    }

    /// The public half: the node's identity.
    pub fn node_id(&self) -> NodeId {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.key_pair.public_key().as_ref());
        NodeId(public)
    }

    /// Signs `message` with Ed25519.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut signature = [0u8; 64];
        signature.copy_from_slice(self.key_pair.sign(message).as_ref());
        signature
    }

    /// The same key as a libp2p identity keypair, so the swarm's PeerId is
    /// this node's [`NodeId`].
    pub fn to_libp2p_keypair(&self) -> Result<libp2p_identity::Keypair, KeyError> {
        let keypair = libp2p_identity::Keypair::ed25519_from_bytes(self.seed()?)
            .map_err(|error| KeyError::NotPkcs8Ed25519(error.to_string()))?;
        debug_assert_eq!(NodeId::from_peer_id(&keypair.public().to_peer_id()).ok(), Some(self.node_id()));
        Ok(keypair)
    }

    /// The 32-byte Ed25519 seed inside the PKCS#8 document.
    fn seed(&self) -> Result<[u8; 32], KeyError> {
        use pkcs8::der::Decode;
        let info = pkcs8::PrivateKeyInfo::from_der(&self.pkcs8_der)
            .map_err(|error| KeyError::NotPkcs8Ed25519(error.to_string()))?;
        // RFC 8410: the private key is an OCTET STRING holding the 32-byte seed.
        let seed_octets = pkcs8::der::asn1::OctetStringRef::from_der(info.private_key)
            .map_err(|error| KeyError::NotPkcs8Ed25519(error.to_string()))?;
        <[u8; 32]>::try_from(seed_octets.as_bytes())
            .map_err(|_| KeyError::NotPkcs8Ed25519("seed is not 32 bytes".to_string()))
    }
}

/// Writes `contents` to a new file with `mode`, fsyncing the file and its
/// directory, so a crash after return cannot lose it.
pub fn write_new_file_synced(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    file.write_all(contents)?;
    file.sync_all()?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = NodeKey::generate().unwrap();
        key.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(NodeKey::load(&path).unwrap().node_id(), key.node_id());
        assert!(matches!(key.write_new(&path), Err(KeyError::AlreadyExists(_))));
    }

    #[test]
    fn group_or_world_readable_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        NodeKey::generate().unwrap().write_new(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match NodeKey::load(&path) {
                Err(KeyError::PermissionsTooOpen { mode: seen, .. }) => assert_eq!(seen, mode),
                other => panic!("mode {mode:o} accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn libp2p_identity_is_the_same_key() {
        let key = NodeKey::generate().unwrap();
        let keypair = key.to_libp2p_keypair().unwrap();
        let peer_id = keypair.public().to_peer_id();
        assert_eq!(NodeId::from_peer_id(&peer_id).unwrap(), key.node_id());
        assert_eq!(key.node_id().to_string(), peer_id.to_string());
        assert_eq!(key.node_id().to_string().parse::<NodeId>().unwrap(), key.node_id());
    }

    #[test]
    fn malformed_key_material_is_a_typed_error() {
        assert!(matches!(NodeKey::from_pkcs8_pem("garbage"), Err(KeyError::PemMalformed(_))));
        let wrong_label = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        assert!(matches!(NodeKey::from_pkcs8_pem(&wrong_label), Err(KeyError::PemMalformed(_))));
        let not_a_key = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![0x30, 0x03, 1, 2, 3]));
        assert!(matches!(NodeKey::from_pkcs8_pem(&not_a_key), Err(KeyError::NotPkcs8Ed25519(_))));
        let key = NodeKey::generate().unwrap();
        let truncated = &key.pkcs8_der()[..key.pkcs8_der().len() - 5];
        assert!(matches!(NodeKey::from_pkcs8_der(truncated), Err(KeyError::NotPkcs8Ed25519(_))));
    }
}
