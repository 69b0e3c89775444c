//! The testkit's loopback DNS server and HTTP origin as a process, for the README's
//! one-machine walk-throughs and for tests not written in Rust (the official SDKs' compat
//! suite): prints `dns listening on 127.0.0.1:PORT` and `http listening on 127.0.0.1:PORT`
//! (both ports chosen at random), then reads one command per line on stdin and answers `ok`
//! (or `error: ...`) per line, until stdin closes.
//!
//! ```text
//! txt NAME VALUE...         replace the TXT records at NAME (one record per VALUE)
//! cname NAME TARGET         make NAME an alias of TARGET
//! a NAME IPV4               replace the A records at NAME with one address
//! aaaa NAME IPV6            replace the AAAA records at NAME with one address
//! caa NAME FLAGS TAG VALUE  replace the CAA records at NAME with one record
//! remove NAME               remove every record at NAME
//! http URL|PATH BODY        serve BODY with status 200 at the URL's path (any host)
//! ```

use hickory_proto::rr::Name;
use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use zonecert_testkit::{DnsServer, HttpOrigin};

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
    let (dns, origin) =
        runtime.block_on(async { (DnsServer::start().await, HttpOrigin::start().await) });
    say(&format!("dns listening on {}", dns.addr()));
    say(&format!("http listening on {}", origin.addr()));
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match apply(&dns, &origin, &words) {
            Ok(()) => say("ok"),
            Err(e) => say(&format!("error: {e}")),
        }
    }
    ExitCode::SUCCESS
}

fn apply(dns: &DnsServer, origin: &HttpOrigin, words: &[&str]) -> Result<(), String> {
    match words {
        ["a", name, addr] => {
            let addr: Ipv4Addr = addr
                .parse()
                .map_err(|_| format!("A address {addr:?}: expected an IPv4 address"))?;
            dns.set_a(name, addr);
        }
        ["aaaa", name, addr] => {
            let addr: Ipv6Addr = addr
                .parse()
                .map_err(|_| format!("AAAA address {addr:?}: expected an IPv6 address"))?;
            dns.set_aaaa(name, addr);
        }
        ["http", url, body] => origin.set_body(&url_path(url)?, 200, body),
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
                "expected `txt NAME VALUE...`, `cname NAME TARGET`, `a NAME IPV4`, `aaaa NAME IPV6`, \
                 `caa NAME FLAGS TAG VALUE`, `remove NAME` or `http URL BODY`"
                    .into(),
            );
        }
    }
    Ok(())
}

/// The path (and query) of `http://host[:port]/path` or of `/path`: the origin answers
/// whatever host the request names, as a test host's address all points here.
fn url_path(url: &str) -> Result<String, String> {
    if url.starts_with('/') {
        return Ok(url.to_owned());
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: expected http://HOST/PATH or /PATH"))?;
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    Ok(path.to_owned())
}

/// Prints one line and flushes: the driving test waits for it on a pipe.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
