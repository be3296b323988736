//! civmesh testnet: builds a local federation of real `civmesh` processes on
//! loopback, each with its own data directory, certificate and ports, and
//! lets tests and benchmarks start, stop, kill, freeze and inspect them.
//!
//! The processes are the real binary (`civmesh run`), talking libp2p to each
//! other and keeping RocksDB on disk; this crate only drives them from
//! outside, through the CLI and their HTTP APIs.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
pub use civmesh_node::client::NodeApi;

pub mod city;
pub mod hostile;
pub mod netns;
mod ports;
pub mod proxy;

pub use ports::free_port;

/// How long a node may take to write `node.json` after starting.
pub const NODE_START_WAIT_MS_MAX: u64 = 20_000;
/// How often conditions are polled while waiting.
pub const POLL_INTERVAL_MS: u64 = 50;
/// How long [`stop_every_node`] waits for the nodes to exit after SIGTERM
/// before it sends SIGKILL.
pub const NODE_STOP_WAIT_MS_MAX: u64 = 30_000;

/// The node (and CLI) processes this process started and has not seen
/// exit, so a signal handler can stop them all ([`stop_every_node`]).
struct Running {
    pids: BTreeSet<u32>,
    /// Set by [`stop_every_node`]: no node starts after it.
    stopping: bool,
}

static RUNNING: Mutex<Running> = Mutex::new(Running { pids: BTreeSet::new(), stopping: false });

fn forget_pid(pid: u32) {
    if let Ok(mut running) = RUNNING.lock() {
        running.pids.remove(&pid);
    }
}

/// Stops every node process any [`Testnet`] of this process started: SIGCONT
/// (for frozen ones) and SIGTERM, then waits until each has exited
/// (SIGKILL after [`NODE_STOP_WAIT_MS_MAX`]). Starting a node fails from
/// then on. For signal handlers: a program that is interrupted calls this
/// and exits only when its nodes have stopped.
pub fn stop_every_node() {
    let pids = match RUNNING.lock() {
        Ok(mut running) => {
            running.stopping = true;
            running.pids.clone()
        }
        Err(_) => return,
    };
    for pid in &pids {
        let _ = signal(*pid, "CONT");
        let _ = signal(*pid, "TERM");
    }
    let deadline = Instant::now() + Duration::from_millis(NODE_STOP_WAIT_MS_MAX);
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|pid| process_alive(*pid)).collect();
        if alive.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for pid in alive {
                let _ = signal(pid, "KILL");
            }
            std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS * 4));
            return;
        }
        std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
    }
}

/// Whether a process exists and has not exited (a zombie has: it only waits
/// for its parent to collect its status).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X')),
    }
}

/// When nodes snapshot and purge their logs.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotPolicy {
    /// Snapshot after this many entries.
    pub after_entries: u64,
    /// Entries kept behind a snapshot.
    pub entries_kept: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy { after_entries: 5_000, entries_kept: 1_000 }
    }
}

/// What one node of a testnet is.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// A short name, also its data directory's name.
    pub name: String,
    /// Its organisation id.
    pub org: String,
    /// Its role.
    pub role: String,
    /// Whether it is a Raft voter (otherwise a learner).
    pub voter: bool,
}

impl NodeSpec {
    /// A node spec.
    pub fn new(name: &str, org: &str, role: &str, voter: bool) -> Self {
        NodeSpec { name: name.into(), org: org.into(), role: role.into(), voter }
    }
}

/// One node: its directory, ports and (when running) process.
#[derive(Debug)]
pub struct TestNode {
    /// Its spec.
    pub spec: NodeSpec,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its PeerId.
    pub peer_id: String,
    process: Option<Child>,
}

/// A local federation.
pub struct Testnet {
    /// The root directory (CA, node directories, logs).
    pub root: PathBuf,
    /// The CA directory.
    pub ca_dir: PathBuf,
    /// The nodes, in spec order.
    pub nodes: Vec<TestNode>,
    binary: PathBuf,
    isolation: Option<crate::netns::Isolation>,
    proxy: Option<proxy::LoopbackProxy>,
}

/// The `civmesh` binary: `$CIVMESH_BIN`, or beside the running test's
/// `deps/` directory in the cargo target directory.
pub fn civmesh_binary() -> anyhow::Result<PathBuf> {
    let binary = match std::env::var_os("CIVMESH_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe()?;
            let mut directory = exe.parent().context("the test binary has no directory")?.to_path_buf();
            if directory.ends_with("deps") {
                directory.pop();
            }
            directory.join("civmesh")
        }
    };
    anyhow::ensure!(
        binary.exists(),
        "the civmesh binary is missing at {} (run `cargo build --bins` first)",
        binary.display()
    );
    Ok(binary)
}

