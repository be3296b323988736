//! Certificate issuance and verification, data-driven over the ways a
//! certificate can be wrong. One test also asks openssl to verify the chain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use civmesh_certs::{
    CaCertificate, CertificateError, FederationCa, IssueRequest, NodeCertificate, NodeKey, OrgId,
    RevocationSet, Role,
};

const NOW_MS: u64 = 1_800_000_000_000;
const DAY_MS: u64 = 86_400_000;

struct Federation {
    _dir: tempfile::TempDir,
    ca_dir: std::path::PathBuf,
    ca: FederationCa,
    ca_certificate: CaCertificate,
}

fn new_federation(name: &str) -> Federation {
    federation_at(name, NOW_MS)
}

fn federation_at(name: &str, now_ms: u64) -> Federation {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let ca = FederationCa::init(&ca_dir, name, now_ms, 365).unwrap();
    let ca_certificate = CaCertificate::from_pem(ca.certificate_pem()).unwrap();
    Federation { _dir: dir, ca_dir, ca, ca_certificate }
}

/// A request for Jing'an Temple street's node `key`, for 30 days from now.
fn street_request(key: &NodeKey) -> IssueRequest {
    IssueRequest::for_days(OrgId::new("street/jingansi").unwrap(), Role::Street, key.node_id(), NOW_MS, 30)
        .unwrap()
}

fn issue(ca: &FederationCa, key: &NodeKey, not_before_ms: u64, not_after_ms: u64) -> NodeCertificate {
    let mut request = street_request(key);
    request.not_before_ms = not_before_ms;
    request.not_after_ms = not_after_ms;
    NodeCertificate::from_pem(&ca.issue(&request).unwrap()).unwrap()
}

#[test]
fn issued_certificate_binds_org_role_and_peer_id() {
    let federation = new_federation("test federation");
    let key = NodeKey::generate().unwrap();
    let certificate = issue(&federation.ca, &key, NOW_MS - DAY_MS, NOW_MS + DAY_MS);
    let identity = certificate.verify(&federation.ca_certificate, NOW_MS, &RevocationSet::default()).unwrap();
    assert_eq!(identity.node_id, key.node_id());
    assert_eq!(identity.org.as_str(), "street/jingansi");
    assert_eq!(identity.role, Role::Street);
    assert_eq!(identity.not_after_ms, NOW_MS + DAY_MS);
    let other = NodeKey::generate().unwrap().node_id();
    assert!(matches!(
        certificate.verify_presented_by(
            &other,
            &federation.ca_certificate,
            NOW_MS,
            &RevocationSet::default()
        ),
        Err(CertificateError::PresenterMismatch { .. })
    ));
}

#[test]
fn each_kind_of_bad_certificate_has_its_own_error() {
    let federation = new_federation("test federation");
    // Same name, different key: only the signature tells them apart.
    let other_federation = new_federation("test federation");
    let key = NodeKey::generate().unwrap();
    let valid = issue(&federation.ca, &key, NOW_MS - DAY_MS, NOW_MS + DAY_MS);
    let expired = issue(&federation.ca, &key, NOW_MS - 10 * DAY_MS, NOW_MS - DAY_MS);
    let not_yet_valid = issue(&federation.ca, &key, NOW_MS + DAY_MS, NOW_MS + 10 * DAY_MS);
    let from_other_ca = issue(&other_federation.ca, &key, NOW_MS - DAY_MS, NOW_MS + DAY_MS);
    let mut revoked_node = RevocationSet::default();
    revoked_node.nodes.insert(key.node_id());
    let mut revoked_serial = RevocationSet::default();
    revoked_serial.serials.insert(valid.serial().to_vec());
    let none = RevocationSet::default();

    type Case<'a> = (&'a str, &'a NodeCertificate, &'a RevocationSet, fn(&CertificateError) -> bool);
    let cases: Vec<Case> = vec![
        ("expired", &expired, &none, |e| matches!(e, CertificateError::Expired { .. })),
        ("not yet valid", &not_yet_valid, &none, |e| matches!(e, CertificateError::NotYetValid { .. })),
        ("wrong CA", &from_other_ca, &none, |e| matches!(e, CertificateError::SignatureInvalid)),
        ("revoked node", &valid, &revoked_node, |e| matches!(e, CertificateError::Revoked(_))),
        ("revoked serial", &valid, &revoked_serial, |e| matches!(e, CertificateError::Revoked(_))),
    ];
    for (name, certificate, revoked, expected) in cases {
        let error = certificate.verify(&federation.ca_certificate, NOW_MS, revoked).unwrap_err();
        assert!(expected(&error), "{name}: got {error:?}");
    }
    // A CA with a different name is caught by the issuer check first.
    let differently_named = new_federation("another city");
    let foreign = issue(&differently_named.ca, &key, NOW_MS - DAY_MS, NOW_MS + DAY_MS);
    assert_eq!(foreign.verify(&federation.ca_certificate, NOW_MS, &none), Err(CertificateError::WrongIssuer));
}

