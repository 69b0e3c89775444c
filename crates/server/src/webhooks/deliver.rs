//! The delivery worker: its own thread and runtime (never the lifecycle's or the
//! requests'), one task per endpoint with its own bound on deliveries in flight, so a
//! slow or dead endpoint holds only its own slots; outcomes are recorded in batches by
//! one recorder task.
//!
//! At least once: a delivery is claimed under a lease, POSTed, and only then recorded;
//! a crash in between delivers it again once the lease runs out (same `webhook-id`).
//! Failures are retried with exponential backoff and jitter for 24 hours, then marked
//! failed.

use super::sign;
use super::target::{PublicOnly, check_url};
use crate::lifecycle::Signals;
use crate::metrics::WebhookOutcome;
use crate::store::{
    Delivery, DeliveryClaim, DeliveryOutcome, DeliveryResult, Store, WebhookEndpoint, wall_ms,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// The worker's settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Deliveries in flight per endpoint.
    pub per_endpoint: usize,
    /// One attempt's limit (connect, send, answer).
    pub timeout: Duration,
    /// Retries stop this long after the event was written.
    pub give_up_after: Duration,
    /// The first retry's delay; each next one doubles, up to [`DeliveryConfig::max_delay`].
    pub first_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
    /// How often an idle endpoint looks for due deliveries, and the endpoints are read.
    pub poll: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            per_endpoint: 16,
            timeout: Duration::from_secs(10),
            give_up_after: Duration::from_secs(24 * 3600),
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3600),
            poll: Duration::from_millis(200),
        }
    }
}

impl DeliveryConfig {
    /// The operator's settings (`--webhook-timeout`, `--webhook-concurrency`,
    /// `--webhook-retry-for`, `--webhook-max-backoff`) over the defaults.
    pub fn from_config(config: &crate::config::Config) -> Self {
        DeliveryConfig {
            per_endpoint: config.webhook_concurrency.max(1),
            timeout: config.webhook_timeout,
            give_up_after: config.webhook_retry_for,
            max_delay: config.webhook_max_backoff,
            ..DeliveryConfig::default()
        }
    }
}

/// A running delivery worker; stopping it (or dropping the token's source) ends it.
#[derive(Debug)]
pub struct DeliveryHandle {
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeliveryHandle {
    /// Stops the worker and waits for its thread (attempts in flight are dropped; their
    /// leases run out and they are delivered again).
    pub fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DeliveryHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts the delivery worker on its own thread; `owner` names this node's leases.
pub fn start(
    store: Store,
    owner: String,
    config: DeliveryConfig,
    signals: Arc<Signals>,
    cancel: CancellationToken,
) -> std::io::Result<DeliveryHandle> {
    let stop = cancel.clone();
    let thread = std::thread::Builder::new()
        .name("zonecert-webhooks".into())
        .spawn(move || {
            // Background work, as the lifecycle's: nobody waits on one delivery, and
            // a burst of them (every endpoint, every event) must not take the CPUs a
            // request wakes up on (lower priority, the lifecycle's CPUs, once the
            // program installed `sched`'s placement).
            crate::sched::background_thread();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "webhooks: no runtime; nothing is delivered");
                    return;
                }
            };
            runtime.block_on(run(store, owner, config, signals, stop));
        })?;
    Ok(DeliveryHandle {
        cancel,
        thread: Some(thread),
    })
}

/// The worker: reads the endpoints every `poll`, runs one task per endpoint.
async fn run(
    store: Store,
    owner: String,
    config: DeliveryConfig,
    signals: Arc<Signals>,
    cancel: CancellationToken,
) {
    let clients = match Clients::new(&config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "webhooks: no HTTP client; nothing is delivered");
            return;
        }
    };
    let (results_tx, results_rx) = mpsc::unbounded_channel();
    let recorder = tokio::spawn(record(store.clone(), owner.clone(), signals, results_rx));
    let owner: Arc<str> = owner.into();
    let mut tasks: HashMap<String, (WebhookEndpoint, CancellationToken)> = HashMap::new();
    loop {
        match store.webhook_endpoints().await {
            Ok(endpoints) => {
                tasks.retain(|id, (old, stop)| {
                    let keep = endpoints.iter().any(|e| &e.id == id && e == old);
                    if !keep {
                        stop.cancel();
                    }
                    keep
                });
                for e in endpoints {
                    if tasks.contains_key(&e.id) {
                        continue;
                    }
                    let stop = cancel.child_token();
                    tokio::spawn(endpoint_task(
                        store.clone(),
                        owner.clone(),
                        e.clone(),
                        clients.clone(),
                        config.clone(),
                        results_tx.clone(),
                        stop.clone(),
                    ));
                    tasks.insert(e.id.clone(), (e, stop));
                }
            }
            Err(e) => tracing::warn!(error = %e, "webhooks: reading the endpoints failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(config.poll.max(Duration::from_millis(500))) => {}
        }
    }
    drop(results_tx);
    for (_, (_, stop)) in tasks {
        stop.cancel();
    }
    let _ = recorder.await;
}

