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
    /// One page of a listing, to the owner.
    List(ListWire),
    /// A request for the key of the subjects the asking organisation names
    /// to the owner (answered with a signed [`PairKeyAnswer`]).
    PairKey,
    /// A subject's request, to the dataset's owner: an encoded
    /// [`crate::subject_requests::SubjectRequestWire`] (the intake's signed
    /// command and, beside it, the plain record key, which never enters
    /// the log), answered with a signed
    /// [`crate::subject_requests::OwnerReply`].
    SubjectRequest(Vec<u8>),
}

/// The owner's answer to [`QueryProtocolMessage::PairKey`]: the pair key
/// of the owner's organisation and the asking node's
/// ([`civmesh_policy::subject_keys`]), or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairKeyAnswer {
    /// The key, for the asking organisation only.
    Granted([u8; 32]),
    /// Why not.
    Refused(String),
}

/// One page of a listing, as it travels to the owner: the signed header
/// (naming no subjects, fresh for each page) and, beside it, what to list.
/// The filters and the cursor never enter the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListWire {
    /// `SignedEnvelope<QueryHeader>` wire bytes.
    pub header: Vec<u8>,
    /// Conditions on indexed, granted, unmasked fields; all must hold.
    pub filters: Vec<ListFilter>,
    /// Records wanted on the page; 0 for the owner's default.
    pub page_size: u32,
    /// Where the previous page ended (hex, from the owner); none to start.
    pub cursor: Option<String>,
}

/// A condition of a listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListFilter {
    /// The field equals the value.
    Equals {
        /// The field.
        field: String,
        /// The value.
        value: String,
    },
    /// The field starts with the prefix.
    Prefix {
        /// The field.
        field: String,
        /// The prefix.
        prefix: String,
    },
}

impl ListFilter {
    /// The field it tests.
    pub fn field(&self) -> &str {
        match self {
            ListFilter::Equals { field, .. } | ListFilter::Prefix { field, .. } => field,
        }
    }

    /// Whether `value` satisfies it.
    pub fn matches(&self, value: Option<&FieldValue>) -> bool {
        let Some(FieldValue::Text(text)) = value else { return false };
        match self {
            ListFilter::Equals { value, .. } => text == value,
            ListFilter::Prefix { prefix, .. } => text.starts_with(prefix.as_str()),
        }
    }
}

/// The owner's answer to one page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListAnswer {
    /// The page (possibly empty), logged before it was sent.
    Page {
        /// The released records, masked per the grant, in scan order.
        records: Vec<ReleasedRecord>,
        /// Where the next page starts (hex); none after the last page.
        next_cursor: Option<String>,
        /// Where the page was logged.
        access_log_position: u64,
    },
    /// Nothing released, and the denial was logged.
    Denied {
        /// Why.
        reason: ReasonCode,
        /// Where the denial was logged.
        access_log_position: u64,
    },
    /// Not answered: the request was wrong, or could not be logged.
    Refused(ListRefusal),
}

