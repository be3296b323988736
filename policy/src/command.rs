//! The commands the policy log carries. Each travels as the payload of a
//! [`civmesh_certs::SignedEnvelope`], and the state machine checks who signed
//! it when it applies it.

use std::collections::{BTreeMap, BTreeSet};

use civmesh_certs::{NodeId, OrgId, SignedEnvelope, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::model::{
    DatasetId, DemandId, FieldName, FieldSpec, GrantId, LegalBasis, MaskingRule, Purpose, ScopeCondition,
    SharingCategory, SubjectKeyHash,
};

/// A command as it sits in the log: signed by the node that issued it.
pub type SignedCommand = SignedEnvelope<Command>;

/// Everything that changes the policy state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The first entry of every log: the federation's CA and founding
    /// members. Signed by the CA key itself.
    Genesis {
        /// The federation's name.
        federation_name: String,
        /// The CA certificate (DER).
        ca_certificate_der: Vec<u8>,
        /// The founding members' certificates (DER).
        founding_member_certificates_der: Vec<Vec<u8>>,
    },
    /// Admit a node with a CA-issued certificate. Signed by the CA or a hub.
    AdmitMember {
        /// The node's certificate (DER).
        certificate_der: Vec<u8>,
    },
    /// Revoke a member. Signed by the CA or a hub.
    RevokeMember {
        /// The member.
        node_id: NodeId,
        /// Why.
        reason: String,
    },
    /// Publish (or republish) a dataset. Signed by a member of its owner.
    PublishDataset(DatasetSpec),
    /// Put a dataset or one field of it on the negative list. Owner only.
    AddNegativeListEntry {
        /// The dataset.
        dataset: DatasetId,
        /// The field, or `None` for the whole dataset.
        field: Option<FieldName>,
        /// Why it is never shared.
        reason: String,
    },
    /// Take an entry off the negative list. Owner only.
    RemoveNegativeListEntry {
        /// The dataset.
        dataset: DatasetId,
        /// The field, or `None` for the whole dataset.
        field: Option<FieldName>,
    },
    /// File a demand for the signer's own organisation.
    FileDemand {
        /// The dataset needed.
        dataset: DatasetId,
        /// The fields needed.
        fields: BTreeSet<FieldName>,
        /// For what.
        purpose: Purpose,
        /// Under which legal basis.
        legal_basis: LegalBasis,
    },
    /// Issue a grant. Signed by a member of the dataset's owner.
    IssueGrant(GrantSpec),
    /// Revoke a grant. Owner only.
    RevokeGrant {
        /// The grant.
        grant_id: GrantId,
        /// Why.
        reason: String,
    },
    /// Log an access (a query answered, permit or deny). Signed by the owner
    /// node; carries the requester's signed query header.
    RecordAccess(crate::access::AccessRecord),
    /// Log a push to a subscriber: records released because they changed,
    /// under the subscriber's signed subscription (a query header naming no
    /// subjects: every subject in the grant's scope). Signed by the owner.
    RecordPush(crate::access::AccessRecord),
    /// Record a subject's consent, or its withdrawal. Signed by a member of
    /// the dataset's owner, which takes it on the subject's behalf (the
    /// grantee, whose access it allows, may not).
    RecordConsent {
        /// The subject (keyed hash).
        subject: SubjectKeyHash,
        /// The dataset.
        dataset: DatasetId,
        /// The organisation allowed to read.
        grantee: OrgId,
        /// For what.
        purpose: Purpose,
        /// Given (true) or withdrawn (false).
        given: bool,
        /// Includes the separate consent for sensitive fields (Art. 29).
        covers_sensitive: bool,
        /// How the owner took it, e.g. `street_window`, `online_form`
        /// (1..=`NAME_BYTES_MAX` bytes).
        channel: String,
    },
    /// Log one stage of a correction (metadata and the payload hash only).
    /// `Submitted` and `OutcomeDelivered` are signed by the submitter; the
    /// other stages by a member of the dataset's owner.
    RecordCorrectionEvent(crate::correction::CorrectionEvent),
    /// Declare (or replace) an auto-accept rule. Owner only.
    SetAutoAcceptRule(crate::correction::AutoAcceptRule),
    /// A checkpoint signer's cosignature of the access log's Merkle tree at
    /// a size: the envelope's signature is the cosignature. The first opens
    /// a checkpoint; it is final once a majority of signers cosigned it.
    CosignCheckpoint(crate::audit::CheckpointBody),
    /// Withdraw an auto-accept rule. Owner only.
    RemoveAutoAcceptRule {
        /// The dataset.
        dataset: DatasetId,
        /// The submitting organisation.
        submitter: OrgId,
    },
    /// The commitment to the federation's subject-key secret
    /// ([`crate::model::subject_key_commitment`]), so an auditor can tell a
    /// wrong secret from a subject nobody looked at. Signed by the CA, once,
    /// right after genesis. A command of its own rather than a genesis
    /// field, so genesis keeps its encoding.
    CommitSubjectKeySecret {
        /// HMAC-SHA256 of the commitment label under the secret.
        commitment: [u8; 32],
    },
    /// File a demand for the signer's own organisation, with the reason and
    /// the date until which the data is needed. A variant of its own rather
    /// than fields of [`Command::FileDemand`], so that one keeps its encoding.
    FileDemandWithReason(DemandSpec),
    /// Refuse a demand that no grant answers yet, with a reason for the
    /// requester. Signed by a member of the dataset's owner.
    RefuseDemand {
        /// The demand.
        demand_id: DemandId,
        /// Why.
        reason: String,
    },
    /// Log one page of a listing: records released under the requester's
    /// signed listing request (a query header naming no subjects, with a
    /// fresh nonce per page), every subject released named in the outcome.
    /// Signed by the owner node that answered.
    RecordListing(crate::access::AccessRecord),
    /// A command an operator made through the console. The signer's
    /// authority decides, as for the inner command alone; the operator's
    /// name is kept in the log for the auditor. Only the commands
    /// [`Command::operator_may_make`] allows may be wrapped, and only once.
    ByOperator {
        /// The signed-in operator's name (1..=[`OPERATOR_NAME_BYTES_MAX`] bytes).
        operator: String,
        /// What they did.
        #[serde(deserialize_with = "wrapped_command")]
        command: Box<Command>,
    },
    /// A holder node's receipt for copies it deleted, physically, because
    /// their retention ended, their grant ended, or a consent they relied
    /// on was withdrawn. Metadata only. Signed by the holder node.
    ConfirmDeletion(crate::deletion::DeletionReceipt),
    /// A subject's request (access, correction, deletion), taken by the
    /// intake node (which signs it) and logged by the dataset's owner once
    /// it found the record. Metadata only.
    FileSubjectRequest(crate::subject_request::SubjectRequestSpec),
    /// The owner's answer to an open subject request. Signed by a member
    /// of the dataset's owner.
    AnswerSubjectRequest {
        /// The request.
        #[serde(with = "crate::hex_digest")]
        id: crate::subject_request::SubjectRequestId,
        /// Done, or refused with why.
        outcome: crate::subject_request::SubjectRequestOutcome,
    },
}

