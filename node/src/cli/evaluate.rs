//! `civmesh evaluate`: how each department serves the streets, from the
//! node's evaluation, as tables, JSON or CSV.

use civmesh_policy::evaluation::format_percent as percent;
use civmesh_policy::evaluation::{Bucket, Evaluation, EvaluationQuery};
use clap::Args;

use crate::cli::args::NodeDir;
use crate::cli::print_json;
use crate::client::NodeApi;

/// Arguments of `civmesh evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Any node.
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The first day, YYYY-MM-DD (default: the first event in the log).
    #[arg(long, value_name = "FROM_DATE")]
    pub from: Option<String>,
    /// The last day, YYYY-MM-DD, included (default: the last event).
    #[arg(long, value_name = "TO_DATE")]
    pub to: Option<String>,
    /// The bucket length: day, week or month.
    #[arg(long, value_name = "BUCKET", default_value = "day")]
    pub bucket: String,
    /// The output: a table, JSON, or CSV (departments, or streets with
    /// `streets-csv`) for spreadsheets.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = EvaluationFormat::Table)]
    pub format: EvaluationFormat,
}

/// How `civmesh evaluate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvaluationFormat {
    /// Two tables for people: departments, then streets.
    Table,
    /// The API's JSON.
    Json,
    /// The department rows as CSV.
    Csv,
    /// The street rows as CSV.
    StreetsCsv,
}

/// `civmesh evaluate`: asks the node for the evaluation and prints it.
pub(super) fn execute(args: EvaluateArgs) -> anyhow::Result<()> {
    let EvaluateArgs { node_dir, from, to, bucket, format } = args;
    let (from, to, bucket) = (from.as_deref(), to.as_deref(), bucket.as_str());
    // Refuse a bad date or bucket here, naming it, before asking the node.
    EvaluationQuery::from_dates(from, to, Some(bucket))?;
    let mut path = format!("/v1/evaluation?bucket={bucket}");
    for (name, value) in [("from", from), ("to", to)] {
        if let Some(value) = value {
            path.push_str(&format!("&{name}={value}"));
        }
    }
    let evaluation: Evaluation = NodeApi::open(&node_dir.path)?.get(&path)?;
    match format {
        EvaluationFormat::Json => print_json(&evaluation),
        EvaluationFormat::Table => {
            print!("{}", evaluation_table(&evaluation));
            Ok(())
        }
        EvaluationFormat::Csv => write_csv(&evaluation.departments),
        EvaluationFormat::StreetsCsv => write_csv(&evaluation.streets),
    }
}

fn write_csv<T: serde::Serialize>(rows: &[T]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_writer(std::io::stdout().lock());
    for row in rows {
        writer.serialize(row)?;
    }
    writer.flush()?;
    Ok(())
}

/// The evaluation as two text tables, durations in days, hours and minutes.
fn evaluation_table(evaluation: &Evaluation) -> String {
    let mut departments = vec![[
        "bucket",
        "owner",
        "dataset",
        "submitted",
        "applied",
        "rejected",
        "accepted",
        "p50",
        "p90",
        "auto-rejected",
        "conflicts",
        "backlog",
        "oldest",
        "demands granted",
        "grant p50",
        "waiting",
        "oldest demand",
        "record age p50",
        "record age p90",
    ]
    .map(String::from)
    .to_vec()];
    for row in &evaluation.departments {
        departments.push(vec![
            row.bucket.clone(),
            row.owner.clone(),
            row.dataset.clone(),
            row.submitted.to_string(),
            row.applied.to_string(),
            row.rejected_by_owner.to_string(),
            percent(row.acceptance_rate),
            duration(row.turnaround_ms_p50),
            duration(row.turnaround_ms_p90),
            row.automatic_rejections.to_string(),
            row.conflicts.to_string(),
            row.backlog.to_string(),
            duration(row.backlog_oldest_age_ms),
            row.demands_granted.to_string(),
            duration(row.demand_to_grant_ms_p50),
            row.demands_waiting.to_string(),
            duration(row.demands_waiting_oldest_age_ms),
            duration(row.record_age_ms_p50),
            duration(row.record_age_ms_p90),
        ]);
    }
    let mut streets =
        vec![["bucket", "street", "submitted", "applied", "accepted", "mistakes"].map(String::from).to_vec()];
    for row in &evaluation.streets {
        streets.push(vec![
            row.bucket.clone(),
            row.street.clone(),
            row.submitted.to_string(),
            row.applied.to_string(),
            percent(row.share_accepted),
            row.mistakes.to_string(),
        ]);
    }
    let bucket = match evaluation.bucket {
        Bucket::Day => "day",
        Bucket::Week => "week",
        Bucket::Month => "month",
    };
    let mut out = format!(
        "Evaluation of departments, {} to {} (by {bucket}; Asia/Shanghai)\n\n",
        evaluation.from, evaluation.to
    );
    out.push_str(&text_table(&departments));
    out.push_str("\nStreets\n\n");
    out.push_str(&text_table(&streets));
    out.push_str(&deletions_table(&evaluation.deletions));
    for note in &evaluation.notes {
        out.push_str(&format!("\nNote: {note}\n"));
    }
    out
}

/// Each holder's deletion receipts and overdue deletions; nothing if no
/// node holds received copies.
fn deletions_table(deletions: &[civmesh_policy::audit::HolderDeletions]) -> String {
    if deletions.is_empty() {
        return String::new();
    }
    let mut holders = vec![["holder", "grants held", "receipts", "overdue now"].map(String::from).to_vec()];
    for holder in deletions {
        holders.push(vec![
            holder.holder_org.clone(),
            holder.grants_held.to_string(),
            holder.receipts.to_string(),
            holder.overdue.to_string(),
        ]);
    }
    format!("\nDeletions of received copies (as of the log's latest entry)\n\n{}", text_table(&holders))
}

fn text_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter().filter_map(|row| row.get(column)).map(|cell| cell.chars().count()).max().unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, &width)| format!("{cell:<width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `2d 3h`, `5h 20m`, `12m`, `40s`, `850ms`; `-` for none.
fn duration(ms: Option<u64>) -> String {
    civmesh_policy::evaluation::format_duration(ms, ["ms", "s", "m", "h", "d"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        let cases = [
            (None, "-"),
            (Some(850), "850ms"),
            (Some(40_000), "40s"),
            (Some(12 * 60_000), "12m"),
            (Some(5 * 3_600_000 + 20 * 60_000), "5h 20m"),
            (Some(50 * 3_600_000), "2d 2h"),
        ];
        for (ms, text) in cases {
            assert_eq!(duration(ms), text, "{ms:?}");
        }
        assert_eq!(percent(Some(0.75)), "75%");
        assert_eq!(
            text_table(&[vec!["a".into(), "bb".into()], vec!["ccc".into(), "d".into()]]),
            "a    bb\nccc  d\n"
        );
    }
}
