//! The `civmesh` command line. Each command group lives in its own module,
//! its clap types beside its implementation (as in mini-redis's `cmd/`);
//! this module holds the top level and the dispatcher, `args` the arguments
//! several commands share, and `renames` the old spellings still accepted.

use clap::{Parser, Subcommand};

pub mod args;
mod audit;
mod catalog;
mod cluster;
mod consent;
mod correction;
mod demand;
mod demo;
mod evaluate;
mod grant;
pub(crate) mod identity;
mod init;
mod listing;
mod operator;
mod pia;
mod policy;
mod query;
mod received;
mod records;
pub mod renames;
mod run;
mod subject;
mod token;

/// civmesh: a federated data-sharing node for city departments, street
/// offices and auditors.
#[derive(Debug, Parser)]
#[command(name = "civmesh", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Node keys (Ed25519, PKCS#8, mode 0600).
    #[command(subcommand)]
    Key(identity::KeyCommand),
    /// The federation CA.
    #[command(subcommand)]
    Ca(identity::CaCommand),
    /// Node certificates.
    #[command(subcommand)]
    Cert(identity::CertCommand),
    /// Create a node's directory: key, certificate, API token, config.
    Init(init::InitArgs),
    /// Run a node until SIGINT or SIGTERM.
    Run(run::RunArgs),
    /// Operate the policy log's cluster through running nodes' APIs.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// This organisation's authoritative records.
    #[command(subcommand)]
    Records(records::RecordsCommand),
    /// Sign policy commands with the node's key and commit them.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// The catalog and the three lists.
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// Demands for data: file one, list them with their status, refuse one.
    #[command(subcommand)]
    Demand(demand::DemandCommand),
    /// Subjects' consents, at the dataset's owner: give or withdraw one
    /// (only the subject's keyed hash is logged).
    #[command(subcommand)]
    Consent(consent::ConsentCommand),
    /// Grants: issue one answering a demand (at the owner), list, show,
    /// revoke.
    #[command(subcommand)]
    Grant(grant::GrantCommand),
    /// Personal-information impact assessments (PIPL Art. 55-56), at the
    /// dataset's owner: add one (prints the digest a grant of sensitive
    /// fields names), show, list.
    #[command(subcommand)]
    Pia(pia::PiaCommand),
    /// Ask a dataset's owner for records, under a grant; prints the answer.
    Query(query::QueryArgs),
    /// What other owners released to this node and it holds (subscriptions'
    /// copies, kept answers), under which grant and retention.
    #[command(subcommand)]
    Received(received::ReceivedCommand),
    /// Corrections: submit at a street; review at the owner; statistics.
    #[command(subcommand)]
    Correction(correction::CorrectionCommand),
    /// Requests from the subject (PIPL Art. 44-47): take one (access,
    /// correction, deletion) at the intake, list the open ones, answer one
    /// at the owner.
    #[command(subcommand)]
    Subject(subject::SubjectCommand),
    /// Evaluate how each department serves the streets, per dataset and time
    /// bucket (Asia/Shanghai), from the policy log: the same on every node.
    Evaluate(evaluate::EvaluateArgs),
    /// The auditor's tools: export the access log as a bundle, verify it
    /// offline, list a subject's accesses.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Scoped API tokens for department systems.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// The people who sign in to the node's console: add, list, disable, reset.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// Run the local demo federation (the `civmesh-demo` program beside this
    /// binary); arguments such as `--check` and `--dir DIR` go to it.
    Demo(demo::DemoArgs),
}

/// Parses the process's arguments; an old spelling is accepted with a
/// warning on stderr naming the new one.
pub fn parse() -> Cli {
    let (args, warnings) = renames::rewrite(std::env::args_os().collect());
    for warning in warnings {
        eprintln!("{warning}");
    }
    Cli::parse_from(args)
}

/// Runs one `civmesh` command to completion.
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Key(command) => identity::key(command),
        Command::Ca(command) => identity::ca(command),
        Command::Cert(command) => identity::cert(command),
        Command::Init(args) => init::execute(args),
        Command::Run(args) => run::execute(args),
        Command::Cluster(command) => cluster::execute(command),
        Command::Records(command) => records::execute(command),
        Command::Policy(command) => policy::execute(command),
        Command::Catalog(command) => catalog::execute(command),
        Command::Demand(command) => demand::execute(command),
        Command::Grant(command) => grant::execute(command),
        Command::Consent(command) => consent::execute(command),
        Command::Pia(command) => pia::execute(command),
        Command::Query(args) => query::execute(args),
        Command::Received(command) => received::execute(command),
        Command::Correction(command) => correction::execute(command),
        Command::Subject(command) => subject::execute(command),
        Command::Evaluate(args) => evaluate::execute(args),
        Command::Audit(command) => audit::execute(command),
        Command::Token(command) => token::execute(command),
        Command::Operator(command) => operator::execute(command),
        Command::Demo(args) => demo::execute(args),
    }
}

