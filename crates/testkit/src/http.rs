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
use tokio::net::TcpListener;
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
    let route = lock(&state.routes)
        .get(request.uri().path())
        .cloned()
        .unwrap_or_default();
    if let Some(delay) = route.delay {
        tokio::time::sleep(delay).await;
    }
    match route.reply {
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
