//! The eight SSL endpoints: verification (GET, PATCH) and certificate packs (order,
//! list, get, edit, delete, quota).

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::request::Path;
use super::request::{self, QueryParams};
use super::wire;
use crate::model::order::check_order;
use crate::model::{CaChoice, DcvMethod, Need, Pack, PackId, PackState, Principal, Zone, ZoneId};
use crate::model::{Event, Input, Refusal};
use crate::store::{Applied, PackFilter, Reads, ZoneView, apply_transition};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, RawQuery, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Arc;
use zonecert_api as api;

type ApiResult<T> = Result<Json<api::Envelope<T>>, ApiError>;

/// Authenticates and checks the caller may do `need` on the zone of the path, without
/// reading the zone. Order: credentials (400/403), id shape (404), permission and zone
/// scope (403); the caller then reads the zone (404 when absent).
async fn authorize_zone(
    reads: &Reads<'_>,
    headers: &HeaderMap,
    known: Option<&Principal>,
    uri: &Uri,
    raw_zone: &str,
    need: Need,
) -> Result<(Principal, ZoneId), ApiError> {
    let principal = super::auth::principal(reads, headers, known).await?;
    let zone_id = ZoneId::parse(raw_zone).map_err(|_| ApiError::unknown_object(uri.path()))?;
    if !principal.has(need) || !principal.covers_zone(&zone_id) {
        return Err(ApiError::unauthorized());
    }
    Ok((principal, zone_id))
}

/// [`authorize_zone`], then reads the zone.
pub(super) async fn zone_access(
    st: &AppState,
    caller: &Caller,
    uri: &Uri,
    raw_zone: &str,
    need: Need,
) -> Result<(Principal, Zone), ApiError> {
    let (principal, zone_id) = authorize_zone(
        &st.store.reads(),
        caller.headers(),
        caller.known(),
        uri,
        raw_zone,
        need,
    )
    .await?;
    let zone = st
        .store
        .zone(&zone_id)
        .await?
        .ok_or_else(|| ApiError::unknown_object(uri.path()))?;
    Ok((principal, zone))
}

async fn pack_of(st: &AppState, uri: &Uri, zone: &Zone, raw_pack: &str) -> Result<Pack, ApiError> {
    let id = PackId::parse(raw_pack).map_err(|_| ApiError::unknown_object(uri.path()))?;
    st.store
        .pack(&zone.id, &id)
        .await?
        .ok_or_else(|| ApiError::unknown_object(uri.path()))
}

