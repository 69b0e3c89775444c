//! Prometheus metrics: what the server counts, and its rendering in the Prometheus text
//! format (version 0.0.4) for `GET /metrics`.
//!
//! One [`Metrics`] per server (not a process-global recorder: tests run many servers in
//! one process and each counts its own), reached by both sides through
//! [`Signals::metrics`](crate::lifecycle::Signals::metrics). Counters and histograms are
//! moved where things happen (a request answered, a DCV check done, a certificate issued,
//! a webhook delivered); the gauges that describe what is stored (packs by status,
//! certificate expiry, the lifecycle's due work, the revocation queue) are read from
//! the store when scraped ([`Metrics::refresh`]), so they cost nothing between scrapes.
//!
//! Every recording method is a no-op when the metrics are off (`--metrics false`).
//!
//! For the webhook deliveries: call [`Metrics::webhook_delivery`] once per delivery
//! attempt's outcome.

use crate::model::{CaChoice, DcvMethod, PackState};
use crate::store::MonitoringSnapshot;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

/// The metrics' settings (part of [`Config`](crate::config::Config)).
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsConfig {
    /// Keep Prometheus metrics and serve them at `GET /metrics` (on the API listener to
    /// credentials not limited to some zones; without authentication on
    /// `--metrics-listen`).
    #[arg(long = "metrics", env = "ZONECERT_METRICS", default_value = "true",
          action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// A second listener serving only `/metrics`, without authentication (keep it on a
    /// private address); the API listener serves it too.
    #[arg(long, env = "ZONECERT_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Count packs per zone as well as per status (a `zone` label: one series per zone
    /// and status, so off by default).
    #[arg(long, env = "ZONECERT_METRICS_PER_ZONE")]
    pub metrics_per_zone: bool,
}

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The outcome of one webhook delivery attempt, the `outcome` label of
/// `zonecert_webhook_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookOutcome {
    /// The endpoint answered 2xx.
    Delivered,
    /// The attempt failed (an error status, a timeout, a refused connection); another
    /// attempt is scheduled.
    Retrying,
    /// The attempts ran out (24 h): the delivery is marked failed.
    Failed,
}

impl WebhookOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Delivered => "delivered",
            WebhookOutcome::Retrying => "retrying",
            WebhookOutcome::Failed => "failed",
        }
    }
}

/// The outcome of one DCV or CAA check, the `outcome` label of `zonecert_dcv_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckOutcome {
    /// The record was found (CAA: allows the CA).
    Passed,
    /// It was not (CAA: forbids the CA), or the lookup failed.
    Failed,
    /// An e-mail host, waiting for an operator.
    AwaitingApproval,
}

