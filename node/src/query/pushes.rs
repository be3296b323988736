//! Pushes: after records change, the owner pushes the new versions,
//! masked per each subscriber's grant, each push logged first, and retries
//! the undelivered; a subscriber keeps the pushes for its own subscriptions.

use std::sync::Arc;
use std::time::Duration;

use civmesh_certs::codec::CodecError;
use civmesh_certs::{codec, now_unix_millis, EnvelopeError, NodeId, SignedEnvelope};
use civmesh_consensus::TransportError;
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::{decide, AccessRecord, Command, QueryHeader};
use serde::{Deserialize, Serialize};

use crate::query::owner::{key_field_released, project, records_to_send};
use crate::query::{
    access_request, Facts, LogAccessError, PushBody, QueryProtocolMessage, QueryService,
    QUERY_MESSAGE_BYTES_MAX, QUERY_TIMEOUT_MS,
};
use crate::records::{RecordStoreError, RecordVersion};
use crate::swarm::Protocol;

/// How often undelivered pushes are retried.
pub const PUSH_RETRY_TICK_MS: u64 = 1_000;
/// Undelivered pushes retried per tick at most.
pub const PUSH_RETRIES_PER_TICK_MAX: usize = 64;
/// The most kept pushes the retry task looks at in one tick, skipping
/// those of subscribers it could not reach in that tick.
pub const PUSH_RETRY_READ_MAX: usize = 1_024;
/// An undelivered push is dropped after this long (the subscriber can query).
pub const PUSH_RETRY_AGE_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// Pushes a subscriber keeps for its API at most; older ones are dropped.
pub const RECEIVED_PUSHES_KEPT_MAX: usize = 10_000;
/// A subscriber's answer to a push it kept; anything else is retried.
const PUSH_KEPT: &[u8] = &[1];
/// Records in one push at most.
pub const PUSH_RECORDS_MAX: usize = 1_000;
/// The most queued record writes the push worker reads at once.
pub const PUSH_QUEUE_READ_MAX: usize = 16;
/// The most record writes queued for subscribers before an import is
/// refused (503) until the push worker catches up.
pub const PUSH_QUEUE_WRITES_MAX: u64 = 1_000;
/// Attempts at one push whose access record could not be committed (an
/// election), each a new record.
pub const PUSH_ATTEMPTS_MAX: u32 = 3;
/// The wait before the next attempt, times the attempts so far, in ms.
pub const PUSH_ATTEMPT_BACKOFF_MS: u64 = 1_000;
/// The encoded bytes of the records of one push at most: a record larger
/// than this goes alone, so a push stays under the envelope's bound.
pub const PUSH_RECORDS_BYTES_MAX: usize = 1024 * 1024;
const _: () = assert!(
    PUSH_RECORDS_BYTES_MAX + crate::records::RECORD_BYTES_MAX + 64 * 1024
        <= civmesh_certs::ENVELOPE_BYTES_MAX,
    "a push of the most records' bytes and one largest record fits an envelope"
);

/// The bytes of one push's access record that name its records' subjects
/// and released fields, at most: with the subscription's request, it fits
/// a submission (`SUBMIT_BYTES_MAX`, 240 KiB).
pub const PUSH_RELEASES_BYTES_MAX: usize = 128 * 1024;
/// How long a subscriber whose push went unanswered is not waited on: its
/// pushes are logged and kept for the retry task meanwhile, in ms.
pub const PUSH_UNREACHABLE_BACKOFF_MS: u64 = 30_000;

/// The most records one push to a subscription of `fields` carries: its
/// access record names each record's subject (32 bytes) and the released
/// fields, within [`PUSH_RELEASES_BYTES_MAX`].
pub fn push_records_max(fields: &[String]) -> usize {
    (PUSH_RELEASES_BYTES_MAX / release_bytes_per_record(fields)).clamp(1, PUSH_RECORDS_MAX)
}

/// The bytes one record's release takes in a push's access record at
/// most: its subject, and each of `fields`, each length prefix at most 9
/// bytes.
fn release_bytes_per_record(fields: &[String]) -> usize {
    32 + 9 + fields.iter().map(|field| field.len() + 9).sum::<usize>()
}

