//! A fault-injecting loopback proxy, for partitions where network
//! namespaces are not available: every node advertises a proxy port, so
//! every connection between nodes passes through the proxy of the node
//! dialled. The proxy knows who dialled by the connection's source port
//! (libp2p dials from its listen port) and can cut any pair of nodes: it
//! closes their connections and refuses new ones until healed. A connection
//! whose dialler it cannot tell is refused while its target is cut from
//! anyone, so a cut never leaks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

/// How long the accept loops sleep when idle.
const ACCEPT_IDLE_MS: u64 = 5;
/// Connections the proxy carries at once at most.
pub const PROXY_CONNECTIONS_MAX: usize = 4_096;

struct Tracked {
    id: u64,
    origin: Option<usize>,
    target: usize,
    streams: [TcpStream; 2],
}

#[derive(Default)]
struct Shared {
    cuts: Mutex<BTreeSet<(usize, usize)>>,
    connections: Mutex<Vec<Tracked>>,
    next_id: std::sync::atomic::AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn forget(&self, id: u64) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.retain(|tracked| tracked.id != id);
        }
    }

    fn cut(&self, origin: Option<usize>, target: usize) -> bool {
        let Ok(cuts) = self.cuts.lock() else { return true };
        match origin {
            Some(origin) => cuts.contains(&(origin.min(target), origin.max(target))),
            None => cuts.iter().any(|(a, b)| *a == target || *b == target),
        }
    }
}

/// The proxy: one listening port per node.
pub struct LoopbackProxy {
    shared: Arc<Shared>,
    /// Node index by the port it listens (and dials) from.
    listen_ports: BTreeMap<u16, usize>,
}

impl LoopbackProxy {
    /// Starts forwarding `proxy_ports[i]` to `127.0.0.1:listen_ports[i]`.
    pub fn start(proxy_ports: &[u16], listen_ports: &[u16]) -> anyhow::Result<Self> {
        anyhow::ensure!(proxy_ports.len() == listen_ports.len(), "one proxy port per node");
        let shared = Arc::new(Shared::default());
        let origins: BTreeMap<u16, usize> =
            listen_ports.iter().enumerate().map(|(index, port)| (*port, index)).collect();
        for (target, (proxy_port, listen_port)) in proxy_ports.iter().zip(listen_ports).enumerate() {
            let listener = TcpListener::bind(("127.0.0.1", *proxy_port))
                .with_context(|| format!("the proxy cannot listen on port {proxy_port}"))?;
            listener.set_nonblocking(true)?;
            let (shared, origins, upstream) = (shared.clone(), origins.clone(), *listen_port);
            std::thread::spawn(move || accept_loop(listener, target, upstream, &origins, &shared));
        }
        Ok(LoopbackProxy { shared, listen_ports: origins })
    }

    /// Cuts every node in `one` from every node in `other`.
    pub fn partition(&self, one: &[usize], other: &[usize]) -> anyhow::Result<()> {
        let mut cuts = self.shared.cuts.lock().map_err(|_| anyhow::anyhow!("proxy state poisoned"))?;
        for a in one {
            for b in other {
                cuts.insert(((*a).min(*b), (*a).max(*b)));
            }
        }
        drop(cuts);
        let mut connections =
            self.shared.connections.lock().map_err(|_| anyhow::anyhow!("proxy state poisoned"))?;
        connections.retain(|tracked| {
            let keep = !self.shared.cut(tracked.origin, tracked.target);
            if !keep {
                for stream in &tracked.streams {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
            keep
        });
        Ok(())
    }

    /// Undoes every cut.
    pub fn heal(&self) -> anyhow::Result<()> {
        self.shared.cuts.lock().map_err(|_| anyhow::anyhow!("proxy state poisoned"))?.clear();
        Ok(())
    }

    /// How many nodes it serves.
    pub fn nodes(&self) -> usize {
        self.listen_ports.len()
    }
}

impl Drop for LoopbackProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Ok(connections) = self.shared.connections.lock() {
            for tracked in connections.iter() {
                for stream in &tracked.streams {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    target: usize,
    upstream: u16,
    origins: &BTreeMap<u16, usize>,
    shared: &Arc<Shared>,
) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((incoming, from)) => {
                let origin = origins.get(&from.port()).copied();
                if shared.cut(origin, target) {
                    let _ = incoming.shutdown(Shutdown::Both);
                    continue;
                }
                // A node not up yet: the dialler sees the connection close and retries.
                let _ = forward(incoming, origin, target, upstream, shared);
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(ACCEPT_IDLE_MS));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(ACCEPT_IDLE_MS)),
        }
    }
}

fn forward(
    incoming: TcpStream,
    origin: Option<usize>,
    target: usize,
    upstream: u16,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    incoming.set_nonblocking(false)?;
    let outgoing = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], upstream)))?;
    for stream in [&incoming, &outgoing] {
        stream.set_nodelay(true)?;
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut connections =
            shared.connections.lock().map_err(|_| anyhow::anyhow!("proxy state poisoned"))?;
        anyhow::ensure!(connections.len() < PROXY_CONNECTIONS_MAX, "too many proxied connections");
        connections.push(Tracked {
            id,
            origin,
            target,
            streams: [incoming.try_clone()?, outgoing.try_clone()?],
        });
    }
    let (incoming_reader, outgoing_reader) = (incoming.try_clone()?, outgoing.try_clone()?);
    let (one, other) = (shared.clone(), shared.clone());
    std::thread::spawn(move || {
        pump(incoming_reader, outgoing);
        one.forget(id);
    });
    std::thread::spawn(move || {
        pump(outgoing_reader, incoming);
        other.forget(id);
    });
    Ok(())
}

/// Copies bytes one way until either side closes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                if to.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
