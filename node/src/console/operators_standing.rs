//! What a session needs to know of each operator, read from
//! `operators.json` at most once per change of the file: every page view
//! asks, and the CLI changes the file from another process. A change is
//! seen by the file's identity (inode: the file is replaced whole by a
//! rename), modification time and length. One snapshot is kept, bounded
//! like the file itself ([`super::OPERATORS_MAX`]); it holds no password
//! hashes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Operator, OperatorError, Role, OPERATOR_LIST, SIGN_IN_FAILURES_MAX};
use crate::private_file::PrivateFileError;

/// One operator as a session sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Standing {
    /// Their role.
    role: Role,
    /// Their generation (see [`Operator::generation`]).
    generation: u64,
    /// Enrolled, not disabled, not locked.
    active: bool,
}

impl Standing {
    fn of(operator: &Operator) -> Self {
        Standing {
            role: operator.role,
            generation: operator.generation,
            active: operator.password_hash.is_some()
                && !operator.disabled
                && operator.failed_sign_ins < SIGN_IN_FAILURES_MAX,
        }
    }
}

/// Which version of the file was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    /// The device and inode: a rewrite is a new file.
    file: (u64, u64),
    /// The modification time, in seconds and nanoseconds.
    modified: (i64, i64),
    /// The length, in bytes.
    bytes: u64,
}

/// The file's stamp; `None` if there is no file.
fn stamp(path: &Path) -> Result<Option<FileStamp>, OperatorError> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(FileStamp {
            file: (meta.dev(), meta.ino()),
            modified: (meta.mtime(), meta.mtime_nsec()),
            bytes: meta.len(),
        })),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PrivateFileError::Io { path: path.to_path_buf(), source }.into()),
    }
}

/// The standings by operator name, as last read.
type Standings = Arc<HashMap<String, Standing>>;

/// The last snapshot of the operator file, and which version it was.
#[derive(Default)]
pub(super) struct StandingCache {
    last: Mutex<Option<(FileStamp, Standings)>>,
}

impl StandingCache {
    /// Whether `name` is active in the file at `path` with `role` and
    /// `generation`.
    pub(super) fn holds(
        &self,
        path: &Path,
        name: &str,
        role: Role,
        generation: u64,
    ) -> Result<bool, OperatorError> {
        let wanted = Standing { role, generation, active: true };
        Ok(self.standings(path)?.get(name) == Some(&wanted))
    }

    /// The standings of the file at `path`: the snapshot if the file has
    /// not changed since, else read anew (once: concurrent callers wait for
    /// the one reading). A snapshot is kept only if the file did not change
    /// while it was read.
    fn standings(&self, path: &Path) -> Result<Standings, OperatorError> {
        let Some(before) = stamp(path)? else {
            return Ok(Standings::default());
        };
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, standings)) = last.as_ref() {
            if *seen == before {
                return Ok(Arc::clone(standings));
            }
        }
        let operators: Vec<Operator> = OPERATOR_LIST.read(path)?;
        let standings: Standings = Arc::new(
            operators.iter().map(|operator| (operator.name.clone(), Standing::of(operator))).collect(),
        );
        *last = (stamp(path)? == Some(before)).then(|| (before, Arc::clone(&standings)));
        Ok(standings)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::super::{OperatorStore, OPERATORS_FILE};
    use super::*;

    /// Puts `text` at `path` with modification time `modified`: written
    /// over the file (same inode) or as a new file renamed over it.
    fn put(path: &Path, text: &str, modified: SystemTime, new_file: bool) {
        let target = if new_file { path.with_extension("staged") } else { path.to_path_buf() };
        if new_file {
            std::fs::copy(path, &target).unwrap();
        }
        std::fs::write(&target, text).unwrap();
        std::fs::File::options().write(true).open(&target).unwrap().set_modified(modified).unwrap();
        std::fs::rename(&target, path).unwrap();
    }

    #[test]
    fn the_file_is_read_again_once_it_changed_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let store = OperatorStore::new(dir.path());
        let path = dir.path().join(OPERATORS_FILE);
        let code = store.add("李伟", Role::StreetWorker, 1_000).unwrap();
        let signed_in = store.enrol("李伟", &code, "long enough pass", 2_000).unwrap().unwrap();
        let holds = || store.holds("李伟", Role::StreetWorker, signed_in.generation);
        let text = std::fs::read_to_string(&path).unwrap();
        let then = std::fs::metadata(&path).unwrap().modified().unwrap();
        let garbage = "x".repeat(text.len());
        // (what differs from the file last read, garbage put as it, new file?, read again?)
        let cases = [
            ("nothing", garbage.clone(), then, false, false),
            ("length", format!("{garbage} "), then, false, true),
            ("modification time", garbage.clone(), then + Duration::from_secs(1), false, true),
            ("file", garbage.clone(), then, true, true),
        ];
        for (differs, garbage, modified, new_file, read_again) in cases {
            put(&path, &text, then, true);
            assert!(holds().unwrap(), "{differs}: the right file");
            put(&path, &garbage, modified, new_file);
            assert_eq!(holds().is_err(), read_again, "{differs}");
        }
        put(&path, &text, then + Duration::from_secs(2), true);
        assert!(holds().unwrap());
        store.disable("李伟").unwrap();
        assert!(!holds().unwrap(), "disabled through the store");
        std::fs::remove_file(&path).unwrap();
        assert!(!holds().unwrap(), "no file, no operators");
    }
}
