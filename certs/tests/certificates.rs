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

fn issue(ca: &FederationCa, key: &NodeKey, not_before_ms: u64, not_after_ms: u64) -> NodeCertificate {
    let mut request = IssueRequest::for_days(
        OrgId::new("street/jingansi").unwrap(),
        Role::Street,
        key.node_id(),
        NOW_MS,
        30,
    )
    .unwrap();
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
