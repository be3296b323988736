//! The openraft type configuration and the payloads of the policy log.

use civmesh_certs::{codec, NodeId, UnixMillis};
use civmesh_policy::{Applied, Rejection, SignedCommand};
use serde::{Deserialize, Serialize};

/// A Raft node id: the first eight bytes of SHA-256 of the node's Ed25519
/// key, so every node derives every other node's Raft id from its PeerId.
pub type RaftNodeId = u64;

openraft::declare_raft_types!(
    /// The openraft type configuration of the civmesh policy log.
    pub TypeConfig:
        D = LogPayload,
        R = ApplyResult,
        NodeId = RaftNodeId,
        Node = RaftPeer,
        SnapshotData = tokio::fs::File,
);

/// A Raft log entry of the policy log.
pub type Entry = openraft::Entry<TypeConfig>;

/// The signed commands `entry` carries: none for a blank or membership
/// entry.
pub fn entry_commands(entry: &Entry) -> &[SignedCommand] {
    match &entry.payload {
        openraft::EntryPayload::Normal(payload) => payload.commands.as_slice(),
        _ => &[],
    }
}
/// The Raft handle of the policy log.
pub type Raft = openraft::Raft<TypeConfig>;

/// The Raft id of a civmesh node.
pub fn raft_node_id(node_id: &NodeId) -> RaftNodeId {
    let digest = codec::sha256(&node_id.0);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// What Raft knows of a member: its civmesh identity and where to dial it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftPeer {
    /// The node's key (its PeerId).
    pub node_id: NodeId,
    /// A libp2p multiaddr to dial it at (may be empty if unknown).
    pub address: String,
}

impl std::fmt::Display for RaftPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.node_id, self.address)
    }
}

/// One log entry's application data: a batch of signed commands, stamped by
/// the leader with the time it proposed them. Batching is the group commit:
/// one Raft round trip for many commands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPayload {
    /// The leader's clock when it proposed the entry; the state machine's
    /// only notion of time.
    pub proposed_at_ms: UnixMillis,
    /// The commands, applied in order.
    pub commands: Vec<SignedCommand>,
}

/// The outcome of one log entry: one result per command, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// Per command: what it did, or why it was rejected.
    pub outcomes: Vec<Result<Applied, Rejection>>,
    /// How many commands the state has applied after this entry.
    pub state_version: u64,
}