#[test]
fn malformed_certificates_are_typed_errors_not_panics() {
    let federation = new_federation("test federation");
    let key = NodeKey::generate().unwrap();
    let valid = issue(&federation.ca, &key, NOW_MS - DAY_MS, NOW_MS + DAY_MS);
    assert!(matches!(NodeCertificate::from_pem("not pem"), Err(CertificateError::PemMalformed(_))));
    assert!(matches!(NodeCertificate::from_der(&[0x30, 0x82, 0x01]), Err(CertificateError::DerMalformed(_))));
    for cut in [1, 10, valid.der().len() / 2, valid.der().len() - 1] {
        assert!(NodeCertificate::from_der(&valid.der()[..cut]).is_err(), "truncated at {cut}");
    }
    let mut trailing = valid.der().to_vec();
    trailing.push(0);
    assert!(matches!(NodeCertificate::from_der(&trailing), Err(CertificateError::DerMalformed(_))));
    // The CA certificate is not a node certificate: its subject has no PeerId.
    assert!(NodeCertificate::from_pem(federation.ca.certificate_pem()).is_err());
    // A node certificate is not a CA.
    assert_eq!(CaCertificate::from_der(valid.der()), Err(CertificateError::NotCa));
}

#[test]
fn ca_reloads_from_disk_and_refuses_to_overwrite() {
    let federation = new_federation("test federation");
    let reloaded = FederationCa::load(&federation.ca_dir).unwrap();
    assert_eq!(reloaded.certificate_pem(), federation.ca.certificate_pem());
    let key = NodeKey::generate().unwrap();
    let certificate = issue(&reloaded, &key, NOW_MS - DAY_MS, NOW_MS + DAY_MS);
    certificate.verify(&federation.ca_certificate, NOW_MS, &RevocationSet::default()).unwrap();
    assert!(matches!(
        FederationCa::init(&federation.ca_dir, "again", NOW_MS, 10),
        Err(civmesh_certs::CaError::AlreadyExists(_))
    ));
}

#[test]
fn openssl_verifies_the_chain() {
    let now_ms = civmesh_certs::now_unix_millis();
    let federation = federation_at("openssl federation", now_ms);
    let key = NodeKey::generate().unwrap();
    let request = IssueRequest::for_days(
        OrgId::new("dept/market-supervision").unwrap(),
        Role::Department,
        key.node_id(),
        now_ms,
        30,
    )
    .unwrap();
    let node_pem = federation.ca.issue(&request).unwrap();
    let node_path = federation.ca_dir.join("node.pem");
    std::fs::write(&node_path, node_pem).unwrap();
    let output = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(federation.ca_dir.join("ca.pem"))
        .arg(&node_path)
        .output()
        .expect("openssl must be installed (the test command installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "openssl verify failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.trim_end().ends_with(": OK"), "{stdout}");

    // And openssl refuses it against another federation's CA.
    let other = federation_at("openssl federation", now_ms);
    let output = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(other.ca_dir.join("ca.pem"))
        .arg(&node_path)
        .output()
        .unwrap();
    assert!(!output.status.success());
}

