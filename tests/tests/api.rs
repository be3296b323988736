//! The node's HTTP API speaks only TLS, with the node's CA-issued
//! certificate, and answers only bearers of the node's API token or of a
//! scoped token, within its scopes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use civmesh_testnet::city::city;
use civmesh_testnet::{SnapshotPolicy, Testnet};

#[test]
fn the_api_is_tls_only_trusted_through_the_federation_ca_and_token_gated() {
    let dir = tempfile::tempdir().unwrap();
    let mut net =
        Testnet::create(dir.path(), &city(&["hub", "market", "civil"]), SnapshotPolicy::default()).unwrap();
    net.start(0).unwrap();
    let runtime: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.nodes[0].data_dir.join("node.json")).unwrap()).unwrap();
    let https_url = runtime["api_url"].as_str().unwrap().to_string();
    assert!(https_url.starts_with("https://127.0.0.1:"), "{https_url}");
    let status_url = format!("{https_url}/v1/status");

    // Plain HTTP gets no answer.
    let plain = ureq::get(status_url.replace("https://", "http://")).call();
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // Public roots do not vouch for the node: only the federation CA does.
    let public_roots: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let untrusted = public_roots.get(&status_url).call();
    assert!(untrusted.is_err(), "the node's certificate was trusted without the federation CA");

    let ca_pem = std::fs::read_to_string(net.nodes[0].data_dir.join("ca.pem")).unwrap();
    let ca_der = civmesh_certs::CaCertificate::from_pem(&ca_pem).unwrap().der().to_vec();
    let roots = ureq::tls::RootCerts::new_with_certs(&[ureq::tls::Certificate::from_der(&ca_der).to_owned()]);
    let federation: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
        .build()
        .into();
    assert_eq!(federation.get(&status_url).call().unwrap().status(), 401);
    let wrong = federation.get(&status_url).header("Authorization", "Bearer not-the-token").call().unwrap();
    assert_eq!(wrong.status(), 401);
    let token = std::fs::read_to_string(net.nodes[0].data_dir.join("api-token")).unwrap();
    let right = federation
        .get(&status_url)
        .header("Authorization", format!("Bearer {}", token.trim()))
        .call()
        .unwrap();
    assert_eq!(right.status(), 200);

    // A scoped token may read but not submit commands or run the cluster;
    // it works at once, without a restart.
    let data_dir = net.nodes[0].data_dir.to_str().unwrap().to_string();
    let reader = net
        .cli(&["token", "create", "--node-dir", &data_dir, "--name", "district-portal", "--scope", "read"])
        .unwrap();
    let bearer = format!("Bearer {}", reader.trim());
    let call = |method: &str, path: &str| {
        let url = format!("{https_url}{path}");
        let response = match method {
            "GET" => federation.get(&url).header("Authorization", &bearer).call(),
            _ => federation.post(&url).header("Authorization", &bearer).send_json(serde_json::json!({})),
        };
        response.unwrap().status().as_u16()
    };
    assert_eq!(call("GET", "/v1/status"), 200);
    assert_eq!(call("GET", "/v1/policy/summary"), 200);
    assert_eq!(call("POST", "/v1/commands"), 403);
    assert_eq!(call("POST", "/v1/cluster/initialize"), 403);
    assert_eq!(call("GET", "/v1/audit/checkpoints"), 403);
    let stored = std::fs::read_to_string(net.nodes[0].data_dir.join("api-tokens.json")).unwrap();
    assert!(!stored.contains(reader.trim()), "only the token's hash is stored");
}
