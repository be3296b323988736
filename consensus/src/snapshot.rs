//! The state image as a file, and snapshots streamed through it.
//!
//! - The image (the state with its last applied log id and membership) is
//!   the file `state-image/image` in the policy log's directory. It is
//!   written to a temporary file, synced, and renamed over the last one, so
//!   a crash leaves the old image or the new one, whole. Encoding and
//!   decoding stream through the file: the bytes are never held whole.
//! - A snapshot is that file: the leader sends it in chunks read from
//!   disk, and the receiver ([`crate::snapshot_receiver`]) writes each
//!   stream to a file of its own, checks it whole, and hands the decoded
//!   image to the install, which renames the file into place.
//! - A receiver or a writer killed midway leaves a partial file, removed
//!   on the next start. The leader's sender starts again from offset 0.
//! - An image file starts with its format ([`IMAGE_FORMAT`]); a node reads
//!   every format up to its own, and refuses a newer one by name. From
//!   format 2 the replay window's nonces follow the state, read from and
//!   written to the disk a batch at a time ([`crate::nonces`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use civmesh_certs::codec;
use civmesh_certs::UnixMillis;
use civmesh_policy::state::COMMAND_SKEW_MS_MAX;
use civmesh_policy::PolicyState;
use openraft::storage::Snapshot;
use openraft::{LogId, SnapshotMeta, StoredMembership};
use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::nonces::{read_window, write_window, Row, WINDOW_SECTION_BYTES_MAX};
use crate::types::{RaftNodeId, RaftPeer, TypeConfig};

/// The largest state in an image a node writes or reads, in bytes: what it
/// decodes into memory. The image holds no history, and (from format 2)
/// not the replay window's nonces, which follow the state.
pub const STATE_IMAGE_BYTES_MAX: usize = codec::LARGE_DECODE_BYTES_MAX;
/// The largest image file (and snapshot), in bytes: its format, its state
/// and its replay window.
pub const IMAGE_FILE_BYTES_MAX: usize =
    IMAGE_MAGIC.len() + 1 + STATE_IMAGE_BYTES_MAX + WINDOW_SECTION_BYTES_MAX;
/// The directory of image files, inside the policy log's directory.
const IMAGE_DIRECTORY: &str = "state-image";
const IMAGE_FILE: &str = "image";
/// A new image while it is written, before it is renamed over the last.
const WRITING_FILE: &str = "image.writing";
/// Snapshots while they are received: `receiving.<stream number>`.
const RECEIVING_PREFIX: &str = "receiving";
/// The digests of the latest images, kept across restarts so a node
/// confirms a snapshot it passed before it stopped.
const DIGESTS_FILE: &str = "digests";
/// The digests file being written.
const DIGESTS_WRITING_FILE: &str = "digests.writing";
/// Buffers between the encoder or decoder and the file, in bytes.
const FILE_BUFFER_BYTES: usize = 1024 * 1024;
/// What an image file starts with, before its format's number. An image
/// without it is format 0: its first byte is an option's tag, 0 or 1, never
/// the magic's first.
const IMAGE_MAGIC: [u8; 7] = *b"CMIMAGE";
/// The image format this node writes. Format 1 holds each nonce of the
/// replay window once (format 0 held it twice, besides the counts); both
/// decode into the same state. Format 2 holds the window's counts in the
/// state and its nonces after it, as the disk holds them.
pub const IMAGE_FORMAT: u8 = 2;

/// What a state image and a snapshot hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StateImage {
    pub(crate) last_applied: Option<LogId<RaftNodeId>>,
    pub(crate) last_membership: StoredMembership<RaftNodeId, RaftPeer>,
    pub(crate) snapshot_id: String,
    pub(crate) state: PolicyState,
}

/// The fields an image starts with: its snapshot metadata, read without
/// decoding the state.
#[derive(Deserialize)]
struct ImageHead {
    last_applied: Option<LogId<RaftNodeId>>,
    last_membership: StoredMembership<RaftNodeId, RaftPeer>,
    snapshot_id: String,
}

impl StateImage {
    pub(crate) fn meta(&self) -> SnapshotMeta<RaftNodeId, RaftPeer> {
        SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id: self.snapshot_id.clone(),
        }
    }
}

