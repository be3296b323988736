//! `civmesh-bench growth`: the policy log as its access history grows to
//! 1,000,000 records. Real processes (3 voters, 2 learners, fsync on) take
//! pre-signed access records through the leader's API, a batch per entry,
//! from several writers. At 10k, 100k and 1M records it prints commit
//! throughput and latency (also while a snapshot was being built), each
//! node's resident memory, the latest snapshot's build time and size,
//! `/v1/status` latency and the latency of an inclusion proof read from the
//! stored audit tree; at 1M, a new learner's join and catch-up and a
//! voter's restart after kill -9. Beside them, measured in the same run: a
//! raw RocksDB synced sequential write of the same bytes, a raw copy of a
//! snapshot's bytes, and raw Ed25519 verification.
//!
//! Access records are denials (no grant, records or consents needed), each
//! naming one subject. They are signed by several owner departments for
//! queries of several streets that are members but run no process: one
//! signer may spend `COMMAND_NONCES_PER_SIGNER_MAX` nonces per replay
//! window, and a city has many.
//!
//! The replay window (`COMMAND_NONCES_MAX` nonces over five minutes) bounds
//! the sustained rate below what the log takes in a burst. A milestone
//! reached with the window full prints that bounded rate, and its row is
//! measured once the window has emptied: the row shows what a record
//! costs at that length of history, not the window's bound.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use civmesh_certs::{codec, now_unix_millis, NodeKey, SignedEnvelope};
use civmesh_policy::model::{FieldClass, FieldSpec, FieldType, SharingCategory, SubjectKeyHash};
use civmesh_policy::state::COMMAND_SKEW_MS_MAX;
use civmesh_policy::{AccessOutcome, AccessRecord, Command, DatasetSpec, QueryHeader, ReasonCode};
use civmesh_testnet::{NodeSpec, SnapshotPolicy, Testnet};

/// Where figures are printed, in access records.
const MILESTONES: [u64; 3] = [10_000, 100_000, 1_000_000];
/// The records measured just before each milestone.
const WINDOW_RECORDS: u64 = 10_000;
/// Access records per submission: one log entry.
const BATCH_RECORDS: usize = 250;
/// Submissions in flight.
const WRITERS: usize = 4;
/// Records signed ahead of the writers, at most: well inside the replay
/// window's time bound however slow the log is.
const SIGNED_AHEAD_RECORDS: usize = 20_000;
/// Owner departments and requesting streets that sign records.
const OWNERS: usize = 12;
const REQUESTERS: usize = 12;
/// The running nodes: 3 voters and 2 learners; then the learner that joins.
const RUNNING: [&str; 5] = ["hub", "market", "civil", "jingansi", "auditor"];
const VOTERS: usize = 3;
const JOINER: &str = "zhenru";
/// `/v1/status` calls timed at each milestone.
const STATUS_CALLS: usize = 200;
/// Inclusion proofs timed at each milestone, of leaves spread over the tree.
const PROOF_CALLS: u64 = 200;
/// How long the whole benchmark may run before it stops itself.
const GROWTH_SECONDS_MAX: u64 = 3 * 3600;

/// Batches whose commit timed out (a leader change while they were in
/// flight): they may or may not have committed.
static UNSETTLED_BATCHES: AtomicU64 = AtomicU64::new(0);
/// Records sent again because the replay window was full.
static WINDOW_FULL_RESUBMISSIONS: AtomicU64 = AtomicU64::new(0);
/// Batches sent again because no leader answered (an election under way).
static LEADERLESS_RESUBMISSIONS: AtomicU64 = AtomicU64::new(0);

/// One milestone's figures.
struct Row {
    records: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    p99_snapshot_ms: Option<f64>,
    rss_mib: Vec<f64>,
    /// Each node's policy-log database in memory: memtables, table readers
    /// and block cache, in MiB.
    storage_mib: Vec<[f64; 3]>,
    snapshot_build_ms: u64,
    snapshot_bytes: u64,
    status_p50_ms: f64,
    proof_p50_ms: f64,
    /// The rate on the way to this milestone, if the replay window was
    /// full on the way (it bounds the sustained rate).
    window_bound_per_second: Option<f64>,
}

