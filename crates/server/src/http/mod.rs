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
use crate::store::Store;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use error::ApiError;
use ratelimit::RateLimiter;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
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

impl AppState {
    /// The state of a server over `store`.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        clock: SharedClock,
        signals: Arc<Signals>,
    ) -> Self {
        let limiter = config.rate_limit.map(|l| Arc::new(RateLimiter::new(l)));
        AppState {
            store,
            config,
            clock,
            signals,
            controls: None,
            limiter,
        }
    }
}

/// The prefix every Cloudflare route lives under.
pub const BASE: &str = "/client/v4";

pub use controls::CONTROLS_BASE;
pub use monitoring::metrics_router;

/// The API's router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/zones/{zone_id}/ssl/verification",
            get(ssl::get_verification),
        )
        .route(
            "/zones/{zone_id}/ssl/verification/{certificate_pack_id}",
            patch(ssl::edit_verification),
        )
        .route(
            "/zones/{zone_id}/ssl/certificate_packs",
            get(ssl::list_packs),
        )
        .route(
            "/zones/{zone_id}/ssl/certificate_packs/order",
            post(ssl::order_pack),
        )
        .route(
            "/zones/{zone_id}/ssl/certificate_packs/quota",
            get(ssl::quota),
        )
        .route(
            "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}",
            get(ssl::get_pack)
                .patch(ssl::edit_pack)
                .delete(ssl::delete_pack),
        )
        .route("/zones", get(zones::list_zones).post(zones::create_zone))
        .route(
            "/zones/{zone_id}",
            get(zones::get_zone).delete(zones::delete_zone),
        )
        .route("/user/tokens/verify", get(zones::verify_token))
        .route("/openapi.json", get(openapi::serve))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    let max_body = state.config.max_body_bytes;
    let body_limits = conn::BodyLimits {
        timeout: state.config.body_read_timeout,
        max_bytes: max_body,
    };
    let mut router = Router::new().nest(BASE, api);
    if state.controls.is_some() {
        router = router.nest(CONTROLS_BASE, controls_router(&state));
    }
    router
        .route("/healthz", get(healthz))
        .route("/readyz", get(monitoring::readyz))
        .route("/metrics", get(monitoring::metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(body_limits, conn::read_body))
        .layer(middleware::from_fn_with_state(
            state.signals.clone(),
            request_log,
        ))
        .with_state(state)
}

/// The test controls' routes (mounted only when the server offers them), under the same
/// rate limits as the API.
fn controls_router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/reset", post(controls::reset))
        .route("/clock", get(controls::get_clock))
        .route("/clock/advance", post(controls::advance_clock))
        .route("/clock/set", post(controls::set_clock))
        .route("/clock/reset", post(controls::reset_clock))
        .route("/auto_validation", get(controls::get_auto_validation))
        .route(
            "/zones/{zone_id}/auto_validation",
            put(controls::set_auto_validation),
        )
        .route(
            "/faults",
            get(controls::list_faults)
                .post(controls::add_fault)
                .delete(controls::clear_faults),
        )
        .route("/faults/{fault_id}", delete(controls::delete_fault))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit))
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

/// Gives every request an id (the client's `x-request-id` if it is sane), logs it
/// with the outcome, returns it in the response, and counts the request in the metrics
/// by its route template.
async fn request_log(
    State(signals): State<Arc<Signals>>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(crate::secrets::mint_request_id);
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // This router's match (`/healthz`, or the nested routers' mount point: those put
    // their own, whole template in the response, see `route_of`).
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    let micros = started.elapsed().as_micros() as u64;
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), micros, "request failed");
        } else if status.is_client_error() {
            tracing::info!(status = status.as_u16(), micros, "request refused");
        } else {
            tracing::debug!(status = status.as_u16(), micros, "request served");
        }
    });
    let metrics = signals.metrics();
    if metrics.enabled() {
        let inner = response.extensions_mut().remove::<MatchedPath>();
        let route = match (&inner, &matched) {
            (Some(inner), _) => inner.as_str(),
            // A nested router's mount point matched but none of its routes did.
            (None, Some(outer)) if !outer.as_str().contains("{*") => outer.as_str(),
            _ => UNMATCHED,
        };
        metrics.request(route, &method, status.as_u16(), started.elapsed());
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    response
}

/// Hands the route template the nested router matched to [`request_log`] (through the
/// response: the request it saw is gone by then).
fn route_of(route: Option<MatchedPath>, response: &mut Response) {
    if let Some(route) = route {
        response.extensions_mut().insert(route);
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
    let route = req.extensions().get::<MatchedPath>().cloned();
    let Some(limiter) = &st.limiter else {
        let mut response = next.run(req).await;
        route_of(route, &mut response);
        return response;
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
    route_of(route, &mut response);
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(decision.remaining),
    );
    headers.insert("x-ratelimit-reset", HeaderValue::from(decision.reset_secs));
    response
}