/// Why an image or a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The disk refused a read, a write or a sync.
    #[error("cannot {action} the state image at {path}: {source}")]
    Disk {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The history the image stands for could not be made durable first.
    #[error("cannot sync the policy log's history before its state image: {0}")]
    HistoryNotSynced(#[source] rocksdb::Error),
    /// The image's state encodes to more than a node reads back.
    #[error(
        "the policy state image's state is over the {STATE_IMAGE_BYTES_MAX} bytes a node reads back: \
         not written; the last image and the log after it stay"
    )]
    PastBound,
    /// The bytes do not decode as an image, or not as the one described.
    #[error("the state image is corrupt: {0}")]
    Corrupt(String),
    /// The image is in a format newer than this node reads.
    #[error(
        "the state image is in format {format}, and this civmesh reads formats up to {IMAGE_FORMAT}: \
         run the civmesh that wrote it, or a newer one"
    )]
    FormatUnknown {
        /// The image's format.
        format: u8,
    },
}

pub(crate) fn disk(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.display().to_string();
    move |source| ImageError::Disk { action, path, source }
}

/// The image files of one policy log. Writers take the lock, so an older
/// image never replaces a newer one.
#[derive(Clone)]
pub(crate) struct ImageFiles {
    directory: PathBuf,
    writing: Arc<Mutex<()>>,
    /// The last snapshot received and checked, until it is installed.
    checked: Arc<Mutex<Option<CheckedSnapshot>>>,
    /// The last log index the image on disk covers.
    image_index: Arc<AtomicU64>,
    /// One past the index of the snapshot Raft is installing (0: none).
    installing_end: Arc<AtomicU64>,
    /// The SHA-256 of the latest aligned images kept, written or installed
    /// here, by the index they end at: what this node confirms.
    digests: Arc<Mutex<BTreeMap<u64, [u8; 32]>>>,
    /// The index and SHA-256 of the image on disk, once known: never
    /// evicted by newer aligned images noted at apply.
    current_digest: Arc<Mutex<Option<IndexDigest>>>,
    /// The database that holds the replay window's nonces, which images
    /// hold after the state (none: only windows that hold their own).
    nonces: Option<Arc<rocksdb::DB>>,
    /// The window start of each image kept at apply and not yet hashed, by
    /// index: its nonces are not pruned meanwhile.
    windows_held: Arc<Mutex<BTreeMap<u64, UnixMillis>>>,
}

/// An image's last log index and SHA-256.
type IndexDigest = (u64, [u8; 32]);

/// How many images' digests a node keeps to confirm.
const IMAGE_DIGESTS_KEPT_MAX: usize = 16;

/// The id of the snapshot at `index` every replica builds alike: replicas
/// whose images at one index are the same bytes confirm one another's.
pub(crate) fn aligned_snapshot_id(index: u64) -> String {
    format!("aligned-{index}")
}

/// A received snapshot, checked whole: its file, what it decoded to, and
/// its SHA-256.
pub(crate) struct CheckedSnapshot {
    pub(crate) path: PathBuf,
    pub(crate) image: StateImage,
    pub(crate) digest: [u8; 32],
}

/// Where an installed snapshot's bytes are.
pub(crate) enum Received {
    /// A file this node received and checked: renamed into place.
    Checked {
        /// The file.
        path: PathBuf,
        /// Its SHA-256.
        digest: [u8; 32],
    },
    /// Any other file (openraft's own tests hand one over): copied.
    Other(File),
}

impl ImageFiles {
    /// The image files in `log_directory`, without what a crash left
    /// half-written.
    pub(crate) fn open(log_directory: &Path) -> Result<Self, ImageError> {
        let directory = log_directory.join(IMAGE_DIRECTORY);
        if !directory.exists() {
            std::fs::create_dir_all(&directory).map_err(disk("create the directory of", &directory))?;
            sync_directory(log_directory)?;
        }
        let listing = std::fs::read_dir(&directory).map_err(disk("list", &directory))?;
        for entry in listing {
            let path = entry.map_err(disk("list", &directory))?.path();
            let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            if name == WRITING_FILE || name == DIGESTS_WRITING_FILE || name.starts_with(RECEIVING_PREFIX) {
                std::fs::remove_file(&path).map_err(disk("remove a partial", &path))?;
            }
        }
        Ok(ImageFiles {
            writing: Arc::default(),
            checked: Arc::default(),
            image_index: Arc::default(),
            installing_end: Arc::default(),
            current_digest: Arc::default(),
            digests: Arc::new(Mutex::new(read_digests(&directory.join(DIGESTS_FILE)))),
            directory,
            nonces: None,
            windows_held: Arc::default(),
        })
    }

    /// The same files, whose images hold the replay window's nonces that
    /// `db` keeps.
    pub(crate) fn with_nonces_in(mut self, db: Arc<rocksdb::DB>) -> Self {
        self.nonces = Some(db);
        self
    }

    /// Where the replay window's nonces are kept, if on disk.
    pub(crate) fn nonces_db(&self) -> Option<&rocksdb::DB> {
        self.nonces.as_deref()
    }