/// `make(number)` for every number in `numbers`, in order, computed on
/// every core (each thread takes a contiguous part): for signing many
/// commands, the client's cost, before a measurement or a test starts.
pub fn on_every_core<T: Send>(
    numbers: std::ops::Range<u64>,
    make: impl Fn(u64) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from) as u64;
    let part = (numbers.end.saturating_sub(numbers.start)).div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let make = &make;
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let start = numbers.start.saturating_add(thread * part).min(numbers.end);
                let end = start.saturating_add(part).min(numbers.end);
                scope.spawn(move || (start..end).map(make).collect::<anyhow::Result<Vec<T>>>())
            })
            .collect();
        let mut made = Vec::new();
        for worker in workers {
            made.extend(worker.join().map_err(|_| anyhow::anyhow!("a worker panicked"))??);
        }
        Ok(made)
    })
}

/// The value of `series` (a metric's name with its labels, as printed, e.g.
/// `civmesh_queries_asked_total{outcome="released"}`) in a node's
/// `/metrics` text, if the node reports it.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `check` until it yields a value or `timeout` passes.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
    }
}

impl Testnet {
    /// A federation of `specs` under `root`, started and bootstrapped, with
    /// the default snapshot policy: what most tests begin with.
    pub fn launch(root: &Path, specs: &[NodeSpec]) -> anyhow::Result<Self> {
        let mut net = Testnet::create(root, specs, SnapshotPolicy::default())?;
        net.start_all()?;
        net.bootstrap()?;
        Ok(net)
    }

    /// Creates the CA and every node's data directory under `root` (which
    /// must be empty or absent). Ports are fixed at creation so restarted
    /// nodes come back at the same addresses.
    pub fn create(root: &Path, specs: &[NodeSpec], snapshot: SnapshotPolicy) -> anyhow::Result<Self> {
        let addresses = |_: usize| -> anyhow::Result<(String, String)> {
            Ok((format!("/ip4/127.0.0.1/tcp/{}", free_port()?), format!("127.0.0.1:{}", free_port()?)))
        };
        Self::create_with(root, specs, snapshot, None, addresses)
    }

    /// [`Testnet::create`], with each node in a network namespace of its
    /// own, joined by a bridge, so [`Testnet::partition`] can cut the
    /// network between any two groups. Needs root and `ip netns`.
    pub fn create_isolated(
        root: &Path,
        specs: &[NodeSpec],
        snapshot: SnapshotPolicy,
    ) -> anyhow::Result<Self> {
        let isolation = crate::netns::Isolation::create(specs.len())?;
        let addresses: Vec<(String, String)> = (0..specs.len())
            .map(|index| {
                let ip = isolation.node_ip(index);
                (format!("/ip4/{ip}/tcp/7000"), format!("{ip}:8000"))
            })
            .collect();
        Self::create_with(root, specs, snapshot, Some(isolation), |index| Ok(addresses[index].clone()))
    }

