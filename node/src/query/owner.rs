//! The owner's side of a query: verify, decide on this replica, project
//! and mask, log the access, and only then answer, signed.

use std::collections::BTreeMap;
use std::time::Duration;

use civmesh_certs::{now_unix_millis, NodeId, SignedEnvelope};
use civmesh_policy::model::{FieldValue, SubjectKeyHash};
use civmesh_policy::{
    decide, AccessOutcome, AccessRecord, Command, Decision, FieldAction, QueryHeader, ReasonCode, RecordPlan,
    SubjectRelease,
};

use crate::query::{
    access_request, outcome_label, Facts, QueryAnswer, QueryService, QueryWire, ReleasedRecord,
    SignedAnswerBody, OWN_REPLICA_APPLY_WAIT_MS, STALE_GRANT_CATCH_UP_MS,
};
use crate::records::RecordVersion;

impl QueryService {
    /// Answers one query from `peer`; the answer is a signed envelope.
    pub(super) async fn answer(&self, peer: NodeId, wire: QueryWire) -> Vec<u8> {
        let (digest, answer) = match self.answer_unsigned(peer, wire).await {
            Ok(answered) => answered,
            Err(reason) => ([0u8; 32], QueryAnswer::Refused { reason }),
        };
        self.sign_answer(digest, answer)
    }

    pub(super) fn sign_answer(&self, request_digest: [u8; 32], answer: QueryAnswer) -> Vec<u8> {
        crate::api::metrics::Metrics::count(&self.metrics.queries_answered, outcome_label(&answer));
        let body = SignedAnswerBody { request_digest, answer };
        SignedEnvelope::sign(&self.key, &body, now_unix_millis())
            .and_then(|envelope| envelope.to_bytes())
            .unwrap_or_default()
    }

    /// Logs an access record (a query's or a push's) and returns its
    /// position once this node's own replica has applied it there: a
    /// leader's word that it committed is not enough to release on.
    pub(super) async fn log_access(&self, command: civmesh_policy::SignedCommand) -> Result<u64, String> {
        let position = match self.committer.commit(command.clone()).await {
            Ok(Ok(civmesh_policy::Applied::AccessLogged(position))) => position,
            Ok(Ok(other)) => return Err(format!("unexpected log outcome {other:?}; nothing released")),
            Ok(Err(rejection)) => {
                return Err(format!("the access record was rejected ({rejection}); nothing released"))
            }
            Err(error) => return Err(format!("the access could not be logged ({error}); nothing released")),
        };
        let index = usize::try_from(position).map_err(|_| "access-log position out of range".to_string())?;
        let digest = command.digest();
        self.log
            .wait_for_state(
                Duration::from_millis(OWN_REPLICA_APPLY_WAIT_MS),
                "own replica applies the access record",
                move |applied| applied.policy.access_log.len() > index,
            )
            .await
            .map_err(|_| "this replica has not applied the access record; nothing released".to_string())?;
        let ours = self.log.state().read(|applied| {
            applied.policy.access_log.get(index).is_some_and(|entry| entry.envelope.digest() == digest)
        });
        if !ours {
            self.report(&self.key.node_id(), "access_record_not_at_position");
            return Err("the log holds another access record at that position; nothing released".to_string());
        }
        Ok(position)
    }

    async fn answer_unsigned(
        &self,
        peer: NodeId,
        wire: QueryWire,
    ) -> Result<([u8; 32], QueryAnswer), String> {
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
        let request = access_request(peer, &header);
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
            .map_err(|error| error.to_string())?;
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
        records.push(Some(ReleasedRecord { key: key.clone(), version: record.version, fields, withheld }));
    }
    (AccessOutcome::Permit { released }, records)
}
