//! Every method and error kind against the real zonecert server, in process on port 0.
#![allow(clippy::unwrap_used)]

use futures_util::TryStreamExt;
use std::time::Duration;
use zonecert_client::api::{CertificatePackQuota, PackStatus};
use zonecert_client::{
    CertificatePackCreateParams, CertificatePackEditParams, CertificatePackListParams,
    CertificatePackParams, CertificateStatus, Client, Error, ValidationMethod,
    VerificationEditParams, VerificationGetParams, ZoneListParams,
};
use zonecert_server::config::{Config, RateLimit};
use zonecert_testkit::TestServer;

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const PACK: &str = "a77f8bd7-3b47-46b4-a6f1-75cf98109948";
const EMAIL: &str = "user@example.com";
const KEY: &str = "144c9defac04969c7bfad8efaa8ea194";

/// The dev server as the SDK meets it: dev mode, short `retry=true` waits, rate limits
/// as `zonecert serve` has them by default.
async fn start(configure: impl FnOnce(&mut Config) + Send) -> TestServer {
    TestServer::builder()
        .config(|c| {
            c.dev = true;
            c.retry_wait = Duration::from_millis(200);
            c.rate_limit = Config::new("").rate_limit;
        })
        .config(configure)
        .await
}

/// SDK clients of the server.
trait Clients {
    fn with_token(&self, token: &str) -> Client;
    fn client(&self) -> Client;
    fn key_client(&self) -> Client;
}

impl Clients for TestServer {
    fn with_token(&self, token: &str) -> Client {
        Client::builder()
            .base_url(self.base_url())
            .api_token(token)
            .max_retries(0)
            .build()
            .unwrap()
    }

    fn client(&self) -> Client {
        self.with_token(self.token())
    }

    fn key_client(&self) -> Client {
        Client::builder()
            .base_url(format!("{}/", self.base_url()))
            .api_key(EMAIL, KEY)
            .build()
            .unwrap()
    }
}

#[tokio::test]
async fn verification_get_with_both_credential_kinds() {
    let server = start(|_| {}).await;
    for client in [server.client(), server.key_client()] {
        let items = client.ssl().verification().get(ZONE).await.unwrap();
        assert!(!items.is_empty());
        assert!(
            items
                .iter()
                .any(|i| i.cert_pack_uuid.as_deref() == Some(PACK)),
            "{items:?}"
        );
        let again = client
            .ssl()
            .verification()
            .get(VerificationGetParams::new(ZONE).retry(true))
            .await
            .unwrap();
        assert_eq!(again.len(), items.len());
    }
    assert_eq!(
        server
            .client()
            .user()
            .tokens()
            .verify()
            .await
            .unwrap()
            .status,
        "active"
    );
}

#[tokio::test]
async fn certificate_packs_order_get_edit_verify_delete_quota() {
    let server = start(|_| {}).await;
    let client = server.client();
    let packs = client.ssl().certificate_packs();
    let before: CertificatePackQuota = packs.quota(ZONE).await.unwrap();
    let used_before = before.advanced.unwrap().used.unwrap();

    let pack = packs
        .create(
            CertificatePackCreateParams::new(ZONE, ["example.com", "www.example.com"])
                .validation_method(ValidationMethod::Txt)
                .validity_days(90),
        )
        .await
        .unwrap();
    assert_eq!(pack.hosts, vec!["example.com", "www.example.com"]);
    let got = packs
        .get(CertificatePackParams::new(ZONE, &pack.id))
        .await
        .unwrap();
    assert_eq!(got.id, pack.id);
    assert_eq!(
        packs.quota(ZONE).await.unwrap().advanced.unwrap().used,
        Some(used_before + 1)
    );

    // The new pack shows in the verification view, each host with its TXT record.
    let items = client.ssl().verification().get(ZONE).await.unwrap();
    let mine: Vec<_> = items
        .iter()
        .filter(|i| i.cert_pack_uuid.as_deref() == Some(pack.id.as_str()))
        .collect();
    assert_eq!(mine.len(), 2, "{items:?}");
    assert!(
        mine.iter()
            .all(|i| i.certificate_status != CertificateStatus::Active)
    );

    let switched = client
        .ssl()
        .verification()
        .edit(VerificationEditParams::new(
            ZONE,
            &pack.id,
            ValidationMethod::Http,
        ))
        .await
        .unwrap();
    assert_eq!(switched.validation_method, Some(ValidationMethod::Http));

    // A pack whose validation has not timed out cannot be restarted.
    let err = packs
        .edit(CertificatePackEditParams::new(ZONE, &pack.id))
        .await
        .unwrap_err();
    assert!(
        err.status().is_some_and(|s| (400..500).contains(&s)),
        "{err:?}"
    );

    let deleted = packs
        .delete(CertificatePackParams::new(ZONE, &pack.id))
        .await
        .unwrap();
    assert_eq!(deleted.id, pack.id);
    let gone = packs
        .get(CertificatePackParams::new(ZONE, &pack.id))
        .await
        .unwrap_err();
    assert!(matches!(gone, Error::NotFound(_)), "{gone:?}");
}