/// The longest operator name a [`Command::ByOperator`] carries, in bytes.
pub const OPERATOR_NAME_BYTES_MAX: usize = 128;

/// Whether `name` may name an operator in the log: text that is not only
/// white space, at most [`OPERATOR_NAME_BYTES_MAX`] bytes, without control
/// characters. The console holds its accounts' names to the same rule.
pub fn operator_name_valid(name: &str) -> bool {
    !name.trim().is_empty() && name.len() <= OPERATOR_NAME_BYTES_MAX && !name.chars().any(char::is_control)
}

/// The most [`Command::ByOperator`] wrappers a command decodes with, one
/// inside the other. A wrapper in a wrapper decodes (apply refuses it,
/// `NotAuthorised`); a third level does not decode, so no input, however
/// long, makes decoding (or dropping) recurse deep enough to overflow the
/// stack.
pub const OPERATOR_WRAPPERS_MAX: usize = 2;

thread_local! {
    /// How many wrappers' commands the decoder on this thread is inside.
    static WRAPPERS_OPEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Decodes a [`Command::ByOperator`]'s command, at most
/// [`OPERATOR_WRAPPERS_MAX`] wrappers deep.
fn wrapped_command<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Box<Command>, D::Error> {
    /// Leaves one wrapper when its command is decoded, or fails to.
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            WRAPPERS_OPEN.with(|open| open.set(open.get().saturating_sub(1)));
        }
    }
    let depth = WRAPPERS_OPEN.with(|open| {
        open.set(open.get() + 1);
        open.get()
    });
    let _open = Open;
    if depth > OPERATOR_WRAPPERS_MAX {
        return Err(serde::de::Error::custom(format!(
            "more than {OPERATOR_WRAPPERS_MAX} operator wrappers, one inside the other"
        )));
    }
    Box::<Command>::deserialize(deserializer)
}