    fn create_with(
        root: &Path,
        specs: &[NodeSpec],
        snapshot: SnapshotPolicy,
        isolation: Option<crate::netns::Isolation>,
        addresses: impl Fn(usize) -> anyhow::Result<(String, String)>,
    ) -> anyhow::Result<Self> {
        let binary = civmesh_binary()?;
        anyhow::ensure!(
            !root.join("ca").join("ca.pem").exists(),
            "{} already holds a civmesh federation (ca/ca.pem); use an empty directory",
            root.display()
        );
        std::fs::create_dir_all(root)?;
        let ca_dir = root.join("ca");
        run_cli(&binary, &["ca", "init", "--ca-dir", path_str(&ca_dir)?, "--name", "civmesh testnet"])?;
        // Keys first, so every node's config can name the voters as bootstrap peers.
        let mut peer_ids = Vec::new();
        for spec in specs {
            let key_path = root.join(format!("{}.key", spec.name));
            let peer_id = run_cli(&binary, &["key", "generate", "--out", path_str(&key_path)?])?;
            peer_ids.push(peer_id.trim().to_string());
        }
        let voters: Vec<&String> =
            specs.iter().zip(&peer_ids).filter(|(spec, _)| spec.voter).map(|(_, id)| id).collect();
        let mut nodes = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            let data_dir = root.join(&spec.name);
            let key_path = root.join(format!("{}.key", spec.name));
            let (p2p, api) = addresses(index)?;
            let after = snapshot.after_entries.to_string();
            let kept = snapshot.entries_kept.to_string();
            let mut args = vec![
                "init",
                "--node-dir",
                path_str(&data_dir)?,
                "--ca-dir",
                path_str(&ca_dir)?,
                "--org",
                &spec.org,
                "--role",
                &spec.role,
                "--p2p-listen",
                &p2p,
                "--api-listen",
                &api,
                "--snapshot-after-entries",
                &after,
                "--entries-kept-after-snapshot",
                &kept,
                "--key-file",
                path_str(&key_path)?,
            ];
            for voter in &voters {
                args.push("--bootstrap-peer");
                args.push(voter);
            }
            let peer_id = run_cli(&binary, &args)?.trim().to_string();
            nodes.push(TestNode { spec: spec.clone(), data_dir, peer_id, process: None });
        }
        Ok(Testnet { root: root.to_path_buf(), ca_dir, nodes, binary, isolation, proxy: None })
    }

    /// [`Testnet::create`], with every node-to-node connection passing
    /// through a fault-injecting loopback proxy ([`proxy`]), so
    /// [`Testnet::partition`] works without network namespaces or root.
    pub fn create_proxied(root: &Path, specs: &[NodeSpec], snapshot: SnapshotPolicy) -> anyhow::Result<Self> {
        let mut listen_ports = Vec::new();
        let mut proxy_ports = Vec::new();
        for _ in specs {
            listen_ports.push(free_port()?);
            proxy_ports.push(free_port()?);
        }
        let addresses: Vec<(String, String)> = listen_ports
            .iter()
            .map(|port| Ok((format!("/ip4/127.0.0.1/tcp/{port}"), format!("127.0.0.1:{}", free_port()?))))
            .collect::<anyhow::Result<_>>()?;
        let mut net = Self::create_with(root, specs, snapshot, None, |index| Ok(addresses[index].clone()))?;
        for (node, proxy_port) in net.nodes.iter().zip(&proxy_ports) {
            advertise(&node.data_dir, &format!("/ip4/127.0.0.1/tcp/{proxy_port}"))?;
        }
        net.proxy = Some(proxy::LoopbackProxy::start(&proxy_ports, &listen_ports)?);
        Ok(net)
    }

    /// Cuts the network between every node in `one` and every node in
    /// `other` (both ways; the test itself still reaches every node). Only
    /// for a testnet made with [`Testnet::create_isolated`] or
    /// [`Testnet::create_proxied`].
    pub fn partition(&mut self, one: &[usize], other: &[usize]) -> anyhow::Result<()> {
        match (&mut self.isolation, &self.proxy) {
            (Some(isolation), _) => isolation.partition(one, other),
            (None, Some(proxy)) => proxy.partition(one, other),
            (None, None) => anyhow::bail!("this testnet cannot be partitioned"),
        }
    }

    /// Undoes every partition.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        match (&mut self.isolation, &self.proxy) {
            (Some(isolation), _) => isolation.heal(),
            (None, Some(proxy)) => proxy.heal(),
            (None, None) => anyhow::bail!("this testnet cannot be partitioned"),
        }
    }

    /// The index of the node called `name`.
    pub fn index(&self, name: &str) -> anyhow::Result<usize> {
        self.nodes.iter().position(|node| node.spec.name == name).with_context(|| format!("no node {name}"))
    }

    /// Starts node `index` and waits until its API answers.
    pub fn start(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        anyhow::ensure!(node.process.is_none(), "{} is already running", node.spec.name);
        let _ = std::fs::remove_file(node.data_dir.join("node.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("{}.log", node.spec.name)))?;
        let mut command = match &self.isolation {
            Some(isolation) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &isolation.namespace(index)]).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        let mut running = RUNNING.lock().map_err(|_| anyhow::anyhow!("the process registry is poisoned"))?;
        anyhow::ensure!(!running.stopping, "the testnet is stopping; {} not started", node.spec.name);
        let child = command
            .args(["run", "--node-dir", path_str(&node.data_dir)?])
            .env("CIVMESH_LOG", std::env::var("CIVMESH_LOG").unwrap_or_else(|_| "info".to_string()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", node.spec.name))?;
        running.pids.insert(child.id());
        drop(running);
        node.process = Some(child);
        let data_dir = node.data_dir.clone();
        wait_until(
            &format!("{} to answer", node.spec.name),
            Duration::from_millis(NODE_START_WAIT_MS_MAX),
            || NodeApi::open(&data_dir).ok().and_then(|api| api.status().ok()),
        )?;
        Ok(())
    }

    /// Starts every node, after checking that no node's port is taken.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        if self.isolation.is_none() {
            for node in &self.nodes {
                check_ports_free(node)?;
            }
        }
        (0..self.nodes.len()).try_for_each(|index| self.start(index))
    }

    /// `kill -9`: no chance to flush or say goodbye.
    pub fn kill9(&mut self, index: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[index].process.take() {
            child.kill()?;
            child.wait()?;
            forget_pid(child.id());
        }
        Ok(())
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self, index: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[index].process.take() {
            signal(child.id(), "TERM")?;
            child.wait()?;
            forget_pid(child.id());
        }
        Ok(())
    }

    /// SIGSTOP: the process freezes; to its peers it is cut off.
    pub fn freeze(&self, index: usize) -> anyhow::Result<()> {
        self.pid(index).and_then(|pid| signal(pid, "STOP"))
    }

    /// SIGCONT: a frozen process resumes.
    pub fn thaw(&self, index: usize) -> anyhow::Result<()> {
        self.pid(index).and_then(|pid| signal(pid, "CONT"))
    }

    /// The process id of node `index`, if it runs.
    pub fn pid(&self, index: usize) -> anyhow::Result<u32> {
        self.nodes[index].process.as_ref().map(Child::id).context("the node is not running")
    }

    /// The API of node `index` (it must be running).
    pub fn api(&self, index: usize) -> anyhow::Result<NodeApi> {
        NodeApi::open(&self.nodes[index].data_dir)
    }

    /// The federation's subject-key secret, from the CA's directory (as an
    /// auditor holds it).
    pub fn federation_secret(&self) -> anyhow::Result<Vec<u8>> {
        let path = self.ca_dir.join("subject-key.secret");
        let secret = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(secret.trim().as_bytes().to_vec())
    }

    /// The key node `owner`'s organisation gives node `requester`'s to hash
    /// the subjects it names (derived here as an auditor would).
    pub fn pair_key(&self, owner: usize, requester: usize) -> anyhow::Result<[u8; 32]> {
        use civmesh_policy::subject_keys::{org_subject_key, pair_subject_key};
        let org = |index: usize| civmesh_certs::OrgId::new(&self.nodes[index].spec.org);
        Ok(pair_subject_key(&org_subject_key(&self.federation_secret()?, &org(owner)?), &org(requester)?))
    }

    /// The hash of `record_key` in the requests node `requester`'s
    /// organisation makes to node `owner`'s.
    pub fn subject_hash(
        &self,
        owner: usize,
        requester: usize,
        record_key: &str,
    ) -> anyhow::Result<civmesh_policy::model::SubjectKeyHash> {
        Ok(civmesh_policy::model::SubjectKeyHash::of(&self.pair_key(owner, requester)?, record_key))
    }

    /// How many entries node `node`'s replica of the access log holds in
    /// all (`total`: the entries it shows are only those that concern its
    /// organisation).
    pub fn access_log_total(&self, node: usize) -> anyhow::Result<u64> {
        let page: serde_json::Value = self.api(node)?.get("/v1/access-log?limit=1")?;
        page["total"].as_u64().context("the access log page has no total")
    }

    /// The entries of node `node`'s access log that concern its
    /// organisation (`GET /v1/access-log`, page by page), as JSON.
    pub fn access_log(&self, node: usize) -> anyhow::Result<Vec<serde_json::Value>> {
        let api = self.api(node)?;
        let mut entries = Vec::new();
        let mut from = Some(0);
        while let Some(start) = from {
            let page: serde_json::Value = api.get(&format!("/v1/access-log?from={start}"))?;
            entries.extend(page["entries"].as_array().context("no entries in the page")?.iter().cloned());
            from = page["next_from"].as_u64();
            anyhow::ensure!(from.is_none_or(|next| next > start), "the access log's pages do not advance");
        }
        Ok(entries)
    }

    /// Whether node `node`'s replica holds access-log entry `sequence`
    /// (whether or not it concerns the node, which shows only those that do).
    pub fn holds_access_entry(&self, node: usize, sequence: u64) -> anyhow::Result<bool> {
        let page: serde_json::Value =
            self.api(node)?.get(&format!("/v1/access-log?from={sequence}&limit=1"))?;
        let total = page["total"].as_u64().context("the access log page has no total")?;
        Ok(sequence < total && page["held_from"].as_u64().is_some_and(|first| first <= sequence))
    }

    /// Access-log entry `sequence` at node `node`, if the node holds it and
    /// it concerns the node's organisation.
    pub fn access_log_entry(&self, node: usize, sequence: u64) -> anyhow::Result<Option<serde_json::Value>> {
        let page: serde_json::Value =
            self.api(node)?.get(&format!("/v1/access-log?from={sequence}&limit=1"))?;
        // A node that joined by snapshot starts its pages where it holds entries.
        Ok(page["entries"]
            .as_array()
            .and_then(|entries| entries.first())
            .filter(|entry| entry["sequence"].as_u64() == Some(sequence))
            .cloned())
    }

    /// Every version of record `key` of `dataset` at its owner, node
    /// `owner` (`POST /v1/records/show`), oldest first, as JSON.
    pub fn record_history(
        &self,
        owner: usize,
        dataset: &str,
        key: &str,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let lookup = serde_json::json!({ "dataset": dataset, "key": key });
        let answer: serde_json::Value = self.api(owner)?.send("POST", "/v1/records/show", &lookup)?;
        answer["history"].as_array().cloned().context("no history in the answer")
    }

    /// Runs a `civmesh` CLI command and returns its standard output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        run_cli(&self.binary, args)
    }

    /// `civmesh operator add` on node `index`: what it printed (the
    /// console's enrolment page and the one-time code, see [`one_time_code`]).
    pub fn add_operator(&self, index: usize, name: &str, role: &str) -> anyhow::Result<String> {
        let node_dir = path_str(&self.nodes[index].data_dir)?;
        self.cli(&["operator", "add", "--node-dir", node_dir, "--name", name, "--role", role])
    }

    /// `civmesh correction submit` at node `index` on a record of the demo's
    /// enterprise registry, with the city's usual reason, evidence and
    /// operator, each of `changes` (`FIELD=VALUE`) and `extra` arguments;
    /// the view the CLI prints.
    pub fn submit_correction(
        &self,
        index: usize,
        key: &str,
        base: u64,
        changes: &[&str],
        wait_ms: u64,
        extra: &[&str],
    ) -> anyhow::Result<serde_json::Value> {
        let node_dir = self.nodes[index].data_dir.to_str().context("a non-UTF-8 data directory")?.to_string();
        let (wait, base) = (wait_ms.to_string(), base.to_string());
        let mut args = vec![
            "correction",
            "submit",
            "--node-dir",
            &node_dir,
            "--dataset",
            city::ENTERPRISES,
            "--record-key",
            key,
            "--base-version",
            &base,
            "--reason",
            "operating address differs from registration",
            "--evidence",
            "seen on inspection",
            "--operator",
            "Li Wei",
            "--wait-ms",
            &wait,
        ];
        for change in changes {
            args.extend(["--set", change]);
        }
        args.extend_from_slice(extra);
        Ok(serde_json::from_str(&self.cli(&args)?)?)
    }

    /// Signs `command` with node `signer`'s key and commits it through node
    /// `via`; the log's outcome, or its rejection as an error.
    pub fn sign_and_submit(
        &self,
        via: usize,
        signer: usize,
        command: civmesh_policy::Command,
    ) -> anyhow::Result<civmesh_policy::Applied> {
        self.sign_with_and_submit(via, &self.nodes[signer].data_dir.join("node.key"), command)
    }

    /// Signs `command` with the key in `key_file` and commits it through
    /// node `via`; the log's outcome, or its rejection as an error.
    fn sign_with_and_submit(
        &self,
        via: usize,
        key_file: &Path,
        command: civmesh_policy::Command,
    ) -> anyhow::Result<civmesh_policy::Applied> {
        let key = civmesh_certs::NodeKey::load(key_file)?;
        let envelope = civmesh_certs::SignedEnvelope::sign(&key, &command, civmesh_certs::now_unix_millis())?;
        let outcome =
            self.api(via)?.submit(&[envelope])?.outcomes.into_iter().next().context("no outcome")?;
        outcome.map_err(|rejection| anyhow::anyhow!("rejected: {rejection}"))
    }

    /// Issues `spec` (signed by node `owner`) and waits until node
    /// `holder`'s replica has it; its id.
    pub fn issue_grant(
        &self,
        owner: usize,
        spec: civmesh_policy::GrantSpec,
        holder: usize,
    ) -> anyhow::Result<u64> {
        let civmesh_policy::Applied::GrantIssued(grant) =
            self.sign_and_submit(owner, owner, civmesh_policy::Command::IssueGrant(spec))?
        else {
            anyhow::bail!("the grant was applied as something else")
        };
        wait_until("the grant at its holder", Duration::from_secs(10), || {
            self.api(holder).ok()?.get::<serde_json::Value>(&format!("/v1/grants/{grant}")).ok()
        })?;
        Ok(grant)
    }

    /// `civmesh records import` of `file` into `dataset` at node `owner`.
    pub fn import(&self, owner: usize, dataset: &str, file: &Path) -> anyhow::Result<String> {
        let node_dir = path_str(&self.nodes[owner].data_dir)?;
        self.cli(&["records", "import", "--node-dir", node_dir, "--dataset", dataset, path_str(file)?])
    }

    /// `civmesh audit export` of node `node`'s log to `out`.
    pub fn audit_export(&self, node: usize, out: &Path) -> anyhow::Result<String> {
        let node_dir = path_str(&self.nodes[node].data_dir)?;
        self.cli(&["audit", "export", "--node-dir", node_dir, "--out", path_str(out)?])
    }

    /// `civmesh audit verify` of `bundle` against the CA certificate
    /// `ca_cert`, keeping the checkpoints seen in `seen`; what it printed.
    pub fn audit_verify(&self, bundle: &Path, ca_cert: &Path, seen: &Path) -> anyhow::Result<String> {
        self.cli(&[
            "audit",
            "verify",
            "--bundle",
            path_str(bundle)?,
            "--ca-cert",
            path_str(ca_cert)?,
            "--seen",
            path_str(seen)?,
        ])
    }

    /// `civmesh correction auto-accept` at node `owner`: corrections from
    /// `submitter` to `dataset` changing only `field` need no review.
    pub fn auto_accept(
        &self,
        owner: usize,
        dataset: &str,
        submitter: &str,
        field: &str,
    ) -> anyhow::Result<()> {
        let node_dir = path_str(&self.nodes[owner].data_dir)?;
        let args = [
            "correction",
            "auto-accept",
            "--node-dir",
            node_dir,
            "--dataset",
            dataset,
            "--submitter",
            submitter,
            "--field",
            field,
        ];
        self.cli(&args).map(|_| ())
    }

    /// Initialises the voters, commits genesis with every node as a founding
    /// member, and adds every non-voter as a learner.
    pub fn bootstrap(&self) -> anyhow::Result<()> {
        self.bootstrap_nodes(&(0..self.nodes.len()).collect::<Vec<_>>())
    }

    /// [`Testnet::bootstrap`] for the nodes at `indices` only.
    pub fn bootstrap_nodes(&self, indices: &[usize]) -> anyhow::Result<()> {
        let mut args = vec![
            "cluster",
            "bootstrap",
            "--ca-dir",
            path_str(&self.ca_dir)?,
            "--federation-name",
            "civmesh testnet",
        ];
        for node in indices.iter().map(|index| &self.nodes[*index]) {
            args.push(if node.spec.voter { "--voter-node-dir" } else { "--member-node-dir" });
            args.push(path_str(&node.data_dir)?);
        }
        self.cli(&args)?;
        for index in indices.iter().copied().filter(|index| !self.nodes[*index].spec.voter) {
            self.add_learner(index)?;
        }
        Ok(())
    }

    /// Admits node `index` to the federation with the CA key, submitting
    /// through node `via`.
    pub fn admit(&self, index: usize, via: usize) -> anyhow::Result<()> {
        let args = [
            "cluster",
            "admit",
            "--ca-dir",
            path_str(&self.ca_dir)?,
            "--node-dir",
            path_str(&self.nodes[via].data_dir)?,
            "--new-node-dir",
            path_str(&self.nodes[index].data_dir)?,
        ];
        self.cli(&args).map(|_| ())
    }

    /// Admits node `index` from its certificate file, without its process
    /// (a member that only signs), submitting through node `via`.
    pub fn admit_offline(&self, index: usize, via: usize) -> anyhow::Result<()> {
        let pem = std::fs::read_to_string(self.nodes[index].data_dir.join("node.pem"))?;
        let certificate_der = civmesh_certs::NodeCertificate::from_pem(&pem)?.der().to_vec();
        let command = civmesh_policy::Command::AdmitMember { certificate_der };
        self.sign_with_and_submit(via, &self.ca_dir.join("ca.key"), command).map(|_| ())
    }

    /// Adds node `index` as a learner, through the leader among the voters.
    pub fn add_learner(&self, index: usize) -> anyhow::Result<()> {
        let args = self.add_learner_args(index)?;
        self.cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).map(|_| ())
    }

    /// [`Testnet::add_learner`] on a thread of its own, so the caller can
    /// act on the learner (kill it, start it again) while it is added: the
    /// command ends once the learner caught up, or after its 30 s timeout.
    pub fn add_learner_in_background(
        &self,
        index: usize,
    ) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<String>>> {
        let args = self.add_learner_args(index)?;
        let binary = self.binary.clone();
        Ok(std::thread::spawn(move || run_cli(&binary, &args.iter().map(String::as_str).collect::<Vec<_>>())))
    }

    fn add_learner_args(&self, index: usize) -> anyhow::Result<Vec<String>> {
        let mut args =
            vec!["cluster", "add-learner", "--learner-node-dir", path_str(&self.nodes[index].data_dir)?];
        for voter in self.nodes.iter().filter(|node| node.spec.voter) {
            args.push("--node-dir");
            args.push(path_str(&voter.data_dir)?);
        }
        Ok(args.into_iter().map(str::to_string).collect())
    }

    /// The index of the current leader, waiting for one.
    pub fn leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        wait_until("a leader", timeout, || {
            self.nodes.iter().enumerate().filter(|(_, node)| node.process.is_some()).find_map(|(index, _)| {
                let status = self.api(index).ok()?.status().ok()?;
                (status.raft.role == "leader").then_some(index)
            })
        })
    }

    /// Whether node `index` has a live process.
    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].process.is_some()
    }

    /// How node `index`'s process ended, if it exited by itself (it is then
    /// no longer running); `None` while it runs, or if it was not started.
    pub fn exited(&mut self, index: usize) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let node = &mut self.nodes[index];
        let Some(child) = node.process.as_mut() else { return Ok(None) };
        let status = child.try_wait()?;
        if status.is_some() {
            forget_pid(child.id());
            node.process = None;
        }
        Ok(status)
    }
}

