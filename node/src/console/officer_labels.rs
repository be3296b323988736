//! The policy's codes as the officer's pages show and take them: legal
//! bases, field classes, masking rules, demand and grant states and grant
//! warnings, each by message key (the words are in the catalogues).

use civmesh_certs::UnixMillis;
use civmesh_policy::model::{FieldClass, Grant, LegalBasis, MaskingRule};
use civmesh_policy::{DemandStatus, GrantWarning};

/// Every legal basis of PIPL Art. 13, in the article's order.
pub(super) const LEGAL_BASES: [LegalBasis; 7] = [
    LegalBasis::Consent,
    LegalBasis::Contract,
    LegalBasis::StatutoryDuty,
    LegalBasis::PublicHealthEmergency,
    LegalBasis::PublicInterestReporting,
    LegalBasis::LawfullyDisclosed,
    LegalBasis::OtherLaw,
];

/// The characters a `keep_last`/`keep_first` masking keeps at most.
pub(super) const MASK_KEEP_MAX: u8 = 32;
/// The characters a new `keep_*` masking keeps unless the officer says.
pub(super) const MASK_KEEP_DEFAULT: u8 = 4;

/// An option of a select: its value and its message key.
pub(super) struct Choice {
    /// The value posted.
    pub value: &'static str,
    /// The message key of its label.
    pub key: &'static str,
}

/// The form value of `basis` (its stable snake_case name).
pub(super) fn basis_value(basis: LegalBasis) -> &'static str {
    match basis {
        LegalBasis::Consent => "consent",
        LegalBasis::Contract => "contract",
        LegalBasis::StatutoryDuty => "statutory_duty",
        LegalBasis::PublicHealthEmergency => "public_health_emergency",
        LegalBasis::PublicInterestReporting => "public_interest_reporting",
        LegalBasis::LawfullyDisclosed => "lawfully_disclosed",
        LegalBasis::OtherLaw => "other_law",
    }
}

/// The message key of `basis`.
pub(super) fn basis_key(basis: LegalBasis) -> &'static str {
    match basis {
        LegalBasis::Consent => "officer.basis-consent",
        LegalBasis::Contract => "officer.basis-contract",
        LegalBasis::StatutoryDuty => "officer.basis-statutory-duty",
        LegalBasis::PublicHealthEmergency => "officer.basis-public-health-emergency",
        LegalBasis::PublicInterestReporting => "officer.basis-public-interest-reporting",
        LegalBasis::LawfullyDisclosed => "officer.basis-lawfully-disclosed",
        LegalBasis::OtherLaw => "officer.basis-other-law",
    }
}

/// The legal basis a form value names.
pub(super) fn parse_basis(value: &str) -> Option<LegalBasis> {
    LEGAL_BASES.into_iter().find(|basis| basis_value(*basis) == value)
}

/// The legal bases as a select's options.
pub(super) fn basis_choices() -> Vec<Choice> {
    LEGAL_BASES.into_iter().map(|basis| Choice { value: basis_value(basis), key: basis_key(basis) }).collect()
}

/// The message key of a field's class.
pub(super) fn class_key(class: FieldClass) -> &'static str {
    match class {
        FieldClass::Public => "officer.class-public",
        FieldClass::Internal => "officer.class-internal",
        FieldClass::Personal => "officer.class-personal",
        FieldClass::Sensitive(_) => "officer.class-sensitive",
    }
}

/// The masking kinds as a select's options (`none`: released as it is).
pub(super) fn masking_choices() -> Vec<Choice> {
    vec![
        Choice { value: "none", key: "officer.mask-none" },
        Choice { value: "keep_last", key: "officer.mask-keep-last" },
        Choice { value: "keep_first", key: "officer.mask-keep-first" },
        Choice { value: "redact", key: "officer.mask-redact" },
    ]
}

/// The masking a field's select (`kind`) and count (`keep`) name; an
/// unknown kind or a count outside 1..=[`MASK_KEEP_MAX`] is a message key.
pub(super) fn parse_masking(kind: &str, keep: &str) -> Result<Option<MaskingRule>, &'static str> {
    let count = || match keep.trim().parse::<u8>() {
        Ok(count) if (1..=MASK_KEEP_MAX).contains(&count) => Ok(count),
        _ => Err("officer.mask-keep-invalid"),
    };
    match kind {
        "" | "none" => Ok(None),
        "redact" => Ok(Some(MaskingRule::Redact)),
        "keep_last" => Ok(Some(MaskingRule::KeepLast(count()?))),
        "keep_first" => Ok(Some(MaskingRule::KeepFirst(count()?))),
        _ => Err("officer.mask-invalid"),
    }
}

/// A demand's state: its message key and what goes with it (the grant's
/// number, the refusal's reason).
pub(super) fn demand_state(status: &DemandStatus) -> (&'static str, String) {
    match status {
        DemandStatus::Waiting => ("officer.state-waiting", String::new()),
        DemandStatus::Granted { grant } => ("officer.state-granted", format!("#{grant}")),
        DemandStatus::Refused { reason } => ("officer.state-refused", reason.clone()),
    }
}

