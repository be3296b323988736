//! The plain record keys an owner keeps for the subjects' requests it
//! logged, until it answers them: `NODE_DIR/subject-request-keys.json`
//! (mode 0600, bounded in all and per intake organisation, rewritten
//! whole, synced, renamed into place). The key is what the owner acts on
//! (the report, the deletion); the log holds only its keyed hash. Every
//! read and write blocks: async callers run them through [`blocking`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use civmesh_certs::{now_unix_millis, OrgId};
use civmesh_policy::subject_request::{SubjectRequestId, SubjectRequestKind};
use serde::{Deserialize, Serialize};

use crate::private_file::{PrivateFileError, PrivateList};
use crate::records::RecordStore;

/// The file's name inside the node directory.
pub const KEPT_KEYS_FILE: &str = "subject-request-keys.json";
/// The most keys kept: requests open at this owner node.
pub const KEPT_KEYS_MAX: usize = 10_000;
/// The most keys kept for the requests one intake organisation took, so
/// one intake cannot take the room every other needs.
pub const KEPT_KEYS_PER_INTAKE_MAX: usize = 100;
/// The largest file read, in bytes.
pub const KEPT_KEYS_FILE_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// How long a key is kept for a request the log does not hold open, in
/// ms: past twice the log's bound on a command's age, it was never logged
/// (or was answered elsewhere), and the key goes.
pub const UNLOGGED_KEPT_MS_MAX: u64 = 2 * civmesh_policy::state::COMMAND_SKEW_MS_MAX;

const KEPT_LIST: PrivateList = PrivateList {
    kind: "subject-request key file",
    entries: "record keys",
    bytes_max: KEPT_KEYS_FILE_BYTES_MAX,
    entries_max: KEPT_KEYS_MAX,
};

/// Serialises every change to the file (a process runs one node).
static KEPT_LOCK: Mutex<()> = Mutex::new(());

/// One kept key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// The request's id, hex.
    pub id: String,
    /// The dataset.
    pub dataset: String,
    /// What was asked.
    pub kind: SubjectRequestKind,
    /// The organisation that took the request (empty in a file written
    /// before intakes were recorded: counted apart from every intake).
    #[serde(default)]
    pub intake: String,
    /// The record's key.
    pub record_key: String,
    /// When it was kept (ms since the epoch).
    pub kept_at_ms: u64,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Kept")
            .field("id", &self.id)
            .field("dataset", &self.dataset)
            .field("kind", &self.kind)
            .field("intake", &self.intake)
            .field("record_key", &format_args!("<{} bytes>", self.record_key.len()))
            .finish()
    }
}

impl Kept {
    /// The key of request `id` of `kind` on `dataset`, which `intake` took, kept now.
    pub fn new(
        id: SubjectRequestId,
        dataset: &str,
        kind: SubjectRequestKind,
        intake: &OrgId,
        record_key: &str,
    ) -> Self {
        Kept {
            id: hex::encode(id),
            dataset: dataset.to_string(),
            kind,
            intake: intake.to_string(),
            record_key: record_key.to_string(),
            kept_at_ms: now_unix_millis(),
        }
    }
}

/// Why a key could not be kept, read or forgotten.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// A key is kept for this id already.
    #[error("a key is kept for this request already")]
    Taken,
    /// As many keys are kept as may be.
    #[error("this node keeps {KEPT_KEYS_MAX} open requests' keys already")]
    Full,
    /// As many keys are kept for the intake organisation as may be.
    #[error("this node keeps {KEPT_KEYS_PER_INTAKE_MAX} open requests' keys for {0} already")]
    IntakeFull(String),
    /// The file could not be read or written.
    #[error(transparent)]
    File(#[from] PrivateFileError),
    /// The lock is poisoned, the store has no node directory, or the
    /// blocking task failed.
    #[error("the subject-request key file is unavailable")]
    Unavailable,
}

/// Runs `work` (a read or write of the key file) on the blocking pool, off
/// the async workers: a write rewrites and syncs the whole file.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, KeepError> + Send + 'static,
) -> Result<T, KeepError> {
    tokio::task::spawn_blocking(work).await.map_err(|_| KeepError::Unavailable)?
}

