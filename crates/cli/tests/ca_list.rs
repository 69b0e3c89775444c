//! `zonecert ca list`: which CA signs each `certificate_authority` name, from the same
//! `--acme` options and `[acme.NAME]` file tables as `serve`.

#![allow(clippy::unwrap_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["ca", "list"])
        .args(args)
        .env_remove("ZONECERT_ACME")
        .env_remove("ZONECERT_CONFIG")
        .env_remove("ZONECERT_DATABASE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn names_without_a_directory_keep_the_builtin_ca() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, out, err) = run(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--acme",
        "lets_encrypt=https://acme-staging-v02.api.letsencrypt.org/directory",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("google ") && lines[0].contains("built-in CA"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("lets_encrypt ")
            && lines[1].contains("ACME https://acme-staging-v02.api.letsencrypt.org/directory")
            && lines[1].contains("CAA letsencrypt.org"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("ssl_com ") && lines[2].contains("built-in CA"),
        "{out}"
    );

    // The file's tables, as `serve --config` reads them; the server's other keys are left
    // to `serve`.
    let file = dir.path().join("zonecert.toml");
    std::fs::write(
        &file,
        "poll_interval = \"2s\"\n[acme.google]\ndirectory = \"https://dv.acme-v02.api.pki.goog/directory\"\n\
         eab_key_id = \"kid\"\neab_hmac_key = \"aGVsbG8\"\n",
    )
    .unwrap();
    let (ok, out, err) = run(&["--config", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "google        ACME https://dv.acme-v02.api.pki.goog/directory (CAA pki.goog, EAB;"
        ),
        "{out}"
    );
    assert!(
        !out.contains("aGVsbG8"),
        "the HMAC key is never printed: {out}"
    );

    // Once a server published its account to the database, that is the one every node
    // uses, and what the list says.
    let store = zonecert_server::store::Store::open_sqlite(&data).unwrap();
    let directory = "https://acme-staging-v02.api.letsencrypt.org/directory";
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.insert_acme_account(directory, b"sealed"))
        .unwrap();
    drop(store);
    let (ok, out, err) = run(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--acme",
        &format!("lets_encrypt={directory}"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("account shared through the database"), "{out}");

    // An option for a name with no directory is an error, not silently ignored.
    let (ok, _, err) = run(&["--acme-contact", "google=ops@example.org"]);
    assert!(!ok);
    assert!(err.contains("google has no ACME directory"), "{err}");
}
