//! `civmesh-bench query`: query latency and throughput, street to
//! department on loopback, one record per query, at 1, 16 and 64 concurrent
//! requesters, beside a 3-member etcd at the same concurrency, the floor of
//! one query and the CPU ceiling measured in the same run ([`query`]).
//!
//! `civmesh-bench corrections`: the correction round trip with auto-accept
//! (submit at a street, applied at the owner, outcome back at the street),
//! p50 and p99, beside one policy-log commit measured in the same run.
//!
//! `civmesh-bench scale`: 30 nodes (5 voters, 25 learners) on this machine:
//! how long a policy change takes to reach every learner (p50, p99) beside
//! the commit itself, and the resident memory per node.
//!
//! `civmesh-bench policy-log`: commit throughput and latency of the policy
//! log (3 voters, loopback, fsync) at 1, 16, 64 and 256 concurrent writers
//! with 256-byte commands, beside a 3-member etcd cluster started by this
//! benchmark on loopback with the same value size, concurrency and
//! durability, measured in the same run. Prints a table with the ratio.
//!
//! `civmesh-bench list`: a street of 5,000 enterprises out of a registry of
//! 1,000,000 pages through its scope (500 records a page, each page logged
//! before release) through its node's API: records/s, and the first page's
//! latency, beside a raw RocksDB prefix scan of the same 5,000 records out
//! of 1,000,000 in the same run.
//!
//! `civmesh-bench growth`: the policy log from 0 to 1,000,000 access
//! records (3 voters, 2 learners, fsync on): throughput, latency (also
//! during snapshots), memory, snapshots and `/v1/status` at 10k, 100k and
//! 1M, then a learner's join and a voter's restart after kill -9, beside raw
//! RocksDB, a raw file copy and raw Ed25519 in the same run ([`growth`]).
//!
//! `civmesh-bench console`: the console's reviewer inbox (1,000 corrections
//! waiting) and a 500-record listing page, p50 and p99, beside the API call
//! for the same data in the same run ([`console`]).
//!
//! Build it in release mode next to a release `civmesh`:
//! `cargo build --release --bins && target/release/civmesh-bench policy-log`.

mod breakdown;
mod console;
mod growth;
mod query;
mod retention;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use breakdown::{Span, StageTotals};
use civmesh_certs::{now_unix_millis, NodeKey, SignedEnvelope};
use civmesh_policy::model::LegalBasis;
use civmesh_policy::{Command as PolicyCommand, SignedCommand};
use civmesh_testnet::{free_port, wait_until, NodeSpec, SnapshotPolicy, Testnet};

/// The bytes of one command on the wire (envelope), as in the issue.
const COMMAND_BYTES: usize = 256;
/// The concurrency levels measured.
const WRITERS: [usize; 4] = [1, 16, 64, 256];
/// Commands per entry in the group-commit row.
const GROUP_COMMIT_BATCH: usize = 100;
/// Pre-signed commands prepared per row: signing is the client's cost, not
/// the log's, and every command needs a fresh nonce.
const SIGNED_POOL_SIZE: usize = 60_000;
/// How long the whole benchmark may run before it stops itself.
const BENCHMARK_SECONDS_MAX: u64 = 900;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds = match args.iter().position(|arg| arg == "--seconds") {
        Some(index) => args.get(index + 1).context("--seconds needs a value")?.parse()?,
        None => 5u64,
    };
    match args.get(1).map(String::as_str) {
        Some("policy-log") => policy_log(seconds),
        Some("query") => query::query(seconds),
        Some("corrections") => corrections(seconds),
        Some("scale") => scale(),
        Some("console") => console::console(seconds),
        Some("retention") => retention::retention(retention::records_arg(&args)?),
        Some("growth") => {
            let divide = match args.iter().position(|arg| arg == "--divide") {
                Some(index) => args.get(index + 1).context("--divide needs a value")?.parse()?,
                None => 1,
            };
            growth::growth(divide)
        }
        Some("list") => {
            let page_size = match args.iter().position(|arg| arg == "--page-size") {
                Some(index) => args.get(index + 1).context("--page-size needs a value")?.parse()?,
                None => LIST_PAGE_RECORDS,
            };
            list(seconds, page_size)
        }
        _ => {
            anyhow::bail!("usage: civmesh-bench policy-log|query|corrections|scale|list|growth|console|retention [--seconds N] [--divide N] [--records N]")
        }
    }
}

