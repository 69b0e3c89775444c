//! ACME issuance through the whole server: a real server on loopback with `--acme
//! lets_encrypt=<Pebble>`, orders through the API, records set in the testkit's DNS
//! server (which Pebble's validator asks too) or served by its HTTP origin, the
//! certificate deployed to disk and checked against Pebble's root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acme_common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use acme_common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use zonecert_server::clock::{Clock, ManualClock, SharedClock, SystemClock};
use zonecert_server::config::{AcmeConfig, Config, Named};
use zonecert_server::model::{CaChoice, PackId, ZoneId};
use zonecert_testkit::ari_front::AriFront;
use zonecert_testkit::pebble::{Pebble, PebbleOptions};
use zonecert_testkit::{DnsServer, HttpOrigin, TestServer, free_dns_addr};

/// A [`TestServer`] with one zone and a token for it.
struct Server {
    inner: TestServer,
    token: String,
    zone: String,
}

/// Checks quick and on loopback, and `acme` (`lets_encrypt` ordering from Pebble).
fn configure_with(c: &mut Config, acme: AcmeConfig, http_port: u16) {
    c.dcv_http_port = http_port;
    c.dcv_allow_private_addresses = true;
    c.dcv_timeout = Duration::from_secs(2);
    c.poll_interval = Duration::from_millis(100);
    c.retry_coalesce = Duration::ZERO;
    c.acme = acme;
}

/// A server on `data` asking `dns`, with `--acme lets_encrypt=<pebble>` and the zone
/// `zone_name` (created unless the database has it).
async fn start(
    data: &Path,
    dns: &DnsServer,
    pebble: &Pebble,
    http_port: u16,
    zone_name: &str,
) -> Server {
    start_with_clock(
        data,
        dns,
        pebble,
        http_port,
        zone_name,
        Arc::new(SystemClock),
    )
    .await
}

async fn start_with_clock(
    data: &Path,
    dns: &DnsServer,
    pebble: &Pebble,
    http_port: u16,
    zone_name: &str,
    clock: SharedClock,
) -> Server {
    start_configured(data, dns, pebble, http_port, zone_name, clock, |_| {}).await
}

async fn start_configured(
    data: &Path,
    dns: &DnsServer,
    pebble: &Pebble,
    http_port: u16,
    zone_name: &str,
    clock: SharedClock,
    tweak: impl FnOnce(&mut Config) + Send + 'static,
) -> Server {
    let now = clock.now();
    let mut acme = Config::new(data);
    pebble.configure(&mut acme);
    let acme = acme.acme;
    let inner = TestServer::builder()
        .clock(clock)
        .data_dir(data)
        .resolvers([dns.addr()])
        .lifecycle(true)
        .dev_seed(false)
        .config(move |c| {
            configure_with(c, acme, http_port);
            tweak(c);
        })
        .await;
    Server::with_zone(inner, zone_name, now).await
}

