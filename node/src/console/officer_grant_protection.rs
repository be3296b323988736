//! The grant form's retention and impact assessment: how many days the
//! grantee may keep what it receives, how many hours a holder then has to
//! delete it, and which of this node's assessments of the dataset covers
//! the sensitive fields; and where the owner's check
//! (`assessments::check_grant`) puts its messages.

use civmesh_policy::deletion::{AssessmentDigest, Retention};

use super::super::{posted, Errors, Posted};
use crate::api::assessments::on_store;
use crate::api::Shared;
use crate::assessments::{digest_hex, parse_digest, AssessmentStore, AssessmentSummary, ProtectionMissing};

/// The most days a grant may keep copies (ten years, the log's bound).
const RETAIN_DAYS_MAX: f64 = 3_650.0;
/// The most hours a holder may take to delete (30 days, the log's bound).
const DELETE_WITHIN_HOURS_MAX: f64 = 720.0;
/// The hours to delete in unless the officer says.
const DELETE_WITHIN_HOURS_DEFAULT: &str = "24";
const HOUR_MS: f64 = 3_600_000.0;
const DAY_MS: f64 = 24.0 * HOUR_MS;

/// One of this node's assessments of the dataset, as the select offers it.
pub(super) struct AssessmentChoice {
    /// Its digest, the value posted.
    pub digest: String,
    /// What the officer reads: when, for what, by whom, which fields.
    pub label: String,
}

impl From<AssessmentSummary> for AssessmentChoice {
    fn from(summary: AssessmentSummary) -> Self {
        let hex = digest_hex(&summary.digest);
        let fields: Vec<String> = summary.fields.into_iter().collect();
        let label = format!(
            "{} · {} · {} · {} · {}",
            civmesh_policy::evaluation::format_date(summary.signed_at_ms),
            summary.purpose,
            summary.officer,
            fields.join(", "),
            hex.get(..12).unwrap_or_default(),
        );
        AssessmentChoice { digest: hex, label }
    }
}

/// The form's retention and assessment inputs, as posted (or defaulted).
pub(super) struct Protection {
    /// Days copies may be kept (empty: none stated).
    pub retain_days: String,
    /// Hours to delete in.
    pub delete_within_hours: String,
    /// The digest chosen (empty: none).
    pub assessment: String,
    /// This node's assessments of the dataset.
    pub choices: Vec<AssessmentChoice>,
}

impl Protection {
    /// Empty inputs, the default hours, and `choices`.
    pub(super) fn new(choices: Vec<AssessmentChoice>) -> Self {
        Protection {
            retain_days: String::new(),
            delete_within_hours: DELETE_WITHIN_HOURS_DEFAULT.to_string(),
            assessment: String::new(),
            choices,
        }
    }

    /// Takes the posted inputs (so the page shows them again): the
    /// retention, if days are given, and the assessment, if one is chosen;
    /// messages next to the inputs in `errors`.
    pub(super) fn read(
        &mut self,
        form: &Posted,
        errors: &mut Errors,
    ) -> (Option<Retention>, Option<AssessmentDigest>) {
        self.retain_days = posted(form, "retain_days").to_string();
        self.delete_within_hours = posted(form, "delete_within_hours").to_string();
        self.assessment = posted(form, "assessment").to_string();
        let hours = number(&self.delete_within_hours, DELETE_WITHIN_HOURS_MAX);
        if hours.is_none() {
            errors.add("delete_within_hours", "officer.delete-within-invalid");
        }
        let retention = match number(&self.retain_days, RETAIN_DAYS_MAX) {
            _ if self.retain_days.is_empty() => None,
            None => {
                errors.add("retain_days", "officer.retain-days-invalid");
                None
            }
            Some(days) => hours.map(|hours| Retention {
                keep_ms: (days * DAY_MS).round() as u64,
                delete_within_ms: (hours * HOUR_MS).round() as u64,
            }),
        };
        let assessment = if self.assessment.is_empty() {
            None
        } else {
            let chosen = parse_digest(&self.assessment);
            if chosen.is_none() {
                errors.add("assessment", "officer.assessment-unknown");
            }
            chosen
        };
        (retention, assessment)
    }
}