/// A batch's commit: when it started and how long it took.
struct Commit {
    started: Instant,
    took: Duration,
}

/// Runs the benchmark; `divide` shrinks every record count by that factor
/// (1 for the real run; more for a quick check of the harness).
pub fn growth(divide: u64) -> anyhow::Result<()> {
    anyhow::ensure!((1..=100).contains(&divide), "--divide takes 1..=100");
    let window = WINDOW_RECORDS / divide;
    let started = Instant::now();
    let dir = super::tempfile_dir()?.join("growth");
    let mut net = federation(&dir)?;
    let leader = net.leader(Duration::from_secs(10))?;
    let signers = Signers::load(&net)?;
    let (raw_write_per_second, raw_verify_per_second) = anchors(&dir, &signers)?;
    let batch_verify_per_second = batch_verify_per_second(OWNERS + REQUESTERS)?;
    println!(
        "growth: {} voters + {} learners, fsync on, {BATCH_RECORDS} records per entry, {WRITERS} writers",
        VOTERS,
        RUNNING.len() - VOTERS
    );
    let snapshots = SnapshotWatch::start(&net, leader)?;
    let term_before = net.api(leader)?.status()?.raft.term;
    let mut rows = Vec::new();
    let mut done = 0u64;
    for milestone in MILESTONES.map(|records| records / divide) {
        anyhow::ensure!(started.elapsed().as_secs() < GROWTH_SECONDS_MAX, "the benchmark ran too long");
        let refused_before = WINDOW_FULL_RESUBMISSIONS.load(Ordering::Relaxed);
        let driving = Instant::now();
        drive(&net, leader, &signers, done, milestone - window, &mut Vec::new())?;
        let window_bound_per_second = (WINDOW_FULL_RESUBMISSIONS.load(Ordering::Relaxed) > refused_before)
            .then(|| (milestone - window - done) as f64 / driving.elapsed().as_secs_f64());
        if window_bound_per_second.is_some() {
            println!(
                "  the replay window filled on the way to {milestone} records: measuring once it is empty"
            );
            std::thread::sleep(Duration::from_millis(COMMAND_SKEW_MS_MAX + WINDOW_EMPTY_MARGIN_MS));
        }
        let mut commits = Vec::new();
        let window_started = Instant::now();
        drive(&net, leader, &signers, milestone - window, milestone, &mut commits)?;
        let window_s = window_started.elapsed().as_secs_f64();
        done = milestone;
        let mut row = row(&net, leader, (milestone, window), window_s, &commits, &snapshots)?;
        row.window_bound_per_second = window_bound_per_second;
        rows.push(row);
        println!("  {milestone} records after {:.0} s", started.elapsed().as_secs_f64());
    }
    snapshots.stop();
    let term_after = net.api(leader)?.status()?.raft.term;
    println!(
        "Raft term {term_before} to {term_after} during the run; {} batches of {BATCH_RECORDS} timed out unsettled, \
         {} sent again while no leader was known; \
         {} records sent again because the replay window held COMMAND_NONCES_MAX ({}) nonces",
        UNSETTLED_BATCHES.load(Ordering::Relaxed),
        LEADERLESS_RESUBMISSIONS.load(Ordering::Relaxed),
        WINDOW_FULL_RESUBMISSIONS.load(Ordering::Relaxed),
        civmesh_policy::state::COMMAND_NONCES_MAX
    );
    print_rows(&rows, raw_write_per_second, [raw_verify_per_second, batch_verify_per_second]);
    print_memory(&rows);
    let join_s = join_learner(&mut net, leader)?;
    let restart_s = restart_voter(&mut net, leader)?;
    print_events(&rows, join_s, restart_s);
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Starts the running nodes, admits the signing members, and has each owner
/// publish its dataset.
fn federation(dir: &std::path::Path) -> anyhow::Result<Testnet> {
    let mut specs = civmesh_testnet::city::city(&RUNNING);
    specs.extend(civmesh_testnet::city::city(&[JOINER]));
    anyhow::ensure!(specs.len() == RUNNING.len() + 1, "a node of the bench is not in the demo city");
    specs.extend(
        (0..OWNERS)
            .map(|n| NodeSpec::new(&format!("o{n:02}"), &format!("dept/owner-{n:02}"), "department", false)),
    );
    specs.extend(
        (0..REQUESTERS)
            .map(|n| NodeSpec::new(&format!("r{n:02}"), &format!("street/r{n:02}"), "street", false)),
    );
    let snapshot = SnapshotPolicy { after_entries: 400, entries_kept: 100 };
    let mut net = Testnet::create(dir, &specs, snapshot)?;
    for index in 0..RUNNING.len() {
        net.start(index)?;
    }
    net.bootstrap_nodes(&(0..RUNNING.len()).collect::<Vec<_>>())?;
    let leader = net.leader(Duration::from_secs(10))?;
    for index in RUNNING.len() + 1..specs.len() {
        net.admit_offline(index, leader)?;
    }
    for owner in 0..OWNERS {
        let index = RUNNING.len() + 1 + owner;
        net.sign_and_submit(leader, index, Command::PublishDataset(dataset(owner)))?;
    }
    Ok(net)
}

fn dataset(owner: usize) -> DatasetSpec {
    DatasetSpec {
        id: format!("owner-{owner:02}/registry"),
        title: "Registry".into(),
        subject_key_field: "key".into(),
        sharing: SharingCategory::Conditional,
        fields: vec![FieldSpec {
            name: "key".into(),
            field_type: FieldType::Text,
            class: FieldClass::Public,
        }],
        scope_fields: vec![],
    }
}

/// The keys that sign access records.
struct Signers {
    owners: Vec<NodeKey>,
    requesters: Vec<NodeKey>,
}

impl Signers {
    fn load(net: &Testnet) -> anyhow::Result<Self> {
        let key = |index: usize| NodeKey::load(&net.nodes[index].data_dir.join("node.key"));
        let first_owner = RUNNING.len() + 1;
        let first_requester = first_owner + OWNERS;
        Ok(Signers {
            owners: (first_owner..first_requester).map(key).collect::<Result<_, _>>()?,
            requesters: (first_requester..first_requester + REQUESTERS).map(key).collect::<Result<_, _>>()?,
        })
    }

    /// Access record `number`, signed now, base64 for the API.
    fn record(&self, number: u64) -> anyhow::Result<String> {
        let owner = (number % OWNERS as u64) as usize;
        let requester = ((number / OWNERS as u64) % REQUESTERS as u64) as usize;
        let header = QueryHeader {
            dataset: format!("owner-{owner:02}/registry"),
            subjects: vec![SubjectKeyHash(codec::sha256(&number.to_be_bytes()))],
            fields: vec!["key".into()],
            purpose: "inspection".into(),
            grant: None,
        };
        let now = now_unix_millis();
        let request = SignedEnvelope::sign(&self.requesters[requester], &header, now)?;
        let outcome = AccessOutcome::Deny { reason: ReasonCode::GrantRequired };
        let record = AccessRecord { request, outcome, decided_at_ms: now };
        let envelope = SignedEnvelope::sign(&self.owners[owner], &Command::RecordAccess(record), now)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(envelope.to_bytes()?))
    }

    /// Records `from..to`, signed on every core.
    fn records(&self, from: u64, to: u64) -> anyhow::Result<Vec<String>> {
        civmesh_testnet::on_every_core(from..to, |number| self.record(number))
    }
}

