//! instant-acme's HTTP goes through the workspace's reqwest (rustls on aws-lc-rs), so the
//! ACME client adds no second TLS stack; an operator's extra root (Pebble, a private ACME
//! CA) is added to the platform's roots.
//!
//! Problem answers that carry `Retry-After` get it appended to their `detail` (see
//! [`super::problem::RETRY_AFTER_MARK`]): instant-acme's problem type has no field for it,
//! and a rate-limited order must wait as long as the CA asks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use tokio::sync::Semaphore;

use super::problem::RETRY_AFTER_MARK;

/// Most requests one issuer has in flight to its ACME directory at once. Orders are
/// placed and finished by as many lifecycle tasks as there are packs in hand (up to
/// thousands); unbounded, each opened its own connection and sent at once: with 1,000
/// packs in `bench/acme.sh` all 1,000 first requests failed (connection timeouts) and
/// every pack waited out the 5-minute retry. A CA is no faster for more (Let's Encrypt
/// limits requests per second and orders per account). The polls' sleeps hold no slot,
/// so hundreds of orders still progress side by side.
pub(crate) const REQUESTS_IN_FLIGHT: usize = 16;

/// How long one request to a CA may take, connecting included, by default.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long connecting to a CA may take, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP client of one ACME directory.
#[derive(Debug, Clone)]
pub(crate) struct ReqwestHttp {
    client: reqwest::Client,
    /// [`REQUESTS_IN_FLIGHT`] permits, shared by every clone (one per issuer).
    in_flight: Arc<Semaphore>,
    /// When a request last found the CA silent or unreachable (it timed out, or could
    /// not connect), and how: the answer of every request that was waiting for a slot
    /// meanwhile. A CA that does not answer would otherwise hold each pack waiting for a
    /// slot for a whole timeout of its own, 16 at a time, while they fill the worker's
    /// hand, and no other CA's pack is claimed until they are through (test
    /// `a_ca_that_does_not_answer_does_not_hold_up_another_cas_packs`: another CA's two
    /// packs 10.3 s behind 250 packs of a silent CA, 1 s timeouts, against 1.5 s now).
    unreachable: Arc<std::sync::Mutex<Option<(Instant, String)>>>,
}

impl ReqwestHttp {
    /// A client trusting the platform's roots, plus `extra_root_pem` when given; a
    /// request may take `timeout` (connecting: at most 10 s of it).
    pub(crate) fn new(extra_root_pem: Option<&[u8]>, timeout: Duration) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .user_agent(concat!("zonecert/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = extra_root_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("the extra root is not PEM certificates: {e}"))?;
            if certs.is_empty() {
                return Err("the extra root file holds no certificate".to_owned());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the ACME HTTP client: {e}"))?;
        Ok(ReqwestHttp {
            client,
            in_flight: Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT)),
            unreachable: Arc::new(std::sync::Mutex::new(None)),
        })
    }
}

/// What a request that waited for a slot since `queued` answers instead of asking: the
/// CA found silent or unreachable since, if it was.
fn unreachable_since(
    unreachable: &std::sync::Mutex<Option<(Instant, String)>>,
    queued: Instant,
) -> Option<String> {
    let last = unreachable.lock().unwrap_or_else(|e| e.into_inner());
    match &*last {
        Some((at, why)) if *at >= queued => Some(why.clone()),
        _ => None,
    }
}

/// The failure of a request that was not sent: the CA was found silent or unreachable
/// while it waited.
#[derive(Debug)]
struct NotSent(String);

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not sent: another request to this CA, sent while this one waited, failed: {}",
            self.0
        )
    }
}

impl std::error::Error for NotSent {}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl HttpClient for ReqwestHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.client.clone();
        let in_flight = Arc::clone(&self.in_flight);
        let unreachable = Arc::clone(&self.unreachable);
        Box::pin(async move {
            let queued = Instant::now();
            // Held until the answer's body is read. The semaphore is never closed.
            let _slot = in_flight.acquire_owned().await.ok();
            if let Some(why) = unreachable_since(&unreachable, queued) {
                return Err(instant_acme::Error::Other(Box::new(NotSent(why))));
            }
            let (parts, body) = req.into_parts();
            // The body is one in-memory buffer: collecting it cannot fail (Infallible).
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let req = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let rsp = match client.execute(req).await {
                Ok(rsp) => rsp,
                Err(e) => {
                    // Silent (a timeout) or unreachable (no connection): so it is for the
                    // requests waiting now. A reset or a broken answer is this request's.
                    if e.is_timeout() || e.is_connect() {
                        let mut why = e.to_string();
                        let mut source = std::error::Error::source(&e);
                        while let Some(s) = source {
                            why.push_str(": ");
                            why.push_str(&s.to_string());
                            source = s.source();
                        }
                        *unreachable.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((Instant::now(), why));
                    }
                    return Err(instant_acme::Error::Other(Box::new(e) as BoxError));
                }
            };
            let status = rsp.status();
            let retry_after = rsp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let rsp: http::Response<reqwest::Body> = rsp.into();
            let (parts, body) = rsp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?
                .to_bytes();
            let body = match retry_after {
                Some(at) if status.is_client_error() || status.is_server_error() => {
                    mark_retry_after(body, at)
                }
                _ => body,
            };
            Ok(BytesResponse::from(http::Response::from_parts(
                parts,
                http_body_util::Full::new(body),
            )))
        })
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(secs) => Some(SystemTime::now() + Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

/// The problem document with the retry time appended to its `detail`; any other body as is.
fn mark_retry_after(body: Bytes, at: SystemTime) -> Bytes {
    let Ok(serde_json::Value::Object(mut problem)) = serde_json::from_slice(&body) else {
        return body;
    };
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let detail = problem
        .get("detail")
        .and_then(|d| d.as_str())
        .unwrap_or("")
        .to_owned();
    problem.insert(
        "detail".to_owned(),
        serde_json::Value::String(format!("{detail}{RETRY_AFTER_MARK}{secs}]")),
    );
    serde_json::to_vec(&problem).map_or(body, Bytes::from)
}
