//! The connection layer under the router: accepting, limits, timeouts, shutdown.
//!
//! What it guards against (each a way one client could hold the server):
//! - a cap on open connections, overall and per client address (an IPv6 client by its
//!   /64), so idle sockets of one client cannot use up the process's descriptors and
//!   starve the others; a connection over a cap is answered in the envelope (503, or
//!   429 for a client over its share) and closed at once;
//! - a keep-alive idle timeout (no byte of a next request) and a header-read timeout
//!   (from a request's first byte to its last header: slowloris); the body-read timeout
//!   is the front-door middleware's (`read_body`), and a response the client does not take is given
//!   up after the same time;
//! - request heads are checked here before hyper parses them (`check_head`), with
//!   hyper's parser (httparse) and hyper's header count, so a malformed head, a URI too
//!   long or too many headers get Cloudflare's envelope (400, 414, 431) where hyper
//!   would answer with an empty body;
//! - shutdown: connections are asked to finish their request in flight and close, and
//!   whatever is still open after the grace period is dropped, so SIGTERM ends in
//!   bounded time whatever clients do.
//!
//! Every byte hyper reads passes through here, so this layer knows where each request
//! ends: after its head, the body its `Content-Length` gives or its chunked framing
//! (followed with httparse's chunk-size parser) up to the last chunk's trailers. What
//! follows is the next head, checked before hyper sees it, whether it came in one
//! packet with the request before it or arrived while that request was in flight (it is
//! then held until that request is answered, so a refusal follows its answer).

use super::error::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::{Buf, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

mod framing;
mod guarded;

use guarded::Guarded;

/// Longest request URI (request target) accepted.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Longest request head (request line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one request (hyper's own default limit, kept so that a head
/// this layer accepts is one hyper accepts).
pub const MAX_HEADERS: usize = 100;

/// The limits a server's connections are held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for a request head, from its first byte to its end.
    pub header_read: Duration,
    /// Longest wait for a request body, and for a client to take a response.
    pub body_read: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one client address.
    pub max_per_client: usize,
    /// How long shutdown waits for connections before dropping them.
    pub shutdown_grace: Duration,
    /// Whether each request carries its client's address (`ConnectInfo`), which only
    /// the rate limits read: inserting it is an allocation per request.
    pub client_address: bool,
}

/// Descriptors kept free for everything but connections (the database's files, DNS
/// and HTTP checks, deployment, logs), at least this many or a quarter of the limit.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Default most connections at once when the descriptor limit allows more.
const DEFAULT_MAX_CONNECTIONS: u64 = 4096;

/// Raises the process's soft limit on open descriptors to its hard limit (the most it
/// may without privilege) and returns the soft limit in force afterwards.
pub fn raise_descriptor_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "the open-descriptor limit could not be read or raised");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// The connection cap that leaves room under `descriptor_limit` for the rest of the
/// server, or [`DEFAULT_MAX_CONNECTIONS`] when the limit is that high.
pub fn default_max_connections(descriptor_limit: Option<u64>) -> usize {
    let cap = match descriptor_limit {
        Some(limit) => {
            let reserve = RESERVED_DESCRIPTORS.max(limit / 4);
            limit
                .saturating_sub(reserve)
                .clamp(1, DEFAULT_MAX_CONNECTIONS)
        }
        None => DEFAULT_MAX_CONNECTIONS,
    };
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// A client's share of `max_connections`: a quarter, so one client's sockets leave room
/// for at least three others.
pub fn default_max_per_client(max_connections: usize) -> usize {
    (max_connections / 4).max(1)
}

/// What a connection hands each of its requests to, for its response: the API's front
/// door (`http::Api`), or a bare router (the metrics listener's).
pub trait Answer: Clone + Send + Sync + 'static {
    /// The response to `req`.
    fn answer(
        &self,
        req: axum::extract::Request,
    ) -> impl Future<Output = axum::response::Response> + Send + 'static + use<Self>;
}

