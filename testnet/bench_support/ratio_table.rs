//! Prints benchmark figures beside an anchor measured in the same run, as a
//! ratio, from criterion's own estimates. Shared by every crate's criterion
//! benches through `#[path]`, since benches cannot depend on one another.
//! Only estimates this run wrote are read: a figure left by an earlier run
//! is reported as missing, never printed as this run's.

use std::path::PathBuf;
use std::time::SystemTime;

/// One bench process: when it started, and where criterion writes.
pub struct Run {
    started: SystemTime,
    directory: PathBuf,
}

impl Run {
    /// Starts the run: estimates written from now on are this run's.
    pub fn start() -> Self {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target"));
        Run { started: SystemTime::now(), directory: target.join("criterion") }
    }

    /// Criterion, writing where this module reads, configured from the
    /// command line.
    pub fn criterion(&self) -> criterion::Criterion {
        criterion::Criterion::default().output_directory(&self.directory).configure_from_args()
    }

    /// Prints one line per row: ours/s, anchor/s and ours/anchor.
    pub fn print_ratio_table(&self, title: &str, rows: &[Row<'_>]) {
        print_ratio_table(self, title, rows);
    }
}

/// The mean time per iteration, in nanoseconds, of `group/bench`, if this
/// run measured it.
fn mean_nanoseconds(run: &Run, group: &str, bench: &str) -> Option<f64> {
    let path = run.directory.join(group).join(bench).join("new").join("estimates.json");
    let written = std::fs::metadata(&path).ok()?.modified().ok()?;
    if written < run.started {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("mean")?.get("point_estimate")?.as_f64()
}

/// One row: a figure of ours, the anchor it is compared with, and how many
/// operations one iteration of each performs.
pub struct Row<'a> {
    /// Criterion group of both benches.
    pub group: &'a str,
    /// Our bench.
    pub bench: &'a str,
    /// The anchor bench.
    pub anchor: &'a str,
    /// Operations per iteration of `bench` and of `anchor`.
    pub operations_per_iteration: f64,
}

fn print_ratio_table(run: &Run, title: &str, rows: &[Row<'_>]) {
    println!("\n{title}");
    println!("{:<58} {:>14} {:>14} {:>8}", "measurement", "ops/s", "anchor ops/s", "ratio");
    for row in rows {
        let ours = mean_nanoseconds(run, row.group, row.bench);
        let anchor = mean_nanoseconds(run, row.group, row.anchor);
        match (ours, anchor) {
            (Some(ours), Some(anchor)) => {
                let ours_per_second = row.operations_per_iteration * 1e9 / ours;
                let anchor_per_second = row.operations_per_iteration * 1e9 / anchor;
                println!(
                    "{:<58} {:>14.0} {:>14.0} {:>8.3}",
                    format!("{} vs {}", row.bench, row.anchor),
                    ours_per_second,
                    anchor_per_second,
                    ours_per_second / anchor_per_second
                );
            }
            _ => println!("{:<58} (not measured in this run: run with `cargo bench`)", row.bench),
        }
    }
}
