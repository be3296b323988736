//! Queries: a requester asks a dataset's owner for records over
//! `/civmesh/query/1`; the owner verifies, decides on its replica, projects
//! and masks, logs the access through group commit, and only then answers,
//! signed. No release without a committed access record.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use civmesh_certs::{codec, now_unix_millis, NodeId, NodeKey, ReplayGuard, SignedEnvelope};
use civmesh_consensus::{PolicyLog, RaftPeer};
use civmesh_policy::model::{FieldValue, SubjectKeyHash};
use civmesh_policy::{
    decide, AccessOutcome, AccessRecord, AccessRequest, Command, Decision, FieldAction, QueryHeader,
    ReasonCode, RecordFacts, SubjectRelease,
};
use serde::{Deserialize, Serialize};

use crate::group_commit::GroupCommitter;
use crate::records::{RecordStore, RecordVersion};
use crate::swarm::{Protocol, SwarmClient};

/// The largest query or answer on the wire, in bytes.
pub const QUERY_MESSAGE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// How long an owner waits to catch up before re-deciding a denial.
pub const STALE_GRANT_CATCH_UP_MS: u64 = 2_000;
/// How long a requester waits for the owner's answer.
pub const QUERY_TIMEOUT_MS: u64 = 15_000;

/// What travels to the owner: the signed header and, beside it, the plain
/// keys (which never enter the log).
#[derive(Debug, Serialize, Deserialize)]
pub struct QueryWire {
    /// `SignedEnvelope<QueryHeader>` wire bytes.
    pub header: Vec<u8>,
    /// The record keys, in the order of the header's subjects.
    pub keys: Vec<String>,
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

/// The owner's side of queries.
pub struct QueryService {
    /// The policy-log member.
    pub log: PolicyLog<SwarmClient>,
    /// This node's key, which signs access records and answers.
    pub key: Arc<NodeKey>,
    /// This organisation's records.
    pub records: Arc<RecordStore>,
    /// Logs access records.
    pub committer: GroupCommitter,
    /// Rejects replayed queries.
    pub replay_guard: Mutex<ReplayGuard>,
    /// The federation's subject-key secret.
    pub subject_key_secret: Vec<u8>,
    /// Counts answered queries.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The metrics label of an answer.
pub fn outcome_label(answer: &QueryAnswer) -> &'static str {
    match answer {
        QueryAnswer::Released { .. } => "released",
        QueryAnswer::Denied { .. } => "denied",
        QueryAnswer::Refused { .. } => "refused",
    }
}

struct Facts<'a> {
    subject: SubjectKeyHash,
    record: &'a RecordVersion,
}

impl RecordFacts for Facts<'_> {
    fn subject(&self) -> SubjectKeyHash {
        self.subject
    }
    fn value(&self, field: &str) -> Option<&FieldValue> {
        self.record.fields.get(field)
    }
}

impl QueryService {
    /// Answers one query from `peer`; the answer is a signed envelope.
    pub async fn answer(&self, peer: NodeId, bytes: &[u8]) -> Vec<u8> {
        let (digest, answer) = match self.answer_unsigned(peer, bytes).await {
            Ok(answered) => answered,
            Err(reason) => ([0u8; 32], QueryAnswer::Refused { reason }),
        };
        crate::metrics::Metrics::count(&self.metrics.queries_answered, outcome_label(&answer));
        let body = SignedAnswerBody { request_digest: digest, answer };
        SignedEnvelope::sign(&self.key, &body, now_unix_millis())
            .and_then(|envelope| envelope.to_bytes())
            .unwrap_or_default()
    }