impl Server {
    /// `inner` with the zone `zone_name` (created unless the database has it) and a token.
    async fn with_zone(inner: TestServer, zone_name: &str, now: i64) -> Server {
        let store = inner.store();
        let zone = match store
            .list_zones(Some(zone_name), None, 0, 1)
            .await
            .unwrap()
            .items
            .pop()
        {
            Some(z) => z,
            None => zonecert_server::admin::create_zone(store, zone_name, None, false, now)
                .await
                .unwrap(),
        };
        let token = inner
            .create_token(&["SSL and Certificates Write"], &[])
            .await;
        Server {
            inner,
            token,
            zone: zone.id.as_str().to_owned(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/zones/{}{path}", self.zone);
        let (status, v) = self
            .inner
            .call(method, &path, Some(&self.token), body)
            .await;
        assert!((200..300).contains(&status), "{status}: {v}");
        v
    }

    async fn order(&self, hosts: &[&str], method: &str) -> String {
        self.order_from(hosts, method, "lets_encrypt", 90).await
    }

    async fn order_from(&self, hosts: &[&str], method: &str, ca: &str, days: u32) -> String {
        let v = self
            .call(
                "POST",
                "/ssl/certificate_packs/order",
                Some(
                    json!({"type": "advanced", "hosts": hosts, "validation_method": method,
                            "validity_days": days, "certificate_authority": ca}),
                ),
            )
            .await;
        assert_eq!(v["result"]["status"], "initializing", "{v}");
        v["result"]["id"].as_str().unwrap().to_owned()
    }

    /// The pack's verification items, once its CA's records are there (the worker
    /// places the order right after the order request; this waits for that).
    async fn records(&self, pack: &str) -> Vec<Value> {
        self.records_within(pack, Duration::from_secs(40)).await
    }

    /// [`Self::records`], waiting up to `patience`.
    async fn records_within(&self, pack: &str, patience: Duration) -> Vec<Value> {
        let until = std::time::Instant::now() + patience;
        while std::time::Instant::now() < until {
            let v = self.call("GET", "/ssl/verification", None).await;
            let items: Vec<Value> = v["result"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["cert_pack_uuid"] == pack)
                .cloned()
                .collect();
            if items.iter().all(|i| i["verification_info"].is_object()) && !items.is_empty() {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let pack = self
            .call("GET", &format!("/ssl/certificate_packs/{pack}"), None)
            .await;
        panic!("the CA's records never appeared: {pack}")
    }

    /// Asks for checks (retry=true) until the pack reaches `status`.
    async fn wait_for(&self, pack: &str, status: &str) -> Value {
        self.wait_for_within(pack, status, Duration::from_secs(40))
            .await
    }

    /// [`Self::wait_for`], waiting up to `patience`.
    async fn wait_for_within(&self, pack: &str, status: &str, patience: Duration) -> Value {
        let mut last = Value::Null;
        let until = std::time::Instant::now() + patience;
        while std::time::Instant::now() < until {
            self.call("GET", "/ssl/verification?retry=true", None).await;
            last = self
                .call("GET", &format!("/ssl/certificate_packs/{pack}"), None)
                .await;
            if last["result"]["status"] == status {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("pack never {status}: {last}")
    }

    /// Reads the pack (through the API) until `cond` holds.
    async fn wait_until(&self, pack: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            last = self
                .call("GET", &format!("/ssl/certificate_packs/{pack}"), None)
                .await;
            if cond(&last["result"]) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never {what}: {last}")
    }

    /// Switches the pack to delegated (cname) validation and returns its verification
    /// item once the CNAME is shown, with an ACME order for cname when `acme`.
    async fn to_cname(&self, pack: &str, acme: bool) -> Value {
        let v = self
            .call(
                "PATCH",
                &format!("/ssl/verification/{pack}"),
                Some(json!({"validation_method": "cname"})),
            )
            .await;
        assert_eq!(v["result"]["validation_method"], "cname", "{v}");
        for _ in 0..300 {
            let ordered = !acme
                || self
                    .order_ref(pack)
                    .await
                    .is_some_and(|r| r.contains(r#""method":"cname""#));
            let v = self.call("GET", "/ssl/verification", None).await;
            let item = v["result"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["cert_pack_uuid"] == pack)
                .cloned();
            if let Some(item) = item
                && ordered
                && item["verification_info"]["cname_target"].is_string()
            {
                return item;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the pack never showed its CNAME")
    }

    async fn order_ref(&self, pack: &str) -> Option<String> {
        let zone = ZoneId::parse(&self.zone).unwrap();
        let id = PackId::parse(pack).unwrap();
        self.inner
            .store()
            .pack(&zone, &id)
            .await
            .unwrap()
            .unwrap()
            .order_ref
    }

    /// The pack as stored.
    async fn stored(&self, pack: &str) -> zonecert_server::model::Pack {
        let zone = ZoneId::parse(&self.zone).unwrap();
        let id = PackId::parse(pack).unwrap();
        self.inner.store().pack(&zone, &id).await.unwrap().unwrap()
    }

    /// Orders a txt pack for `host`, publishes the CA's record and waits until it is
    /// active; returns the pack's id.
    async fn active_txt_pack(&self, dns: &DnsServer, host: &str) -> String {
        let pack = self.order(&[host], "txt").await;
        let items = self.records(&pack).await;
        let (name, value) = txt_of(&items[0]);
        dns.set_txt(&name, &[&value]);
        self.wait_for(&pack, "active").await;
        pack
    }

    async fn shutdown(self) {
        self.inner.shutdown().await.unwrap();
    }
}

fn txt_of(item: &Value) -> (String, String) {
    let info = &item["verification_info"];
    (
        info["txt_name"].as_str().unwrap().to_owned(),
        info["txt_value"].as_str().unwrap().to_owned(),
    )
}

fn deployed(data: &Path, pack: &str) -> String {
    std::fs::read_to_string(data.join("certs").join(pack).join("fullchain.pem")).unwrap()
}

#[tokio::test]
async fn a_txt_pack_with_a_wildcard_goes_active_with_pebbles_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let data = tmp.path().join("data");
    let server = start(&data, &dns, &pebble, 80, "example.org").await;
    let pack = server.order(&["example.org", "*.example.org"], "txt").await;
    let items = server.records(&pack).await;
    assert_eq!(items.len(), 2);
    let records: Vec<(String, String)> = items.iter().map(txt_of).collect();
    assert!(
        records
            .iter()
            .all(|(n, _)| n == "_acme-challenge.example.org")
    );
    let order_ref = server.order_ref(&pack).await.expect("the order is stored");
    assert!(order_ref.contains(&pebble.directory), "{order_ref}");
    // The values are the CA's: they are in the stored order's challenges.
    for (_, value) in &records {
        assert!(
            order_ref.contains(value.as_str()),
            "{value} not in {order_ref}"
        );
    }
    let values: Vec<&str> = records.iter().map(|(_, v)| v.as_str()).collect();
    dns.set_txt("_acme-challenge.example.org", &values);
    let active = server.wait_for(&pack, "active").await;
    assert_eq!(active["result"]["certificate_authority"], "lets_encrypt");
    let root = pebble.issuing_root().await;
    assert_chain(
        &deployed(&data, &pack),
        &root,
        &["example.org", "*.example.org"],
    );
    assert_mode_0600(&data.join("certs").join(&pack).join("privkey.pem"));
    assert_eq!(server.order_ref(&pack).await, None, "the order is done");
    // The kept key was removed once deployed.
    let keys = data.join("acme").join("keys");
    let left = std::fs::read_dir(&keys).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "no pending key left in {}", keys.display());
    server.shutdown().await;
    pebble.stop().await;
}

#[tokio::test]
async fn an_http_pack_is_validated_by_zonecert_and_pebble_on_the_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let origin = HttpOrigin::start().await;
    dns.set_a("www.example.org", std::net::Ipv4Addr::LOCALHOST);
    let pebble = Pebble::start(
        tmp.path(),
        PebbleOptions {
            dns: Some(dns.addr()),
            http_port: Some(origin.port()),
            ..Default::default()
        },
    )
    .await;
    let data = tmp.path().join("data");
    let server = start(&data, &dns, &pebble, origin.port(), "www.example.org").await;
    let pack = server.order(&["www.example.org"], "http").await;
    let items = server.records(&pack).await;
    let url = items[0]["verification_info"]["http_url"].as_str().unwrap();
    let body = items[0]["verification_info"]["http_body"].as_str().unwrap();
    let path = url.strip_prefix("http://www.example.org").unwrap();
    origin.set_body(path, 200, body);
    server.wait_for(&pack, "active").await;
    assert_chain(
        &deployed(&data, &pack),
        &pebble.issuing_root().await,
        &["www.example.org"],
    );
    // Both zonecert's check and Pebble's validation fetched the token.
    let fetches = origin.requests().iter().filter(|r| r.path == path).count();
    assert!(fetches >= 2, "{fetches} fetches");
    server.shutdown().await;
    pebble.stop().await;
}

#[tokio::test]
async fn a_restarted_server_resumes_the_same_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let data = tmp.path().join("data");
    let server = start(&data, &dns, &pebble, 80, "restart.example.org").await;
    let pack = server.order(&["restart.example.org"], "txt").await;
    let before = server.records(&pack).await;
    let order_ref = server.order_ref(&pack).await.unwrap();
    server.shutdown().await;

    let server = start(&data, &dns, &pebble, 80, "restart.example.org").await;
    let after = server.records(&pack).await;
    assert_eq!(txt_of(&before[0]), txt_of(&after[0]), "the same tokens");
    let (name, value) = txt_of(&after[0]);
    dns.set_txt(&name, &[&value]);
    // Due at once after the restart: checked, then issued from the stored order.
    assert_eq!(
        server.order_ref(&pack).await.as_deref(),
        Some(order_ref.as_str())
    );
    server.wait_for(&pack, "active").await;
    assert_chain(
        &deployed(&data, &pack),
        &pebble.issuing_root().await,
        &["restart.example.org"],
    );
    server.shutdown().await;
    pebble.stop().await;
}

#[tokio::test]
async fn a_record_the_ca_refuses_gives_its_refusal_as_the_hosts_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    // Pebble asks its own DNS server: zonecert's check passes on the record zonecert
    // sees, Pebble finds another value (as a CA's other network perspective would).
    let pebble_dns = DnsServer::start().await;
    let pebble = Pebble::start(
        tmp.path(),
        PebbleOptions {
            dns: Some(pebble_dns.addr()),
            ..Default::default()
        },
    )
    .await;
    let data = tmp.path().join("data");
    let server = start(&data, &dns, &pebble, 80, "refused.example.org").await;
    let pack = server.order(&["refused.example.org"], "txt").await;
    let items = server.records(&pack).await;
    let (name, value) = txt_of(&items[0]);
    dns.set_txt(&name, &[&value]);
    pebble_dns.set_txt(&name, &["something-else"]);
    let refused = server.wait_for(&pack, "initializing").await;
    let errors = refused["result"]["validation_errors"].to_string();
    assert!(
        errors.contains("lets_encrypt refused the order"),
        "{errors}"
    );
    assert!(errors.contains("refused.example.org"), "{errors}");
    assert!(errors.contains("unauthorized"), "{errors}");
    // The host's own reason says so in the verification view too.
    let v = server.call("GET", "/ssl/verification", None).await;
    let item = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["cert_pack_uuid"] == pack.as_str())
        .unwrap()
        .clone();
    let reason = item["verification_error"].as_str().unwrap();
    assert!(reason.contains("refused the order"), "{reason}");
    server.shutdown().await;
    pebble.stop().await;
}

#[tokio::test]
async fn a_ca_that_went_away_is_the_reason_and_the_pack_finishes_when_it_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let mut pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let data = tmp.path().join("data");
    // A manual clock from now: the 5-minute retry is reached by moving it, not by waiting.
    let clock = ManualClock::new(SystemClock.now());
    let server =
        start_with_clock(&data, &dns, &pebble, 80, "away.example.org", clock.clone()).await;
    let pack = server.order(&["away.example.org"], "txt").await;
    let items = server.records(&pack).await;
    let (name, value) = txt_of(&items[0]);

    pebble.pause().await;
    dns.set_txt(&name, &[&value]);
    server
        .call("GET", "/ssl/verification?retry=true", None)
        .await;
    let waiting = server
        .wait_until(&pack, "the unreachable CA as the reason", |p| {
            p["validation_errors"]
                .to_string()
                .contains("could not be reached")
        })
        .await;
    assert_eq!(waiting["result"]["status"], "pending_issuance", "{waiting}");

    // Pebble comes back without its memory: the account and the order are gone, so the
    // pack orders again (a new account, new tokens) and is issued.
    pebble.resume().await;
    clock.advance(301);
    let reordered = server
        .wait_until(&pack, "a new order", |p| {
            p["status"] == "pending_validation"
        })
        .await;
    assert_eq!(reordered["result"]["status"], "pending_validation");
    // The account Pebble forgot was set aside (kept for the operator), a new one made.
    let accounts: Vec<String> = std::fs::read_dir(data.join("acme").join("accounts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        accounts.iter().any(|a| a.contains(".unknown-"))
            && accounts.iter().any(|a| a.ends_with(".json")),
        "{accounts:?}"
    );
    let items = server.records(&pack).await;
    let (name, value) = txt_of(&items[0]);
    dns.set_txt(&name, &[&value]);
    server.wait_for(&pack, "active").await;
    assert_chain(
        &deployed(&data, &pack),
        &pebble.issuing_root().await,
        &["away.example.org"],
    );
    server.shutdown().await;
    pebble.stop().await;
}

#[tokio::test]
async fn caa_binds_the_ca_to_its_acme_account_and_method() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let data = tmp.path().join("data");
    let clock = ManualClock::new(SystemClock.now());
    let server = start_with_clock(&data, &dns, &pebble, 80, "caa.example.org", clock.clone()).await;
    // RFC 8657: Let's Encrypt may issue, but only for another account.
    dns.set_caa(
        "caa.example.org",
        &[(
            0,
            "issue",
            "letsencrypt.org; accounturi=https://acme.example/acct/9",
        )],
    );
    let pack = server.order(&["caa.example.org"], "txt").await;
    let items = server.records(&pack).await;
    let (name, value) = txt_of(&items[0]);
    dns.set_txt(&name, &[&value]);
    server
        .call("GET", "/ssl/verification?retry=true", None)
        .await;
    let refused = server
        .wait_until(&pack, "the CAA refusal", |p| {
            p["validation_errors"].to_string().contains("accounturi")
                || p["validation_errors"].to_string().contains("ACME account")
        })
        .await;
    assert_eq!(refused["result"]["status"], "pending_validation");
    let errors = refused["result"]["validation_errors"].to_string();
    assert!(errors.contains("acct/9"), "{errors}");
    // The refusal names this server's account: bind CAA to it, and to dns-01.
    let account = errors
        .split("this server's is ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap()
        .to_owned();
    assert!(
        account.starts_with(&format!("https://127.0.0.1:{}/", pebble.ports.0)),
        "{account}"
    );
    dns.set_caa(
        "caa.example.org",
        &[(
            0,
            "issue",
            &format!("letsencrypt.org; accounturi={account}; validationmethods=dns-01"),
        )],
    );
    // CAA is asked again at the schedule's next slot.
    clock.advance(3600);
    server.wait_for(&pack, "active").await;
    server.shutdown().await;
    pebble.stop().await;
}

#[tokio::test]
async fn a_renewal_places_a_new_order_and_replaces_the_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let data = tmp.path().join("data");
    let clock = ManualClock::new(SystemClock.now());
    let server =
        start_with_clock(&data, &dns, &pebble, 80, "renew.example.org", clock.clone()).await;
    let pack = server.order(&["renew.example.org"], "txt").await;
    let items = server.records(&pack).await;
    let (name, first_value) = txt_of(&items[0]);
    dns.set_txt(&name, &[&first_value]);
    server.wait_for(&pack, "active").await;
    let first_chain = deployed(&data, &pack);
    let zone = ZoneId::parse(&server.zone).unwrap();
    let id = PackId::parse(&pack).unwrap();
    let read = || async {
        server
            .inner
            .store()
            .pack(&zone, &id)
            .await
            .unwrap()
            .unwrap()
    };
    let active = read().await;
    let first_serial = active.certificate.as_ref().unwrap().id.clone();
    let starts = active.renewal_starts_at().unwrap();

    // The renewal window opens: a new order, its tokens replacing the last ones, the
    // pack still active with its certificate.
    clock.set(starts + 60);
    let mut renewing = read().await;
    for _ in 0..200 {
        if renewing.order_ref.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        renewing = read().await;
    }
    assert!(
        renewing.order_ref.is_some(),
        "no renewal order: {renewing:?}"
    );
    assert_eq!(renewing.state, zonecert_server::model::PackState::Active);
    let zonecert_server::model::DcvRecord::Txt { value, .. } = &renewing.hosts[0].record else {
        panic!("not txt: {renewing:?}")
    };
    assert_ne!(value, &first_value, "the renewal's own token");
    dns.set_txt(&name, &[value]);
    // Checked again at the schedule's next slot.
    let mut renewed = read().await;
    for _ in 0..200 {
        clock.advance(120);
        if renewed.certificate.as_ref().map(|c| &c.id) != Some(&first_serial)
            && renewed.state == zonecert_server::model::PackState::Active
            && renewed.order_ref.is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        renewed = read().await;
    }
    assert_ne!(
        renewed.certificate.as_ref().map(|c| c.id.clone()),
        Some(first_serial),
        "renewed: {renewed:?}"
    );
    let chain = deployed(&data, &pack);
    assert_ne!(chain, first_chain);
    assert_chain(&chain, &pebble.issuing_root().await, &["renew.example.org"]);
    server.shutdown().await;
    pebble.stop().await;
}

/// Asks the DNS server at `server` for `name`/`qtype` over UDP (or TCP).
async fn ask(server: SocketAddr, name: &str, qtype: RecordType, tcp: bool) -> Message {
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let bytes = query.to_vec().unwrap();
    let answer = async {
        if tcp {
            let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
            let len = u16::try_from(bytes.len()).unwrap();
            stream.write_all(&len.to_be_bytes()).await.unwrap();
            stream.write_all(&bytes).await.unwrap();
            let len = stream.read_u16().await.unwrap();
            let mut buf = vec![0; usize::from(len)];
            stream.read_exact(&mut buf).await.unwrap();
            buf
        } else {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket.send_to(&bytes, server).await.unwrap();
            let mut buf = vec![0; 4096];
            let (len, _) = socket.recv_from(&mut buf).await.unwrap();
            buf.truncate(len);
            buf
        }
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("an answer within 5 s");
    Message::from_vec(&buf).unwrap()
}

fn txt_values(message: &Message) -> Vec<String> {
    let mut values: Vec<String> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(txt.to_string()),
            _ => None,
        })
        .collect();
    values.sort();
    values
}

#[tokio::test]
async fn a_cname_pack_is_validated_by_pebble_through_zonecerts_dns_responder() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let responder = free_dns_addr();
    // The loopback DNS delegates the service domain's DCV zone to zonecert's responder,
    // as the parent zone's NS records would for a recursive resolver.
    dns.forward("dcv.zonecert.localhost", responder);
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let data = tmp.path().join("data");
    let server = start_configured(
        &data,
        &dns,
        &pebble,
        80,
        "cname.example.org",
        Arc::new(SystemClock),
        move |c| c.dns_listen = Some(responder),
    )
    .await;
    let pack = server
        .order(&["cname.example.org", "*.cname.example.org"], "txt")
        .await;
    server.records(&pack).await;
    let item = server.to_cname(&pack, true).await;
    let info = &item["verification_info"];
    let name = info["cname"].as_str().unwrap().to_owned();
    let target = info["cname_target"].as_str().unwrap().to_owned();
    assert_eq!(name, "_acme-challenge.cname.example.org");
    assert!(target.ends_with(".dcv.zonecert.localhost"), "{target}");
    // Before the customer's CNAME exists, the responder already answers the CA's values
    // (both hosts share the name), over UDP and TCP.
    let order_ref = server.order_ref(&pack).await.unwrap();
    let answer = ask(responder, &target, RecordType::TXT, false).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    let values = txt_values(&answer);
    assert_eq!(values.len(), 2, "{answer:?}");
    for value in &values {
        assert!(
            order_ref.contains(value.as_str()),
            "{value} not in {order_ref}"
        );
    }
    assert_eq!(
        txt_values(&ask(responder, &target, RecordType::TXT, true).await),
        values
    );

    dns.set_cname(&name, &target);
    // Through the loopback DNS (what Pebble asks): the CNAME, then the responder's TXT.
    let through = ask(dns.addr(), &name, RecordType::TXT, false).await;
    assert_eq!(txt_values(&through), values, "{through:?}");
    server.wait_for(&pack, "active").await;
    assert_chain(
        &deployed(&data, &pack),
        &pebble.issuing_root().await,
        &["cname.example.org", "*.cname.example.org"],
    );
    // The order is done: the name is still delegated, with nothing to publish.
    let after = ask(responder, &target, RecordType::TXT, false).await;
    assert_eq!(after.metadata.response_code, ResponseCode::NoError);
    assert!(after.answers.is_empty(), "{after:?}");
    server.shutdown().await;
    pebble.stop().await;
}

#[tokio::test]
async fn the_dns_responder_answers_only_its_zone_and_survives_bad_queries() {
    let responder = free_dns_addr();
    let dns = DnsServer::start().await;
    let inner = TestServer::builder()
        .dev_seed(false)
        .resolvers([dns.addr()])
        .lifecycle(true)
        .config(move |c| {
            c.dns_listen = Some(responder);
            c.dcv_timeout = Duration::from_secs(2);
        })
        .await;
    let server = Server::with_zone(inner, "plain.example.org", SystemClock.now()).await;
    // A cname pack of the built-in CA: delegated, but no ACME challenge to publish.
    let v = server
        .call(
            "POST",
            "/ssl/certificate_packs/order",
            Some(json!({"type": "advanced", "hosts": ["plain.example.org"],
                        "validation_method": "txt", "validity_days": 90,
                        "certificate_authority": "google"})),
        )
        .await;
    let pack = v["result"]["id"].as_str().unwrap().to_owned();
    let item = server.to_cname(&pack, false).await;
    let target = item["verification_info"]["cname_target"]
        .as_str()
        .unwrap()
        .to_owned();
    let rcode = |m: &Message| m.metadata.response_code;

    // Garbage, a truncated header and an empty datagram get no answer or FORMERR, and
    // the responder goes on answering.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for junk in [&b""[..], &b"\x12"[..], &[0xff; 40][..], &[0u8; 12][..]] {
        socket.send_to(junk, responder).await.unwrap();
    }
    let mut tcp = tokio::net::TcpStream::connect(responder).await.unwrap();
    tcp.write_all(&[0, 200, 1, 2, 3]).await.unwrap();
    drop(tcp);

