//! The HTTP API under `/client/v4`: routing, middleware (request ids, logs, rate
//! limits), and the handlers. Handlers parse requests into model types, authorize,
//! call the store and render through `wire`; no SQL and no lifecycle calls here.

mod auth;
pub mod conn;
mod controls;
pub mod error;
mod monitoring;
pub mod openapi;
mod ratelimit;
mod request;
mod ssl;
pub(crate) mod wire;
mod zones;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::lifecycle::Signals;
use crate::metrics::RouteLabel;
use crate::store::Store;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::routing::{delete, get, patch, post, put};
use error::ApiError;
use http_body::Body as _;
use ratelimit::RateLimiter;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tower_service::Service;
use tracing::Instrument;

/// What every handler can reach: cloned for every request (by each layer and
/// extractor that takes the state), so it is one shared allocation behind an `Arc`.
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppShared>);

/// The fields of [`AppState`], reached through it (`Deref`).
#[derive(Debug)]
pub struct AppShared {
    /// The database.
    pub store: Store,
    /// The configuration.
    pub config: Arc<Config>,
    /// The clock.
    pub clock: SharedClock,
    /// Wake-up and progress signals shared with the lifecycle workers.
    pub signals: Arc<Signals>,
    /// The test controls, when offered (`--dev`, `--test-controls`).
    pub controls: Option<Arc<crate::controls::Controls>>,
    pub(crate) limiter: Option<Arc<RateLimiter>>,
}

impl std::ops::Deref for AppState {
    type Target = AppShared;
    fn deref(&self) -> &AppShared {
        &self.0
    }
}

impl AppState {
    /// The state of a server over `store`, offering the test controls `controls`.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        clock: SharedClock,
        signals: Arc<Signals>,
        controls: Option<Arc<crate::controls::Controls>>,
    ) -> Self {
        let limiter = config.rate_limit.map(|l| Arc::new(RateLimiter::new(l)));
        AppState(Arc::new(AppShared {
            store,
            config,
            clock,
            signals,
            controls,
            limiter,
        }))
    }
}

/// The prefix every Cloudflare route lives under.
pub const BASE: &str = "/client/v4";

pub use controls::CONTROLS_BASE;
pub use monitoring::metrics_router;

/// The API as the connection layer serves it: [`FrontDoor`] in front of the router.
/// Every route is registered under its whole path (no nested routers: each nesting
/// level strips a prefix and routes again, per request); the rate limits wrap the API's
/// and the test controls' routes (and unknown paths), not the health and metrics routes.
pub fn router(state: AppState) -> Api {
    let api = |path: &str| format!("{BASE}{path}");
    let mut routes = Routes::new(Router::new());
    routes
        .route(
            &api("/zones/{zone_id}/ssl/verification"),
            get(ssl::get_verification),
        )
        .route(
            &api("/zones/{zone_id}/ssl/verification/{certificate_pack_id}"),
            patch(ssl::edit_verification),
        )
        .route(
            &api("/zones/{zone_id}/ssl/certificate_packs"),
            get(ssl::list_packs),
        )
        .route(
            &api("/zones/{zone_id}/ssl/certificate_packs/order"),
            post(ssl::order_pack),
        )
        .route(
            &api("/zones/{zone_id}/ssl/certificate_packs/quota"),
            get(ssl::quota),
        )
        .route(
            &api("/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}"),
            get(ssl::get_pack)
                .patch(ssl::edit_pack)
                .delete(ssl::delete_pack),
        )
        .route(
            &api("/zones"),
            get(zones::list_zones).post(zones::create_zone),
        )
        .route(
            &api("/zones/{zone_id}"),
            get(zones::get_zone).delete(zones::delete_zone),
        )
        .route(&api("/user/tokens/verify"), get(zones::verify_token))
        .route(&api("/openapi.json"), get(openapi::serve));
    if state.controls.is_some() {
        controls_routes(&mut routes);
    }
    routes.map(|router| {
        router
            .fallback(no_route)
            .method_not_allowed_fallback(method_not_allowed)
    });
    if state.limiter.is_some() {
        routes
            .map(|router| router.layer(middleware::from_fn_with_state(state.clone(), rate_limit)));
    }
    routes
        .route("/healthz", get(healthz))
        .route("/readyz", get(monitoring::readyz))
        .route("/metrics", get(monitoring::metrics));
    let Routes { router, labels } = routes;
    Api {
        router: router.with_state(state.clone()),
        front: Arc::new(FrontDoor {
            signals: state.signals.clone(),
            body: conn::BodyLimits {
                timeout: state.config.body_read_timeout,
                max_bytes: state.config.max_body_bytes,
            },
            labels,
        }),
    }
}

