//! `civmesh-bench query`: street to department on loopback, one record per
//! query, at 1, 16 and 64 concurrent requesters, beside a 3-member etcd at
//! the same concurrency and the floor and ceiling measured in the same run:
//!
//! - the floor of one query: etcd's commit p50 at one writer, plus the
//!   Ed25519 operations on a query's path (the requester signs its header,
//!   the owner verifies it, signs the access record and the answer, the
//!   requester verifies the answer), plus one loopback round trip;
//! - the CPU ceiling: the cores ÷ the CPU time of one query's signature
//!   operations on every process (the five above, and the access record's
//!   two signatures verified in batches by every replica but the owner,
//!   which vouches for its own).
//!
//! After each row it reads how many access-log leaves no final checkpoint
//! covers yet, on the hub: the signers (hub, market, civil affairs) keep
//! anchoring the log under that load.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use civmesh_testnet::wait_until;

use super::{enterprise_network, measure, tempfile_dir, EtcdCluster, Figures, QUERY_RECORDS};

/// Query requesters measured.
const REQUESTERS: [usize; 3] = [1, 16, 64];
/// Signatures made on a query's path: header, access record, answer.
const PATH_SIGNS: f64 = 3.0;
/// Single verifications on a query's path: the header at the owner, the
/// answer at the requester.
const PATH_VERIFIES: f64 = 2.0;
/// Replicas besides the owner that verify the access record's two
/// signatures in batches (hub, civil affairs, the street).
const OTHER_REPLICAS: f64 = 3.0;

/// What the same run measures beside the queries.
struct Anchors {
    sign_us: f64,
    verify_us: f64,
    batch_verify_us: f64,
    loopback_round_trip_ms: f64,
}

impl Anchors {
    fn measure() -> anyhow::Result<Self> {
        const ROUNDS: u32 = 2_000;
        let key = civmesh_certs::NodeKey::generate()?;
        let message = [7u8; super::COMMAND_BYTES];
        let started = Instant::now();
        let mut signature = [0u8; 64];
        for _ in 0..ROUNDS {
            signature = std::hint::black_box(key.sign(&message));
        }
        let sign_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
        let started = Instant::now();
        for _ in 0..ROUNDS {
            anyhow::ensure!(civmesh_certs::signature::verify(&key.node_id().0, &message, &signature));
        }
        let verify_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
        // Every access record here is the market's, over the street's header.
        let batch_verify_us = 1e6 / super::growth::batch_verify_per_second(2)?;
        Ok(Anchors { sign_us, verify_us, batch_verify_us, loopback_round_trip_ms: loopback_round_trip_ms()? })
    }

    /// The signature operations on one query's path, in ms.
    fn path_ms(&self) -> f64 {
        (PATH_SIGNS * self.sign_us + PATH_VERIFIES * self.verify_us) / 1e3
    }

    /// The CPU seconds of one query's signature operations on every process.
    fn cpu_per_query_s(&self) -> f64 {
        self.path_ms() / 1e3 + OTHER_REPLICAS * 2.0 * self.batch_verify_us / 1e6
    }
}

/// The audit tree's leaves and those after the latest final checkpoint,
/// as `api`'s node sees them.
fn unanchored(api: &civmesh_testnet::NodeApi) -> anyhow::Result<(u64, u64)> {
    let checkpoints: serde_json::Value = api.get("/v1/audit/checkpoints?limit=1")?;
    let leaves = checkpoints["leaves"].as_u64().unwrap_or(0);
    let anchored = checkpoints["latest"]["tree_size"].as_u64().unwrap_or(0);
    Ok((leaves, leaves.saturating_sub(anchored)))
}

/// The mean round trip of 64 bytes over a loopback TCP connection, in ms.
fn loopback_round_trip_ms() -> anyhow::Result<f64> {
    const ROUNDS: u32 = 2_000;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buffer = [0u8; 64];
        for _ in 0..ROUNDS {
            stream.read_exact(&mut buffer)?;
            stream.write_all(&buffer)?;
        }
        Ok(())
    });
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let mut buffer = [0u8; 64];
    let started = Instant::now();
    for _ in 0..ROUNDS {
        stream.write_all(&buffer)?;
        stream.read_exact(&mut buffer)?;
    }
    let ms = started.elapsed().as_secs_f64() * 1e3 / f64::from(ROUNDS);
    echo.join().map_err(|_| anyhow::anyhow!("the echo thread panicked"))??;
    Ok(ms)
}

