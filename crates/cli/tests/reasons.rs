//! Nothing looks stuck without a reason, seen as a user sees it (real processes): a pack
//! held by the brand check says so in `watch` and is found by `pack list --held`; a dev
//! server without resolvers says its lifecycle is off and how to turn it on; a server
//! started on an empty database says how to create the first token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};
use zonecert_testkit::{ServeCommand, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");
const DEV_ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

/// `zonecert serve` with rate limits off, its stdout kept for [`Server::rest_of_stdout`].
struct Server(ServeProcess);

impl Server {
    /// `zonecert serve` on port 0 with `args`; reads its lines up to the dev `export` one
    /// (or the address alone, without `--dev`).
    fn start(data: &Path, args: &[&str]) -> Server {
        Server(
            ServeCommand::new(BIN)
                .data_dir(data)
                .args(["--rate-limit", "off"])
                .args(args)
                .keep_stdout()
                .spawn(),
        )
    }

    fn zonecert(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("CLOUDFLARE_API_KEY")
            .env_remove("CLOUDFLARE_EMAIL");
        if let Some(token) = self.0.dev_token() {
            cmd.env("CLOUDFLARE_BASE_URL", self.0.base_url())
                .env("CLOUDFLARE_API_TOKEN", token);
        }
        cmd.output().unwrap()
    }

    fn order(&self, hosts: &[&str]) -> String {
        let mut args = vec![
            "ssl",
            "packs",
            "order",
            "--zone-id",
            DEV_ZONE,
            "--method",
            "txt",
        ];
        for h in hosts {
            args.extend(["--host", h]);
        }
        args.extend(["--output", "json"]);
        let out = self.zonecert(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pack: Value = serde_json::from_slice(&out.stdout).unwrap();
        pack["id"].as_str().unwrap().to_owned()
    }

    /// One `watch` that gives up after a short `--timeout` (exit 3) and its output.
    fn watch_once(&self) -> String {
        let out = self.zonecert(&[
            "ssl",
            "verification",
            "watch",
            "--zone-id",
            DEV_ZONE,
            "--timeout",
            "1s",
            "--interval",
            "1s",
        ]);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stops the server and returns what it printed after the lines `start` read. A
    /// request answered first: the server prints what it has to say at start before it
    /// accepts connections, so all of it is in.
    fn rest_of_stdout(mut self) -> String {
        let mut conn = std::net::TcpStream::connect(self.0.addr()).unwrap();
        std::io::Write::write_all(&mut conn, b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1."), "{answer}");
        let _ = self.0.child().kill();
        let _ = self.0.child().wait();
        let mut rest = String::new();
        self.0.stdout().read_to_string(&mut rest).unwrap();
        rest
    }
}

#[test]
fn a_pack_held_by_the_brand_check_says_why_and_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Resolvers nobody answers on: the lifecycle runs, but nothing here needs a check.
    let server = Server::start(
        &data,
        &[
            "--dev",
            "--brand-keywords",
            "PayPal",
            "--dcv-resolvers",
            "127.0.0.1:9",
        ],
    );
    let id = server.order(&["example.com", "paypal.example.com"]);
    let watched = server.watch_once();
    let reason = format!(
        "last check: held for operator approval: host paypal.example.com matches brand keyword \
         \"paypal\" (zonecert pack approve {id})"
    );
    assert!(watched.contains(&reason), "{watched}");

    let list = |held: bool| -> Value {
        let mut args = vec!["pack", "list", "--output", "json", "--data-dir"];
        let data = data.to_str().unwrap();
        args.push(data);
        if held {
            args.push("--held");
        }
        let out = server.zonecert(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let held = list(true);
    assert_eq!(held.as_array().unwrap().len(), 1, "{held}");
    assert_eq!(held[0]["id"], id.as_str());
    assert_eq!(held[0]["brand_check"], true);
    assert_eq!(
        list(false).as_array().unwrap().len(),
        2,
        "the dev pack and this one"
    );

    let out = server.zonecert(&["pack", "approve", &id, "--data-dir", data.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(list(true), serde_json::json!([]));
}

#[test]
fn a_dev_server_without_resolvers_says_its_lifecycle_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--dev"]);
    server.order(&["example.com", "www.example.com"]);
    let watched = server.watch_once();
    assert!(
        watched.contains(
            "last check: not checked: the lifecycle is off (dev mode without --dcv-resolvers); \
             restart with --dcv-resolvers ADDRESS:PORT"
        ),
        "{watched}"
    );
    assert!(!watched.contains("not checked yet"), "{watched}");
}

#[test]
fn a_server_on_an_empty_database_says_how_to_make_the_first_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let printed = server.rest_of_stdout();
    assert!(
        printed.starts_with("no API credentials in this database yet"),
        "{printed}"
    );
    let token_line = printed
        .lines()
        .find(|l| l.contains("zonecert token create"))
        .unwrap();
    // The command it prints works as printed (the data dir it names included).
    let words: Vec<String> = token_line
        .trim()
        .strip_prefix("zonecert ")
        .unwrap()
        .split(" --")
        .enumerate()
        .flat_map(|(i, part)| {
            if i == 0 {
                part.split(' ').map(str::to_owned).collect::<Vec<_>>()
            } else {
                let (flag, value) = part.split_once(' ').unwrap();
                vec![format!("--{flag}"), value.trim_matches('"').to_owned()]
            }
        })
        .collect();
    let out = Command::new(BIN).args(&words).output().unwrap();
    assert!(out.status.success(), "{words:?}: {out:?}");

    // Once there is a credential, it says nothing.
    let server = Server::start(&data, &[]);
    let printed = server.rest_of_stdout();
    assert!(!printed.contains("no API credentials"), "{printed}");
}
