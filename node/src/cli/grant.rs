//! `civmesh grant ...`: issue a grant answering a demand (at the dataset's
//! owner), list and show grants, revoke one. Dates are days in
//! Asia/Shanghai; no JSON is written by hand.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use civmesh_certs::{now_unix_millis, UnixMillis};
use civmesh_policy::deletion::{AssessmentDigest, Retention};
use civmesh_policy::evaluation::{format_date, format_date_end, parse_date, parse_date_end};
use civmesh_policy::model::{FieldName, FieldValue, Grant, GrantId, MaskingRule, ScopeCondition};
use civmesh_policy::{GrantSpec, GrantWarning, ReasonCode};
use clap::Subcommand;

use crate::api::{DemandView, GrantIssue, GrantRequest, Reason};
use crate::cli::args::NodeDir;
use crate::client::NodeApi;

/// `civmesh grant ...`.
#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Issue a grant answering a demand: by default the demand's fields,
    /// purpose and legal basis, from today until the demand's end date.
    /// Prints what to confirm first (an ended or ending window, sensitive
    /// fields without consent, more than the demand asked for); `--yes`
    /// confirms.
    Issue(IssueArgs),
    /// Every grant, one per line, with its window and status.
    List {
        /// Any node.
        #[command(flatten)]
        node_dir: NodeDir,
        /// Only grants held by this organisation (e.g. street/nanjingxilu).
        #[arg(long, value_name = "GRANTEE")]
        grantee: Option<String>,
        /// Only grants of this dataset.
        #[arg(long, value_name = "DATASET")]
        dataset: Option<String>,
    },
    /// One grant: fields and masking, purpose and basis, scope, window,
    /// consent, the demand it answers, and its status.
    Show {
        /// Any node.
        #[command(flatten)]
        node_dir: NodeDir,
        /// The grant's number, as `grant list` shows it.
        #[arg(value_name = "GRANT")]
        grant: GrantId,
    },
    /// Revoke a grant, with a reason (at the dataset's owner; logged).
    Revoke {
        /// A node of the dataset's owner (its key signs the revocation).
        #[command(flatten)]
        node_dir: NodeDir,
        /// The grant's number.
        #[arg(value_name = "GRANT")]
        grant: GrantId,
        /// Why, for the grantee.
        #[arg(long, value_name = "REASON")]
        reason: String,
    },
}

/// Arguments of `civmesh grant issue`.
#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// A node of the dataset's owner (its key signs the grant).
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The demand the grant answers, as `demand list` shows it.
    #[arg(long, value_name = "DEMAND")]
    pub demand: u64,
    /// A field to grant (repeatable); the demand's fields if none.
    #[arg(long = "field", value_name = "FIELD")]
    pub fields: Vec<String>,
    /// Mask a granted field: FIELD=keep_last:N, FIELD=keep_first:N or
    /// FIELD=redact (repeatable).
    #[arg(long = "mask", value_name = "MASK", value_parser = parse_mask)]
    pub masks: Vec<(FieldName, MaskingRule)>,
    /// Only records whose FIELD is VALUE, e.g. street=南京西路街道
    /// (repeatable; values of one field add up).
    #[arg(long = "scope", value_name = "SCOPE", value_parser = parse_scope)]
    pub scope: Vec<(FieldName, String)>,
    /// The first day of validity, YYYY-MM-DD (Asia/Shanghai); now if not
    /// given.
    #[arg(long, value_name = "FROM_DATE", value_parser = parse_date)]
    pub from: Option<UnixMillis>,
    /// The last day of validity, YYYY-MM-DD (Asia/Shanghai); the demand's
    /// end date if not given.
    #[arg(long, value_name = "UNTIL_DATE", value_parser = parse_date_end)]
    pub until: Option<UnixMillis>,
    /// Release each subject's record only with that subject's consent.
    #[arg(long)]
    pub consent_required: bool,
    /// How many days the grantee may keep each record it receives
    /// (required when a field is personal; a fraction such as 0.001 for a
    /// drill).
    #[arg(long, value_name = "DAYS", value_parser = parse_days)]
    pub retain_days: Option<f64>,
    /// How many hours a holder then has to delete it, before the deletion
    /// is overdue.
    #[arg(long, value_name = "HOURS", default_value = "24", value_parser = parse_hours)]
    pub delete_within_hours: f64,
    /// The digest of the impact assessment (`pia add` prints it; required
    /// when a field is sensitive).
    #[arg(long, value_name = "ASSESSMENT", value_parser = parse_assessment)]
    pub assessment: Option<AssessmentDigest>,
    /// Issue it even if there are warnings.
    #[arg(long)]
    pub yes: bool,
}

