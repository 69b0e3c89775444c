//! Webhooks end to end: a real server with its lifecycle on an injected clock, and a
//! real HTTP receiver on loopback that verifies every delivery's signature with the
//! Standard Webhooks algorithm (HMAC-SHA256 written out here from RFC 2104 over sha2, not
//! the server's own code).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zonecert_server::clock::ManualClock;
use zonecert_server::model::{DcvRecord, Pack, PackId, PackState, ZoneId};
use zonecert_server::store::{Store, WebhookEndpoint};
use zonecert_server::webhooks::sign;
use zonecert_testkit::{DnsServer, TestServer};

const T0: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

/// What the receiver got: (webhook-id, body), signatures verified.
#[derive(Default)]
struct Received {
    messages: Vec<(String, Value)>,
    bad_signatures: usize,
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = k
        .iter()
        .map(|b| b ^ 0x36)
        .chain(msg.iter().copied())
        .collect();
    let inner = Sha256::digest(&inner);
    let outer: Vec<u8> = k
        .iter()
        .map(|b| b ^ 0x5c)
        .chain(inner.iter().copied())
        .collect();
    Sha256::digest(&outer).to_vec()
}

/// The Standard Webhooks check: `v1,` + base64(HMAC(key, "id.timestamp.body")), the
/// timestamp within 5 minutes.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let id = headers.get("webhook-id")?.to_str().ok()?;
    let ts = headers.get("webhook-timestamp")?.to_str().ok()?;
    let sigs = headers.get("webhook-signature")?.to_str().ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    if (now - ts.parse::<i64>().ok()?).abs() > 300 {
        return None;
    }
    let key = STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
    let mut msg = format!("{id}.{ts}.").into_bytes();
    msg.extend_from_slice(body);
    let expected = format!("v1,{}", STANDARD.encode(hmac_sha256(&key, &msg)));
    sigs.split(' ')
        .any(|s| s == expected)
        .then(|| id.to_owned())
}

/// A receiver on `addr` (port 0: any); returns its address.
async fn receiver(
    addr: SocketAddr,
    secret: String,
    got: Arc<Mutex<Received>>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let bound = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (secret, got) = (secret.clone(), got.clone());
            async move {
                let mut got = got.lock().unwrap();
                match verify(&secret, &headers, &body) {
                    Some(id) => {
                        got.messages
                            .push((id, serde_json::from_slice(&body).unwrap()));
                        axum::http::StatusCode::NO_CONTENT
                    }
                    None => {
                        got.bad_signatures += 1;
                        axum::http::StatusCode::UNAUTHORIZED
                    }
                }
            }
        }),
    );
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (bound, task)
}

struct Server {
    app: TestServer,
    token: String,
    zone: String,
    store: Store,
    clock: Arc<ManualClock>,
}

async fn start(dns: &DnsServer) -> Server {
    let clock = ManualClock::new(T0);
    let app = TestServer::builder()
        .clock(clock.clone())
        .lifecycle(true)
        .resolvers([dns.addr()])
        .dev_seed(false)
        .config(|c| {
            c.dcv_allow_private_addresses = true;
            c.dcv_timeout = Duration::from_secs(2);
            c.poll_interval = Duration::from_millis(100);
            c.retry_coalesce = Duration::ZERO;
        })
        .await;
    let store = app.store().clone();
    let zone = zonecert_server::admin::create_zone(&store, "example.com", None, false, T0)
        .await
        .unwrap();
    let token = zonecert_server::admin::create_token(
        &store,
        "test",
        &["SSL and Certificates Write".to_string()],
        &[],
        T0,
    )
    .await
    .unwrap();
    Server {
        token: token.secret,
        zone: zone.id.as_str().to_owned(),
        store,
        clock,
        app,
    }
}

