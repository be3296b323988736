//! [`AssessmentStore`]: one file per assessment in `NODE_DIR/assessments/`,
//! named by its digest, holding the signed envelope's wire form. Files are
//! written once (mode 0600, synced, linked into place with their directory
//! synced, never replaced) and never deleted. Adding holds a file lock, so
//! the CLI and a running node may both add; reading needs no lock.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use civmesh_certs::{EnvelopeError, NodeKey, SignedEnvelope, UnixMillis};
use serde::{Deserialize, Serialize};

use super::{
    digest_hex, parse_digest, Assessment, AssessmentDigest, AssessmentInvalid, AssessmentRecord,
    AssessmentSummary, ASSESSMENTS_MAX,
};

/// The store's directory inside the node directory.
pub const ASSESSMENTS_DIR: &str = "assessments";
/// The largest assessment file read, in bytes: the largest valid
/// assessment with its envelope fits.
pub const ASSESSMENT_FILE_BYTES_MAX: u64 = 64 * 1024;
/// The tag every signed assessment starts with.
const ASSESSMENT_TAG: &str = "civmesh/assessment/v1";
/// How a kept assessment's file name ends.
const FILE_SUFFIX: &str = ".pia";
/// How a file being written ends, before it is linked into place.
const PARTIAL_SUFFIX: &str = ".partial";
/// The lock file adding holds.
const LOCK_FILE: &str = ".lock";
/// The most directory entries read: every assessment, the lock file and a
/// partial file a crash left.
const DIR_ENTRIES_MAX: usize = ASSESSMENTS_MAX + 2;