pub(super) fn execute(command: GrantCommand) -> anyhow::Result<()> {
    match command {
        GrantCommand::Issue(args) => issue(args),
        GrantCommand::List { node_dir, grantee, dataset } => {
            let grants: Vec<Grant> = NodeApi::open(&node_dir.path)?.get("/v1/grants")?;
            let now_ms = now_unix_millis();
            let shown: Vec<&Grant> = grants
                .iter()
                .filter(|grant| grantee.as_ref().is_none_or(|org| grant.grantee.as_str() == org))
                .filter(|grant| dataset.as_ref().is_none_or(|dataset| &grant.dataset == dataset))
                .collect();
            for grant in &shown {
                println!("{}", grant_line(grant, now_ms));
            }
            if shown.is_empty() {
                println!("no grants");
            }
            Ok(())
        }
        GrantCommand::Show { node_dir, grant } => {
            let grant: Grant = NodeApi::open(&node_dir.path)?.get(&format!("/v1/grants/{grant}"))?;
            println!("{}", grant_details(&grant, now_unix_millis()));
            Ok(())
        }
        GrantCommand::Revoke { node_dir, grant, reason } => {
            let path = format!("/v1/grants/{grant}/revoke");
            let _: serde_json::Value =
                NodeApi::open(&node_dir.path)?.send("POST", &path, &Reason { reason })?;
            println!("revoked grant {grant}");
            Ok(())
        }
    }
}

fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let api = NodeApi::open(&args.node_dir.path)?;
    let demands: Vec<DemandView> = api.get("/v1/demands")?;
    let demand = demands
        .into_iter()
        .find(|demand| demand.id == args.demand)
        .with_context(|| format!("there is no demand {} (see civmesh demand list)", args.demand))?;
    let spec = grant_spec(&args, demand, now_unix_millis())?;
    let request = GrantRequest { grant: spec, confirm: args.yes };
    let issued: GrantIssue = api.send("POST", "/v1/grants", &request)?;
    for warning in &issued.warnings {
        eprintln!("warning: {}", warning_text(warning));
    }
    let id = issued.grant.with_context(|| {
        let count = issued.warnings.len();
        format!("not issued: {count} warning(s) to confirm; run again with --yes to issue it anyway")
    })?;
    println!("issued grant {id} answering demand {}", args.demand);
    Ok(())
}

/// The grant `args` describe, defaulting to `demand`'s fields, purpose,
/// basis and end date.
fn grant_spec(args: &IssueArgs, demand: DemandView, now_ms: UnixMillis) -> anyhow::Result<GrantSpec> {
    let valid_until_ms = args
        .until
        .or(demand.until_ms)
        .with_context(|| format!("demand {} names no end date: give --until YYYY-MM-DD", demand.id))?;
    let fields: BTreeSet<FieldName> = if args.fields.is_empty() {
        demand.fields.into_iter().collect()
    } else {
        args.fields.iter().cloned().collect()
    };
    let mut scope: BTreeMap<FieldName, BTreeSet<FieldValue>> = BTreeMap::new();
    for (field, value) in &args.scope {
        scope.entry(field.clone()).or_default().insert(FieldValue::Text(value.clone()));
    }
    Ok(GrantSpec {
        dataset: demand.dataset,
        grantee: demand.requester.parse().context("the demand's requester is not an organisation id")?,
        fields,
        purpose: demand.purpose,
        legal_basis: demand.legal_basis,
        scope: scope.into_iter().map(|(field, allowed)| ScopeCondition { field, allowed }).collect(),
        valid_from_ms: args.from.unwrap_or(now_ms),
        valid_until_ms,
        masking: args.masks.iter().cloned().collect(),
        consent_required: args.consent_required,
        demand: Some(demand.id),
        retention: args.retain_days.map(|days| Retention {
            keep_ms: (days * DAY_MS as f64) as u64,
            delete_within_ms: (args.delete_within_hours * HOUR_MS as f64) as u64,
        }),
        assessment: args.assessment,
    })
}

