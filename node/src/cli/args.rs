//! Arguments shared by several commands, flattened into each (as in uv's
//! `uv-cli`), so that one concept has one spelling everywhere. Every
//! argument names its concept in `value_name`; the vocabulary test in
//! `cli/mod.rs` holds each concept to one flag.

use std::path::PathBuf;

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
}
