//! The console's tests drive Debian's `chromium` over `chromedriver`
//! (fantoccini) against a real federation. One fixture for all of them:
//! the federation with the market department's enterprises and Jing'an
//! Temple street's grant, operators enrolled by their printed one-time
//! codes, and the helpers that click, fill and take screenshots.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use civmesh_policy::Command as PolicyCommand;
use civmesh_testnet::city::{city, enterprise_dataset, street_scoped_grant, write_enterprises, ENTERPRISES};
use civmesh_testnet::{free_port, wait_until, Testnet};
use fantoccini::{Client, ClientBuilder, Locator};

/// Enterprises in the fixture's registry.
pub const ENTERPRISE_COUNT: usize = 3_000;
/// The fixture's nodes, by index.
pub const HUB: usize = 0;
/// The market supervision department: owns the enterprise registry.
pub const MARKET: usize = 1;
/// The civil affairs department.
pub const CIVIL: usize = 2;
/// Jing'an Temple street: holds a grant scoped to its street.
pub const JINGANSI: usize = 3;

/// chromedriver, killed when the test ends however it ends.
pub struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running federation for the console's tests, with the browser's driver.
pub struct ConsoleNet {
    /// The nodes (stopped first).
    pub net: Testnet,
    _driver: Driver,
    driver_port: u16,
    /// The federation's data (removed last).
    pub dir: tempfile::TempDir,
}

impl ConsoleNet {
    /// Hub, market, civil and Jing'an Temple street; the market department
    /// publishes and imports its enterprise registry and grants Jing'an
    /// Temple street its own street.
    pub fn launch() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let specs = city(&["hub", "market", "civil", "jingansi"]);
        let net = Testnet::launch(dir.path(), &specs).unwrap();
        net.sign_and_submit(MARKET, MARKET, PolicyCommand::PublishDataset(enterprise_dataset())).unwrap();
        let csv = dir.path().join("enterprises.csv");
        write_enterprises(&csv, ENTERPRISE_COUNT).unwrap();
        net.import(MARKET, ENTERPRISES, &csv).unwrap();
        net.issue_grant(MARKET, street_scoped_grant("jingansi").unwrap(), JINGANSI).unwrap();
        let (driver, driver_port) = start_driver();
        ConsoleNet { net, _driver: driver, driver_port, dir }
    }

    /// `node`'s data directory, as the CLI takes it.
    pub fn node_dir(&self, node: usize) -> String {
        self.net.nodes[node].data_dir.to_str().unwrap().to_string()
    }

    /// The console's address on `node` (its HTTPS API listener), without a trailing slash.
    pub fn base(&self, node: usize) -> String {
        self.net.api(node).unwrap().runtime().api_url.clone()
    }

    /// Adds an operator on `node` with `civmesh operator add`; returns
    /// what it printed (the enrolment page and the one-time code).
    pub fn add_operator(&self, node: usize, name: &str, role: &str) -> String {
        self.net.add_operator(node, name, role).unwrap()
    }

    /// A fresh browser session (1366×768, headless).
    pub async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,768"],
            }),
        );
        // The node's browser certificate is made at each start (self-signed).
        capabilities.insert("acceptInsecureCerts".into(), serde_json::json!(true));
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.driver_port))
            .await
            .expect("a browser session")
    }

    /// Adds an operator on `node` and enrols them in `client` with the
    /// printed code and `password`: signed in afterwards, at the home page.
    pub async fn enrol(&self, client: &Client, node: usize, name: &str, role: &str, password: &str) {
        let code = code_in(&self.add_operator(node, name, role));
        enrol_with_code(client, &self.base(node), name, &code, password).await;
    }
}

/// An HTTPS client of the console that trusts the federation's CA and
/// carries a browser's session cookie: what the browser does not show (a
/// status, headers, a download).
pub struct BrowserSession {
    agent: ureq::Agent,
    base: String,
    cookie: String,
}

impl ConsoleNet {
    /// `client`'s signed-in session at `node`, outside the browser.
    pub async fn session_of(&self, node: usize, client: &Client) -> BrowserSession {
        let pem = std::fs::read_to_string(self.net.ca_dir.join("ca.pem")).unwrap();
        let ca = civmesh_certs::CaCertificate::from_pem(&pem).unwrap();
        let roots =
            ureq::tls::RootCerts::new_with_certs(&[ureq::tls::Certificate::from_der(ca.der()).to_owned()]);
        let agent = ureq::Agent::config_builder()
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .new_agent();
        let session = client.get_named_cookie(civmesh_node::console::SESSION_COOKIE).await.unwrap();
        BrowserSession {
            agent,
            base: self.base(node),
            cookie: format!("{}={}", civmesh_node::console::SESSION_COOKIE, session.value()),
        }
    }
}