const HOUR_MS: u64 = 60 * 60 * 1000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// A positive number of days, at most ten years.
fn parse_days(text: &str) -> Result<f64, NumberOutOfRange> {
    parse_positive(text, 3650.0)
}

/// A positive number of hours, at most 30 days.
fn parse_hours(text: &str) -> Result<f64, NumberOutOfRange> {
    parse_positive(text, 720.0)
}

fn parse_positive(text: &str, max: f64) -> Result<f64, NumberOutOfRange> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 && value <= max => Ok(value),
        _ => Err(NumberOutOfRange { max }),
    }
}

/// A `--retain-days` or `--delete-within-hours` that is not a number in range.
#[derive(Debug, thiserror::Error)]
#[error("expected a number above 0 and at most {max}")]
pub struct NumberOutOfRange {
    max: f64,
}

/// 64 hex digits.
pub fn parse_assessment(text: &str) -> Result<AssessmentDigest, AssessmentInvalid> {
    civmesh_policy::hex_digest::from_hex(text).map(AssessmentDigest).ok_or(AssessmentInvalid)
}

/// An `--assessment` that is not a digest.
#[derive(Debug, thiserror::Error)]
#[error("expected the assessment's digest, as `pia add` prints it: 64 hex digits")]
pub struct AssessmentInvalid;

/// `FIELD=keep_last:N`, `FIELD=keep_first:N` or `FIELD=redact`.
pub fn parse_mask(text: &str) -> Result<(FieldName, MaskingRule), MaskInvalid> {
    let (field, rule) = text.split_once('=').ok_or(MaskInvalid)?;
    let count = |n: &str| n.parse::<u8>().map_err(|_| MaskInvalid);
    let rule = match rule.split_once(':') {
        None if rule == "redact" => MaskingRule::Redact,
        Some(("keep_last", n)) => MaskingRule::KeepLast(count(n)?),
        Some(("keep_first", n)) => MaskingRule::KeepFirst(count(n)?),
        _ => return Err(MaskInvalid),
    };
    if field.is_empty() {
        return Err(MaskInvalid);
    }
    Ok((field.to_string(), rule))
}

/// A `--mask` that is not one of the three forms.
#[derive(Debug, thiserror::Error)]
#[error("use FIELD=keep_last:N, FIELD=keep_first:N or FIELD=redact (N from 0 to 255)")]
pub struct MaskInvalid;

/// `FIELD=VALUE`, both non-empty.
pub fn parse_scope(text: &str) -> Result<(FieldName, String), ScopeInvalid> {
    match text.split_once('=') {
        Some((field, value)) if !field.is_empty() && !value.is_empty() => {
            Ok((field.to_string(), value.to_string()))
        }
        _ => Err(ScopeInvalid),
    }
}

/// A `--scope` that is not `FIELD=VALUE`.
#[derive(Debug, thiserror::Error)]
#[error("use FIELD=VALUE, e.g. street=南京西路街道")]
pub struct ScopeInvalid;

/// A warning as the owner reads it.
pub(super) fn warning_text(warning: &GrantWarning) -> String {
    match warning {
        GrantWarning::Expired { valid_until_ms } => {
            format!("the grant ended on {}: it would never be usable", format_date_end(*valid_until_ms))
        }
        GrantWarning::ExpiresSoon { valid_until_ms } => format!(
            "the grant ends on {}, within {} days",
            format_date_end(*valid_until_ms),
            civmesh_policy::GRANT_EXPIRY_WARNING_DAYS
        ),
        GrantWarning::SensitiveWithoutConsent { fields } => format!(
            "sensitive fields without consent required: {} (add --consent-required, or drop them)",
            fields.join(", ")
        ),
        GrantWarning::BroaderThanDemand { demand, fields, purpose_differs, outlasts_demand } => {
            let mut parts = Vec::new();
            if !fields.is_empty() {
                parts.push(format!("fields it did not ask for ({})", fields.join(", ")));
            }
            if *purpose_differs {
                parts.push("another purpose".to_string());
            }
            if *outlasts_demand {
                parts.push("a window past the date it needs the data until".to_string());
            }
            format!("the grant is broader than demand {demand}: {}", parts.join("; "))
        }
    }
}

