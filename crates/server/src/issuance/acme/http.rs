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
use std::time::{Duration, SystemTime};

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

/// The HTTP client of one ACME directory.
#[derive(Debug, Clone)]
pub(crate) struct ReqwestHttp {
    client: reqwest::Client,
    /// [`REQUESTS_IN_FLIGHT`] permits, shared by every clone (one per issuer).
    in_flight: Arc<Semaphore>,
}

impl ReqwestHttp {
    /// A client trusting the platform's roots, plus `extra_root_pem` when given.
    pub(crate) fn new(extra_root_pem: Option<&[u8]>) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
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
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl HttpClient for ReqwestHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.client.clone();
        let in_flight = Arc::clone(&self.in_flight);
        Box::pin(async move {
            // Held until the answer's body is read. The semaphore is never closed.
            let _slot = in_flight.acquire_owned().await.ok();
            let (parts, body) = req.into_parts();
            // The body is one in-memory buffer: collecting it cannot fail (Infallible).
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let req = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let rsp = client
                .execute(req)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e) as BoxError))?;
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
