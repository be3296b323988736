//! TLS for the HTTP API and the console on one listener: the node's
//! CA-issued Ed25519 certificate for clients that verify Ed25519 (the CLI,
//! department systems), and the console's certificate for the others
//! (browsers cannot verify the federation's Ed25519 CA).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use civmesh_certs::{NodeCertificate, NodeKey};

use crate::run::{read_secret, read_small};

/// TLS for the HTTP API and the console: the node's CA-issued certificate
/// and its own key (Ed25519), with ring as the crypto provider; and, for a
/// client that cannot verify Ed25519 (browsers), the console's certificate
/// (see [`browser_identity`]).
pub(crate) fn server_config(
    certificate: &NodeCertificate,
    key: &NodeKey,
    node_dir: &Path,
    listen_ip: std::net::IpAddr,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![rustls::pki_types::CertificateDer::from(certificate.der().to_vec())];
    let private_key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        key.pkcs8_der().to_vec(),
    ));
    let node = rustls::sign::CertifiedKey::from_der(chain, private_key, &provider)
        .context("the node certificate and key do not make a TLS identity")?;
    let browser = browser_identity(node_dir, listen_ip, &provider)?;
    let resolver = Arc::new(ListenerCertificates { node: Arc::new(node), browser: Arc::new(browser) });
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    Ok(Arc::new(config))
}

/// The console's certificate file in the node directory: a chain issued by
/// a CA the city's browsers trust (ECDSA or RSA; browsers cannot verify the
/// federation's Ed25519 CA), with its key in [`CONSOLE_KEY_FILE`] (mode 0600).
pub const CONSOLE_CERTIFICATE_FILE: &str = "console-cert.pem";
/// The key of [`CONSOLE_CERTIFICATE_FILE`] (PKCS#8, SEC1 or PKCS#1 PEM).
pub const CONSOLE_KEY_FILE: &str = "console-key.pem";

/// The self-signed certificate made at the first start when none is
/// installed, kept so browsers see the same one after a restart.
pub const CONSOLE_SELF_SIGNED_CERTIFICATE_FILE: &str = "console-self-signed-cert.pem";
/// The key of [`CONSOLE_SELF_SIGNED_CERTIFICATE_FILE`] (mode 0600).
pub const CONSOLE_SELF_SIGNED_KEY_FILE: &str = "console-self-signed-key.pem";

/// The identity browsers see: [`CONSOLE_CERTIFICATE_FILE`] and
/// [`CONSOLE_KEY_FILE`] if the node directory holds them (both, or
/// neither); else the node's own self-signed ECDSA P-256 certificate,
/// made at the first start for this host's names and `listen_ip` and kept
/// (a browser warns about it until it is accepted once; its SHA-256
/// fingerprint is logged at each start so an operator can compare it).
fn browser_identity(
    node_dir: &Path,
    listen_ip: std::net::IpAddr,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> anyhow::Result<rustls::sign::CertifiedKey> {
    let installed = (node_dir.join(CONSOLE_CERTIFICATE_FILE), node_dir.join(CONSOLE_KEY_FILE));
    if installed.0.exists() || installed.1.exists() {
        return load_identity(&installed.0, &installed.1, provider);
    }
    let own =
        (node_dir.join(CONSOLE_SELF_SIGNED_CERTIFICATE_FILE), node_dir.join(CONSOLE_SELF_SIGNED_KEY_FILE));
    if !own.0.exists() {
        make_self_signed(&own.0, &own.1, listen_ip)?;
    }
    let identity = load_identity(&own.0, &own.1, provider)?;
    if let Some(certificate) = identity.cert.first() {
        let fingerprint = hex::encode(civmesh_certs::codec::sha256(certificate));
        tracing::info!(%fingerprint, "the console's self-signed certificate (SHA-256)");
    }
    Ok(identity)
}

/// A certificate chain and its key from PEM files: a TLS identity.
fn load_identity(
    chain_path: &Path,
    key_path: &Path,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> anyhow::Result<rustls::sign::CertifiedKey> {
    use rustls::pki_types::pem::PemObject;
    let chain_pem = read_small(chain_path)?;
    let key_pem = read_secret(key_path)?;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", chain_path.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", chain_path.display());
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
    rustls::sign::CertifiedKey::from_der(chain, key, provider).with_context(|| {
        format!("{} and {} do not make a TLS identity", chain_path.display(), key_path.display())
    })
}

/// Makes the node's self-signed console certificate for `localhost`,
/// 127.0.0.1, this host's name and `listen_ip`: the key (0600) first, then
/// the certificate, each written whole and synced.
fn make_self_signed(chain_path: &Path, key_path: &Path, listen_ip: std::net::IpAddr) -> anyhow::Result<()> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    names.extend([host.trim().to_string(), listen_ip.to_string()]);
    names.retain(|name| !name.is_empty() && name != "0.0.0.0" && name != "::");
    names.sort();
    names.dedup();
    let made = rcgen::generate_simple_self_signed(names).context("making the console's certificate")?;
    let _ = std::fs::remove_file(key_path);
    civmesh_certs::write_new_file_synced(key_path, made.signing_key.serialize_pem().as_bytes(), 0o600)
        .with_context(|| format!("writing {}", key_path.display()))?;
    civmesh_certs::write_new_file_synced(chain_path, made.cert.pem().as_bytes(), 0o644)
        .with_context(|| format!("writing {}", chain_path.display()))
}

/// The listener's two identities: the node's Ed25519 certificate for every
/// client that can verify it (the CLI, department systems), an ECDSA one
/// for the others.
#[derive(Debug)]
struct ListenerCertificates {
    node: Arc<rustls::sign::CertifiedKey>,
    browser: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for ListenerCertificates {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        if hello.signature_schemes().contains(&rustls::SignatureScheme::ED25519) {
            Some(self.node.clone())
        } else {
            Some(self.browser.clone())
        }
    }
}
