//! The test controls (issue 16) through the Rust client against a real server on
//! 127.0.0.1:0, its lifecycle running against the testkit's loopback DNS server (where
//! the CAA lookups go; it holds no DCV record unless a test puts one there).
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::time::Duration;
use zonecert_client::api::{NewFault, PackStatus};
use zonecert_client::{
    CertificatePackCreateParams, CertificatePackParams, CertificateStatus, Client, Error,
    VerificationGetParams,
};
use zonecert_server::config::Config;
use zonecert_server::store::WebhookEndpoint;
use zonecert_testkit::{DnsServer, TestServer};

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const PACK: &str = "a77f8bd7-3b47-46b4-a6f1-75cf98109948";
const DAY: i64 = 86_400;

/// A server of the testkit's harness and the loopback DNS server its lifecycle asks.
struct Server {
    server: TestServer,
    _dns: Option<DnsServer>,
}

impl Server {
    /// A dev server (test controls on) with its lifecycle on loopback.
    async fn dev(configure: impl FnOnce(&mut Config) + Send + 'static) -> Server {
        let dns = DnsServer::start().await;
        let server = TestServer::builder()
            .resolvers([dns.addr()])
            .lifecycle(true)
            .config(|c| {
                c.dev = true;
                // Every retry=true checks again (the coalescing has tests of its own).
                c.retry_coalesce = Duration::ZERO;
            })
            .config(configure)
            .start()
            .await;
        Server {
            server,
            _dns: Some(dns),
        }
    }

    fn token(&self) -> &str {
        self.server.token()
    }

    fn data_dir(&self) -> &std::path::Path {
        self.server.data_dir()
    }

    fn client(&self) -> Client {
        Client::builder()
            .base_url(self.server.base_url())
            .api_token(self.token())
            .max_retries(0)
            .build()
            .unwrap()
    }

    fn root(&self) -> String {
        format!("http://{}", self.server.addr())
    }
}

async fn order(client: &Client, hosts: &[&str]) -> String {
    client
        .ssl()
        .certificate_packs()
        .create(CertificatePackCreateParams::new(
            ZONE,
            hosts.iter().copied(),
        ))
        .await
        .unwrap()
        .id
}

async fn pack(client: &Client, id: &str) -> zonecert_client::CertificatePack {
    client
        .ssl()
        .certificate_packs()
        .get(CertificatePackParams::new(ZONE, id))
        .await
        .unwrap()
}

/// Polls the pack until `done` holds (the lifecycle works in the background; the cap
/// only bounds a failing test).
async fn wait_for(
    client: &Client,
    id: &str,
    done: impl Fn(&zonecert_client::CertificatePack) -> bool,
) -> zonecert_client::CertificatePack {
    for _ in 0..600 {
        let p = pack(client, id).await;
        if done(&p) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pack {id} never got there: {:?}", pack(client, id).await);
}

async fn retry(client: &Client) -> Vec<zonecert_client::Verification> {
    client
        .ssl()
        .verification()
        .get(VerificationGetParams::new(ZONE).retry(true))
        .await
        .unwrap()
}

fn items_of<'a>(
    items: &'a [zonecert_client::Verification],
    pack: &str,
) -> Vec<&'a zonecert_client::Verification> {
    items
        .iter()
        .filter(|v| v.cert_pack_uuid.as_deref() == Some(pack))
        .collect()
}

