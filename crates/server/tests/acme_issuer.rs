//! The ACME issuer against a real Pebble (Debian's `pebble`) on loopback, its DNS lookups
//! answered by the testkit's DNS server and its http-01 fetches by the testkit's origin.
//! These drive [`AcmeIssuer`] directly; the lifecycle's use of it is in `acme_lifecycle.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acme_common;

use acme_common::*;
use zonecert_server::issuance::acme::{AcmeErrorKind, AcmeIssuer};
use zonecert_server::model::{DcvMethod, DcvRecord};
use zonecert_testkit::pebble::{Pebble, PebbleOptions};
use zonecert_testkit::{DnsServer, HttpOrigin};

#[tokio::test]
async fn a_txt_order_with_a_wildcard_is_issued_and_chains_to_pebbles_root() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let issuer = AcmeIssuer::new(pebble.acme_settings(), tmp.path()).unwrap();
    let hosts = hostnames(&["example.org", "*.example.org"]);
    let (order, records) = issuer
        .begin(&hosts, DcvMethod::Txt, "unused.example", Some(90))
        .await
        .unwrap();
    assert_eq!(records.len(), 2);
    // The apex and its wildcard share one TXT name with two values, as at a real CA.
    let values: Vec<&str> = records
        .iter()
        .map(|r| match r {
            DcvRecord::Txt { name, value } => {
                assert_eq!(name, "_acme-challenge.example.org");
                value.as_str()
            }
            other => panic!("not a TXT record: {other:?}"),
        })
        .collect();
    assert_ne!(values[0], values[1]);
    dns.set_txt("_acme-challenge.example.org", &values);

    let leaf = issuer
        .finish(&order, &request(&["example.org", "*.example.org"]))
        .await
        .unwrap();
    let root = pebble.issuing_root().await;
    assert_chain(&leaf.chain_pem, &root, &["example.org", "*.example.org"]);
    assert!(!leaf.key_pem.expose_secret().is_empty());

    // The account was created once, 0600, and is reused by a second issuer.
    let account = zonecert_server::issuance::acme::account_file(issuer.settings(), tmp.path());
    assert_mode_0600(&account);
    let again = AcmeIssuer::new(pebble.acme_settings(), tmp.path()).unwrap();
    assert_eq!(
        again.account_id().await.unwrap(),
        issuer.account_id().await.unwrap()
    );
    pebble.stop().await;
}

/// The CSR is made for a fresh key of the configured key type: RSA 2048 as well as the
/// default P-256 (above), and the key handed back is the certificate's.
#[tokio::test]
async fn the_certificates_key_is_of_the_configured_type() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let issuer = AcmeIssuer::new(pebble.acme_settings(), tmp.path()).unwrap();
    let hosts = hostnames(&["rsa.example.org"]);
    let (order, records) = issuer
        .begin(&hosts, DcvMethod::Txt, "unused.example", Some(90))
        .await
        .unwrap();
    let DcvRecord::Txt { name, value } = &records[0] else {
        panic!("not a TXT record: {records:?}");
    };
    dns.set_txt(name, &[value]);
    let mut req = request(&["rsa.example.org"]);
    req.key_type = zonecert_server::issuance::KeyType::Rsa2048;
    let leaf = issuer.finish(&order, &req).await.unwrap();
    assert_chain(
        &leaf.chain_pem,
        &pebble.issuing_root().await,
        &["rsa.example.org"],
    );
    let (_, pem) = x509_parser::pem::parse_x509_pem(leaf.chain_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let spki = cert.public_key();
    assert_eq!(
        spki.algorithm.algorithm,
        x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION,
        "an RSA certificate"
    );
    let key = rcgen::KeyPair::from_pem(leaf.key_pem.expose_secret()).unwrap();
    assert_eq!(
        key.public_key_raw(),
        &*spki.subject_public_key.data,
        "the key handed back is the certificate's"
    );
    pebble.stop().await;
}

#[tokio::test]
async fn an_http_order_is_fetched_from_the_origin() {
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
    let issuer = AcmeIssuer::new(pebble.acme_settings(), tmp.path()).unwrap();
    let (order, records) = issuer
        .begin(&hostnames(&["www.example.org"]), DcvMethod::Http, "x", None)
        .await
        .unwrap();
    let DcvRecord::Http { url, body } = &records[0] else {
        panic!("not http: {records:?}")
    };
    let path = url.strip_prefix("http://www.example.org").unwrap();
    origin.set_body(path, 200, body);
    let leaf = issuer
        .finish(&order, &request(&["www.example.org"]))
        .await
        .unwrap();
    assert_chain(
        &leaf.chain_pem,
        &pebble.issuing_root().await,
        &["www.example.org"],
    );
    assert!(
        origin.requests().iter().any(|r| r.path == path),
        "Pebble fetched the token from the origin"
    );
    pebble.stop().await;
}

