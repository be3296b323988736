//! Old spellings of flags, accepted with a warning until the next release:
//! the one table of renames, and the rewrite of the command line that
//! applies it before clap parses.

use std::ffi::OsString;

use clap::CommandFactory;

use crate::cli::Cli;

/// How an argument was given before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldSpelling {
    /// A flag, without its `--`.
    Flag(&'static str),
    /// A positional argument.
    Positional,
}

/// One renamed argument.
#[derive(Debug)]
pub struct Rename {
    /// The subcommand it applies in, e.g. `["cluster", "admit"]`.
    pub command: &'static [&'static str],
    /// How it was given.
    pub old: OldSpelling,
    /// The flag now, without its `--`.
    pub new: &'static str,
    /// Applies only when the command line also holds this old flag: for an
    /// old flag whose name the new vocabulary gives to another argument.
    pub beside: Option<&'static str>,
}

const fn flag(command: &'static [&'static str], old: &'static str, new: &'static str) -> Rename {
    Rename { command, old: OldSpelling::Flag(old), new, beside: None }
}

/// Every renamed argument (`--data-dir` is no rename: it stays an alias of
/// `--node-dir`).
pub const RENAMES: &[Rename] = &[
    flag(&["init"], "ca", "ca-dir"),
    flag(&["init"], "key", "key-file"),
    flag(&["key", "show"], "key", "key-file"),
    flag(&["ca", "init"], "dir", "ca-dir"),
    flag(&["ca", "issue"], "ca", "ca-dir"),
    flag(&["cert", "verify"], "ca", "ca-cert"),
    flag(&["cluster", "bootstrap"], "ca", "ca-dir"),
    flag(&["cluster", "bootstrap"], "voter-dir", "voter-node-dir"),
    flag(&["cluster", "bootstrap"], "member-dir", "member-node-dir"),
    flag(&["cluster", "admit"], "ca", "ca-dir"),
    flag(&["cluster", "admit"], "via-dir", "node-dir"),
    Rename {
        command: &["cluster", "admit"],
        old: OldSpelling::Flag("node-dir"),
        new: "new-node-dir",
        beside: Some("via-dir"),
    },
    flag(&["cluster", "revoke"], "ca", "ca-dir"),
    flag(&["cluster", "revoke"], "via-dir", "node-dir"),
    flag(&["cluster", "add-learner"], "voter-dir", "node-dir"),
    flag(&["cluster", "add-learner"], "learner-dir", "learner-node-dir"),
    flag(&["cluster", "voters"], "via-dir", "node-dir"),
    flag(&["records", "show"], "key", "record-key"),
    flag(&["query"], "key", "record-key"),
    flag(&["correction", "submit"], "key", "record-key"),
    flag(&["audit", "export"], "from", "from-entry"),
    flag(&["audit", "export"], "to", "until-entry"),
    Rename { command: &["audit", "verify"], old: OldSpelling::Positional, new: "bundle", beside: None },
    flag(&["audit", "verify"], "ca", "ca-cert"),
    flag(&["audit", "subject"], "ca", "ca-cert"),
    flag(&["audit", "subject"], "key", "record-key"),
];

/// The name of a `--flag` or `--flag=value` argument.
fn long_name(arg: &OsString) -> Option<&str> {
    let name = arg.to_str()?.strip_prefix("--")?;
    let name = name.split_once('=').map_or(name, |(name, _)| name);
    (!name.is_empty()).then_some(name)
}

/// The subcommand `args` name (e.g. `["cluster", "admit"]`), its clap
/// command, and the index of the first argument after its name.
fn subcommand_of<'a>(root: &'a clap::Command, args: &[OsString]) -> (Vec<&'a str>, &'a clap::Command, usize) {
    let (mut command, mut path, mut start) = (root, Vec::new(), 1);
    while let Some(sub) = args.get(start).and_then(|arg| command.find_subcommand(arg.to_str()?)) {
        path.push(sub.get_name());
        command = sub;
        start += 1;
    }
    (path, command, start)
}

/// Whether `command`'s `--long` takes a value.
fn takes_value(command: &clap::Command, long: &str) -> bool {
    command.get_arguments().any(|arg| arg.get_long() == Some(long) && arg.get_action().takes_values())
}

