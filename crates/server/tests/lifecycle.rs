//! The background lifecycle end to end: a real server on loopback, a loopback DNS
//! server and HTTP origin for the DCV checks, a manual clock for timeouts, renewal and
//! expiry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zonecert_server::clock::ManualClock;
use zonecert_server::config::Config;
use zonecert_server::model::schedule::wait_before_next_check;
use zonecert_server::model::{DcvRecord, Pack, PackId, PackState, ZoneId};
use zonecert_server::store::Store;
use zonecert_testkit::{DnsServer, HttpOrigin, TestServer, TestServerBuilder};

const T0: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

/// The shared harness with what these tests use beside it: a token allowed to write
/// SSL, the `example.com` zone and the manual clock.
struct Server {
    app: TestServer,
    token: String,
    zone: String,
    data: PathBuf,
    store: Store,
    clock: Arc<ManualClock>,
}

fn config(c: &mut Config) {
    c.dcv_allow_private_addresses = true;
    c.dcv_timeout = Duration::from_secs(2);
    c.poll_interval = Duration::from_millis(100);
    c.retry_wait = Duration::from_secs(5);
    // These tests publish a record and retry at once, on a clock that stands still:
    // what they check is the lifecycle, not the coalescing of retries (`http_edge.rs`).
    c.retry_coalesce = Duration::ZERO;
}

async fn start(dns: &DnsServer, tweak: impl FnOnce(&mut Config) + Send) -> Server {
    serve(TestServer::builder(), dns, ManualClock::new(T0), tweak).await
}

async fn start_in(
    data: &Path,
    dns: &DnsServer,
    clock: Arc<ManualClock>,
    tweak: impl FnOnce(&mut Config) + Send,
) -> Server {
    serve(TestServer::builder().data_dir(data), dns, clock, tweak).await
}

async fn serve(
    builder: TestServerBuilder<'_>,
    dns: &DnsServer,
    clock: Arc<ManualClock>,
    tweak: impl FnOnce(&mut Config) + Send,
) -> Server {
    let app = builder
        .clock(clock.clone())
        .lifecycle(true)
        .resolvers([dns.addr()])
        .dev_seed(false)
        .config(config)
        .config(tweak)
        .await;
    let store = app.store().clone();
    let zone = match store
        .list_zones(Some("example.com"), None, 0, 1)
        .await
        .unwrap()
        .items
        .pop()
    {
        Some(z) => z,
        None => zonecert_server::admin::create_zone(&store, "example.com", None, false, T0)
            .await
            .unwrap(),
    };
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
        data: app.data_dir().to_owned(),
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

    async fn order(&self, hosts: &[&str], method: &str, validity: u32, ca: &str) -> PackId {
        let v = self
            .call(
                reqwest::Method::POST,
                "/ssl/certificate_packs/order",
                Some(
                    json!({"type": "advanced", "hosts": hosts, "validation_method": method,
                        "validity_days": validity, "certificate_authority": ca}),
                ),
            )
            .await;
        PackId::parse(v["result"]["id"].as_str().unwrap()).unwrap()
    }

    async fn verification(&self, retry: bool) -> Vec<Value> {
        let q = if retry { "?retry=true" } else { "" };
        let v = self
            .call(reqwest::Method::GET, &format!("/ssl/verification{q}"), None)
            .await;
        v["result"].as_array().unwrap().clone()
    }

    async fn pack(&self, id: &PackId) -> Pack {
        let zone = ZoneId::parse(&self.zone).unwrap();
        self.store.pack(&zone, id).await.unwrap().unwrap()
    }

    /// Orders one host by TXT, publishes its record once checked, asks for a check and
    /// waits until a later stage (issuance or deployment) records an error: the pack
    /// as it then is.
    async fn validated_then_failing(&self, dns: &DnsServer, what: &str) -> (PackId, Pack) {
        let id = self
            .order(&["example.com"], "txt", 90, "lets_encrypt")
            .await;
        let p = self
            .wait_for(&id, "a first check", |p| p.hosts[0].check.attempts >= 1)
            .await;
        publish_txt(dns, &p);
        self.verification(true).await;
        let failing = self.wait_for(&id, what, |p| !p.errors.is_empty()).await;
        (id, failing)
    }

    /// `GET /ssl/certificate_packs/{id}`: the whole answer.
    async fn get_pack(&self, id: &PackId) -> Value {
        let path = format!("/ssl/certificate_packs/{}", id.as_str());
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// Moves the clock to a stage's deadline `at` and waits until the pack times out into
    /// `state` (`stage` is "issuance" or "deployment"). Checks that the pack, the API and
    /// the verification view say so, and that nothing happens on its own two days later.
    async fn times_out(&self, id: &PackId, at: i64, state: PackState, stage: &str) -> Pack {
        self.clock.set(at);
        let timed_out = self.wait_for(id, "the timeout", |p| p.state == state).await;
        let reason = timed_out.errors.last().unwrap();
        assert!(
            reason.contains(&format!("{stage} timed out")) && reason.contains("1 hour"),
            "{reason}"
        );
        let v = self.get_pack(id).await;
        assert_eq!(v["result"]["status"], state.as_str());
        assert!(
            v["result"]["validation_errors"]
                .to_string()
                .contains(&format!("{stage} timed out")),
            "{v}"
        );
        let items = self.verification(false).await;
        assert_eq!(items[0]["certificate_status"], "timing_out");
        self.clock.set(at + 2 * DAY);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            self.pack(id).await.state,
            state,
            "nothing happens on its own"
        );
        timed_out
    }

    /// Polls the store until `cond` holds (the workers poll every 100 ms).
    async fn wait_for(&self, id: &PackId, what: &str, cond: impl Fn(&Pack) -> bool) -> Pack {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
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

    async fn shutdown(self) {
        self.app.shutdown().await.unwrap();
    }
}

fn txt_values(p: &Pack) -> Vec<(String, String)> {
    p.hosts
        .iter()
        .map(|h| match &h.record {
            DcvRecord::Txt { name, value } => (name.clone(), value.clone()),
            other => panic!("not txt: {other:?}"),
        })
        .collect()
}

/// Publishes every TXT record of the pack (values at the same name together).
fn publish_txt(dns: &DnsServer, p: &Pack) {
    let mut by_name: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, value) in txt_values(p) {
        by_name.entry(name).or_default().push(value);
    }
    for (name, values) in by_name {
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        dns.set_txt(&name, &refs);
    }
}

