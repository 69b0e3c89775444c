//! DCV and CAA checks against a real DNS server and real HTTP origins on loopback.

// Tests may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use zonecert_server::dcv::{CheckOutcome, DcvConfig, Validator};
use zonecert_testkit::{DnsServer, HttpOrigin};

const TOKEN: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
const CHALLENGE: &str = "_acme-challenge.www.example.com";

fn validator(dns: &DnsServer, http_port: u16, allow_private: bool, timeout: Duration) -> Validator {
    Validator::new(DcvConfig {
        resolvers: vec![dns.addr()],
        http_port,
        // A port nothing listens on: https redirects in these tests must fail to connect.
        https_port: 1,
        allow_private_addresses: allow_private,
        timeout,
    })
    .unwrap()
}

fn dns_validator(dns: &DnsServer) -> Validator {
    validator(dns, 80, false, Duration::from_secs(2))
}

#[track_caller]
fn assert_failed(outcome: &CheckOutcome, expected: &str) {
    match outcome {
        CheckOutcome::Failed(reason) => assert_eq!(reason, expected),
        CheckOutcome::Passed => panic!("expected failure {expected:?}, got Passed"),
    }
}

#[track_caller]
fn assert_failed_containing(outcome: &CheckOutcome, part: &str) {
    match outcome {
        CheckOutcome::Failed(reason) => {
            assert!(
                reason.contains(part),
                "{reason:?} does not contain {part:?}"
            )
        }
        CheckOutcome::Passed => panic!("expected a failure containing {part:?}, got Passed"),
    }
}

// ---- TXT ----

#[tokio::test]
async fn txt_matching_value_passes() {
    let dns = DnsServer::start().await;
    dns.set_txt(CHALLENGE, &[TOKEN]);
    let v = dns_validator(&dns);
    assert_eq!(v.check_txt(CHALLENGE, TOKEN).await, CheckOutcome::Passed);
    // Names are case-insensitive and may carry the root dot.
    assert_eq!(
        v.check_txt("_ACME-challenge.WWW.example.com.", TOKEN).await,
        CheckOutcome::Passed
    );
}

#[tokio::test]
async fn txt_mismatch_quotes_what_was_found() {
    let dns = DnsServer::start().await;
    dns.set_txt(CHALLENGE, &["stale-token"]);
    let v = dns_validator(&dns);
    assert_failed(
        &v.check_txt(CHALLENGE, TOKEN).await,
        "TXT _acme-challenge.www.example.com has 1 value, which does not match (found \"stale-token\")",
    );
    dns.set_txt(CHALLENGE, &["a", "b"]);
    assert_failed(
        &v.check_txt(CHALLENGE, TOKEN).await,
        "TXT _acme-challenge.www.example.com has 2 values, none matches (found \"a\", \"b\")",
    );
}

#[tokio::test]
async fn txt_absent_says_nxdomain_or_no_data() {
    let dns = DnsServer::start().await;
    let v = dns_validator(&dns);
    assert_failed(
        &v.check_txt(CHALLENGE, TOKEN).await,
        "no TXT record at _acme-challenge.www.example.com (NXDOMAIN)",
    );
    dns.set_a(CHALLENGE, Ipv4Addr::new(192, 0, 2, 1));
    assert_failed(
        &v.check_txt(CHALLENGE, TOKEN).await,
        "no TXT record at _acme-challenge.www.example.com (the name exists, with no TXT record)",
    );
}

#[tokio::test]
async fn txt_one_of_several_values_matches_apex_and_wildcard_share_a_name() {
    let dns = DnsServer::start().await;
    let wildcard_token = "wildcard-token-wildcard-token-wildcard-tok1";
    dns.set_txt(
        "_acme-challenge.example.com",
        &[TOKEN, wildcard_token, "v=other"],
    );
    let v = dns_validator(&dns);
    assert!(
        v.check_txt("_acme-challenge.example.com", TOKEN)
            .await
            .passed()
    );
    assert!(
        v.check_txt("_acme-challenge.example.com", wildcard_token)
            .await
            .passed()
    );
    assert_failed_containing(
        &v.check_txt("_acme-challenge.example.com", "absent").await,
        "has 3 values, none matches",
    );
}

