//! The federation CA: one Ed25519 root that issues every node certificate,
//! with rcgen. `openssl verify -CAfile ca.pem node.pem` accepts what it issues.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;

use crate::certificate::NodeCertificate;
use crate::identity::{NodeId, OrgId, Role};
use crate::key::{write_new_file_synced, KeyError, NodeKey};
use crate::UnixMillis;

/// The CA certificate's file name inside the CA directory.
pub const CA_CERT_FILE_NAME: &str = "ca.pem";
/// The CA private key's file name inside the CA directory (mode 0600).
pub const CA_KEY_FILE_NAME: &str = "ca.key";
/// The organisation name written into the CA certificate's subject.
const CA_ORGANISATION: &str = "civmesh federation";
/// The longest validity a certificate may be issued for, in days.
pub const CERTIFICATE_VALIDITY_DAYS_MAX: u32 = 3650;
/// How far back a new certificate's validity starts, to absorb clock skew.
const NOT_BEFORE_BACKDATE_MS: u64 = 5 * 60 * 1000;
const MILLIS_PER_DAY: u64 = 24 * 60 * 60 * 1000;

/// Why the CA could not be created, loaded or could not issue.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CA key failed to generate, write or load.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Reading or writing a CA file failed.
    #[error("CA file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `ca init` was pointed at a directory that already holds a CA.
    #[error("{0} already holds a CA; refusing to overwrite it")]
    AlreadyExists(PathBuf),
    /// The CA certificate could not be parsed or does not match the CA key.
    #[error("CA certificate {path} is unusable: {reason}")]
    CertificateUnusable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The validity window asked for is empty or too long.
    #[error("validity of {days} days is outside 1..={CERTIFICATE_VALIDITY_DAYS_MAX}")]
    ValidityOutOfRange {
        /// The days asked for.
        days: u32,
    },
    /// The validity window ends before it starts.
    #[error("not_after ({not_after_ms}) is not after not_before ({not_before_ms})")]
    ValidityEmpty {
        /// Start, ms since the epoch.
        not_before_ms: UnixMillis,
        /// End, ms since the epoch.
        not_after_ms: UnixMillis,
    },
    /// A subject alternative name is neither a DNS name nor an IP address.
    #[error("invalid subject alternative name {0:?}")]
    SubjectAltNameInvalid(String),
    /// rcgen refused to build or sign the certificate.
    #[error("certificate generation failed: {0}")]
    Generation(String),
}

/// What a node certificate is issued for.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// The organisation the node belongs to.
    pub org: OrgId,
    /// The node's role.
    pub role: Role,
    /// The node's key (its PeerId).
    pub node_id: NodeId,
    /// Start of validity, ms since the epoch.
    pub not_before_ms: UnixMillis,
    /// End of validity, ms since the epoch.
    pub not_after_ms: UnixMillis,
    /// DNS names or IP addresses the node's HTTPS API answers on.
    pub subject_alt_names: Vec<String>,
}

impl IssueRequest {
    /// A request valid from a few minutes before `now_ms` for `days` days.
    pub fn for_days(
        org: OrgId,
        role: Role,
        node_id: NodeId,
        now_ms: UnixMillis,
        days: u32,
    ) -> Result<Self, CaError> {
        if days == 0 || days > CERTIFICATE_VALIDITY_DAYS_MAX {
            return Err(CaError::ValidityOutOfRange { days });
        }
        Ok(IssueRequest {
            org,
            role,
            node_id,
            not_before_ms: now_ms.saturating_sub(NOT_BEFORE_BACKDATE_MS),
            not_after_ms: now_ms.saturating_add(u64::from(days) * MILLIS_PER_DAY),
            subject_alt_names: vec!["localhost".to_string(), "127.0.0.1".to_string()],
        })
    }
}

/// The federation root, loaded with its private key.
pub struct FederationCa {
    directory: PathBuf,
    certificate_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for FederationCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FederationCa({})", self.directory.display())
    }
}

