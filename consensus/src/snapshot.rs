//! The state image as a file, and snapshots streamed through it.
//!
//! - The image (the state with its last applied log id and membership) is
//!   the file `state-image/image` in the policy log's directory. It is
//!   written to a temporary file, synced, and renamed over the last one, so
//!   a crash leaves the old image or the new one, whole. Encoding and
//!   decoding stream through the file: the bytes are never held whole.
//! - A snapshot is that file: the leader sends it in chunks read from
//!   disk, and a receiver ([`SnapshotReceiver`]) writes the chunks, in
//!   order, to `state-image/receiving`. Before openraft installs it, the
//!   receiver decodes it and checks it against its metadata, so a chunk
//!   that is out of order, past the bound, truncated or corrupt is refused
//!   with a typed error, and nothing is installed. openraft 0.9 stops Raft
//!   on a failed install; a hostile leader could otherwise stop a follower
//!   with one bad snapshot.
//! - A receiver or a writer killed midway leaves a partial file, removed
//!   on the next start. The leader's sender starts again from offset 0.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use civmesh_certs::codec;
use civmesh_policy::PolicyState;
use openraft::error::{InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{InstallSnapshotRequest, InstallSnapshotResponse};
use openraft::storage::Snapshot;
use openraft::{LogId, SnapshotMeta, SnapshotSegmentId, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::network::PeerResponse;
use crate::policy_log::RaftRefusal;
use crate::types::{Raft, RaftNodeId, RaftPeer, TypeConfig};

/// The largest state image (and snapshot) a node writes or reads, in bytes.
/// The image holds no history, but it holds the replay window: up to
/// `COMMAND_NONCES_MAX` (1,000,000) nonces at about 110 bytes each
/// encoded, besides the policy itself
/// (`a_full_replay_window_fits_the_state_image_bound`).
pub const STATE_IMAGE_BYTES_MAX: usize = codec::LARGE_DECODE_BYTES_MAX;
/// The directory of image files, inside the policy log's directory.
const IMAGE_DIRECTORY: &str = "state-image";
const IMAGE_FILE: &str = "image";
/// A new image while it is written, before it is renamed over the last.
const WRITING_FILE: &str = "image.writing";
/// A snapshot while it is received.
const RECEIVING_FILE: &str = "receiving";
/// Buffers between the encoder or decoder and the file, in bytes.
const FILE_BUFFER_BYTES: usize = 1024 * 1024;

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
    /// The image encodes to more than a node reads back.
    #[error(
        "the policy state image is over the {STATE_IMAGE_BYTES_MAX} bytes a node reads back: \
         not written; the last image and the log after it stay"
    )]
    PastBound,
    /// The bytes do not decode as an image, or not as the one described.
    #[error("the state image is corrupt: {0}")]
    Corrupt(String),
}

fn disk(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.display().to_string();
    move |source| ImageError::Disk { action, path, source }
}

/// The image files of one policy log. Writers take the lock, so an older
/// image never replaces a newer one.
#[derive(Clone)]
pub(crate) struct ImageFiles {
    directory: PathBuf,
    writing: Arc<Mutex<()>>,
}