    let delegated = ask(responder, &target, RecordType::TXT, false).await;
    assert_eq!(rcode(&delegated), ResponseCode::NoError);
    assert!(delegated.answers.is_empty(), "{delegated:?}");
    let upper = ask(
        responder,
        &target.to_ascii_uppercase(),
        RecordType::TXT,
        true,
    )
    .await;
    assert_eq!(rcode(&upper), ResponseCode::NoError);
    // Above a delegated name: an empty non-terminal, not NXDOMAIN (a resolver that
    // minimises its queries would stop at an NXDOMAIN).
    let parent = target.split_once('.').unwrap().1;
    assert_eq!(
        rcode(&ask(responder, parent, RecordType::A, false).await),
        ResponseCode::NoError
    );
    assert_eq!(
        rcode(&ask(responder, "dcv.zonecert.localhost", RecordType::SOA, false).await),
        ResponseCode::NoError
    );
    assert_eq!(
        rcode(
            &ask(
                responder,
                &format!("nothing.{parent}"),
                RecordType::TXT,
                false
            )
            .await
        ),
        ResponseCode::NXDomain
    );
    assert_eq!(
        rcode(&ask(responder, "example.com", RecordType::TXT, false).await),
        ResponseCode::Refused
    );
    assert_eq!(
        rcode(&ask(responder, "zonecert.localhost", RecordType::TXT, true).await),
        ResponseCode::Refused
    );
    server.shutdown().await;
}

