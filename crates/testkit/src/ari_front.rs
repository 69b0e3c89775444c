//! A scripted ACME Renewal Information front for Pebble: Debian's Pebble 2.4 offers no
//! `renewalInfo` (RFC 9773), so the ARI tests put this in front of it. It is an HTTPS
//! reverse proxy on 127.0.0.1 with Pebble's own TLS certificate that passes every
//! request to Pebble as it came, `Host` included (Pebble then writes its URLs, and checks
//! each JWS `url`, as the front's, so the whole ACME conversation goes through it), adds
//! `renewalInfo` to the directory, answers `GET /renewal-info/{id}` with the window the
//! test sets, and keeps the payload of every `newOrder` (a renewal's `replaces`), which
//! it reflects in the order's answers as RFC 9773 requires of a CA (Pebble ignores it).
//! It can also refuse revocations (`serverInternal`, 503) for as long as a test says, a
//! CA that is down for them, while Pebble keeps its state. It counts the requests it is
//! answering at once, and can hold each for a while (a slower CA).
//!
//! Faults Pebble 2.4 cannot make, on demand, in front of the real CA: the first N
//! requests to one ACME resource answered with an RFC 8555 `rateLimited` problem and a
//! `Retry-After` ([`AriFront::rate_limit`]; Pebble never rate-limits), an account's
//! requests answered as a revoked account's are by Let's Encrypt
//! ([`AriFront::revoke_account`]; Pebble cannot revoke an account), and ACME profiles
//! (draft-ietf-acme-profiles) offered in the directory's `meta.profiles`
//! ([`AriFront::offer_profiles`]; Pebble 2.4 has none, and ignores an order's
//! `profile`, which [`AriFront::new_orders`] shows).
//!
//! And a way around a deadlock of Pebble 2.4 ([`AriFront::keep_orders_apart`]): its
//! newOrder holds the store's lock shared while it takes each authorization's lock,
//! and its authorization handler holds an authorization's lock while it takes the
//! store's; with a third request queued for the store's lock, all three wait for good.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::pebble::Pebble;

/// What `GET /renewal-info/{id}` answers: the suggested window (RFC 3339 times) and the
/// `Retry-After` seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalWindow {
    /// The window's start.
    pub start: String,
    /// The window's end.
    pub end: String,
    /// When to ask again, in seconds.
    pub retry_after_secs: u64,
}

