//! An in-process HTTP origin on loopback whose routes tests change at will.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::{CancellationToken, DropGuard};

/// A real HTTP/1.1 server on a loopback port serving routes set by the test. Unknown paths
/// answer 404. Every request is logged (path and Host header). Stops when dropped.
#[derive(Debug)]
pub struct HttpOrigin {
    addr: SocketAddr,
    state: Arc<OriginState>,
    _stop: DropGuard,
}

/// One request the origin received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The request path with its query string, e.g. `/.well-known/acme-challenge/abc`.
    pub path: String,
    /// The Host header as sent, if any.
    pub host: Option<String>,
}

#[derive(Debug, Default)]
struct OriginState {
    routes: Mutex<HashMap<String, Route>>,
    log: Mutex<Vec<LoggedRequest>>,
}

#[derive(Debug, Clone, Default)]
struct Route {
    reply: Reply,
    delay: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
enum Reply {
    #[default]
    NotFound,
    Body {
        status: u16,
        body: Vec<u8>,
    },
    Redirect {
        status: u16,
        location: String,
    },
}

impl HttpOrigin {
    /// Starts an origin on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> HttpOrigin {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), 0).await
    }

    /// Starts an origin on `ip:port` (port 0 picks a free one), e.g. `::1` to test IPv6.
    ///
    /// # Panics
    /// When the address cannot be bound.
    pub async fn start_on(ip: IpAddr, port: u16) -> HttpOrigin {
        let listener = TcpListener::bind((ip, port))
            .await
            .unwrap_or_else(|e| panic!("binding an HTTP origin on {ip}:{port}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("HTTP origin local address: {e}"));
        let state = Arc::new(OriginState::default());
        let app = Router::new().fallback(serve).with_state(state.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
        });
        HttpOrigin {
            addr,
            state,
            _stop: stop.drop_guard(),
        }
    }

    /// Starts an HTTPS origin on a free port of 127.0.0.1, with a self-signed certificate for
    /// `localhost` (no client will trust it: it is for clients that do not verify, like HTTP
    /// validation following a redirect to https). Same routes API as the plain origin.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start_tls() -> HttpOrigin {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap_or_else(|e| panic!("binding an HTTPS origin on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("HTTPS origin local address: {e}"));
        let state = Arc::new(OriginState::default());
        let stop = CancellationToken::new();
        tokio::spawn(serve_tls(listener, state.clone(), stop.clone()));
        HttpOrigin {
            addr,
            state,
            _stop: stop.drop_guard(),
        }
    }

    /// The address the origin listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the origin listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serves `body` with `status` at `path` (keeps any delay set for the path).
    pub fn set_body(&self, path: &str, status: u16, body: &str) {
        self.set_reply(
            path,
            Reply::Body {
                status,
                body: body.as_bytes().to_vec(),
            },
        );
    }

    /// Answers `path` with a redirect of `status` (e.g. 302) to `location`.
    pub fn set_redirect(&self, path: &str, status: u16, location: &str) {
        self.set_reply(
            path,
            Reply::Redirect {
                status,
                location: location.to_owned(),
            },
        );
    }

    /// Serves `n_bytes` bytes of `a` with status 200 at `path`.
    pub fn set_large_body(&self, path: &str, n_bytes: usize) {
        self.set_reply(
            path,
            Reply::Body {
                status: 200,
                body: vec![b'a'; n_bytes],
            },
        );
    }

    /// Holds every answer for `path` back by `delay` before sending the status line.
    pub fn set_delay(&self, path: &str, delay: Duration) {
        let mut routes = lock(&self.state.routes);
        routes.entry(path.to_owned()).or_default().delay = Some(delay);
    }

    /// Removes the route at `path` (it answers 404 again).
    pub fn remove(&self, path: &str) {
        lock(&self.state.routes).remove(path);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.state.log).clone()
    }

    fn set_reply(&self, path: &str, reply: Reply) {
        let mut routes = lock(&self.state.routes);
        routes.entry(path.to_owned()).or_default().reply = reply;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a test thread panicked; the data is still usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

async fn serve(State(state): State<Arc<OriginState>>, request: Request) -> Response {
    let path = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |pq| pq.as_str().to_owned(),
    );
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    lock(&state.log).push(LoggedRequest {
        path: path.clone(),
        host,
    });
    match state.reply_for(request.uri().path()).await {
        Reply::NotFound => (StatusCode::NOT_FOUND, "not found").into_response(),
        Reply::Body { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Body::from(body)).into_response()
        }
        Reply::Redirect { status, location } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = status.into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
        }
    }
}

impl OriginState {
    /// The reply for `path`, after the path's delay.
    async fn reply_for(&self, path: &str) -> Reply {
        let route = lock(&self.routes).get(path).cloned().unwrap_or_default();
        if let Some(delay) = route.delay {
            tokio::time::sleep(delay).await;
        }
        route.reply
    }
}

/// Serves HTTPS with a self-signed certificate: a deliberately small HTTP/1.1 responder (one
/// request per connection, `Connection: close`), enough for validation requests.
async fn serve_tls(listener: TcpListener, state: Arc<OriginState>, stop: CancellationToken) {
    let Ok(certified) = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]) else {
        return;
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let Ok(config) = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![certified.cert.der().clone()], key)
        })
    else {
        return;
    };
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let tcp = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = async {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve_one_request(tls, &state).await;
                    }
                } => {}
            }
        });
    }
}

async fn serve_one_request<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, state: &OriginState) {
    let mut head = Vec::new();
    let mut buf = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("/")
        .to_owned();
    let host = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("host")
            .then(|| value.trim().to_owned())
    });
    lock(&state.log).push(LoggedRequest {
        path: target.clone(),
        host,
    });
    let path = target.split('?').next().unwrap_or("/");
    let (status, location, body) = match state.reply_for(path).await {
        Reply::NotFound => (404, None, b"not found".to_vec()),
        Reply::Body { status, body } => (status, None, body),
        Reply::Redirect { status, location } => (status, Some(location), Vec::new()),
    };
    let mut response = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(location) = location {
        response.push_str(&format!("Location: {location}\r\n"));
    }
    response.push_str("\r\n");
    let mut bytes = response.into_bytes();
    bytes.extend_from_slice(&body);
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}
