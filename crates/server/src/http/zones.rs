//! The Cloudflare-shaped zone and token endpoints users expect around the SSL API:
//! `POST/GET /zones`, `GET/DELETE /zones/{zone_id}`, `GET /user/tokens/verify`.

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::request::Path;
use super::request::{self, QueryParams};
use super::ssl::zone_access;
use super::wire;
use crate::admin::{self, AdminError};
use crate::model::{Need, Principal};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, RawQuery, State};
use zonecert_api as api;

type ApiResult<T> = Result<Json<api::Envelope<T>>, ApiError>;

/// `POST /zones` with `{"name": "example.com"}` (`account` and `type` are accepted and
/// ignored: zonecert has one account). Only unscoped credentials create zones.
pub(super) async fn create_zone(
    State(st): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<api::Zone> {
    let principal = super::auth::authorize(&st.store, &caller, Need::WriteZone, None).await?;
    if !principal.may_create_zones() {
        return Err(ApiError::unauthorized());
    }
    let body = request::json_object(body, st.config.max_body_bytes, false)?;
    let name = request::required_str(&body, "name")?;
    let zone = admin::create_zone(&st.store, name, None, false, st.clock.now())
        .await
        .map_err(|e| match e {
            AdminError::Invalid(msg) => ApiError::invalid_field("name", msg),
            AdminError::Store(s) => s.into(),
        })?;
    Ok(Json(api::Envelope::ok(wire::zone(&zone))))
}

/// `GET /zones[?name=&page=&per_page=]`: the zones the caller may see.
pub(super) async fn list_zones(
    State(st): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> ApiResult<Vec<api::Zone>> {
    let principal = super::auth::authorize(&st.store, &caller, Need::ReadZone, None).await?;
    let query = QueryParams::parse(query.as_deref())?;
    let page = query.number("page", 1, 1, u64::from(u32::MAX))?;
    let per_page = query.number("per_page", 20, 5, 50)?;
    let only = match &principal {
        Principal::Token(t) => t.zones.clone(),
        Principal::User(_) => None,
    };
    let name = query.get("name").map(str::to_ascii_lowercase);
    let found = st
        .store
        .list_zones(
            name.as_deref(),
            only.as_deref(),
            (page - 1).saturating_mul(per_page),
            per_page,
        )
        .await?;
    let items: Vec<api::Zone> = found.items.iter().map(wire::zone).collect();
    let count = items.len() as u64;
    let mut envelope = api::Envelope::ok(items);
    envelope.result_info = Some(api::ResultInfo {
        page,
        per_page,
        count,
        total_count: found.total,
        total_pages: found.total.div_ceil(per_page),
    });
    Ok(Json(envelope))
}

/// `GET /zones/{zone_id}`
pub(super) async fn get_zone(
    State(st): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(zone_id): Path<String>,
) -> ApiResult<api::Zone> {
    let (_, zone) = zone_access(&st, &caller, &uri, &zone_id, Need::ReadZone).await?;
    Ok(Json(api::Envelope::ok(wire::zone(&zone))))
}

/// The result of deleting a zone.
#[derive(Debug, serde::Serialize)]
pub(super) struct Deleted {
    id: String,
}

/// `DELETE /zones/{zone_id}`: deletes the zone and its certificate packs.
pub(super) async fn delete_zone(
    State(st): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(zone_id): Path<String>,
) -> ApiResult<Deleted> {
    let (_, zone) = zone_access(&st, &caller, &uri, &zone_id, Need::WriteZone).await?;
    // Read before the deletion, which takes them with it. (A pack ordered in between is
    // left to the start-up and hourly sweep of the deploy directory.)
    let packs = st.store.packs_of_zone(&zone.id).await?;
    if !st.store.delete_zone(&zone.id).await? {
        return Err(ApiError::unknown_object(uri.path()));
    }
    let ids: Vec<_> = packs.iter().map(|p| p.id.clone()).collect();
    super::remove_deployments(&st, &ids).await;
    super::revoke_deleted(&st, &packs);
    Ok(Json(api::Envelope::ok(Deleted {
        id: zone.id.to_string(),
    })))
}

/// `GET /user/tokens/verify`: whether the Bearer token is valid.
pub(super) async fn verify_token(
    State(st): State<AppState>,
    caller: Caller,
) -> ApiResult<api::TokenStatus> {
    match super::auth::principal(&st.store.reads(), caller.headers(), caller.known()).await? {
        Principal::Token(token) => Ok(Json(api::Envelope::ok(api::TokenStatus {
            id: token.id.clone(),
            status: "active".into(),
        }))),
        // The endpoint verifies API tokens; a global key is not one.
        Principal::User(_) => Err(ApiError::bad_authorization_header()),
    }
}