impl CheckOutcome {
    fn as_str(self) -> &'static str {
        match self {
            CheckOutcome::Passed => "passed",
            CheckOutcome::Failed => "failed",
            CheckOutcome::AwaitingApproval => "awaiting_approval",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Cow<'static, str>,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Cow<'static, str>,
    method: &'static str,
}

/// `status`, and `zone` when counted per zone (absent, not empty, when not).
type PackLabels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CaLabels {
    ca: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WithinLabels {
    within: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

fn check_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// The request metrics of one known route and method: the families' own counters and
/// histogram (shared with them, not copies), found by index. Through the families, every
/// request hashed its labels twice under their locks (`Family::get_or_create`, 1,050
/// instructions of a GET verification's 48,000, callgrind).
#[derive(Debug, Default)]
struct RequestSlot {
    /// The duration histogram.
    duration: OnceLock<Histogram>,
    /// The counters by status, in the order first seen (a route answers a few).
    by_status: RwLock<Vec<(u16, Counter)>>,
}

/// A server's metrics.
#[derive(Debug)]
pub struct Metrics {
    enabled: bool,
    per_zone: bool,
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    /// The request metrics' handles of the known routes, by route ([`ROUTES`]) and
    /// method ([`METHODS`]).
    request_slots: Vec<RequestSlot>,
    rate_limited: Counter,
    packs: Family<PackLabels, Gauge>,
    dcv_checks: Family<CheckLabels, Counter>,
    dcv_duration: HistogramFamily<MethodLabels>,
    issuances: Family<CaLabels, Counter>,
    issuance_failures: Family<CaLabels, Counter>,
    deployments: Family<OutcomeLabels, Counter>,
    hook_failures: Counter,
    earliest_expiry: Gauge,
    certificates: Gauge,
    expiring: Family<WithinLabels, Gauge>,
    due: Gauge,
    revocations_queued: Gauge,
    lease_renewals: Family<OutcomeLabels, Counter>,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    store_up: Gauge,
    /// One scrape at a time: a scrape clears and refills the stored gauges.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(true, false)
    }
}

impl Metrics {
    /// The metrics of a server; `enabled` false makes every recording a no-op (and the
    /// server offers no `/metrics`); `per_zone` adds a `zone` label to the packs gauge.
    pub fn new(enabled: bool, per_zone: bool) -> Self {
        let mut registry = Registry::with_prefix("zonecert");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(request_buckets);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's head to its response, by route template and method",
            http_duration.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "http_rate_limited",
            "Requests refused by the rate limits (429)",
            rate_limited.clone(),
        );
        let packs = Family::<PackLabels, Gauge>::default();
        registry.register(
            "packs",
            "Certificate packs stored, by status (and zone with --metrics-per-zone)",
            packs.clone(),
        );
        let dcv_checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "dcv_checks",
            "DCV and CAA checks, by method (txt, http, cname, email, caa) and outcome",
            dcv_checks.clone(),
        );
        let dcv_duration: HistogramFamily<MethodLabels> =
            Family::new_with_constructor(check_buckets);
        registry.register(
            "dcv_check_duration_seconds",
            "Time one DCV or CAA check took, by method",
            dcv_duration.clone(),
        );
        let issuances = Family::<CaLabels, Counter>::default();
        registry.register(
            "issuances",
            "Certificates issued, by certificate authority",
            issuances.clone(),
        );
        let issuance_failures = Family::<CaLabels, Counter>::default();
        registry.register(
            "issuance_failures",
            "Failed issuances (CA refusals, unreachable CAs, local failures), by certificate authority",
            issuance_failures.clone(),
        );
        let deployments = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "deployments",
            "Certificate deployments (files written, hook run), by outcome",
            deployments.clone(),
        );
        let hook_failures = Counter::default();
        registry.register(
            "deploy_hook_failures",
            "Deployments whose deploy hook failed",
            hook_failures.clone(),
        );
        let earliest_expiry = Gauge::default();
        registry.register(
            "certificate_earliest_expiry_timestamp_seconds",
            "The earliest not_after of an active pack's certificate (Unix seconds; 0: none)",
            earliest_expiry.clone(),
        );
        let certificates = Gauge::default();
        registry.register(
            "certificates_active",
            "Active packs with a certificate",
            certificates.clone(),
        );
        let expiring = Family::<WithinLabels, Gauge>::default();
        registry.register(
            "certificates_expiring",
            "Active packs whose certificate expires within 7 or 30 days",
            expiring.clone(),
        );
        let due = Gauge::default();
        registry.register(
            "lifecycle_due_packs",
            "Packs with work due now that no worker holds (the lifecycle's queue)",
            due.clone(),
        );
        let revocations_queued = Gauge::default();
        registry.register(
            "revocations_queued",
            "Certificates of deleted packs waiting in the revocation queue \
             (--acme-revoke-on-delete)",
            revocations_queued.clone(),
        );
        let lease_renewals = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "lifecycle_lease_renewals",
            "Renewals of this node's leases on the packs in hand, by outcome",
            lease_renewals.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered, retrying, failed)",
            webhook_deliveries.clone(),
        );
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "pack_transitions",
            "Pack status changes made by this node's lifecycle, by from and to status",
            transitions.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "store_up",
            "Whether the last scrape could read the store (1) or not (0)",
            store_up.clone(),
        );
        Metrics {
            enabled,
            per_zone,
            registry,
            http_requests,
            http_duration,
            request_slots: (0..ROUTES.len() * METHODS.len())
                .map(|_| RequestSlot::default())
                .collect(),
            rate_limited,
            packs,
            dcv_checks,
            dcv_duration,
            issuances,
            issuance_failures,
            deployments,
            hook_failures,
            earliest_expiry,
            certificates,
            expiring,
            due,
            revocations_queued,
            lease_renewals,
            webhook_deliveries,
            transitions,
            store_up,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether the metrics are kept (and served).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the packs gauge carries a `zone` label.
    pub fn per_zone(&self) -> bool {
        self.per_zone
    }

    /// One webhook delivery attempt ended with `outcome`.
    pub fn webhook_delivery(&self, outcome: WebhookOutcome) {
        if self.enabled {
            self.webhook_deliveries
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .inc();
        }
    }

    /// A request was answered: `route` is its route (template `/client/v4/zones/{zone_id}
    /// /ssl/verification`, labelled `.../:zone_id/...`; `unmatched` when none matched).
    pub fn request(&self, route: &RouteLabel, method: &http::Method, status: u16, took: Duration) {
        if !self.enabled {
            return;
        }
        let Some(index) = route.known else {
            // A route [`ROUTES`] does not list (the test controls'): through the
            // families.
            let route = route.label.clone();
            let method = method_label(method);
            self.http_requests
                .get_or_create(&RequestLabels {
                    route: route.clone(),
                    method,
                    status,
                })
                .inc();
            self.http_duration
                .get_or_create(&RouteLabels { route, method })
                .observe(took.as_secs_f64());
            return;
        };
        let route = ROUTES[index].1;
        let method_index = method_index(method);
        let method = METHODS[method_index];
        let slot = &self.request_slots[index * METHODS.len() + method_index];
        let counted = slot
            .by_status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, counter)| counter.inc())
            .is_some();
        if !counted {
            let counter = self
                .http_requests
                .get_or_create(&RequestLabels {
                    route: Cow::Borrowed(route),
                    method,
                    status,
                })
                .clone();
            counter.inc();
            let mut by_status = slot.by_status.write().unwrap_or_else(|e| e.into_inner());
            if !by_status.iter().any(|(s, _)| *s == status) {
                by_status.push((status, counter));
            }
        }
        slot.duration
            .get_or_init(|| {
                self.http_duration
                    .get_or_create(&RouteLabels {
                        route: Cow::Borrowed(route),
                        method,
                    })
                    .clone()
            })
            .observe(took.as_secs_f64());
    }

    /// A request was refused by the rate limits.
    pub fn rate_limited(&self) {
        if self.enabled {
            self.rate_limited.inc();
        }
    }

    /// A DCV check of `method` ended with `outcome` after `took` (`None`: not timed, an
    /// outcome the test controls stood in for).
    pub fn dcv_check(&self, method: DcvMethod, outcome: CheckOutcome, took: Option<Duration>) {
        self.check(method.as_str(), outcome, took);
    }

    /// A CAA check (every host of a pack) ended with `outcome` after `took`.
    pub fn caa_check(&self, outcome: CheckOutcome, took: Option<Duration>) {
        self.check("caa", outcome, took);
    }

    fn check(&self, method: &'static str, outcome: CheckOutcome, took: Option<Duration>) {
        if !self.enabled {
            return;
        }
        self.dcv_checks
            .get_or_create(&CheckLabels {
                method,
                outcome: outcome.as_str(),
            })
            .inc();
        if let Some(took) = took {
            self.dcv_duration
                .get_or_create(&MethodLabels { method })
                .observe(took.as_secs_f64());
        }
    }

    /// A certificate was issued by `ca`.
    pub fn issued(&self, ca: CaChoice) {
        if self.enabled {
            self.issuances
                .get_or_create(&CaLabels { ca: ca.as_str() })
                .inc();
        }
    }

    /// An issuance by `ca` failed.
    pub fn issuance_failed(&self, ca: CaChoice) {
        if self.enabled {
            self.issuance_failures
                .get_or_create(&CaLabels { ca: ca.as_str() })
                .inc();
        }
    }

    /// A deployment ended: `Ok` deployed, `Err(hook)` failed (`hook`: its hook failed).
    pub fn deployment(&self, outcome: Result<(), bool>) {
        if !self.enabled {
            return;
        }
        let label = if outcome.is_ok() {
            "deployed"
        } else {
            "failed"
        };
        self.deployments
            .get_or_create(&OutcomeLabels { outcome: label })
            .inc();
        if outcome == Err(true) {
            self.hook_failures.inc();
        }
    }

    /// The lifecycle's store thread renewed its leases (`ok`) or failed to.
    pub fn lease_renewal(&self, ok: bool) {
        if self.enabled {
            let outcome = if ok { "renewed" } else { "failed" };
            self.lease_renewals
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        }
    }

    /// A pack moved from `from` to `to` (counted when they differ).
    pub fn transition(&self, from: PackState, to: PackState) {
        if self.enabled && from != to {
            self.transitions
                .get_or_create(&TransitionLabels {
                    from: from.as_str(),
                    to: to.as_str(),
                })
                .inc();
        }
    }

    /// Refreshes the gauges read from the store with `snapshot` (`None`: the store could
    /// not be read; they keep their last values and `zonecert_store_up` says 0), then
    /// renders every metric in the Prometheus text format.
    pub async fn render(&self, snapshot: Option<MonitoringSnapshot>) -> String {
        let _one = self.scrape.lock().await;
        match snapshot {
            Some(snapshot) => {
                self.store_up.set(1);
                self.packs.clear();
                for count in snapshot.packs {
                    let mut labels: PackLabels = vec![("status", count.status)];
                    if let Some(zone) = count.zone {
                        labels.push(("zone", zone));
                    }
                    self.packs
                        .get_or_create(&labels)
                        .set(i64::try_from(count.count).unwrap_or(i64::MAX));
                }
                self.earliest_expiry
                    .set(snapshot.earliest_expiry.unwrap_or(0));
                self.certificates.set(gauge(snapshot.active));
                self.expiring
                    .get_or_create(&WithinLabels { within: "7d" })
                    .set(gauge(snapshot.expiring_7d));
                self.expiring
                    .get_or_create(&WithinLabels { within: "30d" })
                    .set(gauge(snapshot.expiring_30d));
                self.due.set(gauge(snapshot.due_now));
                self.revocations_queued
                    .set(gauge(snapshot.revocations_queued));
            }
            None => {
                self.store_up.set(0);
            }
        }
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The route templates the router serves and their label values, so the common label
/// values are not allocated per request (any other is, once per request). A parameter is
/// written `:name` in the label rather than `{name}`: some text-format parsers cut label
/// values at a brace.
const ROUTES: &[(&str, &str)] = &[
    (
        "/client/v4/zones/{zone_id}/ssl/verification",
        "/client/v4/zones/:zone_id/ssl/verification",
    ),
    (
        "/client/v4/zones/{zone_id}/ssl/verification/{certificate_pack_id}",
        "/client/v4/zones/:zone_id/ssl/verification/:certificate_pack_id",
    ),
    (
        "/client/v4/zones/{zone_id}/ssl/certificate_packs",
        "/client/v4/zones/:zone_id/ssl/certificate_packs",
    ),
    (
        "/client/v4/zones/{zone_id}/ssl/certificate_packs/order",
        "/client/v4/zones/:zone_id/ssl/certificate_packs/order",
    ),
    (
        "/client/v4/zones/{zone_id}/ssl/certificate_packs/quota",
        "/client/v4/zones/:zone_id/ssl/certificate_packs/quota",
    ),
    (
        "/client/v4/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}",
        "/client/v4/zones/:zone_id/ssl/certificate_packs/:certificate_pack_id",
    ),
    ("/client/v4/zones", "/client/v4/zones"),
    ("/client/v4/zones/{zone_id}", "/client/v4/zones/:zone_id"),
    (
        "/client/v4/user/tokens/verify",
        "/client/v4/user/tokens/verify",
    ),
    ("/client/v4/openapi.json", "/client/v4/openapi.json"),
    ("/healthz", "/healthz"),
    ("/readyz", "/readyz"),
    ("/metrics", "/metrics"),
    ("unmatched", "unmatched"),
];

/// A route template with its place in [`ROUTES`] and its label, found once, when the
/// router is built: comparing the template with each of `ROUTES` on every request was
/// about 0.4 % of a GET verification's CPU (`memcmp`, `perf record` under
/// `bench/verification.sh`'s load).
#[derive(Debug, Clone)]
pub struct RouteLabel {
    template: String,
    known: Option<usize>,
    label: Cow<'static, str>,
}

impl RouteLabel {
    /// The label of the route `template` (`unmatched`: of requests no route matched).
    pub fn new(template: &str) -> RouteLabel {
        let known = ROUTES.iter().position(|(t, _)| *t == template);
        let label = match known {
            Some(i) => Cow::Borrowed(ROUTES[i].1),
            None => Cow::Owned(template.replace('{', ":").replace('}', "")),
        };
        RouteLabel {
            template: template.to_owned(),
            known,
            label,
        }
    }

    /// The route's template.
    pub fn template(&self) -> &str {
        &self.template
    }
}

/// The method labels, [`method_index`]'s order.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
];

