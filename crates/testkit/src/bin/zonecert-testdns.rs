//! The testkit's loopback DNS server as a process, for tests not written in Rust (the
//! official SDKs' compat suite): prints `dns listening on 127.0.0.1:PORT`, then reads one
//! command per line on stdin and answers `ok` (or `error: ...`) per line, until stdin closes.
//!
//! ```text
//! txt NAME VALUE...         replace the TXT records at NAME (one record per VALUE)
//! cname NAME TARGET         make NAME an alias of TARGET
//! caa NAME FLAGS TAG VALUE  replace the CAA records at NAME with one record
//! remove NAME               remove every record at NAME
//! ```

use hickory_proto::rr::Name;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use zonecert_testkit::DnsServer;

fn main() -> ExitCode {
    // The server's tasks run on the runtime's worker threads while this thread blocks on
    // stdin; the process (and the server) ends when the driving test closes stdin.
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zonecert-testdns: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dns = runtime.block_on(DnsServer::start());
    say(&format!("dns listening on {}", dns.addr()));
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match apply(&dns, &words) {
            Ok(()) => say("ok"),
            Err(e) => say(&format!("error: {e}")),
        }
    }
    ExitCode::SUCCESS
}

fn apply(dns: &DnsServer, words: &[&str]) -> Result<(), String> {
    match words {
        ["txt", name, values @ ..] if !values.is_empty() => dns.set_txt(name, values),
        ["cname", name, target] => {
            // DnsServer::set_cname panics on a malformed target (a bug in a Rust test);
            // here the name comes from another program, so it is an error line instead.
            Name::from_utf8(target).map_err(|e| format!("CNAME target {target:?}: {e}"))?;
            dns.set_cname(name, target);
        }
        ["caa", name, flags, tag, value] => {
            let flags: u8 = flags
                .parse()
                .map_err(|_| format!("CAA flags {flags:?}: expected 0..=255"))?;
            dns.set_caa(name, &[(flags, tag, value)]);
        }
        ["remove", name] => dns.remove(name),
        _ => {
            return Err(
                "expected `txt NAME VALUE...`, `cname NAME TARGET`, `caa NAME FLAGS TAG VALUE` or `remove NAME`"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Prints one line and flushes: the driving test waits for it on a pipe.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
