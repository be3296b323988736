//! Receiving a snapshot: civmesh's, not openraft's.
//!
//! openraft 0.9 stops Raft on an install that fails, so a hostile leader
//! could stop a follower with one snapshot that does not decode. The
//! receiver writes each stream, in order, to a file of its own
//! (`state-image/receiving.<n>`: a new stream never touches the file an
//! install reads), decodes the whole snapshot and matches it to its
//! metadata, and only then hands it to `Raft::install_full_snapshot`, with
//! the decoded image kept for the install. A chunk out of order gets
//! openraft's own `SnapshotMismatch` (its sender starts again from 0), one
//! past [`IMAGE_FILE_BYTES_MAX`] `raft_snapshot_past_bound`, a snapshot
//! that does not check `raft_snapshot_corrupt`, and every later chunk of
//! it from the same vote the same, without writing it again. One snapshot
//! is checked and installed at a time (a last chunk meanwhile is answered
//! busy), and one the node has already committed past is not written.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{InstallSnapshotRequest, InstallSnapshotResponse};
use openraft::storage::Snapshot;
use openraft::{SnapshotMeta, SnapshotSegmentId, Vote};

use crate::network::{call, PeerRequest, PeerResponse, Transport};
use crate::policy_log::RaftRefusal;
use crate::snapshot::{
    decode_image, disk, lock, CheckedSnapshot, HashingReader, ImageError, ImageFiles, IMAGE_FILE_BYTES_MAX,
};
use crate::types::{raft_node_id, Raft, RaftNodeId, RaftPeer, TypeConfig};
use civmesh_certs::NodeId;

/// Why a snapshot chunk was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChunkRefusal {
    /// The chunk starts past where the stream is: `expected` is.
    #[error("the snapshot chunk starts at {offset}, not at {expected}")]
    OutOfOrder {
        /// Where the chunk starts.
        offset: u64,
        /// Where the stream is.
        expected: u64,
    },
    /// The chunk ends past [`IMAGE_FILE_BYTES_MAX`].
    #[error("the snapshot chunk ends past the state image bound")]
    PastBound,
    /// The whole snapshot does not decode, or is not what its metadata says.
    #[error("the snapshot is corrupt: {0}")]
    Corrupt(String),
    /// A chunk of a snapshot already refused as corrupt.
    #[error("the snapshot was refused before")]
    RefusedBefore,
    /// A chunk of a snapshot no other replica confirmed, within
    /// [`SNAPSHOT_UNCONFIRMED_REFUSED_MS`] of the refusal: the leader's
    /// sender gives up on it after a few, and sends its newest snapshot
    /// next, which the replicas may confirm.
    #[error("the snapshot was not confirmed moments ago")]
    UnconfirmedBefore,
    /// This node could not write or read it.
    #[error("{0}")]
    Disk(#[from] ImageError),
}

/// The snapshot being received, one stream at a time.
pub(crate) struct SnapshotReceiver {
    files: ImageFiles,
    stream: Option<Stream>,
    streams_started: u64,
    /// The last snapshot refused as corrupt, and the vote it came with.
    refused: Option<(Vote<RaftNodeId>, SnapshotMeta<RaftNodeId, RaftPeer>)>,
    /// The last snapshot no other replica confirmed, the vote it came
    /// with, and until when its chunks are refused.
    unconfirmed: Option<(Vote<RaftNodeId>, SnapshotMeta<RaftNodeId, RaftPeer>, Instant)>,
}

/// How long the chunks of a snapshot no other replica confirmed are
/// refused without being written, in ms. openraft 0.9's sender resends a
/// refused last chunk, starts again from 0 when told it is out of order,
/// and so would send the same snapshot forever; refused a few times in a
/// row, it ends the stream, and the leader sends its newest snapshot.
pub const SNAPSHOT_UNCONFIRMED_REFUSED_MS: u64 = 10_000;

struct Stream {
    snapshot_id: String,
    path: PathBuf,
    file: File,
    offset: u64,
}

/// A whole snapshot received, not yet checked.
pub(crate) struct Finished {
    path: PathBuf,
    file: File,
    meta: SnapshotMeta<RaftNodeId, RaftPeer>,
}

impl SnapshotReceiver {
    pub(crate) fn new(files: &ImageFiles) -> Self {
        SnapshotReceiver {
            files: files.clone(),
            stream: None,
            streams_started: 0,
            refused: None,
            unconfirmed: None,
        }
    }

