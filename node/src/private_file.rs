//! Small node-local JSON lists that hold secrets or their hashes (scoped
//! API tokens, console operators): mode 0600 or refused, bounded in bytes
//! and entries, and rewritten whole (synced) then renamed into place, so a
//! reader sees the old list or the new one, never half of one.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a private list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    /// Reading, writing or locking failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not such a list, too large, or readable by others.
    #[error("{0} is not a valid {1}: {2}")]
    Invalid(PathBuf, &'static str, String),
}

/// One kind of private list: what it is called, and its bounds.
pub struct PrivateList {
    /// What the file is, in messages (`scoped-token file`).
    pub kind: &'static str,
    /// What its entries are, in messages (`tokens`).
    pub entries: &'static str,
    /// The largest file read, in bytes.
    pub bytes_max: u64,
    /// The most entries it holds.
    pub entries_max: usize,
}

impl PrivateList {
    /// The error for `path` being no valid list, because of `reason`.
    pub fn invalid(&self, path: &Path, reason: impl Into<String>) -> PrivateFileError {
        PrivateFileError::Invalid(path.to_path_buf(), self.kind, reason.into())
    }

    /// The list at `path` (empty if the file does not exist).
    pub fn read<T: DeserializeOwned>(&self, path: &Path) -> Result<Vec<T>, PrivateFileError> {
        let io = |source| PrivateFileError::Io { path: path.to_path_buf(), source };
        match std::fs::metadata(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io(error)),
            Ok(meta) if meta.len() > self.bytes_max => return Err(self.invalid(path, "too large")),
            Ok(meta) if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 => {
                return Err(self.invalid(path, "its group or others may read it: it must be mode 0600"))
            }
            Ok(_) => {}
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let entries: Vec<T> =
            serde_json::from_slice(&bytes).map_err(|error| self.invalid(path, error.to_string()))?;
        if entries.len() > self.entries_max {
            return Err(self.invalid(path, format!("more than {} {}", self.entries_max, self.entries)));
        }
        Ok(entries)
    }

    /// Writes `entries` to `path`: whole, mode 0600, synced, renamed into place.
    pub fn write<T: Serialize>(&self, path: &Path, entries: &[T]) -> Result<(), PrivateFileError> {
        let bytes =
            serde_json::to_vec_pretty(entries).map_err(|error| self.invalid(path, error.to_string()))?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".partial");
        let temporary = PathBuf::from(temporary);
        let _ = std::fs::remove_file(&temporary);
        civmesh_certs::write_new_file_synced(&temporary, &bytes, 0o600)
            .map_err(|source| PrivateFileError::Io { path: temporary.clone(), source })?;
        std::fs::rename(&temporary, path)
            .map_err(|source| PrivateFileError::Io { path: path.to_path_buf(), source })
    }
}
