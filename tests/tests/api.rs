//! The node's HTTP API speaks only TLS, with the node's CA-issued
//! certificate, and answers only bearers of the node's API token or of a
//! scoped token, within its scopes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use civmesh_testnet::city::city;
use civmesh_testnet::{SnapshotPolicy, Testnet};

/// An HTTPS client that trusts the federation CA of the node in `data_dir`
/// and reports error statuses as answers.
fn federation_agent(data_dir: &std::path::Path) -> ureq::Agent {
    let ca_pem = std::fs::read_to_string(data_dir.join("ca.pem")).unwrap();
    let ca_der = civmesh_certs::CaCertificate::from_pem(&ca_pem).unwrap().der().to_vec();
    let roots = ureq::tls::RootCerts::new_with_certs(&[ureq::tls::Certificate::from_der(&ca_der).to_owned()]);
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
        .build()
        .into()
}

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

    let federation = federation_agent(&net.nodes[0].data_dir);
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

/// The request the contract test sends to one operation: valid where that is
/// cheap, else one that must be refused with a documented error. No request
/// changes the cluster's membership.
fn contract_request(method: &str, path: &str) -> (String, Option<Vec<u8>>) {
    const UNKNOWN_ID: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    let path = path.replace("{id}", UNKNOWN_ID).replace("{index}", "0");
    let json = |value: serde_json::Value| Some(value.to_string().into_bytes());
    let nowhere =
        serde_json::json!({ "dataset": "nobody/nothing", "keys": ["k"], "fields": ["f"], "purpose": "p" });
    let body = match (method, path.as_str()) {
        ("get", _) => None,
        // No voter list without this node, nor a malformed peer, is taken.
        ("post", "/v1/cluster/initialize") => json(serde_json::json!({ "voters": [] })),
        ("post", "/v1/cluster/learners") => {
            json(serde_json::json!({ "peer_id": "not-a-peer", "address": "x" }))
        }
        ("put", "/v1/cluster/voters") => json(serde_json::json!({ "peer_ids": ["not-a-peer"] })),
        ("post", "/v1/commands") => json(serde_json::json!({ "envelopes": ["AAAA"] })),
        ("post", "/v1/query" | "/v1/subscriptions") => json(nowhere),
        ("post", "/v1/records/show") => json(serde_json::json!({ "dataset": "nobody/nothing", "key": "k" })),
        ("post", "/v1/records/import") => {
            return (
                format!("{path}?dataset=nobody/nothing"),
                json(serde_json::json!({ "batch": "b", "first_line": 1, "rows": [] })),
            )
        }
        ("post", "/v1/corrections/attachments") => Some(b"%PDF-1.4 evidence".to_vec()),
        ("post", "/v1/corrections") => json(serde_json::json!({
            "dataset": "nobody/nothing", "record_key": "k", "base_version": 1, "changes": {}, "reason": "r",
            "operator": "contract test",
        })),
        _ => json(serde_json::json!({ "reason": "r", "operator": "contract test" })),
    };
    let path = if path == "/v1/records" { format!("{path}?dataset=nobody/nothing") } else { path };
    (path, body)
}

/// The node's `/openapi.json` is its contract: every operation in it is
/// called, and each answer's status and content type are ones the document
/// lists for that operation. Errors, unknown routes and wrong methods
/// included, answer JSON.
#[test]
fn every_route_in_the_openapi_document_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let mut net =
        Testnet::create(dir.path(), &city(&["hub", "market", "civil"]), SnapshotPolicy::default()).unwrap();
    net.start_all().unwrap();
    net.bootstrap().unwrap();
    let data_dir = &net.nodes[1].data_dir;
    let runtime: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("node.json")).unwrap()).unwrap();
    let base_url = runtime["api_url"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {}", std::fs::read_to_string(data_dir.join("api-token")).unwrap().trim());
    let agent = federation_agent(data_dir);
    let call = |method: &str, path: &str, body: Option<Vec<u8>>| {
        let request = ureq::http::Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(format!("{base_url}{path}"))
            .header("Authorization", &bearer);
        let mut response = match body {
            None => agent.run(request.body(()).unwrap()),
            Some(bytes) => {
                let kind =
                    if bytes.starts_with(b"%PDF") { "application/octet-stream" } else { "application/json" };
                agent.run(request.header("Content-Type", kind).body(bytes).unwrap())
            }
        }
        .unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_string();
        let media = content_type.split(';').next().unwrap().trim().to_string();
        (status, media, response.body_mut().read_to_vec().unwrap())
    };

    let (status, media, text) = call("get", "/openapi.json", None);
    assert_eq!((status, media.as_str()), (200, "application/json"));
    let document: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let mut called = 0;
    for (template, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let (path, body) = contract_request(method, template);
            let (status, media, text) = call(method, &path, body);
            let answer = &operation["responses"][status.to_string()];
            let answered = String::from_utf8_lossy(&text);
            assert!(answer.is_object(), "{method} {path}: {status} is not documented: {answered}");
            assert!(
                answer["content"].get(&media).is_some(),
                "{method} {path}: {status} answered {media}, documented {}",
                answer["content"]
            );
            if status >= 400 {
                let error: serde_json::Value = serde_json::from_slice(&text).unwrap();
                assert!(error["error"].is_string(), "{method} {path}: {answered}");
            }
            called += 1;
        }
    }
    assert!(called >= 30, "only {called} operations in the document");

    for (method, path, status) in [("get", "/v1/no-such-route", 404), ("delete", "/v1/records", 405)] {
        let (answered, media, text) = call(method, path, None);
        assert_eq!((answered, media.as_str()), (status, "application/json"), "{method} {path}");
        let error: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert!(error["error"].is_string());
    }
}