#[tokio::test]
async fn checks_of_one_pack_share_identical_lookups_and_the_next_pack_asks_again() {
    let dns = DnsServer::start().await;
    // An apex and its wildcard: two tokens at one name. A pack's checks wait for slots
    // of the check bound, so they need not overlap: here they run one after the other.
    dns.set_txt(CHALLENGE, &[TOKEN, "wildcard-token"]);
    let v = dns_validator(&dns);

    let asked = dns.query_count();
    assert_eq!(v.check_txt(CHALLENGE, TOKEN).await, CheckOutcome::Passed);
    assert_eq!(
        v.check_txt(CHALLENGE, "wildcard-token").await,
        CheckOutcome::Passed
    );
    assert_eq!(
        dns.query_count() - asked,
        2,
        "unshared: one query per check"
    );

    let shared = v.sharing_answers();
    let asked = dns.query_count();
    assert_eq!(
        shared.check_txt(CHALLENGE, TOKEN).await,
        CheckOutcome::Passed
    );
    assert_eq!(
        shared.clone().check_txt(CHALLENGE, "wildcard-token").await,
        CheckOutcome::Passed
    );
    assert_failed_containing(
        &shared.check_txt(CHALLENGE, "never-published").await,
        "has 2 values, none matches",
    );
    assert_eq!(
        dns.query_count() - asked,
        1,
        "shared: one query for the pack"
    );

    // The next pack's checks see the change: nothing is kept past a pack.
    dns.set_txt(CHALLENGE, &["replaced"]);
    let next = v.sharing_answers();
    assert_failed_containing(&next.check_txt(CHALLENGE, TOKEN).await, "\"replaced\"");
}

#[tokio::test]
async fn txt_changes_are_seen_by_the_next_check() {
    let dns = DnsServer::start().await;
    let v = dns_validator(&dns);
    assert!(!v.check_txt(CHALLENGE, TOKEN).await.passed());
    dns.set_txt(CHALLENGE, &[TOKEN]);
    assert!(v.check_txt(CHALLENGE, TOKEN).await.passed());
    dns.set_txt(CHALLENGE, &["replaced"]);
    assert!(!v.check_txt(CHALLENGE, TOKEN).await.passed());
    dns.remove(CHALLENGE);
    assert_failed_containing(&v.check_txt(CHALLENGE, TOKEN).await, "NXDOMAIN");
    // Every check reached the server: nothing was answered from a cache (TTLs are 300 s).
    assert!(dns.query_count() >= 4, "{} queries", dns.query_count());
}

#[tokio::test]
async fn txt_follows_a_cname_delegation() {
    let dns = DnsServer::start().await;
    let target = "www.example.com.z1.dcv.zonecert.test";
    dns.set_cname(CHALLENGE, target);
    let v = dns_validator(&dns);
    assert_failed(
        &v.check_txt(CHALLENGE, TOKEN).await,
        "no TXT record at _acme-challenge.www.example.com: it is a CNAME to \
         www.example.com.z1.dcv.zonecert.test, which has no TXT record (NXDOMAIN)",
    );
    dns.set_txt(target, &[TOKEN]);
    assert!(v.check_txt(CHALLENGE, TOKEN).await.passed());
}

#[tokio::test]
async fn large_txt_answer_falls_back_to_tcp() {
    let dns = DnsServer::start().await;
    let values: Vec<String> = (0..30)
        .map(|i| format!("{i:02}-{}", "x".repeat(90)))
        .collect();
    let mut refs: Vec<&str> = values.iter().map(String::as_str).collect();
    refs.push(TOKEN);
    dns.set_txt(CHALLENGE, &refs);
    let v = dns_validator(&dns);
    assert!(v.check_txt(CHALLENGE, TOKEN).await.passed());
    assert!(
        dns.tcp_query_count() >= 1,
        "the truncated answer was not retried over TCP"
    );
}

