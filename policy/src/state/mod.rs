//! The policy state and `apply`: the deterministic transition the replicated
//! state machine runs for each signed command.
//!
//! `apply` re-verifies the envelope's signature and the signer's authority
//! against the state it is applied to, so a faulty leader cannot forge a
//! grant or a consent. It validates everything before it changes anything:
//! a rejected command leaves the state exactly as it was.

use std::collections::{BTreeMap, BTreeSet};

use civmesh_certs::{
    codec, CaCertificate, NodeCertificate, NodeId, OrgId, ReplayGuard, RevocationSet, Role, UnixMillis,
};
use serde::{Deserialize, Serialize};

use crate::access::{AccessLogEntry, AccessOutcome, AccessRecord, QueryHeader, QUERY_SUBJECTS_MAX};
use crate::audit::{CheckpointBody, FinalCheckpoint, PendingCheckpoint};
use crate::command::{Command, DatasetSpec, GrantSpec, SignedCommand};
use crate::correction::{
    CorrectionEvent, CorrectionId, CorrectionStage, CorrectionTrack, CORRECTION_CHANGES_MAX,
};
use crate::model::{
    Consent, ConsentKey, Dataset, DatasetId, Demand, DemandId, FieldName, Grant, GrantId, Member,
    NegativeListEntry, Revocation, NAME_BYTES_MAX, REASON_BYTES_MAX, SCHEMA_FIELDS_MAX,
};

mod access;
mod checkpoints;
mod corrections;

pub use corrections::{CorrectionClearance, CorrectionRefusal, CorrectionRefusalCode};

/// How far a command's own timestamp may be from its entry's time, in ms.
/// Outside it the command is stale or future-dated, and is rejected.
pub const COMMAND_SKEW_MS_MAX: u64 = 5 * 60 * 1000;
/// The most command nonces the state remembers to reject replayed entries.
pub const COMMAND_NONCES_MAX: usize = 1_000_000;
/// The most command nonces the state remembers per signer: a signer over
/// it is `Overloaded` until its older commands leave the window, and no
/// other signer is affected.
pub const COMMAND_NONCES_PER_SIGNER_MAX: usize = 50_000;

/// Why a command was rejected. The code is stable; the detail is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {detail}")]
pub struct Rejection {
    /// What kind of failure.
    pub code: RejectionCode,
    /// What exactly, for an operator.
    pub detail: String,
}

/// The stable reason codes of a rejected command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    /// The envelope is malformed or its signature does not verify.
    SignatureInvalid,
    /// The command's timestamp is too far ahead of the entry time.
    FutureDated,
    /// The command's timestamp is too far behind the entry time.
    Stale,
    /// The same signed command was applied before.
    Replayed,
    /// The signer is not a member (and not the CA where the CA may sign).
    SignerUnknown,
    /// The signer was revoked.
    SignerRevoked,
    /// The signer may not issue this command.
    NotAuthorised,
    /// Genesis was sent to a log that has one, or another command to one
    /// that has none.
    GenesisOrder,
    /// A certificate failed verification.
    CertificateInvalid,
    /// The node is already a member.
    AlreadyMember,
    /// No such member.
    MemberUnknown,
    /// No such dataset.
    DatasetUnknown,
    /// A field is not in the dataset's schema.
    FieldUnknown,
    /// No such grant.
    GrantUnknown,
    /// The grant is already revoked.
    GrantAlreadyRevoked,
    /// No such demand.
    DemandUnknown,
    /// No such negative-list entry.
    NegativeListEntryUnknown,
    /// A field is on the negative list and cannot be granted.
    NegativeListed,
    /// The dataset is not shared and cannot be granted.
    DatasetNotShared,
    /// A value is malformed, empty, too long or out of range.
    InvalidArgument,
    /// The replay cache is full of commands still in the window, or the
    /// signer has used up its own share of it.
    Overloaded,
    /// A logged permit is not justified by the policy state.
    PermitNotJustified,
    /// No correction with this id was submitted.
    CorrectionUnknown,
    /// A correction with this id was submitted before.
    CorrectionDuplicate,
    /// The stage does not follow the correction's current stage (it may
    /// have been logged already).
    CorrectionStageOutOfOrder,
    /// No such auto-accept rule.
    AutoAcceptRuleUnknown,
    /// The signer already cosigned this checkpoint.
    CheckpointDuplicate,
    /// No longer produced: several checkpoints may be open at once, and
    /// each signer's latest cosignature counts for one of them. Kept so
    /// the codes stay stable.
    CheckpointConflict,
    /// The entry time is earlier than one already applied: the log's time
    /// never goes back.
    EntryTimeWentBack,
    /// The signer's (or, in a logged permit, the requester's) certificate
    /// expired at or before the entry time.
    SignerCertificateExpired,
    /// An access record's decision time is more than `COMMAND_SKEW_MS_MAX`
    /// from the entry time.
    DecisionTimeOutOfWindow,
    /// A correction's submitter holds no usable grant on the dataset that
    /// shows it every field the correction changes, unmasked.
    CorrectionNotGranted,
}