impl Answer for Router {
    fn answer(
        &self,
        req: axum::extract::Request,
    ) -> impl Future<Output = axum::response::Response> + Send + 'static + use<> {
        answer(self.clone().call(req))
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets connections finish
/// their requests for up to [`Limits::shutdown_grace`] and drops the rest.
pub async fn serve(
    listener: TcpListener,
    router: impl Answer,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut connections = JoinSet::new();
    let counts = Arc::new(Counts::default());
    let closing = CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // No header-read timer of hyper's own: `Guarded` times the idle wait and the head's
    // reading, and hands hyper only whole heads. hyper's timer, kept as a backstop until
    // issue 15's measurements, armed a new timer for every request (a boxed Sleep,
    // registered and dropped). hyper's default of 30 s applies only with a timer: none
    // is given, and the timeout is turned off by name as well.
    // hyper's header limit is left at its default, 100 (MAX_HEADERS, which `check_head`
    // enforces before hyper parses): setting it, even to 100, makes hyper build its
    // header arrays element by element for every request (1,000 instructions of a
    // GET verification, callgrind) instead of using uninitialised ones on the stack.
    http.header_read_timeout(None);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors or memory: wait for connections to end
                        // rather than spin on the error.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = counts.take(peer.ip(), &limits) else {
                    refuse(tcp, counts.over_client_share(peer.ip(), &limits));
                    continue;
                };
                // Answers go out whole in one write; Nagle's algorithm would only hold
                // back the tail of a large one until the client acknowledges the head.
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY refused");
                }
                connections.spawn(connection(
                    tcp,
                    peer,
                    router.clone(),
                    Arc::clone(&http),
                    limits,
                    closing.clone(),
                    slot,
                ));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    closing.cancel();
    let grace = tokio::time::sleep(limits.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            joined = connections.join_next() => if joined.is_none() { break },
            () = &mut grace => {
                tracing::info!(
                    connections = connections.len(),
                    "shutdown: dropping the connections still open after the grace period"
                );
                connections.abort_all();
                while connections.join_next().await.is_some() {}
                break;
            }
        }
    }
    Ok(())
}

/// Answers a connection over a cap in the envelope and closes it. One non-blocking
/// write: a new socket's send buffer takes the few hundred bytes, and a client that
/// cannot take them gets a plain close.
fn refuse(tcp: TcpStream, per_client: bool) {
    let error = if per_client {
        ApiError::too_many_connections_from_client()
    } else {
        ApiError::too_many_connections()
    };
    let _ = tcp.try_write(&error.http1_bytes());
}

/// Open connections, overall and per client.
#[derive(Debug, Default)]
struct Counts {
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place under the caps, given back when dropped.
#[derive(Debug)]
struct Slot {
    counts: Arc<Counts>,
    client: IpAddr,
}

/// The address a client is counted by: an IPv6 client holds a whole /64.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

impl Counts {
    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Counts only: a panic elsewhere cannot leave them half-written.
        self.per_client.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Option<Slot> {
        let client = client_key(ip);
        let mut clients = self.clients();
        let mine = clients.entry(client).or_insert(0);
        if *mine >= limits.max_per_client
            || self.total.load(Ordering::Relaxed) >= limits.max_connections
        {
            if *mine == 0 {
                clients.remove(&client);
            }
            return None;
        }
        *mine += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            counts: Arc::clone(self),
            client,
        })
    }

    fn over_client_share(&self, ip: IpAddr, limits: &Limits) -> bool {
        self.clients()
            .get(&client_key(ip))
            .is_some_and(|n| *n >= limits.max_per_client)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut clients = self.counts.clients();
        if let Some(n) = clients.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.client);
            }
        }
        self.counts.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the connection's IO and its requests share.
#[derive(Debug, Default)]
struct Shared {
    /// Requests whose response body has not been sent (or dropped) yet.
    in_flight: AtomicUsize,
    /// The read that waits for the request in flight to be answered (see
    /// `Guarded::poll_read`), woken when the last one is.
    reader: futures_util::task::AtomicWaker,
    /// Whether that read returned `Pending` to wait for the answer, and has not been
    /// polled since.
    reader_waiting: AtomicBool,
    /// Whether the connection's task is polling hyper's connection right now (see
    /// [`poll_connection`]).
    polling: AtomicBool,
}

impl Shared {
    /// Whether the read waits for an answer that has been sent meanwhile (it then
    /// waits no longer); clears the read's waiting mark.
    fn answered_while_waiting(&self) -> bool {
        self.reader_waiting.swap(false, Ordering::SeqCst)
            && self.in_flight.load(Ordering::SeqCst) == 0
    }
}