/// `args` (the program name first) with old spellings replaced by the new
/// ones, and a warning for each replaced. Words after `--` are left alone.
pub fn rewrite(args: Vec<OsString>) -> (Vec<OsString>, Vec<String>) {
    let root = Cli::command();
    let (path, command, start) = subcommand_of(&root, &args);
    let words = &args[start..];
    let given = |name: &str| words.iter().any(|arg| long_name(arg) == Some(name));
    let renames: Vec<&Rename> = RENAMES
        .iter()
        .filter(|rename| rename.command == path.as_slice() && rename.beside.is_none_or(given))
        .collect();
    if renames.is_empty() {
        return (args, Vec::new());
    }
    let shown = format!("civmesh {}", path.join(" "));
    let (mut out, mut warnings) = (args[..start].to_vec(), Vec::new());
    let mut value_next = false;
    for (index, arg) in words.iter().enumerate() {
        if arg == "--" {
            out.extend(words[index..].iter().cloned());
            break;
        }
        let is_value = std::mem::take(&mut value_next);
        let text = arg.to_str().unwrap_or_default();
        if let Some(name) = long_name(arg) {
            let rename =
                renames.iter().find(|rename| matches!(rename.old, OldSpelling::Flag(old) if old == name));
            let long = rename.map_or(name, |rename| rename.new);
            value_next = !text.contains('=') && takes_value(command, long);
            match rename {
                Some(rename) => {
                    out.push(format!("--{long}{}", &text[2 + name.len()..]).into());
                    let beside = rename.beside.map(|old| format!(" beside --{old}")).unwrap_or_default();
                    warnings.push(warning(&shown, &format!("--{name}{beside}"), long));
                }
                None => out.push(arg.clone()),
            }
            continue;
        }
        let positional = renames.iter().find(|rename| rename.old == OldSpelling::Positional);
        if let Some(rename) = positional.filter(|_| !is_value && !text.starts_with('-')) {
            warnings.push(warning(&shown, &format!("{} given without a flag", rename.new), rename.new));
            out.push(format!("--{}", rename.new).into());
        }
        out.push(arg.clone());
    }
    (out, warnings)
}

fn warning(command: &str, old: &str, new: &str) -> String {
    format!(
        "warning: in `{command}`, {old} is deprecated: use --{new} (the old spelling is accepted until \
         the next release)"
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::audit::AuditCommand;
    use crate::cli::cluster::ClusterCommand;
    use crate::cli::Command;

    fn parse(words: &[&str]) -> (Cli, Vec<String>) {
        let args = std::iter::once("civmesh").chain(words.iter().copied()).map(OsString::from).collect();
        let (args, warnings) = rewrite(args);
        (Cli::try_parse_from(args).unwrap(), warnings)
    }

    #[test]
    fn old_admit_spellings_still_work_and_warn() {
        let old = ["cluster", "admit", "--ca", "ca", "--via-dir", "hub", "--node-dir", "new"];
        let (cli, warnings) = parse(&old);
        let Command::Cluster(ClusterCommand::Admit(admit)) = cli.command else { panic!("{cli:?}") };
        assert_eq!(admit.ca_dir.path.to_str(), Some("ca"));
        assert_eq!(admit.node_dir.path.to_str(), Some("hub"));
        assert_eq!(admit.new_node_dir.to_str(), Some("new"));
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings.iter().any(|w| w.contains("--via-dir is deprecated: use --node-dir")),
            "{warnings:?}"
        );
        let new = ["cluster", "admit", "--ca-dir", "ca", "--node-dir", "hub", "--new-node-dir", "new"];
        let (cli, warnings) = parse(&new);
        assert!(warnings.is_empty(), "{warnings:?}");
        let Command::Cluster(ClusterCommand::Admit(admit)) = cli.command else { panic!("{cli:?}") };
        assert_eq!(admit.node_dir.path.to_str(), Some("hub"));
    }

    #[test]
    fn a_positional_bundle_becomes_the_flag_and_values_are_left_alone() {
        let (cli, warnings) = parse(&["audit", "verify", "--ca=ca.pem", "--seen", "s", "b"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let Command::Audit(AuditCommand::Verify(verify)) = cli.command else { panic!("{cli:?}") };
        assert_eq!((verify.bundle.path.to_str(), verify.seen.to_str()), (Some("b"), Some("s")));
        assert_eq!(verify.ca_cert.path.to_str(), Some("ca.pem"));
        // Words after `--` are left as they are.
        let (args, warnings) = rewrite(["civmesh", "query", "--", "--key"].map(OsString::from).to_vec());
        assert!(warnings.is_empty() && args[3] == "--key", "{args:?}");
    }
}