/// Records the owner holds for the query benchmark.
const QUERY_RECORDS: usize = 1_000;

/// Hub, market, civil and jingansi on loopback, with the enterprise
/// registry published by market (index 1).
fn enterprise_federation(dir: &Path) -> anyhow::Result<Testnet> {
    use civmesh_testnet::city::{city, enterprise_dataset};
    let mut net = Testnet::create(
        &dir.join("net"),
        &city(&["hub", "market", "civil", "jingansi"]),
        SnapshotPolicy::default(),
    )?;
    // The benchmarks measure throughput, not the owner's per-peer limits.
    net.configure(1, |config| {
        config.limits.queries_per_peer_per_second = 1_000_000;
        config.limits.query_burst_per_peer_max = 1_000_000;
    })?;
    net.start_all()?;
    net.bootstrap()?;
    net.sign_and_submit(1, 1, PolicyCommand::PublishDataset(enterprise_dataset()))?;
    Ok(net)
}

/// [`enterprise_federation`] with `QUERY_RECORDS` enterprises imported and
/// a grant for jingansi; returns the grant id.
fn enterprise_network(dir: &Path) -> anyhow::Result<(Testnet, u64)> {
    use civmesh_testnet::city::{street_inspection_grant, ENTERPRISES};
    let net = enterprise_federation(dir)?;
    let csv = dir.join("enterprises.csv");
    let mut rows = String::from(
        "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n",
    );
    for index in 0..QUERY_RECORDS {
        rows.push_str(&format!(
            "913101{index:012},Enterprise {index},,{index} Changde Road,,jingan,jingansi\n"
        ));
    }
    std::fs::write(&csv, rows)?;
    net.import(1, ENTERPRISES, &csv)?;
    let grant = street_inspection_grant("street/jingansi", &["name", "operating_address"], &[])?;
    let civmesh_policy::Applied::GrantIssued(grant_id) =
        net.sign_and_submit(1, 1, PolicyCommand::IssueGrant(grant))?
    else {
        anyhow::bail!("no grant id")
    };
    Ok((net, grant_id))
}

/// Enterprises in the registry of the listing benchmark.
const LIST_REGISTRY_RECORDS: usize = 1_000_000;
/// One enterprise in this many is on the listing street: 5,000 of them.
const LIST_STREET_EVERY: usize = 200;
/// Records written to the store per batch while the registry is built.
const LIST_WRITE_BATCH_RECORDS: usize = 10_000;
/// Records per page: the owner's default (`--page-size N` to change).
const LIST_PAGE_RECORDS: usize = 500;

/// The street of registry enterprise `index`: Jing'an Temple for one in
/// `LIST_STREET_EVERY`, one of 199 others for the rest.
fn list_street(index: usize) -> String {
    match index % LIST_STREET_EVERY {
        1 => "jingansi".to_string(),
        other => format!("street-{other:03}"),
    }
}

