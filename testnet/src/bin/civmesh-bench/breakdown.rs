//! Where one writer's commit goes: the policy log's own stage timings
//! (`civmesh_policy_log_stage_*` in `/metrics`), read from the leader and a
//! follower before and after the one-writer row, beside the client's time
//! and a raw synced RocksDB write measured in the same run.

use std::collections::BTreeMap;
use std::time::Instant;

use civmesh_testnet::NodeApi;

/// Each stage's passes and microseconds, from one node's `/metrics`.
#[derive(Clone, Default)]
pub struct StageTotals(BTreeMap<String, (f64, f64)>);

impl StageTotals {
    /// Reads `node`'s stage counters now.
    pub fn read(node: &NodeApi) -> anyhow::Result<Self> {
        let text = node.get_text("/metrics")?;
        let mut totals: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for line in text.lines() {
            let Some((name_and_label, value)) = line.rsplit_once(' ') else { continue };
            let Some((name, label)) = name_and_label.split_once("{stage=\"") else { continue };
            let stage = label.trim_end_matches("\"}").to_string();
            let value: f64 = value.parse()?;
            match name {
                "civmesh_policy_log_stage_passes_total" => totals.entry(stage).or_default().0 = value,
                "civmesh_policy_log_stage_microseconds_total" => totals.entry(stage).or_default().1 = value,
                _ => {}
            }
        }
        Ok(StageTotals(totals))
    }

    /// The mean milliseconds of `stage` per pass between `before` and now,
    /// and its passes.
    fn mean_ms_since(&self, before: &StageTotals, stage: &str) -> (f64, f64) {
        let now = self.0.get(stage).copied().unwrap_or_default();
        let then = before.0.get(stage).copied().unwrap_or_default();
        let passes = now.0 - then.0;
        let mean_ms = if passes > 0.0 { (now.1 - then.1) / passes / 1000.0 } else { 0.0 };
        (mean_ms, passes)
    }
}

/// One node's stage totals before and after a row.
pub struct Span<'a> {
    pub name: &'a str,
    pub before: StageTotals,
    pub after: StageTotals,
}

/// Prints the breakdown of the one-writer row: the client's mean, each
/// stage's mean per pass at the leader and the follower, and the raw
/// synced write anchor.
pub fn print(client_mean_ms: f64, leader: &Span<'_>, follower: &Span<'_>, raw_sync_ms: f64) {
    let stage = |span: &Span<'_>, name: &str| span.after.mean_ms_since(&span.before, name);
    let (submit_ms, _) = stage(leader, "submit");
    println!("where one writer's commit goes (mean per pass, ms; the same run's raw RocksDB synced write: {raw_sync_ms:.3} ms)");
    println!("{:>44} | {:>8} | {:>8} | {:>10}", "stage", "ms", "passes", "÷ raw sync");
    let row = |label: &str, (ms, passes): (f64, f64)| {
        println!("{label:>44} | {ms:>8.3} | {passes:>8.0} | {:>10.2}", ms / raw_sync_ms);
    };
    row("client: whole write (HTTPS, JSON, commit)", (client_mean_ms, f64::NAN));
    row("API outside the policy log (client − submit)", (client_mean_ms - submit_ms, f64::NAN));
    for (label, name) in [
        ("submit at the leader", "submit"),
        ("  waiting for a verifier", "verify_wait"),
        ("  stamping and handing to Raft", "propose"),
        ("  replication, syncs, commit, apply", "commit"),
    ] {
        row(&format!("{}: {label}", leader.name), stage(leader, name));
    }
    for span in [leader, follower] {
        for (label, name) in [
            ("log append + fsync", "log_append"),
            ("apply (a call)", "apply"),
            ("  verdicts and verifying in apply", "apply_verify"),
        ] {
            row(&format!("{}: {label}", span.name), stage(span, name));
        }
    }
}

/// The mean milliseconds of a synced 256-byte RocksDB write, on a fresh
/// database in `dir`.
pub fn raw_synced_write_ms(dir: &std::path::Path) -> anyhow::Result<f64> {
    const WRITES: u32 = 2_000;
    let db = rocksdb::DB::open_default(dir)?;
    let mut options = rocksdb::WriteOptions::default();
    options.set_sync(true);
    let started = Instant::now();
    for index in 0..WRITES {
        db.put_opt(index.to_be_bytes(), [7u8; 256], &options)?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / f64::from(WRITES))
}