fn reject(code: RejectionCode, detail: impl Into<String>) -> Rejection {
    Rejection { code, detail: detail.into() }
}

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
/// so the canonical encoding, and so [`PolicyState::state_hash`], is the same
/// on every replica that applied the same commands.
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
    /// The access log: every query answered, permit or deny, in log order.
    pub access_log: Vec<AccessLogEntry>,
    /// The leaves of the audit tree, in log order: the SHA-256 of each
    /// access entry's and each correction outcome's signed command.
    pub audit_leaves: Vec<[u8; 32]>,
    /// Every correction's lifecycle, by correction id.
    pub corrections: BTreeMap<CorrectionId, CorrectionTrack>,
    /// Auto-accept rules by (dataset, submitting organisation): the fields
    /// that may change without review.
    pub auto_accept_rules: BTreeMap<(DatasetId, OrgId), BTreeSet<FieldName>>,
    /// The checkpoints being cosigned, in the order they were opened. Each
    /// signer's latest cosignature counts for one of them only, so there
    /// are at most as many as there are signers.
    pub pending_checkpoints: Vec<PendingCheckpoint>,
    /// Final checkpoints of the access log's Merkle tree, oldest first.
    pub checkpoints: Vec<FinalCheckpoint>,
    /// How many commands were applied (accepted or rejected).
    pub commands_applied: u64,
    /// The latest entry time applied: a command at an earlier one is
    /// rejected ([`RejectionCode::EntryTimeWentBack`]).
    pub last_entry_time_ms: UnixMillis,
    /// Nonces of recent commands, to reject replayed entries.
    pub recent_commands: ReplayGuard,
    /// The commitment to the subject-key secret, once the CA logged it.
    pub subject_key_commitment: Option<[u8; 32]>,
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
            access_log: Vec::new(),
            audit_leaves: Vec::new(),
            corrections: BTreeMap::new(),
            auto_accept_rules: BTreeMap::new(),
            pending_checkpoints: Vec::new(),
            checkpoints: Vec::new(),
            commands_applied: 0,
            last_entry_time_ms: 0,
            recent_commands: ReplayGuard::with_signer_quota(
                COMMAND_SKEW_MS_MAX,
                COMMAND_NONCES_MAX,
                COMMAND_NONCES_PER_SIGNER_MAX,
            ),
            subject_key_commitment: None,
        }
    }
}

/// Whether apply checks signatures itself.
#[derive(Clone, Copy)]
enum SignatureCheck {
    Verify,
    AlreadyVerified,
}

impl SignatureCheck {
    fn open<T: serde::de::DeserializeOwned + Serialize>(
        self,
        envelope: &civmesh_certs::SignedEnvelope<T>,
    ) -> Result<civmesh_certs::VerifiedEnvelope<T>, civmesh_certs::EnvelopeError> {
        match self {
            SignatureCheck::Verify => envelope.verify_signature(),
            SignatureCheck::AlreadyVerified => envelope.decode_already_verified(),
        }
    }
}