/// How many of a node's last warnings and errors a failed test prints.
const FAILURE_LOG_LINES_MAX: usize = 40;
/// How much of each such line it prints, in characters.
const FAILURE_LOG_LINE_CHARS_MAX: usize = 400;

impl Drop for Testnet {
    fn drop(&mut self) {
        // A failed test says what each node warned of: in CI, where the
        // logs go with the temporary directory, nothing else would.
        if std::thread::panicking() {
            for node in &self.nodes {
                self.print_warnings(&node.spec.name);
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.process.take() {
                let _ = signal(child.id(), "CONT");
                let _ = child.kill();
                let _ = child.wait();
                forget_pid(child.id());
            }
        }
    }
}

impl Testnet {
    /// Prints the last warnings and errors in `name`'s log to stderr.
    fn print_warnings(&self, name: &str) {
        let Ok(log) = std::fs::read_to_string(self.root.join(format!("{name}.log"))) else {
            return;
        };
        let warnings: Vec<&str> =
            log.lines().filter(|line| line.contains(" WARN ") || line.contains(" ERROR ")).collect();
        let shown = &warnings[warnings.len().saturating_sub(FAILURE_LOG_LINES_MAX)..];
        eprintln!("--- {name}: the last {} of {} warnings and errors", shown.len(), warnings.len());
        for line in shown {
            eprintln!("{}", line.chars().take(FAILURE_LOG_LINE_CHARS_MAX).collect::<String>());
        }
    }

