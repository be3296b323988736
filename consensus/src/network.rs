//! The messages policy-log members exchange, and the openraft network built
//! on a [`Transport`] the node provides (libp2p in production, in-process in
//! unit tests). This module owns the encoding and the size bound; the
//! transport only moves bytes.

use std::future::Future;
use std::time::Duration;

use civmesh_certs::codec;
use civmesh_policy::SignedCommand;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::types::{ApplyResult, RaftNodeId, RaftPeer, TypeConfig};

/// The largest message between members, in bytes. Snapshot chunks and
/// append batches are configured well below it.
pub const PEER_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The most bytes one `AppendEntries` carries when it holds more than one
/// entry. openraft gives an `AppendEntries` one heartbeat interval to
/// answer, so a learner catching up gets many small ones rather than one
/// that times out again and again.
pub const APPEND_ENTRIES_BYTES_MAX: usize = 256 * 1024;

/// A request from one member to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Raft: replicate entries or heartbeat.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft: request a vote.
    Vote(VoteRequest<RaftNodeId>),
    /// Raft: one chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Commands forwarded to the leader to propose.
    Submit(Vec<SignedCommand>),
    /// Ask the leader for a linearizable read index.
    ReadIndex,
    /// The SHA-256 of the peer's state image ending at this log index, to
    /// confirm a snapshot another peer sent.
    ImageDigest(u64),
}

