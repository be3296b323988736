//! Old spellings of the `civmesh` flags still work for one release, with a
//! warning on stderr that names the new spelling.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn civmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_civmesh")).args(args).env_remove("CIVMESH_NODE_DIR").output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn old_spellings_still_work_and_warn() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (ca, key, cert) = (path("ca"), path("node.key"), path("node.pem"));
    let generated = civmesh(&["key", "generate", "--out", &key]);
    assert!(generated.status.success(), "{}", stderr(&generated));

    let new = civmesh(&["key", "show", "--key-file", &key]);
    assert!(new.status.success() && new.stderr.is_empty(), "{}", stderr(&new));
    let old = civmesh(&["key", "show", "--key", &key]);
    assert!(old.status.success(), "{}", stderr(&old));
    assert_eq!(old.stdout, generated.stdout, "the same key");
    assert!(stderr(&old).contains("--key is deprecated: use --key-file"), "{}", stderr(&old));

    let peer_id = String::from_utf8(generated.stdout).unwrap();
    let steps: [&[&str]; 3] = [
        &["ca", "init", "--dir", &ca, "--name", "test"],
        &[
            "ca",
            "issue",
            "--ca",
            &ca,
            "--org",
            "street/a",
            "--role",
            "street",
            "--peer-id",
            peer_id.trim(),
            "--out",
            &cert,
        ],
        &["cert", "verify", "--ca", &format!("{ca}/ca.pem"), "--cert", &cert],
    ];
    for (step, new) in steps.iter().zip(["--ca-dir", "--ca-dir", "--ca-cert"]) {
        let output = civmesh(step);
        assert!(output.status.success(), "{step:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(&format!("deprecated: use {new}")), "{step:?}: {}", stderr(&output));
    }
}

#[test]
fn a_bad_value_names_the_flag_and_the_words_it_takes() {
    let output = civmesh(&["ca", "issue", "--ca-dir", "ca", "--org", "a/b", "--role", "mayor"]);
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("--role") && error.contains("mayor") && error.contains("street"), "{error}");
}
