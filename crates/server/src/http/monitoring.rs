//! `GET /metrics` (Prometheus text format) and `GET /readyz`.
//!
//! On the API listener `/metrics` takes a credential not limited to some zones (the
//! metrics cover every zone); on `--metrics-listen` ([`metrics_router`]) it is served
//! without authentication, for a scraper on a private network. `/readyz` answers 200 only
//! when the store answers and the lifecycle runs (when it is configured to), 503 in the
//! error envelope otherwise; `/healthz` says only that the process answers.

use super::AppState;
use super::auth;
use super::error::ApiError;
use crate::clock::{Clock, SystemClock};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// `GET /metrics` on the API listener: for credentials not limited to some zones.
pub(super) async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !st.signals.metrics().enabled() {
        return ApiError::no_route().into_response();
    }
    let principal = match auth::principal(&st.store.reads(), &headers, None).await {
        Ok(principal) => principal,
        Err(e) => return e.into_response(),
    };
    if !principal.may_create_zones() {
        // The metrics count every zone's packs.
        return ApiError::unauthorized().into_response();
    }
    render(&st).await
}

/// `GET /metrics` on the metrics listener: no authentication.
async fn open_metrics(State(st): State<AppState>) -> Response {
    render(&st).await
}

async fn render(st: &AppState) -> Response {
    let metrics = st.signals.metrics();
    let snapshot = match st
        .store
        .monitoring(st.clock.now(), SystemClock.now(), metrics.per_zone())
        .await
    {
        Ok(snapshot) => Some(snapshot),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: reading the store failed");
            None
        }
    };
    let body = metrics.render(snapshot).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// `GET /readyz`: 200 when the store answers and the lifecycle runs (or is configured
/// off); else 503 with each reason.
pub(super) async fn readyz(State(st): State<AppState>) -> Response {
    let mut reasons = Vec::new();
    if let Err(e) = st.store.ping().await {
        reasons.push(format!("the store does not answer: {e}"));
    }
    let lifecycle = if !st.config.lifecycle && !st.signals.lifecycle_expected() {
        "off"
    } else if st.signals.workers_running() {
        "running"
    } else {
        reasons.push("the lifecycle is not running".into());
        "stopped"
    };
    if !reasons.is_empty() {
        return ApiError::not_ready(&reasons).into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            r#"{{"success":true,"errors":[],"messages":[],"result":{{"status":"ready","store":"ok","lifecycle":"{lifecycle}"}}}}"#
        ),
    )
        .into_response()
}

/// The router of `--metrics-listen`: `/metrics` without authentication, nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(open_metrics))
        .fallback(super::no_route)
        .method_not_allowed_fallback(super::method_not_allowed)
        .with_state(state)
}