/// A number above 0 and at most `max`.
fn number(text: &str, max: f64) -> Option<f64> {
    text.parse::<f64>().ok().filter(|value| *value > 0.0 && *value <= max)
}

/// This node's assessments of `dataset`, the oldest first; none if the
/// store cannot be read (issuing then says why).
pub(super) async fn choices(state: &Shared, dataset: &str) -> Vec<AssessmentChoice> {
    match on_store(state, AssessmentStore::list).await {
        Ok(Ok(summaries)) => summaries
            .into_iter()
            .filter(|summary| summary.dataset == dataset)
            .map(AssessmentChoice::from)
            .collect(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "the impact assessments could not be listed");
            Vec::new()
        }
        Err(error) => {
            tracing::warn!(error = error.message(), "the impact assessments could not be listed");
            Vec::new()
        }
    }
}

/// The input and message key the owner's check names; none when the
/// store failed (the page says so as a failure).
pub(super) fn place(missing: &ProtectionMissing) -> Option<(&'static str, &'static str)> {
    let key = match missing {
        ProtectionMissing::Retention { .. } => "officer.retention-required",
        ProtectionMissing::RetentionOutOfRange => "officer.retention-out-of-range",
        ProtectionMissing::Assessment { .. } => "officer.assessment-required",
        ProtectionMissing::AssessmentUnknown(_) => "officer.assessment-unknown",
        ProtectionMissing::AssessmentOtherDataset { .. } => "officer.assessment-other-dataset",
        ProtectionMissing::AssessmentOtherPurpose { .. } => "officer.assessment-other-purpose",
        ProtectionMissing::AssessmentNotCovering { .. } => "officer.assessment-not-covering",
        ProtectionMissing::Store(_) => return None,
    };
    Some((if missing.is_retention() { "retain_days" } else { "assessment" }, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Posted {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn days_and_hours_become_a_retention_and_bad_ones_are_named() {
        let mut protection = Protection::new(Vec::new());
        let mut errors = Errors::default();
        let digest = "ab".repeat(32);
        let posted = form(&[("retain_days", "30"), ("delete_within_hours", "1.5"), ("assessment", &digest)]);
        let (retention, assessment) = protection.read(&posted, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(retention, Some(Retention { keep_ms: 30 * 86_400_000, delete_within_ms: 5_400_000 }));
        assert_eq!(assessment, Some(AssessmentDigest([0xab; 32])));

        let posted = form(&[("retain_days", ""), ("delete_within_hours", "24"), ("assessment", "")]);
        assert_eq!(protection.read(&posted, &mut errors), (None, None));
        assert!(errors.is_empty());

        let posted = form(&[("retain_days", "4000"), ("delete_within_hours", "0"), ("assessment", "abc")]);
        assert_eq!(protection.read(&posted, &mut errors), (None, None));
        assert_eq!(errors.get("retain_days"), Some("officer.retain-days-invalid"));
        assert_eq!(errors.get("delete_within_hours"), Some("officer.delete-within-invalid"));
        assert_eq!(errors.get("assessment"), Some("officer.assessment-unknown"));
        assert_eq!(protection.retain_days, "4000", "the page shows what was posted");
    }

    #[test]
    fn each_missing_protection_is_shown_beside_its_input() {
        let digest = AssessmentDigest([1; 32]);
        let cases = [
            (ProtectionMissing::Retention { fields: vec!["name".into()] }, Some("retain_days")),
            (ProtectionMissing::RetentionOutOfRange, Some("retain_days")),
            (ProtectionMissing::Assessment { fields: vec!["x".into()] }, Some("assessment")),
            (ProtectionMissing::AssessmentUnknown(digest), Some("assessment")),
            (ProtectionMissing::AssessmentNotCovering { digest, fields: vec![] }, Some("assessment")),
        ];
        for (missing, input) in cases {
            assert_eq!(place(&missing).map(|(id, _)| id), input, "{missing:?}");
        }
    }
}