/// The router being built, and its routes' templates for the metrics' labels.
struct Routes {
    router: Router<AppState>,
    labels: RouteLabels,
}

impl Routes {
    fn new(router: Router<AppState>) -> Self {
        Routes {
            router,
            labels: RouteLabels::default(),
        }
    }

    /// Registers `path` with the router and its template with the labels.
    fn route(&mut self, path: &str, methods: axum::routing::MethodRouter<AppState>) -> &mut Self {
        self.labels.insert(path);
        self.map(|router| router.route(path, methods))
    }

    /// Changes the router (a fallback, a layer).
    fn map(&mut self, change: impl FnOnce(Router<AppState>) -> Router<AppState>) -> &mut Self {
        self.router = change(std::mem::take(&mut self.router));
        self
    }
}

/// The route template of a request, as axum's `MatchedPath` would give it, for the
/// metrics. The front door stands before the router, not in every route, so it does
/// not see `MatchedPath`: it matches the path itself, once, with the matcher axum's
/// router uses (matchit), over the same templates. As a layer in every route it saw
/// `MatchedPath`, but axum cloned and called that layer's boxed service for every
/// request (see the commit that made this for the figures).
#[derive(Debug)]
struct RouteLabels {
    routes: Vec<RouteLabel>,
    matcher: matchit::Router<usize>,
    unmatched: RouteLabel,
}

impl Default for RouteLabels {
    fn default() -> Self {
        RouteLabels {
            routes: Vec::new(),
            matcher: matchit::Router::new(),
            unmatched: RouteLabel::new(UNMATCHED),
        }
    }
}

impl RouteLabels {
    fn insert(&mut self, template: &str) {
        // axum merges the methods of a path registered twice: one template.
        if self.routes.iter().any(|r| r.template() == template) {
            return;
        }
        // axum refuses (panics on) the same templates when they are registered, which
        // `Routes::route` does next: this is a route table that cannot serve.
        if let Err(e) = self.matcher.insert(template, self.routes.len()) {
            panic!("the route {template:?} cannot be matched: {e}");
        }
        self.routes.push(RouteLabel::new(template));
    }

    /// The route `path` matches, [`UNMATCHED`]'s for none.
    fn label(&self, path: &str) -> &RouteLabel {
        self.matcher
            .at(path)
            .ok()
            .and_then(|found| self.routes.get(*found.value))
            .unwrap_or(&self.unmatched)
    }
}

/// The test controls' routes (mounted only when the server offers them), under the same
/// rate limits as the API.
fn controls_routes(routes: &mut Routes) {
    let at = |path: &str| format!("{CONTROLS_BASE}{path}");
    routes
        .route(&at("/reset"), post(controls::reset))
        .route(&at("/clock"), get(controls::get_clock))
        .route(&at("/clock/advance"), post(controls::advance_clock))
        .route(&at("/clock/set"), post(controls::set_clock))
        .route(&at("/clock/reset"), post(controls::reset_clock))
        .route(&at("/auto_validation"), get(controls::get_auto_validation))
        .route(
            &at("/zones/{zone_id}/auto_validation"),
            put(controls::set_auto_validation),
        )
        .route(
            &at("/faults"),
            get(controls::list_faults)
                .post(controls::add_fault)
                .delete(controls::clear_faults),
        )
        .route(&at("/faults/{fault_id}"), delete(controls::delete_fault));
}

