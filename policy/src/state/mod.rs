//! The policy state and `apply`: the deterministic transition the replicated
//! state machine runs for each signed command.
//!
//! `apply` re-verifies the envelope's signature and the signer's authority
//! against the state it is applied to, so a faulty leader cannot forge a
//! grant or a consent. It validates everything before it changes anything:
//! a rejected command leaves the state exactly as it was.
//!
//! Each domain has its module, with its `&self` validation and its
//! `&mut self` mutation: [`membership`], [`catalog`] (and the negative
//! list), [`grants`] (and the demand list), [`consents`], [`access`],
//! [`corrections`], [`checkpoints`]; [`replay`] keeps time and the replay
//! window, [`authority`] who may sign what. This module runs the pipeline
//! and dispatches each command to its domain.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use civmesh_certs::{codec, NodeId, NonceStore, OrgId, ReplayGuard, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::access::AccessLogEntry;
use crate::audit::{CompactRange, FinalCheckpoint, PendingCheckpoint};
use crate::command::{Command, DemandSpec, SignedCommand};
use crate::correction::{CorrectionId, CorrectionTrack};
use crate::model::{
    Consent, ConsentKey, Dataset, DatasetId, Demand, DemandId, FieldName, Grant, GrantId, Member,
    NegativeListEntry, Revocation,
};

mod access;
mod authority;
mod catalog;
mod checkpoints;
mod consents;
mod corrections;
mod deletions;
mod grants;
mod membership;
mod rejection;
mod replay;
mod subject_requests;

pub use corrections::{
    CorrectionClearance, CorrectionRefusal, CORRECTIONS_OPEN_PER_SUBMITTER_MAX,
    CORRECTIONS_RELEASED_PER_COMMAND_MAX, CORRECTION_CLOSED_KEPT_MS,
};
pub use deletions::DeletionDue;
pub use grants::{DemandStatus, GrantWarning, GRANT_EXPIRY_WARNING_DAYS};
pub use rejection::{Rejection, RejectionCode};
pub use replay::{COMMAND_NONCES_MAX, COMMAND_NONCES_PER_SIGNER_MAX, COMMAND_SKEW_MS_MAX};
pub use subject_requests::{SUBJECT_REQUESTS_OPEN_MAX, SUBJECT_REQUESTS_OPEN_PER_INTAKE_MAX};

use access::LoggedAccess;
use authority::genesis_not_first;
use grants::DemandFiling;
use membership::Genesis;
use rejection::reject;

/// What an accepted command did, for the submitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Nothing beyond the state change itself needs reporting.
    Done,
    /// A demand was filed with this id.
    DemandFiled(DemandId),
    /// A grant was issued with this id.
    GrantIssued(GrantId),
    /// An access was logged at this position of the access log.
    AccessLogged(u64),
    /// An owner's correction outcome (applied, rejected, conflict) was
    /// logged: like an access, a leaf of the audit tree.
    CorrectionOutcomeLogged,
}

impl Applied {
    /// Whether the command is a leaf of the audit tree.
    pub fn is_audit_leaf(&self) -> bool {
        matches!(self, Applied::AccessLogged(_) | Applied::CorrectionOutcomeLogged)
    }
}

/// What one applied command added to the access log and the audit tree:
/// the state counts them but does not keep them, so it does not grow with
/// the log. A replica's store keeps them; an auditor's replay checks them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// The access entry, at position `access_log_length - 1` after the apply.
    pub access_entry: Option<AccessLogEntry>,
    /// The audit leaf, at position `audit_frontier.size() - 1` after it.
    pub audit_leaf: Option<[u8; 32]>,
    /// The audit tree's perfect subtrees the leaf completed, the leaf's own
    /// first: a store keeps them to read roots and proofs at any size.
    pub audit_nodes: Vec<(crate::audit::TreeNode, [u8; 32])>,
    /// The checkpoint it made final, the `checkpoints_final`-th.
    pub checkpoint: Option<FinalCheckpoint>,
    /// The closed corrections that left the state after it, each with the
    /// entry time it closed at, oldest first
    /// ([`CORRECTION_CLOSED_KEPT_MS`]).
    pub closed_corrections: Vec<(CorrectionId, UnixMillis, CorrectionTrack)>,
}