impl BrowserSession {
    /// GET `path`: status, content type, disposition, body.
    pub fn get(&self, path: &str) -> (u16, String, String, Vec<u8>) {
        let response =
            self.agent.get(format!("{}{path}", self.base)).header("Cookie", &self.cookie).call().unwrap();
        Self::read(response)
    }

    /// POST the form `fields` to `path`: status, content type, disposition, body.
    pub fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String, String, Vec<u8>) {
        let response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .send_form(fields.iter().copied())
            .unwrap();
        Self::read(response)
    }

    fn read(mut response: ureq::http::Response<ureq::Body>) -> (u16, String, String, Vec<u8>) {
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|value: &ureq::http::HeaderValue| value.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (kind, disposition) = (header("content-type"), header("content-disposition"));
        let body = response.body_mut().with_config().limit(16 << 20).read_to_vec().unwrap();
        (response.status().as_u16(), kind, disposition, body)
    }
}

fn start_driver() -> (Driver, u16) {
    let port = free_port().unwrap();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; scripts/test.sh installs it)");
    let driver = Driver(child);
    wait_until("chromedriver to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .unwrap();
    (driver, port)
}

/// Where screenshots go: `$CARGO_TARGET_DIR/console-screenshots/`.
pub fn screenshots_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let dir = PathBuf::from(target).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves the page as `NAME.png` under [`screenshots_dir`].
pub async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

/// The text of the element `css` names (it must exist).
pub async fn text(client: &Client, css: &str) -> String {
    client.find(Locator::Css(css)).await.unwrap_or_else(|_| panic!("no {css}")).text().await.unwrap()
}

/// The texts of every element `css` names.
pub async fn texts(client: &Client, css: &str) -> Vec<String> {
    let mut found = Vec::new();
    for element in client.find_all(Locator::Css(css)).await.unwrap() {
        found.push(element.text().await.unwrap());
    }
    found
}

/// Whether the page has an element `css` names.
pub async fn has(client: &Client, css: &str) -> bool {
    client.find(Locator::Css(css)).await.is_ok()
}

/// Types `value` into the field `css` names, after clearing it.
pub async fn fill(client: &Client, css: &str, value: &str) {
    let field = client.find(Locator::Css(css)).await.unwrap_or_else(|_| panic!("no {css}"));
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

/// Clicks a checkbox (which does not leave the page).
pub async fn tick(client: &Client, css: &str) {
    client.find(Locator::Css(css)).await.unwrap_or_else(|_| panic!("no {css}")).click().await.unwrap();
}

/// Chooses the option whose value is `value` in the select `css` names.
pub async fn select(client: &Client, css: &str, value: &str) {
    let field = client.find(Locator::Css(css)).await.unwrap_or_else(|_| panic!("no {css}"));
    field.select_by_value(value).await.unwrap();
}

/// Clicks `css` and waits until the browser has left the page (every click
/// given here submits a form or follows a link).
pub async fn click(client: &Client, css: &str) {
    let page = client.find(Locator::Css("html")).await.unwrap();
    client.find(Locator::Css(css)).await.unwrap_or_else(|_| panic!("no {css}")).click().await.unwrap();
    let left = std::time::Instant::now();
    while page.tag_name().await.is_ok() {
        assert!(left.elapsed() < Duration::from_secs(30), "clicking {css} did not leave the page");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The one-time code `civmesh operator add` or `reset` printed.
pub fn code_in(printed: &str) -> String {
    civmesh_testnet::one_time_code(printed).unwrap()
}

/// Enrols `name` at `base` with a one-time `code`, setting `password`.
pub async fn enrol_with_code(client: &Client, base: &str, name: &str, code: &str, password: &str) {
    client.goto(&format!("{base}/enrol")).await.unwrap();
    fill(client, "#name", name).await;
    fill(client, "#code", code).await;
    fill(client, "#password", password).await;
    fill(client, "#password_again", password).await;
    click(client, "#enrol").await;
}

/// Signs `name` in at `base`.
pub async fn sign_in(client: &Client, base: &str, name: &str, password: &str) {
    client.goto(&format!("{base}/login")).await.unwrap();
    fill(client, "#name", name).await;
    fill(client, "#password", password).await;
    click(client, "#sign-in").await;
}

/// Signs the current operator out (the frame's button).
pub async fn sign_out(client: &Client) {
    click(client, "#sign-out").await;
}
