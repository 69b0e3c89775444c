//! The HTTP API against a real server on 127.0.0.1:0 with a fresh database per test:
//! every endpoint, every row of domain.md's error table, pagination edges, token scopes.

#![allow(clippy::unwrap_used)] // test harness: a failed setup should panic loudly

use serde_json::{Value, json};
use zonecert_server::admin::{self, dev};
use zonecert_server::config::RateLimit;
use zonecert_server::model::PackId;
use zonecert_testkit::{TestServer, envelope_codes as codes};

/// What these tests do often, on the shared harness.
trait Suite {
    async fn zone(&self, name: &str) -> String;
    async fn order(&self, zone: &str, hosts: &[&str], method: &str) -> (u16, Value);
}

impl Suite for TestServer {
    async fn zone(&self, name: &str) -> String {
        let (s, body) = self.send("POST", "/zones", json!({"name": name})).await;
        assert_eq!(s, 200, "{body}");
        body["result"]["id"].as_str().unwrap().to_owned()
    }

    async fn order(&self, zone: &str, hosts: &[&str], method: &str) -> (u16, Value) {
        self.send(
            "POST",
            &format!("/zones/{zone}/ssl/certificate_packs/order"),
            json!({"type": "advanced", "hosts": hosts, "validation_method": method,
                   "validity_days": 90, "certificate_authority": "google"}),
        )
        .await
    }
}

fn verification_path() -> String {
    format!("/zones/{}/ssl/verification", dev::ZONE_ID)
}