    /// Writes one chunk at its offset, which may not be past the stream's
    /// end (a chunk sent again is written again); a chunk at offset 0 of
    /// another snapshot starts a new stream. The last chunk's snapshot is
    /// returned whole, to be checked.
    pub(crate) fn receive(
        &mut self,
        chunk: &InstallSnapshotRequest<TypeConfig>,
    ) -> Result<Option<Finished>, ChunkRefusal> {
        let end = chunk.offset.saturating_add(chunk.data.len() as u64);
        if end > IMAGE_FILE_BYTES_MAX as u64 {
            return Err(ChunkRefusal::PastBound);
        }
        if self.refused.as_ref().is_some_and(|(vote, meta)| *vote == chunk.vote && *meta == chunk.meta) {
            return Err(ChunkRefusal::RefusedBefore);
        }
        let unconfirmed = self.unconfirmed.as_ref().is_some_and(|(vote, meta, until)| {
            *vote == chunk.vote && *meta == chunk.meta && Instant::now() < *until
        });
        if unconfirmed {
            return Err(ChunkRefusal::UnconfirmedBefore);
        }
        let continues =
            self.stream.as_ref().is_some_and(|stream| stream.snapshot_id == chunk.meta.snapshot_id);
        if !continues {
            if chunk.offset != 0 {
                return Err(ChunkRefusal::OutOfOrder { offset: chunk.offset, expected: 0 });
            }
            self.start_stream(&chunk.meta.snapshot_id)?;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(ChunkRefusal::OutOfOrder { offset: chunk.offset, expected: 0 });
        };
        if chunk.offset > stream.offset {
            return Err(ChunkRefusal::OutOfOrder { offset: chunk.offset, expected: stream.offset });
        }
        let written = stream
            .file
            .seek(SeekFrom::Start(chunk.offset))
            .and_then(|_| stream.file.write_all(&chunk.data))
            .and_then(|()| stream.file.set_len(end));
        if let Err(error) = written {
            let failure = ChunkRefusal::Disk(disk("write", &stream.path)(error));
            self.drop_stream();
            return Err(failure);
        }
        stream.offset = end;
        if !chunk.done {
            return Ok(None);
        }
        let Some(stream) = self.stream.take() else {
            return Ok(None);
        };
        Ok(Some(Finished { path: stream.path, file: stream.file, meta: chunk.meta.clone() }))
    }

    fn start_stream(&mut self, snapshot_id: &str) -> Result<(), ChunkRefusal> {
        self.drop_stream();
        self.streams_started += 1;
        let path = self.files.receiving_path(self.streams_started);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(disk("create", &path))?;
        self.stream = Some(Stream { snapshot_id: snapshot_id.to_string(), path, file, offset: 0 });
        Ok(())
    }

    fn drop_stream(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = std::fs::remove_file(stream.path);
        }
    }

    /// Remembers a snapshot refused as corrupt, so its later chunks from
    /// the same vote are too.
    fn refuse(&mut self, chunk: &InstallSnapshotRequest<TypeConfig>) {
        self.refused = Some((chunk.vote, chunk.meta.clone()));
    }

    /// Remembers a snapshot no other replica confirmed, so its chunks from
    /// the same vote are refused until `until`.
    fn refuse_unconfirmed(
        &mut self,
        vote: Vote<RaftNodeId>,
        meta: SnapshotMeta<RaftNodeId, RaftPeer>,
        until: Instant,
    ) {
        self.unconfirmed = Some((vote, meta, until));
    }
}

impl Finished {
    /// Syncs the snapshot, decodes it whole, and checks it is the one its
    /// metadata describes.
    pub(crate) fn check(self) -> Result<(CheckedSnapshot, Snapshot<TypeConfig>), ChunkRefusal> {
        let Finished { path, mut file, meta } = self;
        let reading = file
            .sync_all()
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.try_clone())
            .map_err(disk("read back", &path))?;
        // Decoded to its end, so the digest is of the whole file.
        let mut hashing = HashingReader::new(reading);
        let image = decode_image(&mut hashing).map_err(|error| match error {
            ImageError::Corrupt(reason) => ChunkRefusal::Corrupt(reason),
            unknown @ ImageError::FormatUnknown { .. } => ChunkRefusal::Corrupt(unknown.to_string()),
            other => ChunkRefusal::Disk(other),
        })?;
        if image.meta() != meta {
            return Err(ChunkRefusal::Corrupt("its contents are not what its metadata says".into()));
        }
        let digest = hashing.finish();
        file.seek(SeekFrom::Start(0)).map_err(disk("seek in", &path))?;
        let snapshot = Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) };
        Ok((CheckedSnapshot { path, image, digest }, snapshot))
    }
}