    /// Notes the digest of the aligned image ending at `index`, keeping
    /// the latest `IMAGE_DIGESTS_KEPT_MAX`; whether that changed anything.
    fn note_digest(&self, index: u64, digest: [u8; 32]) -> bool {
        let mut digests = lock(&self.digests);
        let changed = digests.insert(index, digest) != Some(digest);
        while digests.len() > IMAGE_DIGESTS_KEPT_MAX {
            digests.pop_first();
        }
        changed
    }

    /// Writes the digests noted to their file, synced, under the lock, so
    /// the file always holds the latest list. A failure costs confirming
    /// older images after a restart, never state.
    fn keep_digests(&self) {
        let digests = lock(&self.digests);
        let kept: Vec<(u64, [u8; 32])> = digests.iter().map(|(index, digest)| (*index, *digest)).collect();
        let (writing, path) = (self.directory.join(DIGESTS_WRITING_FILE), self.directory.join(DIGESTS_FILE));
        let written = codec::encode(&kept).map_err(std::io::Error::other).and_then(|bytes| {
            let mut file = File::create(&writing)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&writing, &path)
        });
        if let Err(error) = written {
            tracing::warn!(%error, "could not keep the images' digests; this node confirms only newer ones after a restart");
        }
    }

    /// Notes the digest of `image` if it is an aligned one (the only kind
    /// another replica's snapshot can match), and as the current image's.
    fn note_written_digest(&self, image: &StateImage, digest: [u8; 32]) {
        let index = image.last_applied.map_or(0, |id| id.index);
        *lock(&self.current_digest) = Some((index, digest));
        if image.snapshot_id == aligned_snapshot_id(index) && self.note_digest(index, digest) {
            self.keep_digests();
        }
    }

    /// Notes the SHA-256 of each of `images` (aligned images kept at
    /// apply) as its file would hold it, without writing the file, the
    /// newest first: the one a leader most likely sends. The digests file
    /// is written once. A failure to encode notes nothing for that image.
    pub(crate) fn note_image_digests(&self, images: &[Arc<StateImage>]) {
        let mut changed = false;
        for image in images.iter().rev() {
            let index = image.last_applied.map_or(0, |id| id.index);
            let mut hashing = BoundedWriter::new(std::io::sink());
            if encode_image(image.as_ref(), self.nonces_db(), STATE_IMAGE_BYTES_MAX, &mut hashing).is_ok() {
                changed |= self.note_digest(index, hashing.finish());
            }
            lock(&self.windows_held).remove(&index);
        }
        if changed {
            self.keep_digests();
        }
    }

    /// Keeps the replay window's nonces of `images` (kept at apply, to be
    /// hashed by [`ImageFiles::note_image_digests`]) from being pruned.
    pub(crate) fn hold_windows(&self, images: &[Arc<StateImage>]) {
        let mut held = lock(&self.windows_held);
        for image in images {
            let index = image.last_applied.map_or(0, |id| id.index);
            held.insert(index, image.state.recent_commands.window_start_ms());
        }
    }

    /// Deletes the replay window's nonces that neither `image` (just
    /// written or installed) nor an image held for hashing counts, with a
    /// window's slack; under the writers' lock, so no image being written
    /// loses its nonces. A failure leaves them for the next image.
    pub(crate) fn prune_window(&self, image: &StateImage) {
        let Some(db) = self.nonces_db() else { return };
        let _lock = lock(&self.writing);
        let held = lock(&self.windows_held).values().min().copied();
        let start = image.state.recent_commands.window_start_ms().min(held.unwrap_or(UnixMillis::MAX));
        if let Err(error) = crate::nonces::prune(db, start.saturating_sub(COMMAND_SKEW_MS_MAX)) {
            tracing::warn!(%error, "could not delete the replay window's old nonces; the next image will");
        }
    }

    /// The SHA-256 of this node's image ending at `index`, if it noted one
    /// there lately, or it is the image on disk (hashed once).
    pub(crate) fn digest_at(&self, index: u64) -> Result<Option<[u8; 32]>, ImageError> {
        if let Some(digest) = lock(&self.digests).get(&index) {
            return Ok(Some(*digest));
        }
        if let Some((current_index, digest)) = *lock(&self.current_digest) {
            if current_index == index {
                return Ok(Some(digest));
            }
        }
        let Some(current) = self.current()? else {
            return Ok(None);
        };
        if current.meta.last_log_id.map(|id| id.index) != Some(index) {
            return Ok(None);
        }
        let digest = file_digest(current.file, &self.image_path())?;
        *lock(&self.current_digest) = Some((index, digest));
        Ok(Some(digest))
    }

    /// The file for the `stream`th snapshot received since the start (0 is
    /// openraft's own receiver's, which civmesh does not use).
    pub(crate) fn receiving_path(&self, stream: u64) -> PathBuf {
        self.directory.join(format!("{RECEIVING_PREFIX}.{stream}"))
    }

    /// Keeps a checked snapshot for the install, replacing (and removing)
    /// any other.
    pub(crate) fn keep_checked(&self, checked: CheckedSnapshot) {
        if let Some(replaced) = lock(&self.checked).replace(checked) {
            let _ = std::fs::remove_file(replaced.path);
        }
    }

    /// The checked snapshot `meta` describes, if it is the one kept.
    pub(crate) fn take_checked(&self, meta: &SnapshotMeta<RaftNodeId, RaftPeer>) -> Option<CheckedSnapshot> {
        let mut checked = lock(&self.checked);
        if checked.as_ref().is_some_and(|kept| kept.image.meta() == *meta) {
            return checked.take();
        }
        None
    }

    /// Forgets the checked snapshot (installed, or not needed), and its file.
    pub(crate) fn forget_checked(&self) {
        if let Some(checked) = lock(&self.checked).take() {
            let _ = std::fs::remove_file(checked.path);
        }
    }

    /// Marks that Raft is installing a snapshot up to `index`, or no longer
    /// (`None`): until the image covers it, the log is not purged past the
    /// image (openraft 0.9 purges without waiting for the install).
    pub(crate) fn set_installing(&self, index: Option<u64>) {
        self.installing_end.store(index.map_or(0, |index| index.saturating_add(1)), Ordering::Release);
    }

    /// Whether purging up to `index` must wait: a snapshot being installed
    /// covers it, and the image on disk does not yet.
    pub(crate) fn purge_must_wait(&self, index: u64) -> bool {
        let installing_end = self.installing_end.load(Ordering::Acquire);
        installing_end > index && self.image_index.load(Ordering::Acquire) < index
    }

    /// Notes the index of the image read at start.
    pub(crate) fn note_image_index(&self, image: &StateImage) {
        self.image_index.store(image.last_applied.map_or(0, |id| id.index), Ordering::Release);
    }

    fn image_path(&self) -> PathBuf {
        self.directory.join(IMAGE_FILE)
    }

    /// Writes `image` as the current image unless a newer one is there, and
    /// returns the current image's file and metadata.
    pub(crate) fn write(&self, image: &StateImage) -> Result<CurrentImage, ImageError> {
        self.write_within(image, STATE_IMAGE_BYTES_MAX)
    }

    fn write_within(&self, image: &StateImage, state_bytes_max: usize) -> Result<CurrentImage, ImageError> {
        let writing = self.directory.join(WRITING_FILE);
        let _lock = lock(&self.writing);
        // A newer image (a snapshot installed meanwhile) stays, and the
        // nonces of this one may be pruned already.
        if let Some(current) = self.current()?.filter(|current| current.meta.last_log_id > image.last_applied)
        {
            return Ok(current);
        }
        let written = write_synced(&writing, |file| {
            let mut bounded = BoundedWriter::new(BufWriter::with_capacity(FILE_BUFFER_BYTES, file));
            let bytes = encode_image(image, self.nonces_db(), state_bytes_max, &mut bounded)
                .map_err(EncodeFailure::Image)?;
            bounded.inner.flush().map(|()| (bytes, bounded.finish())).map_err(EncodeFailure::Disk)
        });
        let (bytes, digest) = match written {
            Ok(bytes) => bytes,
            Err(failure) => {
                let _ = std::fs::remove_file(&writing);
                return Err(failure.into_image_error(&writing));
            }
        };
        self.install(&writing, image)?;
        self.note_written_digest(image, digest);
        let file = File::open(self.image_path()).map_err(disk("open", &self.image_path()))?;
        Ok(CurrentImage { file, meta: image.meta(), bytes: bytes as u64, format: IMAGE_FORMAT })
    }

    /// Makes an installed snapshot, `image`, the current image.
    pub(crate) fn keep_received(&self, received: Received, image: &StateImage) -> Result<(), ImageError> {
        let _lock = lock(&self.writing);
        let mut received = match received {
            // Synced when it was checked.
            Received::Checked { path, digest } => {
                self.install(&path, image)?;
                self.note_written_digest(image, digest);
                return Ok(());
            }
            Received::Other(file) => file,
        };
        let writing = self.directory.join(WRITING_FILE);
        let copied = write_synced(&writing, |file| {
            received.seek(SeekFrom::Start(0)).map_err(EncodeFailure::Disk)?;
            std::io::copy(&mut received, file).map_err(EncodeFailure::Disk)
        });
        if let Err(failure) = copied {
            let _ = std::fs::remove_file(&writing);
            return Err(failure.into_image_error(&writing));
        }
        self.install(&writing, image)
    }

    /// Renames `synced` (a synced file) over the image and syncs the
    /// directory, so the rename survives a crash.
    fn install(&self, synced: &Path, image: &StateImage) -> Result<(), ImageError> {
        let path = self.image_path();
        *lock(&self.current_digest) = None;
        std::fs::rename(synced, &path).map_err(disk("rename into place", &path))?;
        sync_directory(&self.directory)?;
        self.note_image_index(image);
        Ok(())
    }

    /// The current image's file (at its start) and metadata, if there is one.
    pub(crate) fn current(&self) -> Result<Option<CurrentImage>, ImageError> {
        let path = self.image_path();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(disk("open", &path)(error)),
        };
        let bytes = file.metadata().map_err(disk("read the size of", &path))?.len();
        let (format, meta) = read_head(&mut file)?;
        file.seek(SeekFrom::Start(0)).map_err(disk("seek in", &path))?;
        Ok(Some(CurrentImage { file, meta, bytes, format }))
    }

    /// The current image, decoded, if there is one. An image of an older
    /// format is written again in this node's, and the digests kept (of
    /// the older format) are forgotten, so this replica confirms what
    /// upgraded replicas send.
    pub(crate) fn read(&self) -> Result<Option<StateImage>, ImageError> {
        let Some(current) = self.current()? else {
            return Ok(None);
        };
        let format = current.format;
        let mut image = decode_image(current.file)?;
        if format < IMAGE_FORMAT {
            if let Some(db) = self.nonces_db() {
                crate::nonces::move_to_disk(db, &mut image.state)?;
            }
            self.write(&image)?;
            lock(&self.digests).clear();
            self.keep_digests();
            tracing::info!(
                from = format,
                to = IMAGE_FORMAT,
                "wrote the state image again in this node's format"
            );
        }
        Ok(Some(image))
    }
}