fn parse_time(s: &str) -> i64 {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_with_auto_validation_is_active_in_one_retry_call() {
    let s = Server::dev(|_| {}).await;
    let client = s.client();
    let switched = client
        .test_controls()
        .set_auto_validation(ZONE, true)
        .await
        .unwrap();
    assert!(switched.enabled);
    let id = order(&client, &["example.com", "www.example.com"]).await;
    let items = retry(&client).await;
    let mine = items_of(&items, &id);
    assert_eq!(mine.len(), 2);
    for item in &mine {
        assert_eq!(
            item.certificate_status,
            CertificateStatus::Active,
            "{item:?}"
        );
        assert_eq!(item.verification_status, Some(true));
        assert_eq!(item.extra["validated_automatically"], Value::Bool(true));
        assert!(
            item.extra["verification_note"]
                .as_str()
                .unwrap()
                .contains("validated automatically"),
            "{item:?}"
        );
        assert!(item.extra.get("verification_error").is_none());
    }
    let p = pack(&client, &id).await;
    assert_eq!(p.status, PackStatus::Active);
    assert_eq!(p.certificates.len(), 1);
    // Switched off: a new pack's checks are real again (no record: NXDOMAIN).
    client
        .test_controls()
        .set_auto_validation(ZONE, false)
        .await
        .unwrap();
    let id = order(&client, &["example.com"]).await;
    let items = retry(&client).await;
    let item = items_of(&items, &id)[0];
    assert_eq!(item.certificate_status, CertificateStatus::Authorizing);
    assert!(
        item.extra["verification_error"]
            .as_str()
            .unwrap()
            .contains("NXDOMAIN"),
        "{item:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_wide_flag_auto_validates_every_zone() {
    let s = Server::dev(|c| c.dcv_auto_validate = true).await;
    let client = s.client();
    let state = client.test_controls().auto_validation().await.unwrap();
    assert!(state.all_zones);
    let id = order(&client, &["example.com", "api.example.com"]).await;
    let items = retry(&client).await;
    assert!(
        items_of(&items, &id)
            .iter()
            .all(|i| i.certificate_status == CertificateStatus::Active),
        "{items:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advancing_into_the_renewal_window_renews_with_the_travelled_dates() {
    let s = Server::dev(|c| c.dcv_auto_validate = true).await;
    let client = s.client();
    let before = pack(&client, PACK).await;
    assert_eq!(before.status, PackStatus::Active);
    let old_serial = before.certificates[0].id.clone();
    let old_expiry = parse_time(before.certificates[0].expires_on.as_deref().unwrap());
    // The seeded 90-day certificate renews from 30 days before its expiry.
    let clock = client.test_controls().advance_clock("61d").await.unwrap();
    assert!(clock.offset_seconds >= 61 * DAY, "{clock:?}");
    let now = parse_time(&clock.now);
    let after = wait_for(&client, PACK, |p| {
        p.status == PackStatus::Active && p.certificates.first().is_some_and(|c| c.id != old_serial)
    })
    .await;
    assert_eq!(after.id, PACK, "the same pack");
    assert_eq!(after.status, PackStatus::Active);
    let cert = &after.certificates[0];
    let expiry = parse_time(cert.expires_on.as_deref().unwrap());
    assert!(expiry > old_expiry);
    // Issued at the travelled now: valid 90 days from it.
    assert!(
        (expiry - (now + 90 * DAY)).abs() < 120,
        "{} vs {}",
        cert.expires_on.as_deref().unwrap(),
        clock.now
    );
    let issued = parse_time(cert.uploaded_on.as_deref().unwrap());
    assert!(issued >= now, "the API shows the travelled time");
    // The deployed certificate carries the same dates (what `openssl x509 -dates` reads).
    let chain =
        std::fs::read_to_string(s.data_dir().join("certs").join(PACK).join("fullchain.pem"))
            .unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain.as_bytes()).unwrap();
    let x509 = pem.parse_x509().unwrap();
    assert_eq!(x509.validity().not_after.timestamp(), expiry);
    assert!(x509.validity().not_before.timestamp() >= now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advancing_past_expiry_without_records_expires_the_pack() {
    let s = Server::dev(|_| {}).await;
    let client = s.client();
    client.test_controls().advance_clock("91d").await.unwrap();
    let p = wait_for(&client, PACK, |p| p.status == PackStatus::Expired).await;
    assert_eq!(p.id, PACK);
    let items = client.ssl().verification().get(ZONE).await.unwrap();
    assert!(
        items_of(&items, PACK)
            .iter()
            .all(|i| i.certificate_status == CertificateStatus::Expired),
        "{items:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_pack_past_its_validation_deadline_times_out() {
    let s = Server::dev(|_| {}).await;
    let client = s.client();
    // Let's Encrypt's tokens live 7 days.
    let id = order(&client, &["example.com", "www.example.com"]).await;
    client.test_controls().advance_clock("8d").await.unwrap();
    let p = wait_for(&client, &id, |p| p.status == PackStatus::ValidationTimedOut).await;
    assert_eq!(p.id, id);
    let items = client.ssl().verification().get(ZONE).await.unwrap();
    let mine = items_of(&items, &id);
    assert_eq!(mine.len(), 2);
    assert!(
        mine.iter()
            .all(|i| i.certificate_status == CertificateStatus::TimingOut),
        "{mine:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_servfail_for_three_attempts_shows_its_reason_then_passes() {
    let s = Server::dev(|_| {}).await;
    let client = s.client();
    let controls = client.test_controls();
    controls.set_auto_validation(ZONE, true).await.unwrap();
    let fault = controls
        .add_fault(&NewFault {
            kind: "servfail".into(),
            host: Some("www.example.com".into()),
            attempts: Some(3),
            ..NewFault::default()
        })
        .await
        .unwrap();
    let id = order(&client, &["example.com", "www.example.com"]).await;
    // The order wakes the workers, whose first check is the first attempt; each
    // retry=true after it is one more.
    for _ in 0..600 {
        let items = client.ssl().verification().get(ZONE).await.unwrap();
        if items_of(&items, &id)
            .iter()
            .any(|i| i.extra.contains_key("verification_error"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for attempt in 1..=3 {
        let items = if attempt == 1 {
            client.ssl().verification().get(ZONE).await.unwrap()
        } else {
            retry(&client).await
        };
        let www = items_of(&items, &id)
            .into_iter()
            .find(|i| i.hostname.as_deref() == Some("www.example.com"))
            .unwrap()
            .clone();
        assert_eq!(
            www.certificate_status,
            CertificateStatus::Authorizing,
            "attempt {attempt}"
        );
        assert_eq!(www.verification_status, Some(false));
        assert_eq!(
            www.extra["verification_error"],
            "SERVFAIL looking up TXT for _acme-challenge.www.example.com (injected fault)",
            "attempt {attempt}"
        );
        // Recorded as a real failure: the next check on Cloudflare's schedule.
        assert!(www.extra.contains_key("next_check_on"));
    }
    let listed = controls.faults().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, fault.id);
    assert_eq!(listed[0].struck, 3);
    let items = retry(&client).await;
    assert!(
        items_of(&items, &id)
            .iter()
            .all(|i| i.certificate_status == CertificateStatus::Active),
        "the fourth attempt passes: {items:?}"
    );
    assert_eq!(controls.clear_faults().await.unwrap().cleared, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_caa_ca_and_deploy_hook_failures_are_recorded_as_real_ones() {
    let s = Server::dev(|c| c.dcv_auto_validate = true).await;
    let client = s.client();
    let controls = client.test_controls();
    for (kind, expected) in [
        ("caa", "CAA forbids letsencrypt.org for example.com"),
        ("ca", "urn:ietf:params:acme:error:rejectedIdentifier"),
        ("deploy_hook", "deployment failed: the deploy hook failed"),
    ] {
        controls
            .add_fault(&NewFault {
                kind: kind.into(),
                zone_id: Some(ZONE.into()),
                attempts: Some(1),
                ..NewFault::default()
            })
            .await
            .unwrap();
        // The order wakes the workers, whose check meets the fault. (Not a retry=true
        // at once: it would supersede that running check, which took the fault's one
        // strike, and the check it asks for would pass.)
        let id = order(&client, &["example.com"]).await;
        let p = wait_for(&client, &id, |p| p.validation_errors.is_some()).await;
        let errors: Vec<String> = p
            .validation_errors
            .unwrap()
            .into_iter()
            .filter_map(|e| e.message)
            .collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains(expected) && e.contains("(injected fault)")),
            "{kind}: {errors:?}"
        );
        assert_ne!(p.status, PackStatus::Active, "{kind}");
        controls.clear_faults().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_brings_back_the_seed_state_and_the_dev_token_still_works() {
    let s = Server::dev(|_| {}).await;
    let client = s.client();
    let controls = client.test_controls();
    let seeded = pack(&client, PACK).await;
    let other = client.zones().create("other.example").await.unwrap();
    controls.set_auto_validation(ZONE, true).await.unwrap();
    // A webhook endpoint nobody listens at: the pack's events wait in the outbox.
    let store = s.server.store();
    store
        .insert_webhook_endpoint(&WebhookEndpoint {
            id: "we_reset".into(),
            url: "http://127.0.0.1:9/hook".into(),
            zone_id: None,
            events: Vec::new(),
            secret: zonecert_server::webhooks::sign::new_secret(),
            created_at: 1,
            allow_private: true,
        })
        .await
        .unwrap();
    let extra = order(&client, &["example.com"]).await;
    // Deployed, so that the reset has its files to remove.
    retry(&client).await;
    wait_for(&client, &extra, |p| p.status == PackStatus::Active).await;
    assert!(s.data_dir().join("certs").join(&extra).exists());
    assert!(!store.list_deliveries(false, 10).await.unwrap().is_empty());
    controls
        .add_fault(&NewFault {
            kind: "nxdomain".into(),
            zone_id: Some(ZONE.into()),
            ..NewFault::default()
        })
        .await
        .unwrap();
    controls.advance_clock("30d").await.unwrap();

    let done = controls.reset().await.unwrap();
    assert_eq!((done.zone_id.as_str(), done.pack_id.as_str()), (ZONE, PACK));

    // The token the suite was configured with still works.
    assert_eq!(
        client.user().tokens().verify().await.unwrap().status,
        "active"
    );
    let zones: Vec<_> =
        futures_util::TryStreamExt::try_collect::<Vec<_>>(client.zones().list(Default::default()))
            .await
            .unwrap();
    assert_eq!(
        zones.iter().map(|z| z.name.as_str()).collect::<Vec<_>>(),
        ["example.com"]
    );
    assert!(matches!(
        client.zones().get(&other.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        client
            .ssl()
            .certificate_packs()
            .get(CertificatePackParams::new(ZONE, &extra))
            .await,
        Err(Error::NotFound(_))
    ));
    let again = pack(&client, PACK).await;
    assert_eq!(again.status, PackStatus::Active);
    assert_eq!(again.hosts, seeded.hosts);
    assert_ne!(
        again.certificates[0].id, seeded.certificates[0].id,
        "issued afresh"
    );
    assert!(
        s.data_dir()
            .join("certs")
            .join(PACK)
            .join("fullchain.pem")
            .exists()
    );
    assert!(
        !s.data_dir().join("certs").join(&extra).exists(),
        "files removed"
    );
    // The seed state has no webhooks: the endpoint and its pending deliveries are gone.
    assert!(store.webhook_endpoints().await.unwrap().is_empty());
    assert!(store.list_deliveries(false, 10).await.unwrap().is_empty());
    let clock = controls.clock().await.unwrap();
    assert_eq!(clock.offset_seconds, 0);
    assert!(controls.faults().await.unwrap().is_empty());
    assert!(controls.auto_validation().await.unwrap().zones.is_empty());
    // The published key too.
    let by_key = Client::builder()
        .base_url(s.server.base_url())
        .api_key("user@example.com", "144c9defac04969c7bfad8efaa8ea194")
        .build()
        .unwrap();
    assert_eq!(
        by_key.ssl().verification().get(ZONE).await.unwrap().len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_moves_forward_only_and_its_offset_survives_a_restart() {
    let s = Server::dev(|_| {}).await;
    let client = s.client();
    let controls = client.test_controls();
    let moved = controls.set_clock("2031-03-01T00:00:00Z").await.unwrap();
    assert_eq!(moved.now, "2031-03-01T00:00:00Z");
    for refused in [
        controls.set_clock("2030-01-01T00:00:00Z").await,
        controls.advance_clock("-1d").await,
        controls.set_clock("tomorrow").await,
    ] {
        match refused {
            Err(Error::BadRequest(e)) => {
                assert_eq!(e.errors[0].code, 1002, "{e:?}")
            }
            other => panic!("{other:?}"),
        }
    }
    let offset = controls.clock().await.unwrap().offset_seconds;
    // Another server on the same data directory, after this one stopped.
    let dir = tempfile::tempdir().unwrap();
    let first = TestServer::builder()
        .data_dir(dir.path())
        .config(|c| c.dev = true)
        .start()
        .await;
    let first_client = Client::builder()
        .base_url(first.base_url())
        .api_token(first.token())
        .build()
        .unwrap();
    first_client
        .test_controls()
        .set_clock("2031-03-01T00:00:00Z")
        .await
        .unwrap();
    let first_token = first.token().to_owned();
    first.shutdown().await.unwrap();
    let again = TestServer::builder()
        .data_dir(dir.path())
        .config(|c| c.dev = true)
        .start()
        .await;
    assert_eq!(again.token(), first_token, "the same dev token");
    let client = Client::builder()
        .base_url(again.base_url())
        .api_token(again.token())
        .build()
        .unwrap();
    let clock = client.test_controls().clock().await.unwrap();
    assert!(
        (clock.offset_seconds - offset).abs() <= 5,
        "{} vs {offset}",
        clock.offset_seconds
    );
    assert!(clock.now.starts_with("2031-03-01T"), "{clock:?}");
    let back = client.test_controls().reset_clock().await.unwrap();
    assert_eq!(back.offset_seconds, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_flag_answers_404_on_every_control_route() {
    // Without --dev or --test-controls; a token with every group.
    let plain = TestServer::builder().dev_seed(false).start().await;
    let all: Vec<&str> = zonecert_server::model::Permission::ALL
        .iter()
        .map(|p| p.name())
        .collect();
    let plain_token = plain.create_token(&all, &[]).await;
    let on = Server::dev(|_| {}).await;
    let http = reqwest::Client::new();
    let ssl_only = on
        .server
        .create_token(&["SSL and Certificates Write"], &[])
        .await;
    for op in zonecert_server::http::openapi::CONTROL_OPERATIONS {
        let path = op
            .path
            .replace("{zone_id}", ZONE)
            .replace("{fault_id}", "1");
        let method: reqwest::Method = op.method.to_uppercase().parse().unwrap();
        let send = |root: String, token: &str| {
            http.request(
                method.clone(),
                format!("{root}{}{path}", zonecert_server::http::CONTROLS_BASE),
            )
            .bearer_auth(token)
            .json(&serde_json::json!({}))
            .send()
        };
        let off = send(format!("http://{}", plain.addr()), &plain_token)
            .await
            .unwrap();
        assert_eq!(off.status(), 404, "{} {path}", op.method);
        let body: Value = off.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["code"], 7000,
            "{} {path}: {body}",
            op.method
        );
        // Offered, it is routed, and only to the test controls' group.
        let refused = send(on.root(), &ssl_only).await.unwrap();
        assert_eq!(refused.status(), 403, "{} {path}", op.method);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["code"], 9109,
            "{} {path}: {body}",
            op.method
        );
    }
    // The documented operations are the routed ones, under their own tag.
    let doc: Value = http
        .get(format!("{}/openapi.json", plain.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for op in zonecert_server::http::openapi::CONTROL_OPERATIONS {
        let item = &doc["paths"][op.path];
        assert_eq!(item["servers"][0]["url"], "/_zonecert/v1", "{}", op.path);
        assert_eq!(
            item[op.method]["tags"][0],
            zonecert_server::http::openapi::CONTROLS_TAG
        );
        assert_eq!(
            item[op.method]["x-api-token-group"][0],
            "zonecert Test Controls"
        );
    }
    // And the client says so as a typed error.
    let client = Client::builder()
        .base_url(plain.base_url())
        .api_token(&plain_token)
        .build()
        .unwrap();
    assert!(matches!(
        client.test_controls().clock().await,
        Err(Error::NotFound(_))
    ));
}
