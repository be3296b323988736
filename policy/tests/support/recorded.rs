//! A recorded policy log and its audit bundle, as the auditor's tests
//! tamper with them: genesis, a dataset, a grant, eight accesses and two
//! final checkpoints.

use civmesh_certs::{NodeKey, OrgId, SignedEnvelope};
use civmesh_policy::audit::{
    decode_bundle, encode_bundle, verify_bundle, ArchivedCommand, AuditBundle, AuditReport, CheckpointBody,
    SeenCheckpoint,
};
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::subject_keys::SubjectLookup;
use civmesh_policy::{
    AccessOutcome, AccessRecord, Command, PolicyState, QueryHeader, ReasonCode, SubjectRelease,
};

use super::*;

/// A log as the replicas keep it: every command with its outcome.
pub struct RecordedLog {
    pub state: PolicyState,
    pub commands: Vec<ArchivedCommand>,
    /// The audit tree's leaves, as a replica's store keeps them.
    pub leaves: Vec<[u8; 32]>,
    /// The size of each checkpoint apply handed over as just made final.
    pub made_final: Vec<u64>,
}

impl RecordedLog {
    pub fn new() -> Self {
        RecordedLog {
            state: PolicyState::default(),
            commands: Vec::new(),
            leaves: Vec::new(),
            made_final: Vec::new(),
        }
    }

    pub fn record(&mut self, key: &NodeKey, command: Command) -> bool {
        self.record_envelope(&sign(key, command))
    }

    /// Applies and archives a signed command, as a replica does.
    pub fn record_envelope(&mut self, envelope: &civmesh_policy::SignedCommand) -> bool {
        self.record_envelope_at(envelope, NOW_MS)
    }

    /// The same, in an entry stamped `entry_time_ms`.
    pub fn record_envelope_at(
        &mut self,
        envelope: &civmesh_policy::SignedCommand,
        entry_time_ms: u64,
    ) -> bool {
        let envelope = envelope.clone();
        let (outcome, appended) = self.state.apply_appending(&envelope, entry_time_ms);
        let accepted = outcome.is_ok();
        self.leaves.extend(appended.audit_leaf);
        self.made_final.extend(appended.checkpoint.map(|checkpoint| checkpoint.body.tree_size));
        let sequence = self.commands.len() as u64 + 1;
        self.commands.push(ArchivedCommand {
            sequence,
            log_index: sequence + 2,
            entry_time_ms,
            envelope: envelope.to_bytes().unwrap(),
            accepted,
        });
        accepted
    }

    pub fn root_at(&self, size: u64) -> [u8; 32] {
        let mut tree = civmesh_policy::audit::CompactRange::default();
        for leaf in &self.leaves[..size as usize] {
            tree.push(leaf);
        }
        tree.root()
    }
}

/// The federation's subject-key secret in these tests.
pub const FEDERATION_SECRET: &[u8] = b"test federation subject-key secret";

/// Test subject `n`'s record key.
pub fn record_key(n: u8) -> String {
    format!("91310106{n:03}")
}

/// The auditor's lookup of test subject `n`.
pub fn lookup(n: u8) -> SubjectLookup {
    SubjectLookup::new(FEDERATION_SECRET, &record_key(n))
}

/// Test subject `n`'s hash in the street's queries at the market: what the
/// market derives with its pair key for the street.
pub fn subject_hash(n: u8) -> SubjectKeyHash {
    let org = |name| OrgId::new(civmesh_policy::fixtures::city_node(name).unwrap().org).unwrap();
    lookup(n).hash(&org("market"), &org("jingansi"))
}

pub fn access(requester: &NodeKey, subject: u8, grant: Option<u64>, permit: bool) -> Command {
    access_at(requester, subject, grant, permit, NOW_MS)
}

