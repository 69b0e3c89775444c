//! The loopback DNS server and HTTP origin driven by line commands, for people and for tests
//! not written in Rust: `zonecert dev dns` runs it for the README's one-machine
//! walk-throughs and for the official SDKs' compat suite. It prints
//! `dns listening on 127.0.0.1:PORT` and `http listening on 127.0.0.1:PORT` (both ports
//! chosen at random), then reads one command per line and answers `ok` (or `error: ...`)
//! per line, until its input closes.
//!
//! ```text
//! txt NAME VALUE...         replace the TXT records at NAME (one record per VALUE)
//! cname NAME TARGET         make NAME an alias of TARGET
//! a NAME IPV4               replace the A records at NAME with one address
//! aaaa NAME IPV6            replace the AAAA records at NAME with one address
//! caa NAME FLAGS TAG VALUE  replace the CAA records at NAME with one record
//! remove NAME               remove every record at NAME
//! forward SUFFIX ADDR:PORT  ask the DNS server at ADDR:PORT for names under SUFFIX
//!                           (a delegation, e.g. to `zonecert serve --dns-listen`)
//! http URL|PATH BODY        serve BODY with status 200 at the URL's path (any host)
//! ```

use crate::{DnsServer, HttpOrigin};
use hickory_proto::rr::Name;
use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Starts both servers, then answers the commands read from `input` on `output` until
/// `input` ends (the servers stop then). Blocking: call it from a thread that may block
/// (e.g. `tokio::task::spawn_blocking`), with `runtime` a handle of a multi-threaded
/// runtime whose workers serve the sockets meanwhile.
pub fn run(
    runtime: &tokio::runtime::Handle,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    let (dns, origin) =
        runtime.block_on(async { (DnsServer::start().await, HttpOrigin::start().await) });
    say(&mut output, &format!("dns listening on {}", dns.addr()))?;
    say(&mut output, &format!("http listening on {}", origin.addr()))?;
    for line in input.lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        match apply(&dns, &origin, &words) {
            Ok(()) => say(&mut output, "ok")?,
            Err(e) => say(&mut output, &format!("error: {e}"))?,
        }
    }
    Ok(())
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
            // here the name comes from a person or another program, so it is an error line.
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
        ["forward", suffix, server] => {
            let server: std::net::SocketAddr = server
                .parse()
                .map_err(|_| format!("server {server:?}: expected ADDRESS:PORT"))?;
            Name::from_utf8(suffix).map_err(|e| format!("suffix {suffix:?}: {e}"))?;
            dns.forward(suffix, server);
        }
        _ => {
            return Err(
                "expected `txt NAME VALUE...`, `cname NAME TARGET`, `a NAME IPV4`, `aaaa NAME IPV6`, \
                 `caa NAME FLAGS TAG VALUE`, `remove NAME`, `forward SUFFIX ADDR:PORT` or \
                 `http URL BODY`"
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

/// Writes one line and flushes: whoever drives the console waits for it on a pipe.
fn say(output: &mut impl Write, line: &str) -> std::io::Result<()> {
    writeln!(output, "{line}")?;
    output.flush()
}

#[cfg(test)]
mod tests {
    use super::url_path;

    #[test]
    fn a_url_or_a_path_names_the_path_served() {
        assert_eq!(url_path("/x").unwrap(), "/x");
        assert_eq!(url_path("http://a.test:80/p?q=1").unwrap(), "/p?q=1");
        assert_eq!(url_path("http://a.test").unwrap(), "/");
        assert!(url_path("https://a.test/p").is_err());
    }
}