/// Removes the deployed files (key included) of packs just deleted from the database. A
/// failure is logged, not answered: the deletion itself is done, and the deploy
/// directory's sweep (at start, then hourly) removes what is left.
async fn remove_deployments(st: &AppState, packs: &[crate::model::PackId]) {
    let deploy_dir = st.config.deploy_dir();
    for pack in packs {
        if let Err(e) = crate::issuance::remove_deployment(&deploy_dir, pack.as_str()).await {
            tracing::warn!(pack = %pack.as_str(), error = %e, "removing a deleted pack's files failed");
        }
    }
}

/// Wakes this server's lifecycle for the certificates that a deletion just queued for
/// revocation (the store's revocation queue, written by the deletion's transaction),
/// with `--acme-revoke-on-delete`. Without a lifecycle here the queue waits in the
/// store for a node that runs one.
fn revoke_deleted(st: &AppState, packs: &[crate::model::Pack]) {
    if !st.config.acme.revoke_on_delete {
        return;
    }
    let queued = packs
        .iter()
        .filter(|p| p.certificate.is_some() && st.config.acme.orders_remotely(p.ca))
        .count();
    if queued > 0 && !st.signals.revocations_queued() {
        tracing::warn!(
            certificates = queued,
            "the deleted packs' certificates wait in the revocation queue: no lifecycle runs on this server"
        );
    }
}

async fn no_route() -> ApiError {
    ApiError::no_route()
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// A static answer, for readiness checks and as the benchmarks' floor.
async fn healthz() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        r#"{"success":true,"errors":[],"messages":[],"result":{"status":"ok"}}"#,
    )
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route template of a request whose route is not known (no route matched).
const UNMATCHED: &str = "unmatched";

/// The API's router behind its front door: what the connection layer hands every
/// request of the API's listener to (`conn::Answer`).
#[derive(Debug, Clone)]
pub struct Api {
    router: Router,
    front: Arc<FrontDoor>,
}

/// What the front door needs.
#[derive(Debug)]
struct FrontDoor {
    signals: Arc<Signals>,
    body: conn::BodyLimits,
    labels: RouteLabels,
}

/// The router's call of a request: started already, or after its body is read.
enum Inner {
    Started(RouteFuture<Infallible>),
    AfterBody(
        Request,
        <DefaultBodyLimit as tower_layer::Layer<Router>>::Service,
    ),
}