/// The federation root as recorded in genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Federation {
    /// Its name.
    pub name: String,
    /// The CA certificate (DER).
    pub ca_certificate_der: Vec<u8>,
    /// The CA's public key, which may sign membership commands.
    pub ca_node_id: NodeId,
}

/// Everything the policy log has established. Every collection is ordered,
/// so the canonical encoding is the same on every replica that applied the
/// same commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    /// Set by genesis.
    pub federation: Option<Federation>,
    /// Members by node id, revoked ones included.
    pub members: BTreeMap<NodeId, Member>,
    /// The catalog.
    pub datasets: BTreeMap<DatasetId, Dataset>,
    /// The negative list, by (dataset, field or whole dataset).
    pub negative_list: BTreeMap<(DatasetId, Option<FieldName>), NegativeListEntry>,
    /// The demand list.
    pub demands: BTreeMap<DemandId, Demand>,
    /// Grants, revoked ones included.
    pub grants: BTreeMap<GrantId, Grant>,
    /// The latest consent per subject, dataset, grantee and purpose.
    pub consents: BTreeMap<ConsentKey, Consent>,
    /// The next demand id.
    pub next_demand_id: DemandId,
    /// The next grant id.
    pub next_grant_id: GrantId,
    /// How many entries the access log holds: every query answered,
    /// permit or deny, in log order. The entries themselves are not state:
    /// each apply hands its entry over ([`Appended`]) for the store to keep.
    pub access_log_length: u64,
    /// The audit tree's right edge: its size and root. Its leaves, the
    /// SHA-256 of each access entry's and each correction outcome's signed
    /// command, are handed over like the entries.
    pub audit_frontier: CompactRange,
    /// The lifecycle of every correction open, or closed (its outcome
    /// delivered) less than [`CORRECTION_CLOSED_KEPT_MS`] ago, by id.
    /// Older closed ones are handed over ([`Appended::closed_corrections`]).
    pub corrections: BTreeMap<CorrectionId, CorrectionTrack>,
    /// The corrections in `corrections` that are closed, with the entry
    /// time each closed at, in that order.
    pub corrections_closed: VecDeque<(UnixMillis, CorrectionId)>,
    /// Per submitting organisation, how many of its corrections are open
    /// (submitted, outcome not yet delivered); one with none is absent.
    pub corrections_open_by_submitter: BTreeMap<OrgId, u64>,
    /// Per owner and dataset, the correction statistics so far, kept as
    /// each event is applied ([`crate::correction_tally`]).
    pub correction_tallies: BTreeMap<(OrgId, DatasetId), crate::correction_tally::CorrectionTally>,
    /// Auto-accept rules by (dataset, submitting organisation): the fields
    /// that may change without review.
    pub auto_accept_rules: BTreeMap<(DatasetId, OrgId), BTreeSet<FieldName>>,
    /// The checkpoints being cosigned, in the order they were opened. Each
    /// signer's latest cosignature counts for one of them only, so there
    /// are at most as many as there are signers.
    pub pending_checkpoints: Vec<PendingCheckpoint>,
    /// How many checkpoints of the access log's Merkle tree are final. The
    /// final checkpoints are handed over like the access entries.
    pub checkpoints_final: u64,
    /// The latest final checkpoint.
    pub last_checkpoint: Option<FinalCheckpoint>,
    /// How many commands were applied (accepted or rejected).
    pub commands_applied: u64,
    /// A digest of every command applied and its outcome, in order: each
    /// apply moves it on in O(1) ([`applied_digest`]), so replicas compare
    /// it cheaply at any size.
    pub digest: [u8; 32],
    /// The latest entry time applied: a command at an earlier one is
    /// rejected ([`RejectionCode::EntryTimeWentBack`]).
    pub last_entry_time_ms: UnixMillis,
    /// Nonces of recent commands, to reject replayed entries.
    pub recent_commands: ReplayGuard,
    /// The commitment to the subject-key secret, once the CA logged it.
    pub subject_key_commitment: Option<[u8; 32]>,
    /// Per grant, each node released records under it: when, and the
    /// deletions it confirmed. Grows with grants and their holders, not
    /// with the log.
    pub holdings: BTreeMap<GrantId, BTreeMap<NodeId, crate::deletion::Holding>>,
    /// The subjects' requests still open, by id; an answered one leaves.
    pub subject_requests:
        BTreeMap<crate::subject_request::SubjectRequestId, crate::subject_request::SubjectRequest>,
    /// Per owner, the requests it answered (late ones counted).
    pub subject_request_counts: BTreeMap<OrgId, crate::subject_request::SubjectRequestCounts>,
    /// Per intake organisation, how many of its requests are open.
    pub subject_requests_open_by_intake: BTreeMap<OrgId, u64>,
}