/// The current image: its file, positioned at the start, and what it holds.
pub(crate) struct CurrentImage {
    pub(crate) file: File,
    pub(crate) meta: SnapshotMeta<RaftNodeId, RaftPeer>,
    pub(crate) bytes: u64,
    /// The format it was written in.
    pub(crate) format: u8,
}

impl CurrentImage {
    pub(crate) fn into_snapshot(self) -> Snapshot<TypeConfig> {
        Snapshot { meta: self.meta, snapshot: Box::new(tokio::fs::File::from_std(self.file)) }
    }
}

/// The snapshot metadata an image file starts with.
pub fn image_meta(path: &Path) -> Result<SnapshotMeta<RaftNodeId, RaftPeer>, ImageError> {
    let mut file = File::open(path).map_err(disk("open", path))?;
    read_head(&mut file).map(|(_, meta)| meta)
}

/// Decodes a whole image from `reader` (to its end), streaming, within the
/// bounds, checking its replay window's nonces without keeping them.
pub(crate) fn decode_image(reader: impl std::io::Read) -> Result<StateImage, ImageError> {
    decode_image_visiting(reader, |_| Ok(()))
}

/// [`decode_image`], handing the replay window's nonces to `visit` a batch
/// at a time.
pub(crate) fn decode_image_visiting(
    reader: impl std::io::Read,
    visit: impl FnMut(&[Row]) -> Result<(), ImageError>,
) -> Result<StateImage, ImageError> {
    let unreadable = |source| ImageError::Disk { action: "read", path: "the state image".into(), source };
    let mut reader = BufReader::with_capacity(FILE_BUFFER_BYTES, reader);
    let format = read_format(&mut reader)?;
    let image: StateImage = codec::decode_large_prefix_from_reader(&mut reader, STATE_IMAGE_BYTES_MAX)
        .map_err(|error| match error {
            codec::CodecError::Read(reason) => unreadable(std::io::Error::other(reason)),
            other => ImageError::Corrupt(other.to_string()),
        })?;
    if format >= 2 {
        read_window(&image.state, &mut reader, visit)?;
    }
    let rest = std::io::copy(&mut reader, &mut std::io::sink()).map_err(unreadable)?;
    if rest > 0 {
        return Err(ImageError::Corrupt(format!("{rest} bytes follow the image")));
    }
    Ok(image)
}