/// Who signed a command, as the state knows them.
enum Signer<'a> {
    Ca,
    Member(&'a Member),
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
        self.apply_with(envelope, entry_time_ms, SignatureCheck::Verify)
    }

    /// [`PolicyState::apply`] for a command whose every signature (the
    /// envelope's, and an access record's request) the caller has verified
    /// already: an auditor verifying a bundle's signatures on all cores
    /// first. Everything else is checked as in `apply`. Replicas never use it.
    pub fn apply_with_signatures_verified(
        &mut self,
        envelope: &SignedCommand,
        entry_time_ms: UnixMillis,
    ) -> Result<Applied, Rejection> {
        self.apply_with(envelope, entry_time_ms, SignatureCheck::AlreadyVerified)
    }

    fn apply_with(
        &mut self,
        envelope: &SignedCommand,
        entry_time_ms: UnixMillis,
        check: SignatureCheck,
    ) -> Result<Applied, Rejection> {
        self.commands_applied += 1;
        let before = self.commands_applied;
        let outcome = self.apply_verified(envelope, entry_time_ms, check);
        debug_assert_eq!(before, self.commands_applied);
        outcome
    }

    fn apply_verified(
        &mut self,
        envelope: &SignedCommand,
        entry_time_ms: UnixMillis,
        check: SignatureCheck,
    ) -> Result<Applied, Rejection> {
        if entry_time_ms < self.last_entry_time_ms {
            return Err(reject(
                RejectionCode::EntryTimeWentBack,
                format!("entry time {entry_time_ms} is before {}, already applied", self.last_entry_time_ms),
            ));
        }
        self.last_entry_time_ms = entry_time_ms;
        let verified = check
            .open(envelope)
            .map_err(|error| reject(RejectionCode::SignatureInvalid, error.to_string()))?;
        if verified.issued_at_ms > entry_time_ms.saturating_add(COMMAND_SKEW_MS_MAX) {
            return Err(reject(
                RejectionCode::FutureDated,
                format!("issued at {} but entry time is {entry_time_ms}", verified.issued_at_ms),
            ));
        }
        if verified.issued_at_ms < entry_time_ms.saturating_sub(COMMAND_SKEW_MS_MAX) {
            return Err(reject(
                RejectionCode::Stale,
                format!("issued at {} but entry time is {entry_time_ms}", verified.issued_at_ms),
            ));
        }
        let command = &verified.payload;
        let signer_id = verified.signer;
        // The nonce is spent before anything else is decided, so a command
        // rejected now can never be applied later. Only known signers spend
        // nonces: a fresh key could otherwise fill the window for everyone.
        let genesis = matches!(command, Command::Genesis { .. });
        if genesis || self.knows_signer(&signer_id) {
            self.check_replay(&verified.signer, &verified.nonce, verified.issued_at_ms, entry_time_ms)?;
        }
        if let Command::Genesis { federation_name, ca_certificate_der, founding_member_certificates_der } =
            command
        {
            return self.apply_genesis(
                &signer_id,
                federation_name,
                ca_certificate_der,
                founding_member_certificates_der,
                entry_time_ms,
            );
        }
        if self.federation.is_none() {
            return Err(reject(RejectionCode::GenesisOrder, "the log has no genesis yet"));
        }
        // Validate first; only the final step mutates.
        let signer_org = self.authorise(&signer_id, command, entry_time_ms)?;
        let admitted = self.validate(command, &signer_org, entry_time_ms)?;
        if let Command::CosignCheckpoint(body) = command {
            self.validate_cosignature(body, &signer_id)?;
        }
        let access = match command {
            Command::RecordAccess(record) => {
                Some((record, self.validate_access(record, false, check, entry_time_ms)?))
            }
            Command::RecordPush(record) => {
                Some((record, self.validate_access(record, true, check, entry_time_ms)?))
            }
            _ => None,
        };
        if let (Command::RecordAccess(_), Some((_, (requester, header)))) = (command, &access) {
            // The requester's query is logged once, whoever logs it. Its
            // nonce was checked in validation and is spent only now, when
            // the record is accepted: the last check before the mutation.
            self.check_replay(&requester.signer, &requester.nonce, requester.issued_at_ms, entry_time_ms)?;
            debug_assert_eq!(header, &requester.payload);
        }
        if let Some((record, (requester, header))) = access {
            self.access_log.push(AccessLogEntry {
                sequence: self.access_log.len() as u64,
                envelope: envelope.clone(),
                requester: requester.signer,
                owner: signer_id,
                header,
                outcome: record.outcome.clone(),
                decided_at_ms: record.decided_at_ms,
            });
            self.audit_leaves.push(crate::audit::leaf_of(envelope));
            return Ok(Applied::AccessLogged(self.access_log.len() as u64 - 1));
        }
        if let Command::RecordCorrectionEvent(event) = command {
            if event.stage.is_owner_outcome() {
                self.audit_leaves.push(crate::audit::leaf_of(envelope));
            }
        }
        Ok(self.mutate(command.clone(), signer_id, signer_org, admitted, entry_time_ms))
    }

    /// Records a nonce, or rejects a replay. It may expire nonces that have
    /// left the window, on every replica alike, even when it rejects.
    fn check_replay(
        &mut self,
        signer: &NodeId,
        nonce: &[u8; civmesh_certs::NONCE_BYTES],
        issued_at_ms: UnixMillis,
        entry_time_ms: UnixMillis,
    ) -> Result<(), Rejection> {
        match self.recent_commands.check_and_record(signer, nonce, issued_at_ms, entry_time_ms) {
            Ok(()) => Ok(()),
            Err(civmesh_certs::EnvelopeError::Replayed(_)) => {
                Err(reject(RejectionCode::Replayed, "this signed command was applied before"))
            }
            Err(civmesh_certs::EnvelopeError::ReplayCacheFull(count)) => {
                Err(reject(RejectionCode::Overloaded, format!("{count} commands in the replay window")))
            }
            Err(civmesh_certs::EnvelopeError::SignerQuotaFull { signer, count }) => Err(reject(
                RejectionCode::Overloaded,
                format!("{signer} has {count} commands in the replay window, its quota"),
            )),
            Err(other) => Err(reject(RejectionCode::Stale, other.to_string())),
        }
    }

    /// Whether `signer` is the CA or a member (revoked or not): a key whose
    /// nonces the replay window keeps.
    fn knows_signer(&self, signer: &NodeId) -> bool {
        self.federation.as_ref().is_some_and(|federation| federation.ca_node_id == *signer)
            || self.members.contains_key(signer)
    }

    fn signer<'a>(&'a self, signer: &NodeId, at_ms: UnixMillis) -> Result<Signer<'a>, Rejection> {
        if self.federation.as_ref().is_some_and(|federation| federation.ca_node_id == *signer) {
            return Ok(Signer::Ca);
        }
        let member = self
            .members
            .get(signer)
            .ok_or_else(|| reject(RejectionCode::SignerUnknown, format!("{signer} is not a member")))?;
        if member.revoked.is_some() {
            return Err(reject(RejectionCode::SignerRevoked, format!("{signer} was revoked")));
        }
        check_certificate_current(member, at_ms)?;
        Ok(Signer::Member(member))
    }

    /// Checks the signer may issue `command`; returns the signer's
    /// organisation ([`OrgId::federation_ca`] for the CA, which signs only
    /// membership commands).
    fn authorise(
        &self,
        signer_id: &NodeId,
        command: &Command,
        at_ms: UnixMillis,
    ) -> Result<OrgId, Rejection> {
        let signer = self.signer(signer_id, at_ms)?;
        let membership_command =
            matches!(command, Command::AdmitMember { .. } | Command::RevokeMember { .. });
        let ca_command = membership_command || matches!(command, Command::CommitSubjectKeySecret { .. });
        let member = match signer {
            Signer::Ca if ca_command => return Ok(OrgId::federation_ca()),
            Signer::Ca => {
                return Err(reject(RejectionCode::NotAuthorised, "the CA signs membership commands only"))
            }
            Signer::Member(member) => member,
        };
        if membership_command && member.role != Role::Hub {
            return Err(reject(
                RejectionCode::NotAuthorised,
                "only the CA or a hub admits and revokes members",
            ));
        }
        let owner_of = |dataset: &DatasetId| -> Result<(), Rejection> {
            let owner = &self
                .datasets
                .get(dataset)
                .ok_or_else(|| reject(RejectionCode::DatasetUnknown, format!("no dataset {dataset}")))?
                .owner;
            if *owner != member.org {
                return Err(reject(
                    RejectionCode::NotAuthorised,
                    format!("{} does not own {dataset} (owner: {owner})", member.org),
                ));
            }
            Ok(())
        };
        match command {
            Command::PublishDataset(spec) => {
                if let Some(existing) = self.datasets.get(&spec.id) {
                    if existing.owner != member.org {
                        return Err(reject(
                            RejectionCode::NotAuthorised,
                            format!("{} is owned by {}", spec.id, existing.owner),
                        ));
                    }
                }
            }
            Command::AddNegativeListEntry { dataset, .. }
            | Command::RemoveNegativeListEntry { dataset, .. } => owner_of(dataset)?,
            Command::IssueGrant(spec) => owner_of(&spec.dataset)?,
            Command::RevokeGrant { grant_id, .. } => {
                let grant = self
                    .grants
                    .get(grant_id)
                    .ok_or_else(|| reject(RejectionCode::GrantUnknown, format!("no grant {grant_id}")))?;
                owner_of(&grant.dataset)?
            }
            // The owner takes a consent on the subject's behalf; a grantee
            // would be vouching for its own access.
            Command::RecordConsent { dataset, .. } => owner_of(dataset)?,
            Command::RecordAccess(record) | Command::RecordPush(record) => {
                // Authority is decided before the requester's signature is
                // checked (in validation, which follows and rejects a forgery).
                let header = record.request.unverified_payload().map_err(|error| {
                    reject(RejectionCode::SignatureInvalid, format!("the requester's query: {error}"))
                })?;
                owner_of(&header.dataset)?
            }
            Command::CosignCheckpoint(_) => {
                if !crate::audit::signs_checkpoints(member) {
                    return Err(reject(
                        RejectionCode::NotAuthorised,
                        "only hub and department members cosign checkpoints",
                    ));
                }
            }
            Command::SetAutoAcceptRule(rule) => owner_of(&rule.dataset)?,
            Command::RemoveAutoAcceptRule { dataset, .. } => owner_of(dataset)?,
            // The owner's stages are logged by the organisation that owned
            // the dataset when the correction was submitted, whoever owns
            // the dataset the event names.
            Command::RecordCorrectionEvent(event) if event.stage.logged_by_owner() => {
                match self.corrections.get(&event.correction) {
                    Some(track) if track.owner != member.org => {
                        return Err(reject(
                            RejectionCode::NotAuthorised,
                            format!(
                                "{} did not own {} when the correction was submitted",
                                member.org, track.dataset
                            ),
                        ))
                    }
                    Some(_) => {}
                    None => owner_of(&event.dataset)?,
                }
            }
            Command::RecordCorrectionEvent(event) => {
                if event.submitter != *signer_id {
                    return Err(reject(
                        RejectionCode::NotAuthorised,
                        "the submitter logs its own corrections' submission and outcome receipt",
                    ));
                }
            }
            Command::FileDemand { .. } | Command::AdmitMember { .. } | Command::RevokeMember { .. } => {}
            Command::CommitSubjectKeySecret { .. } => {
                return Err(reject(
                    RejectionCode::NotAuthorised,
                    "only the CA commits the subject-key secret",
                ))
            }
            Command::Genesis { .. } => {
                return Err(reject(RejectionCode::GenesisOrder, "genesis is only the first entry"))
            }
        }
        Ok(member.org.clone())
    }

    /// Checks the command against the state. For an admission, returns the
    /// member the verified certificate makes.
    fn validate(
        &self,
        command: &Command,
        signer_org: &OrgId,
        entry_time_ms: UnixMillis,
    ) -> Result<Option<Member>, Rejection> {
        if let Command::AdmitMember { certificate_der } = command {
            let member = self.verify_certificate(certificate_der, entry_time_ms)?;
            if self.members.contains_key(&member.node_id) {
                return Err(reject(
                    RejectionCode::AlreadyMember,
                    format!("{} is already a member", member.node_id),
                ));
            }
            return Ok(Some(member));
        }
        self.validate_other(command, signer_org, entry_time_ms).map(|()| None)
    }

    fn validate_other(
        &self,
        command: &Command,
        signer_org: &OrgId,
        entry_time_ms: UnixMillis,
    ) -> Result<(), Rejection> {
        match command {
            Command::Genesis { .. } => {
                Err(reject(RejectionCode::GenesisOrder, "genesis is only the first entry"))
            }
            Command::AdmitMember { .. } => Ok(()),
            Command::RevokeMember { node_id, reason } => {
                check_text("reason", reason, REASON_BYTES_MAX)?;
                match self.members.get(node_id) {
                    None => Err(reject(RejectionCode::MemberUnknown, format!("{node_id} is not a member"))),
                    Some(member) if member.revoked.is_some() => {
                        Err(reject(RejectionCode::MemberUnknown, format!("{node_id} is already revoked")))
                    }
                    Some(_) => Ok(()),
                }
            }
            Command::PublishDataset(spec) => validate_dataset(spec),
            Command::AddNegativeListEntry { dataset, field, reason } => {
                check_text("reason", reason, REASON_BYTES_MAX)?;
                self.check_fields(dataset, field.iter())
            }
            Command::RemoveNegativeListEntry { dataset, field } => {
                if self.negative_list.contains_key(&(dataset.clone(), field.clone())) {
                    Ok(())
                } else {
                    Err(reject(
                        RejectionCode::NegativeListEntryUnknown,
                        format!("{dataset} {field:?} is not negative-listed"),
                    ))
                }
            }
            Command::FileDemand { dataset, fields, purpose, .. } => {
                check_text("dataset", dataset, NAME_BYTES_MAX)?;
                check_text("purpose", purpose, NAME_BYTES_MAX)?;
                if fields.is_empty() {
                    return Err(reject(RejectionCode::InvalidArgument, "a demand names at least one field"));
                }
                for field in fields {
                    check_text("field", field, NAME_BYTES_MAX)?;
                }
                // A demand may name a dataset nobody produces yet; if it
                // exists, its fields must be in the schema.
                if self.datasets.contains_key(dataset) {
                    self.check_fields(dataset, fields.iter())?;
                }
                Ok(())
            }
            Command::IssueGrant(spec) => self.validate_grant(spec, signer_org),
            Command::RevokeGrant { grant_id, reason } => {
                check_text("reason", reason, REASON_BYTES_MAX)?;
                match self.grants.get(grant_id) {
                    Some(grant) if grant.revoked.is_some() => Err(reject(
                        RejectionCode::GrantAlreadyRevoked,
                        format!("grant {grant_id} is already revoked"),
                    )),
                    Some(_) => Ok(()),
                    None => Err(reject(RejectionCode::GrantUnknown, format!("no grant {grant_id}"))),
                }
            }
            Command::RecordConsent { purpose, channel, .. } => {
                check_text("purpose", purpose, NAME_BYTES_MAX)?;
                check_text("channel", channel, NAME_BYTES_MAX)
            }
            // Checked, once, in `apply_verified`, which keeps the result.
            Command::RecordAccess(_) | Command::RecordPush(_) => Ok(()),
            Command::RecordCorrectionEvent(event) => {
                self.validate_correction_event(event, signer_org, entry_time_ms)
            }
            // Checked with the signer's id in `validate_cosignature`.
            Command::CosignCheckpoint(_) => Ok(()),
            Command::CommitSubjectKeySecret { .. } if self.subject_key_commitment.is_some() => {
                Err(reject(RejectionCode::InvalidArgument, "the subject-key secret is committed already"))
            }
            Command::CommitSubjectKeySecret { .. } => Ok(()),
            Command::SetAutoAcceptRule(rule) => {
                if rule.fields.is_empty() {
                    return Err(reject(RejectionCode::InvalidArgument, "a rule names at least one field"));
                }
                self.check_fields(&rule.dataset, rule.fields.iter())?;
                if *signer_org == rule.submitter {
                    return Err(reject(RejectionCode::InvalidArgument, "an owner does not correct itself"));
                }
                Ok(())
            }
            Command::RemoveAutoAcceptRule { dataset, submitter } => {
                if self.auto_accept_rules.contains_key(&(dataset.clone(), submitter.clone())) {
                    Ok(())
                } else {
                    Err(reject(
                        RejectionCode::AutoAcceptRuleUnknown,
                        format!("no auto-accept rule for {submitter} on {dataset}"),
                    ))
                }
            }
        }
    }

    fn check_fields<'a>(
        &self,
        dataset: &DatasetId,
        fields: impl Iterator<Item = &'a FieldName>,
    ) -> Result<(), Rejection> {
        let schema = self
            .datasets
            .get(dataset)
            .ok_or_else(|| reject(RejectionCode::DatasetUnknown, format!("no dataset {dataset}")))?;
        for field in fields {
            if schema.field(field).is_none() {
                return Err(reject(RejectionCode::FieldUnknown, format!("{dataset} has no field {field:?}")));
            }
        }
        Ok(())
    }

    fn validate_grant(&self, spec: &GrantSpec, signer_org: &OrgId) -> Result<(), Rejection> {
        check_text("purpose", &spec.purpose, NAME_BYTES_MAX)?;
        if spec.fields.is_empty() {
            return Err(reject(RejectionCode::InvalidArgument, "a grant names at least one field"));
        }
        if spec.valid_until_ms <= spec.valid_from_ms {
            return Err(reject(RejectionCode::InvalidArgument, "valid_until must be after valid_from"));
        }
        if *signer_org == spec.grantee {
            return Err(reject(
                RejectionCode::InvalidArgument,
                "an owner does not grant its own data to itself",
            ));
        }
        self.check_fields(&spec.dataset, spec.fields.iter())?;
        self.check_fields(&spec.dataset, spec.masking.keys())?;
        self.check_fields(&spec.dataset, spec.scope.iter().map(|condition| &condition.field))?;
        if let Some(unreleased) = spec.masking.keys().find(|field| !spec.fields.contains(*field)) {
            return Err(reject(
                RejectionCode::InvalidArgument,
                format!("masking names {unreleased:?}, which is not granted"),
            ));
        }
        let dataset = &self.datasets[&spec.dataset];
        if dataset.sharing == crate::model::SharingCategory::NotShared {
            return Err(reject(RejectionCode::DatasetNotShared, format!("{} is not shared", spec.dataset)));
        }
        if self.negative_list.contains_key(&(spec.dataset.clone(), None)) {
            return Err(reject(
                RejectionCode::NegativeListed,
                format!("{} is on the negative list", spec.dataset),
            ));
        }
        if let Some(field) = spec
            .fields
            .iter()
            .find(|field| self.negative_list.contains_key(&(spec.dataset.clone(), Some((*field).clone()))))
        {
            return Err(reject(RejectionCode::NegativeListed, format!("{field:?} is on the negative list")));
        }
        if let Some(demand) = spec.demand {
            if !self.demands.contains_key(&demand) {
                return Err(reject(RejectionCode::DemandUnknown, format!("no demand {demand}")));
            }
        }
        if !self.members.values().any(|member| member.org == spec.grantee && member.revoked.is_none()) {
            return Err(reject(
                RejectionCode::MemberUnknown,
                format!("{} has no active member node", spec.grantee),
            ));
        }
        Ok(())
    }

    fn verify_certificate(
        &self,
        certificate_der: &[u8],
        entry_time_ms: UnixMillis,
    ) -> Result<Member, Rejection> {
        let federation = self
            .federation
            .as_ref()
            .ok_or_else(|| reject(RejectionCode::GenesisOrder, "the log has no genesis yet"))?;
        let ca = CaCertificate::from_der(&federation.ca_certificate_der)
            .map_err(|error| reject(RejectionCode::CertificateInvalid, error.to_string()))?;
        member_from_certificate(&ca, certificate_der, entry_time_ms, &self.revocation_set())
    }

    /// The revoked nodes and certificates, for certificate checks.
    pub fn revocation_set(&self) -> RevocationSet {
        let mut revoked = RevocationSet::default();
        for member in self.members.values().filter(|member| member.revoked.is_some()) {
            revoked.nodes.insert(member.node_id);
            revoked.serials.insert(member.certificate_serial.clone());
        }
        revoked
    }

    fn apply_genesis(
        &mut self,
        signer: &NodeId,
        federation_name: &str,
        ca_certificate_der: &[u8],
        founding: &[Vec<u8>],
        entry_time_ms: UnixMillis,
    ) -> Result<Applied, Rejection> {
        if self.federation.is_some() {
            return Err(reject(RejectionCode::GenesisOrder, "the log already has a genesis"));
        }
        check_text("federation name", federation_name, NAME_BYTES_MAX)?;
        let ca = CaCertificate::from_der(ca_certificate_der)
            .map_err(|error| reject(RejectionCode::CertificateInvalid, error.to_string()))?;
        if NodeId(ca.public_key()) != *signer {
            return Err(reject(RejectionCode::NotAuthorised, "genesis must be signed by the CA key"));
        }
        let mut members = BTreeMap::new();
        for certificate_der in founding {
            let member =
                member_from_certificate(&ca, certificate_der, entry_time_ms, &RevocationSet::default())?;
            members.insert(member.node_id, member);
        }
        if !members.values().any(|member| member.role == Role::Hub) {
            return Err(reject(RejectionCode::InvalidArgument, "the founding members must include a hub"));
        }
        self.federation = Some(Federation {
            name: federation_name.to_string(),
            ca_certificate_der: ca_certificate_der.to_vec(),
            ca_node_id: *signer,
        });
        self.members = members;
        Ok(Applied::Done)
    }

    fn mutate(
        &mut self,
        command: Command,
        signer: NodeId,
        signer_org: OrgId,
        admitted: Option<Member>,
        at_ms: UnixMillis,
    ) -> Applied {
        let org = || signer_org.clone();
        match command {
            Command::Genesis { .. } => Applied::Done,
            Command::AdmitMember { .. } => {
                if let Some(member) = admitted {
                    self.members.insert(member.node_id, member);
                }
                Applied::Done
            }
            Command::RevokeMember { node_id, reason } => {
                if let Some(member) = self.members.get_mut(&node_id) {
                    member.revoked = Some(Revocation { at_ms, by: signer, reason });
                }
                Applied::Done
            }
            Command::PublishDataset(spec) => {
                let version = self.datasets.get(&spec.id).map_or(1, |existing| existing.version + 1);
                let dataset = Dataset {
                    id: spec.id.clone(),
                    owner: org(),
                    title: spec.title,
                    subject_key_field: spec.subject_key_field,
                    sharing: spec.sharing,
                    fields: spec.fields,
                    version,
                };
                self.datasets.insert(spec.id, dataset);
                Applied::Done
            }
            Command::AddNegativeListEntry { dataset, field, reason } => {
                self.negative_list
                    .insert((dataset.clone(), field.clone()), NegativeListEntry { dataset, field, reason });
                Applied::Done
            }
            Command::RemoveNegativeListEntry { dataset, field } => {
                self.negative_list.remove(&(dataset, field));
                Applied::Done
            }
            Command::FileDemand { dataset, fields, purpose, legal_basis } => {
                let id = self.next_demand_id;
                self.next_demand_id += 1;
                self.demands.insert(
                    id,
                    Demand {
                        id,
                        requester: org(),
                        dataset,
                        fields,
                        purpose,
                        legal_basis,
                        filed_at_ms: at_ms,
                    },
                );
                Applied::DemandFiled(id)
            }
            Command::IssueGrant(spec) => {
                let id = self.next_grant_id;
                self.next_grant_id += 1;
                let grant = Grant {
                    id,
                    dataset: spec.dataset,
                    grantor: org(),
                    grantee: spec.grantee,
                    fields: spec.fields,
                    purpose: spec.purpose,
                    legal_basis: spec.legal_basis,
                    scope: spec.scope,
                    valid_from_ms: spec.valid_from_ms,
                    valid_until_ms: spec.valid_until_ms,
                    masking: spec.masking,
                    consent_required: spec.consent_required,
                    demand: spec.demand,
                    issued_at_ms: at_ms,
                    revoked: None,
                };
                self.grants.insert(id, grant);
                Applied::GrantIssued(id)
            }
            Command::RevokeGrant { grant_id, reason } => {
                if let Some(grant) = self.grants.get_mut(&grant_id) {
                    grant.revoked = Some(Revocation { at_ms, by: signer, reason });
                }
                Applied::Done
            }
            Command::RecordAccess(_) | Command::RecordPush(_) => Applied::Done,
            Command::RecordCorrectionEvent(event) => {
                self.record_correction_event(event, signer_org, at_ms);
                Applied::Done
            }
            Command::SetAutoAcceptRule(rule) => {
                self.auto_accept_rules.insert((rule.dataset, rule.submitter), rule.fields);
                Applied::Done
            }
            Command::CosignCheckpoint(body) => {
                self.record_cosignature(body, signer, at_ms);
                Applied::Done
            }
            Command::RemoveAutoAcceptRule { dataset, submitter } => {
                self.auto_accept_rules.remove(&(dataset, submitter));
                Applied::Done
            }
            Command::CommitSubjectKeySecret { commitment } => {
                self.subject_key_commitment = Some(commitment);
                Applied::Done
            }
            Command::RecordConsent {
                subject,
                dataset,
                grantee,
                purpose,
                given,
                covers_sensitive,
                channel,
            } => {
                self.consents.insert(
                    ConsentKey { subject, dataset, grantee, purpose },
                    Consent { given, covers_sensitive, recorded_by: org(), recorded_at_ms: at_ms, channel },
                );
                Applied::Done
            }
        }
    }

    /// SHA-256 of the canonical encoding: equal on replicas in equal state.
    pub fn state_hash(&self) -> [u8; 32] {
        match codec::encode(self) {
            Ok(bytes) => codec::sha256(&bytes),
            // Encoding a state of plain data cannot fail; a zero hash would
            // make any comparison fail loudly rather than pass.
            Err(_) => [0u8; 32],
        }
    }

    /// The active member with this node id, if any.
    pub fn active_member(&self, node_id: &NodeId) -> Option<&Member> {
        self.members.get(node_id).filter(|member| member.revoked.is_none())
    }
}

