//! The HTTP edge under attack, against a real server on 127.0.0.1:0 (issue 11): token
//! scope on zone creation, rate-limit keys, `retry=true` amplification, malformed
//! requests answered in the envelope.

#![allow(clippy::unwrap_used)] // test harness: a failed setup should panic loudly

use serde_json::{Value, json};
use zonecert_server::admin::dev;
use zonecert_testkit::{TestServer, envelope_codes as codes};

#[tokio::test]
async fn a_zone_scoped_token_cannot_create_zones() {
    let s = TestServer::builder().config(|_| {}).await;
    let scoped = s.create_token(&["Zone Write"], &[dev::ZONE_ID]).await;
    let (st, body) = s
        .call(
            "POST",
            "/zones",
            Some(&scoped),
            Some(json!({"name": "squatted.example"})),
        )
        .await;
    assert_eq!((st, codes(&body)), (403, vec![9109]), "{body}");
    let (_, body) = s
        .call("GET", "/zones?name=squatted.example", Some(s.token()), None)
        .await;
    assert_eq!(body["result_info"]["total_count"], 0, "nothing was created");
    // An unscoped token with Zone Write still creates zones.
    let unscoped = s.create_token(&["Zone Write"], &[]).await;
    let (st, body) = s
        .call(
            "POST",
            "/zones",
            Some(&unscoped),
            Some(json!({"name": "owned.example"})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
}

/// Sends `request` on a fresh connection and reads the answer until the server closes:
/// (status, lower-cased head, body).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer before the whole request is sent (a refused head): what it
    // sends back is read either way.
    let _ = tcp.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("the server neither answered nor closed");
    if let Err(e) = read {
        assert!(!answer.is_empty(), "no answer: {e}");
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head[9..12].parse().unwrap();
    let body_start = answer.len() - body.len();
    (
        status,
        head.to_ascii_lowercase(),
        answer[body_start..].to_vec(),
    )
}

/// An answer in the envelope: JSON, `success: false`, its codes.
fn envelope_codes(head: &str, body: &[u8]) -> Vec<u64> {
    assert!(head.contains("content-type: application/json"), "{head}");
    let body: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    codes(&body)
}

#[tokio::test]
async fn malformed_requests_are_answered_in_the_envelope() {
    let s = TestServer::builder().config(|_| {}).await;
    let addr = s.addr();
    let auth = format!("Authorization: Bearer {}\r\n", s.token());

    // An id that is not UTF-8 once decoded names nothing: 404, like any malformed id.
    let (status, head, body) = raw(
        addr,
        format!("GET /client/v4/zones/%ff/ssl/verification HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(
        (status, envelope_codes(&head, &body)),
        (404, vec![7003, 7000])
    );
    let (status, head, body) = raw(
        addr,
        format!(
            "GET /client/v4/zones/{}/ssl/certificate_packs/%ff%fe HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n",
            dev::ZONE_ID
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(
        (status, envelope_codes(&head, &body)),
        (404, vec![7003, 7000])
    );

    // A 100 kB path.
    let long = format!(
        "GET /client/v4/zones/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(100_000)
    );
    let (status, head, body) = raw(addr, long.as_bytes()).await;
    assert_eq!((status, envelope_codes(&head, &body)), (414, vec![1008]));

    // 2,000 headers.
    let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, head, body) = raw(
        addr,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!((status, envelope_codes(&head, &body)), (431, vec![1009]));

    // Bytes no header may hold: a control character in a value, a space in a name.
    for bad in [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n"[..],
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n"[..],
        &b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n"[..],
    ] {
        let (status, head, body) = raw(addr, bad).await;
        assert_eq!(
            (status, envelope_codes(&head, &body)),
            (400, vec![1007]),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }

    // A refused head pipelined behind a good request is answered after it.
    let both =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nBad Name: v\r\n\r\n";
    let (status, _, rest) = raw(addr, both).await;
    assert_eq!(status, 200);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("HTTP/1.1 400 Bad Request"), "{rest}");
    assert!(rest.contains("\"code\":1007"), "{rest}");
}

/// Reads until the server closes the connection (or fails it); panics if it stays
/// open for `limit`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, limit: std::time::Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, tcp.read_to_end(&mut got))
        .await
        .expect("the server kept the connection open");
    got
}

#[tokio::test]
async fn idle_slow_header_and_slow_body_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let secs = std::time::Duration::from_secs;
    let s = TestServer::builder()
        .config(|c| {
            c.idle_timeout = secs(1);
            c.header_read_timeout = secs(1);
            c.body_read_timeout = secs(1);
        })
        .await;
    let addr = s.addr();
    // Bounds far above the timeouts: they only stop a test that would hang.
    let cap = secs(30);

    // A connection that never sends anything.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut idle, cap).await.is_empty());

    // A kept-alive connection that sends nothing after its first request.
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut kept, cap).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "answered, then closed");

    // Slowloris: a header line every 100 ms, never the end of the head.
    let slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = slow.into_split();
    let trickle = tokio::spawn(async move {
        let _ = writer.write_all(b"GET /healthz HTTP/1.1\r\n").await;
        for i in 0.. {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if writer
                .write_all(format!("X-{i}: v\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let closed = tokio::time::timeout(
        cap,
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut got),
    )
    .await;
    assert!(
        closed.is_ok(),
        "a head trickling in forever keeps its connection"
    );
    trickle.abort();

    // A body that never arrives whole: 408 in the envelope, then closed.
    let mut body = tokio::net::TcpStream::connect(addr).await.unwrap();
    body.write_all(
        format!(
            "POST /client/v4/zones HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"name\":",
            s.token()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let answer = closed_within(&mut body, cap).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":1010"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );

    // Requests at a normal pace are served as before.
    let (st, _) = s.call("GET", "/zones", Some(s.token()), None).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn rate_limits_follow_the_authenticated_identity_and_failures_the_address() {
    let s = TestServer::builder()
        .config(|c| {
            c.rate_limit = Some(zonecert_server::config::RateLimit {
                requests: 3,
                window: std::time::Duration::from_secs(300),
            })
        })
        .await;
    let url = s.url(&format!("/zones/{}/ssl/verification", dev::ZONE_ID));
    // One token written four ways is one bucket of three.
    let mut statuses = Vec::new();
    for scheme in ["Bearer ", "bearer ", "BEARER ", "Bearer   "] {
        let r = s
            .http()
            .get(&url)
            .header("Authorization", format!("{scheme}{}", s.token()))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);

    // Someone who knows the user's e-mail but not the key: refused, then limited by
    // their own address, never spending the user's bucket.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = s
            .http()
            .get(&url)
            .header("X-Auth-Email", dev::USER_EMAIL)
            .header("X-Auth-Key", "0123456789abcdef0123456789abcdef01234")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [403, 403, 403, 429, 429]);
    // The user, e-mail re-cased or not, has a bucket of their own, still full.
    let mut statuses = Vec::new();
    for email in [
        dev::USER_EMAIL.to_owned(),
        dev::USER_EMAIL.to_ascii_uppercase(),
        dev::USER_EMAIL.to_owned(),
        dev::USER_EMAIL.to_ascii_uppercase(),
    ] {
        let r = s
            .http()
            .get(&url)
            .header("X-Auth-Email", email)
            .header("X-Auth-Key", dev::USER_KEY)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
}

#[tokio::test]
async fn retry_storms_do_not_multiply_checks() {
    use zonecert_server::model::ZoneId;
    let dns = zonecert_testkit::DnsServer::start().await;
    let clock = zonecert_server::clock::ManualClock::new(1_800_000_000);
    let s = TestServer::builder()
        .clock(clock.clone())
        .config(|c| {
            c.lifecycle = true;
            c.dcv_resolvers = vec![dns.addr()];
            c.poll_interval = std::time::Duration::from_millis(100);
            c.retry_wait = std::time::Duration::from_secs(20);
            c.rate_limit = Some(zonecert_server::config::RateLimit {
                requests: 200,
                // Refills too slowly to show within the test.
                window: std::time::Duration::from_secs(10_000_000),
            });
        })
        .await;
    let (st, zone) = s
        .call(
            "POST",
            "/zones",
            Some(s.token()),
            Some(json!({"name": "amp.example"})),
        )
        .await;
    assert_eq!(st, 200, "{zone}");
    let zone = zone["result"]["id"].as_str().unwrap().to_owned();
    for prefix in ["a", "b"] {
        let hosts: Vec<String> = std::iter::once("amp.example".to_owned())
            .chain((1..30).map(|i| format!("{prefix}{i}.amp.example")))
            .collect();
        let (st, body) = s
            .call(
                "POST",
                &format!("/zones/{zone}/ssl/certificate_packs/order"),
                Some(s.token()),
                Some(
                    json!({"type": "advanced", "hosts": hosts, "validation_method": "txt",
                            "validity_days": 90, "certificate_authority": "google"}),
                ),
            )
            .await;
        assert_eq!(st, 200, "{body}");
    }
    // A read-only token, with a bucket of its own (200 requests).
    let reader = s
        .create_token(&["SSL and Certificates Read"], &[&zone])
        .await;
    let retry = || async {
        let r = s
            .http()
            .get(s.url(&format!("/zones/{zone}/ssl/verification?retry=true")))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    let zone_id = ZoneId::parse(&zone).unwrap();
    let attempts = || async {
        let mut a: Vec<u32> = s
            .store()
            .packs_of_zone(&zone_id)
            .await
            .unwrap()
            .iter()
            .flat_map(|p| p.hosts.iter().map(|h| h.check.attempts))
            .collect();
        a.sort();
        a
    };
    let checked = |a: &[u32]| a.iter().map(|n| u64::from(*n)).sum::<u64>();
    // The order's own checks (the lifecycle's, made before any retry: the records are
    // not there, so each fails once). Waited for, so that what the retries cause does
    // not depend on whether a retry arrived before or during them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while attempts().await != vec![1; 60] {
        assert!(
            std::time::Instant::now() < deadline,
            "the order's own checks did not run: {:?}",
            attempts().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A check the lifecycle ran on its own does not answer a retry: the first retry
    // checks again, at most 50 hosts, and waits for them.
    retry().await;
    let first = attempts().await;
    assert_eq!(first.iter().filter(|a| **a == 2).count(), 50, "{first:?}");
    assert_eq!(first.iter().filter(|a| **a == 1).count(), 10, "{first:?}");
    // Retried again at once: every host was just checked, nothing is checked again.
    retry().await;
    retry().await;
    assert_eq!(attempts().await, first, "a retry storm re-checked hosts");
    // Later (the coalescing window over), a retry makes due at most 50 hosts again, each
    // counted against the caller.
    clock.advance(10);
    retry().await;
    let after = attempts().await;
    assert_eq!(checked(&after), checked(&first) + 50, "{after:?}");
    let r = s
        .http()
        .get(s.url(&format!("/zones/{zone}/ssl/verification")))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    // 200, less 5 requests, less 100 checks.
    assert_eq!(r.headers()["x-ratelimit-remaining"], "95");
}

/// A refused head that follows a request body on the same connection is answered in the
/// envelope after that request's answer: behind a chunked body in the same packet, and
/// behind a `Content-Length` body whose rest arrives (with the bad head) while the
/// request is in flight. Before the connection layer followed bodies to their end, both
/// bad heads reached hyper unchecked and got its empty refusal.
#[tokio::test]
async fn a_bad_head_after_a_body_is_refused_in_the_envelope() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::builder().config(|_| {}).await;
    let addr = s.addr();
    let auth = format!("Authorization: Bearer {}\r\n", s.token());
    let bad = "GET /healthz HTTP/1.1\r\nBad Name: v\r\n\r\n";

    // Reads until the server closes; the answers as text.
    async fn answers(tcp: &mut tokio::net::TcpStream) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tcp.read_to_end(&mut answer),
        )
        .await
        .expect("the server neither answered nor closed")
        .ok();
        String::from_utf8_lossy(&answer).into_owned()
    }
    fn check(answers: &str) {
        let first = answers.find("HTTP/1.1 200 OK").expect(answers);
        let second = answers.find("HTTP/1.1 400 Bad Request").expect(answers);
        assert!(first < second, "{answers}");
        let refusal = &answers[second..];
        assert!(
            refusal
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{refusal}"
        );
        assert!(refusal.contains("\"code\":1007"), "{refusal}");
    }

    // A chunked body (with a chunk extension and a trailer) and the bad head, at once.
    let body = r#"{"name":"chunked-edge.example"}"#;
    let (a, b) = body.split_at(10);
    let chunked = format!(
        "POST /client/v4/zones HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nX-Trailer: t\r\n\r\n{bad}",
        a.len(),
        b.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(chunked.as_bytes()).await.unwrap();
    check(&answers(&mut tcp).await);

    // A body in two parts: the second, with the bad head behind it, sent once the request
    // is in flight (its handler is waiting for the rest of the body).
    let body = r#"{"name":"length-edge.example"}"#;
    let (a, b) = body.split_at(10);
    let head = format!(
        "POST /client/v4/zones HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{a}",
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tcp.write_all(format!("{b}{bad}").as_bytes()).await.unwrap();
    check(&answers(&mut tcp).await);
}