/// The SHA-256 a hashing context reached.
fn digest_of(context: Context) -> [u8; 32] {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(context.finish().as_ref());
    digest
}

/// A reader that hashes what it reads: a file decoded through it is read
/// once for both.
pub(crate) struct HashingReader<R> {
    inner: R,
    digest: Context,
}

impl<R> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader { inner, digest: Context::new(&SHA256) }
    }

    /// The SHA-256 of what was read.
    pub(crate) fn finish(self) -> [u8; 32] {
        digest_of(self.digest)
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.digest.update(&buffer[..read]);
        Ok(read)
    }
}

/// The SHA-256 of a whole file, read from its start.
pub(crate) fn file_digest(mut file: File, path: &Path) -> Result<[u8; 32], ImageError> {
    file.seek(SeekFrom::Start(0)).map_err(disk("seek in", path))?;
    let mut hashing = HashingReader::new(BufReader::with_capacity(FILE_BUFFER_BYTES, file));
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(disk("read", path))?;
    Ok(hashing.finish())
}

/// The digests kept in `path`: none if the file is missing or does not
/// decode (a crash while it was renamed).
fn read_digests(path: &Path) -> BTreeMap<u64, [u8; 32]> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(error) => {
            tracing::warn!(%error, "could not read the images' digests; this node confirms only newer ones");
            return BTreeMap::new();
        }
    };
    let Ok(kept) = codec::decode_exact::<Vec<(u64, [u8; 32])>>(&bytes, codec::DECODE_BYTES_MAX) else {
        tracing::warn!("the images' digests do not decode; this node confirms only newer ones");
        return BTreeMap::new();
    };
    kept.into_iter().rev().take(IMAGE_DIGESTS_KEPT_MAX).collect()
}

