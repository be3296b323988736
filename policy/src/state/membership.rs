//! Membership: genesis, admitting and revoking members, their
//! certificates, and the CA's commitment to the subject-key secret.

use std::collections::BTreeMap;

use civmesh_certs::{CaCertificate, NodeCertificate, NodeId, RevocationSet, Role, UnixMillis};

use super::rejection::{check_text, reject, Rejection, RejectionCode};
use super::{Applied, Federation, PolicyState};
use crate::model::{Member, Revocation, NAME_BYTES_MAX, REASON_BYTES_MAX};

/// What genesis carries.
pub(super) struct Genesis<'a> {
    pub federation_name: &'a str,
    pub ca_certificate_der: &'a [u8],
    pub founding: &'a [Vec<u8>],
}

impl PolicyState {
    /// Applies genesis, the first entry: the CA signs it, and the founding
    /// members include a hub.
    pub(super) fn apply_genesis(
        &mut self,
        signer: &NodeId,
        genesis: Genesis<'_>,
        entry_time_ms: UnixMillis,
    ) -> Result<Applied, Rejection> {
        if self.federation.is_some() {
            return Err(reject(RejectionCode::GenesisOrder, "the log already has a genesis"));
        }
        check_text("federation name", genesis.federation_name, NAME_BYTES_MAX)?;
        let ca = CaCertificate::from_der(genesis.ca_certificate_der)
            .map_err(|error| reject(RejectionCode::CertificateInvalid, error.to_string()))?;
        if NodeId(ca.public_key()) != *signer {
            return Err(reject(RejectionCode::NotAuthorised, "genesis must be signed by the CA key"));
        }
        let mut members = BTreeMap::new();
        for certificate_der in genesis.founding {
            let member =
                member_from_certificate(&ca, certificate_der, entry_time_ms, &RevocationSet::default())?;
            members.insert(member.node_id, member);
        }
        if !members.values().any(|member| member.role == Role::Hub) {
            return Err(reject(RejectionCode::InvalidArgument, "the founding members must include a hub"));
        }
        self.federation = Some(Federation {
            name: genesis.federation_name.to_string(),
            ca_certificate_der: genesis.ca_certificate_der.to_vec(),
            ca_node_id: *signer,
        });
        self.members = members;
        Ok(Applied::Done)
    }

    /// The member a CA-issued certificate makes, if it is not one already.
    pub(super) fn validate_admission(
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
        let member = member_from_certificate(&ca, certificate_der, entry_time_ms, &self.revocation_set())?;
        if self.members.contains_key(&member.node_id) {
            return Err(reject(
                RejectionCode::AlreadyMember,
                format!("{} is already a member", member.node_id),
            ));
        }
        Ok(member)
    }

    pub(super) fn admit_member(&mut self, admitted: Option<Member>) -> Applied {
        if let Some(member) = admitted {
            self.members.insert(member.node_id, member);
        }
        Applied::Done
    }

    pub(super) fn validate_member_revocation(&self, node_id: &NodeId, reason: &str) -> Result<(), Rejection> {
        check_text("reason", reason, REASON_BYTES_MAX)?;
        match self.members.get(node_id) {
            None => Err(reject(RejectionCode::MemberUnknown, format!("{node_id} is not a member"))),
            Some(member) if member.revoked.is_some() => {
                Err(reject(RejectionCode::MemberUnknown, format!("{node_id} is already revoked")))
            }
            Some(_) => Ok(()),
        }
    }

    pub(super) fn revoke_member(&mut self, node_id: &NodeId, revocation: Revocation) -> Applied {
        if let Some(member) = self.members.get_mut(node_id) {
            member.revoked = Some(revocation);
        }
        Applied::Done
    }

    pub(super) fn validate_subject_key_commitment(&self) -> Result<(), Rejection> {
        if self.subject_key_commitment.is_some() {
            return Err(reject(
                RejectionCode::InvalidArgument,
                "the subject-key secret is committed already",
            ));
        }
        Ok(())
    }

    pub(super) fn commit_subject_key_secret(&mut self, commitment: [u8; 32]) -> Applied {
        self.subject_key_commitment = Some(commitment);
        Applied::Done
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

    /// The active member with this node id, if any.
    pub fn active_member(&self, node_id: &NodeId) -> Option<&Member> {
        self.members.get(node_id).filter(|member| member.revoked.is_none())
    }
}

/// Rejects a member whose certificate expired at or before `at_ms`.
pub(super) fn check_certificate_current(member: &Member, at_ms: UnixMillis) -> Result<(), Rejection> {
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