/// Rejects a member whose certificate expired at or before `at_ms`.
fn check_certificate_current(member: &Member, at_ms: UnixMillis) -> Result<(), Rejection> {
    if member.certificate_not_after_ms <= at_ms {
        return Err(reject(
            RejectionCode::SignerCertificateExpired,
            format!("the certificate of {} expired at {}", member.node_id, member.certificate_not_after_ms),
        ));
    }
    Ok(())
}

fn member_from_certificate(
    ca: &CaCertificate,
    certificate_der: &[u8],
    entry_time_ms: UnixMillis,
    revoked: &RevocationSet,
) -> Result<Member, Rejection> {
    let certificate = NodeCertificate::from_der(certificate_der)
        .map_err(|error| reject(RejectionCode::CertificateInvalid, error.to_string()))?;
    let identity = certificate
        .verify(ca, entry_time_ms, revoked)
        .map_err(|error| reject(RejectionCode::CertificateInvalid, error.to_string()))?;
    Ok(Member {
        node_id: identity.node_id,
        org: identity.org,
        role: identity.role,
        certificate_der: certificate_der.to_vec(),
        certificate_serial: certificate.serial().to_vec(),
        certificate_not_after_ms: identity.not_after_ms,
        admitted_at_ms: entry_time_ms,
        revoked: None,
    })
}

