//! The README's one-machine walk-throughs for http and cname validation, with real
//! processes only: `zonecert dev dns` (the loopback DNS server and HTTP origin, driven by
//! the lines a user would type into it), `zonecert serve --dev` checking against it, and
//! the `zonecert ssl ...` commands. An http pack and a cname pack each reach `active`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use zonecert_testkit::{ServeCommand, ServeProcess, line_reader};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");

fn next_line(lines: &mpsc::Receiver<String>, what: &str) -> String {
    lines
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no line from {what}"))
}

/// The test DNS server as the README starts it, with its two random ports.
struct TestDns {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    dns: String,
    http_port: String,
}

impl TestDns {
    fn start() -> TestDns {
        let mut child = Command::new(BIN)
            .args(["dev", "dns"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = line_reader(&mut child);
        let dns = next_line(&lines, "dev dns");
        let dns = dns.strip_prefix("dns listening on ").unwrap().to_owned();
        let http = next_line(&lines, "dev dns");
        let http = http.strip_prefix("http listening on ").unwrap();
        let http_port = http.rsplit(':').next().unwrap().to_owned();
        TestDns {
            child,
            stdin,
            lines,
            dns,
            http_port,
        }
    }

    /// Types one command, as into its terminal, and expects `ok`.
    fn type_line(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        assert_eq!(next_line(&self.lines, "dev dns"), "ok", "{line}");
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `zonecert serve --dev`, killed when dropped.
struct Server {
    _process: ServeProcess,
    base_url: String,
    token: String,
}

impl Server {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("CLOUDFLARE_API_KEY")
            .env_remove("CLOUDFLARE_EMAIL")
            .env("CLOUDFLARE_BASE_URL", &self.base_url)
            .env("CLOUDFLARE_API_TOKEN", &self.token);
        cmd
    }

    fn run(&self, args: &[&str]) -> Value {
        let out = self
            .command(args)
            .args(["--output", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "zonecert {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `watch` until every pack is active, typing into the test DNS server what
    /// `respond` makes of the records watch shows. Returns watch's lines.
    fn watch_until_active(
        &self,
        zone: &str,
        packs: usize,
        dns: &mut TestDns,
        respond: impl Fn(&[String]) -> Option<Vec<String>>,
    ) -> Vec<String> {
        let mut watch = self
            .command(&[
                "ssl",
                "verification",
                "watch",
                "--zone-id",
                zone,
                "--timeout",
                "60s",
                "--interval",
                "1s",
                "--recheck",
                "1s",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = line_reader(&mut watch);
        let mut seen = Vec::new();
        let mut typed = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("watch: {seen:#?}"),
            }
            if !typed && let Some(commands) = respond(&seen) {
                for c in commands {
                    dns.type_line(&c);
                }
                typed = true;
            }
        }
        let status = watch.wait().unwrap();
        assert!(status.success(), "watch: {status}\n{seen:#?}");
        assert_eq!(
            seen.last().map(String::as_str),
            Some(format!("all {packs} certificate packs are active").as_str()),
            "{seen:#?}"
        );
        seen
    }
}

/// The values following `prefix` in watch's latest block, in order.
fn shown(lines: &[String], prefix: &str) -> Vec<String> {
    let start = lines.iter().rposition(|l| l.starts_with('[')).unwrap_or(0);
    lines[start..]
        .iter()
        .filter_map(|l| l.trim().strip_prefix(prefix).map(str::to_owned))
        .collect()
}

#[test]
fn an_http_pack_and_a_cname_pack_reach_active_on_one_machine() {
    // Terminal 1: the test DNS server (and its HTTP origin), both on random ports.
    let mut dns = TestDns::start();
    // Terminal 2: the server, asking only that DNS server and fetching HTTP tokens from
    // the origin's port.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("zonecert-data");
    let process = ServeCommand::new(BIN)
        .dev()
        .data_dir(&data)
        .args(["--dcv-resolvers", &dns.dns])
        .args([
            "--dcv-http-port",
            &dns.http_port,
            "--dcv-allow-private-addresses",
        ])
        .spawn();
    let server = Server {
        base_url: process.base_url().to_owned(),
        token: process.token().to_owned(),
        _process: process,
    };
    // Terminal 3.
    let out = Command::new(BIN)
        .args([
            "zone",
            "create",
            "example.org",
            "--output",
            "json",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zone: Value = serde_json::from_slice(&out.stdout).unwrap();
    let zone = zone["id"].as_str().unwrap().to_owned();

    // http: the hosts' addresses point at this machine, the origin serves the tokens.
    let order = |hosts: &[&str], method: &str| {
        let mut args = vec![
            "ssl",
            "packs",
            "order",
            "--zone-id",
            &zone,
            "--method",
            method,
        ];
        for h in hosts {
            args.extend(["--host", h]);
        }
        server.run(&args)["id"].as_str().unwrap().to_owned()
    };
    order(&["example.org", "www.example.org"], "http");
    let seen = server.watch_until_active(&zone, 1, &mut dns, |lines| {
        let urls = shown(lines, "serve over HTTP: ");
        let bodies = shown(lines, "body: ");
        (urls.len() == 2 && bodies.len() == 2).then(|| {
            let mut typed = vec![
                "a example.org 127.0.0.1".to_owned(),
                "a www.example.org 127.0.0.1".to_owned(),
            ];
            for (url, body) in urls.iter().zip(&bodies) {
                assert!(url.starts_with("http://"), "{url}");
                typed.push(format!("http {url} {body}"));
            }
            typed
        })
    });
    assert!(
        seen.iter().any(|l| l.contains("serve over HTTP: ")),
        "{seen:#?}"
    );

    // cname: ordered with txt (an order takes txt, http or email), then switched to
    // delegated validation; the CNAME points at the server's DCV domain.
    let pack = order(&["example.org", "api.example.org"], "txt");
    let edited = server.run(&[
        "ssl",
        "verification",
        "edit",
        "--zone-id",
        &zone,
        "--pack-id",
        &pack,
        "--method",
        "cname",
    ]);
    assert_eq!(edited["validation_method"], "cname", "{edited}");
    let seen = server.watch_until_active(&zone, 2, &mut dns, |lines| {
        let names = shown(lines, "create DNS record: ");
        let targets = shown(lines, "target: ");
        let names: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_suffix(" CNAME").map(str::to_owned))
            .collect();
        (names.len() == 2 && targets.len() == 2).then(|| {
            names
                .iter()
                .zip(&targets)
                .map(|(n, t)| format!("cname {n} {t}"))
                .collect()
        })
    });
    assert!(seen.iter().any(|l| l.ends_with(" CNAME")), "{seen:#?}");
    drop(server);
}