/// Splits `changed` into pushes to a subscription of `fields`: at most
/// [`push_records_max`] records and [`PUSH_RECORDS_BYTES_MAX`] bytes (a
/// larger record alone), in order.
pub fn push_chunks<'a>(
    changed: &'a [(String, RecordVersion)],
    fields: &[String],
) -> Vec<&'a [(String, RecordVersion)]> {
    crate::bounded_chunks::bounded_chunks(
        changed,
        push_records_max(fields),
        PUSH_RECORDS_BYTES_MAX,
        |(key, record)| {
            key.len()
                + codec::encode(record).map_or(crate::records::RECORD_BYTES_MAX, |encoded| encoded.len())
        },
    )
}

/// A push as the subscriber keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceivedPush {
    /// The subscription, hex.
    pub subscription: String,
    /// The owner node that pushed.
    pub owner: String,
    /// What it pushed.
    pub body: PushBody,
}

/// A logged push not yet delivered, as kept for retry: kept (synced) as
/// soon as its access record is committed, and sent once this replica has
/// applied that record, so a stop or a crash loses no push.
#[derive(Debug, Serialize, Deserialize)]
struct PendingPush {
    subscriber: NodeId,
    message: Vec<u8>,
    first_attempt_ms: u64,
    /// The digest of the access record it is logged by.
    record_digest: [u8; 32],
}