impl ImageFiles {
    /// The image files in `log_directory`, without what a crash left
    /// half-written.
    pub(crate) fn open(log_directory: &Path) -> Result<Self, ImageError> {
        let directory = log_directory.join(IMAGE_DIRECTORY);
        std::fs::create_dir_all(&directory).map_err(disk("create the directory of", &directory))?;
        for partial in [WRITING_FILE, RECEIVING_FILE] {
            let path = directory.join(partial);
            match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(disk("remove a partial", &path)(error));
                }
                _ => {}
            }
        }
        Ok(ImageFiles { directory, writing: Arc::default() })
    }

    fn image_path(&self) -> PathBuf {
        self.directory.join(IMAGE_FILE)
    }

    pub(crate) fn receiving_path(&self) -> PathBuf {
        self.directory.join(RECEIVING_FILE)
    }

    /// Writes `image` as the current image unless a newer one is there, and
    /// returns the current image's file and metadata.
    pub(crate) fn write(&self, image: &StateImage) -> Result<CurrentImage, ImageError> {
        self.write_within(image, STATE_IMAGE_BYTES_MAX)
    }

    fn write_within(&self, image: &StateImage, bytes_max: usize) -> Result<CurrentImage, ImageError> {
        let writing = self.directory.join(WRITING_FILE);
        let _lock = self.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let written = write_synced(&writing, |file| {
            let inner = BufWriter::with_capacity(FILE_BUFFER_BYTES, file);
            let mut bounded = BoundedWriter { inner, left: bytes_max };
            match codec::encode_into_writer(image, &mut bounded) {
                Ok(bytes) => bounded.inner.flush().map(|()| bytes).map_err(EncodeFailure::Disk),
                Err(_) if bounded.left == 0 => Err(EncodeFailure::PastBound),
                Err(error) => Err(EncodeFailure::Disk(std::io::Error::other(error))),
            }
        });
        let bytes = match written {
            Ok(bytes) => bytes,
            Err(failure) => {
                let _ = std::fs::remove_file(&writing);
                return Err(failure.into_image_error(&writing));
            }
        };
        if self.current()?.is_some_and(|current| current.meta.last_log_id > image.last_applied) {
            let _ = std::fs::remove_file(&writing);
            return self.current()?.ok_or_else(|| ImageError::Corrupt("the newer image went away".into()));
        }
        self.install(&writing)?;
        let file = File::open(self.image_path()).map_err(disk("open", &self.image_path()))?;
        Ok(CurrentImage { file, meta: image.meta(), bytes: bytes as u64 })
    }

    /// Copies a received, checked snapshot as the current image.
    pub(crate) fn keep_received(&self, received: &mut File) -> Result<(), ImageError> {
        let writing = self.directory.join(WRITING_FILE);
        let _lock = self.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let copied = write_synced(&writing, |file| {
            received.seek(SeekFrom::Start(0)).map_err(EncodeFailure::Disk)?;
            std::io::copy(received, file).map_err(EncodeFailure::Disk)
        });
        if let Err(failure) = copied {
            let _ = std::fs::remove_file(&writing);
            return Err(failure.into_image_error(&writing));
        }
        self.install(&writing)
    }

    /// Renames `writing` over the image and syncs the directory, so the
    /// rename survives a crash.
    fn install(&self, writing: &Path) -> Result<(), ImageError> {
        let image = self.image_path();
        std::fs::rename(writing, &image).map_err(disk("rename into place", &image))?;
        File::open(&self.directory)
            .and_then(|directory| directory.sync_all())
            .map_err(disk("sync the directory of", &self.directory))
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
        let head = read_head(&mut file)?;
        file.seek(SeekFrom::Start(0)).map_err(disk("seek in", &path))?;
        Ok(Some(CurrentImage { file, meta: head, bytes }))
    }

    /// The current image, decoded, if there is one.
    pub(crate) fn read(&self) -> Result<Option<StateImage>, ImageError> {
        let Some(current) = self.current()? else {
            return Ok(None);
        };
        decode_image(current.file).map(Some)
    }
}

/// The current image: its file, positioned at the start, and what it holds.
pub(crate) struct CurrentImage {
    pub(crate) file: File,
    pub(crate) meta: SnapshotMeta<RaftNodeId, RaftPeer>,
    pub(crate) bytes: u64,
}

impl CurrentImage {
    pub(crate) fn into_snapshot(self) -> Snapshot<TypeConfig> {
        Snapshot { meta: self.meta, snapshot: Box::new(tokio::fs::File::from_std(self.file)) }
    }
}

/// Decodes a whole image from `file`, streaming, within the bound.
pub(crate) fn decode_image(file: File) -> Result<StateImage, ImageError> {
    codec::decode_large_from_reader(BufReader::with_capacity(FILE_BUFFER_BYTES, file), STATE_IMAGE_BYTES_MAX)
        .map_err(|error| ImageError::Corrupt(error.to_string()))
}