/// Why the owner did not answer a page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ListRefusal {
    /// The header does not decode, verify or sign, or is replayed.
    #[error("the listing request: {0}")]
    Request(String),
    /// The header names subjects: that is a query.
    #[error("a listing names no subjects")]
    NamesSubjects,
    /// More records asked for than a page holds.
    #[error("a page holds at most {max} records; {asked} were asked for")]
    PageSizeOverBound {
        /// Asked.
        asked: u32,
        /// The owner's bound.
        max: u32,
    },
    /// Too many filters.
    #[error("a listing has at most {max} filters")]
    TooManyFilters {
        /// The bound.
        max: usize,
    },
    /// A filter on a field the grant does not give.
    #[error("cannot filter on {field:?}: the grant does not give it")]
    FilterFieldNotGranted {
        /// The field.
        field: String,
    },
    /// A filter on a field the grant masks.
    #[error("cannot filter on {field:?}: the grant masks it")]
    FilterFieldMasked {
        /// The field.
        field: String,
    },
    /// A filter on a field the listing withholds (negative-listed, or
    /// sensitive personal information).
    #[error("cannot filter on {field:?}: it is withheld (negative list or sensitive)")]
    FilterFieldWithheld {
        /// The field.
        field: String,
    },
    /// A filter on a field with no index.
    #[error(
        "cannot filter on {field:?}: it is not a scope field of the dataset (those are indexed: {indexed})"
    )]
    FilterFieldNotIndexed {
        /// The field.
        field: String,
        /// The dataset's indexed fields, comma-separated.
        indexed: String,
    },
    /// The cursor is forged, altered, another listing's, or out of date.
    #[error("{0}")]
    Cursor(#[from] crate::query::cursor::CursorError),
    /// This node's organisation does not own the dataset.
    #[error("this node does not own {0}")]
    NotOwner(String),
    /// The owner failed (its store, or logging the access).
    #[error("the owner could not answer: {0}")]
    Unavailable(String),
}

/// What the owner signs: a listing's page bound to the request it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedListBody {
    /// The digest of the requester's signed header.
    pub request_digest: [u8; 32],
    /// The answer.
    pub answer: ListAnswer,
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
    /// The record key; empty when the grant does not release the
    /// dataset's key field as stored (a listing's or a push's record).
    pub key: String,
    /// The subject's keyed hash, as the access log names it: what a
    /// subscriber's copy is keyed by.
    pub subject: civmesh_policy::model::SubjectKeyHash,
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

/// A denial's or a withholding's reason as it reads on the wire
/// (`not_in_scope`, ...), if it serialises as a name.
pub fn reason_name(reason: ReasonCode) -> Option<String> {
    serde_json::to_value(reason).ok().and_then(|value| value.as_str().map(str::to_string))
}

/// The metrics label of an answer.
pub fn outcome_label(answer: &QueryAnswer) -> &'static str {
    match answer {
        QueryAnswer::Released { .. } => "released",
        QueryAnswer::Denied { .. } => "denied",
        QueryAnswer::Refused { .. } => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use civmesh_certs::{codec, SignedEnvelope};
    use proptest::prelude::*;

    fn filter() -> impl Strategy<Value = ListFilter> {
        (any::<bool>(), "[a-z_]{0,12}", ".{0,24}").prop_map(|(equals, field, value)| match equals {
            true => ListFilter::Equals { field, value },
            false => ListFilter::Prefix { field, prefix: value },
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = codec::decode_exact::<QueryProtocolMessage>(&bytes, QUERY_MESSAGE_BYTES_MAX);
            let _ = SignedEnvelope::<SignedListBody>::from_bytes(&bytes);
            let _ = SignedEnvelope::<SignedAnswerBody>::from_bytes(&bytes);
        }

        #[test]
        fn a_listing_request_round_trips_and_no_truncation_of_it_decodes(
            header in proptest::collection::vec(any::<u8>(), 0..64),
            filters in proptest::collection::vec(filter(), 0..4),
            page_size in any::<u32>(),
            cursor in proptest::option::of("[0-9a-f]{0,80}"),
        ) {
            let wire = ListWire { header, filters, page_size, cursor };
            let bytes = codec::encode(&QueryProtocolMessage::List(wire.clone())).unwrap();
            let decoded = codec::decode_exact::<QueryProtocolMessage>(&bytes, QUERY_MESSAGE_BYTES_MAX).unwrap();
            let QueryProtocolMessage::List(decoded) = decoded else { panic!("not a listing") };
            prop_assert_eq!(
                (decoded.header, decoded.filters, decoded.page_size, decoded.cursor),
                (wire.header, wire.filters, wire.page_size, wire.cursor)
            );
            for end in 0..bytes.len() {
                prop_assert!(codec::decode_exact::<QueryProtocolMessage>(&bytes[..end], QUERY_MESSAGE_BYTES_MAX).is_err());
            }
        }
    }
}