#[tokio::test]
async fn refused_nonces_do_not_stop_a_pack_from_going_active() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    // Half of the good nonces refused with badNonce, at every step of the lifecycle:
    // the account, the order, the authorizations, the challenges, finalize, download.
    let pebble = Pebble::start(
        tmp.path(),
        PebbleOptions {
            dns: Some(dns.addr()),
            nonce_reject_percent: 50,
            ..Default::default()
        },
    )
    .await;
    let data = tmp.path().join("data");
    let server = start(&data, &dns, &pebble, 80, "nonce.example.org").await;
    let pack = server
        .order(&["nonce.example.org", "*.nonce.example.org"], "txt")
        .await;
    let items = server.records(&pack).await;
    let values: Vec<String> = items.iter().map(|i| txt_of(i).1).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    dns.set_txt("_acme-challenge.nonce.example.org", &values);
    server.wait_for(&pack, "active").await;
    assert_chain(
        &deployed(&data, &pack),
        &pebble.issuing_root().await,
        &["nonce.example.org", "*.nonce.example.org"],
    );
    assert!(
        pebble.log_text().contains("badNonce") || pebble.log_text().contains("nonce"),
        "Pebble refused no nonce"
    );
    server.shutdown().await;
    pebble.stop().await;
}

#[tokio::test]
async fn deleting_a_pack_revokes_its_certificate_at_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let mut pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let data = tmp.path().join("data");
    let server = start_configured(
        &data,
        &dns,
        &pebble,
        80,
        "revoke.example.org",
        Arc::new(SystemClock),
        |c| c.acme.revoke_on_delete = true,
    )
    .await;
    let pack = server.active_txt_pack(&dns, "revoke.example.org").await;
    let serial = server.stored(&pack).await.certificate.unwrap().id;
    assert_eq!(pebble.cert_status(&serial).await["Status"], "Valid");

    server
        .call("DELETE", &format!("/ssl/certificate_packs/{pack}"), None)
        .await;
    // Revoked in the background, by the account that ordered it.
    let mut status = Value::Null;
    for _ in 0..100 {
        status = pebble.cert_status(&serial).await;
        if status["Status"] == "Revoked" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["Status"], "Revoked", "{status}");
    assert_eq!(status["Reason"], 5, "cessationOfOperation: {status}");

    // A CA that cannot be reached never holds a deletion up: the pack is gone at once,
    // the certificate stays valid (the failure is logged).
    let second = server.active_txt_pack(&dns, "revoke.example.org").await;
    pebble.pause().await;
    let started = std::time::Instant::now();
    server
        .call("DELETE", &format!("/ssl/certificate_packs/{second}"), None)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the deletion waited {:?}",
        started.elapsed()
    );
    let (status, _) = server
        .inner
        .call(
            "GET",
            &format!("/zones/{}/ssl/certificate_packs/{second}", server.zone),
            Some(&server.token),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert!(!data.join("certs").join(&second).exists());
    // The certificate waits in the store's queue, its failed attempt recorded, to be
    // tried again (`cli/tests/acme_revoke.rs` has it revoked after a restart).
    let mut queued = Vec::new();
    for _ in 0..100 {
        queued = server.inner.store().queued_revocations().await.unwrap();
        if queued.first().is_some_and(|q| q.attempts > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].pack_id, second.as_str());
    assert!(
        queued[0].attempts > 0 && queued[0].last_error.is_some(),
        "{queued:?}"
    );
    server.shutdown().await;
    pebble.stop().await;
}

#[tokio::test]
async fn without_the_flag_a_deleted_packs_certificate_is_not_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let data = tmp.path().join("data");
    let server = start(&data, &dns, &pebble, 80, "kept.example.org").await;
    let pack = server.active_txt_pack(&dns, "kept.example.org").await;
    let serial = server.stored(&pack).await.certificate.unwrap().id;
    server
        .call("DELETE", &format!("/ssl/certificate_packs/{pack}"), None)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pebble.cert_status(&serial).await["Status"], "Valid");
    // The deletion queued it; the lifecycle, with revocation off, dropped it.
    assert!(
        server
            .inner
            .store()
            .queued_revocations()
            .await
            .unwrap()
            .is_empty()
    );
    server.shutdown().await;
    pebble.stop().await;
}