/// Locks `mutex`, whether or not a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sync_directory(directory: &Path) -> Result<(), ImageError> {
    File::open(directory).and_then(|opened| opened.sync_all()).map_err(disk("sync the directory", directory))
}

/// Writes `image` as its file holds it: the magic, the format, the image,
/// its replay window's nonces (from `nonces`). The state may take at most
/// `state_bytes_max` bytes.
fn encode_image<W: Write>(
    image: &StateImage,
    nonces: Option<&rocksdb::DB>,
    state_bytes_max: usize,
    writer: &mut BoundedWriter<W>,
) -> Result<usize, ImageError> {
    let mut head = [0u8; IMAGE_MAGIC.len() + 1];
    head[..IMAGE_MAGIC.len()].copy_from_slice(&IMAGE_MAGIC);
    head[IMAGE_MAGIC.len()] = IMAGE_FORMAT;
    let wrote = |error| ImageError::Disk { action: "write", path: "the state image".into(), source: error };
    writer.left = head.len();
    writer.write_all(&head).map_err(wrote)?;
    writer.left = state_bytes_max;
    let state = codec::encode_into_writer(image, writer).map_err(|error| match writer.left {
        0 => ImageError::PastBound,
        _ => wrote(std::io::Error::other(error)),
    })?;
    writer.left = WINDOW_SECTION_BYTES_MAX;
    Ok(head.len() + state + write_window(nonces, &image.state, writer)?)
}

/// Reads an image's format from its start: 0 (no magic; nothing is read)
/// up to [`IMAGE_FORMAT`]; a newer one is refused.
fn read_format(reader: &mut impl BufRead) -> Result<u8, ImageError> {
    let unreadable = |source| ImageError::Disk { action: "read", path: "the state image".into(), source };
    if reader.fill_buf().map_err(unreadable)?.first() != Some(&IMAGE_MAGIC[0]) {
        return Ok(0);
    }
    let mut head = [0u8; IMAGE_MAGIC.len() + 1];
    reader.read_exact(&mut head).map_err(|error| match error.kind() {
        std::io::ErrorKind::UnexpectedEof => ImageError::Corrupt(format!("its format: {error}")),
        _ => unreadable(error),
    })?;
    if head[..IMAGE_MAGIC.len()] != IMAGE_MAGIC {
        return Err(ImageError::Corrupt("it starts with neither a format nor an image".into()));
    }
    match head[IMAGE_MAGIC.len()] {
        format @ 1..=IMAGE_FORMAT => Ok(format),
        format => Err(ImageError::FormatUnknown { format }),
    }
}

/// An image file's format and snapshot metadata, from its start.
fn read_head(file: &mut File) -> Result<(u8, SnapshotMeta<RaftNodeId, RaftPeer>), ImageError> {
    let config = bincode::config::standard().with_limit::<{ codec::DECODE_BYTES_MAX }>();
    let mut reader = BufReader::new(file);
    let format = read_format(&mut reader)?;
    let head: ImageHead = bincode::serde::decode_from_std_read(&mut reader, config)
        .map_err(|error| ImageError::Corrupt(error.to_string()))?;
    let meta = SnapshotMeta {
        last_log_id: head.last_applied,
        last_membership: head.last_membership,
        snapshot_id: head.snapshot_id,
    };
    Ok((format, meta))
}

enum EncodeFailure {
    Disk(std::io::Error),
    Image(ImageError),
}