/// Why one push (a chunk of changed records to one subscriber) failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The access record or the push could not be signed.
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    /// The push could not be encoded.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// The push could not be logged; nothing was sent.
    #[error(transparent)]
    Log(#[from] LogAccessError),
    /// Logged but not delivered, and not kept for retry either.
    #[error("{0}")]
    Store(#[from] RecordStoreError),
    /// Logged, not delivered, and kept (synced) for retry.
    #[error("{0}; kept for retry")]
    KeptForRetry(#[source] SendPushError),
    /// Logged, not yet applied by this replica: kept (synced), and sent
    /// once it is.
    #[error("{0}; kept, and sent once this replica applied it")]
    KeptUnconfirmed(#[source] LogAccessError),
    /// The subscriber is no active member, or this node holds no subject
    /// key for its organisation: nothing pushed.
    #[error("no subject key for the subscriber's organisation; nothing pushed")]
    NoSubjectKey,
}

impl PushError {
    /// Whether a new attempt (a new access record) may succeed: the record
    /// was not committed in time. Nothing was sent; but the record may have
    /// committed after all, so the log may then show a release that did
    /// not happen (over-reported, never under-reported).
    fn worth_another_attempt(&self) -> bool {
        matches!(self, PushError::Log(LogAccessError::NotLogged(_)))
    }

    /// Whether the push is settled: kept for the retry task, or never to
    /// be made, which trying again would not change (no subject key; the
    /// log refused the record for good; it cannot be signed or encoded). A
    /// push is small enough for a submission (`push_records_max`), so one
    /// refused before Raft saw it is tried again. Not when its record was
    /// not committed, was rejected for its time or a full replay window (a
    /// new record, signed later, may pass), or the store failed.
    fn settled(&self) -> bool {
        use civmesh_policy::RejectionCode::*;
        match self {
            PushError::Log(LogAccessError::Rejected(rejection)) => !matches!(
                rejection.code,
                Stale | FutureDated | Overloaded | EntryTimeWentBack | DecisionTimeOutOfWindow
            ),
            PushError::Log(LogAccessError::NotLogged(_)) | PushError::Store(_) => false,
            PushError::KeptForRetry(_)
            | PushError::KeptUnconfirmed(_)
            | PushError::NoSubjectKey
            | PushError::Log(_)
            | PushError::Envelope(_)
            | PushError::Codec(_) => true,
        }
    }
}

/// One subscription a push goes to.
#[derive(Clone, Copy)]
struct PushTarget<'a> {
    digest: [u8; 32],
    subscriber: NodeId,
    envelope: &'a SignedEnvelope<QueryHeader>,
    header: &'a QueryHeader,
    /// Whether to send it now, or only keep it for the retry task.
    reachable: bool,
}

/// Why a push did not reach its subscriber.
#[derive(Debug, thiserror::Error)]
pub enum SendPushError {
    /// The policy log names no address for the subscriber.
    #[error("the subscriber's address is unknown")]
    AddressUnknown,
    /// The request failed.
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The subscriber answered without keeping the push.
    #[error("the subscriber did not keep the push")]
    NotKept,
}

impl SendPushError {
    /// Whether the subscriber could not be reached (not one that answered
    /// without keeping the push, as when its replica is a moment behind).
    fn unreachable(&self) -> bool {
        !matches!(self, SendPushError::NotKept)
    }
}

impl QueryService {
    /// After records of `dataset` changed: push the new versions, masked per
    /// each subscriber's grant, to every subscriber, each push logged first.
    /// Returns whether every push settled: delivered, kept for the retry
    /// task, or refused for good (no subject key, a record the log
    /// rejects). A push the log could not commit stops it: the caller
    /// pushes the changes again later (pushes already made are then made
    /// twice, and the subscriber drops what it holds).
    pub async fn push_changes(&self, dataset: &str, changed: &[(String, RecordVersion)]) -> bool {
        type Target = ([u8; 32], NodeId, SignedEnvelope<QueryHeader>, QueryHeader);
        let targets: Vec<Target> = match self.subscriptions.lock() {
            Ok(subscriptions) => subscriptions
                .iter()
                .filter(|subscription| subscription.header.dataset == dataset)
                .map(|s| (s.digest, s.subscriber, s.envelope.clone(), s.header.clone()))
                .collect(),
            Err(_) => return false,
        };
        for (digest, subscriber, envelope, header) in targets {
            // After a send failed, the subscriber's pushes are logged and
            // kept for the retry task for a while, not each waited on.
            let mut reachable = self.reachable(&subscriber);
            for chunk in push_chunks(changed, &header.fields) {
                let target =
                    PushTarget { digest, subscriber, envelope: &envelope, header: &header, reachable };
                match self.push_chunk_attempts(target, chunk).await {
                    Ok(()) => {}
                    Err(PushError::KeptForRetry(error)) => {
                        tracing::warn!(subscriber = %subscriber, %error, "push not delivered; kept for retry");
                        reachable = false;
                        self.note_send_failure(subscriber, &error);
                    }
                    Err(error) if error.settled() => {
                        tracing::warn!(subscriber = %subscriber, %error, "push not delivered");
                    }
                    Err(error) => {
                        tracing::warn!(subscriber = %subscriber, %error, "push not logged; pushed again later");
                        return false;
                    }
                }
            }
        }
        true
    }

    /// One push, tried again (a new access record) while its record was
    /// not committed, at most `PUSH_ATTEMPTS_MAX` times.
    async fn push_chunk_attempts(
        &self,
        target: PushTarget<'_>,
        chunk: &[(String, RecordVersion)],
    ) -> Result<(), PushError> {
        let mut attempt = 1;
        loop {
            match self.push_chunk(target, chunk).await {
                Err(error) if error.worth_another_attempt() && attempt < PUSH_ATTEMPTS_MAX => {
                    tracing::info!(subscriber = %target.subscriber, %error, attempt, "push not logged yet; again");
                    let backoff_ms = PUSH_ATTEMPT_BACKOFF_MS * u64::from(attempt);
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Whether to send pushes to `subscriber` now: not within
    /// [`PUSH_UNREACHABLE_BACKOFF_MS`] of one it left unanswered.
    fn reachable(&self, subscriber: &NodeId) -> bool {
        let now_ms = now_unix_millis();
        self.unreachable_until_ms
            .lock()
            .map_or(true, |until| until.get(subscriber).is_none_or(|until_ms| *until_ms <= now_ms))
    }

    /// Notes that a push to `subscriber` failed: one it could not be
    /// reached for (not one it answered without keeping, as when its
    /// replica is a moment behind) keeps it from being waited on for a
    /// while (one entry per subscriber, bounded by the members; expired
    /// ones are dropped).
    fn note_send_failure(&self, subscriber: NodeId, error: &SendPushError) {
        if !error.unreachable() {
            return;
        }
        let now_ms = now_unix_millis();
        if let Ok(mut until) = self.unreachable_until_ms.lock() {
            until.retain(|_, until_ms| *until_ms > now_ms);
            until.insert(subscriber, now_ms + PUSH_UNREACHABLE_BACKOFF_MS);
        }
    }

    /// Notes that `subscriber` kept a push: it is waited on again.
    fn note_send_success(&self, subscriber: &NodeId) {
        if let Ok(mut until) = self.unreachable_until_ms.lock() {
            until.remove(subscriber);
        }
    }

    async fn push_chunk(
        &self,
        target: PushTarget<'_>,
        chunk: &[(String, RecordVersion)],
    ) -> Result<(), PushError> {
        let PushTarget { digest, subscriber, envelope, header, reachable } = target;
        let pair_key = self.pair_key_of(&subscriber).ok_or(PushError::NoSubjectKey)?;
        let found: Vec<(String, SubjectKeyHash, RecordVersion)> = chunk
            .iter()
            .map(|(key, record)| (key.clone(), SubjectKeyHash::of(&pair_key, key), record.clone()))
            .collect();
        let facts: Vec<Facts> =
            found.iter().map(|(_, subject, record)| Facts { subject: *subject, record }).collect();
        let request = access_request(subscriber, header);
        let now_ms = now_unix_millis();
        let decision = self.log.state().read(|applied| decide(&applied.policy, &request, &facts, now_ms));
        let (outcome, records) = project(&decision, header, &found);
        let dataset = self.log.state().read(|applied| applied.policy.datasets.get(&header.dataset).cloned());
        let records = records_to_send(records, |index| {
            dataset.as_ref().is_some_and(|dataset| key_field_released(dataset, &decision, index))
        });
        if records.is_empty() {
            return Ok(());
        }
        let record = AccessRecord { request: envelope.clone(), outcome, decided_at_ms: now_ms };
        let command = SignedEnvelope::sign(&self.key, &Command::RecordPush(record), now_ms)?;
        let record_digest = command.digest();
        let position = self.commit_access(command).await?;
        let body = PushBody {
            subscription: digest,
            dataset: header.dataset.clone(),
            records,
            access_log_position: position,
        };
        let push = SignedEnvelope::sign(&self.key, &body, now_unix_millis())
            .and_then(|envelope| envelope.to_bytes())?;
        let message = codec::encode(&QueryProtocolMessage::Push(push))?;
        // Committed: kept (synced) before anything is sent, and forgotten
        // once delivered.
        let pending = PendingPush { subscriber, message, first_attempt_ms: now_unix_millis(), record_digest };
        self.records.put_push(position, &codec::encode(&pending)?)?;
        if !reachable {
            return Ok(());
        }
        self.confirm_access(position, record_digest).await.map_err(PushError::KeptUnconfirmed)?;
        self.send_push(&subscriber, pending.message).await.map_err(PushError::KeptForRetry)?;
        self.records.delete_push(position)?;
        Ok(())
    }

    async fn send_push(&self, subscriber: &NodeId, message: Vec<u8>) -> Result<(), SendPushError> {
        let peer = self.log.peer_of(subscriber).ok_or(SendPushError::AddressUnknown)?;
        let answer = self
            .swarm
            .request_on(Protocol::Query, &peer, message, Duration::from_millis(QUERY_TIMEOUT_MS))
            .await?;
        if answer != PUSH_KEPT {
            return Err(SendPushError::NotKept);
        }
        Ok(())
    }

    /// Retries logged pushes that did not reach their subscriber (it was
    /// down or cut off, or this replica had not applied the push's access
    /// record yet: it is sent once it has), every `PUSH_RETRY_TICK_MS`,
    /// until delivered or older than `PUSH_RETRY_AGE_MS_MAX`; runs until
    /// `stop`. Each tick goes on where the last stopped, so pushes behind
    /// more than a page of one unreachable subscriber's are still reached.
    pub async fn run_push_retries(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(PUSH_RETRY_TICK_MS));
        let mut after = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            after = self.retry_pushes_after(after).await;
        }
    }

    /// Retries the kept pushes after position `after` (from the oldest if
    /// none), up to a page of `PUSH_RETRY_READ_MAX` and
    /// `PUSH_RETRIES_PER_TICK_MAX` sends, and returns where the next tick
    /// goes on: none once the page was the last.
    async fn retry_pushes_after(&self, after: Option<u64>) -> Option<u64> {
        let Ok(pending) = self.records.pushes_after(after, PUSH_RETRY_READ_MAX) else { return after };
        let last_page = pending.len() < PUSH_RETRY_READ_MAX;
        let mut sends = 0;
        let mut looked_at = after;
        // Subscribers not reached in this tick: their other pushes wait
        // for the next, so one that is down costs one timeout a tick.
        let mut unreached = std::collections::BTreeSet::new();
        for (position, bytes) in pending {
            if sends >= PUSH_RETRIES_PER_TICK_MAX {
                return looked_at;
            }
            looked_at = Some(position);
            let Ok(push) = codec::decode_exact::<PendingPush>(&bytes, QUERY_MESSAGE_BYTES_MAX) else {
                let _ = self.records.delete_push(position);
                continue;
            };
            let expired = now_unix_millis().saturating_sub(push.first_attempt_ms) > PUSH_RETRY_AGE_MS_MAX;
            match self.confirm_applied(position, &push.record_digest) {
                _ if expired => {
                    tracing::warn!(subscriber = %push.subscriber, position, "push not delivered in time; dropped");
                    let _ = self.records.delete_push(position);
                }
                // Not applied here yet: the next tick looks again.
                Err(LogAccessError::NotAppliedHere) => {}
                Err(_) => {
                    let _ = self.records.delete_push(position);
                }
                Ok(()) if unreached.contains(&push.subscriber) => {}
                Ok(()) => {
                    sends += 1;
                    match self.send_push(&push.subscriber, push.message).await {
                        Ok(()) => {
                            self.note_send_success(&push.subscriber);
                            let _ = self.records.delete_push(position);
                        }
                        Err(error) => {
                            if error.unreachable() {
                                unreached.insert(push.subscriber);
                            }
                            self.note_send_failure(push.subscriber, &error);
                        }
                    }
                }
            }
        }
        if last_page {
            None
        } else {
            looked_at
        }
    }

    /// The subscriber's side of a push: only for its own subscription, from
    /// the owner of the dataset.
    pub(super) fn receive_push(&self, peer: NodeId, bytes: &[u8]) -> Vec<u8> {
        let Ok(envelope) = SignedEnvelope::<PushBody>::from_bytes(bytes) else { return Vec::new() };
        let Ok(verified) = envelope.verify_signature() else { return Vec::new() };
        let dataset = self
            .my_subscriptions
            .lock()
            .ok()
            .and_then(|mine| mine.get(&verified.payload.subscription).cloned());
        // Only from a current member of the organisation that owns the dataset.
        let from_owner = dataset.is_some_and(|dataset| {
            dataset == verified.payload.dataset
                && self.log.state().read(|applied| {
                    let owner = applied.policy.datasets.get(&dataset).map(|d| d.owner.clone());
                    applied
                        .policy
                        .active_member(&peer)
                        .is_some_and(|member| Some(&member.org) == owner.as_ref())
                })
        });
        if verified.signer != peer || !from_owner || !self.push_logged(&peer, &verified.payload) {
            return Vec::new();
        }
        let (subscription, position) = (verified.payload.subscription, verified.payload.access_log_position);
        let lag_ms = now_unix_millis().saturating_sub(verified.issued_at_ms);
        let kept = self.keep_in_copy(&subscription, &verified.payload.records, Some(position), |progress| {
            progress.last_push_position = progress.last_push_position.max(Some(position));
            progress.last_change_at_ms = Some(now_unix_millis());
            progress.last_push_lag_ms = Some(lag_ms);
        });
        if let Err(error) = kept {
            // Not acknowledged: the owner keeps the push and retries it.
            tracing::warn!(%error, "a push could not be kept in the subscription's copy");
            return Vec::new();
        }
        if let Ok(mut received) = self.received.lock() {
            if received.iter().any(|push| push.body.access_log_position == position) {
                return PUSH_KEPT.to_vec();
            }
            if received.len() >= RECEIVED_PUSHES_KEPT_MAX {
                received.pop_front();
            }
            received.push_back(ReceivedPush {
                subscription: hex::encode(verified.payload.subscription),
                owner: peer.to_string(),
                body: verified.payload,
            });
        }
        PUSH_KEPT.to_vec()
    }

    /// Whether this replica's access log holds, at the push's position, a
    /// push by `owner` under this subscription releasing every subject the
    /// push carries. A push not logged here yet is refused, and the owner
    /// retries it once this replica has caught up.
    fn push_logged(&self, owner: &NodeId, push: &PushBody) -> bool {
        let Ok(Some(entry)) = self.log.history().access_entry(push.access_log_position) else { return false };
        let Ok(command) = entry.envelope.unverified_payload() else { return false };
        let Some((record, civmesh_policy::AccessKind::Push)) = command.access() else { return false };
        let civmesh_policy::AccessOutcome::Permit { released } = &entry.outcome else { return false };
        entry.owner == *owner
            && record.request.digest() == push.subscription
            && push
                .records
                .iter()
                .all(|pushed| released.iter().any(|release| release.subject == pushed.subject))
    }

    /// The pushes this node received, oldest first.
    pub fn received_pushes(&self) -> Vec<ReceivedPush> {
        self.received.lock().map(|received| received.iter().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use civmesh_policy::model::FieldValue;

    use super::*;
    use crate::records::Provenance;

    fn record(value_bytes: usize) -> (String, RecordVersion) {
        let fields = BTreeMap::from([("name".to_string(), FieldValue::Text("x".repeat(value_bytes)))]);
        let provenance = Provenance::Import { batch: "b".to_string() };
        ("91310106A".to_string(), RecordVersion { version: 1, written_at_ms: 1, provenance, fields })
    }

    /// Pushes are cut by records and by bytes (the bounds themselves are
    /// `bounded_chunks`' property test).
    #[test]
    fn pushes_are_cut_by_records_and_by_bytes() {
        let fields = ["name".to_string()];
        let narrow: Vec<_> = (0..2_500).map(|_| record(10)).collect();
        let sizes: Vec<usize> = push_chunks(&narrow, &fields).iter().map(|chunk| chunk.len()).collect();
        assert_eq!(sizes, [1_000, 1_000, 500]);
        let wide: Vec<_> = (0..1_000).map(|_| record(5_000)).collect();
        let chunks = push_chunks(&wide, &fields);
        assert!(chunks.len() == 5 && chunks.iter().all(|chunk| chunk.len() <= 209), "{}", chunks.len());
        assert!(push_chunks(&[], &fields).is_empty());
    }

    /// A subscription of many long field names gets fewer records a push,
    /// so its access record still fits a submission; a few short ones the
    /// count bound.
    #[test]
    fn a_push_names_no_more_releases_than_a_submission_holds() {
        assert_eq!(
            push_records_max(&["name".to_string(), "operating_address".to_string()]),
            PUSH_RECORDS_MAX
        );
        let wide: Vec<String> = (0..256).map(|index| format!("{index:0>128}")).collect();
        let records_max = push_records_max(&wide);
        assert!((1..10).contains(&records_max), "{records_max}");
        assert!(records_max * release_bytes_per_record(&wide) <= PUSH_RELEASES_BYTES_MAX);
        let huge: Vec<String> = (0..10_000).map(|index| format!("{index:0>128}")).collect();
        assert_eq!(push_records_max(&huge), 1, "one record a push at least");
    }
}
