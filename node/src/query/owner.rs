//! The owner's side of a query: verify, decide on this replica, project
//! and mask, log the access, and only then answer, signed.

use std::collections::BTreeMap;
use std::time::Duration;

use civmesh_certs::{now_unix_millis, EnvelopeError, NodeId, SignedEnvelope};
use civmesh_policy::model::{FieldValue, SubjectKeyHash};
use civmesh_policy::{
    decide, AccessOutcome, AccessRecord, Command, Decision, FieldAction, QueryHeader, ReasonCode, RecordPlan,
    SubjectRelease,
};

use crate::query::{
    access_request, outcome_label, Facts, LogAccessError, QueryAnswer, QueryService, QueryWire,
    ReleasedRecord, SignedAnswerBody, STALE_GRANT_CATCH_UP_MS,
};
use crate::records::{RecordStoreError, RecordVersion};

impl QueryService {
    /// Answers one query from `peer`; the answer is a signed envelope.
    pub(super) async fn answer(&self, peer: NodeId, wire: QueryWire) -> Vec<u8> {
        let (digest, answer) = match self.answer_unsigned(peer, wire).await {
            Ok(answered) => answered,
            Err(error) => ([0u8; 32], QueryAnswer::Refused { reason: error.to_string() }),
        };
        self.sign_answer(digest, answer)
    }

    pub(super) fn sign_answer(&self, request_digest: [u8; 32], answer: QueryAnswer) -> Vec<u8> {
        crate::api::metrics::Metrics::count(&self.metrics.queries_answered, outcome_label(&answer));
        self.signed(&SignedAnswerBody { request_digest, answer })
    }