/// Lists the Jing'an Temple street's enterprises out of a 1,000,000
/// registry, whole, for `seconds`; prints records/s and the first page's
/// latency beside a raw RocksDB prefix scan of the same records.
fn list(seconds: u64, page_size: usize) -> anyhow::Result<()> {
    use civmesh_testnet::city::{street_scoped_grant, ENTERPRISES};
    let dir = tempfile_dir()?;
    let mut net = enterprise_federation(&dir)?;
    // The registry goes straight into the owner's store while it is down,
    // through the store's own write path (index kept as it writes), with
    // the dataset as the owner's replica holds it.
    let datasets: Vec<civmesh_policy::model::Dataset> = net.api(1)?.get("/v1/datasets")?;
    let dataset = datasets.into_iter().find(|dataset| dataset.id == ENTERPRISES).context("no registry")?;
    let started = Instant::now();
    net.stop(1)?;
    write_registry(&net.nodes[1].data_dir.join("records"), &dataset)?;
    net.start(1)?;
    println!(
        "registry of {LIST_REGISTRY_RECORDS} enterprises written in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let grant = net.issue_grant(1, street_scoped_grant("jingansi")?, 3)?;
    let street = net.api(3)?;
    let page = |cursor: Option<String>| -> anyhow::Result<(usize, Option<String>)> {
        let body = serde_json::json!({
            "dataset": ENTERPRISES, "grant": grant, "cursor": cursor, "page_size": page_size,
        });
        let answer: serde_json::Value = street.send("POST", "/v1/query/list", &body)?;
        let records = answer["Page"]["records"].as_array().context("not a page")?.len();
        Ok((records, answer["Page"]["next_cursor"].as_str().map(str::to_string)))
    };
    wait_until("the street to list", Duration::from_secs(30), || page(None).ok())?;
    let expected = LIST_REGISTRY_RECORDS / LIST_STREET_EVERY;
    let (mut listed, mut rounds, mut first_page_ms) = (0usize, 0usize, Vec::new());
    let measuring = Instant::now();
    while measuring.elapsed() < Duration::from_secs(seconds) || rounds == 0 {
        let (mut cursor, mut round) = (None, 0);
        loop {
            let asked = Instant::now();
            let (records, next) = page(cursor)?;
            if round == 0 {
                first_page_ms.push(asked.elapsed().as_secs_f64() * 1e3);
            }
            round += records;
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        anyhow::ensure!(round == expected, "listed {round} of the street's {expected} enterprises");
        listed += round;
        rounds += 1;
    }
    let per_second = listed as f64 / measuring.elapsed().as_secs_f64();
    first_page_ms.sort_by(f64::total_cmp);
    let first_page_p50_ms = first_page_ms[first_page_ms.len() / 2];
    let (raw_per_second, raw_first_page_ms) = raw_prefix_scan(&dir.join("anchor-rocksdb"), page_size)?;
    println!("listing, {expected} enterprises of one street out of {LIST_REGISTRY_RECORDS}, pages of {page_size}, {rounds} whole listings in {seconds} s");
    println!("{:>28} | {:>14} | {:>22} | {:>7}", "", "civmesh list", "raw RocksDB prefix scan", "ratio");
    println!(
        "{:>28} | {per_second:>14.0} | {raw_per_second:>22.0} | {:>7.1}",
        "records/s",
        raw_per_second / per_second
    );
    println!(
        "{:>28} | {first_page_p50_ms:>14.2} | {raw_first_page_ms:>22.3} | {:>7.1}",
        "first page p50 ms",
        first_page_p50_ms / raw_first_page_ms
    );
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Writes the 1,000,000 enterprises of `dataset` into the record store at `path`.
fn write_registry(path: &Path, dataset: &civmesh_policy::model::Dataset) -> anyhow::Result<()> {
    use civmesh_policy::model::FieldValue;
    let store = civmesh_node::records::RecordStore::open(path)?;
    let provenance = civmesh_node::records::Provenance::Import { batch: "bench".into() };
    let text = |value: String| FieldValue::Text(value);
    for start in (0..LIST_REGISTRY_RECORDS).step_by(LIST_WRITE_BATCH_RECORDS) {
        let rows = (start..start + LIST_WRITE_BATCH_RECORDS)
            .map(|index| {
                let key = format!("913101{index:012}");
                let fields = [
                    ("credit_code", text(key.clone())),
                    ("name", text(format!("Enterprise {index}"))),
                    ("registered_address", text(format!("{} Changde Road", index % 900 + 1))),
                    ("operating_address", text(format!("{} Changde Road", index % 900 + 1))),
                    ("legal_rep_phone", text(format!("138{:08}", index % 100_000_000))),
                    ("district", text("jingan".into())),
                    ("street", text(list_street(index))),
                ]
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect();
                (key, fields)
            })
            .collect();
        store.write(dataset, rows, &provenance, now_unix_millis())?;
    }
    Ok(())
}

/// A raw RocksDB with the same 1,000,000 keys under their street: the
/// records/s of a prefix scan of the street's 5,000 (reading each value),
/// and the time to the first page.
fn raw_prefix_scan(path: &Path, page_size: usize) -> anyhow::Result<(f64, f64)> {
    const ROUNDS: usize = 20;
    let db = rocksdb::DB::open_default(path)?;
    for start in (0..LIST_REGISTRY_RECORDS).step_by(LIST_WRITE_BATCH_RECORDS) {
        let mut batch = rocksdb::WriteBatch::default();
        for index in start..start + LIST_WRITE_BATCH_RECORDS {
            batch.put(format!("{}\0913101{index:012}", list_street(index)), vec![b'v'; 200]);
        }
        db.write(batch)?;
    }
    db.flush()?;
    let prefix = b"jingansi\0".to_vec();
    let scan = |limit: usize| -> anyhow::Result<usize> {
        let mut read = 0;
        for item in db.iterator(rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward)) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) || read == limit {
                break;
            }
            std::hint::black_box(value);
            read += 1;
        }
        Ok(read)
    };
    let started = Instant::now();
    let mut read = 0;
    for _ in 0..ROUNDS {
        read += scan(usize::MAX)?;
    }
    let per_second = read as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        scan(page_size)?;
    }
    let first_page_ms = started.elapsed().as_secs_f64() * 1e3 / ROUNDS as f64;
    drop(db);
    let _ = std::fs::remove_dir_all(path);
    Ok((per_second, first_page_ms))
}