impl Server {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/zones/{}{path}", self.app.base_url(), self.zone);
        let mut req = self
            .app
            .http()
            .request(method, url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "{status}: {v}");
        v
    }

    async fn order(&self, hosts: &[&str], validity: u32) -> PackId {
        let v = self
            .call(
                reqwest::Method::POST,
                "/ssl/certificate_packs/order",
                Some(
                    json!({"type": "advanced", "hosts": hosts, "validation_method": "txt",
                    "validity_days": validity, "certificate_authority": "google"}),
                ),
            )
            .await;
        PackId::parse(v["result"]["id"].as_str().unwrap()).unwrap()
    }

    async fn pack(&self, id: &PackId) -> Pack {
        let zone = ZoneId::parse(&self.zone).unwrap();
        self.store.pack(&zone, id).await.unwrap().unwrap()
    }

    async fn wait_for(&self, id: &PackId, what: &str, cond: impl Fn(&Pack) -> bool) -> Pack {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let p = self.pack(id).await;
            if cond(&p) {
                return p;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {p:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn add_endpoint(&self, url: String) -> String {
        let secret = sign::new_secret();
        self.store
            .insert_webhook_endpoint(&WebhookEndpoint {
                id: "we_test".into(),
                url,
                zone_id: None,
                events: vec![],
                secret: secret.clone(),
                created_at: T0,
                allow_private: true,
            })
            .await
            .unwrap();
        secret
    }
}

fn publish_txt(dns: &DnsServer, p: &Pack) {
    let mut by_name: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for h in &p.hosts {
        if let DcvRecord::Txt { name, value } = &h.record {
            by_name.entry(name.clone()).or_default().push(value.clone());
        }
    }
    for (name, values) in by_name {
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        dns.set_txt(&name, &refs);
    }
}

/// Waits until the receiver holds `n` messages of `pack`; returns their types in order.
async fn types_of(got: &Arc<Mutex<Received>>, pack: &PackId, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let types: Vec<String> = {
            let got = got.lock().unwrap();
            assert_eq!(got.bad_signatures, 0, "every signature verifies");
            got.messages
                .iter()
                .filter(|(_, v)| v["data"]["pack"]["id"] == pack.as_str())
                .map(|(_, v)| v["type"].as_str().unwrap().to_owned())
                .collect()
        };
        if types.len() >= n {
            return types;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {types:?} arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txt_pack_and_its_renewal_are_told_in_order_and_signed() {
    let dns = DnsServer::start().await;
    let s = start(&dns).await;
    let got = Arc::new(Mutex::new(Received::default()));
    // The endpoint's secret is made first; the receiver learns it, on the port the
    // endpoint names.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let secret = s.add_endpoint(format!("http://{addr}/hook")).await;
    let (_, _task) = receiver(addr, secret, got.clone()).await;

    let id = s.order(&["example.com", "www.example.com"], 30).await;
    let p = s
        .wait_for(&id, "a first check", |p| p.hosts[0].check.attempts >= 1)
        .await;
    publish_txt(&dns, &p);
    s.call(reqwest::Method::GET, "/ssl/verification?retry=true", None)
        .await;
    s.wait_for(&id, "active", |p| p.state == PackState::Active)
        .await;
    let types = types_of(&got, &id, 4).await;
    assert_eq!(
        types,
        [
            "pack.validation_failed",
            "pack.validated",
            "pack.issued",
            "pack.active"
        ],
        "the order's events, in order"
    );
    {
        let got = got.lock().unwrap();
        let failed = &got.messages[0].1;
        assert_eq!(failed["data"]["zone_id"], s.zone.as_str());
        let reasons = failed["data"]["reasons"].as_array().unwrap();
        assert_eq!(reasons.len(), 2, "{failed}");
        assert!(
            reasons
                .iter()
                .any(|r| r.as_str().unwrap().starts_with("www.example.com: ")),
            "{failed}"
        );
        let active = &got.messages[3].1;
        assert_eq!(active["data"]["pack"]["status"], "active");
        assert!(
            active["timestamp"].as_str().unwrap().starts_with("2027-"),
            "{active}"
        );
    }

    // The renewal window (7 days before expiry for 30-day certificates).
    let first = s.pack(&id).await.certificate.unwrap();
    s.clock.set(T0 + 23 * DAY + 10);
    s.wait_for(&id, "a renewed certificate", |p| {
        p.certificate.as_ref().is_some_and(|c| c.id != first.id) && p.state == PackState::Active
    })
    .await;
    let types = types_of(&got, &id, 8).await;
    assert_eq!(
        types[4..],
        [
            "pack.expiring",
            "pack.validated",
            "pack.renewed",
            "pack.active"
        ],
        "{types:?}"
    );
    {
        let got = got.lock().unwrap();
        assert_eq!(got.messages[4].1["data"]["days"], 7);
        assert_eq!(got.messages[5].1["data"]["renewal"], true);
        assert_eq!(got.messages[6].1["data"]["renewal"], true);
    }

    s.call(
        reqwest::Method::DELETE,
        &format!("/ssl/certificate_packs/{}", id.as_str()),
        None,
    )
    .await;
    let types = types_of(&got, &id, 9).await;
    assert_eq!(types[8], "pack.deleted");
    let ids: std::collections::HashSet<String> = got
        .lock()
        .unwrap()
        .messages
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(ids.len(), 9, "each event once, each with its own id");
    s.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_was_down_gets_every_event_once_in_order() {
    let dns = DnsServer::start().await;
    let s = start(&dns).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    // Nothing listens there yet: every attempt is refused.
    let secret = s.add_endpoint(format!("http://{addr}/hook")).await;
    let id = s.order(&["example.com"], 90).await;
    let p = s
        .wait_for(&id, "a first check", |p| p.hosts[0].check.attempts >= 1)
        .await;
    publish_txt(&dns, &p);
    s.call(reqwest::Method::GET, "/ssl/verification?retry=true", None)
        .await;
    s.wait_for(&id, "active", |p| p.state == PackState::Active)
        .await;
    // The first event was tried and failed; the others wait behind it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = s.store.list_deliveries(false, 100).await.unwrap();
        if d.iter().any(|d| d.attempts >= 1 && d.last_error.is_some()) {
            assert!(
                d.iter()
                    .all(|d| d.state == zonecert_server::store::DeliveryState::Pending)
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed attempt: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = Arc::new(Mutex::new(Received::default()));
    let (_, _task) = receiver(addr, secret, got.clone()).await;
    let types = types_of(&got, &id, 4).await;
    assert_eq!(
        types,
        [
            "pack.validation_failed",
            "pack.validated",
            "pack.issued",
            "pack.active"
        ]
    );
    // Nothing more arrives: none twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    {
        let got = got.lock().unwrap();
        assert_eq!(got.messages.len(), 4);
        let ids: std::collections::HashSet<&String> =
            got.messages.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), 4);
    }
    let d = s.store.list_deliveries(false, 100).await.unwrap();
    assert!(
        d.iter()
            .all(|d| d.state == zonecert_server::store::DeliveryState::Delivered),
        "{d:?}"
    );
    // The metrics count every attempt by its outcome: the refused ones, then the four
    // deliveries.
    let metrics = s
        .app
        .http()
        .get(format!("http://{}/metrics", s.app.addr()))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |outcome: &str| {
        let series = format!("zonecert_webhook_deliveries_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map(|v| v.trim().parse::<f64>().unwrap())
            .unwrap_or(0.0)
    };
    assert_eq!(count("delivered"), 4.0, "{metrics}");
    assert!(count("retrying") >= 1.0, "{metrics}");
    assert_eq!(count("failed"), 0.0, "{metrics}");
    s.app.shutdown().await.unwrap();
}