    /// `civmesh pia add` at node `index` for `dataset`'s `fields` and
    /// `purpose`, signed by officer 王芳: the digest it printed, which a
    /// grant of those sensitive fields names.
    pub fn add_assessment(
        &self,
        index: usize,
        dataset: &str,
        fields: &[&str],
        purpose: &str,
    ) -> anyhow::Result<String> {
        let dir = path_str(&self.nodes[index].data_dir)?;
        let mut args = vec!["pia", "add", "--node-dir", dir, "--dataset", dataset];
        for field in fields {
            args.extend(["--field", field]);
        }
        args.extend(["--purpose", purpose, "--officer", "王芳"]);
        args.extend([
            "--necessity",
            "Street staff visit residents over 80 who live alone.\nNames are needed.",
        ]);
        args.extend(["--risks", "A vulnerable person's situation becomes known."]);
        args.extend(["--measures", "Street staff only; copies deleted after 30 days."]);
        Ok(self.cli(&args)?.trim().to_string())
    }

    /// Changes node `index`'s config file with `edit` (takes effect at its
    /// next start).
    pub fn configure(
        &self,
        index: usize,
        edit: impl FnOnce(&mut civmesh_node::config::NodeConfig),
    ) -> anyhow::Result<()> {
        let data_dir = &self.nodes[index].data_dir;
        let mut config = civmesh_node::config::NodeConfig::load(data_dir)?;
        edit(&mut config);
        let path = data_dir.join(civmesh_node::config::CONFIG_FILE_NAME);
        std::fs::write(&path, toml::to_string_pretty(&config)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Sets the address a node advertises to its peers, in its config file.
fn advertise(data_dir: &Path, address: &str) -> anyhow::Result<()> {
    let path = data_dir.join(civmesh_node::config::CONFIG_FILE_NAME);
    let mut config = civmesh_node::config::NodeConfig::load(data_dir)?;
    config.node.p2p_advertise = Some(address.to_string());
    std::fs::write(&path, toml::to_string_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Fails, naming the port and the node, if one of its listen ports is taken.
fn check_ports_free(node: &TestNode) -> anyhow::Result<()> {
    let config = civmesh_node::config::NodeConfig::load(&node.data_dir)?;
    let p2p_port = config.node.p2p_listen.rsplit('/').next().unwrap_or_default().to_string();
    let p2p = format!("127.0.0.1:{p2p_port}");
    for (what, address) in [("libp2p", &p2p), ("API", &config.node.api_listen)] {
        if let Err(error) = TcpListener::bind(address.as_str()) {
            anyhow::bail!(
                "port {address} ({}'s {what} port) is already in use ({error}); nothing was started",
                node.spec.name
            );
        }
    }
    Ok(())
}

fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status()?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

/// The one-time code that `civmesh operator add` or `operator reset` printed.
pub fn one_time_code(printed: &str) -> anyhow::Result<String> {
    let after = printed.split("one-time code ").nth(1).with_context(|| format!("no code in {printed}"))?;
    after.split_whitespace().next().map(str::to_string).with_context(|| format!("no code in {printed}"))
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Runs a `civmesh` command to completion; its pid is kept meanwhile, so
/// [`stop_every_node`] stops it too.
fn run_cli(binary: &Path, args: &[&str]) -> anyhow::Result<String> {
    let child = {
        let mut running = RUNNING.lock().map_err(|_| anyhow::anyhow!("the process registry is poisoned"))?;
        anyhow::ensure!(!running.stopping, "the testnet is stopping; civmesh {} not run", args.join(" "));
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running civmesh {}", args.join(" ")))?;
        running.pids.insert(child.id());
        child
    };
    let pid = child.id();
    let output = child.wait_with_output();
    forget_pid(pid);
    let output = output.with_context(|| format!("running civmesh {}", args.join(" ")))?;
    anyhow::ensure!(
        output.status.success(),
        "civmesh {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn work_on_every_core_comes_back_in_order() {
        for numbers in [0..0u64, 3..4, 3..20, 0..1_001] {
            let made = super::on_every_core(numbers.clone(), |number| Ok(number * 2)).unwrap();
            assert_eq!(made, numbers.map(|number| number * 2).collect::<Vec<_>>());
        }
        let failing = super::on_every_core(0..10, |number| {
            anyhow::ensure!(number != 7, "seven");
            Ok(number)
        });
        assert!(failing.is_err());
    }

    #[test]
    fn a_metric_is_read_by_its_whole_series_only() {
        let text =
            "civmesh_raft_term 3\ncivmesh_raft_term_x 9\ncivmesh_queries_total{outcome=\"denied\"} 2\n";
        assert_eq!(super::metric_value(text, "civmesh_raft_term"), Some(3.0));
        assert_eq!(super::metric_value(text, "civmesh_queries_total{outcome=\"denied\"}"), Some(2.0));
        assert_eq!(super::metric_value(text, "civmesh_queries_total"), None);
        assert_eq!(super::metric_value(text, "civmesh_raft"), None);
    }
}
