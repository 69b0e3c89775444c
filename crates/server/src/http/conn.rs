//! The connection layer under the router: accepting, limits, timeouts, shutdown.
//!
//! What it guards against (each a way one client could hold the server):
//! - a cap on open connections, overall and per client address (an IPv6 client by its
//!   /64), so idle sockets of one client cannot use up the process's descriptors and
//!   starve the others; a connection over a cap is answered in the envelope (503, or
//!   429 for a client over its share) and closed at once;
//! - a keep-alive idle timeout (no byte of a next request) and a header-read timeout
//!   (from a request's first byte to its last header: slowloris); the body-read timeout
//!   is the router's (`read_body`), and a response the client does not take is given
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
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// Longest request URI (request target) accepted.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Longest request head (request line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one request (hyper's own limit, kept so that a head this layer
/// accepts is one hyper accepts).
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

/// Serves `router` on `listener` until `shutdown` resolves, then lets connections finish
/// their requests for up to [`Limits::shutdown_grace`] and drops the rest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut connections = JoinSet::new();
    let counts = Arc::new(Counts::default());
    let closing = CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's own header-read timer starts when it waits for a head, idle time included:
    // a backstop behind this layer's (which starts at a head's first byte).
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.idle + limits.header_read)
        .max_headers(MAX_HEADERS);
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
}

/// Serves one connection until it closes, is refused, times out, or shutdown drops it.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
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
        req.extensions_mut().insert(ConnectInfo(peer));
        let req = req.map(Body::new);
        let mut router = router.clone();
        async move {
            let response = router.call(req).await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    // Moved here so the request counts as in flight until its
                    // response body is sent or dropped.
                    let _ = &done;
                    frame
                }))
            }))
        }
    });
    let conn = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let outcome = tokio::select! {
        outcome = conn.as_mut() => outcome,
        () = closing.cancelled() => {
            // Finish the request in flight (if any) and close; shutdown drops what is
            // still open after its grace period.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(error = %e, %peer, "connection ended");
    }
}

/// Counts a request as in flight while it lives.
#[derive(Debug)]
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The verdict on the bytes of a request head received so far.
#[derive(Debug)]
enum Head {
    /// Not whole yet, nothing wrong so far.
    Partial,
    /// Whole and acceptable: `len` bytes, followed by a body of `body` bytes (`None`: a
    /// chunked body, whose end its framing tells).
    Complete { len: usize, body: Option<usize> },
    /// Refused with this error.
    Refused(ApiError),
}

/// Checks a request head as hyper would parse it, with this server's limits.
fn check_head(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => {
            if request.path.is_some_and(|p| p.len() > MAX_URI_BYTES) {
                Head::Refused(ApiError::uri_too_long(MAX_URI_BYTES))
            } else if len > MAX_HEAD_BYTES {
                Head::Refused(ApiError::headers_too_large(MAX_HEAD_BYTES, MAX_HEADERS))
            } else if let Some(e) = request
                .path
                .and_then(|p| p.parse::<axum::http::Uri>().err())
            {
                Head::Refused(ApiError::malformed_request(format!(
                    "the request target: {e}"
                )))
            } else {
                match body_length(request.headers) {
                    Ok(body) => Head::Complete { len, body },
                    Err(e) => Head::Refused(e),
                }
            }
        }
        Ok(httparse::Status::Partial) => {
            let line_ended = bytes.contains(&b'\n');
            if !line_ended && bytes.len() > MAX_URI_BYTES + 32 {
                // The request line alone is longer than any accepted URI.
                Head::Refused(ApiError::uri_too_long(MAX_URI_BYTES))
            } else if request.path.is_some_and(|p| p.len() > MAX_URI_BYTES) {
                Head::Refused(ApiError::uri_too_long(MAX_URI_BYTES))
            } else if bytes.len() > MAX_HEAD_BYTES {
                Head::Refused(ApiError::headers_too_large(MAX_HEAD_BYTES, MAX_HEADERS))
            } else {
                Head::Partial
            }
        }
        Err(httparse::Error::TooManyHeaders) => {
            Head::Refused(ApiError::headers_too_large(MAX_HEAD_BYTES, MAX_HEADERS))
        }
        Err(e) => Head::Refused(ApiError::malformed_request(e.to_string())),
    }
}