/// A whole snapshot, checked, and its SHA-256.
type ReceivedSnapshot = (Snapshot<TypeConfig>, [u8; 32]);

/// The receiver a node shares between the Raft RPCs it answers.
#[derive(Clone)]
pub(crate) struct SharedReceiver {
    files: ImageFiles,
    receiver: Arc<Mutex<SnapshotReceiver>>,
    /// Held from a last chunk's check to the end of its install.
    installing: Arc<tokio::sync::Mutex<()>>,
}

impl SharedReceiver {
    pub(crate) fn new(files: &ImageFiles) -> Self {
        SharedReceiver {
            files: files.clone(),
            receiver: Arc::new(Mutex::new(SnapshotReceiver::new(files))),
            installing: Arc::default(),
        }
    }

    /// Receives a chunk and, for the last, checks the snapshot (outside
    /// the receiver's lock) and keeps it for the install.
    fn receive_blocking(
        &self,
        chunk: &InstallSnapshotRequest<TypeConfig>,
    ) -> Result<Option<ReceivedSnapshot>, ChunkRefusal> {
        let Some(finished) = lock(&self.receiver).receive(chunk)? else {
            return Ok(None);
        };
        let path = finished.path.clone();
        match finished.check() {
            Ok((checked, snapshot)) => {
                let digest = checked.digest;
                self.files.keep_checked(checked);
                Ok(Some((snapshot, digest)))
            }
            Err(refusal) => {
                let _ = std::fs::remove_file(path);
                if matches!(refusal, ChunkRefusal::Corrupt(_)) {
                    lock(&self.receiver).refuse(chunk);
                }
                Err(refusal)
            }
        }
    }
}

/// Answers one `InstallSnapshot` chunk: written if the leader's vote is
/// current, and the last chunk's snapshot, checked whole, handed to Raft to
/// install. A refusal names what was wrong with the chunk.
pub(crate) async fn answer_chunk<T: Transport>(
    raft: &Raft,
    transport: &T,
    peers: Peers,
    receiver: &SharedReceiver,
    chunk: InstallSnapshotRequest<TypeConfig>,
) -> (PeerResponse, Option<RaftRefusal>) {
    // Even a node that knows no voters yet takes a snapshot only from the
    // leader its vote names: the one peer that cannot confirm it.
    if raft_node_id(&peers.from) != chunk.vote.leader_id.node_id {
        return (PeerResponse::Refused(RaftRefusal::NotLeader.to_string()), Some(RaftRefusal::NotLeader));
    }
    let (vote, committed) = match raft.with_raft_state(|state| (*state.vote_ref(), state.committed)).await {
        Ok(seen) => seen,
        Err(fatal) => return (PeerResponse::InstallSnapshot(Err(RaftError::Fatal(fatal))), None),
    };
    let answered = (PeerResponse::InstallSnapshot(Ok(InstallSnapshotResponse { vote })), None);
    // As openraft's own receiver: a chunk from an older leader is answered
    // with the newer vote, and one of a snapshot this node has committed
    // past is not needed; neither is written.
    let current = matches!(
        chunk.vote.partial_cmp(&vote),
        Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
    );
    let committed_past = chunk.meta.last_log_id.map(|id| id.index) <= committed.map(|id| id.index);
    if !current || committed_past {
        return answered;
    }
    let _installing = if chunk.done {
        match receiver.installing.clone().try_lock_owned() {
            Ok(guard) => Some(guard),
            Err(_) => return (PeerResponse::Refused("busy: installing another snapshot".into()), None),
        }
    } else {
        None
    };
    let leader_vote = chunk.vote;
    let (snapshot_id, offset) = (chunk.meta.snapshot_id.clone(), chunk.offset);
    let shared = receiver.clone();
    let received = tokio::task::spawn_blocking(move || shared.receive_blocking(&chunk)).await;
    let (snapshot, digest) = match received {
        Ok(Ok(None)) => return answered,
        Ok(Ok(Some(received))) => received,
        Ok(Err(refusal)) => return refused(refusal, snapshot_id, offset),
        Err(stopped) => {
            return (PeerResponse::Refused(format!("the snapshot chunk was not written: {stopped}")), None)
        }
    };
    let files = receiver.files.clone();
    let index = snapshot.meta.last_log_id.map_or(0, |id| id.index);
    let candidates = confirmers(raft, &snapshot.meta, &peers);
    let asked = candidates.len();
    if let Err(answers) = confirmed(transport, candidates, index, digest).await {
        let until = Instant::now() + Duration::from_millis(SNAPSHOT_UNCONFIRMED_REFUSED_MS);
        lock(&receiver.receiver).refuse_unconfirmed(leader_vote, snapshot.meta.clone(), until);
        let _ = tokio::task::spawn_blocking(move || files.forget_checked()).await;
        let ConfirmAnswers { none, other, unanswered } = answers;
        tracing::warn!(
            index,
            asked,
            none,
            other,
            unanswered,
            "refused a snapshot no other replica confirmed (in the last round: none held an image at its \
             index, other held another, unanswered did not answer; replicas keep images at multiples of \
             [raft] snapshot_after_entries, which must be the same on every node)"
        );
        let refusal = RaftRefusal::SnapshotUnconfirmed;
        return (PeerResponse::Refused(refusal.to_string()), Some(refusal));
    }
    files.set_installing(Some(index));
    let installed = raft.install_full_snapshot(leader_vote, snapshot).await;
    files.set_installing(None);
    let _ = tokio::task::spawn_blocking(move || files.forget_checked()).await;
    match installed {
        Ok(response) => {
            (PeerResponse::InstallSnapshot(Ok(InstallSnapshotResponse { vote: response.vote })), None)
        }
        Err(fatal) => (PeerResponse::InstallSnapshot(Err(RaftError::Fatal(fatal))), None),
    }
}