pub fn query(seconds: u64) -> anyhow::Result<()> {
    use civmesh_testnet::city::ENTERPRISES;
    let dir = tempfile_dir()?;
    let (net, grant_id) = enterprise_network(&dir)?;
    let street = net.api(3)?;
    let ask = |writer: usize, sequence: u64| -> anyhow::Result<()> {
        let key = format!("913101{:012}", (writer * 7919 + sequence as usize) % QUERY_RECORDS);
        let body = serde_json::json!({
            "dataset": ENTERPRISES, "keys": [key], "fields": ["name", "operating_address"],
            "purpose": "street-inspection", "grant": grant_id,
        });
        let answer: serde_json::Value = street.send("POST", "/v1/query", &body)?;
        anyhow::ensure!(answer.get("Released").is_some(), "not released: {answer}");
        Ok(())
    };
    // The grant reaches the street's replica within moments.
    wait_until("the grant to reach the street", Duration::from_secs(10), || ask(0, 0).ok())?;
    let etcd = EtcdCluster::start(&dir.join("etcd"))?;
    let anchors = Anchors::measure()?;
    let mut rows: Vec<(usize, Figures, Figures)> = Vec::new();
    let mut anchoring = Vec::new();
    for requesters in REQUESTERS {
        let ours = measure(requesters, seconds, ask)?;
        anchoring.push(unanchored(&net.api(0)?)?);
        let theirs = measure(requesters, seconds, |writer, sequence| etcd.put(writer, sequence))?;
        rows.push((requesters, ours, theirs));
    }
    print(&anchors, &rows, seconds);
    for (requesters, (leaves, unanchored)) in REQUESTERS.iter().zip(anchoring) {
        println!(
            "after {requesters} requesters: {leaves} access-log leaves, {unanchored} after the latest final checkpoint"
        );
    }
    drop(etcd);
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn print(anchors: &Anchors, rows: &[(usize, Figures, Figures)], seconds: u64) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let ceiling = cores / anchors.cpu_per_query_s();
    let etcd_one_p50 = rows.first().map_or(f64::NAN, |(_, _, theirs)| theirs.p50_ms);
    let floor_ms = etcd_one_p50 + anchors.path_ms() + anchors.loopback_round_trip_ms;
    println!("query, street to department on loopback, one record per query, {seconds} s per row, beside a 3-member etcd");
    println!(
        "anchors (same run): Ed25519 sign {:.1} us, verify {:.1} us, in batches {:.1} us a signature; loopback round trip {:.3} ms",
        anchors.sign_us, anchors.verify_us, anchors.batch_verify_us, anchors.loopback_round_trip_ms
    );
    println!(
        "floor of one query: etcd p50 at 1 writer {etcd_one_p50:.2} ms + signatures on the path {:.3} ms + round trip = {floor_ms:.2} ms; \
         CPU ceiling {ceiling:.0} queries/s ({cores} cores, {:.0} us of signatures a query on every process)",
        anchors.path_ms(),
        anchors.cpu_per_query_s() * 1e6
    );
    println!(
        "{:>10} | {:>9} {:>8} {:>8} | {:>8} {:>8} | {:>12} {:>13} {:>12} {:>11}",
        "requesters",
        "queries/s",
        "p50 ms",
        "p99 ms",
        "etcd/s",
        "etcd p50",
        "p50 ÷ floor",
        "p50 ÷ etcd's",
        "/s ÷ etcd's",
        "/s ÷ ceil"
    );
    for (requesters, ours, theirs) in rows {
        println!(
            "{requesters:>10} | {:>9.0} {:>8.2} {:>8.2} | {:>8.0} {:>8.2} | {:>12.2} {:>13.2} {:>12.2} {:>11.2}",
            ours.per_second,
            ours.p50_ms,
            ours.p99_ms,
            theirs.per_second,
            theirs.p50_ms,
            ours.p50_ms / floor_ms,
            ours.p50_ms / theirs.p50_ms,
            ours.per_second / theirs.per_second,
            ours.per_second / ceiling
        );
    }
    println!("goals: p50 ÷ floor ≤ 1.3 at 1; p50 ÷ etcd's ≤ 1.5 and /s ÷ etcd's ≥ 2 at 16; /s ÷ ceil ≥ 0.6 and /s ÷ etcd's ≥ 2.5 at 64");
}