/// Two nodes on one PostgreSQL database share one ACME account (sealed in the database):
/// an order placed by node A is finished by node B after A stopped, and a certificate
/// ordered through A, deleted through B, is revoked by B as the account that ordered it
/// (Pebble accepts a revocation only from the ordering account, or the certificate's
/// key, and an order's requests only from its account).
#[tokio::test]
async fn a_certificate_ordered_by_one_node_is_revoked_through_another() {
    let Some(cluster) = zonecert_testkit::PgCluster::for_test() else {
        return;
    };
    let url = cluster.create_database().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let kek = tmp.path().join("secret.key");
    zonecert_server::keys::Kek::load_or_create(&kek).unwrap();
    let node = |url: String, kek: std::path::PathBuf| {
        move |c: &mut Config| {
            c.database = Some(url);
            c.secret_key_file = Some(kek);
            c.acme.revoke_on_delete = true;
            // A stopped node's packs are another's after 2 s.
            c.lease = Duration::from_secs(2);
        }
    };
    let (data_a, data_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = start_configured(
        &data_a,
        &dns,
        &pebble,
        80,
        "nodes.example.org",
        Arc::new(SystemClock),
        node(url.clone(), kek.clone()),
    )
    .await;
    let pack = a.active_txt_pack(&dns, "nodes.example.org").await;
    let serial = a.stored(&pack).await.certificate.unwrap().id;
    assert_eq!(pebble.cert_status(&serial).await["Status"], "Valid");
    // A second pack's order is placed by A; its record is published only after A stopped.
    let taken_over = a.order(&["nodes.example.org"], "txt").await;
    let (name, value) = txt_of(&a.records(&taken_over).await[0]);
    let order = a.order_ref(&taken_over).await.expect("A placed the order");
    a.shutdown().await;

    let b = start_configured(
        &data_b,
        &dns,
        &pebble,
        80,
        "nodes.example.org",
        Arc::new(SystemClock),
        node(url, kek),
    )
    .await;
    // B finishes A's order: with the record of A's order only, a new order could not
    // validate.
    dns.set_txt(&name, &[&value]);
    b.wait_for(&taken_over, "active").await;
    let finished = b.stored(&taken_over).await;
    assert!(
        finished.certificate.is_some(),
        "order {order}: {finished:?}"
    );

    b.call("DELETE", &format!("/ssl/certificate_packs/{pack}"), None)
        .await;
    let mut status = Value::Null;
    for _ in 0..150 {
        status = pebble.cert_status(&serial).await;
        if status["Status"] == "Revoked" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status["Status"],
        "Revoked",
        "{status}: queue {:?}",
        b.inner.store().queued_revocations().await
    );
    assert!(
        !data_b.join("acme").join("accounts").exists(),
        "node B made no account of its own: it used the database's"
    );
    let shared = b
        .inner
        .store()
        .acme_account(&pebble.directory)
        .await
        .unwrap();
    let sealed = shared.expect("the account is in the database");
    assert!(
        !String::from_utf8_lossy(&sealed).contains("PRIVATE KEY")
            && !String::from_utf8_lossy(&sealed).contains("key_pkcs8"),
        "sealed, not in clear"
    );
    b.shutdown().await;
    pebble.stop().await;
}

/// Certificates a node ordered with its own ACME account before another account became
/// the database's (`load_shared_or_create`; here: the database's account replaced by a
/// second one while the server is down) are refused to the shared account by the CA.
/// The node that ordered them still has its account file: it revokes them as that
/// account. A node without the file cannot: the queue's row says why, and once the file
/// is back (its node claims the row) the certificate is revoked.
#[tokio::test]
async fn a_certificate_of_a_nodes_own_account_is_revoked_once_the_account_is_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let data = tmp.path().join("data");
    let host = "own.example.org";
    let revoking = |c: &mut Config| c.acme.revoke_on_delete = true;
    let server = start_configured(
        &data,
        &dns,
        &pebble,
        80,
        host,
        Arc::new(SystemClock),
        revoking,
    )
    .await;
    let first = server.active_txt_pack(&dns, host).await;
    let second = server.active_txt_pack(&dns, host).await;
    let serial_of = |p: zonecert_server::model::Pack| p.certificate.unwrap().id;
    let first_serial = serial_of(server.stored(&first).await);
    let second_serial = serial_of(server.stored(&second).await);
    server.shutdown().await;

    // Another account (another node's own, say) becomes the database's.
    let elsewhere = tmp.path().join("elsewhere");
    let settings = pebble.acme_settings();
    let other = zonecert_server::issuance::acme::AcmeIssuer::new(settings.clone(), &elsewhere)
        .unwrap()
        .account_id()
        .await
        .unwrap();
    let credentials = std::fs::read(zonecert_server::issuance::acme::account_file(
        &settings, &elsewhere,
    ))
    .unwrap();
    {
        let store = zonecert_server::store::Store::open_sqlite(&data).unwrap();
        let own = store
            .acme_account(&pebble.directory)
            .await
            .unwrap()
            .expect("the node published its account");
        assert!(
            store
                .delete_acme_account(&pebble.directory, &own)
                .await
                .unwrap()
        );
        let kek = Config::new(&data).load_kek(false).unwrap();
        let aad = zonecert_server::issuance::acme::account_aad(&pebble.directory);
        let sealed = kek.seal(&aad, &credentials);
        assert!(
            store
                .insert_acme_account(&pebble.directory, &sealed)
                .await
                .unwrap()
        );
    }

    let server = start_configured(
        &data,
        &dns,
        &pebble,
        80,
        host,
        Arc::new(SystemClock),
        revoking,
    )
    .await;
    server
        .call("DELETE", &format!("/ssl/certificate_packs/{first}"), None)
        .await;
    let revoked = |serial: String| {
        let pebble = &pebble;
        let server = &server;
        async move {
            let mut status = Value::Null;
            for _ in 0..150 {
                status = pebble.cert_status(&serial).await;
                if status["Status"] == "Revoked" {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!(
                "not revoked: {status}; queue {:?}",
                server.inner.store().queued_revocations().await
            )
        }
    };
    let status = revoked(first_serial).await;
    assert_eq!(status["Reason"], 5, "cessationOfOperation: {status}");

    // Without the node's own account file, the row says why it waits.
    let file = zonecert_server::issuance::acme::account_file(&pebble.acme_settings(), &data);
    let aside = file.with_extension("moved");
    std::fs::rename(&file, &aside).unwrap();
    server
        .call("DELETE", &format!("/ssl/certificate_packs/{second}"), None)
        .await;
    let mut queued = Vec::new();
    for _ in 0..100 {
        queued = server.inner.store().queued_revocations().await.unwrap();
        if queued.first().is_some_and(|q| q.attempts > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queued.len(), 1, "{queued:?}");
    let why = queued[0].last_error.clone().unwrap_or_default();
    assert!(
        why.contains(&other) && why.contains("ordered by another account"),
        "{why}"
    );
    assert_eq!(pebble.cert_status(&second_serial).await["Status"], "Valid");
    // The file is back: the row's next attempt (after its backoff) revokes it.
    std::fs::rename(&aside, &file).unwrap();
    revoked(second_serial).await;
    server.shutdown().await;
    pebble.stop().await;
}

/// A test control (`/_zonecert/v1/...`) of a server started with `test_controls`.
async fn control(server: &Server, token: &str, path: &str, body: Value) -> Value {
    let url = format!("http://{}/_zonecert/v1{path}", server.inner.addr());
    let rsp = server
        .inner
        .http()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(rsp.status().is_success(), "{path}: {}", rsp.status());
    rsp.json().await.unwrap()
}

/// RFC 3339 of Unix seconds.
fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Debian's Pebble 2.4 has no `renewalInfo`: the testkit's scripted front (an HTTPS
/// proxy before Pebble, adding it to the directory) answers the window, and sees the
/// renewal order's `replaces`. Time travels through the test controls' clock.
#[tokio::test]
async fn the_cas_renewal_information_decides_when_to_renew_and_the_order_names_the_replaced_certificate()
 {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let front = zonecert_testkit::ari_front::AriFront::start(&pebble).await;
    let start = SystemClock.now();
    // Ten days from now, far earlier than the window of the certificate's validity.
    let (window_start, window_end) = (start + 10 * 86_400, start + 10 * 86_400 + 3600);
    front.set_window(Some(zonecert_testkit::ari_front::RenewalWindow {
        start: rfc3339(window_start),
        end: rfc3339(window_end),
        retry_after_secs: 6 * 3600,
    }));
    let data = tmp.path().join("data");
    let directory = front.directory.clone();
    let server = start_configured(
        &data,
        &dns,
        &pebble,
        80,
        "ari.example.org",
        Arc::new(SystemClock),
        move |c| {
            c.acme.directories[0].value = directory;
            c.test_controls = true;
        },
    )
    .await;
    let controls = server
        .inner
        .create_token(&["zonecert Test Controls"], &[])
        .await;
    let pack = server.active_txt_pack(&dns, "ari.example.org").await;
    let first = server.stored(&pack).await;
    let cert = first.certificate.clone().unwrap();
    // Asked once deployed; the advice replaces the window of the certificate's validity.
    let asked = front.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    let renew_at = cert.renew_at.expect("the CA's advice is recorded");
    assert!(
        (window_start..=window_end).contains(&renew_at),
        "{renew_at} outside the window"
    );
    let validity_window = cert.not_after - 30 * 86_400;
    assert!(renew_at < validity_window, "the advice is earlier");
    assert_eq!(first.renewal_starts_at(), Some(renew_at));
    // Due again when the CA asked to be asked again (6 hours), not at the renewal.
    assert!(
        first
            .hosts
            .iter()
            .all(|h| h.check.next_due_at <= SystemClock.now() + 6 * 3600 + 5),
        "{first:?}"
    );

    // Seven hours on: asked again, no renewal yet.
    control(&server, &controls, "/clock/advance", json!({"by": "7h"})).await;
    server
        .wait_until(&pack, "the CA asked again", |_| front.asked().len() >= 2)
        .await;
    assert_eq!(
        server.stored(&pack).await.order_ref,
        None,
        "not renewing yet"
    );

    // Past the advised time: the renewal order, naming the certificate it replaces.
    control(&server, &controls, "/clock/advance", json!({"by": "10d"})).await;
    let mut renewal = server.stored(&pack).await;
    for _ in 0..200 {
        if renewal.order_ref.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        renewal = server.stored(&pack).await;
    }
    assert_eq!(renewal.state, zonecert_server::model::PackState::Active);
    let order_ref = renewal
        .order_ref
        .clone()
        .unwrap_or_else(|| panic!("no renewal order: {renewal:?} {:?}", front.new_orders()));
    assert!(order_ref.contains(&asked[0]), "{order_ref}");
    let orders = front.new_orders();
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert_eq!(
        orders[0].get("replaces"),
        None,
        "the first order replaces nothing"
    );
    assert_eq!(orders[1]["replaces"], asked[0].as_str(), "{orders:?}");

    // Its records published, the new certificate replaces the old one and is asked about.
    let zonecert_server::model::DcvRecord::Txt { name, value } = &renewal.hosts[0].record else {
        panic!("not txt: {renewal:?}")
    };
    dns.set_txt(name, &[value]);
    let mut renewed = renewal;
    for _ in 0..100 {
        control(&server, &controls, "/clock/advance", json!({"by": "2m"})).await;
        renewed = server.stored(&pack).await;
        if renewed.certificate.as_ref().map(|c| &c.id) != Some(&cert.id)
            && renewed.order_ref.is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = renewed.certificate.clone().expect("renewed");
    assert_ne!(second.id, cert.id, "{renewed:?}");
    assert_chain(
        &second.chain_pem,
        &pebble.issuing_root().await,
        &["ari.example.org"],
    );
    assert!(front.asked().len() >= 3 && front.asked().last() != Some(&asked[0]));
    drop(front);
    server.shutdown().await;
    pebble.stop().await;
}

/// Many packs placing their orders at once do not all ask the CA at once: one issuer
/// keeps at most 16 requests in flight to its directory (unbounded, 1,000 packs' first
/// requests all timed out in `bench/acme.sh`), and still more than one. The front holds
/// each request 100 ms, so requests sent together overlap; 24 orders of 2 hosts each
/// make 24 `newOrder`s at once without the bound (seen: 24).
#[tokio::test]
async fn requests_to_one_ca_are_bounded_while_many_orders_are_placed() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let front = zonecert_testkit::ari_front::AriFront::start(&pebble).await;
    let data = tmp.path().join("data");
    let directory = front.directory.clone();
    let server = start_configured(
        &data,
        &dns,
        &pebble,
        80,
        "many.example.org",
        Arc::new(SystemClock),
        move |c| c.acme.directories[0].value = directory,
    )
    .await;
    // The account exists before the orders (its creation is one request at a time).
    let first = server.order(&["many.example.org"], "txt").await;
    server.records(&first).await;
    front.delay_requests(Duration::from_millis(100));
    let mut packs = Vec::new();
    for i in 0..24 {
        let host = format!("h{i}.many.example.org");
        packs.push(server.order(&["many.example.org", &host], "txt").await);
    }
    for pack in &packs {
        assert_eq!(server.records(pack).await.len(), 2, "the CA's records");
    }
    let most = front.most_in_flight();
    assert!(
        (2..=16).contains(&most),
        "{most} requests to the CA at once (24 orders placed)"
    );
    server.shutdown().await;
    pebble.stop().await;
}

/// A queued certificate is revoked at the directory that ordered it, not at whatever its
/// CA's name points to when the queue is worked off: ordered through one directory (the
/// testkit's front), the name then pointed at another (Pebble itself: another URL, so
/// another account), the deleted pack's row is dropped, never sent to the other
/// directory's account (which would be refused, and retried until the certificate
/// expires, as before the directory was kept).
#[tokio::test]
async fn a_certificate_is_revoked_only_at_the_directory_that_ordered_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let front = zonecert_testkit::ari_front::AriFront::start(&pebble).await;
    let data = tmp.path().join("data");
    let directory = front.directory.clone();
    let server = start_configured(
        &data,
        &dns,
        &pebble,
        80,
        "moved.example.org",
        Arc::new(SystemClock),
        move |c| {
            c.acme.directories[0].value = directory;
            c.acme.revoke_on_delete = true;
        },
    )
    .await;
    let pack = server.active_txt_pack(&dns, "moved.example.org").await;
    let certificate = server.stored(&pack).await.certificate.unwrap();
    assert_eq!(
        certificate.acme_directory.as_deref(),
        Some(front.directory.as_str())
    );
    server.shutdown().await;

    // `lets_encrypt` now names Pebble's own directory URL.
    let server = start_configured(
        &data,
        &dns,
        &pebble,
        80,
        "moved.example.org",
        Arc::new(SystemClock),
        |c| c.acme.revoke_on_delete = true,
    )
    .await;
    server
        .call("DELETE", &format!("/ssl/certificate_packs/{pack}"), None)
        .await;
    let mut queued = Vec::new();
    for _ in 0..50 {
        queued = server.inner.store().queued_revocations().await.unwrap();
        if queued.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(queued.is_empty(), "still queued: {queued:?}");
    assert_eq!(pebble.cert_status(&certificate.id).await["Status"], "Valid");
    server.shutdown().await;
    pebble.stop().await;
}

/// Publishes the TXT records of `items` (verification items), every value of one name
/// together (packs of one zone share the apex's name).
fn publish(dns: &DnsServer, items: &[Value]) {
    let mut by_name: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for item in items {
        let (name, value) = txt_of(item);
        by_name.entry(name).or_default().push(value);
    }
    for (name, values) in by_name {
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        dns.set_txt(&name, &values);
    }
}

/// Orders one txt pack of `apex` and each host of `hosts` from `lets_encrypt`,
/// publishes their records as soon as they are shown, and returns how long they took
/// from the first order until all were active.
async fn time_to_active(
    server: &Server,
    dns: &DnsServer,
    apex: &str,
    hosts: &[String],
) -> Duration {
    time_to_active_within(server, dns, apex, hosts, Duration::from_secs(40)).await
}

/// [`time_to_active`], waiting up to `patience` for each pack's records and activation.
async fn time_to_active_within(
    server: &Server,
    dns: &DnsServer,
    apex: &str,
    hosts: &[String],
    patience: Duration,
) -> Duration {
    let started = std::time::Instant::now();
    let mut packs = Vec::new();
    for host in hosts {
        packs.push(server.order(&[apex, host], "txt").await);
    }
    let mut items = Vec::new();
    for pack in &packs {
        items.extend(server.records_within(pack, patience).await);
    }
    publish(dns, &items);
    for pack in &packs {
        server.wait_for_within(pack, "active", patience).await;
    }
    started.elapsed()
}

/// A CA that keeps refusing holds no other CA's packs up. `google` is a Pebble that
/// requires External Account Binding, none configured, 150 ms away (the testkit's front
/// holds each request that long, as a CA on another continent would): each of its 150
/// packs is refused when zonecert creates the account. Before the refusal was shared by
/// every pack waiting for the account (`AcmeIssuer::account`), each pack asked the CA in
/// turn, half a second each, while holding a place in the worker's hand (96 places):
/// `lets_encrypt`'s packs, ordered after them, waited for most of them (seen, debug
/// build: 2 packs active in 0.54 s alone, 26.9 s behind the refusing CA's packs; with
/// the refusal shared, 0.86 s and 0.89 s behind, 0.54 s and 0.61 s alone). Every
/// refused pack says what to configure.
#[tokio::test]
async fn a_ca_that_keeps_refusing_does_not_hold_up_another_cas_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let strict = Pebble::start(
        tmp.path(),
        PebbleOptions {
            dns: Some(dns.addr()),
            eab_keys: vec![(
                "kid-1".into(),
                "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W".into(),
            )],
            ..Default::default()
        },
    )
    .await;
    let front = AriFront::start(&strict).await;
    front.delay_requests(Duration::from_millis(150));
    let data = tmp.path().join("data");
    let (google, google_root) = (
        front.directory.clone(),
        strict.tls_root.display().to_string(),
    );
    let server = start_configured(
        &data,
        &dns,
        &pebble,
        80,
        "two.example.org",
        Arc::new(SystemClock),
        move |c| {
            c.quota_advanced = 1000;
            c.acme.directories.push(Named {
                ca: CaChoice::Google,
                value: google,
            });
            c.acme.roots.push(Named {
                ca: CaChoice::Google,
                value: google_root,
            });
        },
    )
    .await;
    // `lets_encrypt`'s account first, then two of its packs alone.
    server.active_txt_pack(&dns, "two.example.org").await;
    let hosts = |tag: &str| two_hosts(tag, "two.example.org");
    let alone = time_to_active(&server, &dns, "two.example.org", &hosts("alone")).await;

    let mut refused = Vec::new();
    for i in 0..150 {
        let host = format!("g{i}.two.example.org");
        refused.push(
            server
                .order_from(&["two.example.org", &host], "txt", "google", 90)
                .await,
        );
    }
    let behind = time_to_active(&server, &dns, "two.example.org", &hosts("behind")).await;
    assert!(
        behind <= alone * 2 + Duration::from_secs(5),
        "lets_encrypt's packs: {behind:?} behind 150 refused google packs, {alone:?} alone"
    );

    // Every refused pack says why, and what to do, and waits to be tried again.
    for pack in &refused {
        let p = server
            .wait_until(pack, "the refusal as the reason", |p| {
                p["validation_errors"]
                    .to_string()
                    .contains("External Account")
            })
            .await;
        assert_eq!(p["result"]["status"], "initializing", "{p}");
        let reason = p["result"]["validation_errors"].to_string();
        if pack == &refused[0] {
            eprintln!("a refused google pack's reason: {reason}");
        }
        assert!(
            reason.contains("ordering from google failed")
                && reason.contains("--acme-eab NAME=KEY_ID:HMAC_KEY"),
            "{reason}"
        );
    }
    eprintln!(
        "lets_encrypt's 2 packs: {alone:?} alone, {behind:?} behind 150 refused google packs"
    );
    drop(front);
    server.shutdown().await;
    strict.stop().await;
    pebble.stop().await;
}

/// An account deactivated at the CA (RFC 8555 section 7.3.6, here with the account's key
/// from the data directory) is never accepted again: the pack's reason says so, names the
/// account and what zonecert did: set it aside (its file renamed, the database's copy
/// removed) and create a new one for the next order, which goes active. Before, the
/// reason told the operator to move the file away, which did not help (the database's
/// copy was used again) and every later order was refused the same way.
#[tokio::test]
async fn a_deactivated_account_is_reported_and_replaced_by_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let data = tmp.path().join("data");
    let clock = ManualClock::new(SystemClock.now());
    let server =
        start_with_clock(&data, &dns, &pebble, 80, "gone.example.org", clock.clone()).await;
    server.active_txt_pack(&dns, "gone.example.org").await;
    let store = server.inner.store().clone();
    let shared = store.acme_account(&pebble.directory).await.unwrap();
    assert!(shared.is_some(), "the account is the database's");
    let accounts = data.join("acme").join("accounts");
    let file = std::fs::read_dir(&accounts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let old = deactivate_account(&file, &pebble.tls_root_pem).await;

    let pack = server
        .order(&["gone.example.org", "www.gone.example.org"], "txt")
        .await;
    let refused = server
        .wait_until(&pack, "the deactivated account as the reason", |p| {
            p["validation_errors"].to_string().contains("deactivated")
        })
        .await;
    assert_eq!(refused["result"]["status"], "initializing", "{refused}");
    let reason = refused["result"]["validation_errors"].to_string();
    eprintln!("the deactivated account's reason: {reason}");
    assert!(
        reason.contains(&old) && reason.contains("creates a new account"),
        "{reason}"
    );
    // Set aside: the file kept under another name, the database's copy gone.
    let names: Vec<String> = std::fs::read_dir(&accounts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.contains(".unusable-")), "{names:?}");
    assert!(reason.contains(".unusable-"), "{reason}");
    assert_ne!(store.acme_account(&pebble.directory).await.unwrap(), shared);

    // At the retry, a new account orders, and the pack goes active.
    clock.advance(301);
    publish(&dns, &server.records(&pack).await);
    server.wait_for(&pack, "active").await;
    let new = std::fs::read_to_string(&file).unwrap();
    assert!(!new.contains(&old), "a new account file");
    assert!(
        store
            .acme_account(&pebble.directory)
            .await
            .unwrap()
            .is_some()
    );
    server.shutdown().await;
    pebble.stop().await;
}

/// An account the CA revoked (RFC 8555 section 7.1.6: the CA's doing, unlike a
/// deactivation; Let's Encrypt revokes the accounts whose key it blocked as compromised)
/// is answered on every request as Let's Encrypt answers it (Boulder: 403
/// `unauthorized`, `Unable to validate JWS :: Account is not valid, has status
/// "revoked"`; the testkit's front, in front of the real Pebble, which cannot revoke an
/// account). The pack's reason says the CA revoked the account, names it, where its file
/// went and what to do (ask the CA why; a compromised key means the data directory's
/// keys are exposed); the account is set aside as a deactivated one is (its file
/// renamed, the database's copy removed), and at the retry a new account orders and the
/// pack goes active, the revoked one never used again.
#[tokio::test]
async fn a_revoked_account_is_reported_and_replaced_by_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let front = AriFront::start(&pebble).await;
    let data = tmp.path().join("data");
    let clock = ManualClock::new(SystemClock.now());
    let directory = front.directory.clone();
    let server = start_configured(
        &data,
        &dns,
        &pebble,
        80,
        "revoked.example.org",
        clock.clone(),
        move |c| c.acme.directories[0].value = directory,
    )
    .await;
    server.active_txt_pack(&dns, "revoked.example.org").await;
    let store = server.inner.store().clone();
    let shared = store.acme_account(&front.directory).await.unwrap();
    assert!(shared.is_some(), "the account is the database's");
    let accounts = data.join("acme").join("accounts");
    let file = std::fs::read_dir(&accounts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let old: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let old = old["id"].as_str().unwrap().to_owned();
    front.revoke_account(&old);

    let pack = server
        .order(&["revoked.example.org", "www.revoked.example.org"], "txt")
        .await;
    let refused = server
        .wait_until(&pack, "the revoked account as the reason", |p| {
            p["validation_errors"].to_string().contains("revoked")
        })
        .await;
    assert_eq!(refused["result"]["status"], "initializing", "{refused}");
    let reason = refused["result"]["validation_errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    eprintln!("the revoked account's reason: {reason}");
    assert!(
        reason.contains("the CA revoked the ACME account")
            && reason.contains(&old)
            && reason.contains(r#"has status "revoked""#)
            && reason.contains("creates a new account")
            && reason.contains("ask the CA why"),
        "{reason}"
    );
    // Set aside: the file kept under another name, the database's copy gone.
    let names: Vec<String> = std::fs::read_dir(&accounts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.contains(".unusable-")), "{names:?}");
    assert!(reason.contains(".unusable-"), "{reason}");
    assert_ne!(store.acme_account(&front.directory).await.unwrap(), shared);
    let refusals = front.revoked_account_requests();
    assert!(refusals >= 1);

    // At the retry, a new account orders, and the pack goes active.
    clock.advance(301);
    publish(&dns, &server.records(&pack).await);
    server.wait_for(&pack, "active").await;
    let new = std::fs::read_to_string(&file).unwrap();
    assert!(!new.contains(&old), "a new account file");
    assert!(
        store
            .acme_account(&front.directory)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        front.revoked_account_requests(),
        refusals,
        "the revoked account was used again"
    );
    drop(front);
    server.shutdown().await;
    pebble.stop().await;
}

/// `rateLimited` with `Retry-After` (Pebble never rate-limits: the testkit's front answers
/// the first `newOrder` so, in front of the real Pebble): the pack's reason names the rate
/// limit and the time the CA gave, zonecert does not order again before it (not for a
/// `retry=true` either), and orders after it, and the pack goes active.
#[tokio::test]
async fn a_rate_limited_order_waits_for_the_cas_retry_after() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let front = AriFront::start(&pebble).await;
    let data = tmp.path().join("data");
    let clock = ManualClock::new(SystemClock.now());
    let directory = front.directory.clone();
    let server = start_configured(
        &data,
        &dns,
        &pebble,
        80,
        "limited.example.org",
        clock.clone(),
        move |c| c.acme.directories[0].value = directory,
    )
    .await;
    // Twenty minutes: longer than zonecert's own 5-minute retry.
    front.rate_limit("/order-plz", 1, 1200);
    let pack = server.order(&["limited.example.org"], "txt").await;
    let limited = server
        .wait_until(&pack, "the rate limit as the reason", |p| {
            p["validation_errors"].to_string().contains("rate limit")
        })
        .await;
    assert_eq!(limited["result"]["status"], "initializing", "{limited}");
    let refused = front.rate_limited();
    assert_eq!(refused.len(), 1);
    let reason = limited["result"]["validation_errors"].to_string();
    eprintln!("the rate-limited pack's reason: {reason}");
    let at = |s: u64| {
        let t = time::OffsetDateTime::from(refused[0] + Duration::from_secs(s));
        rfc3339(t.unix_timestamp())
    };
    assert!(
        reason.contains(&at(1200)) || reason.contains(&at(1201)),
        "{reason} (refused at {})",
        at(0)
    );

    // Ten minutes on, with a retry asked for: not ordered again.
    clock.advance(600);
    server
        .call("GET", "/ssl/verification?retry=true", None)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(front.rate_limited().len(), 1);
    assert!(front.new_orders().is_empty(), "{:?}", front.new_orders());
    assert_eq!(server.stored(&pack).await.order_ref, None);

    // Past the CA's time: ordered again, and active.
    clock.advance(601);
    let items = server.records(&pack).await;
    let (name, value) = txt_of(&items[0]);
    dns.set_txt(&name, &[&value]);
    server.wait_for(&pack, "active").await;
    assert_eq!(front.new_orders().len(), 1);
    assert_eq!(front.rate_limited().len(), 1);
    drop(front);
    server.shutdown().await;
    pebble.stop().await;
}

/// `rateLimited` with `Retry-After` at finalize (RFC 8555 lets a CA refuse any request so;
/// Let's Encrypt refused finalizes for its certificate limits before it moved their
/// check to `newOrder`, where it now only counts them): the testkit's front answers the
/// order's first finalize so, in front of the real Pebble. The pack stays `pending_issuance` with
/// a reason naming the rate limit and the CA's time; zonecert finalizes nothing before
/// that time (not at its own 5-minute retry, not for a `retry=true`), then finalizes the
/// same order, whose authorizations are still valid, and the pack goes active: one
/// `newOrder` in all.
#[tokio::test]
async fn a_rate_limited_finalize_waits_for_the_cas_retry_after_and_finishes_the_same_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let front = AriFront::start(&pebble).await;
    let data = tmp.path().join("data");
    let clock = ManualClock::new(SystemClock.now());
    let directory = front.directory.clone();
    let server = start_configured(
        &data,
        &dns,
        &pebble,
        80,
        "final.example.org",
        clock.clone(),
        move |c| c.acme.directories[0].value = directory,
    )
    .await;
    // Twenty minutes: longer than zonecert's own 5-minute retry.
    front.rate_limit("/finalize-order/", 1, 1200);
    let pack = server.order(&["final.example.org"], "txt").await;
    let items = server.records(&pack).await;
    let (name, value) = txt_of(&items[0]);
    dns.set_txt(&name, &[&value]);
    server
        .call("GET", "/ssl/verification?retry=true", None)
        .await;
    let limited = server
        .wait_until(&pack, "the rate limit as the reason", |p| {
            p["validation_errors"].to_string().contains("rate limit")
        })
        .await;
    assert_eq!(limited["result"]["status"], "pending_issuance", "{limited}");
    let refused = front.rate_limited();
    assert_eq!(refused.len(), 1);
    assert!(front.posted("/finalize-order/").is_empty());
    let reason = limited["result"]["validation_errors"].to_string();
    eprintln!("the pack's reason after a rate-limited finalize: {reason}");
    let at = |s: u64| {
        let t = time::OffsetDateTime::from(refused[0] + Duration::from_secs(s));
        rfc3339(t.unix_timestamp())
    };
    assert!(
        reason.contains(&at(1200)) || reason.contains(&at(1201)),
        "{reason} (refused at {})",
        at(0)
    );
    let order = server
        .stored(&pack)
        .await
        .order_ref
        .expect("the order kept");

    // Ten minutes on (past zonecert's own retry), with a retry asked for: nothing sent.
    clock.advance(600);
    server
        .call("GET", "/ssl/verification?retry=true", None)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(front.rate_limited().len(), 1);
    assert!(
        front.posted("/finalize-order/").is_empty(),
        "{:?}",
        front.posted("/finalize-order/")
    );
    assert_eq!(
        server.stored(&pack).await.state,
        zonecert_server::model::PackState::PendingIssuance
    );

    // Past the CA's time: the same order finalized, and the pack active.
    clock.advance(601);
    server.wait_for(&pack, "active").await;
    let finalized = front.posted("/finalize-order/");
    assert_eq!(finalized.len(), 1, "{finalized:?}");
    let order_url = serde_json::from_str::<Value>(&order).unwrap()["order_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let order_id = order_url.rsplit('/').next().unwrap();
    assert_eq!(
        finalized[0],
        format!("/finalize-order/{order_id}"),
        "the pack's order: {order_url}"
    );
    assert_eq!(front.new_orders().len(), 1, "one order in all");
    assert_eq!(front.rate_limited().len(), 1);
    drop(front);
    server.shutdown().await;
    pebble.stop().await;
}

/// ACME profiles (draft-ietf-acme-profiles): Debian's Pebble 2.4 offers none and ignores
/// an order's `profile`, so the testkit's front offers them in the directory's
/// `meta.profiles` and shows the `newOrder` payloads Pebble was given. A pack whose
/// `validity_days` is mapped (`--acme-profile google=14:shortlived`) orders that profile
/// and goes active; one whose validity is not mapped names none. (Pebble 2.4 issues
/// every certificate for the same validity: that the CA honours the profile is not
/// tested here.)
#[tokio::test]
async fn a_mapped_validity_orders_its_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let front = AriFront::start(&pebble).await;
    front.offer_profiles(&[
        ("classic", "the usual 90 days"),
        ("shortlived", "about 6 days"),
    ]);
    let data = tmp.path().join("data");
    let directory = front.directory.clone();
    let server = start_configured(
        &data,
        &dns,
        &pebble,
        80,
        "profiled.example.org",
        Arc::new(SystemClock),
        move |c| {
            c.acme.directories[0] = Named {
                ca: CaChoice::Google,
                value: directory,
            };
            c.acme.roots[0].ca = CaChoice::Google;
            c.acme.profiles = vec![Named {
                ca: CaChoice::Google,
                value: "14:shortlived".into(),
            }];
        },
    )
    .await;
    let short = server
        .order_from(&["profiled.example.org"], "txt", "google", 14)
        .await;
    let items = server.records(&short).await;
    let (name, value) = txt_of(&items[0]);
    dns.set_txt(&name, &[&value]);
    server.wait_for(&short, "active").await;
    let unmapped = server
        .order_from(
            &["profiled.example.org", "www.profiled.example.org"],
            "txt",
            "google",
            30,
        )
        .await;
    server.records(&unmapped).await;
    let orders = front.new_orders();
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert_eq!(orders[0]["profile"], "shortlived", "{orders:?}");
    assert_eq!(orders[1].get("profile"), None, "{orders:?}");
    drop(front);
    server.shutdown().await;
    pebble.stop().await;
}

/// A server for the tests of one CA holding another's packs up, and what they compare
/// with: its `google` is a second Pebble behind the testkit's front (which then delays
/// its requests), its `lets_encrypt` the first Pebble.
struct TwoCas {
    server: Server,
    pebble: Pebble,
    other: Pebble,
    front: AriFront,
    /// How long two `lets_encrypt` packs took to become active, alone.
    alone: Duration,
}

/// Starts [`TwoCas`] for `zone` (quota 1,000, a 2 s lease so that the pace bounds the
/// worker's hand from the start, then `tweak`), makes both CAs' accounts (google's with
/// one order) and times two `lets_encrypt` packs alone (hosts [`two_hosts`]`("alone")`).
async fn two_cas(
    tmp: &Path,
    dns: &DnsServer,
    zone: &str,
    tweak: impl FnOnce(&mut Config) + Send + 'static,
) -> TwoCas {
    let pebble = Pebble::for_dns(tmp, dns).await;
    let other = Pebble::for_dns(tmp, dns).await;
    let front = AriFront::start(&other).await;
    let (google, google_root) = (
        front.directory.clone(),
        other.tls_root.display().to_string(),
    );
    let server = start_configured(
        &tmp.join("data"),
        dns,
        &pebble,
        80,
        zone,
        Arc::new(SystemClock),
        move |c| {
            c.quota_advanced = 1000;
            c.lease = Duration::from_secs(2);
            c.acme.directories.push(Named {
                ca: CaChoice::Google,
                value: google,
            });
            c.acme.roots.push(Named {
                ca: CaChoice::Google,
                value: google_root,
            });
            tweak(c);
        },
    )
    .await;
    server.active_txt_pack(dns, zone).await;
    let first = server.order_from(&[zone], "txt", "google", 90).await;
    server.records(&first).await;
    let alone = time_to_active(&server, dns, zone, &two_hosts("alone", zone)).await;
    TwoCas {
        server,
        pebble,
        other,
        front,
        alone,
    }
}

/// `{tag}0.{zone}` and `{tag}1.{zone}`.
fn two_hosts(tag: &str, zone: &str) -> Vec<String> {
    (0..2).map(|i| format!("{tag}{i}.{zone}")).collect()
}

/// A CA that stops answering holds no other CA's packs up either. `google` is a Pebble
/// behind the testkit's front, its account made; then the front holds every request (a
/// CA gone silent), and zonecert gives up on each after 1 s (`acme_timeout`, 60 s by
/// default). 250 google packs are ordered, then two `lets_encrypt` packs. Each issuer
/// sends 16 requests at a time: before the failure was shared with the requests waiting
/// for a slot (`acme/http.rs`), each google pack waited for a timeout of its own, 16 at
/// a time, while they filled the worker's hand, and `lets_encrypt`'s packs were claimed
/// only once fewer than 96 google packs were left in it (seen, debug build: 10.3 s behind
/// them against 0.57 s alone; with the failure shared, 1.5 s against 0.54 s).
#[tokio::test]
async fn a_ca_that_does_not_answer_does_not_hold_up_another_cas_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let TwoCas {
        server,
        pebble,
        other,
        front,
        alone,
    } = two_cas(tmp.path(), &dns, "quiet.example.org", |c| {
        // The default's proportions (a 60 s timeout, a 2-minute lease), shrunk: a
        // worker holds what it gets through in a quarter of a lease at its pace
        // (`worker/pace.rs`), never fewer than 96 packs; with a long lease and short
        // timeouts it would hold every pack at once.
        c.acme_timeout = Duration::from_secs(1);
    })
    .await;
    front.delay_requests(Duration::from_secs(3600));
    let mut silent = Vec::new();
    for i in 0..250 {
        let host = format!("g{i}.quiet.example.org");
        silent.push(
            server
                .order_from(&["quiet.example.org", &host], "txt", "google", 90)
                .await,
        );
    }
    let behind = time_to_active(
        &server,
        &dns,
        "quiet.example.org",
        &two_hosts("behind", "quiet.example.org"),
    )
    .await;
    eprintln!(
        "lets_encrypt's 2 packs: {alone:?} alone, {behind:?} behind 250 packs of a silent google"
    );
    assert!(
        behind <= alone * 2 + Duration::from_secs(5),
        "lets_encrypt's packs: {behind:?} behind 250 packs of a silent CA, {alone:?} alone"
    );
    // The silent CA's packs say so, and wait to be tried again.
    let p = server
        .wait_until(&silent[249], "the silent CA as the reason", |p| {
            p["validation_errors"]
                .to_string()
                .contains("could not be reached")
        })
        .await;
    assert_eq!(p["result"]["status"], "initializing", "{p}");
    eprintln!(
        "a silent google pack's reason: {}",
        p["result"]["validation_errors"]
    );
    drop(front);
    server.shutdown().await;
    other.stop().await;
    pebble.stop().await;
}