/// Commits records `from..to` through the leader, `SIGNED_AHEAD_RECORDS`
/// signed at a time, timing each batch into `commits`.
fn drive(
    net: &Testnet,
    leader: usize,
    signers: &Signers,
    from: u64,
    to: u64,
    commits: &mut Vec<Commit>,
) -> anyhow::Result<()> {
    let api = net.api(leader)?;
    let mut next = from;
    while next < to {
        let end = (next + SIGNED_AHEAD_RECORDS as u64).min(to);
        let records = signers.records(next, end)?;
        let batches: Vec<&[String]> = records.chunks(BATCH_RECORDS).collect();
        let cursor = AtomicU64::new(0);
        let timed = Mutex::new(Vec::new());
        let failed = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..WRITERS {
                scope.spawn(|| loop {
                    let index = cursor.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(batch) = batches.get(index) else { return };
                    let first = next + (index * BATCH_RECORDS) as u64;
                    if let Err(error) = commit_batch(&api, signers, first, batch, &timed) {
                        eprintln!("a batch was not accepted: {error:#}");
                        failed.store(true, Ordering::Relaxed);
                        return;
                    }
                });
            }
        });
        anyhow::ensure!(!failed.load(Ordering::Relaxed), "the log refused a batch");
        commits.extend(timed.into_inner().unwrap_or_default());
        next = end;
    }
    Ok(())
}

