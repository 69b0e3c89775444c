//! What the client sends and how it decodes the payload shapes the live API and
//! zonecert answer with, against a scripted loopback server.
#![allow(clippy::unwrap_used)]

mod scripted_server;

use futures_util::{StreamExt, TryStreamExt};
use scripted_server::{Reply, ScriptedServer, failure, ok};
use serde_json::json;
use zonecert_client::api::{PackStatus, Signature};
use zonecert_client::{
    CertificatePackListParams, CertificateStatus, Client, Error, ValidationMethod,
    VerificationEditParams, VerificationGetParams, VerificationInfo,
};

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const PACK: &str = "a77f8bd7-3b47-46b4-a6f1-75cf98109948";

fn client(server: &ScriptedServer) -> Client {
    Client::builder()
        .base_url(format!("{}/", server.base_url))
        .api_token("test-token")
        .max_retries(0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn decodes_zonecert_and_live_shapes() {
    let server = ScriptedServer::start(vec![ok(json!([
        // zonecert's default: one item per host, object verification_info, hostname.
        {"certificate_status": "authorizing", "brand_check": false, "cert_pack_uuid": PACK,
         "hostname": "example.com", "signature": "ECDSAWithSHA256", "validation_method": "txt",
         "verification_info": {"record_name": "txt_name", "record_target": "txt_value",
            "txt_name": "_acme-challenge.example.com", "txt_value": "tok"},
         "verification_type": "cname"},
        // The live API: array of records, pending_validation, unknown keys.
        {"certificate_status": "pending_validation", "cert_pack_uuid": "p2",
         "verification_info": [{"status": "pending", "http_url": "http://a.example.com/.well-known/pki-validation/x.txt",
            "http_body": "body", "checked_at": "2024-01-01"}],
         "verification_type": "meta tag", "future": {"nested": true}},
        // The seed's own example and an item with nothing but its status.
        {"certificate_status": "active", "verification_info": {"record_name": "record_name", "record_target": "record_value"},
         "verification_status": true},
        {"certificate_status": "issuing"}
    ]))])
    .await;
    let items = client(&server)
        .ssl()
        .verification()
        .get(VerificationGetParams::new(ZONE).retry(true))
        .await
        .unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0].certificate_status, CertificateStatus::Authorizing);
    assert_eq!(items[0].hostname.as_deref(), Some("example.com"));
    assert_eq!(items[0].signature, Some(Signature::EcdsaWithSha256));
    let record = &items[0].verification_info.as_ref().unwrap().records()[0];
    assert_eq!(record.txt_value.as_deref(), Some("tok"));
    assert_eq!(
        items[1].certificate_status,
        CertificateStatus::Other("pending_validation".into())
    );
    let Some(VerificationInfo::Records(records)) = &items[1].verification_info else {
        panic!("expected the array form")
    };
    assert_eq!(records[0].http_body.as_deref(), Some("body"));
    assert_eq!(records[0].extra["checked_at"], json!("2024-01-01"));
    assert_eq!(items[1].extra["future"], json!({"nested": true}));
    assert_eq!(items[2].verification_status, Some(true));
    assert!(items[3].verification_info.is_none());

    let seen = &server.requests()[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.target,
        format!("/client/v4/zones/{ZONE}/ssl/verification?retry=true")
    );
    assert_eq!(seen.header("authorization"), Some("Bearer test-token"));
    assert!(
        seen.header("user-agent")
            .unwrap()
            .starts_with("zonecert-client/")
    );
}

#[tokio::test]
async fn global_key_credentials_are_sent_as_x_auth_headers() {
    let server = ScriptedServer::start(vec![ok(
        json!({"status": "pending_validation", "validation_method": "http"}),
    )])
    .await;
    let client = Client::builder()
        .base_url(&server.base_url)
        .api_key("user@example.com", "144c9defac04969c7bfad8efaa8ea194")
        .user_agent("my-tool/1.0")
        .build()
        .unwrap();
    let result = client
        .ssl()
        .verification()
        .edit(VerificationEditParams::new(
            ZONE,
            PACK,
            ValidationMethod::Http,
        ))
        .await
        .unwrap();
    assert_eq!(result.status, Some(PackStatus::PendingValidation));
    let seen = &server.requests()[0];
    assert_eq!(seen.method, "PATCH");
    assert_eq!(
        seen.target,
        format!("/client/v4/zones/{ZONE}/ssl/verification/{PACK}")
    );
    assert_eq!(seen.header("x-auth-email"), Some("user@example.com"));
    assert_eq!(
        seen.header("x-auth-key"),
        Some("144c9defac04969c7bfad8efaa8ea194")
    );
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("user-agent"), Some("my-tool/1.0"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&seen.body).unwrap(),
        json!({"validation_method": "http"})
    );
}