/// Where a grant stands at `now_ms`, by the one rule of grant usability.
fn status(grant: &Grant, now_ms: UnixMillis) -> String {
    match grant.check_usable(&grant.grantee, &grant.dataset, None, now_ms) {
        Ok(()) => "active".to_string(),
        Err(ReasonCode::GrantRevoked) => {
            let reason = grant.revoked.as_ref().map(|revocation| revocation.reason.as_str());
            format!("revoked: {}", reason.unwrap_or_default())
        }
        Err(ReasonCode::GrantExpired) => "expired".to_string(),
        Err(ReasonCode::GrantNotYetValid) => "not yet valid".to_string(),
        Err(other) => format!("{other:?}"),
    }
}

/// One grant on one line, e.g. `#3 dept/market-supervision → street/nanjingxilu
/// market/enterprises [name,operating_address] street-inspection
/// statutory_duty 2026-12-03..2026-12-31: active (demand 1)`; with `, kept
/// 30 days, assessment 3f2a9c01e4b2` after the dates when it states them.
pub(super) fn grant_line(grant: &Grant, now_ms: UnixMillis) -> String {
    let demand = grant.demand.map(|demand| format!(" (demand {demand})"));
    let mut protection = String::new();
    if let Some(retention) = &grant.retention {
        protection.push_str(&format!(", kept {}", span_text(retention.keep_ms, DAY_MS, "day")));
    }
    if let Some(assessment) = &grant.assessment {
        let hex = civmesh_policy::hex_digest::to_hex(&assessment.0);
        protection.push_str(&format!(", assessment {}", hex.get(..12).unwrap_or_default()));
    }
    format!(
        "#{} {} → {} {} [{}] {} {} {}..{}{}: {}{}",
        grant.id,
        grant.grantor,
        grant.grantee,
        grant.dataset,
        grant.fields.iter().cloned().collect::<Vec<_>>().join(","),
        grant.purpose,
        super::serde_word(&grant.legal_basis),
        format_date(grant.valid_from_ms),
        format_date_end(grant.valid_until_ms),
        protection,
        status(grant, now_ms),
        demand.unwrap_or_default(),
    )
}

/// A grant as `grant show` prints it.
pub(super) fn grant_details(grant: &Grant, now_ms: UnixMillis) -> String {
    let fields: Vec<String> = grant
        .fields
        .iter()
        .map(|field| match grant.masking.get(field) {
            Some(rule) => format!("{field} (masked: {})", mask_word(*rule)),
            None => field.clone(),
        })
        .collect();
    let scope: Vec<String> = grant
        .scope
        .iter()
        .map(|condition| {
            let values: Vec<String> = condition.allowed.iter().map(value_text).collect();
            format!("{} = {}", condition.field, values.join(" | "))
        })
        .collect();
    let consent = if grant.needs_consent() { "each subject's, required" } else { "not required" };
    let demand = grant.demand.map_or_else(|| "none".to_string(), |demand| demand.to_string());
    [
        format!("grant {}: {} → {}, {}", grant.id, grant.grantor, grant.grantee, grant.dataset),
        format!("  fields:  {}", fields.join(", ")),
        format!("  purpose: {} ({})", grant.purpose, super::serde_word(&grant.legal_basis)),
        format!(
            "  scope:   {}",
            if scope.is_empty() { "every record".to_string() } else { scope.join("; ") }
        ),
        format!(
            "  valid:   {} to {}",
            format_date(grant.valid_from_ms),
            format_date_end(grant.valid_until_ms)
        ),
        format!("  consent: {consent}"),
        format!("  kept:    {}", retention_text(grant.retention.as_ref())),
        format!("  assessment: {}", assessment_text(grant.assessment.as_ref())),
        format!("  demand:  {demand}"),
        format!("  issued:  {}", format_date(grant.issued_at_ms)),
        format!("  status:  {}", status(grant, now_ms)),
    ]
    .join("\n")
}