/// Polls hyper's connection `conn`, and again at once while an answer that ended during
/// the poll leaves hyper's read waiting for it. That read would otherwise be woken from
/// inside this very poll (see `InFlight`): tokio then reschedules the task as a yield and
/// wakes a sibling worker to take it, a futex wake and wait per request (1.6 futex
/// calls per GET in `strace -c`, against 0.2 before the connection layer), for a task
/// that polls its read again anyway.
fn poll_connection<F: Future>(
    shared: &Shared,
    mut conn: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    loop {
        shared.polling.store(true, Ordering::SeqCst);
        let polled = conn.as_mut().poll(cx);
        // Before the check below: an answer ending on another thread from here on
        // wakes the read itself.
        shared.polling.store(false, Ordering::SeqCst);
        if polled.is_ready() || !shared.answered_while_waiting() {
            return polled;
        }
    }
}

/// Serves one connection until it closes, is refused, times out, or shutdown drops it.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: impl Answer,
    http: Arc<hyper::server::conn::http1::Builder>,
    limits: Limits,
    closing: CancellationToken,
    _slot: Slot,
) {
    let shared = Arc::new(Shared::default());
    let io = Guarded::new(tcp, Arc::clone(&shared), limits);
    let requests = Arc::clone(&shared);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        requests.in_flight.fetch_add(1, Ordering::AcqRel);
        let done = InFlight(Arc::clone(&requests));
        if limits.client_address {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        // A request without a body gets axum's empty body, which needs no allocation:
        // wrapping hyper's (empty) body is one, and its free, per request.
        let answer = router.answer(req.map(|body| {
            if body.is_end_stream() {
                Body::empty()
            } else {
                Body::new(body)
            }
        }));
        async move {
            let response = answer.await;
            // hyper takes any body type: the mapped body is handed over as it is, not
            // boxed again into a `Body` (an allocation and its free per request, and a
            // dynamic call per frame).
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                body.map_frame(move |frame| {
                    // Moved here so the request counts as in flight until its
                    // response body is sent or dropped.
                    let _ = &done;
                    frame
                })
            }))
        }
    });
    let conn = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let closed = closing.cancelled();
    tokio::pin!(closed);
    let mut closing_now = false;
    let outcome = std::future::poll_fn(|cx| {
        if !closing_now && closed.as_mut().poll(cx).is_ready() {
            // Finish the request in flight (if any) and close; shutdown drops what is
            // still open after its grace period.
            conn.as_mut().graceful_shutdown();
            closing_now = true;
        }
        poll_connection(&shared, conn.as_mut(), cx)
    })
    .await;
    if let Err(e) = outcome {
        tracing::debug!(error = %e, %peer, "connection ended");
    }
}

/// Counts a request as in flight while it lives.
#[derive(Debug)]
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // During the connection's own poll, `poll_connection` sees the read waiting and
        // polls again; a wake from here would reschedule the task from inside its poll.
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && !self.0.polling.load(Ordering::SeqCst)
        {
            self.0.reader.wake();
        }
    }
}

/// Reads a request's whole body before its handler sees it, within the body-read
/// timeout: a client that sends its body slowly (or never) is answered 408 and the
/// connection closed, instead of holding it for as long as it likes. A body over
/// `max_bytes` is passed on as read so far (the handler answers 413 after checking the
/// credentials, as before) and the connection is closed, its rest unread. For a request
/// whose body is not known to be empty (the front door calls the route at once for the
/// others).
pub(super) async fn read_body<S>(
    limits: BodyLimits,
    req: axum::extract::Request,
    mut service: S,
) -> axum::response::Response
where
    S: Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        >,
{
    use axum::response::IntoResponse;
    let (parts, mut body) = req.into_parts();
    let mut read = BytesMut::new();
    let deadline = Instant::now() + limits.timeout;
    let mut over = false;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return close(ApiError::request_timeout(limits.timeout).into_response()),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "reading a request body failed");
                return close(
                    ApiError::malformed_body("the body could not be read").into_response(),
                );
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            read.extend_from_slice(&data);
            if read.len() > limits.max_bytes {
                over = true;
                break;
            }
        }
    }
    drop(body);
    let req = axum::extract::Request::from_parts(parts, Body::from(read.freeze()));
    let response = answer(service.call(req)).await;
    if over { close(response) } else { response }
}

/// The response of a call that cannot fail.
pub(super) async fn answer(
    call: impl Future<Output = Result<axum::response::Response, std::convert::Infallible>>,
) -> axum::response::Response {
    match call.await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// What [`read_body`] needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimits {
    pub(super) timeout: Duration,
    pub(super) max_bytes: usize,
}

/// Marks a response as the connection's last.
fn close(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test
mod tests;