/// A CA that answers slowly holds no other CA's packs up. `google` is a Pebble behind
/// the testkit's front, its account made; then the front holds every request 1.5 s (a
/// CA answering slowly, but answering: nothing times out) and 200 google packs are
/// ordered, then two `lets_encrypt` packs. A worker holds at most its check and
/// issuance slots' worth of packs (96) while its pace is slow (`worker/pace.rs`; the
/// lease is shrunk, as in the silent CA's test, so that the pace bounds the hand from
/// the start): the google packs waiting for their CA filled it, and `lets_encrypt`'s
/// packs were claimed only once the google packs ahead of them had each had their
/// order placed, 16 requests at a time, 1.5 s each (seen, debug build: 65.9 s behind
/// them, 0.60 s alone). Now a pack waiting for its CA takes a place in that CA's share,
/// not in the hand (`worker/hand.rs`): 0.64 s behind, 0.56 s alone.
#[tokio::test]
async fn a_ca_that_answers_slowly_does_not_hold_up_another_cas_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let TwoCas {
        server,
        pebble,
        other,
        front,
        alone,
    } = two_cas(tmp.path(), &dns, "slow.example.org", |_| {}).await;
    front.delay_requests(Duration::from_millis(1500));
    let mut slow = Vec::new();
    for i in 0..200 {
        let host = format!("g{i}.slow.example.org");
        slow.push(
            server
                .order_from(&["slow.example.org", &host], "txt", "google", 90)
                .await,
        );
    }
    // Patient enough to measure the old code (65.9 s).
    let behind = time_to_active_within(
        &server,
        &dns,
        "slow.example.org",
        &two_hosts("behind", "slow.example.org"),
        Duration::from_secs(300),
    )
    .await;
    eprintln!(
        "lets_encrypt's 2 packs: {alone:?} alone, {behind:?} behind 200 packs of a google answering in 1.5 s"
    );
    assert!(
        behind <= alone * 2 + Duration::from_secs(3),
        "lets_encrypt's packs: {behind:?} behind 200 packs of a CA answering in 1.5 s, {alone:?} alone"
    );
    // The slow CA's packs are not starved either: they get their records, 16 requests
    // at a time.
    let placed = server.records(&slow[0]).await;
    assert_eq!(placed.len(), 2, "{placed:?}");
    drop(front);
    server.shutdown().await;
    other.stop().await;
    pebble.stop().await;
}
