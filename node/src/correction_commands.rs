//! `civmesh correction ...`: the street operator's and the owner's commands
//! for corrections, through the running node's API.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use civmesh_certs::{now_unix_millis, NodeKey, OrgId, SignedEnvelope};
use civmesh_policy::correction::AutoAcceptRule;
use civmesh_policy::model::FieldValue;
use civmesh_policy::Command;

use crate::cli::CorrectionCommand;
use crate::cluster_commands::NodeApi;
use crate::config::NodeConfig;
use crate::correction_api::{Rejection, Submitted};
use crate::corrections::{CorrectionSpec, CorrectionView};

/// How often `submit --wait-ms` asks for the outcome.
const OUTCOME_POLL_MS: u64 = 50;

pub(crate) fn correction(command: CorrectionCommand) -> anyhow::Result<()> {
    match command {
        CorrectionCommand::Submit {
            node_dir,
            dataset,
            key,
            base_version,
            changes,
            reason,
            evidence,
            attachments,
            operator,
            wait_ms,
        } => {
            let spec = CorrectionSpec {
                dataset,
                record_key: key,
                base_version,
                changes: changes.iter().map(|change| parse_change(change)).collect::<anyhow::Result<_>>()?,
                reason,
                evidence_text: evidence,
                attachment_sha256: attachments
                    .iter()
                    .map(|path| sha256_file(path))
                    .collect::<anyhow::Result<_>>()?,
                operator,
            };
            submit(&node_dir, &spec, wait_ms)
        }
        CorrectionCommand::List { node_dir, status } => {
            let path = match status {
                Some(status) => format!("/v1/corrections?status={status}"),
                None => "/v1/corrections".to_string(),
            };
            print_json(&NodeApi::open(&node_dir)?.get::<serde_json::Value>(&path)?)
        }
        CorrectionCommand::Show { node_dir, id } => {
            print_json(&NodeApi::open(&node_dir)?.get::<serde_json::Value>(&format!("/v1/corrections/{id}"))?)
        }
        CorrectionCommand::Accept { node_dir, id } => {
            let view: CorrectionView =
                NodeApi::open(&node_dir)?.send("POST", &format!("/v1/corrections/{id}/accept"), &())?;
            print_json(&view)
        }
        CorrectionCommand::Reject { node_dir, id, reason } => {
            let view: CorrectionView = NodeApi::open(&node_dir)?.send(
                "POST",
                &format!("/v1/corrections/{id}/reject"),
                &Rejection { reason },
            )?;
            print_json(&view)
        }
        CorrectionCommand::Stats { node_dir } => {
            print_json(&NodeApi::open(&node_dir)?.get::<serde_json::Value>("/v1/corrections/stats")?)
        }
        CorrectionCommand::AutoAccept { node_dir, dataset, submitter, fields, remove } => {
            let submitter = OrgId::new(&submitter).with_context(|| format!("submitter {submitter}"))?;
            let command = if remove {
                Command::RemoveAutoAcceptRule { dataset, submitter }
            } else {
                anyhow::ensure!(!fields.is_empty(), "name at least one --field");
                Command::SetAutoAcceptRule(AutoAcceptRule {
                    dataset,
                    submitter,
                    fields: fields.into_iter().collect(),
                })
            };
            let config = NodeConfig::load(&node_dir)?;
            let key = NodeKey::load(&NodeConfig::resolve(&node_dir, &config.node.key_file))?;
            let envelope = SignedEnvelope::sign(&key, &command, now_unix_millis())?;
            let response = NodeApi::open(&node_dir)?.submit(&[envelope])?;
            print_json(&response.outcomes)?;
            anyhow::ensure!(response.outcomes.iter().all(Result::is_ok), "the policy log rejected the rule");
            Ok(())
        }
    }
}

fn submit(node_dir: &Path, spec: &CorrectionSpec, wait_ms: u64) -> anyhow::Result<()> {
    let api = NodeApi::open(node_dir)?;
    let submitted: Submitted = api.send("POST", "/v1/corrections", spec)?;
    if wait_ms == 0 {
        return print_json(&submitted);
    }
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    loop {
        let view: CorrectionView = api.get(&format!("/v1/corrections/{}", submitted.correction))?;
        if view.outcome.is_some() {
            return print_json(&view);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no outcome for {} within {wait_ms} ms (it stays in the outbox; status {:?}, last error {:?})",
            submitted.correction,
            view.status,
            view.last_error
        );
        std::thread::sleep(Duration::from_millis(OUTCOME_POLL_MS));
    }
}

/// `FIELD=VALUE`, VALUE as JSON when it parses, otherwise as text.
fn parse_change(change: &str) -> anyhow::Result<(String, FieldValue)> {
    let (field, value) = change.split_once('=').with_context(|| format!("{change:?} is not FIELD=VALUE"))?;
    anyhow::ensure!(!field.trim().is_empty(), "{change:?} names no field");
    let value =
        serde_json::from_str::<FieldValue>(value).unwrap_or_else(|_| FieldValue::Text(value.to_string()));
    Ok((field.trim().to_string(), value))
}

/// SHA-256 of a file, hex, read in chunks.
fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        context.update(&buffer[..read]);
    }
    Ok(hex::encode(context.finish().as_ref()))
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_json_values_or_text() {
        let cases = [
            ("employees=12", ("employees", FieldValue::Integer(12))),
            ("open=true", ("open", FieldValue::Boolean(true))),
            ("phone=null", ("phone", FieldValue::Null)),
            ("address=No. 5 Wuding Road", ("address", FieldValue::Text("No. 5 Wuding Road".into()))),
            ("code=\"0012\"", ("code", FieldValue::Text("0012".into()))),
            ("note=a=b", ("note", FieldValue::Text("a=b".into()))),
        ];
        for (input, (field, value)) in cases {
            assert_eq!(parse_change(input).unwrap(), (field.to_string(), value), "{input}");
        }
        assert!(parse_change("no-equals").is_err());
        assert!(parse_change("=5").is_err());
    }
}