/// The kind of a command: a short stable name for logs and metrics (never
/// any payload data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// [`Command::Genesis`].
    Genesis,
    /// [`Command::AdmitMember`].
    AdmitMember,
    /// [`Command::RevokeMember`].
    RevokeMember,
    /// [`Command::PublishDataset`].
    PublishDataset,
    /// [`Command::AddNegativeListEntry`].
    AddNegativeListEntry,
    /// [`Command::RemoveNegativeListEntry`].
    RemoveNegativeListEntry,
    /// [`Command::FileDemand`].
    FileDemand,
    /// [`Command::IssueGrant`].
    IssueGrant,
    /// [`Command::RevokeGrant`].
    RevokeGrant,
    /// [`Command::RecordConsent`].
    RecordConsent,
    /// [`Command::RecordAccess`].
    RecordAccess,
    /// [`Command::RecordPush`].
    RecordPush,
    /// [`Command::RecordCorrectionEvent`].
    RecordCorrectionEvent,
    /// [`Command::SetAutoAcceptRule`].
    SetAutoAcceptRule,
    /// [`Command::RemoveAutoAcceptRule`].
    RemoveAutoAcceptRule,
    /// [`Command::CosignCheckpoint`].
    CosignCheckpoint,
    /// [`Command::CommitSubjectKeySecret`].
    CommitSubjectKeySecret,
    /// [`Command::FileDemandWithReason`].
    FileDemandWithReason,
    /// [`Command::RefuseDemand`].
    RefuseDemand,
    /// [`Command::RecordListing`].
    RecordListing,
    /// [`Command::ByOperator`].
    ByOperator,
    /// [`Command::ConfirmDeletion`].
    ConfirmDeletion,
    /// [`Command::FileSubjectRequest`].
    FileSubjectRequest,
    /// [`Command::AnswerSubjectRequest`].
    AnswerSubjectRequest,
}

impl CommandKind {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Genesis => "genesis",
            CommandKind::AdmitMember => "admit_member",
            CommandKind::RevokeMember => "revoke_member",
            CommandKind::PublishDataset => "publish_dataset",
            CommandKind::AddNegativeListEntry => "add_negative_list_entry",
            CommandKind::RemoveNegativeListEntry => "remove_negative_list_entry",
            CommandKind::FileDemand => "file_demand",
            CommandKind::IssueGrant => "issue_grant",
            CommandKind::RevokeGrant => "revoke_grant",
            CommandKind::RecordConsent => "record_consent",
            CommandKind::RecordAccess => "record_access",
            CommandKind::RecordPush => "record_push",
            CommandKind::RecordCorrectionEvent => "record_correction_event",
            CommandKind::SetAutoAcceptRule => "set_auto_accept_rule",
            CommandKind::RemoveAutoAcceptRule => "remove_auto_accept_rule",
            CommandKind::CosignCheckpoint => "cosign_checkpoint",
            CommandKind::CommitSubjectKeySecret => "commit_subject_key_secret",
            CommandKind::FileDemandWithReason => "file_demand_with_reason",
            CommandKind::RefuseDemand => "refuse_demand",
            CommandKind::RecordListing => "record_listing",
            CommandKind::ByOperator => "by_operator",
            CommandKind::ConfirmDeletion => "confirm_deletion",
            CommandKind::FileSubjectRequest => "file_subject_request",
            CommandKind::AnswerSubjectRequest => "answer_subject_request",
        }
    }
}

impl std::fmt::Display for CommandKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl Command {
    /// The access record this command logs, and how it reached the
    /// requester; `None` for every other command.
    pub fn access(&self) -> Option<(&crate::access::AccessRecord, crate::access::AccessKind)> {
        use crate::access::AccessKind;
        match self {
            Command::RecordAccess(record) => Some((record, AccessKind::Query)),
            Command::RecordListing(record) => Some((record, AccessKind::Listing)),
            Command::RecordPush(record) => Some((record, AccessKind::Push)),
            _ => None,
        }
    }