impl Default for PolicyState {
    fn default() -> Self {
        PolicyState {
            federation: None,
            members: BTreeMap::new(),
            datasets: BTreeMap::new(),
            negative_list: BTreeMap::new(),
            demands: BTreeMap::new(),
            grants: BTreeMap::new(),
            consents: BTreeMap::new(),
            next_demand_id: 1,
            next_grant_id: 1,
            access_log_length: 0,
            audit_frontier: CompactRange::default(),
            corrections: BTreeMap::new(),
            corrections_closed: VecDeque::new(),
            corrections_open_by_submitter: BTreeMap::new(),
            correction_tallies: BTreeMap::new(),
            auto_accept_rules: BTreeMap::new(),
            pending_checkpoints: Vec::new(),
            checkpoints_final: 0,
            last_checkpoint: None,
            commands_applied: 0,
            digest: [0; 32],
            last_entry_time_ms: 0,
            recent_commands: ReplayGuard::with_signer_quota(
                COMMAND_SKEW_MS_MAX,
                COMMAND_NONCES_MAX,
                COMMAND_NONCES_PER_SIGNER_MAX,
            ),
            subject_key_commitment: None,
            holdings: BTreeMap::new(),
            subject_requests: BTreeMap::new(),
            subject_request_counts: BTreeMap::new(),
            subject_requests_open_by_intake: BTreeMap::new(),
        }
    }
}

