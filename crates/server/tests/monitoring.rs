//! Monitoring end to end: `/metrics` scraped before and after a lifecycle run (a txt pack
//! to active on the loopback DNS), parsed with a Prometheus text-format parser;
//! `/readyz` with the lifecycle running and stopped; `/metrics` on `--metrics-listen`
//! without authentication and refused without a credential on the API listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use zonecert_server::App;
use zonecert_server::clock::{ManualClock, SystemClock};
use zonecert_server::config::Config;
use zonecert_server::model::{DcvRecord, PackId, PackState, ZoneId};
use zonecert_testkit::{DnsServer, TestServer, envelope_codes};

const T0: i64 = 1_800_000_000;

/// One scrape, parsed: every sample by its name and sorted labels.
#[derive(Debug)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    async fn get(http: &reqwest::Client, url: &str, token: Option<&str>) -> Scrape {
        let mut req = http.get(url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = resp.text().await.unwrap();
        Scrape::parse(&text)
    }

    fn parse(text: &str) -> Scrape {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("the Prometheus text parses");
        // Every sample line parsed (the parser skips a line it cannot read): each
        // histogram's `_bucket` lines are one sample of it, every other line one sample.
        let sample_lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let bucket_lines = sample_lines
            .iter()
            .filter(|l| l.contains("_bucket{"))
            .count();
        let (histograms, buckets) =
            scrape
                .samples
                .iter()
                .fold((0, 0), |(h, b), s| match &s.value {
                    prometheus_parse::Value::Histogram(buckets) => (h + 1, b + buckets.len()),
                    _ => (h, b),
                });
        assert_eq!(buckets, bucket_lines, "{text}");
        assert_eq!(
            scrape.samples.len(),
            sample_lines.len() - bucket_lines + histograms,
            "{text}"
        );
        assert!(!scrape.samples.is_empty());
        let mut samples = BTreeMap::new();
        for sample in scrape.samples {
            let mut labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            let key = format!("{}{{{}}}", sample.metric, labels.join(","));
            match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => {
                    samples.insert(key, v);
                }
                // Their `_count` and `_sum` samples are read instead.
                prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => {}
            }
        }
        if std::env::var_os("SHOW_SCRAPE").is_some() {
            eprintln!("{text}\n{samples:#?}");
        }
        Scrape(samples)
    }

    /// The value of `metric{labels}` (labels sorted, `k=v` joined by commas), 0 if absent.
    fn value(&self, metric: &str, labels: &str) -> f64 {
        self.0
            .get(&format!("{metric}{{{labels}}}"))
            .copied()
            .unwrap_or(0.0)
    }
}

fn config(c: &mut Config) {
    c.dcv_allow_private_addresses = true;
    c.dcv_timeout = Duration::from_secs(2);
    c.poll_interval = Duration::from_millis(100);
    c.retry_coalesce = Duration::ZERO;
}