#[tokio::test]
async fn servfail_and_timeout_are_reported() {
    let dns = DnsServer::start().await;
    dns.set_servfail(CHALLENGE);
    let v = validator(&dns, 80, false, Duration::from_millis(400));
    assert_failed(
        &v.check_txt(CHALLENGE, TOKEN).await,
        "SERVFAIL looking up TXT for _acme-challenge.www.example.com",
    );
    dns.clear_servfail(CHALLENGE);
    dns.set_txt(CHALLENGE, &[TOKEN]);
    dns.set_delay(CHALLENGE, Duration::from_secs(3));
    let started = Instant::now();
    assert_failed(
        &v.check_txt(CHALLENGE, TOKEN).await,
        "timed out after 400 ms looking up TXT for _acme-challenge.www.example.com",
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn invalid_name_is_a_failure_not_a_panic() {
    let dns = DnsServer::start().await;
    let v = dns_validator(&dns);
    assert_failed_containing(&v.check_txt("", TOKEN).await, "not a valid DNS name");
    let long = format!("{}.example.com", "a".repeat(70));
    assert_failed_containing(&v.check_txt(&long, TOKEN).await, "not a valid DNS name");
}

// ---- CNAME ----

#[tokio::test]
async fn cname_delegation_checks() {
    let dns = DnsServer::start().await;
    let target = "www.example.com.z1.dcv.zonecert.test";
    let v = dns_validator(&dns);
    assert_failed(
        &v.check_cname(CHALLENGE, target).await,
        "no CNAME record at _acme-challenge.www.example.com (NXDOMAIN)",
    );
    dns.set_cname(CHALLENGE, target);
    assert!(v.check_cname(CHALLENGE, target).await.passed());
    assert!(
        v.check_cname(CHALLENGE, "WWW.example.com.z1.dcv.zonecert.test.")
            .await
            .passed()
    );
    dns.set_cname(CHALLENGE, "elsewhere.example.net");
    assert_failed(
        &v.check_cname(CHALLENGE, target).await,
        "CNAME _acme-challenge.www.example.com points to elsewhere.example.net, \
         expected www.example.com.z1.dcv.zonecert.test",
    );
}

#[tokio::test]
async fn cname_conflicting_txt_is_reported() {
    let dns = DnsServer::start().await;
    let target = "www.example.com.z1.dcv.zonecert.test";
    dns.set_txt(CHALLENGE, &["left-over-token"]);
    let v = dns_validator(&dns);
    assert_failed(
        &v.check_cname(CHALLENGE, target).await,
        "no CNAME at _acme-challenge.www.example.com: it has a TXT record, which conflicts \
         with delegating it to www.example.com.z1.dcv.zonecert.test (delete the TXT and add the CNAME)",
    );
    dns.set_a(CHALLENGE, Ipv4Addr::new(192, 0, 2, 7));
    dns.set_txt(CHALLENGE, &[]);
    assert_failed_containing(
        &v.check_cname(CHALLENGE, target).await,
        "no CNAME record at _acme-challenge.www.example.com (the name exists with other records)",
    );
}

// ---- HTTP ----

const PATH: &str = "/.well-known/acme-challenge/xyz";
const URL: &str = "http://www.example.com/.well-known/acme-challenge/xyz";

struct HttpSetup {
    dns: DnsServer,
    origin: HttpOrigin,
    v: Validator,
}

async fn http_setup(timeout: Duration) -> HttpSetup {
    let dns = DnsServer::start().await;
    let origin = HttpOrigin::start().await;
    dns.set_a("www.example.com", Ipv4Addr::LOCALHOST);
    let v = validator(&dns, origin.port(), true, timeout);
    HttpSetup { dns, origin, v }
}

#[tokio::test]
async fn http_ok_and_trailing_whitespace_ok() {
    let s = http_setup(Duration::from_secs(2)).await;
    s.origin.set_body(PATH, 200, "token.thumbprint");
    assert_eq!(
        s.v.check_http(URL, "token.thumbprint").await,
        CheckOutcome::Passed
    );
    s.origin.set_body(PATH, 200, "token.thumbprint \r\n\t\n");
    assert_eq!(
        s.v.check_http(URL, "token.thumbprint").await,
        CheckOutcome::Passed
    );
    // Leading whitespace is not trimmed.
    s.origin.set_body(PATH, 200, " token.thumbprint");
    assert_failed(
        &s.v.check_http(URL, "token.thumbprint").await,
        &format!(
            "the answer from {URL} does not match the expected value (got \" token.thumbprint\")"
        ),
    );
    let requests = s.origin.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].path, PATH);
    assert_eq!(requests[0].host.as_deref(), Some("www.example.com"));
}

