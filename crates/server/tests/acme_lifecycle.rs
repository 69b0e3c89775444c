//! ACME issuance through the whole server: a real server on loopback with `--acme
//! lets_encrypt=<Pebble>`, orders through the API, records set in the testkit's DNS
//! server (which Pebble's validator asks too) or served by its HTTP origin, the
//! certificate deployed to disk and checked against Pebble's root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acme_common;

use std::path::Path;
use std::time::Duration;

use acme_common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use zonecert_server::clock::{Clock, ManualClock, SharedClock, SystemClock};
use zonecert_server::config::{Config, Named};
use zonecert_server::model::{CaChoice, PackId, ZoneId};
use zonecert_testkit::pebble::{Pebble, PebbleOptions};
use zonecert_testkit::{DnsServer, HttpOrigin, TestServer};

/// A [`TestServer`] with one zone and a token for it.
struct Server {
    inner: TestServer,
    token: String,
    zone: String,
}

fn configure_with(c: &mut Config, directory: String, root: std::path::PathBuf, http_port: u16) {
    c.dcv_http_port = http_port;
    c.dcv_allow_private_addresses = true;
    c.dcv_timeout = Duration::from_secs(2);
    c.poll_interval = Duration::from_millis(100);
    c.retry_coalesce = Duration::ZERO;
    c.acme.directories = vec![Named {
        ca: CaChoice::LetsEncrypt,
        value: directory,
    }];
    c.acme.roots = vec![Named {
        ca: CaChoice::LetsEncrypt,
        value: root.display().to_string(),
    }];
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
    let directory = pebble.directory.clone();
    let root = pebble.tls_root.clone();
    let now = clock.now();
    let inner = TestServer::builder()
        .clock(clock)
        .data_dir(data)
        .resolvers([dns.addr()])
        .lifecycle(true)
        .dev_seed(false)
        .config(move |c| {
            configure_with(c, directory, root, http_port);
        })
        .await;
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

impl Server {
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
        let v = self
            .call(
                "POST",
                "/ssl/certificate_packs/order",
                Some(
                    json!({"type": "advanced", "hosts": hosts, "validation_method": method,
                            "validity_days": 90, "certificate_authority": "lets_encrypt"}),
                ),
            )
            .await;
        assert_eq!(v["result"]["status"], "initializing", "{v}");
        v["result"]["id"].as_str().unwrap().to_owned()
    }

    /// The pack's verification items, once its CA's records are there (the worker
    /// places the order right after the order request; this waits for that).
    async fn records(&self, pack: &str) -> Vec<Value> {
        for _ in 0..300 {
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
        panic!("the CA's records never appeared")
    }

    /// Asks for checks (retry=true) until the pack reaches `status`.
    async fn wait_for(&self, pack: &str, status: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..120 {
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
    let pebble = Pebble::start(
        tmp.path(),
        PebbleOptions {
            dns: Some(dns.addr()),
            ..Default::default()
        },
    )
    .await;
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
    let root = pebble_root(&pebble).await;
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
        &pebble_root(&pebble).await,
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
    let pebble = Pebble::start(
        tmp.path(),
        PebbleOptions {
            dns: Some(dns.addr()),
            ..Default::default()
        },
    )
    .await;
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
        &pebble_root(&pebble).await,
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
    let mut pebble = Pebble::start(
        tmp.path(),
        PebbleOptions {
            dns: Some(dns.addr()),
            ..Default::default()
        },
    )
    .await;
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
        &pebble_root(&pebble).await,
        &["away.example.org"],
    );
    server.shutdown().await;
    pebble.stop().await;
}

#[tokio::test]
async fn caa_binds_the_ca_to_its_acme_account_and_method() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::start(
        tmp.path(),
        PebbleOptions {
            dns: Some(dns.addr()),
            ..Default::default()
        },
    )
    .await;
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
    let pebble = Pebble::start(
        tmp.path(),
        PebbleOptions {
            dns: Some(dns.addr()),
            ..Default::default()
        },
    )
    .await;
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
    assert_chain(&chain, &pebble_root(&pebble).await, &["renew.example.org"]);
    server.shutdown().await;
    pebble.stop().await;
}
