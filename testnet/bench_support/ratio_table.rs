//! Prints benchmark figures beside an anchor measured in the same run, as a
//! ratio, from criterion's own estimates. Shared by every crate's criterion
//! benches through `#[path]`, since benches cannot depend on one another.

use std::path::{Path, PathBuf};

/// Where the benches keep criterion's output, so this module can read it.
pub fn criterion_output_directory() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    target.join("criterion")
}

/// The mean time per iteration, in nanoseconds, of `group/bench`.
fn mean_nanoseconds(directory: &Path, group: &str, bench: &str) -> Option<f64> {
    let path = directory.join(group).join(bench).join("new").join("estimates.json");
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

/// Prints one line per row: ours/s, anchor/s and ours/anchor.
pub fn print_ratio_table(title: &str, rows: &[Row<'_>]) {
    let directory = criterion_output_directory();
    println!("\n{title}");
    println!("{:<58} {:>14} {:>14} {:>8}", "measurement", "ops/s", "anchor ops/s", "ratio");
    for row in rows {
        let ours = mean_nanoseconds(&directory, row.group, row.bench);
        let anchor = mean_nanoseconds(&directory, row.group, row.anchor);
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
            _ => println!("{:<58} (no estimate: run with `cargo bench`)", row.bench),
        }
    }
}