#[tokio::test]
async fn http_404_and_other_statuses() {
    let s = http_setup(Duration::from_secs(2)).await;
    assert_failed(
        &s.v.check_http(URL, "x").await,
        &format!("HTTP 404 from {URL}"),
    );
    s.origin.set_body(PATH, 500, "x");
    assert_failed(
        &s.v.check_http(URL, "x").await,
        &format!("HTTP 500 from {URL}"),
    );
    s.origin.set_redirect(PATH, 303, "/other");
    assert_failed(
        &s.v.check_http(URL, "x").await,
        &format!("HTTP 303 redirect from {URL} is not followed (only 301, 302, 307 and 308 are)"),
    );
}

#[tokio::test]
async fn http_oversized_body_is_refused() {
    let s = http_setup(Duration::from_secs(2)).await;
    s.origin.set_large_body(PATH, 129);
    assert_failed(
        &s.v.check_http(URL, &"a".repeat(129)).await,
        &format!("the answer from {URL} is longer than 128 bytes, so it is not the expected value"),
    );
    // Exactly 128 bytes is fine; a megabyte is refused without reading it all.
    s.origin.set_large_body(PATH, 128);
    assert!(s.v.check_http(URL, &"a".repeat(128)).await.passed());
    s.origin.set_large_body(PATH, 1 << 20);
    assert_failed_containing(&s.v.check_http(URL, "a").await, "longer than 128 bytes");
}

#[tokio::test]
async fn http_redirect_chain_is_followed_up_to_ten() {
    let s = http_setup(Duration::from_secs(3)).await;
    let port = s.origin.port();
    s.dns.set_a("other.example.net", Ipv4Addr::LOCALHOST);
    // 10 redirects, alternating hosts, relative and absolute, all four statuses.
    let statuses = [301, 302, 307, 308];
    for i in 0..10 {
        let from = if i == 0 {
            PATH.to_owned()
        } else {
            format!("/hop/{i}")
        };
        let to = if i % 2 == 0 {
            format!("http://other.example.net:{port}/hop/{}", i + 1)
        } else {
            format!("/hop/{}", i + 1)
        };
        s.origin.set_redirect(&from, statuses[i % 4], &to);
    }
    s.origin.set_body("/hop/10", 200, "done");
    assert!(s.v.check_http(URL, "done").await.passed());
    let hosts: Vec<_> = s
        .origin
        .requests()
        .into_iter()
        .map(|r| r.host.unwrap_or_default())
        .collect();
    assert_eq!(hosts.len(), 11);
    assert_eq!(hosts[1], "other.example.net");

    // One more hop is one too many.
    s.origin.set_redirect("/hop/10", 302, "/hop/11");
    s.origin.set_body("/hop/11", 200, "done");
    assert_failed_containing(
        &s.v.check_http(URL, "done").await,
        &format!("too many redirects: more than 10 starting at {URL}"),
    );
}