/// Submitters measured in the correction benchmark.
const CORRECTION_SUBMITTERS: [usize; 2] = [1, 4];
/// How often the benchmark asks the street for an outcome.
const OUTCOME_POLL_MS: u64 = 1;

/// The correction round trip with auto-accept: submit at the street, applied
/// at the owner, outcome back at the street. Each submitter corrects its own
/// records, so no correction conflicts. The anchor is one policy-log commit
/// (a demand filed through the street) measured in the same run.
fn corrections(seconds: u64) -> anyhow::Result<()> {
    use civmesh_testnet::city::ENTERPRISES;
    let dir = tempfile_dir()?;
    let (net, _) = enterprise_network(&dir)?;
    net.auto_accept(1, ENTERPRISES, "street/jingansi", "operating_address")?;
    let street = net.api(3)?;
    let street_key = NodeKey::load(&net.nodes[3].data_dir.join("node.key"))?;
    let versions: Vec<Mutex<u64>> = (0..QUERY_RECORDS).map(|_| Mutex::new(1)).collect();
    let submitters_max = CORRECTION_SUBMITTERS.iter().copied().max().unwrap_or(1);
    let round_trip = |submitter: usize, sequence: u64| -> anyhow::Result<()> {
        let records_each = QUERY_RECORDS / submitters_max;
        let record = submitter * records_each + (sequence as usize % records_each);
        let mut version = versions[record].lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let body = serde_json::json!({
            "dataset": ENTERPRISES, "record_key": format!("913101{record:012}"), "base_version": *version,
            "changes": {"operating_address": format!("{sequence} Yanping Road")},
            "reason": "benchmark", "operator": "bench",
        });
        let submitted: serde_json::Value = street.send("POST", "/v1/corrections", &body)?;
        let id = submitted["correction"].as_str().context("no id")?.to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let view: serde_json::Value = street.get(&format!("/v1/corrections/{id}"))?;
            if let Some(status) = view["outcome"]["status"].as_object() {
                let applied = status.get("applied").and_then(|applied| applied["version"].as_u64());
                *version = applied.with_context(|| format!("not applied: {status:?}"))?;
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "no outcome within 30 s");
            std::thread::sleep(Duration::from_millis(OUTCOME_POLL_MS));
        }
    };
    let commit = |_: usize, _: u64| -> anyhow::Result<()> {
        let demand = PolicyCommand::FileDemand {
            dataset: ENTERPRISES.into(),
            fields: ["name".to_string()].into(),
            purpose: "benchmark".into(),
            legal_basis: LegalBasis::StatutoryDuty,
        };
        let envelope = SignedEnvelope::sign(&street_key, &demand, now_unix_millis())?;
        let outcome = street.submit(&[envelope])?;
        anyhow::ensure!(outcome.outcomes.iter().all(Result::is_ok), "{:?}", outcome.outcomes);
        Ok(())
    };
    let anchor = measure(1, seconds, commit)?;
    println!("correction round trip with auto-accept (submit -> applied -> outcome at the street), {seconds} s per row");
    println!("anchor (same run): one policy-log commit through the street, p50 {:.2} ms", anchor.p50_ms);
    let columns = ["submitters", "corrections/s", "p50 / commit p50"];
    print_table(columns, anchor.p50_ms, CORRECTION_SUBMITTERS, |submitters| {
        measure(submitters, seconds, round_trip)
    })?;
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Voters and learners of the scale check.
const SCALE_VOTERS: usize = 5;
/// Learners of the scale check.
const SCALE_LEARNERS: usize = 25;
/// Policy changes timed in the scale check.
const SCALE_CHANGES: usize = 30;
/// How often each learner is asked whether it has a change yet.
const SCALE_POLL_MS: u64 = 2;