impl FederationCa {
    /// Creates a new CA in `directory`: `ca.key` (0600) and a self-signed
    /// `ca.pem` valid for `days` days.
    pub fn init(directory: &Path, name: &str, now_ms: UnixMillis, days: u32) -> Result<Self, CaError> {
        if days == 0 || days > CERTIFICATE_VALIDITY_DAYS_MAX {
            return Err(CaError::ValidityOutOfRange { days });
        }
        let key_path = directory.join(CA_KEY_FILE_NAME);
        let cert_path = directory.join(CA_CERT_FILE_NAME);
        if key_path.exists() || cert_path.exists() {
            return Err(CaError::AlreadyExists(directory.to_path_buf()));
        }
        std::fs::create_dir_all(directory)
            .map_err(|source| CaError::Io { path: directory.to_path_buf(), source })?;

        let key = NodeKey::generate()?;
        let key_pair = rcgen_key_pair(&key)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.distinguished_name.push(DnType::OrganizationName, CA_ORGANISATION);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = offset_date_time(now_ms.saturating_sub(NOT_BEFORE_BACKDATE_MS))?;
        params.not_after = offset_date_time(now_ms.saturating_add(u64::from(days) * MILLIS_PER_DAY))?;
        params.serial_number = Some(random_serial_number()?);
        let certificate = params.self_signed(&key_pair).map_err(generation_error)?;
        let certificate_pem = certificate.pem();

        key.write_new(&key_path)?;
        write_new_file_synced(&cert_path, certificate_pem.as_bytes(), 0o644)
            .map_err(|source| CaError::Io { path: cert_path.clone(), source })?;
        Ok(FederationCa {
            directory: directory.to_path_buf(),
            certificate_pem,
            issuer: Issuer::new(params, key_pair),
        })
    }

    /// Loads an existing CA from `directory`.
    pub fn load(directory: &Path) -> Result<Self, CaError> {
        let key = NodeKey::load(&directory.join(CA_KEY_FILE_NAME))?;
        let cert_path = directory.join(CA_CERT_FILE_NAME);
        let certificate_pem = std::fs::read_to_string(&cert_path)
            .map_err(|source| CaError::Io { path: cert_path.clone(), source })?;
        let unusable = |reason: String| CaError::CertificateUnusable { path: cert_path.clone(), reason };
        let parsed = crate::certificate::CaCertificate::from_pem(&certificate_pem)
            .map_err(|error| unusable(error.to_string()))?;
        if parsed.public_key() != key.node_id().0 {
            return Err(unusable("it does not belong to ca.key".to_string()));
        }
        let issuer = Issuer::from_ca_cert_pem(&certificate_pem, rcgen_key_pair(&key)?)
            .map_err(|error| unusable(error.to_string()))?;
        Ok(FederationCa { directory: directory.to_path_buf(), certificate_pem, issuer })
    }

    /// The CA certificate as PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// Issues a node certificate and returns it as PEM.
    pub fn issue(&self, request: &IssueRequest) -> Result<String, CaError> {
        if request.not_after_ms <= request.not_before_ms {
            return Err(CaError::ValidityEmpty {
                not_before_ms: request.not_before_ms,
                not_after_ms: request.not_after_ms,
            });
        }
        let peer_id = request.node_id.to_peer_id().map_err(|error| CaError::Generation(error.to_string()))?;
        let mut params = CertificateParams::new(request.subject_alt_names.clone())
            .map_err(|_| CaError::SubjectAltNameInvalid(request.subject_alt_names.join(",")))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, peer_id.to_string());
        params.distinguished_name.push(DnType::OrganizationName, request.org.as_str());
        params.distinguished_name.push(DnType::OrganizationalUnitName, request.role.as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = offset_date_time(request.not_before_ms)?;
        params.not_after = offset_date_time(request.not_after_ms)?;
        params.serial_number = Some(random_serial_number()?);
        let certificate = params
            .signed_by(&Ed25519SubjectKey(request.node_id.0), &self.issuer)
            .map_err(generation_error)?;
        let pem = certificate.pem();
        debug_assert!(NodeCertificate::from_pem(&pem).is_ok_and(|c| c.node_id() == request.node_id));
        Ok(pem)
    }
}

/// A node's public key, as rcgen needs it to issue a certificate for a key
/// the CA does not hold.
struct Ed25519SubjectKey([u8; 32]);

impl rcgen::PublicKeyData for Ed25519SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

fn rcgen_key_pair(key: &NodeKey) -> Result<KeyPair, CaError> {
    KeyPair::try_from(key.pkcs8_der()).map_err(generation_error)
}

fn generation_error(error: rcgen::Error) -> CaError {
    CaError::Generation(error.to_string())
}

fn offset_date_time(unix_ms: UnixMillis) -> Result<OffsetDateTime, CaError> {
    let nanos = i128::from(unix_ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|error| CaError::Generation(error.to_string()))
}

/// A random positive 16-byte serial number (RFC 5280 allows up to 20).
fn random_serial_number() -> Result<SerialNumber, CaError> {
    use ring::rand::SecureRandom;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| CaError::Key(KeyError::RandomSourceFailed))?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    Ok(SerialNumber::from_slice(&serial))
}