#[tokio::test]
async fn list_pages_across_the_server() {
    let server = start(|_| {}).await;
    let client = server.key_client();
    let packs = client.ssl().certificate_packs();
    let mut ordered = vec![PACK.to_owned()];
    for i in 0..6 {
        let host = format!("h{i}.example.com");
        let pack = packs
            .create(CertificatePackCreateParams::new(
                ZONE,
                ["example.com".to_owned(), host],
            ))
            .await
            .unwrap();
        ordered.push(pack.id);
    }
    let all: Vec<_> = packs
        .list(
            CertificatePackListParams::new(ZONE)
                .per_page(5)
                .status("all"),
        )
        .try_collect()
        .await
        .unwrap();
    let mut ids: Vec<String> = all.iter().map(|p| p.id.clone()).collect();
    ids.sort();
    ordered.sort();
    assert_eq!(ids, ordered, "seven packs over two pages of five");
    assert!(
        all.iter()
            .any(|p| p.status == PackStatus::PendingValidation
                || p.status == PackStatus::Initializing)
    );
}

#[tokio::test]
async fn zones_create_get_list_delete() {
    let server = start(|_| {}).await;
    let client = server.client();
    let zone = client
        .zones()
        .create("zonecert-test.example")
        .await
        .unwrap();
    assert_eq!(zone.name, "zonecert-test.example");
    assert_eq!(client.zones().get(&zone.id).await.unwrap().id, zone.id);
    let listed: Vec<_> = client
        .zones()
        .list(ZoneListParams::new())
        .try_collect()
        .await
        .unwrap();
    assert!(listed.iter().any(|z| z.id == zone.id));
    assert!(listed.iter().any(|z| z.id == ZONE));
    assert_eq!(client.zones().delete(&zone.id).await.unwrap().id, zone.id);
    let err = client.zones().get(&zone.id).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn every_error_kind_from_the_server() {
    let server = start(|c| {
        c.rate_limit = RateLimit::parse("20/300").unwrap();
    })
    .await;

    let anonymous = Client::builder()
        .base_url(server.base_url())
        .build()
        .unwrap();
    let err = anonymous.ssl().verification().get(ZONE).await.unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err:?}");
    assert!(err.has_code(9106), "{err:?}");

    let err = server
        .with_token("not-a-real-token-0000000000000000000000")
        .ssl()
        .verification()
        .get(ZONE)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err:?}");

    let wrong_key = Client::builder()
        .base_url(server.base_url())
        .api_key(EMAIL, "00000000000000000000000000000000")
        .build()
        .unwrap();
    let err = wrong_key.ssl().verification().get(ZONE).await.unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err:?}");

    let read_only = server
        .create_token(&["SSL and Certificates Read"], &[])
        .await;
    let reader = server.with_token(&read_only);
    reader.ssl().verification().get(ZONE).await.unwrap();
    let err = reader
        .ssl()
        .verification()
        .edit(VerificationEditParams::new(
            ZONE,
            PACK,
            ValidationMethod::Txt,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
    assert_eq!(err.status(), Some(403));

    let err = server
        .client()
        .ssl()
        .verification()
        .get("ffffffffffffffffffffffffffffffff")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    let err = server
        .client()
        .ssl()
        .certificate_packs()
        .create(CertificatePackCreateParams::new(ZONE, ["example.com"]).validity_days(7))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
    assert!(err.errors().iter().all(|e| e.code >= 1000), "{err:?}");

    // A token of its own, so the budget is fresh: 20 requests pass, then 429.
    let limited = server.with_token(
        &server
            .create_token(&["SSL and Certificates Read"], &[])
            .await,
    );
    let mut outcome = None;
    for _ in 0..25 {
        if let Err(e) = limited.ssl().certificate_packs().quota(ZONE).await {
            outcome = Some(e);
            break;
        }
    }
    let err = outcome.expect("the budget ran out");
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    assert!(err.has_code(971), "{err:?}");
    assert!(
        err.retry_after().is_some_and(|d| d > Duration::ZERO),
        "{err:?}"
    );
}