/// 30 real nodes (5 voters, 25 learners): how long a policy change takes
/// from its commit to every learner (p50, p99), beside the commit itself,
/// and each node's resident memory.
fn scale() -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let departments = ["market-supervision", "civil-affairs", "housing", "health"];
    let mut specs = vec![NodeSpec::new("hub", "hub/city", "hub", true)];
    specs.extend(
        departments.iter().map(|name| NodeSpec::new(name, &format!("dept/{name}"), "department", true)),
    );
    specs.extend(
        (1..=SCALE_LEARNERS)
            .map(|n| NodeSpec::new(&format!("s{n:02}"), &format!("street/s{n:02}"), "street", false)),
    );
    assert_eq!(specs.len(), SCALE_VOTERS + SCALE_LEARNERS);
    let mut net = Testnet::create(&dir.join("net"), &specs, SnapshotPolicy::default())?;
    let started = Instant::now();
    net.start_all()?;
    net.bootstrap()?;
    println!(
        "scale check: {} voters and {} learners started and joined in {:.1} s",
        SCALE_VOTERS,
        SCALE_LEARNERS,
        started.elapsed().as_secs_f64()
    );
    let (commit_ms, each_learner_ms, all_learners_ms) = time_policy_changes(&net)?;
    print_scale_table(commit_ms, each_learner_ms, all_learners_ms);
    let rss_kib: Vec<u64> = (0..net.nodes.len()).filter_map(|i| resident_kib(net.pid(i).ok()?)).collect();
    anyhow::ensure!(rss_kib.len() == net.nodes.len(), "could not read every node's memory");
    let mean = rss_kib.iter().sum::<u64>() as f64 / rss_kib.len() as f64 / 1024.0;
    let max = rss_kib.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
    println!("resident memory per node: mean {mean:.1} MiB, max {max:.1} MiB ({} nodes)", rss_kib.len());
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Submits `SCALE_CHANGES` demands at the hub and times each commit and its
/// arrival at each learner: (commit, each learner, all learners), in ms.
fn time_policy_changes(net: &Testnet) -> anyhow::Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let hub = NodeKey::load(&net.nodes[0].data_dir.join("node.key"))?;
    let hub_api = net.api(0)?;
    let learners: Vec<_> =
        (SCALE_VOTERS..net.nodes.len()).map(|i| net.api(i)).collect::<anyhow::Result<_>>()?;
    let mut commit_ms = Vec::new();
    let mut each_learner_ms = Vec::new();
    let mut all_learners_ms = Vec::new();
    for change in 0..SCALE_CHANGES {
        let demand = PolicyCommand::FileDemand {
            dataset: format!("scale/dataset-{change}"),
            fields: ["name".to_string()].into(),
            purpose: "scale check".into(),
            legal_basis: LegalBasis::StatutoryDuty,
        };
        let envelope = SignedEnvelope::sign(&hub, &demand, now_unix_millis())?;
        let begun = Instant::now();
        let outcome = hub_api.submit(&[envelope])?;
        commit_ms.push(begun.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(outcome.outcomes.iter().all(Result::is_ok), "{:?}", outcome.outcomes);
        let version = outcome.state_version;
        let reached: Vec<f64> = std::thread::scope(|scope| {
            let waits: Vec<_> = learners
                .iter()
                .map(|api| {
                    scope.spawn(move || -> anyhow::Result<f64> {
                        loop {
                            let summary: serde_json::Value = api.get("/v1/policy/summary")?;
                            if summary["commands_applied"].as_u64().is_some_and(|applied| applied >= version)
                            {
                                return Ok(begun.elapsed().as_secs_f64() * 1e3);
                            }
                            anyhow::ensure!(begun.elapsed() < Duration::from_secs(30), "a learner lags 30 s");
                            std::thread::sleep(Duration::from_millis(SCALE_POLL_MS));
                        }
                    })
                })
                .collect();
            waits
                .into_iter()
                .map(|wait| wait.join().map_err(|_| anyhow::anyhow!("poller panicked"))?)
                .collect::<anyhow::Result<Vec<f64>>>()
        })?;
        all_learners_ms.push(reached.iter().copied().fold(0.0, f64::max));
        each_learner_ms.extend(reached);
    }
    Ok((commit_ms, each_learner_ms, all_learners_ms))
}

