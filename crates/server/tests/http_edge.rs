//! The HTTP edge under attack, against a real server on 127.0.0.1:0 (issue 11): token
//! scope on zone creation, rate-limit keys, `retry=true` amplification, malformed
//! requests answered in the envelope.

#![allow(clippy::unwrap_used)] // test harness: a failed setup should panic loudly

use serde_json::{Value, json};
use std::sync::Arc;
use zonecert_server::App;
use zonecert_server::admin::{self, dev};
use zonecert_server::clock::SystemClock;
use zonecert_server::config::Config;

struct Server {
    base: String,
    dev_token: String,
    app_store: zonecert_server::store::Store,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_with(tweak: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.rate_limit = None;
    tweak(&mut config);
    let app = App::open(config, Arc::new(SystemClock)).await.unwrap();
    let dev_token = app.seed_dev().await.unwrap();
    let store = app.store().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.serve(listener, async move {
        let _ = stopped.await;
    }));
    Server {
        base: format!("http://{addr}/client/v4"),
        dev_token,
        app_store: store,
        http: reqwest::Client::new(),
        _dir: dir,
        _stop: stop,
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        (status, body)
    }

    async fn token(&self, perms: &[&str], zones: &[&str]) -> String {
        let perms: Vec<String> = perms.iter().map(|s| s.to_string()).collect();
        let zones: Vec<String> = zones.iter().map(|s| s.to_string()).collect();
        admin::create_token(&self.app_store, "t", &perms, &zones, 0)
            .await
            .unwrap()
            .secret
    }
}

/// Every code of a failure envelope.
fn codes(body: &Value) -> Vec<u64> {
    assert_eq!(body["success"], false, "{body}");
    assert!(body["result"].is_null(), "{body}");
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_zone_scoped_token_cannot_create_zones() {
    let s = start_with(|_| {}).await;
    let scoped = s.token(&["Zone Write"], &[dev::ZONE_ID]).await;
    let (st, body) = s
        .call(
            "POST",
            "/zones",
            Some(&scoped),
            Some(json!({"name": "squatted.example"})),
        )
        .await;
    assert_eq!((st, codes(&body)), (403, vec![9109]), "{body}");
    let (_, body) = s
        .call(
            "GET",
            "/zones?name=squatted.example",
            Some(&s.dev_token),
            None,
        )
        .await;
    assert_eq!(body["result_info"]["total_count"], 0, "nothing was created");
    // An unscoped token with Zone Write still creates zones.
    let unscoped = s.token(&["Zone Write"], &[]).await;
    let (st, body) = s
        .call(
            "POST",
            "/zones",
            Some(&unscoped),
            Some(json!({"name": "owned.example"})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
}