fn read_head(file: &mut File) -> Result<SnapshotMeta<RaftNodeId, RaftPeer>, ImageError> {
    let config = bincode::config::standard().with_limit::<{ codec::DECODE_BYTES_MAX }>();
    let head: ImageHead = bincode::serde::decode_from_std_read(&mut BufReader::new(file), config)
        .map_err(|error| ImageError::Corrupt(error.to_string()))?;
    Ok(SnapshotMeta {
        last_log_id: head.last_applied,
        last_membership: head.last_membership,
        snapshot_id: head.snapshot_id,
    })
}

enum EncodeFailure {
    Disk(std::io::Error),
    PastBound,
}

impl EncodeFailure {
    fn into_image_error(self, path: &Path) -> ImageError {
        match self {
            EncodeFailure::Disk(source) => disk("write", path)(source),
            EncodeFailure::PastBound => ImageError::PastBound,
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

/// A writer that refuses to write more than `left` bytes in all.
struct BoundedWriter<W> {
    inner: W,
    left: usize,
}

impl<W: Write> Write for BoundedWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes.len() > self.left {
            self.left = 0;
            return Err(std::io::Error::other("past the state image bound"));
        }
        let written = self.inner.write(bytes)?;
        self.left -= written;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Why a snapshot chunk was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChunkRefusal {
    /// The chunk does not start where the stream is: `expected` is.
    #[error("the snapshot chunk starts at {offset}, not at {expected}")]
    OutOfOrder {
        /// Where the chunk starts.
        offset: u64,
        /// Where the stream is.
        expected: u64,
    },
    /// The chunk ends past [`STATE_IMAGE_BYTES_MAX`].
    #[error("the snapshot chunk ends past the state image bound")]
    PastBound,
    /// The whole snapshot does not decode, or is not what its metadata says.
    #[error("the snapshot is corrupt: {0}")]
    Corrupt(String),
    /// This node could not write or read it.
    #[error("{0}")]
    Disk(ImageError),
}

/// The snapshot being received, one stream at a time.
pub(crate) struct SnapshotReceiver {
    path: PathBuf,
    stream: Option<Stream>,
}

struct Stream {
    snapshot_id: String,
    file: File,
    offset: u64,
}

impl SnapshotReceiver {
    pub(crate) fn new(files: &ImageFiles) -> Self {
        SnapshotReceiver { path: files.receiving_path(), stream: None }
    }

    /// Writes one chunk. A chunk at offset 0 starts the stream (again); any
    /// other must start where the stream is. The last chunk's snapshot is
    /// checked whole and returned, ready to install.
    pub(crate) fn receive(
        &mut self,
        chunk: &InstallSnapshotRequest<TypeConfig>,
    ) -> Result<Option<Snapshot<TypeConfig>>, ChunkRefusal> {
        let end = chunk.offset.saturating_add(chunk.data.len() as u64);
        if end > STATE_IMAGE_BYTES_MAX as u64 {
            return Err(ChunkRefusal::PastBound);
        }
        let expected = match &self.stream {
            Some(stream) if stream.snapshot_id == chunk.meta.snapshot_id => stream.offset,
            _ => 0,
        };
        if chunk.offset == 0 {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.path)
                .map_err(|error| ChunkRefusal::Disk(disk("create", &self.path)(error)))?;
            self.stream = Some(Stream { snapshot_id: chunk.meta.snapshot_id.clone(), file, offset: 0 });
        } else if chunk.offset != expected {
            return Err(ChunkRefusal::OutOfOrder { offset: chunk.offset, expected });
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(ChunkRefusal::OutOfOrder { offset: chunk.offset, expected: 0 });
        };
        stream
            .file
            .write_all(&chunk.data)
            .map_err(|error| ChunkRefusal::Disk(disk("write", &self.path)(error)))?;
        stream.offset = end;
        if !chunk.done {
            return Ok(None);
        }
        let Some(stream) = self.stream.take() else {
            return Ok(None);
        };
        self.check(stream, &chunk.meta).map(Some)
    }

    /// Removes the last snapshot received, once installed, unless another
    /// stream has started.
    pub(crate) fn forget_received(&mut self) {
        if self.stream.is_none() {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Syncs the received snapshot, decodes it whole, and checks it is the
    /// one its metadata describes.
    fn check(
        &self,
        stream: Stream,
        meta: &SnapshotMeta<RaftNodeId, RaftPeer>,
    ) -> Result<Snapshot<TypeConfig>, ChunkRefusal> {
        let mut file = stream.file;
        let reading = file
            .sync_all()
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.try_clone())
            .map_err(|error| ChunkRefusal::Disk(disk("read back", &self.path)(error)))?;
        let image = decode_image(reading).map_err(|error| ChunkRefusal::Corrupt(error.to_string()))?;
        if image.meta() != *meta {
            return Err(ChunkRefusal::Corrupt("its contents are not what its metadata says".into()));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|error| ChunkRefusal::Disk(disk("seek in", &self.path)(error)))?;
        Ok(Snapshot { meta: meta.clone(), snapshot: Box::new(tokio::fs::File::from_std(file)) })
    }
}

/// The receiver a node shares between the Raft RPCs it answers.
pub(crate) type SharedReceiver = Arc<Mutex<SnapshotReceiver>>;

/// Answers one `InstallSnapshot` chunk: written if the leader's vote is
/// current, and the last chunk's snapshot, checked whole, handed to Raft to
/// install. A refusal names what was wrong with the chunk.
pub(crate) async fn answer_chunk(
    raft: &Raft,
    receiver: &SharedReceiver,
    chunk: InstallSnapshotRequest<TypeConfig>,
) -> (PeerResponse, Option<RaftRefusal>) {
    let vote = match raft.with_raft_state(|state| *state.vote_ref()).await {
        Ok(vote) => vote,
        Err(fatal) => return (PeerResponse::InstallSnapshot(Err(RaftError::Fatal(fatal))), None),
    };
    // As openraft's own receiver: a chunk from an older leader is answered
    // with the newer vote, and not written.
    if !matches!(chunk.vote.partial_cmp(&vote), Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal))
    {
        return (PeerResponse::InstallSnapshot(Ok(InstallSnapshotResponse { vote })), None);
    }
    let leader_vote = chunk.vote;
    let (snapshot_id, offset) = (chunk.meta.snapshot_id.clone(), chunk.offset);
    let shared = receiver.clone();
    let received = tokio::task::spawn_blocking(move || {
        shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).receive(&chunk)
    })
    .await;
    let snapshot = match received {
        Ok(Ok(None)) => return (PeerResponse::InstallSnapshot(Ok(InstallSnapshotResponse { vote })), None),
        Ok(Ok(Some(snapshot))) => snapshot,
        Ok(Err(refusal)) => return refused(refusal, snapshot_id, offset),
        Err(stopped) => {
            return (PeerResponse::Refused(format!("the snapshot chunk was not written: {stopped}")), None)
        }
    };
    let installed = raft.install_full_snapshot(leader_vote, snapshot).await;
    receiver.lock().unwrap_or_else(std::sync::PoisonError::into_inner).forget_received();
    match installed {
        Ok(response) => {
            (PeerResponse::InstallSnapshot(Ok(InstallSnapshotResponse { vote: response.vote })), None)
        }
        Err(fatal) => (PeerResponse::InstallSnapshot(Err(RaftError::Fatal(fatal))), None),
    }
}

/// The answer to a refused chunk: openraft's own error for one out of
/// order (its sender then starts the stream again), a typed refusal for a
/// bad snapshot, and a plain one when this node's disk failed.
fn refused(refusal: ChunkRefusal, snapshot_id: String, offset: u64) -> (PeerResponse, Option<RaftRefusal>) {
    let refusal = match refusal {
        ChunkRefusal::OutOfOrder { expected, .. } => {
            let mismatch = SnapshotMismatch {
                expect: SnapshotSegmentId { id: snapshot_id.clone(), offset: expected },
                got: SnapshotSegmentId { id: snapshot_id, offset },
            };
            let error = RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch));
            return (PeerResponse::InstallSnapshot(Err(error)), None);
        }
        ChunkRefusal::Disk(error) => {
            tracing::error!(%error, "could not keep a snapshot chunk");
            return (PeerResponse::Refused(format!("this node could not keep the snapshot: {error}")), None);
        }
        ChunkRefusal::PastBound => RaftRefusal::SnapshotPastBound,
        ChunkRefusal::Corrupt(reason) => {
            tracing::warn!(%reason, "refused a snapshot that does not check");
            RaftRefusal::SnapshotCorrupt
        }
    };
    (PeerResponse::Refused(refusal.to_string()), Some(refusal))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(index: u64) -> StateImage {
        StateImage {
            last_applied: Some(LogId::new(openraft::CommittedLeaderId::new(1, 0), index)),
            snapshot_id: format!("{index}-1"),
            ..StateImage::default()
        }
    }

    fn chunk(
        image: &StateImage,
        bytes: &[u8],
        offset: u64,
        done: bool,
    ) -> InstallSnapshotRequest<TypeConfig> {
        InstallSnapshotRequest {
            vote: openraft::Vote::default(),
            meta: image.meta(),
            offset,
            data: bytes.to_vec(),
            done,
        }
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
        std::fs::write(files.receiving_path(), b"half").unwrap();
        let files = ImageFiles::open(dir.path()).unwrap();
        assert!(!files.receiving_path().exists());
        assert_eq!(files.current().unwrap().unwrap().meta, image(7).meta());
    }

    /// Chunks in order make the snapshot; one out of order, past the bound,
    /// truncated, corrupt or not matching its metadata is refused, and a
    /// stream starts again at offset 0.
    #[test]
    fn a_snapshot_is_received_in_order_and_checked_whole() {
        let dir = tempfile::tempdir().unwrap();
        let files = ImageFiles::open(dir.path()).unwrap();
        let mut receiver = SnapshotReceiver::new(&files);
        let sent = image(9);
        let bytes = codec::encode(&sent).unwrap();
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        assert!(receiver.receive(&chunk(&sent, first, 0, false)).unwrap().is_none());
        let skipped = receiver.receive(&chunk(&sent, rest, first.len() as u64 + 1, true));
        assert!(
            matches!(skipped, Err(ChunkRefusal::OutOfOrder { expected, .. }) if expected == first.len() as u64)
        );
        let far = receiver.receive(&chunk(&sent, b"x", STATE_IMAGE_BYTES_MAX as u64, false));
        assert!(matches!(far, Err(ChunkRefusal::PastBound)));
        let received = receiver.receive(&chunk(&sent, rest, first.len() as u64, true)).unwrap().unwrap();
        assert_eq!(received.meta, sent.meta());
        let truncated = receiver.receive(&chunk(&sent, first, 0, true));
        assert!(matches!(truncated, Err(ChunkRefusal::Corrupt(_))), "{truncated:?}");
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        flipped.push(0);
        assert!(matches!(receiver.receive(&chunk(&sent, &flipped, 0, true)), Err(ChunkRefusal::Corrupt(_))));
        let other = receiver.receive(&chunk(&image(10), &bytes, 0, true));
        assert!(matches!(other, Err(ChunkRefusal::Corrupt(reason)) if reason.contains("metadata")));
        let unstarted = SnapshotReceiver::new(&files).receive(&chunk(&sent, rest, 5, true));
        assert!(matches!(unstarted, Err(ChunkRefusal::OutOfOrder { expected: 0, .. })));
    }
}
