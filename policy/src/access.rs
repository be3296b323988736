//! Access records: every query answered (permit or deny) becomes a log
//! entry signed twice, by the requester (the query header) and by the owner
//! (the command carrying it). Subject keys appear only as keyed hashes.
//!
//! At apply time the state machine checks both signatures, that the owner
//! signed for its own dataset, and that a permit is justified by the state
//! at that point of the log (grant, window, fields, negative list, consent),
//! so an owner cannot log a release the policy did not allow.

use civmesh_certs::{SignedEnvelope, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::decide::ReasonCode;
use crate::model::{DatasetId, FieldName, GrantId, Purpose, SubjectKeyHash};

/// The most subjects one query may name.
pub const QUERY_SUBJECTS_MAX: usize = 1_000;

/// How records reached the requester: which command logged the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessKind {
    /// The answer to a query naming its subjects.
    Query,
    /// One page of a listing (a request naming no subjects).
    Listing,
    /// A push under a subscription.
    Push,
}

impl AccessKind {
    /// Whether the requester's header names the subjects released.
    pub fn names_subjects(self) -> bool {
        self == AccessKind::Query
    }

    /// Whether the requester's header is fresh and spent by this record (a
    /// subscription's header is reused by every push under it).
    pub fn spends_nonce(self) -> bool {
        self != AccessKind::Push
    }
}

/// What a requester signs: the query, with subject keys as keyed hashes.
/// The plain keys travel beside it to the owner, who checks they hash to
/// these, and never enter the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryHeader {
    /// The dataset.
    pub dataset: DatasetId,
    /// The subjects asked for (keyed hashes of the record keys).
    pub subjects: Vec<SubjectKeyHash>,
    /// The fields wanted.
    pub fields: Vec<FieldName>,
    /// For what.
    pub purpose: Purpose,
    /// The grant relied on.
    pub grant: Option<GrantId>,
}

/// What was released for one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRelease {
    /// The subject.
    pub subject: SubjectKeyHash,
    /// The fields released (masked or not).
    pub fields: Vec<FieldName>,
}

/// The owner's decision, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessOutcome {
    /// Something was released.
    Permit {
        /// Per subject that was released, the fields.
        released: Vec<SubjectRelease>,
    },
    /// Nothing was released.
    Deny {
        /// Why.
        reason: ReasonCode,
    },
}

/// The payload of [`crate::Command::RecordAccess`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// The requester's signed query header.
    pub request: SignedEnvelope<QueryHeader>,
    /// What the owner decided and released.
    pub outcome: AccessOutcome,
    /// When the owner decided.
    pub decided_at_ms: UnixMillis,
}

/// One entry of the replicated access log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLogEntry {
    /// Position in the access log, from 0.
    pub sequence: u64,
    /// The owner's signed command (which carries the requester's header).
    pub envelope: crate::SignedCommand,
    /// The requester.
    pub requester: civmesh_certs::NodeId,
    /// The owner node that answered.
    pub owner: civmesh_certs::NodeId,
    /// The query.
    pub header: QueryHeader,
    /// The decision.
    pub outcome: AccessOutcome,
    /// When the owner decided.
    pub decided_at_ms: UnixMillis,
}

impl AccessLogEntry {
    /// How the records reached the requester, from the command that logged
    /// the entry (a query if the command cannot be read).
    pub fn kind(&self) -> AccessKind {
        self.envelope
            .unverified_payload()
            .ok()
            .and_then(|command| command.access().map(|(_, kind)| kind))
            .unwrap_or(AccessKind::Query)
    }
}