/// The word `value` serializes to (a snake_case enum's name), as the API
/// and the log spell it; `?` for anything that is not one word.
fn serde_word<T: serde::Serialize>(value: &T) -> String {
    let value = serde_json::to_value(value).ok();
    value.as_ref().and_then(serde_json::Value::as_str).unwrap_or("?").to_string()
}

/// Prints `value` as indented JSON.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use clap::CommandFactory;

    use super::renames::{OldSpelling, RENAMES};
    use super::*;

    /// Spellings no command uses any more.
    const RETIRED: [&str; 8] =
        ["ca", "key", "dir", "data-dir", "via-dir", "voter-dir", "member-dir", "learner-dir"];

    /// Every subcommand with its path, e.g. `["cluster", "admit"]`.
    fn commands(command: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
        for sub in command.get_subcommands() {
            let mut sub_path = path.clone();
            sub_path.push(sub.get_name().to_string());
            commands(sub, sub_path, out);
        }
        out.push((path, command.clone()));
    }

    fn all_commands() -> Vec<(Vec<String>, clap::Command)> {
        let mut out = Vec::new();
        commands(&Cli::command(), Vec::new(), &mut out);
        out
    }

    /// The visible flags that take a value, with their value names.
    fn valued_flags(command: &clap::Command) -> impl Iterator<Item = (String, String)> + '_ {
        command
            .get_arguments()
            .filter(|arg| !arg.is_hide_set() && arg.get_action().takes_values())
            .filter_map(|arg| {
                let long = arg.get_long()?.to_string();
                let names = arg.get_value_names().unwrap_or_default();
                Some((long, names.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")))
            })
    }

    #[test]
    fn the_command_tree_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn each_concept_has_one_spelling_across_the_command_tree() {
        let mut flags_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut concepts_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (path, command) in all_commands() {
            for (long, concept) in valued_flags(&command) {
                assert!(!concept.is_empty(), "civmesh {} --{long} names no concept", path.join(" "));
                flags_of.entry(concept.clone()).or_default().insert(format!("--{long}"));
                concepts_of.entry(long).or_default().insert(concept);
            }
        }
        for (concept, flags) in &flags_of {
            assert_eq!(flags.len(), 1, "{concept} is spelt {flags:?}");
        }
        for (long, concepts) in &concepts_of {
            assert_eq!(concepts.len(), 1, "--{long} means {concepts:?}");
        }
        for concept in ["NODE_DIR", "CA_DIR", "CA_CERT", "KEY_FILE", "RECORD_KEY", "BUNDLE"] {
            assert!(flags_of.contains_key(concept), "no flag names {concept}");
        }
    }

    #[test]
    fn old_spellings_are_no_visible_flags_and_each_rename_names_a_flag() {
        for (path, command) in all_commands() {
            let visible: BTreeSet<String> = command
                .get_arguments()
                .filter(|arg| !arg.is_hide_set())
                .flat_map(|arg| {
                    arg.get_long().into_iter().chain(arg.get_visible_aliases().unwrap_or_default())
                })
                .map(str::to_string)
                .collect();
            for retired in RETIRED {
                assert!(!visible.contains(retired), "civmesh {} --{retired}", path.join(" "));
            }
            let renames: Vec<_> = RENAMES.iter().filter(|rename| rename.command == path).collect();
            for rename in &renames {
                assert!(visible.contains(rename.new), "civmesh {} has no --{}", path.join(" "), rename.new);
                if let OldSpelling::Flag(old) = rename.old {
                    // An old name may live on only as another argument's new name.
                    let reused = renames.iter().any(|other| other.new == old);
                    assert!(reused || !visible.contains(old), "civmesh {} --{old}", path.join(" "));
                }
            }
        }
        for rename in RENAMES {
            let found = all_commands().iter().any(|(path, _)| rename.command == path.as_slice());
            assert!(found, "no command {:?}", rename.command);
        }
    }
}