#[tokio::test]
async fn a_wrong_record_gives_the_cas_refusal_for_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::for_dns(tmp.path(), &dns).await;
    let issuer = AcmeIssuer::new(pebble.acme_settings(), tmp.path()).unwrap();
    let (order, _) = issuer
        .begin(&hostnames(&["bad.example.org"]), DcvMethod::Txt, "x", None)
        .await
        .unwrap();
    dns.set_txt("_acme-challenge.bad.example.org", &["not-the-token"]);
    let err = issuer
        .finish(&order, &request(&["bad.example.org"]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, AcmeErrorKind::Unauthorized, "{err}");
    assert_eq!(err.host.as_deref(), Some("bad.example.org"));
    assert!(!err.kind.order_survives());
    let text = err.to_string();
    assert!(text.contains("bad.example.org"), "{text}");
    pebble.stop().await;
}

#[tokio::test]
async fn external_account_binding_is_refused_without_and_works_with() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    // base64url of 32 bytes, as CAs hand out HMAC keys.
    let hmac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let pebble = Pebble::start(
        tmp.path(),
        PebbleOptions {
            dns: Some(dns.addr()),
            eab_keys: vec![("kid-1".into(), hmac.into())],
            ..Default::default()
        },
    )
    .await;
    let without = AcmeIssuer::new(pebble.acme_settings(), tmp.path()).unwrap();
    let err = without.account_id().await.unwrap_err();
    assert_eq!(err.kind, AcmeErrorKind::ExternalAccountRequired, "{err}");

    let mut with = pebble.acme_settings();
    with.eab = Some(zonecert_server::config::Eab {
        key_id: "kid-1".into(),
        hmac_key: base64_url(hmac),
    });
    let issuer = AcmeIssuer::new(with, tmp.path()).unwrap();
    let (order, records) = issuer
        .begin(&hostnames(&["eab.example.org"]), DcvMethod::Txt, "x", None)
        .await
        .unwrap();
    let DcvRecord::Txt { value, .. } = &records[0] else {
        panic!()
    };
    dns.set_txt("_acme-challenge.eab.example.org", &[value]);
    issuer
        .finish(&order, &request(&["eab.example.org"]))
        .await
        .unwrap();
    pebble.stop().await;
}

#[tokio::test]
async fn refused_nonces_are_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let pebble = Pebble::start(
        tmp.path(),
        PebbleOptions {
            dns: Some(dns.addr()),
            nonce_reject_percent: 50,
            ..Default::default()
        },
    )
    .await;
    let issuer = AcmeIssuer::new(pebble.acme_settings(), tmp.path()).unwrap();
    // An order takes ten requests or more, each refused half the time: `begin` and
    // `finish` go on through the refusals (instant-acme's own retries and the issuer's).
    for i in 0..3 {
        let host = format!("n{i}.nonce.example.org");
        let (order, records) = issuer
            .begin(&hostnames(&[&host]), DcvMethod::Txt, "x", None)
            .await
            .unwrap();
        let DcvRecord::Txt { name, value } = &records[0] else {
            panic!()
        };
        dns.set_txt(name, &[value]);
        issuer.finish(&order, &request(&[&host])).await.unwrap();
    }
    assert!(pebble.log_text().contains("badNonce") || pebble.log_text().contains("nonce"));
    pebble.stop().await;
}

#[tokio::test]
async fn an_unreachable_directory_is_said_so() {
    let tmp = tempfile::tempdir().unwrap();
    let s = zonecert_server::config::AcmeCaSettings {
        ca: zonecert_server::model::CaChoice::LetsEncrypt,
        directory: format!(
            "https://127.0.0.1:{}/dir",
            zonecert_testkit::pebble::free_port()
        ),
        contact: None,
        eab: None,
        root_pem: None,
        profiles: Default::default(),
        caa_domains: vec!["letsencrypt.org".into()],
    };
    let issuer = AcmeIssuer::new(s, tmp.path()).unwrap();
    let err = issuer.account_id().await.unwrap_err();
    assert_eq!(err.kind, AcmeErrorKind::DirectoryUnreachable, "{err}");
    assert!(err.kind.order_survives());
}