/// How long a refused connection's socket is kept after the refusal went out, reading
/// and dropping what the client still sends: closing a socket with unread bytes resets
/// the connection, and the client may lose the refusal with it.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Most bytes read and dropped after a refusal.
const REFUSAL_DRAIN_BYTES: usize = 1024 * 1024;

/// A refusal on its way out: sent, the sending side shut, the rest of the request
/// drained for a while.
struct Refusal {
    bytes: Vec<u8>,
    sent: usize,
    shut: bool,
    drained: usize,
    linger: Pin<Box<Sleep>>,
    done: bool,
}

/// What is left of the body of the request hyper is reading.
#[derive(Debug)]
enum BodyLeft {
    /// No body, or it was read whole: the next bytes start a head.
    None,
    /// This many bytes (`Content-Length`).
    Length(usize),
    /// A chunked body, where its framing stands.
    Chunked(Chunked),
    /// A chunked body whose framing is broken: every byte goes to hyper, which refuses
    /// it and closes the connection.
    Broken,
}

/// Where a chunked body's framing stands (RFC 9112, section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes left, then its CRLF.
    Data(u64),
    /// At the CRLF that ends a chunk's data: this many of its bytes left.
    DataEnd(u8),
    /// After the last chunk: at a trailer line or the empty line that ends the body.
    Trailers,
}

/// Longest chunk-size line or trailer line followed; a longer one is broken framing.
const MAX_CHUNK_LINE: usize = 4096;

impl Chunked {
    /// Follows the framing over `bytes`, the body's bytes received and not yet handed
    /// over: how many of them belong to the body for sure (a line is taken only whole),
    /// and whether the body ends there. An error for framing that is not HTTP's.
    fn advance(&mut self, bytes: &[u8]) -> Result<(usize, bool), ()> {
        let mut at = 0;
        loop {
            let rest = &bytes[at..];
            match *self {
                Chunked::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((line, 0))) => {
                        at += line;
                        *self = Chunked::Trailers;
                    }
                    Ok(httparse::Status::Complete((line, size))) => {
                        at += line;
                        *self = Chunked::Data(size);
                    }
                    Ok(httparse::Status::Partial) if rest.len() < MAX_CHUNK_LINE => {
                        return Ok((at, false));
                    }
                    Ok(httparse::Status::Partial) | Err(_) => return Err(()),
                },
                Chunked::Data(left) => {
                    if rest.is_empty() {
                        return Ok((at, false));
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    at += take;
                    let left = left.saturating_sub(u64::try_from(take).unwrap_or(u64::MAX));
                    *self = if left == 0 {
                        Chunked::DataEnd(2)
                    } else {
                        Chunked::Data(left)
                    };
                }
                Chunked::DataEnd(left) => {
                    let Some(&byte) = rest.first() else {
                        return Ok((at, false));
                    };
                    if byte != if left == 2 { b'\r' } else { b'\n' } {
                        return Err(());
                    }
                    at += 1;
                    *self = if left == 2 {
                        Chunked::DataEnd(1)
                    } else {
                        Chunked::Size
                    };
                }
                Chunked::Trailers => {
                    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                        return if rest.len() < MAX_CHUNK_LINE {
                            Ok((at, false))
                        } else {
                            Err(())
                        };
                    };
                    let line = &rest[..end];
                    at += end + 1;
                    if line.is_empty() || line == b"\r" {
                        return Ok((at, true));
                    }
                }
            }
        }
    }
}

/// The length of a request's body from its head: `Content-Length` (0 without one),
/// `None` when it is chunked. Content lengths that disagree or are not numbers are
/// refused, as hyper would.
fn body_length(headers: &[httparse::Header<'_>]) -> Result<Option<usize>, ApiError> {
    let mut length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Ok(None);
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| ApiError::malformed_request("an invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(ApiError::malformed_request(
                    "Content-Length headers that disagree",
                ));
            }
            length = Some(n);
        }
    }
    Ok(Some(length.unwrap_or(0)))
}

