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
