//! The seen-checkpoints file (`civmesh audit verify --seen`, and the
//! console's own): per federation, by its CA's SHA-256, the final
//! checkpoints earlier verifications ended at, so the next one can prove
//! the history still extends them.

use std::collections::BTreeMap;
use std::path::Path;

use civmesh_certs::codec;
use civmesh_policy::audit::SeenCheckpoint;

/// Why a seen-checkpoints file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SeenFileError {
    /// It could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is larger than the caller reads.
    #[error("{} is too large", path.display())]
    TooLarge {
        /// The file.
        path: std::path::PathBuf,
    },
    /// It is not a seen-checkpoints file.
    #[error("{} is corrupt: {source}", path.display())]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// The seen checkpoints of every federation this file has verified.
#[derive(Debug, Default)]
pub struct SeenFile {
    by_federation: BTreeMap<String, Vec<SeenCheckpoint>>,
}

impl SeenFile {
    /// The file at `path` (empty if there is none yet), at most `bytes_max`.
    pub fn read(path: &Path, bytes_max: u64) -> Result<Self, SeenFileError> {
        let io = |source| SeenFileError::Io { path: path.to_path_buf(), source };
        match std::fs::metadata(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(SeenFile::default()),
            Err(error) => return Err(io(error)),
            Ok(metadata) if metadata.len() > bytes_max => {
                return Err(SeenFileError::TooLarge { path: path.to_path_buf() })
            }
            Ok(_) => {}
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let by_federation = serde_json::from_slice(&bytes)
            .map_err(|source| SeenFileError::Corrupt { path: path.to_path_buf(), source })?;
        Ok(SeenFile { by_federation })
    }

    /// The checkpoints seen for the federation of the CA `ca_der`.
    pub fn checkpoints(&self, ca_der: &[u8]) -> Vec<SeenCheckpoint> {
        self.by_federation.get(&federation_key(ca_der)).cloned().unwrap_or_default()
    }

    /// Adds `latest` for the federation of `ca_der`; whether it was new.
    pub fn remember(&mut self, ca_der: &[u8], latest: SeenCheckpoint) -> bool {
        let checkpoints = self.by_federation.entry(federation_key(ca_der)).or_default();
        if checkpoints.contains(&latest) {
            return false;
        }
        checkpoints.push(latest);
        true
    }

    /// Writes the file whole to `path` (through `PATH.partial`, renamed).
    pub fn write(&self, path: &Path) -> Result<(), SeenFileError> {
        let io = |source| SeenFileError::Io { path: path.to_path_buf(), source };
        let bytes = serde_json::to_vec_pretty(&self.by_federation)
            .map_err(|source| SeenFileError::Corrupt { path: path.to_path_buf(), source })?;
        let temporary = path.with_extension("partial");
        std::fs::write(&temporary, bytes).map_err(io)?;
        std::fs::rename(&temporary, path).map_err(io)
    }
}

/// The file's key for the federation of the CA `ca_der`: its SHA-256, hex.
fn federation_key(ca_der: &[u8]) -> String {
    hex::encode(codec::sha256(ca_der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_kept_per_federation_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.json");
        let mut seen = SeenFile::read(&path, 1024).unwrap();
        let checkpoint = SeenCheckpoint { tree_size: 7, root: "ab".repeat(32) };
        assert!(seen.remember(b"ca one", checkpoint.clone()));
        assert!(!seen.remember(b"ca one", checkpoint.clone()), "once");
        seen.write(&path).unwrap();
        let read = SeenFile::read(&path, 1024).unwrap();
        assert_eq!(read.checkpoints(b"ca one"), vec![checkpoint]);
        assert!(read.checkpoints(b"ca two").is_empty());
        assert!(matches!(SeenFile::read(&path, 8), Err(SeenFileError::TooLarge { .. })));
        std::fs::write(&path, b"not json").unwrap();
        assert!(matches!(SeenFile::read(&path, 1024), Err(SeenFileError::Corrupt { .. })));
    }
}