/// The socket as hyper sees it: heads checked while idle, bodies followed to their end,
/// the idle, header-read and send timeouts enforced, a refused head answered in the
/// envelope.
struct Guarded {
    inner: TcpStream,
    shared: Arc<Shared>,
    limits: Limits,
    /// Bytes received and not handed to hyper yet: a head being received, or the part
    /// of a body whose framing is not known yet, and whatever followed them.
    head: BytesMut,
    /// Checked bytes hyper has not taken yet.
    ready: BytesMut,
    /// What is left of the body of the request handed over last.
    body: BodyLeft,
    /// The client closed its sending side.
    eof: bool,
    /// Whether this read waits at an idle point (so `head` collects a new request).
    idle: bool,
    /// The idle or header-read deadline, while idle.
    read_deadline: Option<Pin<Box<Sleep>>>,
    /// When a send stalled (the client does not take the response).
    write_deadline: Option<Pin<Box<Sleep>>>,
    /// hyper's last send did not go out whole yet: a refusal waits behind it.
    write_blocked: bool,
    /// The refusal of a head, sent in place of hyper's answer.
    refusal: Option<Refusal>,
}

impl Guarded {
    fn new(inner: TcpStream, shared: Arc<Shared>, limits: Limits) -> Self {
        Guarded {
            inner,
            shared,
            limits,
            head: BytesMut::new(),
            ready: BytesMut::new(),
            body: BodyLeft::None,
            eof: false,
            idle: false,
            read_deadline: None,
            write_deadline: None,
            write_blocked: false,
            refusal: None,
        }
    }

    /// Whether a request is in flight: a head that follows it waits for its answer.
    fn in_flight(&self) -> bool {
        self.shared.in_flight.load(Ordering::Acquire) > 0
    }

    fn timed_out(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
    }