/// [`access`], requested and decided at `at_ms`.
pub fn access_at(requester: &NodeKey, subject: u8, grant: Option<u64>, permit: bool, at_ms: u64) -> Command {
    let header = QueryHeader {
        dataset: ENTERPRISES.into(),
        subjects: vec![subject_hash(subject)],
        fields: vec!["name".into(), "operating_address".into()],
        purpose: "inspection".into(),
        grant,
    };
    let outcome = if permit {
        AccessOutcome::Permit {
            released: vec![SubjectRelease {
                subject: subject_hash(subject),
                fields: vec!["name".into(), "operating_address".into()],
            }],
        }
    } else {
        AccessOutcome::Deny { reason: ReasonCode::GrantRequired }
    };
    Command::RecordAccess(AccessRecord {
        request: SignedEnvelope::sign(requester, &header, at_ms).unwrap(),
        outcome,
        decided_at_ms: at_ms,
    })
}

/// Genesis, a dataset, a grant, eight accesses and two final checkpoints
/// (at 4 and 8 entries), each cosigned by two of the three signers.
pub fn recorded_federation() -> (Fixture, RecordedLog) {
    let fx = Fixture::new();
    let ca_der = civmesh_certs::CaCertificate::from_pem(fx.ca.certificate_pem()).unwrap().der().to_vec();
    let mut log = RecordedLog::new();
    let founders = [&fx.hub, &fx.market, &fx.civil, &fx.jingansi, &fx.nanjingxilu, &fx.auditor];
    assert!(log.record(
        &fx.ca_key,
        Command::Genesis {
            federation_name: "test city".into(),
            ca_certificate_der: ca_der,
            founding_member_certificates_der: founders.iter().map(|n| n.certificate_der.clone()).collect(),
        }
    ));
    assert!(log.record(&fx.market.key, Command::PublishDataset(enterprise_dataset())));
    let spec = grant_spec(ENTERPRISES, &fx.jingansi.org, &["name", "operating_address"], "inspection");
    assert!(log.record(&fx.market.key, Command::IssueGrant(spec)));
    for subject in 0..4u8 {
        let grant = (subject % 2 == 0).then_some(1);
        assert!(log.record(&fx.market.key, access(&fx.jingansi.key, subject, grant, grant.is_some())));
    }
    let cosign =
        |log: &RecordedLog, size| CheckpointBody { tree_size: size, root: log.root_at(size), log_index: 9 };
    let first = cosign(&log, 4);
    assert!(log.record(&fx.hub.key, Command::CosignCheckpoint(first.clone())));
    assert!(log.record(&fx.market.key, Command::CosignCheckpoint(first)));
    for subject in 4..8u8 {
        assert!(log.record(&fx.market.key, access(&fx.jingansi.key, subject, Some(1), true)));
    }
    let second = cosign(&log, 8);
    assert!(log.record(&fx.civil.key, Command::CosignCheckpoint(second.clone())));
    assert!(log.record(&fx.hub.key, Command::CosignCheckpoint(second)));
    assert_eq!(log.state.checkpoints_final, 2);
    // Each handed over once, by the cosignature that made it final.
    assert_eq!(log.made_final, [4, 8]);
    (fx, log)
}

pub fn bundle_of(log: &RecordedLog, commands: Vec<ArchivedCommand>) -> AuditBundle {
    let federation = log.state.federation.as_ref().unwrap();
    AuditBundle {
        federation_name: federation.name.clone(),
        ca_certificate_der: federation.ca_certificate_der.clone(),
        exported_by: civmesh_certs::NodeId([0; 32]),
        exported_at_ms: NOW_MS,
        from_entry: 0,
        to_entry: u64::MAX,
        commands,
    }
}

pub fn verify(bundle: &AuditBundle, seen: &[SeenCheckpoint]) -> AuditReport {
    let bytes = encode_bundle(bundle).unwrap();
    let decoded = decode_bundle(&bytes).unwrap();
    verify_bundle(&decoded, Some(&bundle.ca_certificate_der), seen, &mut |_| {}).unwrap().0
}

/// Where the command at `sequence` is (sequence numbers start at 1).
pub fn index(sequence: u64) -> usize {
    sequence as usize - 1
}