/// A txt pack from order to active, scraped before the records exist and after: each
/// counter moved by what the run did, the gauges describe the stored packs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_txt_pack_from_order_to_active() {
    let dns = DnsServer::start().await;
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::builder()
        .data_dir(dir.path())
        .clock(clock.clone())
        .lifecycle(true)
        .resolvers([dns.addr()])
        .dev_seed(false)
        .config(config)
        .await;
    let store = server.store().clone();
    let zone = zonecert_server::admin::create_zone(&store, "example.org", None, false, T0)
        .await
        .unwrap();
    let token = zonecert_server::admin::create_token(
        &store,
        "ops",
        &["SSL and Certificates Write".to_string()],
        &[],
        T0,
    )
    .await
    .unwrap()
    .secret;
    let http = server.http();
    let zone_url = server.url(&format!("/zones/{}", zone.id.as_str()));
    let metrics_url = format!("http://{}/metrics", server.addr());

    let ordered: Value = http
        .post(format!("{zone_url}/ssl/certificate_packs/order"))
        .bearer_auth(&token)
        .json(
            &json!({"type": "advanced", "hosts": ["example.org", "www.example.org"],
            "validation_method": "txt", "validity_days": 90,
            "certificate_authority": "lets_encrypt"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = PackId::parse(ordered["result"]["id"].as_str().unwrap()).unwrap();
    let verification = |retry: bool| {
        let url = format!("{zone_url}/ssl/verification?retry={retry}");
        let token = token.clone();
        async move {
            let resp = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(resp.status(), 200);
        }
    };
    // The first checks find nothing; the clock stands still, so none runs again until
    // the retry below.
    verification(true).await;
    let before = Scrape::get(http, &metrics_url, Some(&token)).await;
    assert_eq!(
        before.value("zonecert_packs", "status=pending_validation"),
        1.0
    );
    assert_eq!(before.value("zonecert_lifecycle_due_packs", ""), 0.0);

    let zone_id = ZoneId::parse(zone.id.as_str()).unwrap();
    let pack = store.pack(&zone_id, &id).await.unwrap().unwrap();
    for host in &pack.hosts {
        let DcvRecord::Txt { name, value } = &host.record else {
            panic!("not txt: {:?}", host.record)
        };
        dns.set_txt(name, &[value.as_str()]);
    }
    verification(true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pack = store.pack(&zone_id, &id).await.unwrap().unwrap();
        if pack.state == PackState::Active {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pack:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Counted after the write that made the pack active: a scrape after it sees it.
    let after = Scrape::get(http, &metrics_url, Some(&token)).await;
    let moved =
        |metric: &str, labels: &str| after.value(metric, labels) - before.value(metric, labels);

    // Both hosts checked once more, and passed; CAA once for the pack.
    assert_eq!(
        moved("zonecert_dcv_checks_total", "method=txt,outcome=passed"),
        2.0
    );
    assert_eq!(
        moved("zonecert_dcv_checks_total", "method=txt,outcome=failed"),
        0.0
    );
    assert_eq!(
        moved("zonecert_dcv_checks_total", "method=caa,outcome=passed"),
        1.0
    );
    assert_eq!(
        moved("zonecert_dcv_check_duration_seconds_count", "method=txt"),
        2.0
    );
    assert!(before.value("zonecert_dcv_checks_total", "method=txt,outcome=failed") >= 2.0);
    assert_eq!(moved("zonecert_issuances_total", "ca=lets_encrypt"), 1.0);
    assert_eq!(
        moved("zonecert_issuance_failures_total", "ca=lets_encrypt"),
        0.0
    );
    assert_eq!(moved("zonecert_deployments_total", "outcome=deployed"), 1.0);
    assert_eq!(moved("zonecert_deploy_hook_failures_total", ""), 0.0);
    assert_eq!(
        moved(
            "zonecert_pack_transitions_total",
            "from=pending_validation,to=pending_issuance"
        ),
        1.0
    );
    assert_eq!(
        moved(
            "zonecert_pack_transitions_total",
            "from=pending_deployment,to=active"
        ),
        1.0
    );
    // Requests by route template: the retry above, and the scrape before this one.
    let route = "method=GET,route=/client/v4/zones/:zone_id/ssl/verification,status=200";
    assert_eq!(moved("zonecert_http_requests_total", route), 1.0);
    assert_eq!(
        moved(
            "zonecert_http_requests_total",
            "method=GET,route=/metrics,status=200"
        ),
        1.0
    );
    // The stored packs, as of the scrape.
    assert_eq!(
        after.value("zonecert_packs", "status=pending_validation"),
        0.0
    );
    assert_eq!(after.value("zonecert_packs", "status=active"), 1.0);
    assert_eq!(after.value("zonecert_certificates_active", ""), 1.0);
    let not_after = T0 + 90 * 86_400;
    assert_eq!(
        after.value("zonecert_certificate_earliest_expiry_timestamp_seconds", ""),
        not_after as f64
    );
    assert_eq!(
        after.value("zonecert_certificates_expiring", "within=30d"),
        0.0
    );
    assert_eq!(after.value("zonecert_store_up", ""), 1.0);

    // 61 days on, the certificate expires within 30 days (not 7).
    clock.advance(61 * 86_400);
    let later = Scrape::get(http, &metrics_url, Some(&token)).await;
    assert_eq!(
        later.value("zonecert_certificates_expiring", "within=30d"),
        1.0
    );
    assert_eq!(
        later.value("zonecert_certificates_expiring", "within=7d"),
        0.0
    );
    assert!(
        later.0.contains_key("zonecert_revocations_queued{}"),
        "{later:?}"
    );
    assert_eq!(later.value("zonecert_revocations_queued", ""), 0.0, "none");
    server.shutdown().await.unwrap();

    // The pack deleted on the same data with the lifecycle off: its certificate (an ACME
    // CA's) waits in the revocation queue, and the gauge says so.
    let restart = |lifecycle: bool| {
        TestServer::builder()
            .data_dir(dir.path())
            .clock(clock.clone())
            .lifecycle(lifecycle)
            .resolvers([dns.addr()])
            .dev_seed(false)
            .config(config)
            .start()
    };
    let server = restart(false).await;
    // Only an ACME CA's certificates are queued: this one is marked as ordered from a
    // directory (none is configured here).
    let mut stored = server.store().pack(&zone.id, &id).await.unwrap().unwrap();
    if let Some(certificate) = stored.certificate.as_mut() {
        certificate.acme_directory = Some("https://acme.example/dir".into());
    }
    server.store().update_pack(&mut stored).await.unwrap();
    let metrics_url = format!("http://{}/metrics", server.addr());
    let zone_url = server.url(&format!("/zones/{}", zone.id.as_str()));
    let deleted = server
        .http()
        .delete(format!("{zone_url}/ssl/certificate_packs/{}", id.as_str()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(server.store().queued_revocations().await.unwrap().len(), 1);
    let queued = Scrape::get(server.http(), &metrics_url, Some(&token)).await;
    assert_eq!(queued.value("zonecert_revocations_queued", ""), 1.0);
    server.shutdown().await.unwrap();

    // With the lifecycle on, the queue is worked off (its directory is not configured
    // here: the row is dropped) and the gauge goes back to 0.
    let server = restart(true).await;
    let metrics_url = format!("http://{}/metrics", server.addr());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !server
        .store()
        .queued_revocations()
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue not worked off"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let worked_off = Scrape::get(server.http(), &metrics_url, Some(&token)).await;
    assert!(worked_off.0.contains_key("zonecert_revocations_queued{}"));
    assert_eq!(worked_off.value("zonecert_revocations_queued", ""), 0.0);
    server.shutdown().await.unwrap();
}

/// `--metrics-listen` serves `/metrics` to anyone (and nothing else); the API listener
/// refuses it without a credential, and to a token limited to some zones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listener_is_open_and_the_api_listener_asks_for_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.rate_limit = None;
    let mut app = App::open(config, Arc::new(SystemClock)).await.unwrap();
    let token = app.seed_dev().await.unwrap();
    let store = app.store().clone();
    let scoped = zonecert_server::admin::create_token(
        &store,
        "scoped",
        &["SSL and Certificates Read".to_string()],
        &[zonecert_server::admin::dev::ZONE_ID.to_string()],
        T0,
    )
    .await
    .unwrap()
    .secret;
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (api_addr, metrics_addr) = (api.local_addr().unwrap(), metrics.local_addr().unwrap());
    app.serve_metrics_on(metrics);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.serve(api, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();

    let open = Scrape::get(&http, &format!("http://{metrics_addr}/metrics"), None).await;
    assert_eq!(
        open.value("zonecert_packs", "status=active"),
        1.0,
        "the dev seed's pack"
    );
    let other = http
        .get(format!("http://{metrics_addr}/client/v4/zones"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves nothing else"
    );

    let api_metrics = format!("http://{api_addr}/metrics");
    let refused = http.get(&api_metrics).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(envelope_codes(&body), vec![9106], "{body}");
    let refused = http
        .get(&api_metrics)
        .bearer_auth(&scoped)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let unknown = http
        .get(&api_metrics)
        .bearer_auth("a".repeat(40))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 403);
    Scrape::get(&http, &api_metrics, Some(&token)).await;
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}

/// `/readyz` is 200 while the store answers and the lifecycle runs, 503 in the error
/// envelope once the lifecycle is stopped; `/healthz` stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_not_ready_when_the_lifecycle_is_stopped() {
    let dns = DnsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.dcv_resolvers = vec![dns.addr()];
    let app = App::open(config, Arc::new(SystemClock)).await.unwrap();
    let lifecycle = app.start_lifecycle().unwrap();
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = api.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.serve(api, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["result"]["lifecycle"], "running", "{body}");

    lifecycle.stop().await.unwrap();
    let not_ready = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_ready.status(), 503);
    assert!(not_ready.headers().contains_key("retry-after"));
    let body: Value = not_ready.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(envelope_codes(&body), vec![1012], "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("lifecycle is not running"),
        "{body}"
    );
    let live = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}

/// Every request is counted under the template of the route axum served it by (its
/// `MatchedPath`): a wrong method under the path's template, a path no route matches
/// (a trailing slash, an extra segment) as `unmatched`, an empty path segment still
/// matching a parameter. Sent as raw bytes: an HTTP client would normalise some of
/// these paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_under_the_route_template_axum_matched() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.rate_limit = None;
    let app = App::open(config, Arc::new(SystemClock)).await.unwrap();
    let token = app.seed_dev().await.unwrap();
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = api.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.serve(api, async move {
        let _ = stopped.await;
    }));
    let send = |method: &'static str, path: &'static str| {
        let token = token.clone();
        async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            tcp.read_to_end(&mut answer).await.unwrap();
            let answer = String::from_utf8_lossy(&answer).into_owned();
            answer
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or_else(|| panic!("{method} {path}: {answer}"))
        }
    };
    let verification = "/client/v4/zones/:zone_id/ssl/verification";
    let order = "/client/v4/zones/:zone_id/ssl/certificate_packs/order";
    let cases: [(&str, &str, u16, &str); 14] = [
        (
            "GET",
            "/client/v4/zones/x/ssl/certificate_packs/order",
            405,
            order,
        ),
        (
            "GET",
            "/client/v4/zones//ssl/verification",
            404,
            verification,
        ),
        (
            "GET",
            "/client/v4/zones/{zone_id}/ssl/verification",
            404,
            verification,
        ),
        (
            "DELETE",
            "/client/v4/zones/x/ssl/verification",
            405,
            verification,
        ),
        ("PUT", "/client/v4/zones", 405, "/client/v4/zones"),
        (
            "GET",
            "/client/v4/zones/x/ssl/certificate_packs/quota",
            404,
            "/client/v4/zones/:zone_id/ssl/certificate_packs/quota",
        ),
        ("GET", "/healthz", 200, "/healthz"),
        ("GET", "/client/v4/zones/", 404, "unmatched"),
        ("GET", "/client/v4/zones//", 404, "unmatched"),
        ("GET", "/client/v4/zones/a/b", 404, "unmatched"),
        (
            "GET",
            "/client/v4/zones/x/ssl/verification/",
            404,
            "unmatched",
        ),
        ("GET", "/healthz/", 404, "unmatched"),
        ("GET", "//healthz", 404, "unmatched"),
        ("GET", "/nowhere", 404, "unmatched"),
    ];
    let http = reqwest::Client::new();
    let metrics = format!("http://{addr}/metrics");
    let before = Scrape::get(&http, &metrics, Some(&token)).await;
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for (method, path, status, route) in cases {
        assert_eq!(send(method, path).await, status, "{method} {path}");
        *expected
            .entry(format!("method={method},route={route},status={status}"))
            .or_default() += 1.0;
    }
    let after = Scrape::get(&http, &metrics, Some(&token)).await;
    for (labels, count) in &expected {
        let moved = after.value("zonecert_http_requests_total", labels)
            - before.value("zonecert_http_requests_total", labels);
        assert_eq!(moved, *count, "{labels}");
    }
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}