    /// Reads while idle: collects a head, checks it, hands it over whole with its body
    /// (when its length is known); what follows stays here, to be checked as the next
    /// head once this request is answered.
    fn poll_read_head(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.idle {
            self.idle = true;
            // A pipelined head already waiting has the header-read time, as any head
            // from its first byte.
            let wait = if self.head.is_empty() {
                self.limits.idle
            } else {
                self.limits.header_read
            };
            self.read_deadline = Some(Box::pin(tokio::time::sleep(wait)));
        }
        loop {
            if !self.head.is_empty() {
                match check_head(&self.head) {
                    Head::Partial => {}
                    Head::Complete { len, body } => {
                        self.idle = false;
                        self.read_deadline = None;
                        self.ready = self.head.split_to(len);
                        self.body = match body {
                            Some(0) => BodyLeft::None,
                            Some(n) => BodyLeft::Length(n),
                            None => BodyLeft::Chunked(Chunked::Size),
                        };
                        // As much of the body as came with the head goes with it.
                        self.frame_body();
                        self.hand_over(buf);
                        return Poll::Ready(Ok(()));
                    }
                    Head::Refused(error) => {
                        tracing::info!(status = error.status().as_u16(), "request head refused");
                        self.idle = false;
                        self.read_deadline = None;
                        self.head.clear();
                        self.refusal = Some(Refusal {
                            bytes: error.http1_bytes(),
                            sent: 0,
                            shut: false,
                            drained: 0,
                            linger: Box::pin(tokio::time::sleep(REFUSAL_LINGER)),
                            done: false,
                        });
                        return self.poll_refusal(cx);
                    }
                }
            }
            let mut chunk = [0u8; 8192];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.inner).poll_read(cx, &mut chunk_buf) {
                Poll::Pending => {
                    if let Some(deadline) = self.read_deadline.as_mut()
                        && deadline.as_mut().poll(cx).is_ready()
                    {
                        let what = if self.head.is_empty() {
                            "the idle connection"
                        } else {
                            "reading the request head"
                        };
                        return Poll::Ready(Err(Self::timed_out(what)));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let got = chunk_buf.filled();
            if got.is_empty() {
                // The client closed: hyper sees the end of the stream (after what came
                // of a head, which it reports as incomplete).
                self.idle = false;
                self.read_deadline = None;
                self.eof = true;
                self.ready = std::mem::take(&mut self.head);
                self.hand_over(buf);
                return Poll::Ready(Ok(()));
            }
            if self.head.is_empty() {
                // A head began: from now on it has the header-read time.
                self.read_deadline = Some(Box::pin(tokio::time::sleep(self.limits.header_read)));
            }
            self.head.extend_from_slice(got);
        }
    }

    /// Sends the refusal, shuts the sending side, drains the rest of the request for a
    /// while; then hyper sees the end of the stream with nothing read, and closes without
    /// an answer of its own.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(refusal) = self.refusal.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while !refusal.done {
            if refusal.linger.as_mut().poll(cx).is_ready() {
                refusal.done = true;
                break;
            }
            if refusal.sent < refusal.bytes.len() {
                if self.write_blocked {
                    // hyper's last answer is still going out: the refusal follows it.
                    return Poll::Pending;
                }
                match ready!(
                    Pin::new(&mut self.inner).poll_write(cx, &refusal.bytes[refusal.sent..])
                ) {
                    Ok(0) | Err(_) => refusal.done = true,
                    Ok(n) => refusal.sent += n,
                }
                continue;
            }
            if !refusal.shut {
                let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
                refusal.shut = true;
            }
            let mut scratch = [0u8; 8192];
            let mut scratch_buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut scratch_buf)) {
                Ok(()) if !scratch_buf.filled().is_empty() => {
                    refusal.drained += scratch_buf.filled().len();
                    refusal.done = refusal.drained > REFUSAL_DRAIN_BYTES;
                }
                _ => refusal.done = true,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads the rest of a body: hands hyper the bytes its framing says belong to it,
    /// keeps what follows it for the next head.
    fn poll_read_body(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            self.frame_body();
            if !self.ready.is_empty() {
                self.hand_over(buf);
                return Poll::Ready(Ok(()));
            }
            if matches!(self.body, BodyLeft::None) {
                // The body ended exactly where the bytes received did.
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut chunk_buf))?;
            let got = chunk_buf.filled();
            if got.is_empty() {
                self.eof = true;
                self.ready = std::mem::take(&mut self.head);
                self.hand_over(buf);
                return Poll::Ready(Ok(()));
            }
            self.head.extend_from_slice(got);
        }
    }

    /// Moves the bytes of the current body received so far from `head` to `ready`, up
    /// to its end; what follows its end stays in `head`.
    fn frame_body(&mut self) {
        let take = match &mut self.body {
            BodyLeft::None => 0,
            BodyLeft::Length(left) => {
                let take = (*left).min(self.head.len());
                *left -= take;
                if *left == 0 {
                    self.body = BodyLeft::None;
                }
                take
            }
            BodyLeft::Chunked(state) => match state.advance(&self.head) {
                Ok((take, ended)) => {
                    if ended {
                        self.body = BodyLeft::None;
                    }
                    take
                }
                Err(()) => {
                    // Framing hyper will refuse as well: let it see the bytes and answer
                    // (it closes the connection), and stop following this one.
                    self.body = BodyLeft::Broken;
                    self.head.len()
                }
            },
            BodyLeft::Broken => self.head.len(),
        };
        let taken = self.head.split_to(take);
        self.ready.unsplit(taken);
    }

    fn hand_over(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.ready.len().min(buf.remaining());
        buf.put_slice(&self.ready[..n]);
        self.ready.advance(n);
    }

    /// Polls a send with the send timeout: a client that takes nothing for that long is
    /// given up.
    fn poll_sending<T>(
        &mut self,
        cx: &mut Context<'_>,
        sent: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match sent {
            Poll::Ready(r) => {
                self.write_deadline = None;
                self.write_blocked = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.write_blocked = true;
                let limit = self.limits.body_read;
                let deadline = self
                    .write_deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Self::timed_out("sending the response")));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ready.is_empty() {
            this.hand_over(buf);
            return Poll::Ready(Ok(()));
        }
        if this.refusal.is_some() {
            return this.poll_refusal(cx);
        }
        if this.eof {
            // What the client sent before it closed, then the end of the stream.
            this.ready = std::mem::take(&mut this.head);
            this.hand_over(buf);
            return Poll::Ready(Ok(()));
        }
        if !matches!(this.body, BodyLeft::None) {
            return this.poll_read_body(cx, buf);
        }
        if this.idle || !this.in_flight() {
            return this.poll_read_head(cx, buf);
        }
        // The next head waits for the request in flight to be answered: hyper polls
        // again then, to read it (and a refusal then follows that answer).
        Poll::Pending
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let sent = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.poll_sending(cx, sent)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let sent = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.poll_sending(cx, sent)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        this.poll_sending(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Reads a request's whole body before the router sees it, within the body-read
/// timeout: a client that sends its body slowly (or never) is answered 408 and the
/// connection closed, instead of holding it for as long as it likes. A body over
/// `max_bytes` is passed on as read so far (the handler answers 413 after checking the
/// credentials, as before) and the connection is closed, its rest unread.
pub(super) async fn read_body(
    axum::extract::State(limits): axum::extract::State<BodyLimits>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
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
    let response = next.run(req).await;
    if over { close(response) } else { response }
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
mod tests {
    use super::*;

    fn status(head: &[u8]) -> Option<u16> {
        match check_head(head) {
            Head::Refused(e) => Some(e.status().as_u16()),
            Head::Partial | Head::Complete { .. } => None,
        }
    }

    #[test]
    fn heads_are_checked_as_hyper_would_with_our_limits() {
        assert!(matches!(
            check_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Head::Complete {
                len: 27,
                body: Some(0)
            }
        ));
        assert!(matches!(
            check_head(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
            Head::Complete { body: Some(5), .. }
        ));
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Some(400)
        );
        assert!(matches!(
            check_head(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Head::Partial
        ));
        assert_eq!(status(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n"), Some(400));
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100_000));
        assert_eq!(status(long.as_bytes()), Some(414));
        // A long request line is refused before it ends.
        assert_eq!(status(&long.as_bytes()[..20_000]), Some(414));
        let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Some(431)
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "v".repeat(MAX_HEAD_BYTES));
        assert_eq!(status(big.as_bytes()), Some(431));
    }

    /// Follows `parts` (received one after another) as one chunked body: the bytes
    /// taken at each part, and where the body ended (its length) if it did.
    fn follow(parts: &[&[u8]]) -> Result<(Vec<usize>, Option<usize>), ()> {
        let mut state = Chunked::Size;
        let mut pending = Vec::new();
        let (mut taken, mut total) = (Vec::new(), 0);
        for part in parts {
            pending.extend_from_slice(part);
            let (take, ended) = state.advance(&pending)?;
            pending.drain(..take);
            taken.push(take);
            total += take;
            if ended {
                return Ok((taken, Some(total)));
            }
        }
        Ok((taken, None))
    }

    #[test]
    fn chunked_bodies_are_followed_to_their_end() {
        let whole = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: v\r\n\r\nGET / HTTP/1.1\r\n";
        let end = whole.len() - b"GET / HTTP/1.1\r\n".len();
        assert_eq!(follow(&[&whole[..]]), Ok((vec![end], Some(end))));
        // One byte at a time: a size line or a trailer line is taken only whole.
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        let (taken, ended) = follow(&bytes).unwrap();
        assert_eq!(ended, Some(end));
        assert_eq!(taken[0], 0, "a size line's first byte waits for its end");
        assert_eq!(taken[2], 3, "`5\\r\\n` whole");
        // No trailers.
        assert_eq!(follow(&[&b"0\r\n\r\nnext"[..]]), Ok((vec![5], Some(5))));
        // Not yet ended.
        assert_eq!(follow(&[&b"a\r\n0123"[..]]), Ok((vec![7], None)));
        // Broken framing: no CRLF after the data, a size that is not hex, a size line
        // without an end.
        assert_eq!(follow(&[&b"1\r\nab\r\n"[..]]), Err(()));
        assert_eq!(follow(&[&b"zz\r\n"[..]]), Err(()));
        assert_eq!(follow(&[&[b'1'; MAX_CHUNK_LINE + 1][..]]), Err(()));
    }

    #[test]
    fn caps_follow_the_descriptor_limit() {
        assert_eq!(default_max_connections(Some(256)), 192);
        assert_eq!(default_max_connections(Some(1 << 20)), 4096);
        assert_eq!(default_max_connections(Some(10)), 1);
        assert_eq!(default_max_per_client(192), 48);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert_eq!(client_key(v6), client_key(v6b), "one /64, one client");
    }
}