/// A grant's state at `now_ms`: its message key and the revocation's reason.
pub(super) fn grant_state(grant: &Grant, now_ms: UnixMillis) -> (&'static str, String) {
    match &grant.revoked {
        Some(revocation) => ("officer.grant-revoked", revocation.reason.clone()),
        None if now_ms < grant.valid_from_ms => ("officer.grant-pending", String::new()),
        None if now_ms >= grant.valid_until_ms => ("officer.grant-expired", String::new()),
        None => ("officer.grant-active", String::new()),
    }
}

/// One warning as a line of the page: its message key and its detail.
pub(super) struct WarningLine {
    /// The message key.
    pub key: &'static str,
    /// Dates or fields it concerns ("" if none).
    pub detail: String,
}

/// The lines that say `warnings`.
pub(super) fn warning_lines(warnings: &[GrantWarning]) -> Vec<WarningLine> {
    let line = |key, detail: String| WarningLine { key, detail };
    let mut lines = Vec::new();
    for warning in warnings {
        match warning {
            GrantWarning::Expired { valid_until_ms } => {
                lines.push(line(
                    "officer.warning-expired",
                    civmesh_policy::evaluation::format_time(*valid_until_ms),
                ));
            }
            GrantWarning::ExpiresSoon { valid_until_ms } => lines.push(line(
                "officer.warning-expires-soon",
                civmesh_policy::evaluation::format_time(*valid_until_ms),
            )),
            GrantWarning::SensitiveWithoutConsent { fields } => {
                lines.push(line("officer.warning-sensitive", fields.join(", ")));
            }
            GrantWarning::BroaderThanDemand { fields, purpose_differs, outlasts_demand, .. } => {
                if !fields.is_empty() {
                    lines.push(line("officer.warning-extra-fields", fields.join(", ")));
                }
                if *purpose_differs {
                    lines.push(line("officer.warning-purpose-differs", String::new()));
                }
                if *outlasts_demand {
                    lines.push(line("officer.warning-outlasts-demand", String::new()));
                }
            }
        }
    }
    lines
}

/// What the confirmation checkbox carries: a digest of the warnings the
/// officer saw, so a confirmation counts only for those very warnings.
pub(super) fn fingerprint(warnings: &[GrantWarning]) -> String {
    let text = serde_json::to_string(warnings).unwrap_or_default();
    hex::encode(civmesh_certs::codec::sha256(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::i18n::{catalogue, Lang};

    #[test]
    fn every_basis_has_a_value_that_reads_back_and_matches_its_serde_name() {
        for basis in LEGAL_BASES {
            assert_eq!(parse_basis(basis_value(basis)), Some(basis));
            assert_eq!(serde_json::to_value(basis).unwrap(), basis_value(basis));
            for lang in [Lang::ZhCn, Lang::En] {
                assert_ne!(catalogue(lang).get(basis_key(basis)), basis_key(basis), "{basis:?} has words");
            }
        }
        assert_eq!(parse_basis("statutory-duty"), None);
        assert_eq!(basis_choices().len(), LEGAL_BASES.len());
    }

    #[test]
    fn maskings_are_read_with_their_bounds() {
        assert_eq!(parse_masking("none", ""), Ok(None));
        assert_eq!(parse_masking("redact", "x"), Ok(Some(MaskingRule::Redact)));
        assert_eq!(parse_masking("keep_last", " 4 "), Ok(Some(MaskingRule::KeepLast(4))));
        assert_eq!(parse_masking("keep_first", "32"), Ok(Some(MaskingRule::KeepFirst(32))));
        for keep in ["0", "33", "", "-1", "four"] {
            assert_eq!(parse_masking("keep_last", keep), Err("officer.mask-keep-invalid"), "{keep}");
        }
        assert_eq!(parse_masking("hash", "4"), Err("officer.mask-invalid"));
        assert!(masking_choices().iter().all(|choice| choice.value == "none"
            || parse_masking(choice.value, "4").is_ok_and(|rule| rule.is_some())));
    }

    #[test]
    fn warnings_become_lines_and_a_fingerprint_that_tells_them_apart() {
        let broader = GrantWarning::BroaderThanDemand {
            demand: 3,
            fields: vec!["legal_rep_phone".into()],
            purpose_differs: true,
            outlasts_demand: false,
        };
        let soon = GrantWarning::ExpiresSoon { valid_until_ms: 1_772_294_400_000 };
        let lines = warning_lines(&[soon.clone(), broader.clone()]);
        let keys: Vec<&str> = lines.iter().map(|line| line.key).collect();
        assert_eq!(
            keys,
            [
                "officer.warning-expires-soon",
                "officer.warning-extra-fields",
                "officer.warning-purpose-differs"
            ]
        );
        assert_eq!(lines[0].detail, "2026-03-01T00:00:00+08:00");
        assert_eq!(lines[1].detail, "legal_rep_phone");
        let alone = fingerprint(std::slice::from_ref(&soon));
        let again = GrantWarning::ExpiresSoon { valid_until_ms: 1_772_294_400_000 };
        assert_eq!(alone, fingerprint(&[again]));
        assert_ne!(alone, fingerprint(&[soon, broader]));
        assert_eq!(fingerprint(&[]).len(), 64);
    }
}