/// Drops from `keys` those of requests `is_open` says the log does not
/// hold, kept longer than [`UNLOGGED_KEPT_MS_MAX`]; then checks there is
/// room for `kept`: its id not kept, fewer than [`KEPT_KEYS_MAX`] in all
/// and fewer than [`KEPT_KEYS_PER_INTAKE_MAX`] for its intake.
fn make_room(
    keys: &mut Vec<Kept>,
    kept: &Kept,
    is_open: impl Fn(&SubjectRequestId) -> bool,
    now_ms: u64,
) -> Result<(), KeepError> {
    if keys.iter().any(|key| key.id == kept.id) {
        return Err(KeepError::Taken);
    }
    keys.retain(|key| {
        now_ms.saturating_sub(key.kept_at_ms) <= UNLOGGED_KEPT_MS_MAX
            || civmesh_policy::hex_digest::from_hex(&key.id).is_some_and(|id| is_open(&id))
    });
    if keys.len() >= KEPT_KEYS_MAX {
        return Err(KeepError::Full);
    }
    if keys.iter().filter(|key| key.intake == kept.intake).count() >= KEPT_KEYS_PER_INTAKE_MAX {
        return Err(KeepError::IntakeFull(kept.intake.clone()));
    }
    Ok(())
}

/// The kept keys of one node.
#[derive(Debug, Clone)]
pub struct KeptKeys {
    path: PathBuf,
}

impl KeptKeys {
    /// The keys of the node in `node_dir`.
    pub fn at(node_dir: &Path) -> Self {
        KeptKeys { path: node_dir.join(KEPT_KEYS_FILE) }
    }

    /// The keys of the node whose record store is `records`
    /// (`NODE_DIR/records`).
    pub fn of(records: &RecordStore) -> Result<Self, KeepError> {
        records.directory().parent().map(KeptKeys::at).ok_or(KeepError::Unavailable)
    }

    /// Keeps `kept` (synced), first dropping keys of requests `is_open`
    /// says the log does not hold, kept longer than [`UNLOGGED_KEPT_MS_MAX`];
    /// refused if its id is kept or a bound is reached.
    pub fn keep(&self, kept: Kept, is_open: impl Fn(&SubjectRequestId) -> bool) -> Result<(), KeepError> {
        let _held = KEPT_LOCK.lock().map_err(|_| KeepError::Unavailable)?;
        let mut keys: Vec<Kept> = KEPT_LIST.read(&self.path)?;
        make_room(&mut keys, &kept, is_open, now_unix_millis())?;
        keys.push(kept);
        Ok(KEPT_LIST.write(&self.path, &keys)?)
    }

    /// Whether [`KeptKeys::keep`] would keep `kept` now, without writing:
    /// the owner asks before it looks the record up, so a refusal never
    /// depends on the record.
    pub fn has_room(
        &self,
        kept: &Kept,
        is_open: impl Fn(&SubjectRequestId) -> bool,
    ) -> Result<(), KeepError> {
        let _held = KEPT_LOCK.lock().map_err(|_| KeepError::Unavailable)?;
        let mut keys: Vec<Kept> = KEPT_LIST.read(&self.path)?;
        make_room(&mut keys, kept, is_open, now_unix_millis())
    }

    /// The key kept for request `id`.
    pub fn get(&self, id: &SubjectRequestId) -> Result<Option<Kept>, KeepError> {
        let _held = KEPT_LOCK.lock().map_err(|_| KeepError::Unavailable)?;
        let id = hex::encode(id);
        Ok(KEPT_LIST.read::<Kept>(&self.path)?.into_iter().find(|key| key.id == id))
    }

    /// The ids (hex) of the requests whose keys are kept.
    pub fn ids(&self) -> Result<BTreeSet<String>, KeepError> {
        let _held = KEPT_LOCK.lock().map_err(|_| KeepError::Unavailable)?;
        Ok(KEPT_LIST.read::<Kept>(&self.path)?.into_iter().map(|key| key.id).collect())
    }

    /// Forgets the key of request `id` (synced); nothing if none is kept.
    pub fn forget(&self, id: &SubjectRequestId) -> Result<(), KeepError> {
        let _held = KEPT_LOCK.lock().map_err(|_| KeepError::Unavailable)?;
        let id = hex::encode(id);
        let mut keys: Vec<Kept> = KEPT_LIST.read(&self.path)?;
        let before = keys.len();
        keys.retain(|key| key.id != id);
        if keys.len() != before {
            KEPT_LIST.write(&self.path, &keys)?;
        }
        Ok(())
    }
}