impl EncodeFailure {
    fn into_image_error(self, path: &Path) -> ImageError {
        match self {
            EncodeFailure::Disk(source) => disk("write", path)(source),
            EncodeFailure::Image(error) => error,
        }
    }
}

/// Creates `path`, fills it with `fill`, and syncs it.
fn write_synced<T>(
    path: &Path,
    fill: impl FnOnce(&mut File) -> Result<T, EncodeFailure>,
) -> Result<T, EncodeFailure> {
    let mut file = File::create(path).map_err(EncodeFailure::Disk)?;
    let value = fill(&mut file)?;
    file.sync_all().map_err(EncodeFailure::Disk)?;
    Ok(value)
}

/// A writer that refuses to write more than `left` bytes (until the bound
/// is set again), and hashes what it writes.
pub(crate) struct BoundedWriter<W> {
    inner: W,
    left: usize,
    digest: Context,
}

impl<W> BoundedWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        BoundedWriter { inner, left: 0, digest: Context::new(&SHA256) }
    }

    fn finish(&self) -> [u8; 32] {
        digest_of(self.digest.clone())
    }
}

impl<W: Write> Write for BoundedWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes.len() > self.left {
            self.left = 0;
            return Err(std::io::Error::other("past the state image's bound"));
        }
        let written = self.inner.write(bytes)?;
        self.left -= written;
        self.digest.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `image` as its file holds it, format and all.
    pub(crate) fn image_bytes(image: &StateImage) -> Vec<u8> {
        let mut bytes = BoundedWriter::new(Vec::new());
        encode_image(image, None, STATE_IMAGE_BYTES_MAX, &mut bytes).unwrap();
        bytes.inner
    }

    pub(crate) fn image(index: u64) -> StateImage {
        StateImage {
            last_applied: Some(LogId::new(openraft::CommittedLeaderId::new(1, 0), index)),
            snapshot_id: format!("{index}-1"),
            ..StateImage::default()
        }
    }

    /// The digests of the latest images outlive a restart, the oldest
    /// beyond what is kept are forgotten, and a digests file that does not
    /// decode is read as none.
    #[test]
    fn image_digests_are_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let files = ImageFiles::open(dir.path()).unwrap();
        let count = IMAGE_DIGESTS_KEPT_MAX as u64 + 3;
        let images: Vec<Arc<StateImage>> = (1..=count).map(|index| Arc::new(image(index * 10))).collect();
        files.note_image_digests(&images);
        let noted = files.digest_at(count * 10).unwrap().expect("the newest is noted");
        let reopened = ImageFiles::open(dir.path()).unwrap();
        assert_eq!(reopened.digest_at(count * 10).unwrap(), Some(noted));
        assert!(reopened.digest_at(40).unwrap().is_some(), "the oldest kept");
        assert_eq!(reopened.digest_at(30).unwrap(), None, "past what is kept");
        std::fs::write(dir.path().join(IMAGE_DIRECTORY).join(DIGESTS_FILE), b"torn").unwrap();
        let torn = ImageFiles::open(dir.path()).unwrap();
        assert_eq!(torn.digest_at(count * 10).unwrap(), None);
    }

    /// The image on disk is confirmed however many newer aligned images
    /// were noted since, and an unaligned image never replaces the digest
    /// of the aligned one at its index.
    #[test]
    fn the_image_on_disk_stays_confirmable_and_only_aligned_digests_are_noted() {
        let dir = tempfile::tempdir().unwrap();
        let files = ImageFiles::open(dir.path()).unwrap();
        files.write(&image(10)).unwrap();
        let on_disk = file_digest(File::open(files.image_path()).unwrap(), &files.image_path()).unwrap();
        let newer: Vec<Arc<StateImage>> =
            (2..=IMAGE_DIGESTS_KEPT_MAX as u64 + 2).map(|index| Arc::new(image(index * 10))).collect();
        files.note_image_digests(&newer);
        assert_eq!(files.digest_at(10).unwrap(), Some(on_disk));

        let aligned = StateImage { snapshot_id: aligned_snapshot_id(500), ..image(500) };
        files.note_image_digests(&[Arc::new(aligned)]);
        let noted = files.digest_at(500).unwrap().unwrap();
        files.write(&image(500)).unwrap();
        let unaligned = file_digest(File::open(files.image_path()).unwrap(), &files.image_path()).unwrap();
        assert_ne!(noted, unaligned);
        assert_eq!(files.digest_at(500).unwrap(), Some(noted));
        assert_eq!(ImageFiles::open(dir.path()).unwrap().digest_at(500).unwrap(), Some(noted));
    }

    /// While a snapshot is installed, the log it covers is purged only once
    /// the image on disk covers it too.
    #[test]
    fn a_purge_waits_for_the_image_of_the_snapshot_being_installed() {
        let dir = tempfile::tempdir().unwrap();
        let files = ImageFiles::open(dir.path()).unwrap();
        files.note_image_index(&image(7));
        assert!(!files.purge_must_wait(9), "nothing is being installed");
        files.set_installing(Some(10));
        assert!(files.purge_must_wait(9));
        assert!(files.purge_must_wait(10));
        assert!(!files.purge_must_wait(11), "past the snapshot: not its purge");
        assert!(!files.purge_must_wait(7), "the image covers it");
        files.write(&image(10)).unwrap();
        assert!(!files.purge_must_wait(10));
        files.set_installing(None);
        assert!(!files.purge_must_wait(12));
    }

    /// An image file starts with this node's format; one written before
    /// formats (format 0: the encoding alone) is read as it was written,
    /// then written again in this node's format, its kept digests
    /// forgotten; one of a newer format is refused by name, never misread.
    #[test]
    fn images_of_every_format_up_to_this_one_are_read_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(crate::nonces::tests::db(&dir.path().join("db")));
        let files = ImageFiles::open(dir.path()).unwrap().with_nonces_in(db.clone());
        // Formats 0 and 1 held the window's nonces in the state.
        let mut older = image(9);
        let signer = civmesh_certs::NodeId([7; 32]);
        older.state.commands_applied = 1;
        older.state.recent_commands.check_and_record(&signer, &[3; 16], 1_000, 1_000).unwrap();
        let format_0 = codec::encode(&older).unwrap();
        let format_1 = [&b"CMIMAGE\x01"[..], &format_0].concat();
        let mut counted = older.state.clone();
        crate::nonces::move_to_disk(&db, &mut counted).unwrap();
        assert!(counted.recent_commands.nonces().is_empty());
        assert_eq!(counted.recent_commands.nonces_remembered(), 1);
        for (format, bytes) in [(0, &format_0), (1, &format_1)] {
            files.note_image_digests(&[Arc::new(image(8))]);
            std::fs::write(files.image_path(), bytes).unwrap();
            assert_eq!(files.current().unwrap().unwrap().meta, older.meta(), "format {format}");
            assert_eq!(files.read().unwrap().unwrap().state, counted, "format {format}");
            let rewritten = std::fs::read(files.image_path()).unwrap();
            assert_eq!(rewritten[..8], *b"CMIMAGE\x02", "format {format} is written again in format 2");
            let mut rows = Vec::new();
            let decoded = decode_image_visiting(&rewritten[..], |read| {
                rows.extend_from_slice(read);
                Ok(())
            })
            .unwrap();
            assert_eq!((decoded.state, rows.len()), (counted.clone(), 1), "format {format}");
            assert_eq!(files.digest_at(8).unwrap(), None, "the older format's digests are forgotten");
            assert_eq!(ImageFiles::open(dir.path()).unwrap().digest_at(8).unwrap(), None);
        }

        let mut newer = std::fs::read(files.image_path()).unwrap();
        newer[7] = IMAGE_FORMAT + 1;
        std::fs::write(files.image_path(), &newer).unwrap();
        let refused = files.read();
        assert!(matches!(refused, Err(ImageError::FormatUnknown { format: 3 })), "{:?}", refused.err());
        assert!(matches!(files.current(), Err(ImageError::FormatUnknown { format: 3 })));
        assert!(matches!(decode_image(&newer[..]), Err(ImageError::FormatUnknown { format: 3 })));
    }

    /// An image is written whole and read back; an older one never replaces
    /// a newer one; a partial file from a crash is gone on the next open.
    #[test]
    fn an_image_is_replaced_whole_and_only_by_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let files = ImageFiles::open(dir.path()).unwrap();
        assert!(files.read().unwrap().is_none());
        assert_eq!(files.write(&image(7)).unwrap().meta, image(7).meta());
        assert_eq!(files.write(&image(5)).unwrap().meta, image(7).meta());
        assert_eq!(files.read().unwrap().unwrap().last_applied, image(7).last_applied);
        let past_bound = files.write_within(&image(8), 10);
        assert!(matches!(past_bound, Err(ImageError::PastBound)), "{:?}", past_bound.err());
        assert_eq!(files.current().unwrap().unwrap().meta, image(7).meta());
        std::fs::write(dir.path().join(IMAGE_DIRECTORY).join(WRITING_FILE), b"half").unwrap();
        std::fs::write(files.receiving_path(3), b"half").unwrap();
        let files = ImageFiles::open(dir.path()).unwrap();
        assert!(!files.receiving_path(3).exists());
        assert_eq!(files.current().unwrap().unwrap().meta, image(7).meta());
    }
}
