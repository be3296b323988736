//! civmesh consensus: the Raft-replicated policy log, openraft 0.9
//! (storage-v2) on RocksDB.
//!
//! - [`types`]: the openraft type configuration; log entries carry batches of
//!   signed policy commands stamped with the leader's time.
//! - [`store`]: the RocksDB log store and the state machine that applies
//!   commands with [`civmesh_policy::PolicyState::apply`].
//!
//! - [`snapshot`]: the state image as a file, and snapshots streamed
//!   through it; [`snapshot_receiver`]: snapshots received, checked whole
//!   before openraft installs them.
//! - [`history`]: what the state counts but does not keep: the command
//!   archive, the access log's entries and the audit tree's leaves;
//!   `nonces`: the replay window's nonces, whose counts the state keeps.
//! - [`network`]: member-to-member messages and the openraft network over a
//!   [`Transport`]; [`in_process`] is a transport for tests.
//! - [`verdicts`]: signatures verified as commands arrive, in batches on a
//!   bounded pool, and the verdicts apply uses.
//! - [`database`]: the one RocksDB database, its families and its memory
//!   bounds.
//! - [`timings`]: where commits spend their time, per stage.
//! - [`policy_log`]: a running member: submit (forwarded to the leader),
//!   linearizable reads, cluster changes, status.
//!
//! This crate knows nothing of libp2p: it reaches other nodes only through a
//! transport trait that the node implements.

pub mod database;
pub mod history;
pub mod in_process;
pub mod network;
mod nonces;
pub mod policy_log;
pub mod snapshot;
pub mod snapshot_receiver;
pub mod store;
pub mod timings;
pub mod types;
pub mod verdicts;

pub use database::StorageMemory;
pub use history::{History, HistoryError};
pub use network::{PeerRequest, PeerResponse, Transport, TransportError, PEER_MESSAGE_BYTES_MAX};
pub use policy_log::{
    check_raft_sender, PeerAnswer, PolicyLog, PolicyLogConfig, RaftRefusal, RaftRpc, StartError, Status,
    SubmitError,
};
pub use store::{open, AppliedState, LogStore, OpenError, SharedState, SnapshotStats, StateMachine};
pub use timings::{Stage, StageTimes, StageTotal};
pub use types::{raft_node_id, ApplyResult, Entry, LogPayload, Raft, RaftNodeId, RaftPeer, TypeConfig};
