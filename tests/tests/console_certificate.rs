//! Browsers cannot verify the federation's Ed25519 CA, so the listener
//! gives them the console's own certificate: one the operator installed in
//! the node directory (issued by a CA the city's browsers trust), checked
//! here with a TLS client that, like a browser, cannot verify Ed25519 and
//! trusts only that CA. The CLI and department systems still get the
//! node's Ed25519 certificate on the same listener.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;

use civmesh_testnet::city::city;
use civmesh_testnet::{SnapshotPolicy, Testnet};

/// A CA the city's browsers trust (ECDSA P-256), and a console certificate
/// it issued for 127.0.0.1: (CA DER, certificate PEM, key PEM).
fn city_browser_ca() -> (Vec<u8>, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "city intranet CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let certificate = params.signed_by(&key, &issuer).unwrap();
    (ca.der().to_vec(), certificate.pem(), key.serialize_pem())
}

/// A TLS client offering only ECDSA signature schemes, trusting `ca_der`:
/// the certificate the listener presents, and the status line of `GET /login`.
fn browser_like_get(address: &str, ca_der: &[u8]) -> (Vec<u8>, String) {
    let mut provider = rustls::crypto::ring::default_provider();
    let ecdsa: Vec<_> = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .filter(|(scheme, _)| {
            matches!(
                scheme,
                rustls::SignatureScheme::ECDSA_NISTP256_SHA256
                    | rustls::SignatureScheme::ECDSA_NISTP384_SHA384
            )
        })
        .copied()
        .collect();
    let mapping: &'static [_] = Box::leak(ecdsa.into_boxed_slice());
    let all: Vec<_> = mapping.iter().flat_map(|(_, algorithms)| algorithms.iter().copied()).collect();
    provider.signature_verification_algorithms =
        rustls::crypto::WebPkiSupportedAlgorithms { all: Box::leak(all.into_boxed_slice()), mapping };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca_der.to_vec())).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    let mut tls = rustls::Stream::new(&mut connection, &mut socket);
    tls.write_all(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let presented = connection.peer_certificates().unwrap()[0].to_vec();
    let status = String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_string();
    (presented, status)
}

#[test]
fn a_browser_gets_the_installed_console_certificate_and_the_cli_the_node_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::create(dir.path(), &city(&["hub"]), SnapshotPolicy::default()).unwrap();
    let (ca_der, certificate_pem, key_pem) = city_browser_ca();
    let node_dir = net.nodes[0].data_dir.clone();
    std::fs::write(node_dir.join("console-cert.pem"), &certificate_pem).unwrap();
    let key_path = node_dir.join("console-key.pem");
    std::fs::write(&key_path, key_pem).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    net.start_all().unwrap();
    net.bootstrap().unwrap();

    let api = net.api(0).unwrap();
    let address = api.runtime().api_url.trim_start_matches("https://").to_string();
    let (presented, status) = browser_like_get(&address, &ca_der);
    let installed = rustls::pki_types::CertificateDer::from_pem_slice(certificate_pem.as_bytes()).unwrap();
    assert_eq!(presented, installed.to_vec(), "the browser got the installed certificate");
    assert_eq!(status, "HTTP/1.1 200 OK");
    // The CLI, which verifies Ed25519 against the federation CA, is unaffected.
    assert!(api.status().is_ok());

    // Without an installed certificate the node makes its own once, its key
    // private, and keeps it: a browser that accepted it sees it again after
    // a restart.
    net.stop(0).unwrap();
    std::fs::remove_file(node_dir.join("console-cert.pem")).unwrap();
    std::fs::remove_file(&key_path).unwrap();
    net.start(0).unwrap();
    let own_path = node_dir.join("console-self-signed-cert.pem");
    let own = std::fs::read(&own_path).unwrap();
    let own_key = std::fs::metadata(node_dir.join("console-self-signed-key.pem")).unwrap();
    assert_eq!(own_key.permissions().mode() & 0o777, 0o600);
    net.stop(0).unwrap();
    net.start(0).unwrap();
    assert_eq!(std::fs::read(&own_path).unwrap(), own, "the same certificate after a restart");
}