    async fn answer_unsigned(&self, peer: NodeId, bytes: &[u8]) -> Result<([u8; 32], QueryAnswer), String> {
        let wire: QueryWire = codec::decode_exact(bytes, QUERY_MESSAGE_BYTES_MAX)
            .map_err(|error| format!("malformed query: {error}"))?;
        let envelope =
            SignedEnvelope::<QueryHeader>::from_bytes(&wire.header).map_err(|error| error.to_string())?;
        let verified = {
            let mut guard = self.replay_guard.lock().map_err(|_| "replay guard unavailable".to_string())?;
            envelope.verify_from(&peer, &mut guard, now_unix_millis()).map_err(|error| error.to_string())?
        };
        let header = verified.payload;
        if wire.keys.len() != header.subjects.len()
            || wire
                .keys
                .iter()
                .zip(&header.subjects)
                .any(|(key, subject)| SubjectKeyHash::of(&self.subject_key_secret, key) != *subject)
        {
            return Err("the keys do not match the signed subject hashes".to_string());
        }
        let digest = envelope.digest();
        let now_ms = now_unix_millis();
        // Records first (this node's own), then the decision on the replica.
        let mut found = Vec::new();
        let mut not_found = Vec::new();
        for (key, subject) in wire.keys.iter().zip(&header.subjects) {
            match self.records.latest(&header.dataset, key).map_err(|error| error.to_string())? {
                Some(record) => found.push((key.clone(), *subject, record)),
                None => not_found.push(key.clone()),
            }
        }
        let facts: Vec<Facts> =
            found.iter().map(|(_, subject, record)| Facts { subject: *subject, record }).collect();
        let request = AccessRequest {
            requester: peer,
            dataset: header.dataset.clone(),
            fields: header.fields.clone(),
            purpose: header.purpose.clone(),
            grant: header.grant,
        };
        let owner_org_matches = self.log.state().read(|applied| {
            applied.policy.datasets.get(&header.dataset).is_none_or(|dataset| {
                applied.policy.active_member(&self.key.node_id()).is_some_and(|me| me.org == dataset.owner)
            })
        });
        if !owner_org_matches {
            return Err(format!("this node does not own {}", header.dataset));
        }
        let mut decision = self.log.state().read(|applied| decide(&applied.policy, &request, &facts, now_ms));
        if matches!(decision, Decision::Deny(_)) && header.grant.is_some() {
            // The grant may be newer than this replica: catch up once and
            // decide again. (A stale permit is impossible: the access record
            // is re-justified when it is applied, after any revocation.)
            if self.log.linearizable_read_index(Duration::from_millis(STALE_GRANT_CATCH_UP_MS)).await.is_ok()
            {
                decision = self.log.state().read(|applied| decide(&applied.policy, &request, &facts, now_ms));
            }
        }
        let (outcome, records) = project(&decision, &header, &found);
        let record = AccessRecord { request: envelope, outcome: outcome.clone(), decided_at_ms: now_ms };
        let command = SignedEnvelope::sign(&self.key, &Command::RecordAccess(record), now_ms)
            .map_err(|error| error.to_string())?;
        let position = match self.committer.commit(command).await {
            Ok(Ok(civmesh_policy::Applied::AccessLogged(position))) => position,
            Ok(Ok(other)) => return Err(format!("unexpected log outcome {other:?}; nothing released")),
            Ok(Err(rejection)) => {
                return Err(format!("the access record was rejected ({rejection}); nothing released"))
            }
            Err(error) => return Err(format!("the access could not be logged ({error}); nothing released")),
        };
        let answer = match outcome {
            AccessOutcome::Deny { reason } => QueryAnswer::Denied { reason, access_log_position: position },
            AccessOutcome::Permit { .. } => {
                QueryAnswer::Released { records, not_found, access_log_position: position }
            }
        };
        Ok((digest, answer))
    }
}

/// Projects and masks the found records per the decision.
fn project(
    decision: &Decision,
    header: &QueryHeader,
    found: &[(String, SubjectKeyHash, RecordVersion)],
) -> (AccessOutcome, Vec<ReleasedRecord>) {
    if let Decision::Deny(reason) = decision {
        return (AccessOutcome::Deny { reason: *reason }, Vec::new());
    }
    let mut released = Vec::new();
    let mut records = Vec::new();
    for (index, (key, subject, record)) in found.iter().enumerate() {
        let mut fields = BTreeMap::new();
        let mut withheld = BTreeMap::new();
        for field in &header.fields {
            let value = record.fields.get(field).cloned().unwrap_or(FieldValue::Null);
            match decision.action_for(index, field) {
                FieldAction::Release => {
                    fields.insert(field.clone(), value);
                }
                FieldAction::Mask(rule) => {
                    fields.insert(field.clone(), rule.apply(&value));
                }
                FieldAction::Withhold(reason) => {
                    withheld.insert(field.clone(), reason);
                }
            }
        }
        if !fields.is_empty() {
            released.push(SubjectRelease { subject: *subject, fields: fields.keys().cloned().collect() });
        }
        records.push(ReleasedRecord { key: key.clone(), version: record.version, fields, withheld });
    }
    (AccessOutcome::Permit { released }, records)
}

/// What a requester asks for (`POST /v1/query`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuerySpec {
    /// The dataset.
    pub dataset: String,
    /// The record keys.
    pub keys: Vec<String>,
    /// The fields wanted.
    pub fields: Vec<String>,
    /// For what.
    pub purpose: String,
    /// The grant relied on.
    #[serde(default)]
    pub grant: Option<u64>,
}

/// The requester's side: signs a header, sends it with the keys to `owner`,
/// and checks the owner's signed answer.
pub async fn ask(
    swarm: &SwarmClient,
    key: &NodeKey,
    subject_key_secret: &[u8],
    owner: &RaftPeer,
    spec: QuerySpec,
) -> Result<QueryAnswer, String> {
    let QuerySpec { dataset, keys, fields, purpose, grant } = spec;
    let subjects = keys.iter().map(|key| SubjectKeyHash::of(subject_key_secret, key)).collect();
    let header = QueryHeader { dataset, subjects, fields, purpose, grant };
    let envelope =
        SignedEnvelope::sign(key, &header, now_unix_millis()).map_err(|error| error.to_string())?;
    let digest = envelope.digest();
    let wire = QueryWire { header: envelope.to_bytes().map_err(|error| error.to_string())?, keys };
    let bytes = codec::encode(&wire).map_err(|error| error.to_string())?;
    let answer = swarm
        .request_on(Protocol::Query, owner, bytes, Duration::from_millis(QUERY_TIMEOUT_MS))
        .await
        .map_err(|error| format!("the owner did not answer: {error}"))?;
    let signed =
        SignedEnvelope::<SignedAnswerBody>::from_bytes(&answer).map_err(|error| error.to_string())?;
    let body = signed.verify_signature().map_err(|error| format!("the answer's signature: {error}"))?;
    if body.signer != owner.node_id {
        return Err("the answer is not signed by the owner".to_string());
    }
    match body.payload.answer {
        QueryAnswer::Refused { reason } => Err(format!("the owner refused: {reason}")),
        answer if body.payload.request_digest == digest => Ok(answer),
        _ => Err("the answer is for another query".to_string()),
    }
}
