//! Retries, timeouts and transport failures, against a scripted loopback server.
#![allow(clippy::unwrap_used)]

mod scripted_server;

use scripted_server::{Reply, ScriptedServer, failure, ok};
use serde_json::json;
use std::time::{Duration, Instant};
use zonecert_client::{CertificatePackCreateParams, Client, Error};

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

fn client(server: &ScriptedServer) -> Client {
    Client::builder()
        .base_url(&server.base_url)
        .api_token("test-token")
        .retry_delay(Duration::from_millis(10), Duration::from_millis(40))
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap()
}

fn verification_ok() -> Reply {
    ok(json!([{"certificate_status": "active", "cert_pack_uuid": "p1"}]))
}

fn order() -> CertificatePackCreateParams {
    CertificatePackCreateParams::new(ZONE, ["example.com"])
}

fn pack() -> serde_json::Value {
    json!({"id": "p1", "type": "advanced", "hosts": ["example.com"], "status": "initializing"})
}

#[tokio::test]
async fn rate_limit_with_retry_after_is_waited_out() {
    let server = ScriptedServer::start(vec![
        failure(
            429,
            971,
            "Please wait and consider throttling your request speed",
        )
        .with_header("retry-after", "1"),
        verification_ok(),
    ])
    .await;
    let started = Instant::now();
    let items = client(&server)
        .ssl()
        .verification()
        .get(ZONE)
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    // The server's second, not the client's 10 ms backoff, decided the wait.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("x-stainless-retry-count"), Some("0"));
    assert_eq!(seen[1].header("x-stainless-retry-count"), Some("1"));
}

#[tokio::test]
async fn retry_after_ms_takes_precedence() {
    let server = ScriptedServer::start(vec![
        failure(429, 971, "slow down")
            .with_header("retry-after-ms", "50")
            .with_header("retry-after", "30"),
        verification_ok(),
    ])
    .await;
    let started = Instant::now();
    client(&server)
        .ssl()
        .verification()
        .get(ZONE)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_long_rate_limit_is_returned_with_its_wait() {
    let server = ScriptedServer::start(vec![
        failure(429, 971, "Please wait").with_header("retry-after", "120"),
    ])
    .await;
    let err = client(&server)
        .ssl()
        .verification()
        .get(ZONE)
        .await
        .unwrap_err();
    match &err {
        Error::RateLimited { retry_after, error } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(120)));
            assert_eq!(error.errors[0].code, 971);
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let server = ScriptedServer::start(vec![
        failure(500, 1000, "internal"),
        failure(502, 1000, "bad gateway"),
        verification_ok(),
    ])
    .await;
    let items = client(&server)
        .ssl()
        .verification()
        .get(ZONE)
        .await
        .unwrap();
    assert_eq!(items[0].cert_pack_uuid.as_deref(), Some("p1"));
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn server_errors_give_up_after_max_retries() {
    let server = ScriptedServer::start(vec![failure(500, 1000, "internal")]).await;
    let err = client(&server)
        .ssl()
        .verification()
        .get(ZONE)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Server(_)), "{err:?}");
    assert_eq!(err.status(), Some(500));
    // One attempt and the default two retries.
    assert_eq!(server.requests().len(), 3);

    let server = ScriptedServer::start(vec![failure(500, 1000, "internal")]).await;
    let no_retries = Client::builder()
        .base_url(&server.base_url)
        .api_token("t")
        .max_retries(0)
        .build()
        .unwrap();
    assert!(no_retries.ssl().verification().get(ZONE).await.is_err());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn x_should_retry_false_stops_retries() {
    let server = ScriptedServer::start(vec![
        failure(500, 1000, "internal").with_header("x-should-retry", "false"),
    ])
    .await;
    assert!(
        client(&server)
            .ssl()
            .verification()
            .get(ZONE)
            .await
            .is_err()
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_order_is_not_retried_after_a_server_error() {
    let server = ScriptedServer::start(vec![failure(500, 1000, "internal"), ok(pack())]).await;
    let err = client(&server)
        .ssl()
        .certificate_packs()
        .create(order())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Server(_)), "{err:?}");
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
}

#[tokio::test]
async fn an_order_refused_with_503_or_429_is_retried() {
    let server = ScriptedServer::start(vec![
        failure(503, 1000, "unavailable"),
        failure(429, 971, "slow down").with_header("retry-after-ms", "20"),
        ok(pack()),
    ])
    .await;
    let created = client(&server)
        .ssl()
        .certificate_packs()
        .create(order())
        .await
        .unwrap();
    assert_eq!(created.id, "p1");
    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    // Every attempt carried the same order.
    assert!(seen.iter().all(|s| s.body == seen[0].body));
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["hosts"], json!(["example.com"]));
    assert_eq!(body["type"], "advanced");
}

#[tokio::test]
async fn a_dropped_connection_is_retried_for_a_get() {
    let server = ScriptedServer::start(vec![Reply::Drop, verification_ok()]).await;
    client(&server)
        .ssl()
        .verification()
        .get(ZONE)
        .await
        .unwrap();
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_dropped_connection_is_not_retried_for_an_order() {
    let server = ScriptedServer::start(vec![Reply::Drop, ok(pack())]).await;
    let err = client(&server)
        .ssl()
        .certificate_packs()
        .create(order())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_hang_times_out_and_is_retried_for_a_get() {
    let server = ScriptedServer::start(vec![Reply::Hang, Reply::Hang, verification_ok()]).await;
    let started = Instant::now();
    client(&server)
        .ssl()
        .verification()
        .get(ZONE)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(server.requests().len(), 3);

    let server = ScriptedServer::start(vec![Reply::Hang]).await;
    let err = client(&server)
        .ssl()
        .verification()
        .get(ZONE)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { after } if after == Duration::from_millis(400)),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn a_hung_order_is_not_retried() {
    let server = ScriptedServer::start(vec![Reply::Hang, ok(pack())]).await;
    let err = client(&server)
        .ssl()
        .certificate_packs()
        .create(order())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_connection_error() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}/client/v4"))
        .api_token("t")
        .retry_delay(Duration::from_millis(5), Duration::from_millis(10))
        .build()
        .unwrap();
    // Even the order is retried (nothing was sent), and still fails.
    let err = client
        .ssl()
        .certificate_packs()
        .create(order())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.status().is_none());
}

#[tokio::test]
async fn a_non_envelope_error_body_is_kept() {
    let server = ScriptedServer::start(vec![Reply::Answer {
        status: 502,
        headers: vec![("cf-ray".into(), "8a1b2c3d4e5f-FRA".into())],
        body: "<html>Bad gateway</html>".into(),
    }])
    .await;
    let client = Client::builder()
        .base_url(&server.base_url)
        .api_token("t")
        .max_retries(0)
        .build()
        .unwrap();
    let err = client.ssl().verification().get(ZONE).await.unwrap_err();
    let Error::Server(api) = &err else {
        panic!("expected Server, got {err:?}")
    };
    assert!(api.errors.is_empty());
    assert_eq!(api.body.as_deref(), Some("<html>Bad gateway</html>"));
    assert_eq!(api.ray_id.as_deref(), Some("8a1b2c3d4e5f-FRA"));
    assert!(err.to_string().contains("Bad gateway"));
}