    /// The command's kind, for logs and metrics.
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Genesis { .. } => CommandKind::Genesis,
            Command::AdmitMember { .. } => CommandKind::AdmitMember,
            Command::RevokeMember { .. } => CommandKind::RevokeMember,
            Command::PublishDataset(_) => CommandKind::PublishDataset,
            Command::AddNegativeListEntry { .. } => CommandKind::AddNegativeListEntry,
            Command::RemoveNegativeListEntry { .. } => CommandKind::RemoveNegativeListEntry,
            Command::FileDemand { .. } => CommandKind::FileDemand,
            Command::IssueGrant(_) => CommandKind::IssueGrant,
            Command::RevokeGrant { .. } => CommandKind::RevokeGrant,
            Command::RecordConsent { .. } => CommandKind::RecordConsent,
            Command::RecordAccess(_) => CommandKind::RecordAccess,
            Command::RecordPush(_) => CommandKind::RecordPush,
            Command::RecordCorrectionEvent(_) => CommandKind::RecordCorrectionEvent,
            Command::SetAutoAcceptRule(_) => CommandKind::SetAutoAcceptRule,
            Command::RemoveAutoAcceptRule { .. } => CommandKind::RemoveAutoAcceptRule,
            Command::CosignCheckpoint(_) => CommandKind::CosignCheckpoint,
            Command::CommitSubjectKeySecret { .. } => CommandKind::CommitSubjectKeySecret,
            Command::FileDemandWithReason(_) => CommandKind::FileDemandWithReason,
            Command::RefuseDemand { .. } => CommandKind::RefuseDemand,
            Command::RecordListing(_) => CommandKind::RecordListing,
            Command::ByOperator { .. } => CommandKind::ByOperator,
            Command::ConfirmDeletion(_) => CommandKind::ConfirmDeletion,
            Command::FileSubjectRequest(_) => CommandKind::FileSubjectRequest,
            Command::AnswerSubjectRequest { .. } => CommandKind::AnswerSubjectRequest,
        }
    }

    /// Whether an operator may make this command through the console: the
    /// decisions people take (catalog, lists, demands, grants, consents,
    /// auto-accept rules, revoking a member). Never the access log, the
    /// checkpoints, a correction event (it names its operator itself), the
    /// federation's founding, or another wrapper.
    pub fn operator_may_make(&self) -> bool {
        matches!(
            self,
            Command::PublishDataset(_)
                | Command::AddNegativeListEntry { .. }
                | Command::RemoveNegativeListEntry { .. }
                | Command::FileDemand { .. }
                | Command::FileDemandWithReason(_)
                | Command::RefuseDemand { .. }
                | Command::IssueGrant(_)
                | Command::RevokeGrant { .. }
                | Command::RecordConsent { .. }
                | Command::SetAutoAcceptRule(_)
                | Command::RemoveAutoAcceptRule { .. }
                | Command::RevokeMember { .. }
                | Command::AnswerSubjectRequest { .. }
        )
    }
}

/// A dataset as its owner publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// Its id.
    pub id: DatasetId,
    /// A human title.
    pub title: String,
    /// The field holding the subject key.
    pub subject_key_field: FieldName,
    /// Its sharing category.
    pub sharing: SharingCategory,
    /// Its fields.
    pub fields: Vec<FieldSpec>,
    /// The text fields grants may scope by and listings may filter on
    /// (indexed by the owner); none if absent from JSON.
    #[serde(default)]
    pub scope_fields: Vec<FieldName>,
}

/// A grant as its owner issues it; the log assigns the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantSpec {
    /// The dataset.
    pub dataset: DatasetId,
    /// Who may read.
    pub grantee: OrgId,
    /// Which fields.
    pub fields: BTreeSet<FieldName>,
    /// For what.
    pub purpose: Purpose,
    /// Under which legal basis.
    pub legal_basis: LegalBasis,
    /// Scope conditions on records.
    pub scope: Vec<ScopeCondition>,
    /// Start of validity.
    pub valid_from_ms: UnixMillis,
    /// End of validity.
    pub valid_until_ms: UnixMillis,
    /// Masking per field.
    pub masking: BTreeMap<FieldName, MaskingRule>,
    /// Whether each subject's consent is needed.
    pub consent_required: bool,
    /// The demand it answers, if any.
    pub demand: Option<DemandId>,
    /// How long the grantee's nodes may keep what they receive, and then
    /// have to delete it. Required when a granted field is personal
    /// (Art. 19, 47).
    pub retention: Option<crate::deletion::Retention>,
    /// The personal-information impact assessment the owner made and keeps
    /// (Art. 55-56), by digest. Required when a granted field is sensitive.
    pub assessment: Option<crate::deletion::AssessmentDigest>,
}

/// A demand as its requester files it; the log assigns the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandSpec {
    /// The dataset needed.
    pub dataset: DatasetId,
    /// The fields needed.
    pub fields: BTreeSet<FieldName>,
    /// For what.
    pub purpose: Purpose,
    /// Under which legal basis.
    pub legal_basis: LegalBasis,
    /// Why, for the owner who decides.
    pub reason: String,
    /// Until when the data is needed, if for a while only.
    pub until_ms: Option<UnixMillis>,
}
