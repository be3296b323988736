//! Arguments shared by several commands, flattened into each (as in uv's
//! `uv-cli`), so that one concept has one spelling everywhere. Every
//! argument names its concept in `value_name`; the vocabulary test in
//! `cli/mod.rs` holds each concept to one flag.

use std::path::PathBuf;

use civmesh_policy::model::{LegalBasis, NAME_BYTES_MAX};
use clap::Args;

/// The environment variable that gives `--node-dir`.
pub const NODE_DIR_ENV: &str = "CIVMESH_NODE_DIR";

/// The node a command acts on, or through.
#[derive(Debug, Clone, Args)]
pub struct NodeDir {
    /// The node's directory, as `civmesh init` makes it (`--data-dir` is
    /// an alias).
    #[arg(id = "node_dir", long = "node-dir", value_name = "NODE_DIR", env = NODE_DIR_ENV, alias = "data-dir")]
    pub path: PathBuf,
}

/// Several nodes a command acts on, or through.
#[derive(Debug, Clone, Args)]
pub struct NodeDirs {
    /// A node's directory, as `civmesh init` makes it (repeatable;
    /// `--data-dir` is an alias).
    #[arg(
        id = "node_dirs",
        long = "node-dir",
        value_name = "NODE_DIR",
        env = NODE_DIR_ENV,
        alias = "data-dir",
        required = true
    )]
    pub paths: Vec<PathBuf>,
}

/// The federation CA's directory (`ca.key`, `ca.pem`, the subject-key
/// secret), as `civmesh ca init` makes it.
#[derive(Debug, Clone, Args)]
pub struct CaDir {
    /// The CA's directory (holding ca.key and ca.pem).
    #[arg(id = "ca_dir", long = "ca-dir", value_name = "CA_DIR")]
    pub path: PathBuf,
}

/// The federation CA's certificate, a PEM file.
#[derive(Debug, Clone, Args)]
pub struct CaCert {
    /// The federation CA's certificate (PEM, e.g. CA_DIR/ca.pem).
    #[arg(id = "ca_cert", long = "ca-cert", value_name = "CA_CERT")]
    pub path: PathBuf,
}

/// An audit bundle, as `civmesh audit export` writes it.
#[derive(Debug, Clone, Args)]
pub struct Bundle {
    /// The audit bundle.
    #[arg(id = "bundle", long = "bundle", value_name = "BUNDLE")]
    pub path: PathBuf,
}

/// Who a node's certificate says it is: its organisation and its role.
#[derive(Debug, Clone, Args)]
pub struct Membership {
    /// Organisation id, `kind/name`, e.g. street/jingansi.
    #[arg(long, value_name = "ORG")]
    pub org: String,
    /// The node's role.
    #[arg(long, value_name = "ROLE", value_enum)]
    pub role: RoleArg,
}

/// A node's role in its certificate: the words `civmesh_certs::Role` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// The city hub.
    Hub,
    /// A department that owns datasets.
    Department,
    /// A street office.
    Street,
    /// An auditor.
    Auditor,
}

impl From<RoleArg> for civmesh_certs::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Hub => civmesh_certs::Role::Hub,
            RoleArg::Department => civmesh_certs::Role::Department,
            RoleArg::Street => civmesh_certs::Role::Street,
            RoleArg::Auditor => civmesh_certs::Role::Auditor,
        }
    }
}

/// A legal basis for processing (PIPL Art. 13): the words
/// `civmesh_policy::model::LegalBasis` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum LegalBasisArg {
    /// Art. 13(1): the individual's consent.
    Consent,
    /// Art. 13(2): a contract or human-resources management.
    Contract,
    /// Art. 13(3): a statutory duty or obligation.
    StatutoryDuty,
    /// Art. 13(4): a public-health emergency, or life, health and property
    /// in an emergency.
    PublicHealthEmergency,
    /// Art. 13(5): news reporting and supervision in the public interest.
    PublicInterestReporting,
    /// Art. 13(6): information the individual disclosed, or lawfully
    /// disclosed.
    LawfullyDisclosed,
    /// Art. 13(7): other circumstances provided by laws and regulations.
    OtherLaw,
}

impl From<LegalBasisArg> for LegalBasis {
    fn from(basis: LegalBasisArg) -> Self {
        match basis {
            LegalBasisArg::Consent => LegalBasis::Consent,
            LegalBasisArg::Contract => LegalBasis::Contract,
            LegalBasisArg::StatutoryDuty => LegalBasis::StatutoryDuty,
            LegalBasisArg::PublicHealthEmergency => LegalBasis::PublicHealthEmergency,
            LegalBasisArg::PublicInterestReporting => LegalBasis::PublicInterestReporting,
            LegalBasisArg::LawfullyDisclosed => LegalBasis::LawfullyDisclosed,
            LegalBasisArg::OtherLaw => LegalBasis::OtherLaw,
        }
    }
}

/// A purpose as grants and demands name it: a lowercase word, or words
/// joined by `-` or `_` (e.g. `street-inspection`), at most
/// `NAME_BYTES_MAX` bytes.
pub fn parse_purpose(text: &str) -> Result<String, PurposeInvalid> {
    let word =
        |part: &str| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if text.len() > NAME_BYTES_MAX || !text.split(['-', '_']).all(word) {
        return Err(PurposeInvalid);
    }
    Ok(text.to_string())
}

/// A purpose that is not lowercase words.
#[derive(Debug, thiserror::Error)]
#[error("use lowercase words joined by - or _, e.g. street-inspection (at most {NAME_BYTES_MAX} bytes)")]
pub struct PurposeInvalid;

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn role_words_are_the_ones_certs_reads() {
        for role in RoleArg::value_variants() {
            let word = role.to_possible_value().unwrap().get_name().to_string();
            let parsed: civmesh_certs::Role = word.parse().unwrap();
            assert_eq!(parsed, civmesh_certs::Role::from(*role), "{word}");
            assert_eq!(parsed.as_str(), word);
        }
    }

    #[test]
    fn legal_basis_words_are_the_ones_policy_reads() {
        for basis in LegalBasisArg::value_variants() {
            let word = basis.to_possible_value().unwrap().get_name().to_string();
            let parsed: LegalBasis = serde_json::from_value(serde_json::json!(word)).unwrap();
            assert_eq!(parsed, LegalBasis::from(*basis), "{word}");
        }
    }

    #[test]
    fn purposes_are_lowercase_words() {
        assert_eq!(parse_purpose("street-inspection").ok().as_deref(), Some("street-inspection"));
        assert!(parse_purpose("visit_2026").is_ok());
        for bad in ["", "Street", "street inspection", "-x", "x--y", "街道"] {
            assert!(parse_purpose(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dates_are_iso_days_in_shanghai() {
        use crate::cli::Cli;
        use clap::Parser;
        let error = Cli::try_parse_from(["civmesh", "demand", "file", "--node-dir", "n", "--dataset", "d"])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(error.contains("--field"), "{error}");
        let args = ["--field", "f", "--purpose", "p", "--legal-basis", "statutory_duty", "--reason", "r"];
        let file = |until: &str| {
            let mut all = vec!["civmesh", "demand", "file", "--node-dir", "n", "--dataset", "d"];
            all.extend(args);
            all.extend(["--until", until]);
            Cli::try_parse_from(all).map(|_| ()).map_err(|error| error.to_string())
        };
        assert!(file("2026-12-31").is_ok());
        let error = file("31/12/2026").unwrap_err();
        assert!(error.contains("--until") && error.contains("YYYY-MM-DD"), "{error}");
    }
}
