//! `civmesh records list`: pages through the records a grant lets this
//! node see, through this node's API (`POST /v1/query/list`).

use clap::Args;

use crate::cli::args::NodeDir;
use crate::client::NodeApi;
use crate::query::{ListAnswer, ListFilter, ListSpec, ReleasedRecord};

/// Arguments of `civmesh records list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// This node (its key signs each page's request).
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The dataset.
    #[arg(long, value_name = "DATASET")]
    pub dataset: String,
    /// The grant relied on; if not given, this organisation's only grant
    /// usable now for the dataset (it says which).
    #[arg(long, value_name = "GRANT")]
    pub grant: Option<u64>,
    /// A condition, `FIELD=VALUE` (equal) or `FIELD^=PREFIX` (starts
    /// with), on an indexed field the grant gives unmasked (repeatable;
    /// all must hold).
    #[arg(long = "where", value_name = "CONDITION", value_parser = parse_filter)]
    pub filters: Vec<ListFilter>,
    /// A field wanted (repeatable); the grant's fields if none.
    #[arg(long = "field", value_name = "FIELD")]
    pub fields: Vec<String>,
    /// The purpose; the grant's if not given.
    #[arg(long, value_name = "PURPOSE")]
    pub purpose: Option<String>,
    /// Records per page; the owner's default (500) if not given.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub page_size: u32,
    /// Continue after the page that printed this cursor.
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// Every page, to the end, rather than one.
    #[arg(long)]
    pub all: bool,
    /// Keep each page's records in this node's received store, under the
    /// grant, until its retention or end makes them due for deletion.
    #[arg(long)]
    pub keep: bool,
}

/// `FIELD^=PREFIX` or `FIELD=VALUE`.
fn parse_filter(text: &str) -> Result<ListFilter, String> {
    if let Some((field, prefix)) = text.split_once("^=") {
        if !field.is_empty() {
            return Ok(ListFilter::Prefix { field: field.to_string(), prefix: prefix.to_string() });
        }
    }
    match text.split_once('=') {
        Some((field, value)) if !field.is_empty() && !field.ends_with('^') => {
            Ok(ListFilter::Equals { field: field.to_string(), value: value.to_string() })
        }
        _ => Err(format!("{text:?} is not FIELD=VALUE or FIELD^=PREFIX")),
    }
}

/// Prints the page (or every page), then where the next one starts.
pub(super) fn execute(args: ListArgs) -> anyhow::Result<()> {
    let ListArgs { node_dir, dataset, grant, filters, fields, purpose, page_size, cursor, all, keep } = args;
    let api = NodeApi::open(&node_dir.path)?;
    let grant = match grant {
        Some(grant) => Some(grant),
        None => super::query::only_usable_grant(&api, &dataset, purpose.as_deref())?,
    };
    let purpose = purpose.unwrap_or_default();
    let mut spec = ListSpec { dataset, fields, purpose, grant, filters, page_size, cursor, keep };
    let mut listed = 0usize;
    let mut pages = 0usize;
    loop {
        let answer: ListAnswer = api.send("POST", "/v1/query/list", &spec)?;
        let (records, next_cursor, position) = match answer {
            ListAnswer::Page { records, next_cursor, access_log_position } => {
                (records, next_cursor, access_log_position)
            }
            ListAnswer::Denied { reason, access_log_position } => anyhow::bail!(
                "the listing was denied ({}; logged at access-log position {access_log_position})",
                crate::query::reason_name(reason).unwrap_or_else(|| "denied".to_string())
            ),
            ListAnswer::Refused(refusal) => anyhow::bail!("the listing was refused: {refusal}"),
        };
        pages += 1;
        listed += records.len();
        for record in &records {
            println!("{}", record_line(record));
        }
        eprintln!("page {pages}: {} records (logged at access-log position {position})", records.len());
        match next_cursor {
            Some(next) if all => spec.cursor = Some(next),
            Some(next) => {
                eprintln!("{listed} records listed; the next page: --cursor {next}");
                return Ok(());
            }
            None => {
                eprintln!("{listed} records listed in {pages} pages; that is all");
                return Ok(());
            }
        }
    }
}

/// `KEY vVERSION field=value ...`, withheld fields with why.
fn record_line(record: &ReleasedRecord) -> String {
    let mut line = format!("{} v{}", record.key, record.version);
    for (field, value) in &record.fields {
        let shown = serde_json::to_string(value).unwrap_or_default();
        line.push_str(&format!("  {field}={shown}"));
    }
    for (field, reason) in &record.withheld {
        let reason = crate::query::reason_name(*reason).unwrap_or_else(|| "withheld".to_string());
        line.push_str(&format!("  {field}=({reason})"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_equalities_or_prefixes_on_a_named_field() {
        let equals =
            |field: &str, value: &str| ListFilter::Equals { field: field.into(), value: value.into() };
        let cases = [
            ("street=nanjingxilu", Ok(equals("street", "nanjingxilu"))),
            ("street^=nanjing", Ok(ListFilter::Prefix { field: "street".into(), prefix: "nanjing".into() })),
            ("name=a=b", Ok(equals("name", "a=b"))),
            ("street=", Ok(equals("street", ""))),
            ("street", Err(())),
            ("=jingan", Err(())),
            ("^=jingan", Err(())),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_filter(text).map_err(|_| ()), expected, "{text}");
        }
    }
}