/// How long past the replay window's length a milestone's row waits, once
/// the window filled on the way, for the window to be empty.
const WINDOW_EMPTY_MARGIN_MS: u64 = 10_000;
/// How long a writer waits before resubmitting what a full replay window
/// refused.
const WINDOW_FULL_WAIT_MS: u64 = 250;
/// How long a writer waits before resubmitting a batch no leader took.
const LEADERLESS_WAIT_MS: u64 = 500;
/// The most resubmissions of one batch: longer than the replay window.
const WINDOW_FULL_RETRIES_MAX: u32 = 2_000;

/// Commits one batch (records `first..`), timing each call into `timed`.
/// What the replay window refused because it holds `COMMAND_NONCES_MAX`
/// nonces is signed again (a refused command has spent its nonce) and sent
/// once older nonces have left it, counted in
/// `WINDOW_FULL_RESUBMISSIONS`: the window bounds the sustained rate.
fn commit_batch(
    api: &civmesh_testnet::NodeApi,
    signers: &Signers,
    first: u64,
    batch: &[String],
    timed: &Mutex<Vec<Commit>>,
) -> anyhow::Result<()> {
    let mut pending: Vec<(u64, String)> = (first..).zip(batch.iter().cloned()).collect();
    for _ in 0..WINDOW_FULL_RETRIES_MAX {
        let started = Instant::now();
        let envelopes: Vec<&String> = pending.iter().map(|(_, envelope)| envelope).collect();
        let answer: anyhow::Result<serde_json::Value> =
            api.send("POST", "/v1/commands", &serde_json::json!({ "envelopes": envelopes }));
        // A commit timeout leaves the batch's fate open (it may commit
        // later): counted, not fatal.
        let answer = match answer {
            Err(error) if error.to_string().contains("not committed within") => {
                UNSETTLED_BATCHES.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            // Refused while a leader was elected: the same bytes again
            // (what had committed comes back "replayed").
            Err(error) if error.to_string().contains("no leader") => {
                LEADERLESS_RESUBMISSIONS.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(LEADERLESS_WAIT_MS));
                continue;
            }
            other => other?,
        };
        let outcomes = answer["outcomes"].as_array().context("no outcomes")?;
        let window_full = |outcome: &serde_json::Value| {
            outcome["Err"]["code"] == "overloaded"
                && outcome["Err"]["detail"]
                    .as_str()
                    .is_some_and(|detail| detail.ends_with("in the replay window"))
                && !outcome["Err"]["detail"].as_str().is_some_and(|detail| detail.contains("quota"))
        };
        let refused: Vec<u64> = pending
            .iter()
            .zip(outcomes)
            .filter(|(_, outcome)| window_full(outcome))
            .map(|((number, _), _)| *number)
            .collect();
        // Each record is sent once (a refused one is signed again), so
        // "replayed" means an earlier try committed it: this one, or the
        // node's own forward retried across a leader change.
        let committed_before = |outcome: &serde_json::Value| outcome["Err"]["code"] == "replayed";
        let accepted = outcomes
            .iter()
            .filter(|outcome| outcome.get("Ok").is_some() || committed_before(outcome))
            .count();
        anyhow::ensure!(accepted + refused.len() == pending.len(), "not accepted: {answer}");
        if let Ok(mut timed) = timed.lock() {
            timed.push(Commit { started, took: started.elapsed() });
        }
        if refused.is_empty() {
            return Ok(());
        }
        WINDOW_FULL_RESUBMISSIONS.fetch_add(refused.len() as u64, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(WINDOW_FULL_WAIT_MS));
        pending = refused
            .into_iter()
            .map(|number| Ok((number, signers.record(number)?)))
            .collect::<anyhow::Result<_>>()?;
    }
    anyhow::bail!("the replay window stayed full for {WINDOW_FULL_RETRIES_MAX} tries")
}