/// An access record the owner signs that releases a field no grant allows
/// (`legal_rep_phone`): the real log rejects it.
pub fn unjustified_permit(fx: &Fixture) -> Command {
    let header = QueryHeader {
        dataset: ENTERPRISES.into(),
        subjects: vec![SubjectKeyHash([1; 32])],
        fields: vec!["legal_rep_phone".into()],
        purpose: "inspection".into(),
        grant: Some(1),
    };
    Command::RecordAccess(AccessRecord {
        request: SignedEnvelope::sign(&fx.jingansi.key, &header, NOW_MS).unwrap(),
        outcome: AccessOutcome::Permit {
            released: vec![SubjectRelease {
                subject: SubjectKeyHash([1; 32]),
                fields: vec!["legal_rep_phone".into()],
            }],
        },
        decided_at_ms: NOW_MS,
    })
}

/// `log` archived with one more command the log never applied, marked
/// accepted, at the next sequence.
pub fn with_appended(log: &RecordedLog, key: &NodeKey, command: Command) -> Vec<ArchivedCommand> {
    let mut commands = log.commands.clone();
    let sequence = commands.len() as u64 + 1;
    commands.push(ArchivedCommand {
        sequence,
        log_index: sequence + 2,
        entry_time_ms: NOW_MS,
        envelope: sign(key, command).to_bytes().unwrap(),
        accepted: true,
    });
    commands
}

/// `log` with one more access and a checkpoint two signers cosigned over
/// a root that is not the entries' root: the log takes it (signers vouch
/// for roots), the auditor does not. The cosignature that makes it final
/// is command 18.
pub fn with_a_lying_checkpoint(fx: &Fixture, log: &RecordedLog) -> RecordedLog {
    let mut lying = RecordedLog {
        state: log.state.clone(),
        commands: log.commands.clone(),
        leaves: log.leaves.clone(),
        made_final: Vec::new(),
    };
    assert!(lying.record(&fx.market.key, access(&fx.jingansi.key, 9, Some(1), true)));
    let wrong = CheckpointBody { tree_size: 9, root: [7; 32], log_index: 20 };
    assert!(lying.record(&fx.hub.key, Command::CosignCheckpoint(wrong.clone())));
    assert!(lying.record(&fx.civil.key, Command::CosignCheckpoint(wrong)));
    lying
}

/// Another history of `log`'s length from the same first three commands:
/// eight denials for other subjects, re-signed by the owner, with a fresh
/// final checkpoint at 8. Consistent in itself; not with `log`.
pub fn rewritten_history(fx: &Fixture, log: &RecordedLog) -> RecordedLog {
    let mut other = RecordedLog::new();
    for command in &log.commands[..3] {
        let envelope = civmesh_policy::SignedCommand::from_bytes(&command.envelope).unwrap();
        other.state.apply(&envelope, NOW_MS).unwrap();
        other.commands.push(command.clone());
    }
    for subject in 20..28u8 {
        assert!(other.record(&fx.market.key, access(&fx.jingansi.key, subject, None, false)));
    }
    let body = CheckpointBody { tree_size: 8, root: other.root_at(8), log_index: 12 };
    assert!(other.record(&fx.hub.key, Command::CosignCheckpoint(body.clone())));
    assert!(other.record(&fx.market.key, Command::CosignCheckpoint(body)));
    other
}

/// The Ed25519 seed inside a key generated by ring (PKCS#8 v2: the seed
/// is bytes 16..48).
pub fn seed_of(key: &NodeKey) -> [u8; 32] {
    let seed: [u8; 32] = key.pkcs8_der()[16..48].try_into().unwrap();
    assert_eq!(civmesh_certs::signature::zip215_only_signer(&seed).0, key.node_id().0, "the key's seed");
    seed
}

/// `log` and one more access, the market's, signed so that only ZIP 215
/// accepts the signature (R of order 8): it is accepted.
pub fn with_a_zip215_only_signature(fx: &Fixture, log: &RecordedLog) -> RecordedLog {
    let mut more = RecordedLog {
        state: log.state.clone(),
        commands: log.commands.clone(),
        leaves: log.leaves.clone(),
        made_final: Vec::new(),
    };
    let command = access(&fx.jingansi.key, 11, Some(1), true);
    let envelope = SignedEnvelope::sign_zip215_only(&seed_of(&fx.market.key), &command, NOW_MS).unwrap();
    assert!(more.record_envelope(&envelope));
    more
}