/// The deployed certificate chains to the built-in CA, names every host, matches the
/// deployed key and has the ordered validity.
fn assert_deployed(data: &Path, p: &Pack) {
    use x509_parser::pem::Pem;
    let dir = data.join("certs").join(p.id.as_str());
    let chain = std::fs::read(dir.join("fullchain.pem")).unwrap();
    let key = std::fs::read_to_string(dir.join("privkey.pem")).unwrap();
    let pems: Vec<Pem> = Pem::iter_from_buffer(&chain).map(|p| p.unwrap()).collect();
    assert!(pems.len() >= 2, "leaf and CA");
    let leaf = pems[0].parse_x509().unwrap();
    let root = pems.last().unwrap().parse_x509().unwrap();
    let ca_pem = std::fs::read(data.join("ca").join("ca.pem")).unwrap();
    let ca = Pem::iter_from_buffer(&ca_pem).next().unwrap().unwrap();
    assert_eq!(
        ca.contents,
        pems.last().unwrap().contents,
        "chain ends at our CA"
    );
    // Each certificate is signed by the next one; the root by itself.
    for pair in pems.windows(2) {
        let (child, parent) = (pair[0].parse_x509().unwrap(), pair[1].parse_x509().unwrap());
        child.verify_signature(Some(parent.public_key())).unwrap();
    }
    root.verify_signature(None).unwrap();
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    let hosts: Vec<String> = p.hosts.iter().map(|h| h.hostname.to_string()).collect();
    assert_eq!(sans, hosts);
    let key = rcgen::KeyPair::from_pem(&key).unwrap();
    assert_eq!(
        key.public_key_raw(),
        &*leaf.public_key().subject_public_key.data
    );
    let nb = leaf.validity().not_before.timestamp();
    let na = leaf.validity().not_after.timestamp();
    assert_eq!(na - nb, i64::from(p.validity_days) * DAY);
    let cert = p.certificate.as_ref().unwrap();
    assert_eq!((cert.not_before, cert.not_after), (nb, na));
    assert_eq!(cert.chain_pem.as_bytes(), &chain[..]);
    assert!(!cert.chain_pem.contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txt_validation_reports_the_reason_then_issues_on_retry() {
    let dns = DnsServer::start().await;
    let s = start(&dns, |_| {}).await;
    let id = s
        .order(&["example.com", "*.example.com"], "txt", 90, "lets_encrypt")
        .await;

    // The first check runs at once and finds nothing.
    let items = s.verification(true).await;
    assert_eq!(items.len(), 2);
    for item in &items {
        assert_eq!(item["certificate_status"], "authorizing");
        assert_eq!(item["verification_status"], false, "{item}");
        let reason = item["verification_error"].as_str().unwrap();
        assert!(reason.contains("_acme-challenge.example.com"), "{reason}");
    }
    let p = s.pack(&id).await;
    // The order's own check, and maybe a second one for retry=true if the first had
    // already finished: each on Cloudflare's schedule.
    for h in &p.hosts {
        assert!((1..=2).contains(&h.check.attempts), "{h:?}");
        assert_eq!(
            h.check.next_due_at,
            T0 + wait_before_next_check(h.check.attempts - 1),
            "Cloudflare's schedule"
        );
    }

    publish_txt(&dns, &p);
    let items = s.verification(true).await;
    let p = if items.iter().all(|i| i["certificate_status"] == "active") {
        s.pack(&id).await
    } else {
        s.wait_for(&id, "active", |p| p.state == PackState::Active)
            .await
    };
    assert_eq!(p.state, PackState::Active);
    assert!(p.hosts.iter().all(|h| h.check.verified == Some(true)));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.certificate.as_ref().unwrap().not_before, T0);
    assert_deployed(&s.data, &p);

    // The pack API shows the certificate; no private key anywhere in it.
    let v = s.get_pack(&id).await;
    assert_eq!(v["result"]["status"], "active");
    assert!(!v.to_string().contains("PRIVATE KEY"));
    s.shutdown().await;
}

/// A `retry=true` that arrives while a check of the host is running (begun before the
/// client published its record) is not answered by that check, whose failure would put
/// the next check a minute away on a clock that stands still: the host is checked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_during_a_running_check_gets_a_check_of_its_own() {
    let dns = DnsServer::start().await;
    // Room for the slow answers below (a check may look up the name more than once).
    let s = start(&dns, |c| c.dcv_timeout = Duration::from_secs(10)).await;
    // Every answer for the record's name comes a second late: the first check is still
    // waiting for it when the client publishes and retries.
    dns.set_delay("_acme-challenge.example.com", Duration::from_secs(1));
    let asked = dns.query_count();
    let id = s.order(&["example.com"], "txt", 90, "lets_encrypt").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dns.query_count() == asked {
        assert!(tokio::time::Instant::now() < deadline, "no check began");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    publish_txt(&dns, &s.pack(&id).await);
    s.verification(true).await;
    let p = s
        .wait_for(&id, "the host validated", |p| {
            p.hosts[0].check.verified == Some(true)
        })
        .await;
    assert_eq!(p.hosts[0].check.reason, None);
    s.shutdown().await;
}

/// The order's own check runs at once, before the client can publish its record; the
/// client's first `retry=true` after publishing is answered by a check of its own, not
/// coalesced with that earlier one (whose failure put the next check a minute away).
/// Coalescing (5 s, as served) joins retries with retries only: a second retry at once
/// is answered by the first one's check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_retry_is_not_coalesced_with_the_orders_own_check() {
    let dns = DnsServer::start().await;
    let s = start(&dns, |c| c.retry_coalesce = Duration::from_secs(5)).await;
    let id = s.order(&["example.com"], "txt", 90, "lets_encrypt").await;
    let p = s
        .wait_for(&id, "the order's own check", |p| {
            p.hosts[0].check.attempts == 1
        })
        .await;
    assert_eq!(p.hosts[0].check.verified, Some(false));
    publish_txt(&dns, &p);
    let items = s.verification(true).await;
    assert_eq!(items[0]["certificate_status"], "active", "{items:?}");
    assert_eq!(s.pack(&id).await.hosts[0].check.attempts, 2);

    // A second pack: the first retry asks for its check, a second one at once (on a
    // clock that stands still) is coalesced with it: no third check.
    let id = s
        .order(
            &["example.com", "www.example.com"],
            "txt",
            90,
            "lets_encrypt",
        )
        .await;
    s.wait_for(&id, "the order's own checks", |p| {
        p.hosts.iter().all(|h| h.check.attempts == 1)
    })
    .await;
    let attempts = || async {
        let p = s.pack(&id).await;
        p.hosts.iter().map(|h| h.check.attempts).collect::<Vec<_>>()
    };
    s.verification(true).await;
    assert_eq!(attempts().await, [2, 2]);
    s.verification(true).await;
    assert_eq!(
        attempts().await,
        [2, 2],
        "a retry right after a retry checked again"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_validation_fetches_the_token_from_the_origin() {
    let dns = DnsServer::start().await;
    let origin = HttpOrigin::start().await;
    let s = start(&dns, |c| c.dcv_http_port = origin.port()).await;
    let id = s.order(&["example.com"], "http", 90, "lets_encrypt").await;
    let p = s
        .wait_for(&id, "a first check", |p| p.hosts[0].check.attempts == 1)
        .await;
    assert_eq!(p.hosts[0].check.verified, Some(false));
    let DcvRecord::Http { url, body } = &p.hosts[0].record else {
        panic!("not http")
    };
    dns.set_a("example.com", std::net::Ipv4Addr::LOCALHOST);
    let path = url.strip_prefix("http://example.com").unwrap();
    origin.set_body(path, 200, body);
    s.verification(true).await;
    let p = s
        .wait_for(&id, "active", |p| p.state == PackState::Active)
        .await;
    assert_deployed(&s.data, &p);
    assert!(
        origin
            .requests()
            .iter()
            .any(|r| format!("{r:?}").contains(path))
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_delegation_validates_and_caa_can_forbid_the_ca() {
    let dns = DnsServer::start().await;
    let s = start(&dns, |_| {}).await;
    let id = s
        .order(
            &["example.com", "shop.example.com"],
            "txt",
            90,
            "lets_encrypt",
        )
        .await;
    s.wait_for(&id, "a first check", |p| p.hosts[0].check.attempts >= 1)
        .await;
    // CAA at the apex names another CA only.
    dns.set_caa("example.com", &[(0, "issue", "pki.goog")]);
    s.call(
        reqwest::Method::PATCH,
        &format!("/ssl/verification/{}", id.as_str()),
        Some(json!({"validation_method": "cname"})),
    )
    .await;
    let p = s.pack(&id).await;
    for h in &p.hosts {
        let DcvRecord::Cname { name, target } = &h.record else {
            panic!("not cname: {:?}", h.record)
        };
        assert_eq!(name, &format!("_acme-challenge.{}", h.hostname));
        dns.set_cname(name, target);
    }
    s.verification(true).await;
    let p = s
        .wait_for(&id, "the CAA refusal", |p| !p.errors.is_empty())
        .await;
    assert_eq!(p.state, PackState::PendingValidation);
    assert!(
        p.hosts.iter().all(|h| h.check.verified == Some(true)),
        "DCV itself passed"
    );
    assert!(
        p.errors[0].contains("CAA") && p.errors[0].contains("letsencrypt.org"),
        "{:?}",
        p.errors
    );
    assert!(p.certificate.is_none());
    let v = s.get_pack(&id).await;
    assert!(v.to_string().contains("CAA"), "the error is shown: {v}");

    // Allowing the CA lets the next CAA check (on the schedule) through.
    dns.set_caa("example.com", &[(0, "issue", "letsencrypt.org")]);
    let due = p.hosts[0].check.next_due_at;
    assert!(due > T0, "CAA is checked again on the schedule");
    s.clock.set(due);
    let p = s
        .wait_for(&id, "active", |p| p.state == PackState::Active)
        .await;
    assert!(p.errors.is_empty());
    assert_deployed(&s.data, &p);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_times_out_after_the_token_lifetime_and_patch_restarts() {
    let dns = DnsServer::start().await;
    let s = start(&dns, |_| {}).await;
    let id = s.order(&["example.com"], "txt", 90, "lets_encrypt").await;
    let before = s
        .wait_for(&id, "a first check", |p| p.hosts[0].check.attempts == 1)
        .await;
    s.clock.advance(7 * DAY + 1);
    let items = s.verification(true).await;
    let p = if items[0]["certificate_status"] == "timing_out" {
        s.pack(&id).await
    } else {
        s.wait_for(&id, "timeout", |p| p.state == PackState::ValidationTimedOut)
            .await
    };
    assert_eq!(p.state, PackState::ValidationTimedOut);
    assert_eq!(
        s.verification(false).await[0]["certificate_status"],
        "timing_out"
    );

    let v = s
        .call(
            reqwest::Method::PATCH,
            &format!("/ssl/verification/{}", id.as_str()),
            Some(json!({"validation_method": "txt"})),
        )
        .await;
    assert_ne!(v["result"]["status"], "validation_timed_out");
    let p = s.pack(&id).await;
    assert_eq!(p.state, PackState::PendingValidation);
    assert_ne!(txt_values(&p), txt_values(&before), "fresh tokens");
    assert_eq!(p.stage_deadline, s.clock_now() + 7 * DAY);
    publish_txt(&dns, &p);
    s.verification(true).await;
    s.wait_for(&id, "active", |p| p.state == PackState::Active)
        .await;
    s.shutdown().await;
}

impl Server {
    fn clock_now(&self) -> i64 {
        use zonecert_server::clock::Clock;
        self.clock.now()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_reissues_in_the_window_and_an_unrenewed_pack_expires() {
    let dns = DnsServer::start().await;
    let s = start(&dns, |_| {}).await;
    let id = s
        .order(&["example.com", "www.example.com"], "txt", 30, "google")
        .await;
    let p = s
        .wait_for(&id, "a first check", |p| p.hosts[0].check.attempts >= 1)
        .await;
    publish_txt(&dns, &p);
    s.verification(true).await;
    let first = s
        .wait_for(&id, "active", |p| p.state == PackState::Active)
        .await;
    let first_cert = first.certificate.clone().unwrap();
    assert_eq!(first_cert.not_after, T0 + 30 * DAY);

    // Just before the window (7 days before expiry for 30-day certificates): nothing.
    s.clock.set(T0 + 22 * DAY);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.pack(&id).await.certificate.unwrap().id, first_cert.id);

    // In the window: the records are checked again and a new certificate deployed.
    s.clock.set(T0 + 23 * DAY + 10);
    let renewed = s
        .wait_for(&id, "a renewed certificate", |p| {
            p.state == PackState::Active
                && p.certificate
                    .as_ref()
                    .is_some_and(|c| c.id != first_cert.id)
        })
        .await;
    let cert = renewed.certificate.clone().unwrap();
    assert_eq!(cert.not_before, T0 + 23 * DAY + 10);
    assert_eq!(cert.not_after, T0 + 53 * DAY + 10);
    assert_deployed(&s.data, &renewed);

    // The records disappear: renewal fails, is recorded, and the pack stays active.
    for (name, _) in txt_values(&renewed) {
        dns.remove(&name);
    }
    s.clock.set(T0 + 46 * DAY + 20);
    let failing = s
        .wait_for(&id, "a renewal error", |p| !p.errors.is_empty())
        .await;
    assert_eq!(failing.state, PackState::Active);
    assert!(
        failing.errors[0].starts_with("renewal"),
        "{:?}",
        failing.errors
    );
    assert_eq!(failing.certificate.as_ref().unwrap().id, cert.id);

    // Past not_after with no renewal: expired.
    s.clock.set(cert.not_after + 1);
    let expired = s
        .wait_for(&id, "expiry", |p| p.state == PackState::Expired)
        .await;
    assert_eq!(expired.certificate.unwrap().id, cert.id);
    assert_eq!(
        s.verification(false).await[0]["certificate_status"],
        "expired"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brand_check_holds_a_pack_until_an_operator_approves() {
    let dns = DnsServer::start().await;
    let s = start(&dns, |c| c.brand_keywords = vec!["paypal".into()]).await;
    let held = s
        .order(
            &["example.com", "paypal.example.com"],
            "txt",
            90,
            "lets_encrypt",
        )
        .await;
    let rejected = s
        .order(
            &["example.com", "paypal-login.example.com"],
            "txt",
            90,
            "lets_encrypt",
        )
        .await;
    let plain = s.order(&["example.com"], "txt", 90, "lets_encrypt").await;
    s.wait_for(&plain, "a first check", |p| p.hosts[0].check.attempts == 1)
        .await;
    let items = s.verification(false).await;
    let item = items
        .iter()
        .find(|i| i["hostname"] == "paypal.example.com")
        .unwrap();
    assert_eq!(item["brand_check"], true);
    assert_eq!(item["certificate_status"], "authorizing");
    // It says why it waits and what ends the wait, and promises no check.
    let held_reason = format!(
        "held for operator approval: host paypal.example.com matches brand keyword \"paypal\" \
         (zonecert pack approve {held})"
    );
    for item in items
        .iter()
        .filter(|i| i["cert_pack_uuid"] == held.as_str())
    {
        assert_eq!(item["verification_error"], held_reason.as_str(), "{item}");
        assert!(item.get("next_check_on").is_none(), "{item}");
    }
    let p = s.pack(&held).await;
    assert_eq!(p.hosts[0].check.attempts, 0, "held packs are not checked");

    zonecert_server::admin::reject_pack(&s.store, rejected.as_str())
        .await
        .unwrap();
    assert!(
        s.store.pack_by_id(&rejected).await.unwrap().is_none(),
        "rejected packs are deleted"
    );

    publish_txt(&dns, &p);
    let approved = zonecert_server::admin::approve_pack(&s.store, held.as_str(), T0)
        .await
        .unwrap();
    assert!(!approved.brand_check);
    s.verification(true).await;
    s.wait_for(&held, "active", |p| p.state == PackState::Active)
        .await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_a_held_pack_answers_without_waiting_for_a_check() {
    // `retry=true` waits for the checks it asks for, up to `retry_wait`; a held pack is
    // never checked until approved, so waiting for it could only wait out the deadline.
    // With an hour's deadline, answering at all shows it did not wait.
    let dns = DnsServer::start().await;
    let s = start(&dns, |c| {
        c.brand_keywords = vec!["paypal".into()];
        c.retry_wait = Duration::from_secs(3600);
    })
    .await;
    let held = s
        .order(
            &["example.com", "paypal.example.com"],
            "txt",
            90,
            "lets_encrypt",
        )
        .await;
    let items = tokio::time::timeout(Duration::from_secs(60), s.verification(true))
        .await
        .expect("retry=true on a held pack answers without waiting for a check");
    assert!(items.iter().all(|i| i["brand_check"] == true), "{items:?}");
    let patched = tokio::time::timeout(
        Duration::from_secs(60),
        s.call(
            reqwest::Method::PATCH,
            &format!("/ssl/verification/{held}"),
            Some(json!({"validation_method": "txt"})),
        ),
    )
    .await
    .expect("the verification PATCH on a held pack answers without waiting for a check");
    assert_eq!(
        patched["result"]["status"], "pending_validation",
        "{patched}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_validation_waits_for_an_operator() {
    let dns = DnsServer::start().await;
    let s = start(&dns, |_| {}).await;
    let id = s.order(&["example.com"], "email", 90, "google").await;
    let items = s.verification(true).await;
    assert_eq!(items[0]["verification_status"], false);
    assert!(
        items[0]["verification_error"]
            .as_str()
            .unwrap()
            .contains("zonecert pack approve")
    );
    let p = s.pack(&id).await;
    assert_eq!(p.hosts[0].check.next_due_at, p.stage_deadline, "no polling");
    zonecert_server::admin::approve_pack(&s.store, id.as_str(), T0)
        .await
        .unwrap();
    s.verification(true).await;
    let p = s
        .wait_for(&id, "active", |p| p.state == PackState::Active)
        .await;
    assert_deployed(&s.data, &p);
    s.shutdown().await;
}

/// Orders `n` packs (`example.com` and `h<i>.example.com`, TXT), alternately through
/// each of two servers on one database.
async fn order_on_both(a: &Server, b: &Server, n: usize) -> Vec<PackId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let s = if i % 2 == 0 { a } else { b };
        let hosts = ["example.com", &format!("h{i}.example.com")];
        ids.push(s.order(&hosts, "txt", 90, "google").await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_never_run_the_same_check_twice() {
    let dns = DnsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let a = start_in(dir.path(), &dns, clock.clone(), |_| {}).await;
    let b = start_in(dir.path(), &dns, clock.clone(), |_| {}).await;
    let ids = order_on_both(&a, &b, 24).await;
    for id in &ids {
        a.wait_for(id, "a first check", |p| p.hosts[0].check.attempts >= 1)
            .await;
    }
    // Both keep polling; nothing is due again until the clock moves.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        let p = a.pack(id).await;
        assert!(
            p.hosts.iter().all(|h| h.check.attempts == 1),
            "checked exactly once: {p:?}"
        );
    }
    // One schedule slot later: exactly one more check each.
    clock.advance(60);
    for id in &ids {
        a.wait_for(id, "a second check", |p| p.hosts[0].check.attempts >= 2)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        let p = a.pack(id).await;
        assert!(p.hosts.iter().all(|h| h.check.attempts == 2), "{p:?}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_servers_claim_runs_again_when_its_lease_expires() {
    use zonecert_server::clock::{Clock, SystemClock};
    use zonecert_server::model::{CaChoice, DcvMethod, Hostname};
    use zonecert_server::store::Claim;
    let dns = DnsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A server that claimed the pack and died (kill -9) before writing any outcome.
    let store = Store::open_sqlite(dir.path()).unwrap();
    let zone = zonecert_server::admin::create_zone(&store, "example.com", None, false, T0)
        .await
        .unwrap();
    let pack = Pack::order(
        zone.id.clone(),
        vec![Hostname::parse("example.com").unwrap()],
        DcvMethod::Txt,
        90,
        CaChoice::LetsEncrypt,
        false,
        "x.dcv.test",
        T0,
    );
    store.insert_pack(&pack, 100).await.unwrap();
    let claim = Claim {
        owner: "crashed",
        now: T0,
        wall_now: SystemClock.now(),
        lease_secs: 2,
        limit: 10,
        skip_cas: &[],
    };
    assert_eq!(store.claim_due(&claim).await.unwrap().len(), 1);
    assert!(
        store.claim_due(&claim).await.unwrap().is_empty(),
        "a leased pack is not claimed twice"
    );

    let s = start_in(dir.path(), &dns, ManualClock::new(T0), |c| {
        c.lease = Duration::from_secs(2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.pack(&pack.id).await.hosts[0].check.attempts,
        0,
        "the lease is respected"
    );
    let p = s
        .wait_for(&pack.id, "the check after the lease", |p| {
            p.hosts[0].check.attempts == 1
        })
        .await;
    assert_eq!(p.hosts[0].check.verified, Some(false));
    s.shutdown().await;
}

/// A deploy hook (through `/bin/sh`) that appends the pack's id to `log`, then runs `then`.
fn logging_hook(log: &Path, then: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("echo \"$ZONECERT_PACK_ID\" >> '{}'; {then}", log.display()),
    ]
}

fn hook_runs(log: &Path) -> Vec<String> {
    let mut runs: Vec<String> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    runs.sort();
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_outlast_a_deployment_slower_than_the_lease_so_nothing_runs_twice() {
    let dns = DnsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("hook.log");
    let clock = ManualClock::new(T0);
    // Each deployment takes twice the lease: without renewal the other server would
    // take the pack over in the middle of it and issue and deploy it again.
    let slow = |c: &mut Config| {
        c.lease = Duration::from_secs(2);
        c.deploy_hook = Some(logging_hook(&log, "sleep 4"));
    };
    let a = start_in(dir.path(), &dns, clock.clone(), slow).await;
    let b = start_in(dir.path(), &dns, clock.clone(), slow).await;
    let ids = order_on_both(&a, &b, 6).await;
    // Every pack's apex token shares one name: published together.
    let mut by_name: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for id in &ids {
        let p = a
            .wait_for(id, "a first check", |p| {
                p.hosts.iter().all(|h| h.check.attempts >= 1)
            })
            .await;
        for (name, value) in txt_values(&p) {
            by_name.entry(name).or_default().push(value);
        }
    }
    for (name, values) in &by_name {
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        dns.set_txt(name, &refs);
    }
    a.verification(true).await;
    for id in &ids {
        a.wait_for(id, "active", |p| p.state == PackState::Active)
            .await;
    }
    // A second deployment would have started while the first one slept: give its save
    // time to land.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut expected: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    expected.sort();
    assert_eq!(hook_runs(&log), expected, "one deployment per pack");
    for id in &ids {
        let p = a.pack(id).await;
        assert_eq!(p.state, PackState::Active);
        // The failed first check and the passing one, each by one server only.
        assert!(p.hosts.iter().all(|h| h.check.attempts == 2), "{p:?}");
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        // The stored certificate is the one on disk: no second issuance replaced either.
        assert_deployed(dir.path(), &p);
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_that_keeps_failing_times_out_and_patch_restarts_it() {
    let dns = DnsServer::start().await;
    let hook_dir = tempfile::tempdir().unwrap();
    let log = hook_dir.path().join("hook.log");
    let fixed = hook_dir.path().join("fixed");
    let s = start(&dns, |c| {
        c.issuance_timeout = Duration::from_secs(3600);
        c.deploy_hook = Some(logging_hook(
            &log,
            &format!(
                "test -e '{}' || {{ echo 'the web server refused the certificate' >&2; exit 3; }}",
                fixed.display()
            ),
        ));
    })
    .await;
    let (id, failing) = s.validated_then_failing(&dns, "a failed deployment").await;
    assert_eq!(failing.state, PackState::PendingDeployment);
    assert!(
        failing.errors[0].contains("the web server refused the certificate"),
        "{:?}",
        failing.errors
    );
    // Validation passed at T0: issuance and deployment have until T0 + 1 h.
    assert_eq!(failing.stage_deadline, T0 + 3600);
    assert_eq!(
        failing.hosts[0].check.next_due_at,
        T0 + 300,
        "retried in 5 min"
    );

    // The last retry before the deadline fails too and is due again at the deadline.
    s.clock.set(T0 + 3500);
    let retried = s
        .wait_for(&id, "a retry", |p| {
            p.hosts[0].check.next_due_at == T0 + 3600
        })
        .await;
    assert_eq!(retried.state, PackState::PendingDeployment);
    assert_eq!(hook_runs(&log).len(), 2);
    // The retry deploys the certificate recorded before (its key kept in the database),
    // not a second one.
    assert_eq!(
        retried.certificate.as_ref().map(|c| &c.id),
        failing.certificate.as_ref().map(|c| &c.id),
        "the same certificate, deployed again"
    );
    assert!(failing.certificate.is_some());

    s.times_out(&id, T0 + 3600, PackState::DeploymentTimedOut, "deployment")
        .await;
    assert_eq!(hook_runs(&log).len(), 2, "no deployment after the timeout");

    // The operator fixes the web server; PATCH restarts the pack with fresh tokens.
    std::fs::write(&fixed, b"").unwrap();
    let v = s
        .call(
            reqwest::Method::PATCH,
            &format!("/ssl/certificate_packs/{}", id.as_str()),
            Some(json!({})),
        )
        .await;
    assert_eq!(v["result"]["status"], "pending_validation", "{v}");
    let restarted = s.pack(&id).await;
    assert!(restarted.errors.is_empty(), "{:?}", restarted.errors);
    assert_ne!(txt_values(&restarted), txt_values(&failing), "fresh tokens");
    assert_eq!(restarted.stage_deadline, T0 + 3600 + 2 * DAY + 7 * DAY);
    publish_txt(&dns, &restarted);
    s.verification(true).await;
    let active = s
        .wait_for(&id, "active", |p| p.state == PackState::Active)
        .await;
    assert!(active.errors.is_empty(), "{:?}", active.errors);
    assert_deployed(&s.data, &active);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuance_the_ca_keeps_refusing_times_out_and_the_reason_is_shown() {
    let dns = DnsServer::start().await;
    let s = start(&dns, |c| c.issuance_timeout = Duration::from_secs(3600)).await;
    // The built-in CA signs nothing that outlives its root (about ten years from its
    // creation, in real time). Thirty days before the root expires, a 90-day certificate
    // cannot be issued: a real refusal, retried until the issuance timeout.
    let ca = zonecert_server::issuance::BuiltinCa::load_or_create(&s.data).unwrap();
    let late = ca.not_after().unix_timestamp() - 30 * DAY;
    s.clock.set(late);
    let (id, failing) = s.validated_then_failing(&dns, "a refused issuance").await;
    assert_eq!(failing.state, PackState::PendingIssuance);
    assert!(
        failing.errors[0].contains("issuance failed") && failing.errors[0].contains("expiry"),
        "{:?}",
        failing.errors
    );
    assert!(failing.certificate.is_none());
    // Validation passed at `late`: issuance has until `late` + 1 h, retried every 5 min.
    assert_eq!(failing.stage_deadline, late + 3600);
    assert_eq!(failing.hosts[0].check.next_due_at, late + 300);
    let v = s.get_pack(&id).await;
    assert_eq!(v["result"]["status"], "pending_issuance", "{v}");
    assert!(
        v["result"]["validation_errors"]
            .to_string()
            .contains("expiry"),
        "the API says why: {v}"
    );

    let timed_out = s
        .times_out(&id, late + 3600, PackState::IssuanceTimedOut, "issuance")
        .await;
    assert!(timed_out.certificate.is_none());
    assert!(
        !s.data.join("certs").join(id.as_str()).exists(),
        "nothing was deployed"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_a_pack_another_server_holds_answers_at_once() {
    use zonecert_server::clock::{Clock, SystemClock};
    use zonecert_server::model::{CaChoice, DcvMethod, Hostname};
    use zonecert_server::store::Claim;
    let dns = DnsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A retry wait far past the test's bound: an answer within the bound did not wait.
    let s = start_in(dir.path(), &dns, ManualClock::new(T0), |c| {
        c.retry_wait = Duration::from_secs(3600)
    })
    .await;
    let zone = ZoneId::parse(&s.zone).unwrap();
    let mut pack = Pack::order(
        zone,
        vec![Hostname::parse("example.com").unwrap()],
        DcvMethod::Txt,
        90,
        CaChoice::LetsEncrypt,
        false,
        "x.dcv.test",
        T0,
    );
    // Due later for this server (its clock says T0), due now for another one.
    for host in &mut pack.hosts {
        host.check.next_due_at = T0 + 3600;
    }
    s.store.insert_pack(&pack, 100).await.unwrap();
    let elsewhere = Claim {
        owner: "node-elsewhere",
        now: T0 + 3600,
        wall_now: SystemClock.now(),
        lease_secs: 600,
        limit: 10,
        skip_cas: &[],
    };
    assert_eq!(s.store.claim_due(&elsewhere).await.unwrap().len(), 1);
    let items = tokio::time::timeout(Duration::from_secs(30), s.verification(true))
        .await
        .expect("retry=true waited for a pack another server holds");
    let item = items
        .iter()
        .find(|i| i["cert_pack_uuid"] == pack.id.as_str())
        .unwrap();
    assert_eq!(item["certificate_status"], "authorizing", "{item}");
    s.shutdown().await;
}

/// SIGTERM's bound holds for the lifecycle too: a deploy hook that hangs (here for five
/// minutes, within its own 60 s timeout no more than the hook's) does not hold the
/// shutdown; the step is dropped after the grace, as a crash would leave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_hanging_deploy_hook() {
    let dns = DnsServer::start().await;
    let hook_dir = tempfile::tempdir().unwrap();
    let log = hook_dir.path().join("hook.log");
    let s = start(&dns, |c| {
        c.shutdown_timeout = Duration::from_secs(1);
        c.deploy_hook = Some(logging_hook(&log, "sleep 300"));
    })
    .await;
    let id = s.order(&["example.com"], "txt", 90, "lets_encrypt").await;
    let p = s
        .wait_for(&id, "a first check", |p| p.hosts[0].check.attempts >= 1)
        .await;
    publish_txt(&dns, &p);
    s.verification(true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hook_runs(&log).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deploy hook never started"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stopping = std::time::Instant::now();
    s.shutdown().await;
    // Bounded by the 1 s grace (plus scheduling on a loaded machine); before, shutdown
    // waited for the hook's 60 s timeout.
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "shutdown took {:?}",
        stopping.elapsed()
    );
}

/// Issue 15: the verification view of an active pack shows nothing of its checks while
/// it is not renewing, and the host's last failure (with when it was checked and when it
/// is checked next) while its renewal checks fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verification_view_shows_why_a_renewal_check_fails() {
    let dns = DnsServer::start().await;
    let s = start(&dns, |_| {}).await;
    let id = s.order(&["example.com"], "txt", 30, "google").await;
    let p = s
        .wait_for(&id, "a first check", |p| p.hosts[0].check.attempts >= 1)
        .await;
    publish_txt(&dns, &p);
    s.verification(true).await;
    let active = s
        .wait_for(&id, "active", |p| p.state == PackState::Active)
        .await;
    let items = s.verification(false).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["certificate_status"], "active");
    assert!(items[0].get("verification_error").is_none(), "{items:?}");
    assert!(items[0].get("next_check_on").is_none(), "{items:?}");

    // In the renewal window with the record gone: the renewal check fails and the view
    // says why.
    for (name, _) in txt_values(&active) {
        dns.remove(&name);
    }
    let checked_at = T0 + 23 * DAY + 10;
    s.clock.set(checked_at);
    let failing = s
        .wait_for(&id, "a renewal error", |p| !p.errors.is_empty())
        .await;
    assert_eq!(failing.state, PackState::Active);
    let reason = failing.hosts[0].check.reason.clone().unwrap();
    let items = s.verification(false).await;
    let item = &items[0];
    assert_eq!(item["certificate_status"], "active", "{item}");
    assert_eq!(item["verification_status"], false, "{item}");
    assert_eq!(item["verification_error"], reason.as_str(), "{item}");
    let rfc3339 = zonecert_server::clock::rfc3339;
    assert_eq!(item["last_checked_on"], rfc3339(checked_at), "{item}");
    assert_eq!(
        item["next_check_on"],
        rfc3339(failing.hosts[0].check.next_due_at),
        "{item}"
    );
    assert!(
        failing.hosts[0].check.next_due_at > checked_at,
        "{failing:?}"
    );

    // The record back and checked again: renewed, and the view shows no error.
    publish_txt(&dns, &failing);
    s.clock.set(failing.hosts[0].check.next_due_at);
    let renewed = s
        .wait_for(&id, "a renewed certificate", |p| {
            p.state == PackState::Active
                && p.certificate
                    .as_ref()
                    .is_some_and(|c| c.id != active.certificate.as_ref().unwrap().id)
        })
        .await;
    assert_eq!(renewed.hosts[0].check.reason, None);
    let items = s.verification(false).await;
    assert!(items[0].get("verification_error").is_none(), "{items:?}");
    assert!(items[0].get("next_check_on").is_none(), "{items:?}");
    s.shutdown().await;
}
