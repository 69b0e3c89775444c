//! The test controls over HTTP, under `/_zonecert/v1` (outside Cloudflare's namespace):
//! reset, clock, auto-validation, faults. Routed only when the server offers them
//! (`--dev`, `--test-controls`): a server without them answers 404 here, as on any path
//! it does not know. Every route needs the "zonecert Test Controls" group; the ones that
//! act on the whole server (reset, clock, faults) also need credentials not limited to
//! some zones.

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::request::{self, Path};
use crate::clock::{Clock, rfc3339};
use crate::controls::{ClockError, Controls, Fault, FaultKind, MoveError};
use crate::model::{Hostname, Need, Principal, ZoneId};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, State};
use serde_json::{Map, Value};
use std::sync::Arc;
use zonecert_api as api;

/// Where the control routes live.
pub const CONTROLS_BASE: &str = "/_zonecert/v1";

type ApiResult<T> = Result<Json<api::Envelope<T>>, ApiError>;

/// The controls of a server that routes these handlers (it routes them only then).
fn controls(st: &AppState) -> Result<&Arc<Controls>, ApiError> {
    st.controls.as_ref().ok_or_else(ApiError::no_route)
}

/// The caller, who must hold the test controls' group and, with `whole_server`, not be
/// limited to some zones.
async fn authorize(
    st: &AppState,
    caller: &Caller,
    whole_server: bool,
) -> Result<Principal, ApiError> {
    let principal = super::auth::authorize(&st.store, caller, Need::TestControls, None).await?;
    if whole_server && !principal.may_create_zones() {
        return Err(ApiError::unauthorized());
    }
    Ok(principal)
}

fn optional_str<'a>(
    body: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => request::required_str(body, field).map(Some),
    }
}

/// `POST /_zonecert/v1/reset`
pub(super) async fn reset(
    State(st): State<AppState>,
    caller: Caller,
) -> ApiResult<api::ResetResult> {
    let controls = controls(&st)?;
    authorize(&st, &caller, true).await?;
    let took = controls
        .reset(&st.store, &st.config)
        .await
        .map_err(ApiError::internal)?;
    st.signals.wake();
    Ok(Json(api::Envelope::ok(api::ResetResult {
        zone_id: crate::admin::dev::ZONE_ID.to_owned(),
        pack_id: crate::admin::dev::PACK_ID.to_owned(),
        user_email: crate::admin::dev::USER_EMAIL.to_owned(),
        took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
    })))
}

fn clock_state(controls: &Controls) -> api::ClockState {
    let clock = controls.clock();
    api::ClockState {
        now: rfc3339(clock.now()),
        real_now: rfc3339(clock.real_now()),
        offset_seconds: clock.offset(),
    }
}

/// After a move: the lifecycle runs what became due at once (renewals, expiry,
/// timeouts, checks on the retry schedule) rather than at its next poll.
fn moved(
    st: &AppState,
    controls: &Controls,
    outcome: Result<(), MoveError>,
    field: &str,
) -> ApiResult<api::ClockState> {
    match outcome {
        Ok(()) => {
            st.signals.wake();
            Ok(Json(api::Envelope::ok(clock_state(controls))))
        }
        Err(MoveError::Refused(e @ ClockError::Backwards(_))) => {
            Err(ApiError::invalid_field(field, e.to_string()))
        }
        Err(MoveError::Refused(e @ ClockError::Overflow)) => {
            Err(ApiError::invalid_field(field, e.to_string()))
        }
        Err(MoveError::Store(e)) => Err(e.into()),
    }
}

/// `GET /_zonecert/v1/clock`
pub(super) async fn get_clock(
    State(st): State<AppState>,
    caller: Caller,
) -> ApiResult<api::ClockState> {
    let controls = controls(&st)?;
    authorize(&st, &caller, false).await?;
    Ok(Json(api::Envelope::ok(clock_state(controls))))
}