#[tokio::test]
async fn verification_lists_each_host_of_each_pack_with_its_record() {
    let s = TestServer::start().await;
    let (status, body) = s.get(&verification_path()).await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    let items = body["result"].as_array().unwrap();
    assert_eq!(items.len(), 2, "one item per host of the dev pack: {body}");
    let hosts: Vec<&str> = items
        .iter()
        .map(|i| i["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["example.com", "*.example.com"]);
    for item in items {
        assert_eq!(item["cert_pack_uuid"], dev::PACK_ID);
        assert_eq!(
            item["certificate_status"], "active",
            "the documentation's pack is active"
        );
        assert_eq!(item["signature"], "ECDSAWithSHA256");
        assert_eq!(item["validation_method"], "txt");
        assert_eq!(item["verification_type"], "cname");
        assert_eq!(item["verification_status"], true);
        let info = &item["verification_info"];
        assert_eq!(info["record_name"], "txt_name");
        assert_eq!(info["record_target"], "txt_value");
        assert_eq!(info["txt_name"], "_acme-challenge.example.com");
        assert_eq!(info["txt_value"].as_str().unwrap().len(), 43);
    }
    assert_ne!(
        items[0]["verification_info"]["txt_value"],
        items[1]["verification_info"]["txt_value"]
    );
}

#[tokio::test]
async fn verification_status_is_omitted_until_a_check_runs() {
    let s = TestServer::start().await;
    let zone = s.zone("fresh.example").await;
    let (st, _) = s.order(&zone, &["fresh.example"], "txt").await;
    assert_eq!(st, 200);
    let (_, body) = s.get(&format!("/zones/{zone}/ssl/verification")).await;
    let item = &body["result"][0];
    assert_eq!(item["certificate_status"], "authorizing");
    assert!(
        item.get("verification_status").is_none(),
        "unknown until checked: {item}"
    );
}

#[tokio::test]
async fn the_live_form_has_one_item_per_pack_with_an_array_of_records() {
    let s = TestServer::builder()
        .config(|c| c.verification_form = zonecert_server::config::VerificationForm::Live)
        .await;
    let (_, body) = s.get(&verification_path()).await;
    let items = body["result"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let records = items[0]["verification_info"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["status"], "active");
    assert_eq!(records[0]["txt_name"], "_acme-challenge.example.com");
}

#[tokio::test]
async fn global_key_authentication_works_on_every_endpoint() {
    let s = TestServer::start().await;
    for path in [
        verification_path(),
        format!("/zones/{}/ssl/certificate_packs?status=all", dev::ZONE_ID),
        format!(
            "/zones/{}/ssl/certificate_packs/{}",
            dev::ZONE_ID,
            dev::PACK_ID
        ),
        format!("/zones/{}/ssl/certificate_packs/quota", dev::ZONE_ID),
        format!("/zones/{}", dev::ZONE_ID),
        "/zones".to_owned(),
    ] {
        let resp = s
            .http()
            .get(s.url(&path))
            .header("X-Auth-Email", dev::USER_EMAIL)
            .header("X-Auth-Key", dev::USER_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn the_error_table_of_domain_md() {
    let s = TestServer::start().await;
    let path = verification_path();
    let raw = |headers: Vec<(&'static str, &'static str)>| {
        let mut req = s.http().get(s.url(&path));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, body) = raw(vec![]).await;
    assert_eq!((st, codes(&body)), (400, vec![9106]));
    let (st, body) = raw(vec![("Authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!((st, codes(&body)), (400, vec![6003]));
    assert_eq!(body["errors"][0]["error_chain"][0]["code"], 6111);
    let (st, body) = raw(vec![
        ("X-Auth-Email", "user@example.com"),
        ("X-Auth-Key", "not-hex"),
    ])
    .await;
    assert_eq!((st, codes(&body)), (400, vec![6003]));
    assert_eq!(body["errors"][0]["error_chain"][0]["code"], 6103);
    let (st, body) = raw(vec![
        ("X-Auth-Email", "nobody"),
        ("X-Auth-Key", dev::USER_KEY),
    ])
    .await;
    assert_eq!((st, codes(&body)), (400, vec![6003]));
    assert_eq!(body["errors"][0]["error_chain"][0]["code"], 6102);
    let (st, body) = raw(vec![(
        "Authorization",
        "Bearer Sn3lZJTBX6kkg7OdcBUAxOO963GEIyGQqnFTOFYY",
    )])
    .await;
    assert_eq!((st, codes(&body)), (403, vec![10000]));
    let (st, body) = raw(vec![
        ("X-Auth-Email", "user@example.com"),
        ("X-Auth-Key", "0000000000000000000000000000000000000"),
    ])
    .await;
    assert_eq!((st, codes(&body)), (403, vec![9103]));

    let reader = s.create_token(&["SSL and Certificates Read"], &[]).await;
    let (st, body) = s
        .call(
            "POST",
            &format!("/zones/{}/ssl/certificate_packs/order", dev::ZONE_ID),
            Some(&reader),
            Some(json!({})),
        )
        .await;
    assert_eq!((st, codes(&body)), (403, vec![9109]));
    let other_zone = s.zone("other.example").await;
    let scoped = s
        .create_token(&["SSL and Certificates Read"], &[&other_zone])
        .await;
    let (st, body) = s.call("GET", &path, Some(&scoped), None).await;
    assert_eq!((st, codes(&body)), (403, vec![9109]));
    let (st, _) = s
        .call(
            "GET",
            &format!("/zones/{other_zone}/ssl/verification"),
            Some(&scoped),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let mtls = s
        .create_token(&["Access: Mutual TLS Certificates Read"], &[])
        .await;
    assert_eq!(s.call("GET", &path, Some(&mtls), None).await.0, 200);
    let (st, body) = s
        .call(
            "GET",
            &format!("/zones/{}/ssl/certificate_packs", dev::ZONE_ID),
            Some(&mtls),
            None,
        )
        .await;
    assert_eq!((st, codes(&body)), (403, vec![9109]));

    for unknown in [
        "/zones/00000000000000000000000000000000/ssl/verification".to_owned(),
        "/zones/not-a-zone/ssl/verification".to_owned(),
        format!(
            "/zones/{}/ssl/certificate_packs/00000000-0000-4000-8000-000000000000",
            dev::ZONE_ID
        ),
        format!("/zones/{}/ssl/certificate_packs/nope", dev::ZONE_ID),
    ] {
        let (st, body) = s.get(&unknown).await;
        assert_eq!((st, codes(&body)), (404, vec![7003, 7000]), "{unknown}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("/client/v4/zones/")
        );
    }
    let (st, body) = s.get("/no/such/route").await;
    assert_eq!((st, codes(&body)), (404, vec![7000]));
    let (st, body) = s.call("PUT", &path, Some(s.token()), None).await;
    assert_eq!((st, codes(&body)), (405, vec![7001]));
}

#[tokio::test]
async fn bad_bodies_get_field_named_errors() {
    let s = TestServer::start().await;
    let zone = dev::ZONE_ID;
    let order = format!("/zones/{zone}/ssl/certificate_packs/order");
    let base = json!({"type": "advanced", "hosts": ["example.com"], "validation_method": "txt",
                      "validity_days": 90, "certificate_authority": "lets_encrypt"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("hosts", json!("example.com")), "hosts"),
        (with("hosts", json!([])), "hosts"),
        (with("hosts", json!(["www.example.com"])), "hosts"),
        (
            with("hosts", json!(["example.com", "example.org"])),
            "hosts",
        ),
        (with("hosts", json!(["example.com", 5])), "hosts"),
        (
            with("hosts", json!(["example.com", "bad_name.example.com"])),
            "hosts",
        ),
        (with("validation_method", json!("dns")), "validation_method"),
        (with("validity_days", json!("90")), "validity_days"),
        (with("validity_days", json!(30)), "validity_days"),
        (
            with("certificate_authority", json!("digicert")),
            "certificate_authority",
        ),
        (with("type", json!("universal")), "type"),
        (
            with("cloudflare_branding", json!("yes")),
            "cloudflare_branding",
        ),
        (
            json!({"type": "advanced", "hosts": ["example.com", "*.example.com"], "validation_method": "http",
                "validity_days": 90, "certificate_authority": "google"}),
            "validation_method",
        ),
    ];
    for (body, field) in cases {
        let (st, resp) = s.send("POST", &order, body.clone()).await;
        assert_eq!((st, codes(&resp)), (400, vec![1002]), "{body}: {resp}");
        let msg = resp["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains(field), "{field} named in {msg:?}");
        assert_eq!(resp["errors"][0]["source"]["pointer"], format!("/{field}"));
    }
    let many: Vec<String> = std::iter::once("example.com".to_owned())
        .chain((0..50).map(|i| format!("h{i}.example.com")))
        .collect();
    let (st, _) = s.send("POST", &order, with("hosts", json!(many))).await;
    assert_eq!(st, 400);
    let fifty: Vec<String> = std::iter::once("example.com".to_owned())
        .chain((0..49).map(|i| format!("h{i}.example.com")))
        .collect();
    assert_eq!(
        s.send("POST", &order, with("hosts", json!(fifty))).await.0,
        200
    );

    for raw in ["{not json", "[1,2]", "", "\u{0}\u{1}garbage"] {
        let resp = s
            .http()
            .post(s.url(&order))
            .bearer_auth(s.token())
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{raw:?}");
        assert_eq!(codes(&resp.json().await.unwrap()), vec![1001]);
    }
    let big = format!("{{\"hosts\": [\"{}\"]}}", "a".repeat(1024 * 1024 + 10));
    let resp = s
        .http()
        .post(s.url(&order))
        .bearer_auth(s.token())
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(codes(&resp.json().await.unwrap()), vec![1004]);
    let (st, body) = s.get(&format!("{}?retry=false", verification_path())).await;
    assert_eq!((st, codes(&body)), (400, vec![1003]));
    let (st, body) = s.get(&format!("{}?retry=true", verification_path())).await;
    assert_eq!(st, 200, "{body}");
}

#[tokio::test]
async fn packs_page_past_the_end_and_filter_active_by_default() {
    let s = TestServer::start().await;
    let zone = s.zone("pages.example").await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let (st, body) = s
            .order(
                &zone,
                &["pages.example", &format!("h{i}.pages.example")],
                "txt",
            )
            .await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["result"]["status"], "pending_validation");
        ids.push(body["result"]["id"].as_str().unwrap().to_owned());
    }
    let list = |q: String| {
        let s = &s;
        let zone = zone.clone();
        async move {
            s.get(&format!("/zones/{zone}/ssl/certificate_packs?{q}"))
                .await
        }
    };
    let mut seen = Vec::new();
    for (page, count) in [(1, 5), (2, 5), (3, 2), (4, 0)] {
        let (st, body) = list(format!("status=all&per_page=5&page={page}")).await;
        assert_eq!(st, 200);
        let items = body["result"].as_array().unwrap();
        assert_eq!(items.len(), count, "page {page}");
        assert_eq!(
            body["result_info"],
            json!({"page": page, "per_page": 5, "count": count, "total_count": 12, "total_pages": 3})
        );
        seen.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(seen, ids, "every pack once, in order");
    let (_, body) = list(String::new()).await;
    assert_eq!(body["result"], json!([]), "pending packs are not active");
    assert_eq!(body["result_info"]["per_page"], 20);
    for bad in [
        "per_page=4",
        "per_page=51",
        "page=0",
        "page=x",
        "status=active",
        "deploy=moon",
    ] {
        let (st, body) = list(bad.to_owned()).await;
        assert_eq!((st, codes(&body)), (400, vec![1003]), "{bad}");
    }
}

#[tokio::test]
async fn pack_get_edit_delete_and_quota() {
    let s = TestServer::builder().config(|c| c.quota_advanced = 3).await;
    let zone = s.zone("quota.example").await;
    let q = format!("/zones/{zone}/ssl/certificate_packs/quota");
    assert_eq!(
        s.get(&q).await.1["result"],
        json!({"advanced": {"allocated": 3, "used": 0}})
    );
    let (_, a) = s
        .order(&zone, &["quota.example", "*.quota.example"], "txt")
        .await;
    let id = a["result"]["id"].as_str().unwrap().to_owned();
    s.order(&zone, &["quota.example"], "http").await;
    s.order(&zone, &["quota.example"], "email").await;
    let (st, body) = s.order(&zone, &["quota.example"], "txt").await;
    assert_eq!((st, codes(&body)), (400, vec![1005]));
    assert_eq!(s.get(&q).await.1["result"]["advanced"]["used"], 3);

    let pack_path = format!("/zones/{zone}/ssl/certificate_packs/{id}");
    let (st, got) = s.get(&pack_path).await;
    assert_eq!(st, 200);
    assert_eq!(got["result"], a["result"]);
    let (st, edited) = s
        .send("PATCH", &pack_path, json!({"cloudflare_branding": true}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(edited["result"]["cloudflare_branding"], true);
    let (st, body) = s.send("PATCH", &pack_path, json!({})).await;
    assert_eq!(
        (st, codes(&body)),
        (400, vec![1006]),
        "only timed-out packs restart"
    );

    let (st, del) = s.call("DELETE", &pack_path, Some(s.token()), None).await;
    assert_eq!((st, del["result"]["id"].as_str()), (200, Some(id.as_str())));
    assert_eq!(s.get(&pack_path).await.0, 404);
    assert_eq!(
        s.call("DELETE", &pack_path, Some(s.token()), None).await.0,
        404
    );
    assert_eq!(s.get(&q).await.1["result"]["advanced"]["used"], 2);
}

#[tokio::test]
async fn changing_the_validation_method_mints_records_of_that_method() {
    let s = TestServer::start().await;
    let zone = s.zone("method.example").await;
    let (_, a) = s
        .order(&zone, &["method.example", "www.method.example"], "txt")
        .await;
    let id = a["result"]["id"].as_str().unwrap().to_owned();
    let edit = format!("/zones/{zone}/ssl/verification/{id}");
    let (st, body) = s
        .send("PATCH", &edit, json!({"validation_method": "txt"}))
        .await;
    assert_eq!(
        (st, &body["result"]),
        (
            200,
            &json!({"status": "pending_validation", "validation_method": "txt"})
        )
    );
    let (_, same) = s
        .get(&format!("/zones/{zone}/ssl/certificate_packs/{id}"))
        .await;
    assert_eq!(
        same["result"]["validation_records"], a["result"]["validation_records"],
        "a recheck keeps the tokens"
    );

    let (st, _) = s
        .send("PATCH", &edit, json!({"validation_method": "http"}))
        .await;
    assert_eq!(st, 200);
    let (_, body) = s.get(&format!("/zones/{zone}/ssl/verification")).await;
    let item = &body["result"][1];
    assert_eq!(item["validation_method"], "http");
    assert_eq!(item["verification_type"], "meta tag");
    assert_eq!(item["verification_info"]["record_name"], "http_url");
    let url = item["verification_info"]["http_url"].as_str().unwrap();
    assert!(
        url.starts_with("http://www.method.example/.well-known/acme-challenge/"),
        "{url}"
    );

    let (st, _) = s
        .send("PATCH", &edit, json!({"validation_method": "cname"}))
        .await;
    assert_eq!(st, 200);
    let (_, pack) = s
        .get(&format!("/zones/{zone}/ssl/certificate_packs/{id}"))
        .await;
    assert_eq!(
        pack["result"]["validation_method"], "txt",
        "the pack schema has no cname"
    );
    let delegation = &pack["result"]["dcv_delegation_records"][0];
    assert_eq!(delegation["cname"], "_acme-challenge.method.example");
    assert!(
        delegation["cname_target"]
            .as_str()
            .unwrap()
            .starts_with("method.example.")
    );

    for bad in [
        json!({}),
        json!({"validation_method": "dns"}),
        json!({"validation_method": 1}),
    ] {
        let (st, body) = s.send("PATCH", &edit, bad.clone()).await;
        assert_eq!((st, codes(&body)), (400, vec![1002]), "{bad}");
    }
    let (_, w) = s
        .order(&zone, &["method.example", "*.method.example"], "txt")
        .await;
    let wid = w["result"]["id"].as_str().unwrap();
    let (st, _) = s
        .send(
            "PATCH",
            &format!("/zones/{zone}/ssl/verification/{wid}"),
            json!({"validation_method": "http"}),
        )
        .await;
    assert_eq!(st, 400, "wildcards cannot use http");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let s = TestServer::builder()
        .config(|c| {
            c.rate_limit = Some(RateLimit {
                requests: 3,
                window: std::time::Duration::from_secs(300),
            })
        })
        .await;
    for left in [2, 1, 0] {
        let r = s
            .http()
            .get(s.url(&verification_path()))
            .bearer_auth(s.token())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "3");
        assert_eq!(
            r.headers()["x-ratelimit-remaining"],
            left.to_string().as_str()
        );
    }
    let r = s
        .http()
        .get(s.url(&verification_path()))
        .bearer_auth(s.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&wait));
    assert_eq!(codes(&r.json().await.unwrap()), vec![971]);
    let other = s
        .http()
        .get(s.url(&verification_path()))
        .header("X-Auth-Email", dev::USER_EMAIL)
        .header("X-Auth-Key", dev::USER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200, "limits are per credential");
}

#[tokio::test]
async fn zones_and_token_verification() {
    let s = TestServer::start().await;
    let id = s.zone("zones.example").await;
    let (st, body) = s
        .send("POST", "/zones", json!({"name": "zones.example"}))
        .await;
    assert_eq!((st, codes(&body)), (400, vec![1061]));
    let (st, body) = s
        .send("POST", "/zones", json!({"name": "not a name"}))
        .await;
    assert_eq!((st, codes(&body)), (400, vec![1002]));
    let (_, body) = s.get("/zones?name=zones.example").await;
    assert_eq!(body["result"][0]["id"], id.as_str());
    assert_eq!(body["result_info"]["total_count"], 1);
    let (_, body) = s.get(&format!("/zones/{id}")).await;
    assert_eq!(body["result"]["name"], "zones.example");
    let scoped = s.create_token(&["Zone Read"], &[&id]).await;
    let (_, body) = s.call("GET", "/zones", Some(&scoped), None).await;
    assert_eq!(
        body["result"].as_array().unwrap().len(),
        1,
        "a scoped token sees its zones only"
    );
    let (st, body) = s
        .call("GET", "/user/tokens/verify", Some(&scoped), None)
        .await;
    assert_eq!((st, &body["result"]["status"]), (200, &json!("active")));
    let (st, body) = s
        .call("DELETE", &format!("/zones/{id}"), Some(s.token()), None)
        .await;
    assert_eq!((st, &body["result"]["id"]), (200, &json!(id)));
    assert_eq!(s.get(&format!("/zones/{id}")).await.0, 404);
}

#[tokio::test]
async fn openapi_document_matches_the_router_and_cloudflares_spec() {
    let s = TestServer::start().await;
    let (st, doc) = s.call("GET", "/openapi.json", None, None).await;
    assert_eq!(st, 200);
    // Every documented operation is routed (it never answers "no route").
    for op in zonecert_server::http::openapi::OPERATIONS {
        let path = op
            .path
            .replace("{zone_id}", dev::ZONE_ID)
            .replace("{certificate_pack_id}", dev::PACK_ID);
        let (_, body) = s
            .call(&op.method.to_uppercase(), &path, Some(s.token()), None)
            .await;
        let codes: Vec<u64> = body["errors"]
            .as_array()
            .map(|e| e.iter().filter_map(|e| e["code"].as_u64()).collect())
            .unwrap_or_default();
        assert!(
            !codes.contains(&7001) && codes != [7000],
            "{} {path}: {body}",
            op.method
        );
        assert!(doc["paths"][op.path][op.method].is_object());
    }
    // Every operation of Cloudflare's spec (vendored in `spec/`) is implemented, under its id.
    let spec_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec/cloudflare-ssl-openapi.yaml");
    let spec = std::fs::read_to_string(spec_path).unwrap();
    let ids: Vec<&str> = spec
        .lines()
        .filter_map(|l| l.trim().strip_prefix("operationId: "))
        .collect();
    assert_eq!(ids.len(), 8);
    let ours: Vec<&str> = zonecert_server::http::openapi::OPERATIONS
        .iter()
        .map(|o| o.operation_id)
        .collect();
    for id in ids {
        assert!(ours.contains(&id), "{id} is not implemented");
    }
}

#[tokio::test]
async fn a_verification_patch_on_an_active_pack_with_its_own_method_answers_its_status() {
    let s = TestServer::start().await;
    let path = format!("/zones/{}/ssl/verification/{}", dev::ZONE_ID, dev::PACK_ID);
    let before = s
        .store()
        .pack_by_id(&PackId::parse(dev::PACK_ID).unwrap())
        .await
        .unwrap();
    let (st, body) = s
        .send("PATCH", &path, json!({"validation_method": "txt"}))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body["result"],
        json!({"status": "active", "validation_method": "txt"})
    );
    let after = s
        .store()
        .pack_by_id(&PackId::parse(dev::PACK_ID).unwrap())
        .await
        .unwrap();
    assert_eq!(
        before.map(|p| p.version),
        after.map(|p| p.version),
        "nothing changed"
    );
    // Another method stays refused, and the message says when it can change.
    let (st, body) = s
        .send("PATCH", &path, json!({"validation_method": "cname"}))
        .await;
    assert_eq!((st, codes(&body)), (400, vec![1006]), "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("cannot be changed") && message.contains("pending validation"),
        "{message}"
    );
}

#[tokio::test]
async fn zone_and_host_names_are_names_a_ca_could_issue_for() {
    let s = TestServer::start().await;
    for (name, why) in [
        ("127.0.0.1", "IP address"),
        ("1.0.0.127", "IP address"),
        ("co.uk", "public suffix"),
        ("in-addr.arpa", "public suffix"),
        ("github.io", "public suffix"),
        ("xn--zz.example.org", "not valid IDNA"),
    ] {
        let (st, body) = s.send("POST", "/zones", json!({"name": name})).await;
        assert_eq!((st, codes(&body)), (400, vec![1002]), "{name}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(why), "{name}: {message}");
    }
    // A zone inside another, or above one: refused (the dev seed holds example.com).
    let (st, body) = s
        .send("POST", "/zones", json!({"name": "shop.example.com"}))
        .await;
    assert_eq!((st, codes(&body)), (400, vec![1002]), "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("example.com")
    );
    s.zone("deep.nest.example").await;
    let (st, body) = s
        .send("POST", "/zones", json!({"name": "nest.example"}))
        .await;
    assert_eq!(
        (st, codes(&body)),
        (400, vec![1002]),
        "a zone above one: {body}"
    );
    // Allowed explicitly by the operator.
    admin::create_zone(s.store(), "nest.example", None, true, 0)
        .await
        .unwrap();
    // Hosts of orders too: no certificate for an invalid IDNA label.
    let zone = s.zone("hosts.example").await;
    let (st, body) = s
        .order(&zone, &["hosts.example", "xn--zz.hosts.example"], "txt")
        .await;
    assert_eq!((st, codes(&body)), (400, vec![1002]), "{body}");
    let (st, _) = s
        .order(
            &zone,
            &["hosts.example", "xn--bcher-kva.hosts.example"],
            "txt",
        )
        .await;
    assert_eq!(st, 200, "a valid IDNA label");
}