/// The two HTTP clients: public addresses only, and any address (endpoints that allow
/// private ones). No redirects: a 3xx is a failed delivery.
struct Clients {
    public: reqwest::Client,
    any: reqwest::Client,
}

impl Clients {
    fn new(config: &DeliveryConfig) -> reqwest::Result<Clients> {
        let builder = || {
            reqwest::Client::builder()
                .timeout(config.timeout)
                .connect_timeout(config.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("zonecert-webhooks/", env!("CARGO_PKG_VERSION")))
                .pool_max_idle_per_host(config.per_endpoint)
        };
        Ok(Clients {
            public: builder().dns_resolver(Arc::new(PublicOnly)).build()?,
            any: builder().build()?,
        })
    }
}

/// One endpoint's loop: claims as many due deliveries as it has free slots, sends each
/// in its own task.
async fn endpoint_task(
    store: Store,
    owner: Arc<str>,
    endpoint: WebhookEndpoint,
    clients: Arc<Clients>,
    config: DeliveryConfig,
    results: mpsc::UnboundedSender<DeliveryResult>,
    stop: CancellationToken,
) {
    let key = match sign::secret_key(&endpoint.secret) {
        Ok(k) => Arc::new(k),
        Err(e) => {
            tracing::error!(endpoint = %endpoint.id, error = %e, "webhooks: the endpoint's secret is unusable");
            return;
        }
    };
    let client = if endpoint.allow_private {
        clients.any.clone()
    } else {
        clients.public.clone()
    };
    let slots = Arc::new(Semaphore::new(config.per_endpoint.max(1)));
    // A claimed delivery stays leased while it waits for a slot, its attempt and the
    // recording of its outcome.
    let lease_ms = i64::try_from((config.timeout * 3 + Duration::from_secs(30)).as_millis())
        .unwrap_or(i64::MAX / 4);
    let endpoint = Arc::new(endpoint);
    loop {
        // A free slot first: while every slot is taken, the task waits for one to be
        // given back rather than sleeping (a sleep of `poll` here held each endpoint to
        // `per_endpoint` deliveries per `poll`).
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let free = slots.available_permits() + 1;
        let mut first = Some(first);
        let mut claimed = 0;
        let claim = DeliveryClaim {
            owner: &owner,
            endpoint_id: &endpoint.id,
            now_ms: wall_ms(),
            lease_ms,
            limit: free as u64,
        };
        match store.claim_deliveries(&claim).await {
            Ok(due) => {
                claimed = due.len();
                for d in due {
                    let permit = match first.take() {
                        Some(p) => p,
                        // Free: only this task takes the endpoint's slots.
                        None => match slots.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    };
                    let (client, key, endpoint, config, results) = (
                        client.clone(),
                        key.clone(),
                        endpoint.clone(),
                        config.clone(),
                        results.clone(),
                    );
                    tokio::spawn(async move {
                        let outcome = attempt(&client, &endpoint, &key, &d, &config).await;
                        // Until the outcome is recorded the delivery stays pending and
                        // leased: no claim takes it, nor the pack's next event.
                        let _ = results.send(DeliveryResult {
                            event_seq: d.event_seq,
                            endpoint_id: d.endpoint_id,
                            outcome,
                        });
                        drop(permit);
                    });
                }
            }
            Err(e) => {
                tracing::warn!(endpoint = %endpoint.id, error = %e, "webhooks: claiming deliveries failed")
            }
        }
        drop(first);
        // Every slot filled: the next turn waits for one. Fewer due than free slots: the
        // rest are not due yet, or wait for their pack's previous event to be recorded.
        let pause = if claimed == free {
            Duration::ZERO
        } else if claimed > 0 {
            Duration::from_millis(5)
        } else {
            config.poll
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// One attempt: POST the body, signed; 2xx is delivered.
async fn attempt(
    client: &reqwest::Client,
    endpoint: &WebhookEndpoint,
    key: &[u8],
    d: &Delivery,
    config: &DeliveryConfig,
) -> DeliveryOutcome {
    let sent = send(client, endpoint, key, &d.event_id, d.payload.as_bytes()).await;
    let error = match sent {
        Ok(()) => return DeliveryOutcome::Delivered,
        Err(e) => e,
    };
    let now = wall_ms();
    let give_up = i64::try_from(config.give_up_after.as_millis()).unwrap_or(i64::MAX);
    if now.saturating_sub(d.created_ms) >= give_up {
        tracing::warn!(endpoint = %endpoint.id, event = %d.event_id, error = %error, "webhooks: delivery failed for good");
        return DeliveryOutcome::Failed { error };
    }
    DeliveryOutcome::Retry {
        at_ms: now.saturating_add(backoff_ms(d.attempts, config)),
        error,
    }
}

/// Sends one signed message; `Err` says why it was not delivered.
pub async fn send(
    client: &reqwest::Client,
    endpoint: &WebhookEndpoint,
    key: &[u8],
    id: &str,
    body: &[u8],
) -> Result<(), String> {
    // Checked on every attempt: the rules may have changed since the endpoint was added.
    let url = check_url(&endpoint.url, endpoint.allow_private)?;
    let timestamp = wall_ms() / 1000;
    let signature = sign::signature(key, id, timestamp, body);
    let answer = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = answer.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the endpoint answered {status}"))
    }
}

/// An error with its sources (reqwest's own message is often just "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The delay after `attempts` earlier failures: the first delay doubled per attempt, up
/// to the maximum, times a random factor in [0.5, 1.5) (jitter, so endpoints coming back
/// are not hit by every retry at once).
pub fn backoff_ms(attempts: u32, config: &DeliveryConfig) -> i64 {
    let base = config
        .first_delay
        .saturating_mul(1u32 << attempts.min(20))
        .min(config.max_delay);
    let jitter = 0.5 + rand::random::<f64>();
    (base.as_secs_f64() * jitter * 1000.0) as i64
}

/// Records outcomes in batches (one transaction each), counting each attempt's outcome
/// in the server's metrics.
async fn record(
    store: Store,
    owner: String,
    signals: Arc<Signals>,
    mut rx: mpsc::UnboundedReceiver<DeliveryResult>,
) {
    let mut batch = Vec::with_capacity(512);
    while rx.recv_many(&mut batch, 512).await > 0 {
        for result in &batch {
            signals.metrics().webhook_delivery(match result.outcome {
                DeliveryOutcome::Delivered => WebhookOutcome::Delivered,
                DeliveryOutcome::Retry { .. } => WebhookOutcome::Retrying,
                DeliveryOutcome::Failed { .. } => WebhookOutcome::Failed,
            });
        }
        if let Err(e) = store.record_deliveries(&owner, &batch).await {
            // The leases run out and the deliveries are attempted again.
            tracing::warn!(error = %e, deliveries = batch.len(), "webhooks: recording outcomes failed");
        }
        batch.clear();
    }
}

/// Sends a signed `webhook.test` event to `endpoint` now (`zonecert webhook test`):
/// its message id, and whether and why not it was delivered.
pub async fn send_test(endpoint: &WebhookEndpoint, now: i64) -> (String, Result<(), String>) {
    let id = super::events::message_id();
    let body = serde_json::json!({
        "type": super::events::TEST,
        "timestamp": super::events::rfc3339(now),
        "data": {"endpoint_id": endpoint.id},
    })
    .to_string();
    let sent = async {
        let key = sign::secret_key(&endpoint.secret)?;
        let clients = Clients::new(&DeliveryConfig::default()).map_err(|e| e.to_string())?;
        let client = if endpoint.allow_private {
            clients.any
        } else {
            clients.public
        };
        send(&client, endpoint, &key, &id, body.as_bytes()).await
    }
    .await;
    (id, sent)
}