fn check_text(what: &str, text: &str, bytes_max: usize) -> Result<(), Rejection> {
    if text.trim().is_empty() {
        return Err(reject(RejectionCode::InvalidArgument, format!("{what} is empty")));
    }
    if text.len() > bytes_max {
        return Err(reject(
            RejectionCode::InvalidArgument,
            format!("{what} is {} bytes, over {bytes_max}", text.len()),
        ));
    }
    Ok(())
}

fn validate_dataset(spec: &DatasetSpec) -> Result<(), Rejection> {
    check_text("dataset id", &spec.id, NAME_BYTES_MAX)?;
    check_text("title", &spec.title, REASON_BYTES_MAX)?;
    if spec.fields.is_empty() || spec.fields.len() > SCHEMA_FIELDS_MAX {
        return Err(reject(
            RejectionCode::InvalidArgument,
            format!("a schema has 1..={SCHEMA_FIELDS_MAX} fields"),
        ));
    }
    let mut names = BTreeSet::new();
    for field in &spec.fields {
        check_text("field name", &field.name, NAME_BYTES_MAX)?;
        if !names.insert(field.name.as_str()) {
            return Err(reject(
                RejectionCode::InvalidArgument,
                format!("field {:?} appears twice", field.name),
            ));
        }
    }
    if !names.contains(spec.subject_key_field.as_str()) {
        return Err(reject(
            RejectionCode::FieldUnknown,
            format!("subject key field {:?} is not in the schema", spec.subject_key_field),
        ));
    }
    Ok(())
}
