//! What travels on `/civmesh/query/1`: queries, subscriptions, pushes and
//! the owner's signed answers.

use std::collections::BTreeMap;

use civmesh_policy::model::FieldValue;
use civmesh_policy::ReasonCode;
use serde::{Deserialize, Serialize};

/// The largest query or answer on the wire, in bytes.
pub const QUERY_MESSAGE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// What travels to the owner: the signed header and, beside it, the plain
/// keys (which never enter the log).
#[derive(Debug, Serialize, Deserialize)]
pub struct QueryWire {
    /// `SignedEnvelope<QueryHeader>` wire bytes.
    pub header: Vec<u8>,
    /// The record keys, in the order of the header's subjects.
    pub keys: Vec<String>,
}

/// Every message on `/civmesh/query/1`.
#[derive(Debug, Serialize, Deserialize)]
pub enum QueryProtocolMessage {
    /// A query, to the owner.
    Query(QueryWire),
    /// A subscription (`SignedEnvelope<QueryHeader>` naming no subjects), to the owner.
    Subscribe(Vec<u8>),
    /// A push (`SignedEnvelope<PushBody>`), from the owner to a subscriber.
    Push(Vec<u8>),
}

/// What the owner answers a subscription with (signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeAck {
    /// The digest of the subscriber's signed request: the subscription's id.
    pub subscription: [u8; 32],
    /// Accepted, or why not.
    pub outcome: Result<(), String>,
}

/// Records pushed to a subscriber because they changed (signed by the owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushBody {
    /// The subscription.
    pub subscription: [u8; 32],
    /// The dataset.
    pub dataset: String,
    /// The new versions, masked per the grant.
    pub records: Vec<ReleasedRecord>,
    /// Where the push was logged.
    pub access_log_position: u64,
}

/// One released record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedRecord {
    /// The record key.
    pub key: String,
    /// Its version.
    pub version: u64,
    /// The released fields, masked per the grant.
    pub fields: BTreeMap<String, FieldValue>,
    /// The requested fields withheld, with why.
    pub withheld: BTreeMap<String, ReasonCode>,
}

/// The owner's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryAnswer {
    /// Records released (some may be withheld whole, or missing).
    Released {
        /// The released records.
        records: Vec<ReleasedRecord>,
        /// Keys with no record.
        not_found: Vec<String>,
        /// Where the access was logged.
        access_log_position: u64,
    },
    /// Nothing released, and the denial was logged.
    Denied {
        /// Why.
        reason: ReasonCode,
        /// Where the denial was logged.
        access_log_position: u64,
    },
    /// Not answered: the query was malformed or could not be logged.
    Refused {
        /// Why.
        reason: String,
    },
}

/// What the owner signs: the answer bound to the query it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAnswerBody {
    /// The digest of the requester's signed header.
    pub request_digest: [u8; 32],
    /// The answer.
    pub answer: QueryAnswer,
}

/// The metrics label of an answer.
pub fn outcome_label(answer: &QueryAnswer) -> &'static str {
    match answer {
        QueryAnswer::Released { .. } => "released",
        QueryAnswer::Denied { .. } => "denied",
        QueryAnswer::Refused { .. } => "refused",
    }
}