fn method_index(method: &http::Method) -> usize {
    use http::Method;
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

fn method_label(method: &http::Method) -> &'static str {
    METHODS[method_index(method)]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_counters_with_their_labels_and_nothing_when_off() {
        let metrics = Metrics::new(true, false);
        metrics.webhook_delivery(WebhookOutcome::Delivered);
        metrics.webhook_delivery(WebhookOutcome::Delivered);
        metrics.webhook_delivery(WebhookOutcome::Failed);
        metrics.request(
            &RouteLabel::new("/client/v4/zones/{zone_id}/ssl/verification"),
            &http::Method::GET,
            200,
            Duration::from_micros(300),
        );
        let text = metrics.render(None).await;
        assert!(
            text.contains("zonecert_webhook_deliveries_total{outcome=\"delivered\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("zonecert_webhook_deliveries_total{outcome=\"failed\"} 1\n"));
        assert!(text.contains(
            "zonecert_http_requests_total{route=\"/client/v4/zones/:zone_id/ssl/verification\",method=\"GET\",status=\"200\"} 1\n"
        ));
        assert!(text.contains("zonecert_store_up 0\n"));

        // A route the table does not list (the test controls') is labelled from its
        // template.
        metrics.request(
            &RouteLabel::new("/controls/faults/{fault_id}"),
            &http::Method::DELETE,
            200,
            Duration::from_micros(300),
        );
        let text = metrics.render(None).await;
        assert!(text.contains(
            "zonecert_http_requests_total{route=\"/controls/faults/:fault_id\",method=\"DELETE\",status=\"200\"} 1\n"
        ), "{text}");

        let off = Metrics::new(false, false);
        off.webhook_delivery(WebhookOutcome::Delivered);
        assert!(!off.render(None).await.contains("webhook_deliveries_total{"));
    }
}