/// How long a receiver asks other replicas to confirm a snapshot, in ms.
pub const SNAPSHOT_CONFIRM_MS_MAX: u64 = 3_000;
/// The pause between two rounds of asking, in ms.
const SNAPSHOT_CONFIRM_RETRY_MS: u64 = 200;
/// How long one voter may take to answer, in ms.
const SNAPSHOT_CONFIRM_ASK_MS_MAX: u64 = 1_000;

/// Who receives a snapshot, and who sent it (authenticated by the
/// transport).
pub(crate) struct Peers {
    pub(crate) me: NodeId,
    pub(crate) from: NodeId,
}

/// The peers that may confirm a snapshot: every member this node knows and
/// every member the snapshot names (voters and learners: every replica
/// builds the same images), each whose Raft id is its node's, but neither
/// this node nor the sender. Under one compromised member, any of them is
/// honest, and the transport proves who answers.
fn confirmers(raft: &Raft, meta: &SnapshotMeta<RaftNodeId, RaftPeer>, peers: &Peers) -> Vec<RaftPeer> {
    let known = raft.metrics().borrow().membership_config.membership().clone();
    let named = meta.last_membership.membership().clone();
    let mut candidates = std::collections::BTreeMap::new();
    for (id, peer) in known.nodes().chain(named.nodes()) {
        let consistent = raft_node_id(&peer.node_id) == *id;
        if consistent && peer.node_id != peers.me && peer.node_id != peers.from {
            // What this node knows wins over what the sender says.
            candidates.entry(*id).or_insert_with(|| peer.clone());
        }
    }
    candidates.into_values().collect()
}

/// Whether one of `candidates` holds an image of the same bytes at `index`:
/// replicas build their snapshots at the same indexes, so honest ones hold
/// the same image, and a leader alone cannot make a replica install a
/// state. All are asked at once, again every `SNAPSHOT_CONFIRM_RETRY_MS`
/// (a replica may not have built it yet), for at most
/// `SNAPSHOT_CONFIRM_MS_MAX`.
async fn confirmed<T: Transport>(
    transport: &T,
    candidates: Vec<RaftPeer>,
    index: u64,
    digest: [u8; 32],
) -> Result<(), ConfirmAnswers> {
    if candidates.is_empty() {
        return Err(ConfirmAnswers::default());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SNAPSHOT_CONFIRM_MS_MAX);
    let mut last_round = ConfirmAnswers::default();
    while tokio::time::Instant::now() < deadline {
        let mut asking = tokio::task::JoinSet::new();
        for peer in &candidates {
            let (transport, peer) = (transport.clone(), peer.clone());
            asking.spawn(async move {
                let timeout = Duration::from_millis(SNAPSHOT_CONFIRM_ASK_MS_MAX);
                call(&transport, &peer, &PeerRequest::ImageDigest(index), timeout).await
            });
        }
        let mut round = ConfirmAnswers { unanswered: candidates.len(), ..ConfirmAnswers::default() };
        let asked = tokio::time::timeout_at(deadline, async {
            while let Some(answer) = asking.join_next().await {
                match answer {
                    Ok(Ok(PeerResponse::ImageDigest(Some(theirs)))) if theirs == digest => return true,
                    Ok(Ok(PeerResponse::ImageDigest(Some(_)))) => round.other += 1,
                    Ok(Ok(PeerResponse::ImageDigest(None))) => round.none += 1,
                    _ => continue,
                }
                round.unanswered -= 1;
            }
            false
        });
        if asked.await == Ok(true) {
            return Ok(());
        }
        last_round = round;
        tokio::time::sleep(Duration::from_millis(SNAPSHOT_CONFIRM_RETRY_MS)).await;
    }
    Err(last_round)
}

