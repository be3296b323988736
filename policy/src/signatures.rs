//! Every signature a command carries, checked under the one rule
//! (`certs::signature`, ZIP 215), one command at a time or in batches: the
//! envelope's and, for an access record or push, the requester's query.
//!
//! Replicas verify a log entry's commands when it arrives, in a batch, and
//! apply with the verdict ([`crate::PolicyState::apply_with_signatures_verified`]);
//! the auditor's replay checks a bundle's commands in batches on every
//! thread first. Under ZIP 215 a batch verifies when each of its
//! signatures does, and fails otherwise except with negligible
//! probability (random coefficients), so both give every command the
//! verdict a single check gives.

use civmesh_certs::signature::Batch;

use crate::audit::ArchivedCommand;
use crate::SignedCommand;

/// Whether every signature of `envelope` verifies: the command's envelope
/// and, for an access record or push, the requester's query.
pub fn command_signatures_verify(envelope: &SignedCommand) -> bool {
    let Ok(verified) = envelope.verify_signature() else { return false };
    match verified.payload.access() {
        Some((record, _)) => record.request.verify_signature().is_ok(),
        None => true,
    }
}

/// Queues every signature of `envelope` in `batch` (see
/// [`command_signatures_verify`]). False if it does not decode.
fn queue_command_signatures(envelope: &SignedCommand, batch: &mut Batch) -> bool {
    let Ok(decoded) = envelope.queue_signature(batch) else { return false };
    match decoded.payload.access() {
        Some((record, _)) => record.request.queue_signature(batch).is_ok(),
        None => true,
    }
}

/// The most commands whose signatures are verified in one batch: past a few
/// hundred signatures a batch gets no cheaper per signature, and a failed
/// batch is checked again one by one.
pub const VERIFY_BATCH_COMMANDS_MAX: usize = 128;

/// Whether each command's signatures verify, in batches of at most
/// [`VERIFY_BATCH_COMMANDS_MAX`]: one ZIP 215 batch, which agrees with
/// checking each command; if a batch fails, each of its commands on its
/// own, to say which.
pub fn commands_signatures_verify<C: std::borrow::Borrow<SignedCommand>>(commands: &[C]) -> Vec<bool> {
    commands.chunks(VERIFY_BATCH_COMMANDS_MAX).flat_map(verify_batch).collect()
}

fn verify_batch<C: std::borrow::Borrow<SignedCommand>>(commands: &[C]) -> Vec<bool> {
    let mut batch = Batch::new();
    let decoded: Vec<bool> =
        commands.iter().map(|command| queue_command_signatures(command.borrow(), &mut batch)).collect();
    if batch.verify() {
        decoded
    } else {
        commands.iter().map(|command| command_signatures_verify(command.borrow())).collect()
    }
}

/// Whether every signature of an archived command verifies; false if its
/// envelope does not decode.
fn archived_signatures_verify(archived: &[ArchivedCommand]) -> Vec<bool> {
    let decoded: Vec<Option<SignedCommand>> =
        archived.iter().map(|archived| SignedCommand::from_bytes(&archived.envelope).ok()).collect();
    let envelopes: Vec<&SignedCommand> = decoded.iter().flatten().collect();
    let mut verdicts = commands_signatures_verify(&envelopes).into_iter();
    decoded.iter().map(|envelope| envelope.is_some() && verdicts.next().unwrap_or(false)).collect()
}

/// Verifies every archived command's signatures, in batches, on `threads`
/// threads: the costly, independent half of the auditor's verification.
pub(crate) fn verify_signatures_in_parallel(commands: &[ArchivedCommand], threads: usize) -> Vec<bool> {
    let chunk = commands.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = commands
            .chunks(chunk)
            .map(|part| scope.spawn(move || archived_signatures_verify(part)))
            .collect();
        workers.into_iter().flat_map(|worker| worker.join().unwrap_or_default()).collect::<Vec<bool>>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{AccessOutcome, AccessRecord, QueryHeader};
    use crate::model::SubjectKeyHash;
    use civmesh_certs::{NodeKey, SignedEnvelope};

    fn archived(envelope: Vec<u8>) -> ArchivedCommand {
        ArchivedCommand { sequence: 1, log_index: 1, entry_time_ms: 1, envelope, accepted: true }
    }

    fn verify_archived(commands: &[ArchivedCommand]) -> Vec<bool> {
        archived_signatures_verify(commands)
    }

    fn access_record(requester: &NodeKey) -> crate::Command {
        let header = QueryHeader {
            dataset: "enterprises".into(),
            subjects: vec![SubjectKeyHash([1; 32])],
            fields: vec!["name".into()],
            purpose: "inspection".into(),
            grant: None,
        };
        crate::Command::RecordAccess(AccessRecord {
            request: SignedEnvelope::sign(requester, &header, 1).unwrap(),
            outcome: AccessOutcome::Deny { reason: crate::ReasonCode::GrantRequired },
            decided_at_ms: 1,
        })
    }

    #[test]
    fn the_parallel_check_passes_exactly_the_commands_whose_every_signature_verifies() {
        let (owner, requester) = (NodeKey::generate().unwrap(), NodeKey::generate().unwrap());
        let plain = crate::Command::RevokeGrant { grant_id: 1, reason: "ended".into() };
        let sign =
            |command: &crate::Command| SignedEnvelope::sign(&owner, command, 1).unwrap().to_bytes().unwrap();
        let flip_last_byte = |mut bytes: Vec<u8>| {
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            bytes
        };
        let mut forged_request = access_record(&requester);
        if let crate::Command::RecordAccess(record) = &mut forged_request {
            record.request = SignedEnvelope::sign(&requester, &"another payload".to_string(), 1)
                .map(|other| {
                    SignedEnvelope::from_parts(
                        record.request.body_bytes().to_vec(),
                        other.signature_bytes().to_vec(),
                    )
                })
                .unwrap();
        }
        let cases = [
            ("a plain command", sign(&plain), true),
            ("its signature damaged", flip_last_byte(sign(&plain)), false),
            ("an access record", sign(&access_record(&requester)), true),
            ("an access record with a forged request", sign(&forged_request), false),
            ("not an envelope", vec![1, 2, 3], false),
        ];
        for (case, envelope, verifies) in cases {
            assert_eq!(verify_archived(&[archived(envelope)]), [verifies], "{case}");
        }
    }

    #[test]
    fn a_batch_with_one_bad_signature_fails_exactly_that_command() {
        let (owner, requester) = (NodeKey::generate().unwrap(), NodeKey::generate().unwrap());
        let mut commands: Vec<ArchivedCommand> = (0..6)
            .map(|index| {
                let command = if index % 2 == 0 {
                    access_record(&requester)
                } else {
                    crate::Command::RevokeGrant { grant_id: index, reason: "ended".into() }
                };
                archived(SignedEnvelope::sign(&owner, &command, 1).unwrap().to_bytes().unwrap())
            })
            .collect();
        assert_eq!(verify_archived(&commands), [true; 6]);
        let last = commands[3].envelope.len() - 1;
        commands[3].envelope[last] ^= 1;
        assert_eq!(verify_archived(&commands), [true, true, true, false, true, true]);
        for threads in [1, 2, 4] {
            assert_eq!(
                verify_signatures_in_parallel(&commands, threads),
                verify_archived(&commands),
                "{threads}"
            );
        }
    }
}