/// The scale check's table: learners' p50 and p99 beside the commit's.
fn print_scale_table(mut commit_ms: Vec<f64>, mut each_learner_ms: Vec<f64>, mut all_learners_ms: Vec<f64>) {
    let percentile = |values: &mut Vec<f64>, p: f64| {
        values.sort_by(f64::total_cmp);
        values[((values.len() as f64 * p) as usize).min(values.len() - 1)]
    };
    let commit_p50 = percentile(&mut commit_ms, 0.5);
    println!(
        "anchor (same run): the commit at the hub, p50 {commit_p50:.2} ms, p99 {:.2} ms",
        percentile(&mut commit_ms, 0.99)
    );
    println!(
        "{:<34} | {:>9} {:>9} | {:>17}",
        format!("{SCALE_CHANGES} policy changes, from submit"),
        "p50 ms",
        "p99 ms",
        "p50 / commit p50"
    );
    for (name, values) in
        [("to each learner", &mut each_learner_ms), ("to all 25 learners", &mut all_learners_ms)]
    {
        let p50 = percentile(values, 0.5);
        println!("{name:<34} | {p50:>9.2} {:>9.2} | {:>17.1}", percentile(values, 0.99), p50 / commit_p50);
    }
}

/// A process's resident set size, from /proc.
fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// Microseconds per raw RocksDB point read (1,000 keys, warm) and per ring
/// Ed25519 sign-and-verify of a 256-byte message.
fn policy_log(seconds: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile_dir()?;
    let mut civmesh = CivmeshTarget::start(&dir.join("civmesh"))?;
    let etcd = EtcdCluster::start(&dir.join("etcd"))?;
    println!("policy log vs etcd, 3 voters on loopback, fsync on, {COMMAND_BYTES}-byte commands, {seconds} s per row");
    println!(
        "{:>8} | {:>10} {:>9} {:>9} | {:>10} {:>9} {:>9} | {:>7}",
        "writers", "civmesh/s", "p50 ms", "p99 ms", "etcd/s", "p50 ms", "p99 ms", "ratio"
    );
    let mut breakdown = None;
    for writers in WRITERS {
        anyhow::ensure!(
            started.elapsed().as_secs() < BENCHMARK_SECONDS_MAX,
            "the benchmark ran over its time bound"
        );
        civmesh.refill_pool()?;
        let before = (StageTotals::read(&civmesh.leader)?, StageTotals::read(&civmesh.follower)?);
        let ours = measure(writers, seconds, |_, _| civmesh.write(1))?;
        if writers == 1 {
            let leader =
                Span { name: "leader", before: before.0, after: StageTotals::read(&civmesh.leader)? };
            let follower =
                Span { name: "follower", before: before.1, after: StageTotals::read(&civmesh.follower)? };
            breakdown = Some((ours.mean_ms, leader, follower));
        }
        let anchor = measure(writers, seconds, |writer, sequence| etcd.put(writer, sequence))?;
        println!(
            "{writers:>8} | {:>10.0} {:>9.2} {:>9.2} | {:>10.0} {:>9.2} {:>9.2} | {:>7.3}",
            ours.per_second,
            ours.p50_ms,
            ours.p99_ms,
            anchor.per_second,
            anchor.p50_ms,
            anchor.p99_ms,
            ours.per_second / anchor.per_second
        );
    }
    if let Some((client_mean_ms, leader, follower)) = breakdown {
        breakdown::print(
            client_mean_ms,
            &leader,
            &follower,
            breakdown::raw_synced_write_ms(&dir.join("raw"))?,
        );
    }
    civmesh.refill_pool()?;
    let grouped = measure(16, seconds, |_, _| civmesh.write(GROUP_COMMIT_BATCH))?;
    println!(
        "group commit: {} commands per entry, 16 writers: {:.0} commands/s (p50 {:.2} ms, p99 {:.2} ms per entry)",
        GROUP_COMMIT_BATCH,
        grouped.per_second * GROUP_COMMIT_BATCH as f64,
        grouped.p50_ms,
        grouped.p99_ms
    );
    drop(etcd);
    drop(civmesh);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("civmesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Measures each concurrency in `levels` and prints a row of its figures,
/// its p50 beside `anchor_ms` as a ratio. `columns`: the concurrency's
/// name, the rate's name and the ratio's name.
fn print_table(
    columns: [&str; 3],
    anchor_ms: f64,
    levels: impl IntoIterator<Item = usize>,
    mut run: impl FnMut(usize) -> anyhow::Result<Figures>,
) -> anyhow::Result<()> {
    let [level_name, rate_name, ratio_name] = columns;
    println!("{level_name:>10} | {rate_name:>13} {:>9} {:>9} | {ratio_name:>24}", "p50 ms", "p99 ms");
    for level in levels {
        let figures = run(level)?;
        println!(
            "{level:>10} | {:>13.0} {:>9.2} {:>9.2} | {:>24.1}",
            figures.per_second,
            figures.p50_ms,
            figures.p99_ms,
            figures.p50_ms / anchor_ms
        );
    }
    Ok(())
}

struct Figures {
    per_second: f64,
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// A row's pre-signed commands are all used: the row ends early, measured
/// up to then.
#[derive(Debug, thiserror::Error)]
#[error("the pre-signed pool ran out")]
struct PoolExhausted;

/// Runs `writers` threads, each writing sequentially for `seconds` (or
/// until one finds its [`PoolExhausted`]).
fn measure(
    writers: usize,
    seconds: u64,
    write: impl Fn(usize, u64) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<Figures> {
    let latencies = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let elapsed = std::thread::scope(|scope| {
        for writer in 0..writers {
            let (latencies, failures, stop, write) = (&latencies, &failures, &stop, &write);
            scope.spawn(move || {
                let mut mine = Vec::new();
                let mut sequence = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let begun = Instant::now();
                    match write(writer, sequence) {
                        Ok(()) => mine.push(begun.elapsed()),
                        Err(error) if error.is::<PoolExhausted>() => stop.store(true, Ordering::Relaxed),
                        Err(error) => {
                            if let Ok(mut failures) = failures.lock() {
                                failures.push(error.to_string());
                            }
                        }
                    }
                    sequence += 1;
                }
                if let Ok(mut latencies) = latencies.lock() {
                    latencies.extend(mine);
                }
            });
        }
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(seconds) {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        started.elapsed().as_secs_f64()
    });
    let failures = failures.into_inner().unwrap_or_default();
    anyhow::ensure!(failures.is_empty(), "{} writes failed, e.g. {}", failures.len(), failures[0]);
    let mut latencies = latencies.into_inner().unwrap_or_default();
    anyhow::ensure!(!latencies.is_empty(), "no write completed");
    latencies.sort();
    let percentile = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3
    };
    let mean_ms = latencies.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / latencies.len() as f64;
    Ok(Figures {
        per_second: latencies.len() as f64 / elapsed,
        mean_ms,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
    })
}

/// Three civmesh voters; writes go to the leader's HTTP API.
struct CivmeshTarget {
    /// Keeps the processes alive; dropping it stops them.
    _net: Testnet,
    /// Every member's key: commands are signed in turn by each, as one
    /// signer may have only `COMMAND_NONCES_PER_SIGNER_MAX` in the replay
    /// window.
    keys: Vec<NodeKey>,
    leader: civmesh_testnet::NodeApi,
    follower: civmesh_testnet::NodeApi,
    pool: Vec<String>,
    next: std::sync::atomic::AtomicUsize,
}

impl CivmeshTarget {
    fn start(root: &Path) -> anyhow::Result<Self> {
        let specs = [
            NodeSpec::new("hub", "hub/city", "hub", true),
            NodeSpec::new("market", "dept/market-supervision", "department", true),
            NodeSpec::new("civil", "dept/civil-affairs", "department", true),
        ];
        let mut net =
            Testnet::create(root, &specs, SnapshotPolicy { after_entries: 50_000, entries_kept: 10_000 })?;
        net.start_all()?;
        net.bootstrap()?;
        let leader = net.leader(Duration::from_secs(10))?;
        let keys = net
            .nodes
            .iter()
            .map(|node| NodeKey::load(&node.data_dir.join("node.key")))
            .collect::<Result<_, _>>()?;
        let follower = net.api(if leader == 0 { 1 } else { 0 })?;
        let leader = net.api(leader)?;
        Ok(CivmeshTarget {
            _net: net,
            keys,
            leader,
            follower,
            pool: Vec::new(),
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A FileDemand whose envelope is [`COMMAND_BYTES`] long.
    fn command(key: &NodeKey, number: usize) -> anyhow::Result<SignedCommand> {
        let make = |padding: usize| {
            let command = PolicyCommand::FileDemand {
                dataset: "bench/dataset".into(),
                fields: ["field".to_string()].into(),
                purpose: format!("c{number}-{}", "x".repeat(padding)),
                legal_basis: LegalBasis::StatutoryDuty,
            };
            SignedEnvelope::sign(key, &command, now_unix_millis())
        };
        let unpadded = make(0)?.to_bytes()?.len();
        Ok(make(COMMAND_BYTES.saturating_sub(unpadded))?)
    }

    /// Signs a fresh pool of commands, on every core, before a row starts.
    fn refill_pool(&mut self) -> anyhow::Result<()> {
        static ISSUED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let first = ISSUED.fetch_add(SIGNED_POOL_SIZE, Ordering::Relaxed);
        let keys = &self.keys;
        let numbers = first as u64..(first + SIGNED_POOL_SIZE) as u64;
        self.pool = civmesh_testnet::on_every_core(numbers, |number| {
            let number = usize::try_from(number)?;
            let command = Self::command(&keys[number % keys.len()], number)?;
            Ok(base64::engine::general_purpose::STANDARD.encode(command.to_bytes()?))
        })?;
        self.next.store(0, Ordering::Relaxed);
        Ok(())
    }

    fn write(&self, batch: usize) -> anyhow::Result<()> {
        let start = self.next.fetch_add(batch, Ordering::Relaxed);
        let envelopes = self.pool.get(start..start + batch).ok_or(PoolExhausted)?;
        let body: serde_json::Value =
            self.leader.send("POST", "/v1/commands", &serde_json::json!({ "envelopes": envelopes }))?;
        let accepted = body["outcomes"]
            .as_array()
            .is_some_and(|outcomes| outcomes.iter().all(|o| o.get("Ok").is_some()));
        anyhow::ensure!(accepted, "not accepted: {body}");
        Ok(())
    }
}

/// A 3-member etcd cluster on loopback, started and stopped by the benchmark.
struct EtcdCluster {
    members: Vec<Child>,
    url: String,
    agent: ureq::Agent,
}

impl EtcdCluster {
    fn start(root: &Path) -> anyhow::Result<Self> {
        let binary = which("etcd").context("etcd is not installed (apt-get install etcd-server)")?;
        let client_ports = [free_port()?, free_port()?, free_port()?];
        let peer_ports = [free_port()?, free_port()?, free_port()?];
        let initial_cluster =
            (0..3).map(|i| format!("e{i}=http://127.0.0.1:{}", peer_ports[i])).collect::<Vec<_>>().join(",");
        let mut members = Vec::new();
        for i in 0..3 {
            let data_dir = root.join(format!("e{i}"));
            std::fs::create_dir_all(&data_dir)?;
            let log = std::fs::File::create(root.join(format!("e{i}.log")))?;
            members.push(
                Command::new(&binary)
                    .args(["--name", &format!("e{i}"), "--data-dir"])
                    .arg(&data_dir)
                    .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", client_ports[i])])
                    .args(["--advertise-client-urls", &format!("http://127.0.0.1:{}", client_ports[i])])
                    .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", peer_ports[i])])
                    .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", peer_ports[i])])
                    .args(["--initial-cluster", &initial_cluster, "--initial-cluster-state", "new"])
                    .args(["--initial-cluster-token", "civmesh-bench", "--unsafe-no-fsync=false"])
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()?,
            );
        }
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).build().into();
        // Writes go to the leader, as civmesh's do.
        let leader_port = wait_until("an etcd leader", Duration::from_secs(20), || {
            client_ports.iter().copied().find(|port| {
                let url = format!("http://127.0.0.1:{port}/v3/maintenance/status");
                let status: Option<serde_json::Value> = agent
                    .post(&url)
                    .send_json(serde_json::json!({}))
                    .ok()
                    .and_then(|mut r| r.body_mut().read_json().ok());
                status.is_some_and(|s| s["leader"].is_string() && s["leader"] == s["header"]["member_id"])
            })
        })?;
        Ok(EtcdCluster { members, url: format!("http://127.0.0.1:{leader_port}/v3/kv/put"), agent })
    }

    fn put(&self, writer: usize, sequence: u64) -> anyhow::Result<()> {
        let engine = base64::engine::general_purpose::STANDARD;
        let key = engine.encode(format!("w{writer}-s{sequence}"));
        let value = engine.encode(vec![b'v'; COMMAND_BYTES]);
        let mut response =
            self.agent.post(&self.url).send_json(serde_json::json!({ "key": key, "value": value }))?;
        let body: serde_json::Value = response.body_mut().read_json()?;
        anyhow::ensure!(body.get("header").is_some(), "etcd refused: {body}");
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.kill();
            let _ = member.wait();
        }
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
}
