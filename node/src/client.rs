//! `NodeApi`: the HTTPS client of a running node's API, found through the
//! node's directory (`node.json` for the address, `api-token` for the
//! credential, the federation CA for TLS).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use civmesh_certs::{CaCertificate, NodeCertificate};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{CommandsRequest, CommandsResponse, NodeStatus, PeerAddress};
use crate::config::NodeConfig;
use crate::console::{FORM_COOKIE, SESSION_COOKIE};
use crate::run::{RuntimeInfo, RUNTIME_FILE_NAME};

/// How long one API call may take.
const API_CALL_TIMEOUT_MS: u64 = 30_000;
/// Idle TLS connections an API client keeps for reuse.
const API_IDLE_CONNECTIONS_MAX: usize = 512;

/// A running node's API, found through its directory (`--node-dir`).
pub struct NodeApi {
    base_url: String,
    token: String,
    agent: ureq::Agent,
    runtime: RuntimeInfo,
}

impl NodeApi {
    /// Reads `node.json` and the API token of the node in `node_dir`.
    pub fn open(node_dir: &Path) -> anyhow::Result<Self> {
        let runtime_path = node_dir.join(RUNTIME_FILE_NAME);
        let runtime: RuntimeInfo = serde_json::from_slice(
            &std::fs::read(&runtime_path)
                .with_context(|| format!("{} (is the node running?)", runtime_path.display()))?,
        )?;
        let config = NodeConfig::load(node_dir)?;
        let token_path = NodeConfig::resolve(node_dir, &config.node.api_token_file);
        let token = std::fs::read_to_string(&token_path)
            .with_context(|| format!("reading {}", token_path.display()))?;
        // The API speaks TLS with a certificate from the federation CA: trust
        // that CA alone.
        let ca_path = NodeConfig::resolve(node_dir, &config.node.ca_certificate_file);
        let ca_pem =
            std::fs::read_to_string(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
        let ca_der = CaCertificate::from_pem(&ca_pem)?.der().to_vec();
        let roots =
            ureq::tls::RootCerts::new_with_certs(&[ureq::tls::Certificate::from_der(&ca_der).to_owned()]);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(API_CALL_TIMEOUT_MS)))
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            // Keep TLS connections for reuse: concurrent callers (the
            // benchmarks, department systems) would otherwise pay a
            // handshake per request.
            .max_idle_connections(API_IDLE_CONNECTIONS_MAX)
            .max_idle_connections_per_host(API_IDLE_CONNECTIONS_MAX)
            // The console answers a form with a redirect that sets a cookie.
            .max_redirects(0)
            .build()
            .into();
        Ok(NodeApi { base_url: runtime.api_url.clone(), token: token.trim().to_string(), agent, runtime })
    }

    /// Enrols console operator `name` with the one-time `code` that
    /// `civmesh operator add` printed, setting `password`: their session.
    pub fn console_enrol(&self, name: &str, code: &str, password: &str) -> anyhow::Result<ConsoleSession> {
        let form = [("name", name), ("code", code), ("password", password), ("password_again", password)];
        self.console_open("/enrol", &form)
    }

    /// Posts `form` to the enrolment page with its double-submit token, and
    /// keeps the session cookie the answer sets.
    fn console_open(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<ConsoleSession> {
        let url = format!("{}{path}", self.base_url);
        let mut page = self.agent.get(&url).call()?;
        let form_cookie = set_cookie(&page, FORM_COOKIE).context("no form cookie")?;
        let html = page.body_mut().read_to_string()?;
        let form_token = input_value(&html, "form_token").context("no form token")?;
        let mut fields = form.to_vec();
        fields.push(("form_token", &form_token));
        let answer = self
            .agent
            .post(&url)
            .header("Cookie", format!("{FORM_COOKIE}={form_cookie}"))
            .send_form(fields)?;
        let session = set_cookie(&answer, SESSION_COOKIE)
            .with_context(|| format!("{path} answered {} without a session", answer.status()))?;
        let mut home =
            self.agent.get(&self.base_url).header("Cookie", format!("{SESSION_COOKIE}={session}")).call()?;
        let csrf = input_value(&home.body_mut().read_to_string()?, "csrf").context("no CSRF token")?;
        Ok(ConsoleSession { base_url: self.base_url.clone(), agent: self.agent.clone(), session, csrf })
    }

    fn finish<T: DeserializeOwned>(
        &self,
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<T> {
        let mut response = response.with_context(|| format!("calling {}{path}", self.base_url))?;
        let status = response.status();
        let body = response.body_mut().read_to_string()?;
        anyhow::ensure!(status.is_success(), "{}{path} answered {status}: {body}", self.base_url);
        serde_json::from_str(&body).with_context(|| format!("decoding the answer of {path}"))
    }

    fn call_get(&self, path: &str) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let response = self
            .agent
            .get(format!("{}{path}", self.base_url))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        response.with_context(|| format!("calling {}{path}", self.base_url))
    }

    /// GET `path` as text (e.g. `/metrics`).
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let mut response = self.call_get(path)?;
        let status = response.status();
        let body = response.body_mut().read_to_string()?;
        anyhow::ensure!(status.is_success(), "{}{path} answered {status}: {body}", self.base_url);
        Ok(body)
    }

    /// GET `path` as bytes (binary answers, e.g. the audit archive), at
    /// most `bytes_max`.
    pub fn get_bytes(&self, path: &str, bytes_max: u64) -> anyhow::Result<Vec<u8>> {
        let mut response = self.call_get(path)?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "{}{path} answered {status}", self.base_url);
        Ok(response.body_mut().with_config().limit(bytes_max).read_to_vec()?)
    }

    /// GET `path`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .agent
            .get(format!("{}{path}", self.base_url))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        self.finish(path, response)
    }

    /// POST (or PUT) `body` as JSON to `path`.
    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base_url);
        let authorization = format!("Bearer {}", self.token);
        let response = match method {
            "PUT" => self.agent.put(url).header("Authorization", authorization).send_json(body),
            _ => self.agent.post(url).header("Authorization", authorization).send_json(body),
        };
        self.finish(path, response)
    }

    /// POST `bytes` (a file, as it is) to `path`; the answer is JSON.
    pub fn send_bytes<T: DeserializeOwned>(&self, path: &str, bytes: &[u8]) -> anyhow::Result<T> {
        let response = self
            .agent
            .post(format!("{}{path}", self.base_url))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/octet-stream")
            .send(bytes);
        self.finish(path, response)
    }

    /// This node's status.
    pub fn status(&self) -> anyhow::Result<NodeStatus> {
        self.get("/v1/status")
    }

    /// Submits signed commands in one log entry.
    pub fn submit(&self, commands: &[civmesh_policy::SignedCommand]) -> anyhow::Result<CommandsResponse> {
        let envelopes = commands
            .iter()
            .map(|command| Ok(base64::engine::general_purpose::STANDARD.encode(command.to_bytes()?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.send("POST", "/v1/commands", &CommandsRequest { envelopes })
    }

    /// What the node wrote about itself when it started.
    pub fn runtime(&self) -> &RuntimeInfo {
        &self.runtime
    }

    pub(crate) fn peer_address(&self) -> anyhow::Result<PeerAddress> {
        let address = self.runtime.p2p_addresses.first().context("the node reports no listen address")?;
        Ok(PeerAddress { peer_id: self.runtime.peer_id.clone(), address: address.clone() })
    }

    pub(crate) fn certificate_der(&self) -> anyhow::Result<Vec<u8>> {
        let answer: serde_json::Value = self.get("/v1/certificate")?;
        let pem = answer["certificate_pem"].as_str().context("no certificate in the answer")?;
        Ok(NodeCertificate::from_pem(pem)?.der().to_vec())
    }
}

/// A signed-in console operator over HTTPS, without a browser: the
/// benchmarks' way to fetch console pages.
pub struct ConsoleSession {
    base_url: String,
    agent: ureq::Agent,
    session: String,
    csrf: String,
}

impl ConsoleSession {
    /// GET the console page at `path`: its HTML (it must answer 200).
    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        let response =
            self.agent.get(format!("{}{path}", self.base_url)).header("Cookie", self.cookie()).call();
        Self::page(path, response)
    }

    /// POST `form` (and the session's CSRF token) to `path`: the page's
    /// HTML (it must answer 200).
    pub fn post(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut fields = form.to_vec();
        fields.push(("csrf", &self.csrf));
        let response = self
            .agent
            .post(format!("{}{path}", self.base_url))
            .header("Cookie", self.cookie())
            .send_form(fields);
        Self::page(path, response)
    }

    fn cookie(&self) -> String {
        format!("{SESSION_COOKIE}={}", self.session)
    }

    fn page(
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<String> {
        let mut response = response.with_context(|| format!("calling {path}"))?;
        let status = response.status();
        let body = response.body_mut().read_to_string()?;
        anyhow::ensure!(status == ureq::http::StatusCode::OK, "{path} answered {status}");
        Ok(body)
    }
}

/// The value `response` sets for cookie `name`.
fn set_cookie(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split(';').next()?.split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty())
        .map(|(_, value)| value.to_string())
}

/// The value of the first `<input name="NAME" value="...">` in `html`.
fn input_value(html: &str, name: &str) -> Option<String> {
    let after = html.split(&format!("name=\"{name}\" value=\"")).nth(1)?;
    after.split('"').next().map(str::to_string)
}