#[tokio::test]
async fn http_redirect_to_wrong_port_or_scheme_or_ip_is_refused() {
    let s = http_setup(Duration::from_secs(2)).await;
    let port = s.origin.port();
    s.origin
        .set_redirect(PATH, 302, "http://www.example.com:8080/x");
    assert_failed(
        &s.v.check_http(URL, "x").await,
        &format!(
            "redirect from {URL} to http://www.example.com:8080/x uses port 8080; \
             only ports {port} and 1 are followed"
        ),
    );
    s.origin.set_redirect(PATH, 302, "ftp://www.example.com/x");
    assert_failed(
        &s.v.check_http(URL, "x").await,
        &format!(
            "redirect from {URL} to ftp://www.example.com/x uses the \"ftp\" scheme; only http and https are followed"
        ),
    );
    s.origin
        .set_redirect(PATH, 302, &format!("http://127.0.0.1:{port}/x"));
    assert_failed_containing(&s.v.check_http(URL, "x").await, "names an IP address");
    // https goes to the configured https port (1 here), where nothing listens.
    s.origin
        .set_redirect(PATH, 302, "https://www.example.com/x");
    assert_failed_containing(
        &s.v.check_http(URL, "x").await,
        "cannot connect to 127.0.0.1:1",
    );
}

