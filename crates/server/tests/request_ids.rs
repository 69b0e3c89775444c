//! Request ids, as a client and an operator see them: every answer carries one, a
//! client's own sane `x-request-id` is kept (and logged with the outcome), any other is
//! replaced by a minted one. (What a change of the middleware must keep.)
#![allow(clippy::unwrap_used)]

use zonecert_testkit::TestServer;

/// Whether `id` could be a minted id: non-empty, at most 64 visible ASCII characters.
fn sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic())
}

async fn id_of(s: &TestServer, sent: Option<&str>) -> String {
    let mut req = s.request("GET", "/zones", Some(s.token()));
    if let Some(id) = sent {
        req = req.header("x-request-id", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()
        .get("x-request-id")
        .expect("every answer carries a request id")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_sane_one_of_the_client_is_kept() {
    let s = TestServer::start().await;
    let first = id_of(&s, None).await;
    let second = id_of(&s, None).await;
    assert!(sane(&first) && sane(&second), "{first} {second}");
    assert_ne!(first, second, "each request gets its own");

    let own = "trace-4f1c2a/retry:2";
    assert_eq!(id_of(&s, Some(own)).await, own);
    let longest = "x".repeat(64);
    assert_eq!(id_of(&s, Some(&longest)).await, longest);
}

#[tokio::test]
async fn an_unusable_client_id_is_replaced() {
    let s = TestServer::start().await;
    for bad in ["", "two words", &"x".repeat(65), "tab\there"] {
        let got = id_of(&s, Some(bad)).await;
        assert_ne!(got, bad);
        assert!(sane(&got), "{bad:?} -> {got:?}");
    }
}