/// One fewer for `key` in `counts` (open requests or corrections per
/// organisation); a key whose count reaches 0 leaves, so an organisation
/// with none is not a key, on every replica alike.
fn count_down(counts: &mut BTreeMap<OrgId, u64>, key: &OrgId) {
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// Whether apply checks signatures itself.
#[derive(Clone, Copy)]
pub(super) enum SignatureCheck {
    Verify,
    AlreadyVerified,
}

impl SignatureCheck {
    pub(super) fn open<T: serde::de::DeserializeOwned + Serialize>(
        self,
        envelope: &civmesh_certs::SignedEnvelope<T>,
    ) -> Result<civmesh_certs::VerifiedEnvelope<T>, civmesh_certs::EnvelopeError> {
        match self {
            SignatureCheck::Verify => envelope.verify_signature(),
            SignatureCheck::AlreadyVerified => envelope.decode_already_verified(),
        }
    }
}

impl PolicyState {
    /// Applies one signed command at `entry_time_ms` (the time the leader
    /// stamped on the log entry).
    ///
    /// In order: an entry time earlier than the last one applied is
    /// rejected; the envelope's signature and its time window are checked;
    /// then, if the signer is one the state knows (the CA or a member,
    /// revoked or not), its nonce is recorded, so the same signed command
    /// can never be applied later, even if it is rejected now; then the
    /// signer's standing and authority, then the command itself.
    ///
    /// On rejection the state is unchanged except for
    /// [`PolicyState::commands_applied`], [`PolicyState::last_entry_time_ms`]
    /// and the replay window (the command's nonce, and nonces that expired),
    /// all the same on every replica.
    pub fn apply(
        &mut self,
        envelope: &SignedCommand,
        entry_time_ms: UnixMillis,
    ) -> Result<Applied, Rejection> {
        self.apply_appending(envelope, entry_time_ms).0
    }

    /// [`PolicyState::apply`], and what the command appended to the access
    /// log and the audit tree.
    pub fn apply_appending(
        &mut self,
        envelope: &SignedCommand,
        entry_time_ms: UnixMillis,
    ) -> (Result<Applied, Rejection>, Appended) {
        self.apply_with(envelope, entry_time_ms, SignatureCheck::Verify)
    }

    /// [`PolicyState::apply_appending`] for a command whose every signature
    /// (the envelope's, and an access record's request) the caller has
    /// verified itself under the same rule
    /// ([`crate::signatures::commands_signatures_verify`]): a replica that
    /// verified a log entry when it arrived, an auditor that verified a
    /// bundle's signatures on all cores first; or the owner of an access
    /// record, which signed it itself over a request it verified at its
    /// edge. Everything else is checked as in `apply`.
    pub fn apply_with_signatures_verified(
        &mut self,
        envelope: &SignedCommand,
        entry_time_ms: UnixMillis,
    ) -> (Result<Applied, Rejection>, Appended) {
        self.apply_with(envelope, entry_time_ms, SignatureCheck::AlreadyVerified)
    }

    /// [`PolicyState::apply_appending`] (or, if `signatures_verified`,
    /// [`PolicyState::apply_with_signatures_verified`]) for a state whose
    /// replay window keeps its nonces in `nonces`, a store of the caller's
    /// (a replica's disk), given every time: the state keeps the counts.
    pub fn apply_with_nonces_in(
        &mut self,
        nonces: &mut dyn NonceStore,
        envelope: &SignedCommand,
        entry_time_ms: UnixMillis,
        signatures_verified: bool,
    ) -> (Result<Applied, Rejection>, Appended) {
        let check =
            if signatures_verified { SignatureCheck::AlreadyVerified } else { SignatureCheck::Verify };
        self.apply_in(nonces, envelope, entry_time_ms, check)
    }

    /// Applies with the nonces the replay window holds itself.
    fn apply_with(
        &mut self,
        envelope: &SignedCommand,
        entry_time_ms: UnixMillis,
        check: SignatureCheck,
    ) -> (Result<Applied, Rejection>, Appended) {
        debug_assert_eq!(
            self.recent_commands.nonces().len(),
            self.recent_commands.nonces_remembered(),
            "a window whose nonces a store holds is applied without it"
        );
        let mut nonces = std::mem::take(self.recent_commands.nonces_mut());
        let applied = self.apply_in(&mut nonces, envelope, entry_time_ms, check);
        *self.recent_commands.nonces_mut() = nonces;
        applied
    }

    fn apply_in(
        &mut self,
        nonces: &mut dyn NonceStore,
        envelope: &SignedCommand,
        entry_time_ms: UnixMillis,
        check: SignatureCheck,
    ) -> (Result<Applied, Rejection>, Appended) {
        self.commands_applied += 1;
        let before = self.commands_applied;
        let digest_before = self.digest;
        let checkpoints_before = self.checkpoints_final;
        let (outcome, access_entry) = match self.apply_verified(nonces, envelope, entry_time_ms, check) {
            Ok((applied, entry)) => (Ok(applied), entry),
            Err(rejection) => (Err(rejection), None),
        };
        debug_assert_eq!(before, self.commands_applied);
        let (audit_leaf, audit_nodes) = match &outcome {
            Ok(applied) if applied.is_audit_leaf() => {
                let position = crate::audit::LeafPosition { digest_before, sequence: before, entry_time_ms };
                let leaf = crate::audit::leaf_of(&position, envelope);
                (Some(leaf), self.audit_frontier.push(&leaf))
            }
            _ => (None, Vec::new()),
        };
        let checkpoint =
            (self.checkpoints_final > checkpoints_before).then(|| self.last_checkpoint.clone()).flatten();
        self.digest = applied_digest(&digest_before, entry_time_ms, envelope, &outcome);
        let closed_corrections = self.release_closed_corrections();
        (outcome, Appended { access_entry, audit_leaf, audit_nodes, checkpoint, closed_corrections })
    }

    /// Applies a command; an access also returns its entry.
    fn apply_verified(
        &mut self,
        nonces: &mut dyn NonceStore,
        envelope: &SignedCommand,
        entry_time_ms: UnixMillis,
        check: SignatureCheck,
    ) -> Result<(Applied, Option<AccessLogEntry>), Rejection> {
        self.advance_entry_time(entry_time_ms)?;
        let verified = check
            .open(envelope)
            .map_err(|error| reject(RejectionCode::SignatureInvalid, error.to_string()))?;
        replay::check_command_time(verified.issued_at_ms, entry_time_ms)?;
        let signer = verified.signer;
        // The nonce is spent before anything else is decided, so a command
        // rejected now can never be applied later. Only known signers spend
        // nonces: a fresh key could otherwise fill the window for everyone.
        let genesis = matches!(verified.payload, Command::Genesis { .. });
        if genesis || self.knows_signer(&signer) {
            self.check_replay(nonces, &signer, &verified.nonce, verified.issued_at_ms, entry_time_ms)?;
        }
        let command = authority::decided(&verified.payload)?;
        if let Command::Genesis { federation_name, ca_certificate_der, founding_member_certificates_der } =
            command
        {
            let genesis =
                Genesis { federation_name, ca_certificate_der, founding: founding_member_certificates_der };
            return self.apply_genesis(&signer, genesis, entry_time_ms).map(|applied| (applied, None));
        }
        if self.federation.is_none() {
            return Err(reject(RejectionCode::GenesisOrder, "the log has no genesis yet"));
        }
        // Validate first; only the final step mutates.
        let signer_org = self.authorise(&signer, command, entry_time_ms)?;
        let admitted = self.validate(command, &signer, &signer_org, entry_time_ms)?;
        if let Some((record, kind)) = command.access() {
            let access = LoggedAccess { envelope, record, kind, owner: signer };
            return self
                .log_access(nonces, access, check, entry_time_ms)
                .map(|(applied, entry)| (applied, Some(entry)));
        }
        let entry = Entry { signer, signer_org, at_ms: entry_time_ms };
        Ok((self.mutate(command.clone(), entry, admitted), None))
    }

    /// Checks the command against the state, by its domain's rule. For an
    /// admission, returns the member the verified certificate makes.
    fn validate(
        &self,
        command: &Command,
        signer: &NodeId,
        signer_org: &OrgId,
        entry_time_ms: UnixMillis,
    ) -> Result<Option<Member>, Rejection> {
        match command {
            Command::Genesis { .. } => return Err(genesis_not_first()),
            Command::AdmitMember { certificate_der } => {
                return self.validate_admission(certificate_der, entry_time_ms).map(Some)
            }
            Command::RevokeMember { node_id, reason } => self.validate_member_revocation(node_id, reason)?,
            Command::PublishDataset(spec) => {
                catalog::validate_dataset(spec)?;
                self.check_republished_protection(spec, entry_time_ms)?
            }
            Command::AddNegativeListEntry { dataset, field, reason } => {
                self.validate_negative_list_entry(dataset, field.as_ref(), reason)?
            }
            Command::RemoveNegativeListEntry { dataset, field } => {
                self.validate_negative_list_removal(dataset, field.as_ref())?
            }
            Command::FileDemand { dataset, fields, purpose, .. } => {
                self.validate_demand(DemandFiling { dataset, fields, purpose })?
            }
            Command::IssueGrant(spec) => self.validate_grant(spec, signer_org)?,
            Command::RevokeGrant { grant_id, reason } => self.validate_grant_revocation(*grant_id, reason)?,
            Command::FileDemandWithReason(spec) => self.validate_demand_spec(spec)?,
            Command::RefuseDemand { demand_id, reason } => {
                self.validate_demand_refusal(*demand_id, reason)?
            }
            Command::RecordConsent { purpose, channel, .. } => self.validate_consent(purpose, channel)?,
            // Checked, once, in `log_access`, which keeps the result.
            Command::RecordAccess(_) | Command::RecordListing(_) | Command::RecordPush(_) => {}
            Command::RecordCorrectionEvent(event) => {
                self.validate_correction_event(event, signer_org, entry_time_ms)?
            }
            Command::CosignCheckpoint(body) => self.validate_cosignature(body, signer)?,
            Command::CommitSubjectKeySecret { .. } => self.validate_subject_key_commitment()?,
            Command::ConfirmDeletion(receipt) => {
                self.validate_deletion(receipt, signer, signer_org, entry_time_ms)?
            }
            Command::FileSubjectRequest(spec) => {
                self.validate_subject_request(spec, signer_org, entry_time_ms)?
            }
            Command::AnswerSubjectRequest { id, outcome } => self.validate_subject_answer(id, outcome)?,
            Command::SetAutoAcceptRule(rule) => self.validate_auto_accept_rule(rule, signer_org)?,
            Command::RemoveAutoAcceptRule { dataset, submitter } => {
                self.validate_auto_accept_rule_removal(dataset, submitter)?
            }
            // `decided` unwraps it, and `authorise` refuses a wrapper inside.
            Command::ByOperator { .. } => {
                return Err(reject(RejectionCode::NotAuthorised, "a wrapped command cannot be wrapped again"))
            }
        }
        Ok(None)
    }

    /// Changes the state for a validated command, in its domain.
    fn mutate(&mut self, command: Command, entry: Entry, admitted: Option<Member>) -> Applied {
        let Entry { signer, signer_org: org, at_ms } = entry;
        match command {
            Command::Genesis { .. }
            | Command::RecordAccess(_)
            | Command::RecordListing(_)
            | Command::RecordPush(_) => Applied::Done,
            Command::AdmitMember { .. } => self.admit_member(admitted),
            Command::RevokeMember { node_id, reason } => {
                self.revoke_member(&node_id, Revocation { at_ms, by: signer, reason })
            }
            Command::PublishDataset(spec) => self.publish_dataset(spec, org),
            Command::AddNegativeListEntry { dataset, field, reason } => {
                self.add_negative_list_entry(NegativeListEntry { dataset, field, reason })
            }
            Command::RemoveNegativeListEntry { dataset, field } => {
                self.remove_negative_list_entry(dataset, field)
            }
            Command::FileDemand { dataset, fields, purpose, legal_basis } => {
                let reason = String::new();
                let spec = DemandSpec { dataset, fields, purpose, legal_basis, reason, until_ms: None };
                self.file_demand(org, spec, at_ms)
            }
            Command::FileDemandWithReason(spec) => self.file_demand(org, spec, at_ms),
            Command::RefuseDemand { demand_id, reason } => {
                self.refuse_demand(demand_id, Revocation { at_ms, by: signer, reason })
            }
            Command::IssueGrant(spec) => self.issue_grant(spec, org, at_ms),
            Command::RevokeGrant { grant_id, reason } => {
                self.revoke_grant(grant_id, Revocation { at_ms, by: signer, reason })
            }
            Command::RecordConsent {
                subject,
                dataset,
                grantee,
                purpose,
                given,
                covers_sensitive,
                channel,
            } => self.record_consent(
                ConsentKey { subject, dataset, grantee, purpose },
                Consent { given, covers_sensitive, recorded_by: org, recorded_at_ms: at_ms, channel },
            ),
            Command::RecordCorrectionEvent(event) => self.record_correction_event(event, org, at_ms),
            Command::SetAutoAcceptRule(rule) => self.set_auto_accept_rule(rule),
            Command::RemoveAutoAcceptRule { dataset, submitter } => {
                self.remove_auto_accept_rule(dataset, submitter)
            }
            Command::CosignCheckpoint(body) => self.record_cosignature(body, signer, at_ms),
            Command::CommitSubjectKeySecret { commitment } => self.commit_subject_key_secret(commitment),
            Command::ConfirmDeletion(receipt) => self.confirm_deletion(receipt, signer, at_ms),
            Command::FileSubjectRequest(spec) => self.file_subject_request(spec, org, at_ms),
            Command::AnswerSubjectRequest { id, outcome } => {
                self.answer_subject_request(&id, &outcome, at_ms)
            }
            // Never reached: `validate` refuses a wrapper inside a wrapper.
            Command::ByOperator { .. } => Applied::Done,
        }
    }
}

/// The label that starts every step of [`PolicyState::digest`].
pub const APPLIED_DIGEST_LABEL: &[u8] = b"civmesh/applied-digest/v1\0";

/// The digest after `envelope` was applied at `entry_time_ms` with
/// `outcome`: SHA-256(label, previous digest, entry time as u64 LE,
/// SHA-256 of the envelope, canonical encoding of the outcome: what was
/// applied, or the rejection's code, not its wording). Each audit leaf
/// covers the digest before it, so a checkpoint binds every command before
/// its last leaf: its bytes, order, entry time and outcome.
pub fn applied_digest(
    previous: &[u8; 32],
    entry_time_ms: UnixMillis,
    envelope: &SignedCommand,
    outcome: &Result<Applied, Rejection>,
) -> [u8; 32] {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(APPLIED_DIGEST_LABEL);
    hasher.update(previous);
    hasher.update(entry_time_ms.to_le_bytes());
    hasher.update(envelope.digest());
    // Encoding plain data cannot fail; an empty encoding still moves the
    // digest on, and a replica that differs differs loudly elsewhere.
    hasher.update(codec::encode(&outcome.as_ref().map_err(|rejection| rejection.code)).unwrap_or_default());
    hasher.finalize().into()
}

/// The log entry a validated command arrived in.
struct Entry {
    signer: NodeId,
    signer_org: OrgId,
    at_ms: UnixMillis,
}
