//! Who may sign what: the signer's standing, then its authority for the
//! command, one line per command. Each domain keeps its own rule.

use civmesh_certs::{NodeId, OrgId, Role, UnixMillis};

use super::membership::check_certificate_current;
use super::rejection::{reject, Rejection, RejectionCode};
use super::PolicyState;
use crate::command::{operator_name_valid, Command, OPERATOR_NAME_BYTES_MAX};
use crate::model::Member;

/// Who signed a command, as the state knows them.
enum Signer<'a> {
    Ca,
    Member(&'a Member),
}

/// The rejection of a genesis anywhere but first.
pub(super) fn genesis_not_first() -> Rejection {
    reject(RejectionCode::GenesisOrder, "genesis is only the first entry")
}

impl PolicyState {
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
    pub(super) fn authorise(
        &self,
        signer_id: &NodeId,
        command: &Command,
        at_ms: UnixMillis,
    ) -> Result<OrgId, Rejection> {
        let membership_command =
            matches!(command, Command::AdmitMember { .. } | Command::RevokeMember { .. });
        let ca_command = membership_command || matches!(command, Command::CommitSubjectKeySecret { .. });
        let member = match self.signer(signer_id, at_ms)? {
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
        self.authorise_member(member, signer_id, command)?;
        Ok(member.org.clone())
    }

    /// A member's authority for `command`, by the rule of its domain.
    fn authorise_member(
        &self,
        member: &Member,
        signer_id: &NodeId,
        command: &Command,
    ) -> Result<(), Rejection> {
        let org = &member.org;
        match command {
            Command::PublishDataset(spec) => self.check_publisher(org, &spec.id),
            Command::AddNegativeListEntry { dataset, .. }
            | Command::RemoveNegativeListEntry { dataset, .. } => self.check_owner(org, dataset),
            Command::IssueGrant(spec) => self.check_owner(org, &spec.dataset),
            Command::RevokeGrant { grant_id, .. } => self.check_grant_owner(org, *grant_id),
            // The owner takes a consent on the subject's behalf; a grantee
            // would be vouching for its own access.
            Command::RecordConsent { dataset, .. } => self.check_owner(org, dataset),
            Command::RecordAccess(record) | Command::RecordListing(record) | Command::RecordPush(record) => {
                self.check_access_owner(org, record)
            }
            Command::CosignCheckpoint(_) => super::checkpoints::check_cosigner(member),
            Command::SetAutoAcceptRule(rule) => self.check_owner(org, &rule.dataset),
            Command::RemoveAutoAcceptRule { dataset, .. } => self.check_owner(org, dataset),
            Command::RecordCorrectionEvent(event) => self.check_correction_logger(org, signer_id, event),
            Command::RefuseDemand { demand_id, .. } => self.check_demand_owner(org, *demand_id),
            Command::AnswerSubjectRequest { id, .. } => self.check_subject_request_owner(org, id),
            // Only a node released records under the grant may confirm
            // deleting them: checked with the holdings in `validate`.
            // Any member may take a subject's request; the owner logs it.
            Command::ConfirmDeletion(_)
            | Command::FileSubjectRequest(_)
            | Command::FileDemand { .. }
            | Command::FileDemandWithReason(_)
            | Command::AdmitMember { .. }
            | Command::RevokeMember { .. } => Ok(()),
            Command::CommitSubjectKeySecret { .. } => {
                Err(reject(RejectionCode::NotAuthorised, "only the CA commits the subject-key secret"))
            }
            Command::Genesis { .. } => Err(genesis_not_first()),
            // Unwrapped before (`decided`); a wrapper inside one is refused there.
            Command::ByOperator { .. } => {
                Err(reject(RejectionCode::NotAuthorised, "a wrapped command cannot be wrapped again"))
            }
        }
    }
}

/// The command to decide: the wrapped one of a [`Command::ByOperator`]
/// (checked: a command an operator may make, a well-formed name), else
/// `command` itself.
pub(super) fn decided(command: &Command) -> Result<&Command, Rejection> {
    let Command::ByOperator { operator, command } = command else {
        return Ok(command);
    };
    if !operator_name_valid(operator) {
        return Err(reject(
            RejectionCode::InvalidArgument,
            format!("the operator's name must be 1..={OPERATOR_NAME_BYTES_MAX} bytes of text"),
        ));
    }
    if !command.operator_may_make() {
        return Err(reject(
            RejectionCode::NotAuthorised,
            format!("an operator may not make a {} command", command.kind()),
        ));
    }
    Ok(command)
}
