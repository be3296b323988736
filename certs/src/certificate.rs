//! Node certificates as a verifier sees them: parse, check the chain to the
//! federation CA, the validity window and revocation, and read out the
//! organisation, role and node id they bind.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{OID_SIG_ED25519, OID_X509_COMMON_NAME};

use crate::identity::{IdentityError, NodeId, OrgId, Role};
use crate::UnixMillis;

/// The largest certificate accepted, in bytes of DER.
pub const CERTIFICATE_BYTES_MAX: usize = 16 * 1024;

/// Why a certificate was refused. Each failure has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The text is not PEM with one CERTIFICATE block.
    #[error("certificate PEM is malformed: {0}")]
    PemMalformed(String),
    /// The bytes are not a DER X.509 certificate.
    #[error("certificate DER is malformed: {0}")]
    DerMalformed(String),
    /// The certificate is larger than [`CERTIFICATE_BYTES_MAX`].
    #[error("certificate is {0} bytes, over the limit")]
    TooLarge(usize),
    /// The certificate or its key is not Ed25519.
    #[error("certificate is not Ed25519-signed with an Ed25519 key")]
    NotEd25519,
    /// The issuer is not this federation's CA.
    #[error("certificate was not issued by this federation's CA (issuer mismatch)")]
    WrongIssuer,
    /// The signature does not verify under this federation's CA key.
    #[error("certificate signature does not verify under this federation's CA key")]
    SignatureInvalid,
    /// The certificate's validity ended before the time checked.
    #[error("certificate expired at {not_after_ms} (checked at {at_ms})")]
    Expired {
        /// End of validity.
        not_after_ms: UnixMillis,
        /// Time checked.
        at_ms: UnixMillis,
    },
    /// The certificate's validity starts after the time checked.
    #[error("certificate is not valid until {not_before_ms} (checked at {at_ms})")]
    NotYetValid {
        /// Start of validity.
        not_before_ms: UnixMillis,
        /// Time checked.
        at_ms: UnixMillis,
    },
    /// The certificate or its node has been revoked.
    #[error("certificate of {0} has been revoked")]
    Revoked(NodeId),
    /// A subject field is missing or has the wrong form.
    #[error("certificate subject is invalid: {0}")]
    SubjectInvalid(#[from] IdentityError),
    /// The subject is missing a field civmesh needs.
    #[error("certificate subject lacks {0}")]
    SubjectFieldMissing(&'static str),
    /// The PeerId in the subject is not the certificate's key.
    #[error("certificate subject names PeerId {named} but its key is {actual}")]
    PeerIdMismatch {
        /// The PeerId in the subject.
        named: String,
        /// The PeerId of the certificate's key.
        actual: NodeId,
    },
    /// The certificate is for another node than the one presenting it.
    #[error("certificate is for {certified} but was presented by {presenter}")]
    PresenterMismatch {
        /// Whom the certificate names.
        certified: NodeId,
        /// Who presented it.
        presenter: NodeId,
    },
    /// A CA certificate is not marked as a CA.
    #[error("certificate is not a CA certificate")]
    NotCa,
}

/// Revoked certificates (by serial number) and revoked nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationSet {
    /// Serial numbers of revoked certificates, big-endian bytes.
    pub serials: BTreeSet<Vec<u8>>,
    /// Nodes whose every certificate is revoked.
    pub nodes: BTreeSet<NodeId>,
}

/// What a valid certificate proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedIdentity {
    /// The node's key.
    pub node_id: NodeId,
    /// Its organisation.
    pub org: OrgId,
    /// Its role.
    pub role: Role,
    /// End of validity.
    pub not_after_ms: UnixMillis,
}

/// The federation CA's certificate, as verifiers hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCertificate {
    der: Vec<u8>,
    subject_der: Vec<u8>,
    public_key: [u8; 32],
}

impl CaCertificate {
    /// Parses a CA certificate and checks it is a self-signed Ed25519 CA.
    pub fn from_pem(text: &str) -> Result<Self, CertificateError> {
        Self::from_der(&pem_certificate_der(text)?)
    }

    /// Parses DER; see [`CaCertificate::from_pem`].
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateError> {
        let parsed = parse_der(der)?;
        let public_key = ed25519_public_key(&parsed)?;
        let is_ca = parsed
            .basic_constraints()
            .map_err(|error| CertificateError::DerMalformed(error.to_string()))?
            .is_some_and(|constraints| constraints.value.ca);
        if !is_ca {
            return Err(CertificateError::NotCa);
        }
        verify_signature(&parsed, &public_key)?;
        Ok(CaCertificate { der: der.to_vec(), subject_der: parsed.subject().as_raw().to_vec(), public_key })
    }

    /// The CA's Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The SHA-256 of the DER: the federation's fingerprint.
    pub fn fingerprint(&self) -> [u8; 32] {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.der);
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(digest.as_ref());
        fingerprint
    }
}

/// A parsed node certificate. Parsing checks form only; call
/// [`NodeCertificate::verify`] before trusting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCertificate {
    der: Vec<u8>,
    node_id: NodeId,
    org: OrgId,
    role: Role,
    serial: Vec<u8>,
    not_before_ms: UnixMillis,
    not_after_ms: UnixMillis,
}

impl NodeCertificate {
    /// Parses a PEM certificate.
    pub fn from_pem(text: &str) -> Result<Self, CertificateError> {
        Self::from_der(&pem_certificate_der(text)?)
    }