/// How long copies are kept and then deleted, in the units of the flags:
/// e.g. `30 days after receipt, then deleted within 24 hours`.
fn retention_text(retention: Option<&Retention>) -> String {
    match retention {
        Some(retention) => format!(
            "{} after receipt, then deleted within {}",
            span_text(retention.keep_ms, DAY_MS, "day"),
            span_text(retention.delete_within_ms, HOUR_MS, "hour")
        ),
        None => "no retention stated".to_string(),
    }
}

/// The digest of the impact assessment, or that there is none.
fn assessment_text(assessment: Option<&AssessmentDigest>) -> String {
    assessment.map_or_else(|| "none".to_string(), |digest| civmesh_policy::hex_digest::to_hex(&digest.0))
}

/// `ms` in `unit_ms` units, as the flags take them: `30 days`, `24 hours`,
/// `0.001 days` (to three decimals, trailing zeros dropped).
fn span_text(ms: u64, unit_ms: u64, unit: &str) -> String {
    let count = format!("{:.3}", ms as f64 / unit_ms as f64);
    let count = count.trim_end_matches('0').trim_end_matches('.');
    let count = if count.is_empty() { "0" } else { count };
    format!("{count} {unit}{}", if count == "1" { "" } else { "s" })
}

fn mask_word(rule: MaskingRule) -> String {
    match rule {
        MaskingRule::KeepLast(n) => format!("keep_last:{n}"),
        MaskingRule::KeepFirst(n) => format!("keep_first:{n}"),
        MaskingRule::Redact => "redact".to_string(),
    }
}

fn value_text(value: &FieldValue) -> String {
    match value {
        FieldValue::Text(text) => text.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_scopes_parse_from_their_flag_forms() {
        assert_eq!(parse_mask("phone=keep_last:4").unwrap(), ("phone".into(), MaskingRule::KeepLast(4)));
        assert_eq!(parse_mask("name=keep_first:1").unwrap(), ("name".into(), MaskingRule::KeepFirst(1)));
        assert_eq!(parse_mask("id=redact").unwrap(), ("id".into(), MaskingRule::Redact));
        for bad in
            ["phone", "=redact", "phone=keep_last", "phone=keep_last:x", "phone=keep_last:300", "phone=hide"]
        {
            assert!(parse_mask(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_scope("street=南京西路街道").unwrap(), ("street".into(), "南京西路街道".into()));
        for bad in ["street", "=x", "street="] {
            assert!(parse_scope(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retention_reads_in_the_units_of_the_flags() {
        let retention = Retention { keep_ms: 30 * DAY_MS, delete_within_ms: 24 * HOUR_MS };
        assert_eq!(retention_text(Some(&retention)), "30 days after receipt, then deleted within 24 hours");
        let drill = Retention { keep_ms: 86_400, delete_within_ms: HOUR_MS / 2 };
        assert_eq!(retention_text(Some(&drill)), "0.001 days after receipt, then deleted within 0.5 hours");
        assert_eq!(span_text(DAY_MS, DAY_MS, "day"), "1 day");
        assert_eq!(retention_text(None), "no retention stated");
        assert_eq!(assessment_text(Some(&AssessmentDigest([0xab; 32]))), "ab".repeat(32));
    }

    #[test]
    fn warnings_read_as_sentences_with_dates() {
        let until = parse_date_end("2026-12-31").unwrap();
        assert_eq!(
            warning_text(&GrantWarning::Expired { valid_until_ms: until }),
            "the grant ended on 2026-12-31: it would never be usable"
        );
        let broader = GrantWarning::BroaderThanDemand {
            demand: 4,
            fields: vec!["phone".into()],
            purpose_differs: false,
            outlasts_demand: true,
        };
        assert_eq!(
            warning_text(&broader),
            "the grant is broader than demand 4: fields it did not ask for (phone); a window past the date it \
             needs the data until"
        );
    }
}