#[tokio::test]
async fn http_slow_origin_times_out() {
    let s = http_setup(Duration::from_millis(500)).await;
    s.origin.set_body(PATH, 200, "late");
    s.origin.set_delay(PATH, Duration::from_secs(3));
    let started = Instant::now();
    assert_failed(
        &s.v.check_http(URL, "late").await,
        &format!(
            "timed out after 500 ms waiting for an answer to {URL} from 127.0.0.1:{}",
            s.origin.port()
        ),
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn http_private_address_refused_by_default() {
    let dns = DnsServer::start().await;
    let origin = HttpOrigin::start().await;
    origin.set_body(PATH, 200, "x");
    dns.set_a("www.example.com", Ipv4Addr::LOCALHOST);
    let strict = validator(&dns, origin.port(), false, Duration::from_secs(2));
    assert_failed(
        &strict.check_http(URL, "x").await,
        "refusing to connect to www.example.com at 127.0.0.1 (loopback address): \
         private and reserved addresses are not allowed",
    );
    assert!(origin.requests().is_empty());
    let lenient = validator(&dns, origin.port(), true, Duration::from_secs(2));
    assert!(lenient.check_http(URL, "x").await.passed());
}

#[tokio::test]
async fn http_host_without_address() {
    let s = http_setup(Duration::from_secs(2)).await;
    assert_failed(
        &s.v.check_http("http://missing.example.com/x", "x").await,
        "no A or AAAA record at missing.example.com (NXDOMAIN)",
    );
    s.dns.set_servfail("broken.example.com");
    assert_failed(
        &s.v.check_http("http://broken.example.com/x", "x").await,
        "SERVFAIL looking up AAAA for broken.example.com",
    );
    assert_failed_containing(
        &s.v.check_http("https://www.example.com/x", "x").await,
        "starts on an http:// URL",
    );
}

fn ipv6_loopback_available() -> bool {
    std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

#[tokio::test]
async fn http_tries_ipv6_first_then_ipv4() {
    if !ipv6_loopback_available() {
        eprintln!("skipped: no ::1 on this machine");
        return;
    }
    let dns = DnsServer::start().await;
    let v4 = HttpOrigin::start().await;
    // The IPv6 origin on the same port number as the IPv4 one, when that port is free on ::1.
    let Some(v6) = (async {
        let listener = std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, v4.port())).ok()?;
        drop(listener);
        Some(HttpOrigin::start_on(IpAddr::V6(Ipv6Addr::LOCALHOST), v4.port()).await)
    })
    .await
    else {
        eprintln!("skipped: port taken on ::1");
        return;
    };
    v4.set_body(PATH, 200, "x");
    v6.set_body(PATH, 200, "x");
    dns.set_a("www.example.com", Ipv4Addr::LOCALHOST);
    dns.set_aaaa("www.example.com", Ipv6Addr::LOCALHOST);
    let v = validator(&dns, v4.port(), true, Duration::from_secs(2));
    assert!(v.check_http(URL, "x").await.passed());
    assert_eq!(v6.requests().len(), 1, "IPv6 was not tried first");
    assert!(v4.requests().is_empty());

    // IPv6 refuses connections: IPv4 is tried once.
    drop(v6);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(v.check_http(URL, "x").await.passed());
    assert_eq!(v4.requests().len(), 1);

    // Both down: the failure names both attempts.
    drop(v4);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_failed_containing(
        &v.check_http(URL, "x").await,
        "(after IPv6 failed: cannot connect to [::1]:",
    );
}

// ---- CAA ----

#[tokio::test]
async fn caa_absent_allows_any_ca() {
    let dns = DnsServer::start().await;
    dns.set_a("app.example.com", Ipv4Addr::new(192, 0, 2, 1));
    let v = dns_validator(&dns);
    assert!(
        v.check_caa("app.example.com", "letsencrypt.org")
            .await
            .passed()
    );
}

#[tokio::test]
async fn caa_allows_or_forbids_and_is_inherited() {
    let dns = DnsServer::start().await;
    dns.set_caa(
        "example.com",
        &[
            (0, "issue", "pki.goog"),
            (0, "iodef", "mailto:x@example.com"),
        ],
    );
    dns.set_a("app.example.com", Ipv4Addr::new(192, 0, 2, 1));
    let v = dns_validator(&dns);
    assert!(v.check_caa("app.example.com", "pki.goog").await.passed());
    assert_failed(
        &v.check_caa("app.example.com", "letsencrypt.org").await,
        "CAA at example.com allows only pki.goog, not letsencrypt.org, to issue for app.example.com",
    );
    // The closest name with CAA wins.
    dns.set_caa(
        "app.example.com",
        &[(0, "issue", "letsencrypt.org; validationmethods=dns-01")],
    );
    assert!(
        v.check_caa("app.example.com", "letsencrypt.org")
            .await
            .passed()
    );
    assert!(!v.check_caa("app.example.com", "pki.goog").await.passed());
    // An empty issuer forbids everyone.
    dns.set_caa("app.example.com", &[(0, "issue", ";")]);
    assert_failed(
        &v.check_caa("app.example.com", "letsencrypt.org").await,
        "CAA at app.example.com forbids issuance by any CA for app.example.com",
    );
}

#[tokio::test]
async fn caa_issuewild_applies_to_wildcards_only() {
    let dns = DnsServer::start().await;
    dns.set_caa(
        "example.com",
        &[
            (0, "issue", "letsencrypt.org"),
            (0, "issuewild", "sectigo.com"),
        ],
    );
    let v = dns_validator(&dns);
    assert!(v.check_caa("example.com", "letsencrypt.org").await.passed());
    assert!(v.check_caa("*.example.com", "sectigo.com").await.passed());
    assert_failed(
        &v.check_caa("*.example.com", "letsencrypt.org").await,
        "CAA issuewild at example.com allows only sectigo.com, not letsencrypt.org, to issue for *.example.com",
    );
    // Without issuewild, issue governs wildcards too.
    dns.set_caa("example.com", &[(0, "issue", "letsencrypt.org")]);
    assert!(
        v.check_caa("*.example.com", "letsencrypt.org")
            .await
            .passed()
    );
    assert!(!v.check_caa("*.example.com", "sectigo.com").await.passed());
}

#[tokio::test]
async fn caa_critical_unknown_property_blocks() {
    let dns = DnsServer::start().await;
    dns.set_caa(
        "example.com",
        &[(0, "issue", "letsencrypt.org"), (128, "tbs", "x")],
    );
    let v = dns_validator(&dns);
    assert_failed(
        &v.check_caa("example.com", "letsencrypt.org").await,
        "CAA at example.com has an unknown critical property \"tbs\", which forbids issuance",
    );
    // Not critical: ignored.
    dns.set_caa(
        "example.com",
        &[(0, "issue", "letsencrypt.org"), (0, "tbs", "x")],
    );
    assert!(v.check_caa("example.com", "letsencrypt.org").await.passed());
}

#[tokio::test]
async fn caa_servfail_blocks() {
    let dns = DnsServer::start().await;
    dns.set_servfail("app.example.com");
    let v = dns_validator(&dns);
    assert_failed(
        &v.check_caa("app.example.com", "letsencrypt.org").await,
        "SERVFAIL looking up CAA for app.example.com",
    );
    // A failure higher up blocks as well.
    dns.clear_servfail("app.example.com");
    dns.set_servfail("example.com");
    assert_failed(
        &v.check_caa("app.example.com", "letsencrypt.org").await,
        "SERVFAIL looking up CAA for example.com",
    );
    // The names are asked at once, but decided closest first, as asking in turn would:
    // a record set below a failure decides, and a failure below a record set refuses.
    dns.set_caa("app.example.com", &[(0, "issue", "letsencrypt.org")]);
    assert!(
        v.check_caa("app.example.com", "letsencrypt.org")
            .await
            .passed()
    );
    dns.clear_servfail("example.com");
    dns.set_caa("example.com", &[(0, "issue", "letsencrypt.org")]);
    dns.set_servfail("app.example.com");
    assert_failed(
        &v.check_caa("app.example.com", "letsencrypt.org").await,
        "SERVFAIL looking up CAA for app.example.com",
    );
}

#[tokio::test]
async fn http_redirect_to_https_is_followed_without_verifying_the_certificate() {
    let dns = DnsServer::start().await;
    let plain = HttpOrigin::start().await;
    let tls = HttpOrigin::start_tls().await;
    dns.set_a("www.example.com", Ipv4Addr::LOCALHOST);
    dns.set_a("secure.example.com", Ipv4Addr::LOCALHOST);
    let v = Validator::new(DcvConfig {
        resolvers: vec![dns.addr()],
        http_port: plain.port(),
        https_port: tls.port(),
        allow_private_addresses: true,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    // http -> https (default port, i.e. the configured https port) -> back to http.
    plain.set_redirect(PATH, 301, "https://secure.example.com/token?x=1");
    tls.set_redirect("/token", 302, "http://www.example.com/final");
    plain.set_body("/final", 200, "x");
    assert_eq!(v.check_http(URL, "x").await, CheckOutcome::Passed);
    let over_tls = tls.requests();
    assert_eq!(over_tls.len(), 1);
    assert_eq!(over_tls[0].path, "/token?x=1");
    assert_eq!(over_tls[0].host.as_deref(), Some("secure.example.com"));

    tls.set_body("/token", 200, "x\n");
    assert_eq!(v.check_http(URL, "x").await, CheckOutcome::Passed);

    // Plain HTTP spoken to the TLS port fails the exchange, with the URL in the reason.
    plain.set_redirect(
        PATH,
        302,
        &format!("http://www.example.com:{}/token", tls.port()),
    );
    assert_failed_containing(
        &v.check_http(URL, "x").await,
        &format!("from 127.0.0.1:{}: invalid HTTP version parsed", tls.port()),
    );
}

#[tokio::test]
async fn dropped_dns_server_stops_answering() {
    let dns = DnsServer::start().await;
    dns.set_txt(CHALLENGE, &[TOKEN]);
    let v = validator(&dns, 80, false, Duration::from_millis(300));
    assert!(v.check_txt(CHALLENGE, TOKEN).await.passed());
    drop(dns);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_failed(
        &v.check_txt(CHALLENGE, TOKEN).await,
        "timed out after 300 ms looking up TXT for _acme-challenge.www.example.com",
    );
}
