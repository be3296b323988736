//! Network namespaces for fault tests: each node in a namespace of its own,
//! joined to the others by a bridge in the test's namespace, so a test can
//! cut the network between groups of nodes (blackhole routes inside the
//! namespaces) and heal it, while still reaching every node's API itself.
//!
//! Needs root and `ip netns` (iproute2). Names carry a per-testnet tag so
//! tests can run in parallel; everything is deleted on drop.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;

static TESTNETS_CREATED: AtomicU32 = AtomicU32::new(0);

/// The first host number of the nodes in the subnet.
const FIRST_NODE_HOST: usize = 10;
/// The most nodes one isolated testnet may have.
pub const ISOLATED_NODES_MAX: usize = 200;

/// One isolated testnet's namespaces, bridge and cuts.
#[derive(Debug)]
pub struct Isolation {
    tag: String,
    subnet: String,
    nodes: usize,
    /// Blackhole routes in force: (namespace index, destination IP).
    cuts: Vec<(usize, String)>,
}

/// Whether network namespaces can be made here (root, iproute2, kernel).
pub fn namespaces_available() -> bool {
    let probe = format!("cvprobe{}", std::process::id() % 100_000);
    let made =
        Command::new("ip").args(["netns", "add", &probe]).output().is_ok_and(|out| out.status.success());
    if made {
        let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    }
    made
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    anyhow::ensure!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

impl Isolation {
    /// Makes a bridge and `nodes` namespaces, each with a veth on the bridge.
    pub fn create(nodes: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(nodes <= ISOLATED_NODES_MAX, "at most {ISOLATED_NODES_MAX} isolated nodes");
        let number = (std::process::id() % 4096) * 64 + TESTNETS_CREATED.fetch_add(1, Ordering::Relaxed) % 64;
        let tag = format!("{number:06x}");
        let subnet = format!("10.{}.{}", 100 + (number / 250) % 150, number % 250);
        let isolation = Isolation { tag, subnet, nodes: 0, cuts: Vec::new() };
        let mut isolation = isolation;
        let bridge = isolation.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])
            .context("network namespaces need root and iproute2 (`ip netns`)")?;
        ip(&["addr", "add", &format!("{}.1/24", isolation.subnet), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for index in 0..nodes {
            let namespace = isolation.namespace(index);
            let outside = format!("cvv{}{index:02x}", isolation.tag);
            ip(&["netns", "add", &namespace])?;
            isolation.nodes = index + 1;
            ip(&["link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &namespace])?;
            ip(&["link", "set", &outside, "master", &bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &namespace, "ip"];
                all.extend_from_slice(args);
                ip(&all)
            };
            inside(&["addr", "add", &format!("{}/24", isolation.node_ip(index)), "dev", "eth0"])?;
            inside(&["link", "set", "eth0", "up"])?;
            inside(&["link", "set", "lo", "up"])?;
        }
        Ok(isolation)
    }

    fn bridge(&self) -> String {
        format!("cvb{}", self.tag)
    }

    /// Node `index`'s namespace.
    pub fn namespace(&self, index: usize) -> String {
        format!("cvn{}{index:02x}", self.tag)
    }

    /// Node `index`'s address.
    pub fn node_ip(&self, index: usize) -> String {
        format!("{}.{}", self.subnet, FIRST_NODE_HOST + index)
    }

    fn route(&self, verb: &str, index: usize, destination: &str) -> anyhow::Result<()> {
        let namespace = self.namespace(index);
        ip(&["netns", "exec", &namespace, "ip", "route", verb, "blackhole", &format!("{destination}/32")])
    }

    /// Cuts `one` from `other`, both ways.
    pub fn partition(&mut self, one: &[usize], other: &[usize]) -> anyhow::Result<()> {
        for (from, to) in one.iter().flat_map(|a| other.iter().flat_map(move |b| [(*a, *b), (*b, *a)])) {
            let destination = self.node_ip(to);
            if !self.cuts.contains(&(from, destination.clone())) {
                self.route("add", from, &destination)?;
                self.cuts.push((from, destination));
            }
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        for (from, destination) in std::mem::take(&mut self.cuts) {
            self.route("del", from, &destination)?;
        }
        Ok(())
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        for index in 0..self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &self.namespace(index)]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge()]).output();
    }
}