/// Watches the leader's latest snapshot from a thread: when each was
/// finished and how long it took to build.
struct SnapshotWatch {
    builds: std::sync::Arc<Mutex<Vec<(Instant, Duration)>>>,
    stop: std::sync::Arc<AtomicBool>,
}

impl SnapshotWatch {
    fn start(net: &Testnet, leader: usize) -> anyhow::Result<Self> {
        let api = net.api(leader)?;
        let builds = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (seen, halt) = (builds.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last_index = 0;
            while !halt.load(Ordering::Relaxed) {
                if let Ok(status) = api.status() {
                    let raft = status.raft;
                    if raft.snapshot_index != last_index && raft.snapshot_build_ms > 0 {
                        last_index = raft.snapshot_index;
                        if let Ok(mut seen) = seen.lock() {
                            seen.push((Instant::now(), Duration::from_millis(raft.snapshot_build_ms)));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Ok(SnapshotWatch { builds, stop })
    }

    /// Whether a commit overlapped a snapshot build (give or take the
    /// watch's 100 ms).
    fn during_build(&self, commit: &Commit) -> bool {
        let Ok(builds) = self.builds.lock() else { return false };
        builds.iter().any(|(seen, took)| {
            let begun = seen.checked_sub(*took + Duration::from_millis(100)).unwrap_or(*seen);
            commit.started < *seen && commit.started + commit.took > begun
        })
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

fn row(
    net: &Testnet,
    leader: usize,
    (records, window): (u64, u64),
    window_s: f64,
    commits: &[Commit],
    snapshots: &SnapshotWatch,
) -> anyhow::Result<Row> {
    let sorted = |commits: &mut dyn Iterator<Item = &Commit>| {
        let mut ms: Vec<f64> = commits.map(|commit| commit.took.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        ms
    };
    let all = sorted(&mut commits.iter());
    let during = sorted(&mut commits.iter().filter(|commit| snapshots.during_build(commit)));
    let rss_mib = (0..RUNNING.len())
        .map(|index| Ok(super::resident_kib(net.pid(index)?).context("no resident memory")? as f64 / 1024.0))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let storage_mib = (0..RUNNING.len())
        .map(|index| storage_memory_mib(&net.api(index)?))
        .collect::<anyhow::Result<_>>()?;
    let api = net.api(leader)?;
    let mut status_ms = Vec::new();
    let mut latest = None;
    for _ in 0..STATUS_CALLS {
        let started = Instant::now();
        latest = Some(api.status()?);
        status_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    status_ms.sort_by(f64::total_cmp);
    let raft = latest.context("no status")?.raft;
    let proof_ms = proof_latencies(&api)?;
    Ok(Row {
        records,
        per_second: window as f64 / window_s,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        p99_snapshot_ms: (!during.is_empty()).then(|| percentile(&during, 0.99)),
        rss_mib,
        storage_mib,
        snapshot_build_ms: raft.snapshot_build_ms,
        snapshot_bytes: raft.snapshot_bytes,
        status_p50_ms: percentile(&status_ms, 0.50),
        proof_p50_ms: percentile(&proof_ms, 0.50),
        window_bound_per_second: None,
    })
}

/// The latencies of [`PROOF_CALLS`] inclusion proofs through `api`, of
/// leaves spread over its applied tree, sorted. (No checkpoint becomes
/// final here: the owner departments that sign records run no process, so
/// the running signers are no majority of the signing organisations.)
fn proof_latencies(api: &civmesh_testnet::NodeApi) -> anyhow::Result<Vec<f64>> {
    let checkpoints: serde_json::Value = api.get("/v1/audit/checkpoints?limit=1")?;
    let size = checkpoints["leaves"].as_u64().context("no tree size")?;
    let mut proof_ms = Vec::new();
    for call in 0..PROOF_CALLS.min(size) {
        let path = format!("/v1/audit/proofs/inclusion?leaf={}&tree_size={size}", call * size / PROOF_CALLS);
        let started = Instant::now();
        // A binary from before the stored tree (CIVMESH_BIN) has no proofs.
        if api.get::<serde_json::Value>(&path).is_err() {
            break;
        }
        proof_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    proof_ms.sort_by(f64::total_cmp);
    Ok(proof_ms)
}

/// Records/s a raw RocksDB synced sequential write of the same bytes
/// reaches (a batch per write, as the log), and Ed25519 verifications/s on
/// one core.
fn anchors(dir: &std::path::Path, signers: &Signers) -> anyhow::Result<(f64, f64)> {
    let sample = signers.records(0, BATCH_RECORDS as u64)?;
    let record_bytes: Vec<Vec<u8>> = sample
        .iter()
        .map(|encoded| base64::engine::general_purpose::STANDARD.decode(encoded))
        .collect::<Result<_, _>>()?;
    let path = dir.join("anchor-rocksdb");
    let db = rocksdb::DB::open_default(&path)?;
    let mut options = rocksdb::WriteOptions::default();
    options.set_sync(true);
    let batches = 400u64;
    let started = Instant::now();
    for batch_number in 0..batches {
        let mut batch = rocksdb::WriteBatch::default();
        for (offset, bytes) in record_bytes.iter().enumerate() {
            batch.put((batch_number * BATCH_RECORDS as u64 + offset as u64).to_be_bytes(), bytes);
        }
        db.write_opt(batch, &options)?;
    }
    let raw_write = (batches * BATCH_RECORDS as u64) as f64 / started.elapsed().as_secs_f64();
    drop(db);
    let _ = std::fs::remove_dir_all(&path);
    let key = NodeKey::generate()?;
    let public = key.node_id().0;
    let message = &record_bytes[0];
    let signature = key.sign(message);
    let rounds = 20_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
            .verify(message, &signature)
            .map_err(|_| anyhow::anyhow!("verify failed"))?;
    }
    Ok((raw_write, f64::from(rounds) / started.elapsed().as_secs_f64()))
}

/// Signatures one core verifies per second in ZIP 215 batches of
/// `VERIFY_BATCH_COMMANDS_MAX` (the batches replicas verify on arrival),
/// made in turn by `signers` keys: a batch combines the terms of one key,
/// so the anchor uses as many as the workload it stands beside.
pub fn batch_verify_per_second(signers: usize) -> anyhow::Result<f64> {
    let keys: Vec<NodeKey> = (0..signers.max(1)).map(|_| NodeKey::generate()).collect::<Result<_, _>>()?;
    let batch_size = civmesh_policy::signatures::VERIFY_BATCH_COMMANDS_MAX;
    let signed: Vec<([u8; 32], Vec<u8>, [u8; 64])> = (0..batch_size)
        .map(|index| {
            let key = &keys[index % keys.len()];
            let message = format!("message {index}").into_bytes();
            let signature = key.sign(&message);
            (key.node_id().0, message, signature)
        })
        .collect();
    let rounds = 100u32;
    let started = Instant::now();
    for _ in 0..rounds {
        let mut batch = civmesh_certs::signature::Batch::new();
        for (public, message, signature) in &signed {
            batch.queue(public, message, signature);
        }
        anyhow::ensure!(batch.verify(), "the anchor batch failed");
    }
    Ok(f64::from(rounds) * batch_size as f64 / started.elapsed().as_secs_f64())
}

/// A raw copy of `bytes` bytes to a file, fsynced, in ms.
fn raw_copy_ms(bytes: u64) -> anyhow::Result<f64> {
    use std::io::Write;
    let path = super::tempfile_dir()?.join("anchor-copy");
    let data = vec![7u8; usize::try_from(bytes)?];
    let started = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    file.write_all(&data)?;
    file.sync_all()?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let _ = std::fs::remove_file(&path);
    Ok(ms)
}

fn print_rows(rows: &[Row], raw_write_per_second: f64, [single_per_second, batch_per_second]: [f64; 2]) {
    // Every record is two signatures, verified on each of the running nodes,
    // which share this machine's cores.
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let ceiling = |per_second: f64| per_second * cores / (2.0 * RUNNING.len() as f64);
    let verify_ceiling = ceiling(batch_per_second);
    println!(
        "anchors: raw RocksDB synced write of the same bytes {raw_write_per_second:.0} records/s; \
         Ed25519 verify {single_per_second:.0}/s per core one at a time (ring), {batch_per_second:.0}/s \
         in ZIP 215 batches by {} signers, so at most {verify_ceiling:.0} records/s for {} nodes on {cores} cores \
         (the /verify column; {:.0} one at a time)",
        OWNERS + REQUESTERS,
        RUNNING.len(),
        ceiling(single_per_second)
    );
    println!(
        "{:>9} | {:>9} {:>7} {:>7} {:>7} {:>8} {:>8} | {:>9} {:>8} | {:>8} {:>9} {:>8} | {:>7} {:>7}",
        "records",
        "records/s",
        "/rocks",
        "/verify",
        "p50 ms",
        "p99 ms",
        "p99 snap",
        "RSS max",
        "RSS mean",
        "snap ms",
        "snap KiB",
        "/copy",
        "status",
        "proof"
    );
    for row in rows {
        let max = row.rss_mib.iter().copied().fold(0.0, f64::max);
        let mean = row.rss_mib.iter().sum::<f64>() / row.rss_mib.len().max(1) as f64;
        let copy_ratio = raw_copy_ms(row.snapshot_bytes.max(1))
            .map_or(f64::NAN, |copy_ms| row.snapshot_build_ms as f64 / copy_ms.max(0.001));
        println!(
            "{:>9} | {:>9.0} {:>7.3} {:>7.3} {:>7.1} {:>8.1} {:>8} | {:>7.1}Mi {:>6.1}Mi | {:>8} {:>9.1} {:>8.1} | {:>5.2}ms {:>5.2}ms",
            row.records,
            row.per_second,
            row.per_second / raw_write_per_second,
            row.per_second / verify_ceiling,
            row.p50_ms,
            row.p99_ms,
            row.p99_snapshot_ms.map_or("-".to_string(), |ms| format!("{ms:.1}")),
            max,
            mean,
            row.snapshot_build_ms,
            row.snapshot_bytes as f64 / 1024.0,
            copy_ratio,
            row.status_p50_ms,
            row.proof_p50_ms
        );
    }
}

/// What `node`'s policy-log database holds in memory (from `/metrics`):
/// memtables, table readers and block cache, in MiB.
fn storage_memory_mib(node: &civmesh_testnet::NodeApi) -> anyhow::Result<[f64; 3]> {
    let text = node.get_text("/metrics")?;
    let read = |kind: &str| -> anyhow::Result<f64> {
        let series = format!("civmesh_policy_log_storage_memory_bytes{{kind=\"{kind}\"}}");
        let bytes = civmesh_testnet::metric_value(&text, &series).context("no storage memory")?;
        Ok(bytes / (1024.0 * 1024.0))
    };
    Ok([read("memtables")?, read("table_readers")?, read("block_cache")?])
}

/// Where each milestone's resident memory goes, at the node with the most.
fn print_memory(rows: &[Row]) {
    println!("resident memory of the node with the most (MiB): its policy-log database's bounded parts and the rest");
    println!(
        "{:>9} | {:>8} | {:>9} {:>13} {:>11} | {:>8}",
        "records", "RSS", "memtables", "table readers", "block cache", "the rest"
    );
    for row in rows {
        let most = (0..row.rss_mib.len()).max_by(|a, b| row.rss_mib[*a].total_cmp(&row.rss_mib[*b]));
        let Some(node) = most else { continue };
        let [memtables, readers, cache] = row.storage_mib[node];
        println!(
            "{:>9} | {:>8.1} | {memtables:>9.1} {readers:>13.1} {cache:>11.1} | {:>8.1}",
            row.records,
            row.rss_mib[node],
            row.rss_mib[node] - memtables - readers - cache
        );
    }
}

fn print_events(rows: &[Row], join_s: f64, restart_s: f64) {
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let max = |row: &Row| row.rss_mib.iter().copied().fold(0.0, f64::max);
        println!(
            "at {} vs {} records: throughput {:+.1}%, max resident memory {:+.1}%",
            last.records,
            first.records,
            (last.per_second / first.per_second - 1.0) * 100.0,
            (max(last) / max(first) - 1.0) * 100.0
        );
    }
    for row in rows {
        if let Some(per_second) = row.window_bound_per_second {
            println!(
                "on the way to {} records the replay window held COMMAND_NONCES_MAX nonces, which bounds the \
                 sustained rate: {per_second:.0} records/s; the row was measured after {} s without commands, \
                 with the window empty: the cost of a record at that history",
                row.records,
                (COMMAND_SKEW_MS_MAX + WINDOW_EMPTY_MARGIN_MS) / 1000
            );
        }
    }
    println!("a new learner joined and caught up in {join_s:.1} s; a voter restarted after kill -9 in {restart_s:.1} s");
}

/// Starts the joining learner, admits and adds it, and times it until it
/// has applied what the leader had when it started.
fn join_learner(net: &mut Testnet, leader: usize) -> anyhow::Result<f64> {
    let joiner = RUNNING.len();
    let target = net.api(leader)?.status()?.raft.applied_index;
    let started = Instant::now();
    net.start(joiner)?;
    let started_s = started.elapsed().as_secs_f64();
    net.admit(joiner, leader)?;
    let admitted_s = started.elapsed().as_secs_f64();
    net.add_learner(joiner)?;
    let added_s = started.elapsed().as_secs_f64();
    println!("  learner: started {started_s:.1} s, admitted {admitted_s:.1} s, added {added_s:.1} s");
    civmesh_testnet::wait_until("the learner to catch up", Duration::from_secs(600), || {
        (net.api(joiner).ok()?.status().ok()?.raft.applied_index >= target).then_some(())
    })?;
    Ok(started.elapsed().as_secs_f64())
}

/// Kills a voter that is not the leader with kill -9, starts it, and times
/// it until it has applied what it had before.
fn restart_voter(net: &mut Testnet, leader: usize) -> anyhow::Result<f64> {
    let voter = (0..VOTERS).find(|index| *index != leader).context("no other voter")?;
    let target = net.api(voter)?.status()?.raft.applied_index;
    net.kill9(voter)?;
    let started = Instant::now();
    net.start(voter)?;
    civmesh_testnet::wait_until("the voter to come back", Duration::from_secs(600), || {
        (net.api(voter).ok()?.status().ok()?.raft.applied_index >= target).then_some(())
    })?;
    Ok(started.elapsed().as_secs_f64())
}