/// The answer to a [`PeerRequest`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// Raft append result.
    AppendEntries(Result<AppendEntriesResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    /// Raft vote result.
    Vote(Result<VoteResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    /// Raft snapshot chunk result.
    InstallSnapshot(Result<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>),
    /// The outcome of forwarded commands.
    Submit(Result<ApplyResult, crate::policy_log::SubmitError>),
    /// The leader's read index.
    ReadIndex(Result<u64, String>),
    /// The request could not be decoded or is not allowed.
    Refused(String),
    /// The peer's image digest at the index asked, if it has one.
    ImageDigest(Option<[u8; 32]>),
}

/// Why a transport could not deliver a request or bring back an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer cannot be reached now (not connected, refused, gated).
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// No answer within the timeout.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// The message is larger than [`PEER_MESSAGE_BYTES_MAX`].
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The peer answered with bytes that do not decode.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// Moves encoded [`PeerRequest`]s to a peer and brings back the encoded
/// [`PeerResponse`]. The node implements it over libp2p request-response.
pub trait Transport: Clone + Send + Sync + 'static {
    /// Sends `request` to `target` and waits at most `timeout` for the answer.
    fn request(
        &self,
        target: &RaftPeer,
        request: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

/// Sends one request and decodes the answer.
pub async fn call<T: Transport>(
    transport: &T,
    target: &RaftPeer,
    request: &PeerRequest,
    timeout: Duration,
) -> Result<PeerResponse, TransportError> {
    let bytes = encode_request(request)?;
    call_encoded(transport, target, bytes, timeout).await
}

/// Encodes a request, refusing one over [`PEER_MESSAGE_BYTES_MAX`].
fn encode_request(request: &PeerRequest) -> Result<Vec<u8>, TransportError> {
    let bytes = codec::encode(request).map_err(|error| TransportError::Malformed(error.to_string()))?;
    if bytes.len() > PEER_MESSAGE_BYTES_MAX {
        return Err(TransportError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

async fn call_encoded<T: Transport>(
    transport: &T,
    target: &RaftPeer,
    bytes: Vec<u8>,
    timeout: Duration,
) -> Result<PeerResponse, TransportError> {
    let answer = transport.request(target, bytes, timeout).await?;
    codec::decode_exact(&answer, PEER_MESSAGE_BYTES_MAX)
        .map_err(|error| TransportError::Malformed(error.to_string()))
}

/// How many of `entries` entries to send instead, if an `AppendEntries`
/// of them encodes to `bytes` over [`APPEND_ENTRIES_BYTES_MAX`]; none if it
/// fits or holds one entry only.
fn entries_that_fit(entries: u64, bytes: usize) -> Option<u64> {
    if bytes <= APPEND_ENTRIES_BYTES_MAX || entries <= 1 {
        return None;
    }
    Some((entries.saturating_mul(APPEND_ENTRIES_BYTES_MAX as u64) / bytes as u64).clamp(1, entries - 1))
}

/// Makes openraft network clients over a [`Transport`].
#[derive(Clone)]
pub struct NetworkFactory<T> {
    transport: T,
}

impl<T: Transport> NetworkFactory<T> {
    /// A factory over `transport`.
    pub fn new(transport: T) -> Self {
        NetworkFactory { transport }
    }
}

impl<T: Transport> RaftNetworkFactory<TypeConfig> for NetworkFactory<T> {
    type Network = PeerClient<T>;

    async fn new_client(&mut self, target: RaftNodeId, node: &RaftPeer) -> Self::Network {
        PeerClient { transport: self.transport.clone(), target, peer: node.clone() }
    }
}

/// An openraft client for one peer.
pub struct PeerClient<T> {
    transport: T,
    target: RaftNodeId,
    peer: RaftPeer,
}

impl<T: Transport> PeerClient<T> {
    async fn send<E: std::error::Error>(
        &self,
        request: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, RPCError<RaftNodeId, RaftPeer, E>> {
        call(&self.transport, &self.peer, &request, option.hard_ttl())
            .await
            .map_err(|error| self.transport_error(error))
    }

    fn transport_error<E: std::error::Error>(
        &self,
        error: TransportError,
    ) -> RPCError<RaftNodeId, RaftPeer, E> {
        match error {
            TransportError::Unreachable(_) | TransportError::Timeout(_) => {
                RPCError::Unreachable(Unreachable::new(&error))
            }
            other => RPCError::Network(NetworkError::new(&other)),
        }
    }

    fn unexpected<E: std::error::Error>(&self, answer: PeerResponse) -> RPCError<RaftNodeId, RaftPeer, E> {
        let reason = match answer {
            PeerResponse::Refused(reason) => reason,
            other => format!("unexpected answer {other:?}"),
        };
        RPCError::Network(NetworkError::new(&TransportError::Malformed(reason)))
    }

    fn remote<E: std::error::Error>(&self, error: E) -> RPCError<RaftNodeId, RaftPeer, E> {
        RPCError::RemoteError(RemoteError::new_with_node(self.target, self.peer.clone(), error))
    }
}

impl<T: Transport> RaftNetwork<TypeConfig> for PeerClient<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftNodeId>, RPCError<RaftNodeId, RaftPeer, RaftError<RaftNodeId>>>
    {
        let entries = rpc.entries.len() as u64;
        let bytes = codec::encode(&PeerRequest::AppendEntries(rpc)).map_err(|error| {
            RPCError::Network(NetworkError::new(&TransportError::Malformed(error.to_string())))
        })?;
        // More than one heartbeat's worth: openraft retries at once with
        // fewer entries (each entry alone fits: see SUBMIT_BYTES_MAX).
        if let Some(fitting) = entries_that_fit(entries, bytes.len()) {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fitting)));
        }
        if bytes.len() > PEER_MESSAGE_BYTES_MAX {
            return Err(RPCError::Network(NetworkError::new(&TransportError::TooLarge(bytes.len()))));
        }
        let answer = call_encoded(&self.transport, &self.peer, bytes, option.hard_ttl())
            .await
            .map_err(|error| self.transport_error(error))?;
        match answer {
            PeerResponse::AppendEntries(result) => result.map_err(|error| self.remote(error)),
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftNodeId>,
        RPCError<RaftNodeId, RaftPeer, RaftError<RaftNodeId, InstallSnapshotError>>,
    > {
        match self.send(PeerRequest::InstallSnapshot(rpc), &option).await? {
            PeerResponse::InstallSnapshot(result) => result.map_err(|error| self.remote(error)),
            // A refused chunk is refused again if sent at once (an
            // unconfirmed snapshot for `SNAPSHOT_UNCONFIRMED_REFUSED_MS`, a
            // corrupt one for good, a busy receiver while it installs): as
            // unreachable, so openraft backs off between retries.
            PeerResponse::Refused(reason) => {
                Err(RPCError::Unreachable(Unreachable::new(&TransportError::Malformed(reason))))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftNodeId>, RPCError<RaftNodeId, RaftPeer, RaftError<RaftNodeId>>> {
        match self.send(PeerRequest::Vote(rpc), &option).await? {
            PeerResponse::Vote(result) => result.map_err(|error| self.remote(error)),
            other => Err(self.unexpected(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_entries_over_its_byte_bound_asks_for_fewer_entries() {
        let cases = [
            (1, APPEND_ENTRIES_BYTES_MAX * 20, None),
            (10, APPEND_ENTRIES_BYTES_MAX, None),
            (256, APPEND_ENTRIES_BYTES_MAX * 25, Some(10)),
            (2, APPEND_ENTRIES_BYTES_MAX + 1, Some(1)),
            (4, APPEND_ENTRIES_BYTES_MAX * 2, Some(2)),
        ];
        for (entries, bytes, fitting) in cases {
            assert_eq!(entries_that_fit(entries, bytes), fitting, "{entries} entries, {bytes} bytes");
        }
    }
}