/// `GET /zones/{zone_id}/ssl/verification[?retry=true]`
pub(super) async fn get_verification(
    State(st): State<AppState>,
    Path(zone_id): Path<String>,
    RawQuery(query): RawQuery,
    // The whole request, for its headers: read in place, where the `HeaderMap`
    // extractor would copy them, on the API's hottest path.
    request: Request,
) -> Result<Response, ApiError> {
    // The request's own URI: routes are not nested (see `router`), so it is the one
    // the client sent, without `OriginalUri`'s clone.
    let uri = request.uri();
    // One look at the store's freshness covers the request's two cached reads.
    let reads = st.store.reads();
    let (_, zone_id) = authorize_zone(
        &reads,
        request.headers(),
        request
            .extensions()
            .get::<super::auth::Authenticated>()
            .map(|a| &a.0),
        uri,
        &zone_id,
        Need::ReadVerification,
    )
    .await?;
    let query = QueryParams::parse(query.as_deref())?;
    let retry = match query.get("retry") {
        None => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid_parameter(
                "retry",
                format!("the only accepted value is true, got {other:?}"),
            ));
        }
    };
    let render = |view: &ZoneView| -> Result<Vec<u8>, ApiError> {
        let packs = view.packs.iter().map(|p| &**p);
        let envelope = api::Envelope::ok(wire::verifications(packs, &st.config));
        serde_json::to_vec(&envelope).map_err(ApiError::internal)
    };
    let body = if retry {
        let view = reads
            .zone_with_packs(&zone_id)
            .await?
            .ok_or_else(|| ApiError::unknown_object(uri.path()))?;
        let rate_key = request.extensions().get::<super::RateKey>().copied();
        // Boxed: its future (checks, waits) is large, and the handler's future, as
        // large as its largest state, is moved whole for every request.
        Bytes::from(render(
            &*Box::pin(recheck(&st, uri, &view, rate_key)).await?,
        )?)
    } else {
        // The API's hottest path: the answer is rendered once per version of the zone
        // and kept in the store's read cache with it.
        reads
            .zone_answer(&zone_id, render)
            .await?
            .ok_or_else(|| ApiError::unknown_object(uri.path()))?
    };
    // Made directly: `([(CONTENT_TYPE, "application/json")], body)` copies the
    // header value into a new allocation and first sets Bytes' own octet-stream type
    // (900 instructions of a GET verification, callgrind).
    let mut response = Response::new(axum::body::Body::from(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// `PATCH /zones/{zone_id}/ssl/verification/{certificate_pack_id}`
pub(super) async fn edit_verification(
    State(st): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path((zone_id, pack_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<api::EditVerificationResult> {
    let (_, zone) = zone_access(&st, &caller, &uri, &zone_id, Need::WriteSsl).await?;
    let pack = pack_of(&st, &uri, &zone, &pack_id).await?;
    let body = request::json_object(body, st.config.max_body_bytes, false)?;
    let method = request::one_of(
        &body,
        "validation_method",
        &["http", "cname", "txt", "email"],
    )?;
    let method = DcvMethod::parse(method)
        .ok_or_else(|| ApiError::invalid_field("validation_method", "unknown method"))?;
    if method == DcvMethod::Http && pack.hosts.iter().any(|h| h.hostname.is_wildcard()) {
        return Err(ApiError::invalid_field(
            "validation_method",
            "this pack has a wildcard host: wildcard hosts cannot be validated over http",
        ));
    }
    // A pack past validation (active, issuing, ...) keeps its method: the same method
    // asks for nothing to change, and answers the status as it is.
    let settled = pack.state != PackState::PendingValidation && !pack.state.is_timed_out();
    if settled && method == pack.method {
        return Ok(Json(api::Envelope::ok(edit_result(&pack, method))));
    }
    let now = st.clock.now();
    let input = Input::EditVerification {
        method,
        orders_remotely: st.config.acme.orders_remotely(pack.ca),
        dcv_target_suffix: st.config.dcv_suffix(&zone.id),
    };
    if method == pack.method {
        // Not coalesced: a check running now may have looked before the client's change.
        st.signals.supersede_check(&pack.id);
    }
    let (pack, _) = update_with(&st, &uri, pack, now, |_| Some(input.clone())).await?;
    let id = pack.id.clone();
    let watch = due_hosts(&pack, now).into_iter().collect();
    let view = wait_for_checks(&st, &uri, &zone.id, watch).await?;
    let pack = view
        .packs
        .iter()
        .find(|p| p.id == id)
        .ok_or_else(|| ApiError::unknown_object(uri.path()))?;
    Ok(Json(api::Envelope::ok(edit_result(pack, method))))
}

/// The answer of the verification PATCH: the pack's status and the method asked for.
fn edit_result(pack: &Pack, method: DcvMethod) -> api::EditVerificationResult {
    api::EditVerificationResult {
        status: Some(wire::pack_status(pack.state)),
        validation_method: Some(
            method
                .as_str()
                .parse()
                .unwrap_or(api::ValidationMethod::Txt),
        ),
    }
}

/// Applies the input `input` gives to `pack` and saves it (the model's transition,
/// through [`apply_transition`]): when a worker wrote the pack meanwhile (optimistic
/// concurrency: its check may have run a moment ago), the input is applied again to what
/// is now stored, so a client's edit is never refused for a background write. An input
/// that no longer applies answers the pack as it is.
async fn update_with(
    st: &AppState,
    uri: &Uri,
    pack: Pack,
    now: i64,
    input: impl FnMut(&Pack) -> Option<Input> + Send,
) -> Result<(Pack, Vec<Event>), ApiError> {
    let rules = st.config.transition_rules();
    match apply_transition(&st.store, pack, &rules, now, input).await? {
        Applied::Saved { pack, events } => {
            st.signals.wake();
            Ok((pack, events))
        }
        Applied::Unchanged(pack) => Ok((pack, Vec::new())),
        Applied::Refused(refusal) => Err(ApiError::wrong_state(refusal_message(refusal))),
        Applied::Gone => Err(ApiError::unknown_object(uri.path())),
        Applied::Contended => Err(ApiError::wrong_state(
            "the certificate pack kept changing while this request ran; try again",
        )),
    }
}

/// Why a request cannot change the pack, as the client reads it.
fn refusal_message(refusal: Refusal) -> String {
    match refusal {
        Refusal::MethodFixed { state, method } => format!(
            "the validation method of a pack in status {} cannot be changed (it is {}); it \
             can be changed while the pack is pending validation, or once its validation \
             timed out (the change then restarts it)",
            state.as_str(),
            method.as_str()
        ),
        Refusal::NotTimedOut { state } => format!(
            "only a timed-out pack (validation_timed_out, issuance_timed_out, \
             deployment_timed_out) can be restarted; this one is {}",
            state.as_str()
        ),
        Refusal::NotPendingValidation { state } => format!(
            "only a pack pending validation can be approved; this one is {}",
            state.as_str()
        ),
    }
}

/// Most hosts one `retry=true` makes due.
pub const MAX_RECHECKS_PER_REQUEST: usize = 50;

/// `retry=true`: makes the zone's pending hosts due now, wakes the workers and waits
/// (bounded) for their outcomes, so the answer reflects the check. The attempt counters
/// are not reset. Not an amplifier: retries coalesce with retries. For
/// `Config::retry_coalesce` (5 s) after a retry asked for a pack's checks, a later retry
/// makes due none of the hosts checked since and supersedes none of its checks: it waits
/// for those the first one asked for. A check the lifecycle ran on its own (the order's
/// first, most often, made before the client could publish its record) does not count:
/// once done, the next retry checks its hosts again; while running, it is waited for if
/// it began within those 5 s and asked for anew if it began earlier. At most
/// [`MAX_RECHECKS_PER_REQUEST`] hosts are made due, each a request's worth of the
/// caller's rate limit (with none left, the request answers with the state as it is).
///
/// Answers with the zone as it is then, from the store's read cache (exact: the writes
/// waited for are committed), not a read of the whole zone from the database.
async fn recheck(
    st: &AppState,
    uri: &Uri,
    view: &ZoneView,
    rate_key: Option<super::RateKey>,
) -> Result<Arc<ZoneView>, ApiError> {
    let zone = &view.zone.id;
    let packs = &view.packs;
    let now = st.clock.now();
    let window = i64::try_from(st.config.retry_coalesce.as_secs()).unwrap_or(i64::MAX);
    // A pack held by the brand check waits for an operator, not for a check.
    let pending = |p: &Pack| {
        p.state == PackState::PendingValidation
            && !p.brand_check
            && p.hosts.iter().any(|h| h.check.verified != Some(true))
    };
    // The second an earlier retry asked for the pack's checks, while it coalesces.
    let asked_at = |p: &Pack| st.signals.retry_asked_at(&p.id, now, window);
    let wanted: usize = packs
        .iter()
        .filter(|p| pending(p))
        .map(|p| p.recheckable_count(now, asked_at(p)))
        .sum::<usize>()
        .min(MAX_RECHECKS_PER_REQUEST);
    let mut budget = match (&st.limiter, rate_key) {
        (Some(limiter), Some(key)) if wanted > 0 => {
            limiter.take_up_to(key.0, wanted, std::time::Instant::now())
        }
        _ => wanted,
    };
    let mut watch = Vec::new();
    for pack in packs {
        if !pending(pack) {
            // A pack being issued right now is waited for too (see `due_hosts`).
            watch.extend(due_hosts(pack, now));
            continue;
        }
        let checked_since = asked_at(pack);
        // A check running now that began too long ago to answer this request (it may
        // have looked before the client published) is asked for anew, unless a retry of
        // the window asked for checks already (older ones were superseded then). One
        // that began within the window is waited for: a retry that it answers with a
        // failure asked for nothing, so the client's next retry is not coalesced.
        let running_since = st.signals.checks_running_since(&pack.id);
        let supersede = checked_since.is_none()
            && running_since.is_some_and(|since| now.saturating_sub(since) >= window);
        let mut asked = false;
        if supersede || (budget > 0 && pack.recheckable_count(now, checked_since) > 0) {
            if supersede {
                st.signals.supersede_check(&pack.id);
            }
            // A worker may have just checked (before the client published its record)
            // and scheduled the next check a minute out: `update_with` re-applies on
            // conflict.
            let input = Input::Recheck {
                checked_since,
                budget,
                supersede_running: supersede,
            };
            match update_with(st, uri, Pack::clone(pack), now, |_| Some(input.clone())).await {
                Ok((pack, events)) => {
                    // How many hosts the write made due (the running ones cost nothing:
                    // they were due already).
                    let made = events
                        .iter()
                        .map(|e| match e {
                            Event::RecheckRequested { hosts, .. } => *hosts,
                            _ => 0,
                        })
                        .sum::<usize>();
                    budget = budget.saturating_sub(made);
                    asked = made > 0 || supersede;
                    watch.extend(due_hosts(&pack, now));
                }
                Err(e) if e.status() == axum::http::StatusCode::NOT_FOUND => {}
                Err(e) => return Err(e),
            }
        } else {
            let due = due_hosts(pack, now);
            // Hosts due already and not being checked yet are checked after this
            // request: a retry right behind it is answered by that check too.
            asked = checked_since.is_none() && due.is_some() && running_since.is_none();
            watch.extend(due);
        }
        if asked {
            st.signals.retry_asked(&pack.id, now, window);
        }
    }
    if !watch.is_empty() {
        st.signals.wake();
    }
    wait_for_checks(st, uri, zone, watch).await
}

/// A pack's hosts a check is due for (not validated, due by `now`) with their attempt
/// counters, to wait for (a pack being issued: no hosts, the pack itself); none for a
/// pack that is neither pending nor being issued, or is held.
fn due_hosts(pack: &Pack, now: i64) -> Option<(PackId, Vec<(usize, u32)>)> {
    // Held packs are never claimed until approved: waiting for them would only wait out
    // the deadline.
    if pack.brand_check {
        return None;
    }
    match pack.state {
        PackState::PendingValidation => {}
        // Validated a moment ago (by a check that ran before this request asked for one,
        // say: an order wakes the workers too) and being issued now: waited for as well,
        // so the answer shows the outcome; not when a failure scheduled a later retry.
        PackState::PendingIssuance | PackState::PendingDeployment
            if pack.hosts.iter().all(|h| h.check.next_due_at <= now) =>
        {
            return Some((pack.id.clone(), Vec::new()));
        }
        _ => return None,
    }
    let hosts: Vec<(usize, u32)> = pack
        .hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.check.verified != Some(true) && h.check.next_due_at <= now)
        .map(|(i, h)| (i, h.check.attempts))
        .collect();
    (!hosts.is_empty()).then(|| (pack.id.clone(), hosts))
}

/// Waits until every host of `watch` has been checked once more (its attempt counter
/// moved or it validated), or the retry deadline passes; then answers with the zone's
/// packs as they are.
///
/// Cheap while it waits, whatever the lifecycle does meanwhile: it reads a watched pack
/// again only when the workers say that pack's step ended, and the whole zone once, at
/// the end. (Re-reading the zone at every step of any pack made a storm of 35 retries
/// per second at a zone of 100 pending packs raise other zones' p99 from 12 to 169 ms:
/// `bench/retry_storm.sh`.)
async fn wait_for_checks(
    st: &AppState,
    uri: &Uri,
    zone: &ZoneId,
    watch: Vec<(PackId, Vec<(usize, u32)>)>,
) -> Result<Arc<ZoneView>, ApiError> {
    // Before the first read: a step that ends after it is then heard of.
    let progress = st
        .signals
        .watch_progress(watch.iter().map(|(id, _)| id.clone()).collect());
    // A pack another server holds is checked there (this server's workers cannot claim
    // it before that lease ends): waiting for it would only wait out the deadline.
    let elsewhere = st
        .store
        .leased_elsewhere(
            zone,
            st.signals.lease_owner().as_deref(),
            crate::clock::Clock::now(&crate::clock::SystemClock),
        )
        .await?;
    let mut waiting: HashMap<PackId, Vec<(usize, u32)>> = watch
        .into_iter()
        .filter(|(id, _)| !elsewhere.contains(id))
        .collect();
    let deadline = tokio::time::sleep(st.config.retry_wait);
    tokio::pin!(deadline);
    // Settles the packs already checked since the caller looked, then again whenever one
    // of them moved (the notice does not say which: a zone has few packs).
    loop {
        let ids: Vec<PackId> = waiting.keys().cloned().collect();
        for id in &ids {
            settle(st, zone, id, &mut waiting).await?;
        }
        if waiting.is_empty() || !st.signals.workers_running() {
            break;
        }
        tokio::select! {
            () = progress.moved() => {}
            () = &mut deadline => break,
        }
    }
    // The writes waited for are committed (a step's notice follows its last write), and
    // the read cache is exact: it serves them.
    st.store
        .reads()
        .zone_with_packs(zone)
        .await?
        .ok_or_else(|| ApiError::unknown_object(uri.path()))
}

/// Reads pack `id` if `waiting` waits for it, and stops waiting for it once it is gone,
/// settled (active, timed out, ...) or waiting for a retry, or each of its watched hosts
/// was checked again while it is pending validation.
async fn settle(
    st: &AppState,
    zone: &ZoneId,
    id: &PackId,
    waiting: &mut HashMap<PackId, Vec<(usize, u32)>>,
) -> Result<(), ApiError> {
    let Some(hosts) = waiting.get(id) else {
        return Ok(());
    };
    let now = st.clock.now();
    let done = st
        .store
        .pack(zone, id)
        .await?
        .is_none_or(|p| match p.state {
            PackState::PendingValidation => hosts.iter().all(|(i, before)| {
                p.hosts
                    .get(*i)
                    .is_none_or(|h| h.check.verified == Some(true) || h.check.attempts > *before)
            }),
            // Validated by the check asked for (or a moment before): issuance and
            // deployment follow at once (milliseconds), so the answer waits for them too,
            // unless one failed and the pack waits for its retry (due later).
            PackState::PendingIssuance | PackState::PendingDeployment => {
                p.hosts.iter().any(|h| h.check.next_due_at > now)
            }
            _ => true,
        });
    if done {
        waiting.remove(id);
    }
    Ok(())
}

/// `POST /zones/{zone_id}/ssl/certificate_packs/order`
pub(super) async fn order_pack(
    State(st): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(zone_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<api::CertificatePack> {
    let (_, zone) = zone_access(&st, &caller, &uri, &zone_id, Need::WriteSsl).await?;
    let body = request::json_object(body, st.config.max_body_bytes, false)?;
    request::one_of(&body, "type", &["advanced"])?;
    let hosts = request::required_strings(&body, "hosts")?;
    let method = request::one_of(&body, "validation_method", &["txt", "http", "email"])?;
    let method = DcvMethod::parse(method)
        .ok_or_else(|| ApiError::invalid_field("validation_method", "unknown method"))?;
    let validity_days = request::required_u32(&body, "validity_days")?;
    let ca = request::one_of(
        &body,
        "certificate_authority",
        &["google", "lets_encrypt", "ssl_com"],
    )?;
    let ca = CaChoice::parse(ca)
        .ok_or_else(|| ApiError::invalid_field("certificate_authority", "unknown authority"))?;
    let branding = request::optional_bool(&body, "cloudflare_branding")?.unwrap_or(false);
    let hosts = check_order(&zone.name, &hosts, method, validity_days, ca)
        .map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    let mut pack = Pack::order(
        zone.id.clone(),
        hosts,
        method,
        validity_days,
        ca,
        branding,
        &st.config.dcv_suffix(&zone.id),
        st.clock.now(),
    );
    // An ACME CA's records are its challenges: the worker places the order first.
    if st.config.acme.orders_remotely(ca) {
        pack.await_order();
    }
    // High-risk names wait for an operator (`zonecert pack approve|reject ID`).
    pack.brand_check = st
        .config
        .brand_keyword(pack.hosts.iter().map(|h| h.hostname.as_str()))
        .is_some();
    st.store
        .insert_pack(&pack, st.config.quota_advanced)
        .await?;
    st.signals.wake();
    Ok(Json(api::Envelope::ok(wire::pack(&pack))))
}

/// `GET /zones/{zone_id}/ssl/certificate_packs`
pub(super) async fn list_packs(
    State(st): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(zone_id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Vec<api::CertificatePack>> {
    let (_, zone) = zone_access(&st, &caller, &uri, &zone_id, Need::ReadSsl).await?;
    let query = QueryParams::parse(query.as_deref())?;
    let page = query.number("page", 1, 1, u64::from(u32::MAX))?;
    let per_page = query.number("per_page", 20, 5, 50)?;
    let filter = match query.get("status") {
        None => PackFilter::Active,
        Some("all") => PackFilter::All,
        Some(other) => {
            return Err(ApiError::invalid_parameter(
                "status",
                format!("the only accepted value is all, got {other:?}"),
            ));
        }
    };
    if let Some(deploy) = query.get("deploy")
        && deploy != "production"
        && deploy != "staging"
    {
        return Err(ApiError::invalid_parameter(
            "deploy",
            format!("expected staging or production, got {deploy:?}"),
        ));
    }
    let offset = (page - 1).saturating_mul(per_page);
    let found = st
        .store
        .list_packs(&zone.id, filter, offset, per_page)
        .await?;
    let items: Vec<api::CertificatePack> = found.items.iter().map(wire::pack).collect();
    let mut envelope = api::Envelope::ok(items);
    envelope.result_info = Some(api::ResultInfo {
        page,
        per_page,
        count: envelope.result.as_ref().map_or(0, |r| r.len() as u64),
        total_count: found.total,
        total_pages: found.total.div_ceil(per_page),
    });
    Ok(Json(envelope))
}

/// `GET /zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}`
pub(super) async fn get_pack(
    State(st): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path((zone_id, pack_id)): Path<(String, String)>,
) -> ApiResult<api::CertificatePack> {
    let (_, zone) = zone_access(&st, &caller, &uri, &zone_id, Need::ReadSsl).await?;
    let pack = pack_of(&st, &uri, &zone, &pack_id).await?;
    Ok(Json(api::Envelope::ok(wire::pack(&pack))))
}

/// `PATCH /zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}`: sets branding,
/// and restarts a pack in any `*_timed_out` state: validation again, with fresh tokens.
pub(super) async fn edit_pack(
    State(st): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path((zone_id, pack_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<api::CertificatePack> {
    let (_, zone) = zone_access(&st, &caller, &uri, &zone_id, Need::WriteSsl).await?;
    let pack = pack_of(&st, &uri, &zone, &pack_id).await?;
    let body = request::json_object(body, st.config.max_body_bytes, true)?;
    let branding = request::optional_bool(&body, "cloudflare_branding")?;
    let now = st.clock.now();
    let input = Input::EditPack {
        cloudflare_branding: branding,
        orders_remotely: st.config.acme.orders_remotely(pack.ca),
        dcv_target_suffix: st.config.dcv_suffix(&zone.id),
    };
    let (pack, _) = update_with(&st, &uri, pack, now, |_| Some(input.clone())).await?;
    Ok(Json(api::Envelope::ok(wire::pack(&pack))))
}

/// `DELETE /zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}`
pub(super) async fn delete_pack(
    State(st): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path((zone_id, pack_id)): Path<(String, String)>,
) -> ApiResult<api::DeletedCertificatePack> {
    let (_, zone) = zone_access(&st, &caller, &uri, &zone_id, Need::WriteSsl).await?;
    let pack = pack_of(&st, &uri, &zone, &pack_id).await?;
    let deleted = crate::webhooks::events::deleted(&pack, st.clock.now());
    if !st
        .store
        .delete_pack_with_events(&zone.id, &pack.id, &[deleted])
        .await?
    {
        return Err(ApiError::unknown_object(uri.path()));
    }
    super::remove_deployments(&st, std::slice::from_ref(&pack.id)).await;
    super::revoke_deleted(&st, std::slice::from_ref(&pack));
    Ok(Json(api::Envelope::ok(api::DeletedCertificatePack {
        id: pack.id.to_string(),
    })))
}

/// `GET /zones/{zone_id}/ssl/certificate_packs/quota`
pub(super) async fn quota(
    State(st): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(zone_id): Path<String>,
) -> ApiResult<api::CertificatePackQuota> {
    let (_, zone) = zone_access(&st, &caller, &uri, &zone_id, Need::ReadSsl).await?;
    let used = st.store.count_packs(&zone.id).await?;
    Ok(Json(api::Envelope::ok(api::CertificatePackQuota {
        advanced: Some(api::Quota {
            allocated: Some(st.config.quota_advanced),
            used: Some(used),
        }),
    })))
}