    async fn answer_unsigned(
        &self,
        peer: NodeId,
        wire: QueryWire,
    ) -> Result<([u8; 32], QueryAnswer), AnswerError> {
        let envelope =
            SignedEnvelope::<QueryHeader>::from_bytes(&wire.header).map_err(AnswerError::Envelope)?;
        let verified = {
            let mut guard = self.replay_guard.lock().map_err(|_| AnswerError::ReplayGuardUnavailable)?;
            envelope.verify_from(&peer, &mut guard, now_unix_millis()).map_err(AnswerError::Envelope)?
        };
        let header = verified.payload;
        let pair_key = self.pair_key_of(&peer).ok_or(AnswerError::NoSubjectKey)?;
        if wire.keys.len() != header.subjects.len()
            || wire
                .keys
                .iter()
                .zip(&header.subjects)
                .any(|(key, subject)| SubjectKeyHash::of(&pair_key, key) != *subject)
        {
            return Err(AnswerError::KeysMismatch);
        }
        let digest = envelope.digest();
        let now_ms = now_unix_millis();
        // Records first (this node's own), then the decision on the replica.
        let mut found = Vec::new();
        let mut not_found = Vec::new();
        for (key, subject) in wire.keys.iter().zip(&header.subjects) {
            match self.records.latest(&header.dataset, key)? {
                Some(record) => found.push((key.clone(), *subject, record)),
                None => not_found.push(key.clone()),
            }
        }
        let facts: Vec<Facts> =
            found.iter().map(|(_, subject, record)| Facts { subject: *subject, record }).collect();
        let request = access_request(peer, &header);
        let owner_org_matches = self.log.state().read(|applied| {
            applied.policy.datasets.get(&header.dataset).is_none_or(|dataset| {
                applied.policy.active_member(&self.key.node_id()).is_some_and(|me| me.org == dataset.owner)
            })
        });
        if !owner_org_matches {
            return Err(AnswerError::NotOwner(header.dataset));
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
        // Out-of-scope records answer exactly like unknown keys: no
        // existence, no version.
        let (records, hidden): (Vec<_>, Vec<_>) = records.into_iter().partition(|record| record.is_some());
        let records: Vec<ReleasedRecord> = records.into_iter().flatten().collect();
        let released_keys: std::collections::BTreeSet<&str> =
            records.iter().map(|record| record.key.as_str()).collect();
        let not_found: Vec<String> = if hidden.is_empty() {
            not_found
        } else {
            wire.keys.iter().filter(|key| !released_keys.contains(key.as_str())).cloned().collect()
        };
        let record = AccessRecord { request: envelope, outcome: outcome.clone(), decided_at_ms: now_ms };
        let command = SignedEnvelope::sign(&self.key, &Command::RecordAccess(record), now_ms)
            .map_err(AnswerError::Envelope)?;
        let position = self.log_access(command).await?;
        let answer = match outcome {
            AccessOutcome::Deny { reason } => QueryAnswer::Denied { reason, access_log_position: position },
            AccessOutcome::Permit { .. } => {
                QueryAnswer::Released { records, not_found, access_log_position: position }
            }
        };
        Ok((digest, answer))
    }
}

/// Why a query was not answered (the requester reads it in
/// [`QueryAnswer::Refused`]).
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The header does not decode, verify or sign.
    #[error("{0}")]
    Envelope(#[source] EnvelopeError),
    /// The replay guard's lock is poisoned.
    #[error("replay guard unavailable")]
    ReplayGuardUnavailable,
    /// The plain keys are not the ones whose hashes were signed.
    #[error("the keys do not match the signed subject hashes")]
    KeysMismatch,
    /// The asker is no active member, or this node holds no subject key
    /// for its organisation.
    #[error("no subject key for the requester's organisation")]
    NoSubjectKey,
    /// The record store failed.
    #[error("{0}")]
    Store(#[from] RecordStoreError),
    /// This node's organisation does not own the dataset.
    #[error("this node does not own {0}")]
    NotOwner(String),
    /// The access could not be logged.
    #[error(transparent)]
    Log(#[from] LogAccessError),
}

/// Whether `decision` releases `dataset`'s subject key field as stored
/// for record `index`: only then may a listing or a push, which the
/// requester did not name the keys of, carry the plain record key.
pub(super) fn key_field_released(
    dataset: &civmesh_policy::model::Dataset,
    decision: &Decision,
    index: usize,
) -> bool {
    decision.action_for(index, &dataset.subject_key_field) == FieldAction::Release
}

/// The released records a listing or a push sends: those with a field
/// released, with their keys blanked unless `key_released(index)`.
pub(super) fn records_to_send(
    records: Vec<Option<ReleasedRecord>>,
    key_released: impl Fn(usize) -> bool,
) -> Vec<ReleasedRecord> {
    records
        .into_iter()
        .enumerate()
        .filter_map(|(index, record)| Some((index, record?)))
        .filter(|(_, record)| !record.fields.is_empty())
        .map(
            |(index, record)| {
                if key_released(index) {
                    record
                } else {
                    ReleasedRecord { key: String::new(), ..record }
                }
            },
        )
        .collect()
}

/// Whether the decision withholds record `index` as outside the grant's scope.
fn out_of_scope(decision: &Decision, index: usize) -> bool {
    matches!(decision, Decision::Permit { records, .. }
        if records.get(index) == Some(&RecordPlan::Withhold(ReasonCode::OutOfScope)))
}

/// Projects and masks the found records per the decision. A record outside
/// the grant's scope projects to `None`: it must look like an unknown key.
pub(super) fn project(
    decision: &Decision,
    header: &QueryHeader,
    found: &[(String, SubjectKeyHash, RecordVersion)],
) -> (AccessOutcome, Vec<Option<ReleasedRecord>>) {
    if let Decision::Deny(reason) = decision {
        return (AccessOutcome::Deny { reason: *reason }, Vec::new());
    }
    let mut released = Vec::new();
    let mut records = Vec::new();
    for (index, (key, subject, record)) in found.iter().enumerate() {
        if out_of_scope(decision, index) {
            records.push(None);
            continue;
        }
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
        let version = record.version;
        records.push(Some(ReleasedRecord { key: key.clone(), subject: *subject, version, fields, withheld }));
    }
    (AccessOutcome::Permit { released }, records)
}