/// `POST /_zonecert/v1/clock/advance` with `{"by": "60d"}`
pub(super) async fn advance_clock(
    State(st): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<api::ClockState> {
    let controls = controls(&st)?;
    authorize(&st, &caller, true).await?;
    let body = request::json_object(body, st.config.max_body_bytes, false)?;
    let by = request::required_str(&body, "by")?;
    let duration =
        crate::config::parse_duration(by).map_err(|e| ApiError::invalid_field("by", e))?;
    let secs = i64::try_from(duration.as_secs())
        .map_err(|_| ApiError::invalid_field("by", format!("{by:?} is too far")))?;
    let outcome = controls.advance(&st.store, secs).await;
    moved(&st, controls, outcome, "by")
}

/// `POST /_zonecert/v1/clock/set` with `{"to": "2027-03-01T00:00:00Z"}`
pub(super) async fn set_clock(
    State(st): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<api::ClockState> {
    let controls = controls(&st)?;
    authorize(&st, &caller, true).await?;
    let body = request::json_object(body, st.config.max_body_bytes, false)?;
    let to = request::required_str(&body, "to")?;
    let target = time::OffsetDateTime::parse(to, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            ApiError::invalid_field("to", format!("{to:?} is not an RFC 3339 time ({e})"))
        })?;
    let outcome = controls.set(&st.store, target.unix_timestamp()).await;
    moved(&st, controls, outcome, "to")
}

/// `POST /_zonecert/v1/clock/reset`
pub(super) async fn reset_clock(
    State(st): State<AppState>,
    caller: Caller,
) -> ApiResult<api::ClockState> {
    let controls = controls(&st)?;
    authorize(&st, &caller, true).await?;
    let outcome = controls.reset_clock(&st.store).await;
    moved(&st, controls, outcome, "to")
}

/// `GET /_zonecert/v1/auto_validation`
pub(super) async fn get_auto_validation(
    State(st): State<AppState>,
    caller: Caller,
) -> ApiResult<api::AutoValidation> {
    let controls = controls(&st)?;
    let principal = authorize(&st, &caller, false).await?;
    Ok(Json(api::Envelope::ok(api::AutoValidation {
        all_zones: controls.auto_validates_all(),
        zones: controls
            .auto_validated_zones()
            .into_iter()
            .filter(|z| principal.covers_zone(z))
            .map(|z| z.to_string())
            .collect(),
    })))
}

/// `PUT /_zonecert/v1/zones/{zone_id}/auto_validation` with `{"enabled": true}`
pub(super) async fn set_auto_validation(
    State(st): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(zone_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<api::ZoneAutoValidation> {
    let controls = controls(&st)?;
    let principal = authorize(&st, &caller, false).await?;
    let zone = ZoneId::parse(&zone_id).map_err(|_| ApiError::unknown_object(uri.path()))?;
    if !principal.covers_zone(&zone) {
        return Err(ApiError::unauthorized());
    }
    let body = request::json_object(body, st.config.max_body_bytes, false)?;
    let enabled = request::optional_bool(&body, "enabled")?
        .ok_or_else(|| ApiError::invalid_field("enabled", "enabled is required"))?;
    if st.store.zone(&zone).await?.is_none() {
        return Err(ApiError::unknown_object(uri.path()));
    }
    controls.set_auto_validation(&zone, enabled);
    if enabled {
        // Pending hosts are checked on their schedule; a `retry=true` checks them now.
        st.signals.wake();
    }
    Ok(Json(api::Envelope::ok(api::ZoneAutoValidation {
        zone_id: Some(zone.to_string()),
        enabled: controls.auto_validates(&zone),
    })))
}

fn fault_view(fault: &Fault) -> api::Fault {
    let reason = if fault.kind.is_dcv() {
        let host = fault.host.as_deref().unwrap_or("HOST");
        let record = crate::model::DcvRecord::Txt {
            name: format!("_acme-challenge.{host}"),
            value: String::new(),
        };
        fault.dcv_reason(host, &record)
    } else {
        fault.step_reason()
    };
    api::Fault {
        id: fault.id.to_string(),
        kind: fault.kind.as_str().to_owned(),
        zone_id: fault.zone.as_ref().map(ToString::to_string),
        host: fault.host.clone(),
        attempts: fault.attempts,
        struck: fault.struck_total(),
        reason,
    }
}

/// `GET /_zonecert/v1/faults`
pub(super) async fn list_faults(
    State(st): State<AppState>,
    caller: Caller,
) -> ApiResult<Vec<api::Fault>> {
    let controls = controls(&st)?;
    authorize(&st, &caller, true).await?;
    Ok(Json(api::Envelope::ok(
        controls.faults().iter().map(fault_view).collect(),
    )))
}

/// `POST /_zonecert/v1/faults`
pub(super) async fn add_fault(
    State(st): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<api::Fault> {
    let controls = controls(&st)?;
    authorize(&st, &caller, true).await?;
    let body = request::json_object(body, st.config.max_body_bytes, false)?;
    let kinds: Vec<&str> = FaultKind::ALL.iter().map(|k| k.as_str()).collect();
    let kind = request::one_of(&body, "kind", &kinds)?;
    let kind =
        FaultKind::parse(kind).ok_or_else(|| ApiError::invalid_field("kind", "unknown kind"))?;
    let zone = optional_str(&body, "zone_id")?
        .map(|z| ZoneId::parse(z).map_err(|e| ApiError::invalid_field("zone_id", e.0)))
        .transpose()?;
    let host = optional_str(&body, "host")?
        .map(|h| {
            Hostname::parse(h)
                .map(|h| h.to_string().to_ascii_lowercase())
                .map_err(|e| ApiError::invalid_field("host", e.0))
        })
        .transpose()?;
    if zone.is_none() && host.is_none() {
        return Err(ApiError::invalid_field(
            "zone_id",
            "a fault applies to a zone (zone_id), a host (host), or a host of a zone (both)",
        ));
    }
    let attempts = match body.get("attempts") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let n = request::required_u32(&body, "attempts")?;
            if n == 0 {
                return Err(ApiError::invalid_field(
                    "attempts",
                    "attempts must be at least 1 (omit it: until cleared)",
                ));
            }
            Some(n)
        }
    };
    let problem_type = optional_str(&body, "problem_type")?.map(str::to_owned);
    if problem_type.is_some() && kind != FaultKind::Ca {
        return Err(ApiError::invalid_field(
            "problem_type",
            "problem_type is for kind ca (a CA's refusal)",
        ));
    }
    let detail = optional_str(&body, "detail")?.map(str::to_owned);
    let mut fault = Fault::new(kind);
    fault.zone = zone;
    fault.host = host;
    fault.attempts = attempts;
    fault.problem_type = problem_type;
    fault.detail = detail;
    let fault = controls.add_fault(fault);
    Ok(Json(api::Envelope::ok(fault_view(&fault))))
}

/// `DELETE /_zonecert/v1/faults`
pub(super) async fn clear_faults(
    State(st): State<AppState>,
    caller: Caller,
) -> ApiResult<api::FaultsCleared> {
    let controls = controls(&st)?;
    authorize(&st, &caller, true).await?;
    let cleared = controls.clear_faults();
    Ok(Json(api::Envelope::ok(api::FaultsCleared {
        cleared: cleared as u64,
    })))
}

/// `DELETE /_zonecert/v1/faults/{fault_id}`
pub(super) async fn delete_fault(
    State(st): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(fault_id): Path<String>,
) -> ApiResult<api::FaultsCleared> {
    let controls = controls(&st)?;
    authorize(&st, &caller, true).await?;
    let id: u64 = fault_id
        .parse()
        .map_err(|_| ApiError::unknown_object(uri.path()))?;
    if !controls.remove_fault(id) {
        return Err(ApiError::unknown_object(uri.path()));
    }
    Ok(Json(api::Envelope::ok(api::FaultsCleared { cleared: 1 })))
}
