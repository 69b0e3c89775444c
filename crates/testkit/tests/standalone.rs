//! The repository stands alone: a user's clone has no reference folders beside it, so no
//! file of the project may point at one. Walks every file of the working tree (what
//! `.gitignore` leaves out is skipped: build output, installed SDKs, data dirs).

use std::path::{Path, PathBuf};

/// Folders that are not the project's sources: build output, installed SDKs, data.
const SKIPPED: &[&str] = &[
    ".git",
    "target",
    ".sdk",
    "node_modules",
    "__pycache__",
    "zonecert-data",
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            let name = entry.file_name();
            if !SKIPPED.iter().any(|s| name == *s) {
                files(&path, out);
            }
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

/// Ways a file could reach the reference folder that sits beside the project on the
/// machines it is developed on (spelt in pieces so this file does not match itself).
fn outside_references() -> Vec<String> {
    let name = "shared";
    vec![
        format!("../{name}"),
        format!("/work/{name}"),
        format!("{name}/spec/"),
        format!("{name}/docs/"),
        format!("{name}/seed/"),
    ]
}

/// The offending `(file, line number, pattern)` of `root`'s files.
fn references_outside(root: &Path) -> Vec<String> {
    let mut all = Vec::new();
    files(root, &mut all);
    let patterns = outside_references();
    let mut found = Vec::new();
    for path in all {
        // Binary files cannot name a path a test or script would open.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for p in &patterns {
                if line.contains(p.as_str()) {
                    let shown = path.strip_prefix(root).unwrap_or(&path);
                    found.push(format!("{}:{}: {p}", shown.display(), n + 1));
                }
            }
        }
    }
    found
}

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn no_file_of_the_repository_refers_to_a_folder_outside_it() {
    let root = repository_root();
    assert!(
        root.join("Cargo.toml").is_file() && root.join("crates").is_dir(),
        "the workspace root is {}",
        root.display()
    );
    let found = references_outside(&root);
    assert!(
        found.is_empty(),
        "files of the repository refer to a folder outside it (a clone does not have it; \
         copy what is needed into the repository):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_guard_sees_a_reference() {
    // The walk above must be able to fail: a file naming the reference folder is caught.
    let dir = std::env::temp_dir().join(format!("zonecert-standalone-{}", std::process::id()));
    let nested = dir.join("crates/x/tests");
    std::fs::create_dir_all(&nested).expect("temporary folder");
    let name = "shared";
    let line = format!("let spec = \"../../../{name}/spec/api.yaml\";\n");
    std::fs::write(nested.join("t.rs"), line).expect("write");
    std::fs::create_dir_all(dir.join("target")).expect("temporary folder");
    std::fs::write(dir.join("target/skipped.rs"), format!("/work/{name}")).expect("write");
    let found = references_outside(&dir);
    std::fs::remove_dir_all(&dir).expect("clean up");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("crates/x/tests/t.rs:1: "), "{found:?}");
}