#[tokio::test]
async fn errors_of_the_domain_table_become_their_kinds() {
    let malformed = Reply::json(
        400,
        json!({"success": false, "messages": [], "result": null, "errors": [{"code": 6003,
            "message": "Invalid request headers",
            "error_chain": [{"code": 6111, "message": "Invalid format for Authorization header"}]}]}),
    );
    let not_found = Reply::json(
        404,
        json!({"success": false, "messages": [], "result": null, "errors": [
            {"code": 7003, "message": "Could not route to /client/v4/zones/x, perhaps your object identifier is invalid?"},
            {"code": 7000, "message": "No route for that URI"}]}),
    );
    type Case = (Reply, fn(&Error) -> bool, u32);
    let cases: Vec<Case> = vec![
        (
            failure(
                400,
                9106,
                "Missing X-Auth-Key, X-Auth-Email or Authorization headers",
            ),
            |e| matches!(e, Error::Authentication(_)),
            9106,
        ),
        (malformed, |e| matches!(e, Error::Authentication(_)), 6111),
        (
            failure(403, 10000, "Authentication error"),
            |e| matches!(e, Error::Authentication(_)),
            10000,
        ),
        (
            failure(403, 9109, "Unauthorized to access requested resource"),
            |e| matches!(e, Error::PermissionDenied(_)),
            9109,
        ),
        (not_found, |e| matches!(e, Error::NotFound(_)), 7000),
        (
            failure(429, 971, "Please wait"),
            |e| matches!(e, Error::RateLimited { .. }),
            971,
        ),
        (
            failure(400, 1001, "hosts: must not be empty"),
            |e| matches!(e, Error::BadRequest(_)),
            1001,
        ),
        (
            failure(409, 1400, "conflict"),
            |e| matches!(e, Error::Conflict(_)),
            1400,
        ),
        (
            failure(500, 1002, "internal"),
            |e| matches!(e, Error::Server(_)),
            1002,
        ),
        // A code above u16::MAX survives.
        (
            failure(400, 100_000, "big code"),
            |e| matches!(e, Error::BadRequest(_)),
            100_000,
        ),
    ];
    for (reply, is_kind, code) in cases {
        let server = ScriptedServer::start(vec![reply]).await;
        let err = client(&server)
            .ssl()
            .verification()
            .get(ZONE)
            .await
            .unwrap_err();
        assert!(is_kind(&err), "code {code}: {err:?}");
        assert!(err.has_code(code), "code {code}: {err:?}");
        assert!(err.to_string().contains(&code.to_string()), "{err}");
    }
}

#[tokio::test]
async fn success_without_the_documented_shape_is_a_decode_error() {
    let server = ScriptedServer::start(vec![ok(json!({"not": "a list"}))]).await;
    let err = client(&server)
        .ssl()
        .verification()
        .get(ZONE)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode { status: 200, .. }), "{err:?}");

    let server = ScriptedServer::start(vec![Reply::Answer {
        status: 200,
        headers: vec![],
        body: "not json".into(),
    }])
    .await;
    let err = client(&server)
        .ssl()
        .verification()
        .get(ZONE)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");

    // 200 with success:false is a failure, not a result.
    let server = ScriptedServer::start(vec![Reply::json(
        200,
        json!({"success": false, "errors": [{"code": 1003, "message": "odd"}], "messages": [], "result": null}),
    )])
    .await;
    let err = client(&server)
        .ssl()
        .verification()
        .get(ZONE)
        .await
        .unwrap_err();
    assert!(err.has_code(1003), "{err:?}");
}

fn page(ids: &[&str], page: u64, total_pages: u64) -> Reply {
    let packs: Vec<_> = ids
        .iter()
        .map(|id| json!({"id": id, "type": "advanced", "hosts": ["example.com"], "status": "active"}))
        .collect();
    Reply::json(
        200,
        json!({"success": true, "errors": [], "messages": [], "result": packs,
            "result_info": {"page": page, "per_page": 2, "count": ids.len(), "total_count": 3, "total_pages": total_pages}}),
    )
}

#[tokio::test]
async fn list_fetches_pages_lazily_and_stops_at_the_last() {
    let server = ScriptedServer::start(vec![
        page(&["a", "b"], 1, 2),
        page(&["c"], 2, 2),
        page(&[], 3, 2),
    ])
    .await;
    let client = client(&server);
    let mut packs = client.ssl().certificate_packs().list(
        CertificatePackListParams::new(ZONE)
            .per_page(2)
            .status("all"),
    );
    assert_eq!(
        server.requests().len(),
        0,
        "nothing is fetched before reading"
    );
    assert_eq!(packs.next().await.unwrap().unwrap().id, "a");
    assert_eq!(packs.next().await.unwrap().unwrap().id, "b");
    assert_eq!(server.requests().len(), 1);
    let rest: Vec<_> = packs.try_collect().await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].status, PackStatus::Active);
    let seen = server.requests();
    // result_info said page 2 was the last: no third request.
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].target,
        format!("/client/v4/zones/{ZONE}/ssl/certificate_packs?page=2&per_page=2&status=all")
    );
}

#[tokio::test]
async fn list_without_result_info_stops_at_an_empty_page_and_yields_errors() {
    let server = ScriptedServer::start(vec![
        ok(json!([{"id": "a", "type": "advanced", "hosts": [], "status": "active"}])),
        ok(json!([])),
    ])
    .await;
    let all: Vec<_> = client(&server)
        .ssl()
        .certificate_packs()
        .list(ZONE)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(server.requests().len(), 2);

    let server = ScriptedServer::start(vec![failure(403, 9109, "Unauthorized")]).await;
    let mut packs = client(&server).ssl().certificate_packs().list(ZONE);
    assert!(matches!(
        packs.next().await,
        Some(Err(Error::PermissionDenied(_)))
    ));
    assert!(packs.next().await.is_none());
}