/// Why an assessment could not be kept or read.
#[derive(Debug, thiserror::Error)]
pub enum AssessmentError {
    /// What was given is not a valid assessment.
    #[error(transparent)]
    Invalid(#[from] AssessmentInvalid),
    /// The store holds [`ASSESSMENTS_MAX`] already.
    #[error("this node keeps at most {ASSESSMENTS_MAX} impact assessments, and holds that many")]
    Full,
    /// Reading, writing or locking failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A stored file is not an assessment this node signed.
    #[error("{path} is not an impact assessment this node signed: {reason}")]
    Corrupt {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Signing failed.
    #[error("signing the assessment failed: {0}")]
    Sign(#[from] EnvelopeError),
}

/// The signed payload: the tag, then the assessment.
#[derive(Serialize, Deserialize)]
struct Tagged {
    tag: String,
    assessment: Assessment,
}

/// The impact assessments this node signed, kept at least three years and
/// never deleted by the node (module docs).
pub struct AssessmentStore {
    dir: PathBuf,
    key: Arc<NodeKey>,
}

impl AssessmentStore {
    /// The store of the node in `node_dir`, whose key is `key`.
    pub fn new(node_dir: &Path, key: Arc<NodeKey>) -> Self {
        AssessmentStore { dir: node_dir.join(ASSESSMENTS_DIR), key }
    }

    /// Checks `assessment`, signs it as this node at `now_ms` and keeps it;
    /// the record, with its digest.
    pub fn add(
        &self,
        assessment: Assessment,
        now_ms: UnixMillis,
    ) -> Result<AssessmentRecord, AssessmentError> {
        let assessment = assessment.checked()?;
        let tagged = Tagged { tag: ASSESSMENT_TAG.to_string(), assessment };
        let envelope = SignedEnvelope::sign(&self.key, &tagged, now_ms)?;
        let digest = body_digest(&envelope);
        let bytes = envelope.to_bytes()?;
        self.create_dir()?;
        let _lock = self.lock()?;
        let names = self.names()?;
        if names.kept.len() >= ASSESSMENTS_MAX {
            return Err(AssessmentError::Full);
        }
        // Under the lock no one else writes: what a partial file is left is
        // a crash's, never an assessment.
        for partial in names.partial {
            let _ = std::fs::remove_file(partial);
        }
        let path = self.path_of(&digest);
        let partial = self.dir.join(format!("{}{PARTIAL_SUFFIX}", digest_hex(&digest)));
        civmesh_certs::write_new_file_synced(&partial, &bytes, 0o600).map_err(io(&partial))?;
        // A hard link never replaces a file that is there.
        let linked = std::fs::hard_link(&partial, &path).map_err(io(&path));
        let _ = std::fs::remove_file(&partial);
        linked?;
        File::open(&self.dir).and_then(|dir| dir.sync_all()).map_err(io(&self.dir))?;
        let envelope = base64::engine::general_purpose::STANDARD.encode(bytes);
        Ok(AssessmentRecord { digest, signed_at_ms: now_ms, assessment: tagged.assessment, envelope })
    }

    /// The assessment with `digest`, if this node keeps it.
    pub fn get(&self, digest: &AssessmentDigest) -> Result<Option<AssessmentRecord>, AssessmentError> {
        let path = self.path_of(digest);
        match std::fs::symlink_metadata(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(AssessmentError::Io { path, source: error }),
            Ok(_) => self.read(&path, digest).map(Some),
        }
    }

    /// Every assessment this node keeps, the oldest first (at most
    /// [`ASSESSMENTS_MAX`]).
    pub fn list(&self) -> Result<Vec<AssessmentSummary>, AssessmentError> {
        let mut summaries = Vec::new();
        for (digest, path) in self.names()?.kept {
            summaries.push(AssessmentSummary::from(&self.read(&path, &digest)?));
        }
        summaries.sort_by_key(|summary| (summary.signed_at_ms, summary.digest));
        Ok(summaries)
    }

    fn path_of(&self, digest: &AssessmentDigest) -> PathBuf {
        self.dir.join(format!("{}{FILE_SUFFIX}", digest_hex(digest)))
    }

    /// The directory, mode 0700, synced into the node directory when new.
    fn create_dir(&self) -> Result<(), AssessmentError> {
        if self.dir.is_dir() {
            return Ok(());
        }
        match DirBuilder::new().mode(0o700).create(&self.dir) {
            Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(AssessmentError::Io { path: self.dir.clone(), source: error })
            }
            _ => {}
        }
        let parent = self.dir.parent().unwrap_or(Path::new("."));
        File::open(parent).and_then(|dir| dir.sync_all()).map_err(io(parent))
    }

    /// The lock adding holds, released when the file is closed.
    fn lock(&self) -> Result<File, AssessmentError> {
        let path = self.dir.join(LOCK_FILE);
        let file =
            OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
        file.lock().map_err(io(&path))?;
        Ok(file)
    }

    /// The kept files by digest, and partial files, reading at most
    /// [`DIR_ENTRIES_MAX`] entries.
    fn names(&self) -> Result<Names, AssessmentError> {
        let mut names = Names::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            other => other.map_err(io(&self.dir))?,
        };
        for (count, entry) in entries.enumerate() {
            if count >= DIR_ENTRIES_MAX {
                let reason = format!("more than {DIR_ENTRIES_MAX} entries");
                return Err(AssessmentError::Corrupt { path: self.dir.clone(), reason });
            }
            let path = entry.map_err(io(&self.dir))?.path();
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
            if let Some(digest) = name.strip_suffix(FILE_SUFFIX).and_then(parse_digest) {
                names.kept.push((digest, path));
            } else if name.ends_with(PARTIAL_SUFFIX) {
                names.partial.push(path);
            } else if name != LOCK_FILE {
                return Err(AssessmentError::Corrupt { path, reason: "not an assessment's file".into() });
            }
        }
        Ok(names)
    }

    /// The assessment in `path`, which must be named by its `digest`,
    /// private, within the bound, and signed by this node.
    fn read(&self, path: &Path, digest: &AssessmentDigest) -> Result<AssessmentRecord, AssessmentError> {
        let corrupt =
            |reason: &str| AssessmentError::Corrupt { path: path.to_path_buf(), reason: reason.into() };
        let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
        if !meta.is_file() {
            return Err(corrupt("not a regular file"));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(corrupt("its group or others may read it: it must be mode 0600"));
        }
        let mut bytes = Vec::new();
        let file = File::open(path).map_err(io(path))?;
        file.take(ASSESSMENT_FILE_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(io(path))?;
        if bytes.len() as u64 > ASSESSMENT_FILE_BYTES_MAX {
            return Err(corrupt("too large"));
        }
        let envelope = SignedEnvelope::<Tagged>::from_bytes(&bytes).map_err(|e| corrupt(&e.to_string()))?;
        let verified = envelope.verify_signature().map_err(|e| corrupt(&e.to_string()))?;
        if verified.signer != self.key.node_id() {
            return Err(corrupt("signed by another node"));
        }
        if body_digest(&envelope) != *digest {
            return Err(corrupt("its digest differs from its name"));
        }
        let Tagged { tag, assessment } = verified.payload;
        if tag != ASSESSMENT_TAG || assessment.clone().checked().as_ref() != Ok(&assessment) {
            return Err(corrupt("not a valid assessment"));
        }
        Ok(AssessmentRecord {
            digest: *digest,
            signed_at_ms: verified.issued_at_ms,
            assessment,
            envelope: base64::engine::general_purpose::STANDARD.encode(&bytes),
        })
    }
}

/// What the store's directory holds.
#[derive(Default)]
struct Names {
    kept: Vec<(AssessmentDigest, PathBuf)>,
    partial: Vec<PathBuf>,
}

/// SHA-256 of the envelope's signed body: the assessment's digest.
fn body_digest(envelope: &SignedEnvelope<Tagged>) -> AssessmentDigest {
    let hash = ring::digest::digest(&ring::digest::SHA256, envelope.body_bytes());
    let mut digest = [0u8; 32];
    digest.copy_from_slice(hash.as_ref());
    AssessmentDigest(digest)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AssessmentError + '_ {
    move |source| AssessmentError::Io { path: path.to_path_buf(), source }
}
