//! The code stays readable: no source file in `node/src` or `policy/src` is
//! over `SOURCE_LINES_MAX` lines (ARCHITECTURE.md, "Limits"). Functions are
//! bounded by clippy's `too_many_lines` (clippy.toml), which CI denies.

use std::path::{Path, PathBuf};

/// The most lines one source file may have.
const SOURCE_LINES_MAX: usize = 600;

fn rust_files(directory: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(directory)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, found)?;
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
    Ok(())
}

#[test]
fn no_source_file_is_over_the_line_bound() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for crate_source in ["node/src", "policy/src"] {
        rust_files(&workspace.join(crate_source), &mut files).unwrap();
    }
    assert!(files.len() > 20, "the walk found only {} files", files.len());
    let too_long: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path).unwrap().lines().count();
            (lines > SOURCE_LINES_MAX).then(|| format!("{} ({lines} lines)", path.display()))
        })
        .collect();
    assert!(too_long.is_empty(), "over {SOURCE_LINES_MAX} lines: {too_long:?}");
}

/// Every test `docs/invariants.md` names is a function in the file it
/// names: the table of invariants cannot point at a test that is gone.
#[test]
fn every_test_the_invariants_table_names_exists_where_it_says() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let table = std::fs::read_to_string(workspace.join("docs/invariants.md")).unwrap();
    let mut checked = 0;
    for row in table.lines().filter(|line| line.starts_with("| ") && line.contains("`: `")) {
        let tests_column = row.trim_end_matches('|').rsplit(" | ").next().unwrap();
        // "`file`: `a`, `b`; `file2`: `c`"
        for group in tests_column.split("; ") {
            let (file, names) = group.split_once(": ").unwrap_or_else(|| panic!("no file in {group:?}"));
            let source = std::fs::read_to_string(workspace.join(file.trim_matches('`')))
                .unwrap_or_else(|error| panic!("{file}: {error}"));
            for name in names.split(", ").map(|name| name.trim().trim_matches('`')) {
                assert!(source.contains(&format!("fn {name}(")), "{file} has no test {name}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "the table names only {checked} tests");
}