    /// Parses a DER certificate and reads the identity it binds.
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateError> {
        let parsed = parse_der(der)?;
        let node_id = NodeId(ed25519_public_key(&parsed)?);
        let subject = parsed.subject();
        let first = |mut values: Box<dyn Iterator<Item = &_> + '_>, field: &'static str| {
            values
                .next()
                .and_then(|value: &x509_parser::x509::AttributeTypeAndValue| value.as_str().ok())
                .map(str::to_string)
                .ok_or(CertificateError::SubjectFieldMissing(field))
        };
        let common_name = first(Box::new(subject.iter_by_oid(&OID_X509_COMMON_NAME)), "CN (PeerId)")?;
        let org = OrgId::new(&first(Box::new(subject.iter_organization()), "O (organisation id)")?)?;
        let role: Role = first(Box::new(subject.iter_organizational_unit()), "OU (role)")?.parse()?;
        let named: NodeId = common_name.parse()?;
        if named != node_id {
            return Err(CertificateError::PeerIdMismatch { named: common_name, actual: node_id });
        }
        let validity = parsed.validity();
        Ok(NodeCertificate {
            der: der.to_vec(),
            node_id,
            org,
            role,
            serial: parsed.raw_serial().to_vec(),
            not_before_ms: seconds_to_millis(validity.not_before.timestamp()),
            not_after_ms: seconds_to_millis(validity.not_after.timestamp()),
        })
    }

    /// Checks the chain to `ca`, validity at `at_ms` and revocation, and
    /// returns the identity the certificate proves.
    pub fn verify(
        &self,
        ca: &CaCertificate,
        at_ms: UnixMillis,
        revoked: &RevocationSet,
    ) -> Result<VerifiedIdentity, CertificateError> {
        let parsed = parse_der(&self.der)?;
        if parsed.issuer().as_raw() != ca.subject_der.as_slice() {
            return Err(CertificateError::WrongIssuer);
        }
        verify_signature(&parsed, &ca.public_key)?;
        if at_ms < self.not_before_ms {
            return Err(CertificateError::NotYetValid { not_before_ms: self.not_before_ms, at_ms });
        }
        if at_ms > self.not_after_ms {
            return Err(CertificateError::Expired { not_after_ms: self.not_after_ms, at_ms });
        }
        if revoked.nodes.contains(&self.node_id) || revoked.serials.contains(&self.serial) {
            return Err(CertificateError::Revoked(self.node_id));
        }
        Ok(VerifiedIdentity {
            node_id: self.node_id,
            org: self.org.clone(),
            role: self.role,
            not_after_ms: self.not_after_ms,
        })
    }

    /// [`NodeCertificate::verify`], and that `presenter` is the certified node.
    pub fn verify_presented_by(
        &self,
        presenter: &NodeId,
        ca: &CaCertificate,
        at_ms: UnixMillis,
        revoked: &RevocationSet,
    ) -> Result<VerifiedIdentity, CertificateError> {
        if *presenter != self.node_id {
            return Err(CertificateError::PresenterMismatch {
                certified: self.node_id,
                presenter: *presenter,
            });
        }
        self.verify(ca, at_ms, revoked)
    }

    /// The certified node.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }
    /// The certified organisation.
    pub fn org(&self) -> &OrgId {
        &self.org
    }
    /// The certified role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The serial number, big-endian bytes.
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }
    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
}

fn pem_certificate_der(text: &str) -> Result<Vec<u8>, CertificateError> {
    let block = pem::parse(text).map_err(|error| CertificateError::PemMalformed(error.to_string()))?;
    if block.tag() != "CERTIFICATE" {
        return Err(CertificateError::PemMalformed(format!("expected CERTIFICATE, found {}", block.tag())));
    }
    Ok(block.into_contents())
}

fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>, CertificateError> {
    if der.len() > CERTIFICATE_BYTES_MAX {
        return Err(CertificateError::TooLarge(der.len()));
    }
    let (rest, parsed) = x509_parser::parse_x509_certificate(der)
        .map_err(|error| CertificateError::DerMalformed(error.to_string()))?;
    if !rest.is_empty() {
        return Err(CertificateError::DerMalformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(parsed)
}

fn ed25519_public_key(parsed: &X509Certificate<'_>) -> Result<[u8; 32], CertificateError> {
    let spki = parsed.public_key();
    if spki.algorithm.algorithm != OID_SIG_ED25519 {
        return Err(CertificateError::NotEd25519);
    }
    <[u8; 32]>::try_from(spki.subject_public_key.data.as_ref()).map_err(|_| CertificateError::NotEd25519)
}

fn verify_signature(parsed: &X509Certificate<'_>, issuer_key: &[u8; 32]) -> Result<(), CertificateError> {
    if parsed.signature_algorithm.algorithm != OID_SIG_ED25519 {
        return Err(CertificateError::NotEd25519);
    }
    let verified = crate::signature::verify(
        issuer_key,
        parsed.tbs_certificate.as_ref(),
        parsed.signature_value.data.as_ref(),
    );
    verified.then_some(()).ok_or(CertificateError::SignatureInvalid)
}

fn seconds_to_millis(seconds: i64) -> UnixMillis {
    u64::try_from(seconds).unwrap_or(0).saturating_mul(1000)
}