/// What the replicas asked to confirm a snapshot answered, in one round.
#[derive(Debug, Default, Clone, Copy)]
struct ConfirmAnswers {
    /// Holds no image at the snapshot's index.
    none: usize,
    /// Holds another image there.
    other: usize,
    /// Did not answer, or answered something else.
    unanswered: usize,
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
        ChunkRefusal::RefusedBefore => RaftRefusal::SnapshotCorrupt,
        ChunkRefusal::UnconfirmedBefore => RaftRefusal::SnapshotUnconfirmed,
    };
    (PeerResponse::Refused(refusal.to_string()), Some(refusal))
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::snapshot::file_digest;
    use crate::snapshot::tests::{image, image_bytes};
    use crate::snapshot::StateImage;

    proptest::proptest! {
        /// Whatever chunks a peer sends, in whatever order, from whatever
        /// vote: the receiver never panics, hands over only a snapshot that
        /// decodes to what its metadata says, and keeps at most two files
        /// (the stream and the snapshot kept for its install).
        #[test]
        fn any_chunks_give_a_checked_snapshot_or_a_refusal(
            chunks in proptest::collection::vec(
                (0..3u64, 0..4usize, proptest::collection::vec(proptest::num::u8::ANY, 0..48), proptest::bool::ANY, 0..2u64),
                1..40,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let files = ImageFiles::open(dir.path()).unwrap();
            let receiver = SharedReceiver::new(&files);
            let real = image_bytes(&image(5));
            for (snapshot, offset_pick, noise, done, term) in chunks {
                let meta_of = image(5 + snapshot);
                // Offsets at the start, inside, at the end of and past the real image.
                let offset = [0, real.len() / 2, real.len(), real.len() + 7][offset_pick];
                let data = if snapshot == 0 && noise.len() % 2 == 0 {
                    real.get(offset..).unwrap_or_default().to_vec()
                } else {
                    noise
                };
                let mut sent = chunk(&meta_of, &data, offset as u64, done);
                sent.vote = Vote::new(term, 1);
                if let Ok(Some((snapshot, digest))) = receiver.receive_blocking(&sent) {
                    let checked = files.take_checked(&snapshot.meta).expect("a handed-over snapshot is kept");
                    proptest::prop_assert_eq!(checked.image.meta(), snapshot.meta.clone());
                    proptest::prop_assert_eq!(snapshot.meta, meta_of.meta());
                    // The digest is the file's: what another replica's image
                    // of the same bytes would have.
                    let file = std::fs::File::open(&checked.path).unwrap();
                    proptest::prop_assert_eq!(file_digest(file, &checked.path).unwrap(), digest);
                    let _ = std::fs::remove_file(checked.path);
                }
                let kept = std::fs::read_dir(files.receiving_path(0).parent().unwrap()).unwrap().count();
                proptest::prop_assert!(kept <= 2, "{} files", kept);
            }
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

    /// Chunks in order make the snapshot, and one sent again is written
    /// again; one past the stream's end or past the bound is refused; a
    /// snapshot truncated, corrupt or not matching its metadata is refused,
    /// and so is every later chunk of it; each stream has its own file.
    #[test]
    fn a_snapshot_is_received_in_order_and_checked_whole() {
        let dir = tempfile::tempdir().unwrap();
        let files = ImageFiles::open(dir.path()).unwrap();
        let receiver = SharedReceiver::new(&files);
        let sent = image(9);
        let bytes = image_bytes(&sent);
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        let half = first.len() as u64;
        assert!(receiver.receive_blocking(&chunk(&sent, first, 0, false)).unwrap().is_none());
        assert!(receiver.receive_blocking(&chunk(&sent, first, 0, false)).unwrap().is_none());
        let skipped = receiver.receive_blocking(&chunk(&sent, rest, half + 1, true));
        assert!(matches!(skipped, Err(ChunkRefusal::OutOfOrder { expected, .. }) if expected == half));
        let far = receiver.receive_blocking(&chunk(&sent, b"x", IMAGE_FILE_BYTES_MAX as u64, false));
        assert!(matches!(far, Err(ChunkRefusal::PastBound)));
        let (received, _) = receiver.receive_blocking(&chunk(&sent, rest, half, true)).unwrap().unwrap();
        assert_eq!(received.meta, sent.meta());
        let checked = files.take_checked(&sent.meta()).expect("kept for the install");
        assert_eq!(checked.image.meta(), sent.meta());
        assert!(checked.path.exists());

        let truncated = image(11);
        let truncated_bytes = image_bytes(&truncated);
        let refused = receiver.receive_blocking(&chunk(&truncated, &truncated_bytes[..10], 0, true));
        assert!(matches!(refused, Err(ChunkRefusal::Corrupt(_))), "{:?}", refused.err());
        let again = receiver.receive_blocking(&chunk(&truncated, &truncated_bytes, 0, true));
        assert!(matches!(again, Err(ChunkRefusal::RefusedBefore)), "{:?}", again.err());
        // Another vote's chunks of it are not refused for it: one voter
        // cannot have the leader's snapshot refused in advance.
        let mut from_leader = chunk(&truncated, &truncated_bytes, 0, true);
        from_leader.vote = Vote::new(2, 1);
        let (taken, _) = receiver.receive_blocking(&from_leader).unwrap().unwrap();
        assert_eq!(taken.meta, truncated.meta());
        let mut trailing = bytes.clone();
        trailing.push(0);
        let other = image(12);
        assert!(matches!(
            receiver.receive_blocking(&chunk(&other, &trailing, 0, true)),
            Err(ChunkRefusal::Corrupt(_))
        ));
        let mismatched = receiver.receive_blocking(&chunk(&image(13), &bytes, 0, true));
        assert!(matches!(mismatched, Err(ChunkRefusal::Corrupt(reason)) if reason.contains("metadata")));
        let unstarted = SharedReceiver::new(&files).receive_blocking(&chunk(&image(14), rest, 5, true));
        assert!(matches!(unstarted, Err(ChunkRefusal::OutOfOrder { expected: 0, .. })));
        // Refused streams leave no file: only the one taken for its install
        // (which renames it) and the one kept for the next.
        let left = std::fs::read_dir(checked.path.parent().unwrap()).unwrap().count();
        assert_eq!(left, 2);
        files.forget_checked();
        assert!(checked.path.exists(), "forgetting the kept one leaves the taken one");
        assert_eq!(std::fs::read_dir(checked.path.parent().unwrap()).unwrap().count(), 1);
    }

    /// A snapshot no other replica confirmed is refused, unwritten, for a
    /// while, from the vote it came with; another, or the same after the
    /// while, is received again.
    #[test]
    fn an_unconfirmed_snapshot_is_refused_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let files = ImageFiles::open(dir.path()).unwrap();
        let receiver = SharedReceiver::new(&files);
        let (sent, other) = (image(20), image(30));
        let bytes = image_bytes(&sent);
        let vote = Vote::default();
        let later = Instant::now() + Duration::from_secs(60);
        lock(&receiver.receiver).refuse_unconfirmed(vote, sent.meta(), later);
        let again = receiver.receive_blocking(&chunk(&sent, &bytes, 0, true));
        assert!(matches!(again, Err(ChunkRefusal::UnconfirmedBefore)), "{:?}", again.err());
        let mut from_another_vote = chunk(&sent, &bytes, 0, true);
        from_another_vote.vote = Vote::new(2, 1);
        assert!(receiver.receive_blocking(&from_another_vote).unwrap().is_some());
        let other_bytes = image_bytes(&other);
        assert!(receiver.receive_blocking(&chunk(&other, &other_bytes, 0, true)).unwrap().is_some());
        lock(&receiver.receiver).refuse_unconfirmed(vote, sent.meta(), Instant::now());
        assert!(receiver.receive_blocking(&chunk(&sent, &bytes, 0, true)).unwrap().is_some());
    }
}