/// Validity is bounded (1 to `CERTIFICATE_VALIDITY_DAYS_MAX` days) for the
/// CA and for nodes, and exact: it starts five minutes back (for clock
/// skew) and ends `days` whole days after now.
#[test]
fn validity_is_bounded_and_exact() {
    use x509_parser::prelude::FromDer;
    let node = NodeKey::generate().unwrap().node_id();
    let org = OrgId::new("street/jingansi").unwrap();
    let backdate_ms = 5 * 60 * 1000;
    for (days, allowed) in [(0, false), (1, true), (3650, true), (3651, false)] {
        let request = IssueRequest::for_days(org.clone(), Role::Street, node, NOW_MS, days);
        assert_eq!(request.is_ok(), allowed, "a node for {days} days");
        if let Ok(request) = request {
            assert_eq!(request.not_before_ms, NOW_MS - backdate_ms);
            assert_eq!(request.not_after_ms, NOW_MS + u64::from(days) * DAY_MS);
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = FederationCa::init(&dir.path().join("ca"), "test city", NOW_MS, days);
        assert_eq!(ca.is_ok(), allowed, "a CA for {days} days");
        if let Ok(ca) = ca {
            let der = CaCertificate::from_pem(ca.certificate_pem()).unwrap().der().to_vec();
            let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
            let validity = parsed.validity();
            assert_eq!(validity.not_before.timestamp() * 1000, (NOW_MS - backdate_ms) as i64);
            assert_eq!(validity.not_after.timestamp() * 1000, (NOW_MS + u64::from(days) * DAY_MS) as i64);
        }
    }
}

/// `init` refuses a directory holding either file of a CA already.
#[test]
fn a_ca_is_never_created_over_either_of_its_files() {
    for existing in ["ca.key", "ca.pem"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(existing), b"kept").unwrap();
        let refused = FederationCa::init(dir.path(), "test city", NOW_MS, 365);
        assert!(
            matches!(refused, Err(civmesh_certs::CaError::AlreadyExists(_))),
            "over {existing}: {refused:?}"
        );
        assert_eq!(std::fs::read(dir.path().join(existing)).unwrap(), b"kept");
    }
}

/// The CA's DER is the PEM's content, and its fingerprint that DER's
/// SHA-256; its debug form names the directory, never the key.
#[test]
fn the_ca_certificate_is_its_pem_and_its_fingerprint_its_sha256() {
    let federation = new_federation("test city");
    let pem = pem::parse(federation.ca.certificate_pem()).unwrap();
    assert_eq!(federation.ca_certificate.der(), pem.contents());
    let digest = ring::digest::digest(&ring::digest::SHA256, pem.contents());
    assert_eq!(federation.ca_certificate.fingerprint().as_slice(), digest.as_ref());
    assert_eq!(format!("{:?}", federation.ca), format!("FederationCa({})", federation.ca_dir.display()));
}

/// Serial numbers are positive and never start with a zero byte: the first
/// byte has its top bit clear and its low bit set, whatever the randomness.
#[test]
fn serial_numbers_are_positive_with_a_non_zero_first_byte() {
    let federation = new_federation("test city");
    for _ in 0..24 {
        let key = NodeKey::generate().unwrap();
        let certificate = issue(&federation.ca, &key, NOW_MS - DAY_MS, NOW_MS + DAY_MS);
        let first = certificate.serial()[0];
        assert!(first & 0x80 == 0 && first & 0x01 == 1, "serial starts with {first:#04x}");
    }
}

/// A certificate well over a kilobyte (many names) is within the bound.
#[test]
fn a_certificate_of_several_kilobytes_is_accepted() {
    let federation = new_federation("test city");
    let key = NodeKey::generate().unwrap();
    let mut request = street_request(&key);
    request.subject_alt_names =
        (0..100).map(|index| format!("node-{index:03}.jingansi.civmesh.example")).collect();
    let pem = federation.ca.issue(&request).unwrap();
    let certificate = NodeCertificate::from_pem(&pem).unwrap();
    assert!(certificate.der().len() > 3 * 1024, "{} bytes", certificate.der().len());
}