/// The front door every request passes: gives it an id (the client's `x-request-id` if
/// it is sane), reads its body whole within the body-read timeout ([`conn::read_body`]),
/// logs it with the outcome, returns the id in the response, and counts the request in
/// the metrics by its route template.
///
/// In front of the router, called by the connection with each request, rather than a
/// layer in every route: axum cloned a layer's boxed service for every request it
/// routed there, boxed its future, and the layer's own future was boxed again (the
/// commit that made this gives the figures). A request without a body is routed at
/// once; one with a body is passed on with axum's body limit set to ours (for the
/// handlers' body extractors) after its body is read: setting the limit costs an
/// extension inserted per request, and a request without a body has nothing for it to
/// apply to.
impl conn::Answer for Api {
    fn answer(&self, req: Request) -> impl Future<Output = Response> + Send + 'static + use<> {
        // The id as a header value, made once: the span and the response share its
        // bytes. Not written into the request's headers: nothing after this reads it
        // there.
        let id = req
            .headers()
            .get(&REQUEST_ID)
            .filter(|v| {
                let b = v.as_bytes();
                !b.is_empty() && b.len() <= 64 && b.iter().all(u8::is_ascii_graphic)
            })
            .cloned()
            .unwrap_or_else(|| {
                // Hex digits: always a valid header value.
                HeaderValue::from_bytes(&crate::secrets::mint_request_id())
                    .unwrap_or(HeaderValue::from_static("-"))
            });
        let method = req.method().clone();
        // Only the id in the span: a span's fields are formatted when it is made, for
        // every request, although most requests log nothing at the default level. The
        // method and path go in the line that says how the request ended. Displayed,
        // not debugged: a `&str` field is formatted with `Debug`, which escapes it
        // character by character (recording the field took 3,200 instructions a
        // request, callgrind, 2,100 this way); the id needs no quoting, being at most 64
        // visible ASCII characters, no space.
        let id_str = id.to_str().unwrap_or_default();
        let span = tracing::info_span!("request", request_id = %id_str);
        // A clone of the parsed URI shares its bytes.
        let uri = req.uri().clone();
        let started = Instant::now();
        let mut router = self.router.clone();
        let inner = if req.body().is_end_stream() {
            Inner::Started(router.call(req))
        } else {
            let limited = tower_layer::Layer::layer(
                &DefaultBodyLimit::max(self.front.body.max_bytes),
                router,
            );
            Inner::AfterBody(req, limited)
        };
        let front = Arc::clone(&self.front);
        let answer = async move {
            let mut response = match inner {
                Inner::Started(call) => conn::answer(call).await,
                // Boxed: this future is as large as its largest state, and reading a
                // body (a timer, the body read so far, the call after it) would make
                // every request's future that large, for hyper to copy as it moves it.
                Inner::AfterBody(req, service) => {
                    Box::pin(conn::read_body(front.body, req, service)).await
                }
            };
            let status = response.status();
            let took = started.elapsed();
            // Logged inside the request span (this future runs in it).
            let micros = took.as_micros() as u64;
            let path = uri.path();
            if status.is_server_error() {
                tracing::warn!(%method, path, status = status.as_u16(), micros, "request failed");
            } else if status.is_client_error() {
                tracing::info!(%method, path, status = status.as_u16(), micros, "request refused");
            } else {
                tracing::debug!(%method, path, status = status.as_u16(), micros, "request served");
            }
            let metrics = front.signals.metrics();
            if metrics.enabled() {
                metrics.request(front.labels.label(path), &method, status.as_u16(), took);
            }
            response.headers_mut().insert(REQUEST_ID.clone(), id);
            response
        };
        answer.instrument(span)
    }
}

/// The bucket a request draws from: the identity its credential authenticates as (a
/// token's or a user's id, so `bearer`, `BEARER` or a re-cased e-mail are the same
/// bucket); a request whose credential fails to authenticate draws from its client
/// address's bucket of failures (so a wrong key sent with a user's e-mail never touches
/// that user's bucket), one without credentials from its address's. An authenticated
/// principal is handed on to the handler, which does not authenticate again.
async fn rate_key(st: &AppState, req: &mut Request) -> [u8; 32] {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| conn::client_key(c.0.ip()));
    let address = || peer.map(|ip| ip.to_string()).unwrap_or_default();
    let credential = match auth::credential(req.headers()) {
        Ok(credential) => credential,
        Err(_) => return crate::secrets::hash(&format!("address:{}", address())),
    };
    match auth::authenticate(&st.store.reads(), &credential).await {
        Ok(principal) => {
            let key = crate::secrets::hash(&principal.rate_key());
            req.extensions_mut().insert(auth::Authenticated(principal));
            key
        }
        Err(_) => crate::secrets::hash(&format!("failed-authentication:{}", address())),
    }
}

/// The bucket a request draws from, for a handler whose request causes more work
/// (`retry=true`'s checks).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateKey(pub(crate) [u8; 32]);

/// Per-credential rate limiting with `x-ratelimit-*` headers on every response.
async fn rate_limit(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(limiter) = &st.limiter else {
        return next.run(req).await;
    };
    let key = rate_key(&st, &mut req).await;
    req.extensions_mut().insert(RateKey(key));
    let decision = limiter.check(key, Instant::now());
    let mut response = if decision.allowed {
        next.run(req).await
    } else {
        st.signals.metrics().rate_limited();
        ApiError::rate_limited(decision.retry_after_secs).into_response()
    };
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(decision.remaining),
    );
    headers.insert("x-ratelimit-reset", HeaderValue::from(decision.reset_secs));
    response
}