/// A running front; stopped when dropped.
#[derive(Debug)]
pub struct AriFront {
    /// `https://127.0.0.1:PORT/dir`: the directory an ACME client is given (trusting
    /// Pebble's [`Pebble::tls_root`]).
    pub directory: String,
    state: Arc<FrontState>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct FrontState {
    /// `https://127.0.0.1:PORT` of Pebble's ACME listener.
    upstream: String,
    /// `https://127.0.0.1:PORT` of the front.
    base: String,
    client: reqwest::Client,
    window: Mutex<Option<RenewalWindow>>,
    asked: Mutex<Vec<String>>,
    new_orders: Mutex<Vec<serde_json::Value>>,
    /// The `replaces` of each order that named one, by the order's path.
    replacing: Mutex<Vec<(String, serde_json::Value)>>,
    /// Whether `revokeCert` requests are refused, and how many were.
    refuse_revocations: Mutex<(bool, usize)>,
    /// How long each request is held before it is passed on (a slower CA).
    delay: Mutex<std::time::Duration>,
    /// Requests being answered now, and the most there were at once.
    in_flight: Mutex<(usize, usize)>,
    /// The rate limit set by [`AriFront::rate_limit`].
    rate_limit: Mutex<RateLimit>,
    /// The paths of the POSTs passed on to Pebble, in order ([`AriFront::posted`]).
    posted: Mutex<Vec<String>>,
    /// The accounts (URLs, the JWS `kid`) answered as revoked, and how many requests
    /// were ([`AriFront::revoke_account`]).
    revoked: Mutex<(Vec<String>, usize)>,
    /// `meta.profiles` added to the directory, if any.
    profiles: Mutex<Option<serde_json::Value>>,
    /// Whether newOrder and authorization requests are kept apart ([`AriFront::keep_orders_apart`]).
    apart: std::sync::atomic::AtomicBool,
    /// Held exclusively by a newOrder, shared by authorization requests, when `apart`.
    gate: tokio::sync::RwLock<()>,
}

/// Which requests are refused as rate-limited, and how many were.
#[derive(Debug, Default)]
struct RateLimit {
    /// The resource's path, or the start of it (`/order-plz`: Pebble's `newOrder`;
    /// `/finalize-order/`: every order's finalize).
    path: String,
    /// How many more requests to it are refused.
    remaining: usize,
    /// The `Retry-After` they carry, in seconds.
    retry_after_secs: u64,
    /// When each refused request came.
    refused: Vec<std::time::SystemTime>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AriFront {
    /// Starts a front for `pebble`, answering 404 for renewal information until
    /// [`AriFront::set_window`]. Panics (it is for tests) when it cannot.
    pub async fn start(pebble: &Pebble) -> AriFront {
        let (cert_path, key_path) = pebble.tls_files();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
            .and_then(|certs| certs.collect())
            .expect("Pebble's TLS certificate");
        let key = PrivateKeyDer::from_pem_file(&key_path).expect("Pebble's TLS key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .expect("TLS configuration");
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("a loopback port");
        let addr = tcp.local_addr().expect("its address");
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(pebble.tls_root_pem.as_bytes())
                    .expect("Pebble's TLS root"),
            )
            .build()
            .expect("an HTTP client");
        let base = format!("https://{addr}");
        let state = Arc::new(FrontState {
            upstream: format!("https://127.0.0.1:{}", pebble.ports.0),
            base: base.clone(),
            client,
            window: Mutex::new(None),
            asked: Mutex::new(Vec::new()),
            new_orders: Mutex::new(Vec::new()),
            replacing: Mutex::new(Vec::new()),
            refuse_revocations: Mutex::new((false, 0)),
            delay: Mutex::new(std::time::Duration::ZERO),
            in_flight: Mutex::new((0, 0)),
            rate_limit: Mutex::new(RateLimit::default()),
            posted: Mutex::new(Vec::new()),
            revoked: Mutex::new((Vec::new(), 0)),
            profiles: Mutex::new(None),
            apart: std::sync::atomic::AtomicBool::new(false),
            gate: tokio::sync::RwLock::new(()),
        });
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let stop = CancellationToken::new();
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        };
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
        });
        AriFront {
            directory: format!("{base}/dir"),
            state,
            stop,
        }
    }

    /// Sets (or, with `None`, removes: 404) the window every certificate's renewal
    /// information answers.
    pub fn set_window(&self, window: Option<RenewalWindow>) {
        *lock(&self.state.window) = window;
    }

    /// The certificate identifiers (`<AKI>.<serial>`, RFC 9773) asked for so far.
    pub fn asked(&self) -> Vec<String> {
        lock(&self.state.asked).clone()
    }

    /// Refuses (`true`) or passes on (`false`) the `revokeCert` requests from now on:
    /// refused ones get a `serverInternal` problem (503) and Pebble never sees them.
    pub fn refuse_revocations(&self, refuse: bool) {
        lock(&self.state.refuse_revocations).0 = refuse;
    }

    /// How many `revokeCert` requests were refused so far.
    pub fn refused_revocations(&self) -> usize {
        lock(&self.state.refuse_revocations).1
    }

    /// Holds every request for `delay` before passing it on (a slower CA), from now on.
    pub fn delay_requests(&self, delay: std::time::Duration) {
        *lock(&self.state.delay) = delay;
    }

    /// The most requests the front was answering at once so far.
    pub fn most_in_flight(&self) -> usize {
        lock(&self.state.in_flight).1
    }

    /// The payloads of the `newOrder` requests Pebble was given so far, decoded from
    /// their JWS (rate-limited ones are not among them).
    pub fn new_orders(&self) -> Vec<serde_json::Value> {
        lock(&self.state.new_orders).clone()
    }

    /// Answers the next `count` POSTs to a path starting with `path` (`/order-plz` is
    /// Pebble's `newOrder`, `/finalize-order/` any order's finalize) with a
    /// `urn:ietf:params:acme:error:rateLimited` problem (429) and `Retry-After:
    /// retry_after_secs`; Pebble never sees them.
    pub fn rate_limit(&self, path: &str, count: usize, retry_after_secs: u64) {
        let mut limit = lock(&self.state.rate_limit);
        limit.path = path.to_owned();
        limit.remaining = count;
        limit.retry_after_secs = retry_after_secs;
    }

    /// When each request refused as rate-limited came, so far.
    pub fn rate_limited(&self) -> Vec<std::time::SystemTime> {
        lock(&self.state.rate_limit).refused.clone()
    }

    /// From now on, answers every request signed as the account `url` (its JWS `kid`) as
    /// Let's Encrypt answers a revoked account's (Boulder's `wfe2`: any request whose
    /// account is not `valid`): 403, `urn:ietf:params:acme:error:unauthorized`, `Unable
    /// to validate JWS :: Account is not valid, has status "revoked"`. Pebble 2.4 cannot
    /// revoke an account (only its holder can deactivate it), and never sees them.
    pub fn revoke_account(&self, url: &str) {
        lock(&self.state.revoked).0.push(url.to_owned());
    }

    /// How many requests were answered as a revoked account's so far.
    pub fn revoked_account_requests(&self) -> usize {
        lock(&self.state.revoked).1
    }

    /// The paths of the POSTs passed on to Pebble so far that start with `prefix`
    /// (`/finalize-order/`: the finalizes Pebble was sent), in order.
    pub fn posted(&self, prefix: &str) -> Vec<String> {
        lock(&self.state.posted)
            .iter()
            .filter(|p| p.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Offers these ACME profiles (name, description) in the directory's
    /// `meta.profiles`, from now on.
    pub fn offer_profiles(&self, profiles: &[(&str, &str)]) {
        let map: serde_json::Map<String, serde_json::Value> = profiles
            .iter()
            .map(|(name, about)| ((*name).to_owned(), serde_json::Value::from(*about)))
            .collect();
        *lock(&self.state.profiles) = Some(serde_json::Value::Object(map));
    }
}

impl AriFront {
    /// From now on (`true`), passes a newOrder to Pebble only while no authorization
    /// request (`POST /authZ/...`) is with it, and the other way round; newOrders one at
    /// a time, authorization requests side by side. Pebble 2.4 deadlocks for good when an
    /// authorization request and a newOrder meet while a third request waits for its
    /// store (the benchmark's bursts of orders met it in most runs): a lock-order cycle
    /// between `MemoryStore.FindValidAuthorization` (store, then each authorization) and
    /// the authorization handler (the authorization, then the store for the account).
    /// Not a behaviour of a real CA: a stand-in's defect kept out of a measurement.
    pub fn keep_orders_apart(&self, apart: bool) {
        self.state
            .apart
            .store(apart, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for AriFront {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Every request, counted while it is answered ([`AriFront::most_in_flight`]).
async fn forward(State(st): State<Arc<FrontState>>, req: Request) -> Response {
    /// Counts the request out however its answer ends (a client gone drops it).
    struct Counted<'a>(&'a Mutex<(usize, usize)>);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            lock(self.0).0 -= 1;
        }
    }
    {
        let mut counts = lock(&st.in_flight);
        counts.0 += 1;
        counts.1 = counts.1.max(counts.0);
    }
    let _counted = Counted(&st.in_flight);
    let (mut exclusive, mut shared) = (None, None);
    if st.apart.load(std::sync::atomic::Ordering::Relaxed) && req.method() == Method::POST {
        let path = req.uri().path();
        if path == "/order-plz" {
            exclusive = Some(st.gate.write().await);
        } else if path.starts_with("/authZ/") {
            shared = Some(st.gate.read().await);
        }
    }
    let _held = (exclusive, shared);
    let delay = *lock(&st.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    answer(&st, req).await
}

/// The front's own answers, else Pebble's.
async fn answer(st: &FrontState, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    if parts.method == Method::GET
        && let Some(id) = path.strip_prefix("/renewal-info/")
    {
        lock(&st.asked).push(id.to_owned());
        let window = lock(&st.window).clone();
        return match window {
            Some(w) => (
                [
                    (header::CONTENT_TYPE, "application/json".to_owned()),
                    (header::RETRY_AFTER, w.retry_after_secs.to_string()),
                ],
                serde_json::json!({"suggestedWindow": {"start": w.start, "end": w.end}})
                    .to_string(),
            )
                .into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    if parts.method == Method::POST && path == "/revoke-cert" {
        let mut refusing = lock(&st.refuse_revocations);
        if refusing.0 {
            refusing.1 += 1;
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "serverInternal",
                "the test front refuses revocations",
            );
        }
    }
    if parts.method == Method::POST
        && let Some(kid) = jws_kid(&body)
    {
        let mut revoked = lock(&st.revoked);
        if revoked.0.contains(&kid) {
            revoked.1 += 1;
            return problem(
                StatusCode::FORBIDDEN,
                "unauthorized",
                "Unable to validate JWS :: Account is not valid, has status \"revoked\"",
            );
        }
    }
    if parts.method == Method::POST {
        let mut limit = lock(&st.rate_limit);
        if limit.remaining > 0 && path.starts_with(&limit.path) {
            limit.remaining -= 1;
            limit.refused.push(std::time::SystemTime::now());
            // What each limit is, in the way Let's Encrypt words them.
            let detail = if path == "/order-plz" {
                "too many new orders recently (the test front's limit)"
            } else {
                "too many certificates (5) already issued for this exact set of identifiers \
                 in the last 168h0m0s (the test front's limit)"
            };
            let mut refused = problem(StatusCode::TOO_MANY_REQUESTS, "rateLimited", detail);
            refused.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(limit.retry_after_secs),
            );
            return refused;
        }
    }
    let mut replaces = None;
    if parts.method == Method::POST
        && path == "/order-plz"
        && let Some(payload) = jws_payload(&body)
    {
        replaces = payload.get("replaces").cloned();
        lock(&st.new_orders).push(payload);
    }
    if replaces.is_none() {
        replaces = lock(&st.replacing)
            .iter()
            .find(|(order, _)| *order == path)
            .map(|(_, r)| r.clone());
    }
    if parts.method == Method::POST {
        lock(&st.posted).push(path.clone());
    }
    let mut upstream = st
        .client
        .request(parts.method.clone(), format!("{}{path}", st.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        // `Host` stays the front's: Pebble's URLs then name the front.
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let mut bytes = answer.bytes().await.unwrap_or_default();
    if parts.method == Method::GET && path == "/dir" {
        bytes = with_renewal_info(&bytes, &st.base);
        if let Some(profiles) = lock(&st.profiles).clone() {
            bytes = with_meta_profiles(&bytes, profiles);
        }
    }
    if let Some(replaces) = replaces {
        bytes = with_field(&bytes, "replaces", replaces.clone());
        if let Some(location) = headers
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.strip_prefix(&st.base))
        {
            lock(&st.replacing).push((location.to_owned(), replaces));
        }
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

/// The directory with `renewalInfo` added.
fn with_renewal_info(directory: &Bytes, base: &str) -> Bytes {
    with_field(
        directory,
        "renewalInfo",
        serde_json::Value::String(format!("{base}/renewal-info")),
    )
}

/// The directory with `meta.profiles` set (its other `meta` fields kept).
fn with_meta_profiles(directory: &Bytes, profiles: serde_json::Value) -> Bytes {
    let meta = match serde_json::from_slice::<serde_json::Value>(directory) {
        Ok(serde_json::Value::Object(map)) => match map.get("meta") {
            Some(serde_json::Value::Object(meta)) => {
                let mut meta = meta.clone();
                meta.insert("profiles".into(), profiles);
                serde_json::Value::Object(meta)
            }
            _ => serde_json::json!({ "profiles": profiles }),
        },
        _ => return directory.clone(),
    };
    with_field(directory, "meta", meta)
}

/// A JSON object's text with `key` set to `value` (anything else unchanged).
fn with_field(object: &Bytes, key: &str, value: serde_json::Value) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(object) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert(key.into(), value);
            Bytes::from(serde_json::Value::Object(map).to_string())
        }
        _ => object.clone(),
    }
}

/// The account URL (`kid`) a flattened JWS is signed as, if it names one (a new
/// account's request carries its `jwk` instead).
fn jws_kid(body: &[u8]) -> Option<String> {
    let jws: serde_json::Value = serde_json::from_slice(body).ok()?;
    let protected = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jws.get("protected")?.as_str()?)
        .ok()?;
    let protected: serde_json::Value = serde_json::from_slice(&protected).ok()?;
    Some(protected.get("kid")?.as_str()?.to_owned())
}

/// The payload of a flattened JWS, as JSON.
fn jws_payload(body: &[u8]) -> Option<serde_json::Value> {
    let jws: serde_json::Value = serde_json::from_slice(body).ok()?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jws.get("payload")?.as_str()?)
        .ok()?;
    serde_json::from_slice(&payload).ok()
}

/// TLS connections on a loopback listener, for `axum::serve`.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// An RFC 8555 problem document of type `urn:ietf:params:acme:error:{kind}`.
fn problem(status: StatusCode, kind: &str, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::json!({
            "type": format!("urn:ietf:params:acme:error:{kind}"),
            "detail": detail,
            "status": status.as_u16(),
        })
        .to_string(),
    )
        .into_response()
}
