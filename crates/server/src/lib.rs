//! The zonecert server: Cloudflare's SSL verification and certificate-pack API over a
//! real certificate lifecycle.
//!
//! The binary is a shim: it reads configuration, binds a listener and calls
//! [`App::open`] then [`App::serve`]; tests call the same functions on port 0.
//!
//! Data flows one way. Requests: `http` -> `model` rules -> `store`. Background work:
//! `lifecycle` -> DCV checks and issuance -> `store`. The two sides meet only in the
//! store and through [`lifecycle::Signals`].

pub mod admin;
pub mod clock;
pub mod config;
pub mod controls;
pub mod dcv;
pub mod deploy_sync;
pub mod dns_responder;
pub mod http;
pub mod issuance;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod sched;
pub mod secrets;
pub mod store;
pub mod webhooks;

use clock::SharedClock;
use config::Config;
use std::future::Future;
use std::sync::Arc;
use store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A server ready to serve: its store opened and its state built.
#[derive(Debug)]
pub struct App {
    state: http::AppState,
    /// `--metrics-listen`'s listener, served by [`App::serve`] beside the API.
    metrics_listener: Option<TcpListener>,
}

impl App {
    /// Opens the database named by `config`, checks the built-in CA if the data
    /// directory has one (a partial or mismatched CA stops the start, whether or not the
    /// lifecycle runs), and prepares the server.
    pub async fn open(config: Config, clock: SharedClock) -> Result<App, OpenError> {
        let store = match &config.database {
            Some(url) => {
                Store::open_url_with(url, usize::from(config.database_pool), config.migrate)?
            }
            None => Store::open_sqlite_with(&config.data_dir, config.migrate)?,
        };
        // Loaded only to be checked; the lifecycle loads it again when it starts (and
        // creates it then if there is none).
        let data_dir = config.data_dir.clone();
        tokio::task::spawn_blocking(move || issuance::BuiltinCa::load_existing(&data_dir))
            .await
            .map_err(issuance::IssuanceError::from)??;
        config
            .check_test_controls()
            .map_err(|e| StoreError::Unsupported(e.to_string()))?;
        let signals = Arc::new(lifecycle::Signals::with_metrics(metrics::Metrics::new(
            config.metrics.enabled,
            config.metrics.metrics_per_zone,
        )));
        let kek = config.load_kek(matches!(store, Store::Postgres(_)))?;
        signals.set_kek(Arc::new(kek));
        // Under the test controls the whole server (requests, lifecycle, CA) reads the
        // travelling clock, at the offset the database kept.
        // (SQLite only: on PostgreSQL, `--dev` runs without them and `--test-controls`
        // is refused.)
        let postgres = matches!(store, Store::Postgres(_));
        if postgres && config.test_controls {
            return Err(StoreError::Unsupported(
                "--test-controls needs the embedded SQLite database; PostgreSQL does not offer \
                 the test controls yet"
                    .into(),
            )
            .into());
        }
        let (clock, controls) = if config.test_controls_enabled() && !postgres {
            let controls =
                Arc::new(controls::Controls::open(&store, clock, config.dcv_auto_validate).await?);
            signals.set_controls(controls.clone());
            let travelling: SharedClock = controls.clock().clone();
            (travelling, Some(controls))
        } else {
            (clock, None)
        };
        let state = http::AppState::new(store, Arc::new(config), clock, signals, controls);
        Ok(App {
            state,
            metrics_listener: None,
        })
    }

    /// Has [`App::serve`] answer `GET /metrics` on `listener` too, without
    /// authentication (`--metrics-listen`: for a scraper on a private network), until
    /// the API's connections are done.
    pub fn serve_metrics_on(&mut self, listener: TcpListener) {
        self.metrics_listener = Some(listener);
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &metrics::Metrics {
        self.state.signals.metrics()
    }

    /// The test controls, when the server offers them (`--dev`, `--test-controls`).
    pub fn controls(&self) -> Option<&Arc<controls::Controls>> {
        self.state.controls.as_ref()
    }

    /// The server's clock (the travelling one under the test controls).
    pub fn clock(&self) -> &SharedClock {
        &self.state.clock
    }

    /// Returns the database to the documentation's seed state (`--fresh`, `zonecert dev
    /// reset`): see [`controls::Controls::reset`]. Refused without the test controls.
    pub async fn reset(&self) -> Result<std::time::Duration, DevSeedError> {
        let Some(controls) = &self.state.controls else {
            return Err(DevSeedError::Admin(admin::AdminError::Invalid(
                "the reset is a test control: it needs --dev or --test-controls".into(),
            )));
        };
        let took = controls
            .reset(&self.state.store, &self.state.config)
            .await?;
        self.state.signals.wake();
        Ok(took)
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// The limits of the server's connections, from the configuration and (for the
    /// cap when not configured) the open-descriptor limit, raised first as far as the
    /// process may.
    fn connection_limits(&self) -> http::conn::Limits {
        let config = &self.state.config;
        let descriptors = http::conn::raise_descriptor_limit();
        let max_connections = config
            .max_connections
            .unwrap_or_else(|| http::conn::default_max_connections(descriptors));
        let limits = http::conn::Limits {
            header_read: config.header_read_timeout,
            body_read: config.body_read_timeout,
            idle: config.idle_timeout,
            max_connections,
            max_per_client: http::conn::default_max_per_client(max_connections),
            shutdown_grace: config.shutdown_timeout,
            client_address: config.rate_limit.is_some(),
        };
        tracing::info!(
            descriptors,
            max_connections,
            max_per_client = limits.max_per_client,
            "connection limits"
        );
        limits
    }

    /// Seeds the API documentation's example identifiers (first start) and returns the
    /// data directory's dev token (kept in `<data_dir>/dev-token`, minted on first start). The example pack is issued by the
    /// built-in CA and deployed, so it is `active` as in the documentation.
    pub async fn seed_dev(&self) -> Result<String, DevSeedError> {
        let config = self.state.config.clone();
        let token = admin::seed_dev(
            &self.state.store,
            &config.data_dir,
            |zone| config.dcv_suffix(zone),
            config.quota_advanced,
            self.state.clock.now(),
        )
        .await?;
        let zone = model::ZoneId::parse(admin::dev::ZONE_ID)
            .map_err(|e| admin::AdminError::Invalid(e.0))?;
        let id = model::PackId::parse(admin::dev::PACK_ID)
            .map_err(|e| admin::AdminError::Invalid(e.0))?;
        if let Some(pack) = self.state.store.pack(&zone, &id).await?
            && pack.state == model::PackState::PendingIssuance
        {
            let worker = lifecycle::Worker::new(
                self.state.store.clone(),
                self.state.config.clone(),
                self.state.clock.clone(),
                self.state.signals.clone(),
            )?;
            worker.issue_and_deploy(pack).await?;
        }
        Ok(token)
    }

    /// Starts the lifecycle workers (DCV checks, issuance, deployment, renewal, expiry)
    /// in the background. [`App::serve`] does this itself when [`Config::lifecycle`] is
    /// on; call it directly to run the workers without the API.
    ///
    /// The workers get their own thread and Tokio runtime: the store answers
    /// synchronously, so on the API's runtime every lifecycle write would sit in the
    /// same run queue as the requests, and a request would wait behind the steps of a
    /// whole batch of packs. On their own threads the operating system schedules the two
    /// sides; with the binary's placement installed ([`sched::install`]) they also run at a
    /// low priority (all but the one holding the workers' SQLite connection, see the
    /// lifecycle's worker), and a request thread preempts lifecycle work as soon as it
    /// wakes.
    pub fn start_lifecycle(&self) -> Result<LifecycleHandle, lifecycle::LifecycleError> {
        let (store, config, clock, signals) = (
            self.state.store.clone(),
            self.state.config.clone(),
            self.state.clock.clone(),
            self.state.signals.clone(),
        );
        let cancel = CancellationToken::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let stop = cancel.clone();
        let thread_signals = signals.clone();
        std::thread::Builder::new()
            .name("zonecert-lifecycle".into())
            .spawn(move || {
                // Onto the lifecycle's CPUs first, so the runtime sizes itself to them and
                // every thread started from here inherits them.
                if let Err(e) = sched::lifecycle_thread() {
                    tracing::warn!(reason = %e, "the lifecycle runs on every CPU");
                }
                // The runtime's own threads lower themselves as they start; this one, which
                // runs the workers' claim loop, once the worker has started its store
                // thread, which must not inherit the lower priority (raising it back
                // takes a privilege).
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .thread_name("zonecert-lifecycle")
                    .on_thread_start(sched::background_thread)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(lifecycle::LifecycleError::Runtime(e)));
                        return;
                    }
                };
                // A panic of the claim loop is caught, so that it ends the lifecycle
                // with a reason the server acts on (see `App::serve`), rather than a thread
                // that is silently gone while the API keeps answering.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(async move {
                        // Built inside this runtime: the validator's resolver belongs to it.
                        match lifecycle::Worker::new(store, config, clock, thread_signals) {
                            Ok(worker) => {
                                sched::background_thread();
                                let _ = ready_tx.send(Ok(()));
                                Arc::new(worker).run(stop).await
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                Ok(())
                            }
                        }
                    })
                }));
                let outcome = match ran {
                    Ok(outcome) => outcome,
                    Err(payload) => Err(lifecycle::LifecycleError::Failed(format!(
                        "the lifecycle's worker panicked: {}",
                        lifecycle::panic_message(payload.as_ref())
                    ))),
                };
                if let Err(e) = &outcome {
                    tracing::error!(error = %e, "the lifecycle stopped");
                }
                // Dropping the runtime waits for the blocking tasks (issuance, deployment).
                drop(runtime);
                let _ = done_tx.send(outcome);
            })
            .map_err(lifecycle::LifecycleError::Runtime)?;
        ready_rx.recv().map_err(|_| {
            lifecycle::LifecycleError::Runtime(std::io::Error::other(
                "the lifecycle thread ended before starting",
            ))
        })??;
        // The webhook deliveries run beside the lifecycle, on a thread of their own, and
        // stop with it.
        let webhooks = webhooks::start(
            self.state.store.clone(),
            format!("webhooks-{}", uuid::Uuid::new_v4().simple()),
            webhooks::DeliveryConfig::from_config(&self.state.config),
            signals.clone(),
            cancel.clone(),
        )
        .map_err(lifecycle::LifecycleError::Runtime)?;
        // Marked before returning, so a request arriving at once waits for the workers.
        signals.set_workers_running(true);
        Ok(LifecycleHandle {
            cancel,
            done: Some(done_rx),
            _webhooks: webhooks,
        })
    }

    /// Serves the API on `listener`, with the lifecycle workers when
    /// [`Config::lifecycle`] is on, until `shutdown` resolves; then finishes the
    /// requests in flight and the workers' steps in hand. A lifecycle that fails to
    /// start, or fails while running (a panic of one of its threads), stops the server
    /// with its error: a server whose API answers while no certificate is issued or
    /// renewed any more would look healthy and do nothing.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = http::router(self.state.clone());
        let limits = self.connection_limits();
        let stop_metrics = CancellationToken::new();
        let metrics_served = self.metrics_listener.take().map(|listener| {
            let router = http::metrics_router(self.state.clone());
            let stop = stop_metrics.clone();
            tokio::spawn(http::conn::serve(listener, router, limits, async move {
                stop.cancelled().await
            }))
        });
        // The read cache starts empty; warm it beside the serving (half its budget, the
        // rest for what requests ask), so the zones' first requests after a restart do
        // not all go to the database while the lifecycle catches up on its backlog.
        let warming = self.state.store.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            match warming.warm_cache(0.5) {
                Ok(zones) => tracing::info!(
                    zones,
                    millis = started.elapsed().as_millis() as u64,
                    "read cache warmed"
                ),
                Err(e) => tracing::warn!(error = %e, "warming the read cache failed"),
            }
        });
        // The authoritative answers for delegated ACME challenges, when asked for.
        let responder = match self.state.config.dns_listen {
            Some(addr) => Some(
                dns_responder::DnsResponder::start(
                    addr,
                    &self.state.config.service_domain,
                    self.state.store.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let sweeping = tokio::spawn(sweep_deployments(
            self.state.store.clone(),
            self.state.config.deploy_dir(),
        ));
        let syncing = match (
            self.state.config.deploy_sync,
            self.state.signals.kek_shared(),
        ) {
            (Some(every), Some(kek)) if self.state.config.lifecycle => {
                Some(tokio::spawn(deploy_sync::sync_deployments(
                    self.state.store.clone(),
                    kek,
                    self.state.config.deploy_dir(),
                    self.state.config.deploy_hook_command(),
                    every,
                    Arc::clone(&self.state.signals),
                )))
            }
            _ => None,
        };
        // The lifecycle starts beside the API, not before it: setting the workers up
        // (the CA, the resolvers) took about 200 ms in the lifecycle benchmark, and the
        // first requests waited that long in the listen queue.
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<()>();
        let stop_lifecycle = CancellationToken::new();
        let stopping = stop_lifecycle.clone();
        let supervised = self.state.config.lifecycle.then(|| {
            // A `retry=true` that arrives while the workers start waits for their checks,
            // as it would once they run.
            self.state.signals.set_workers_running(true);
            let signals = self.state.signals.clone();
            tokio::spawn(async move {
                let started = tokio::task::spawn_blocking(move || self.start_lifecycle())
                    .await
                    .map_err(|e| lifecycle::LifecycleError::Runtime(std::io::Error::other(e)))
                    .and_then(|started| started);
                let mut lifecycle = match started {
                    Ok(lifecycle) => lifecycle,
                    Err(e) => {
                        signals.set_workers_running(false);
                        let _ = failed_tx.send(());
                        return Err(e);
                    }
                };
                tokio::select! {
                    failure = lifecycle.ended() => {
                        signals.set_workers_running(false);
                        let _ = failed_tx.send(());
                        Err(failure)
                    }
                    () = stopping.cancelled() => lifecycle.stop().await,
                }
            })
        });
        let lifecycle_stops = stop_lifecycle.clone();
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {}
                // Only a failure sends; a lifecycle that started (or none) drops the
                // sender, which disables this branch.
                Ok(()) = failed_rx => {}
            }
            // The workers finish their steps in hand while the connections finish their
            // requests, each within the shutdown's grace: together, not one after the
            // other.
            lifecycle_stops.cancel();
        };
        let served = http::conn::serve(listener, router, limits, shutdown).await;
        stop_metrics.cancel();
        if let Some(metrics_served) = metrics_served
            && let Ok(Err(e)) = metrics_served.await
        {
            tracing::warn!(error = %e, "the metrics listener failed");
        }
        sweeping.abort();
        if let Some(responder) = responder {
            responder.stop().await;
        }
        if let Some(syncing) = syncing {
            syncing.abort();
        }
        stop_lifecycle.cancel();
        if let Some(supervised) = supervised {
            match supervised.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        served
    }
}

/// How often the deploy directory is swept after the sweep at start.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
/// Staging leftovers older than this are a crashed deployment's (a live one's exist for
/// milliseconds).
const STAGING_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes what deleted packs and crashed deployments left in the deploy directory (keys
/// included), at start and then hourly: deletions by the API remove their files at once,
/// but packs deleted by another process (`zonecert zone delete` with another deploy
/// directory, another server) or while being deployed, and a crash's staging
/// directories, are found only by looking.
async fn sweep_deployments(store: Store, deploy_dir: std::path::PathBuf) {
    loop {
        let known = |id: String| {
            let store = store.clone();
            async move {
                match model::PackId::parse(&id) {
                    // A read error keeps the files: removing a live pack's key is worse.
                    Ok(id) => !matches!(store.pack_by_id(&id).await, Ok(None)),
                    // Not a pack's name: the operator's, kept.
                    Err(_) => true,
                }
            }
        };
        match issuance::sweep(&deploy_dir, STAGING_STALE_AFTER, known).await {
            Ok(swept) if swept != issuance::Swept::default() => tracing::info!(
                staging = swept.staging,
                deleted_packs = swept.orphans,
                dir = %deploy_dir.display(),
                "removed leftovers from the deploy directory"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping the deploy directory failed"),
        }
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

/// Why [`App::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The built-in CA's files are there but unusable.
    #[error(transparent)]
    Ca(#[from] issuance::IssuanceError),
    /// The key-encryption key (`--secret-key-file`) is missing or unreadable.
    #[error(transparent)]
    Kek(#[from] keys::KeyError),
}

/// Why the dev data could not be seeded.
#[derive(Debug, thiserror::Error)]
pub enum DevSeedError {
    /// Creating the zone, user, pack or token failed.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The built-in CA could not be opened.
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::LifecycleError),
    /// The reset, or the seed pack's issuance, failed.
    #[error(transparent)]
    Reset(#[from] controls::ResetError),
}

/// The running lifecycle workers of an [`App`].
#[derive(Debug)]
pub struct LifecycleHandle {
    cancel: CancellationToken,
    /// How the lifecycle's thread ended; taken once it has been received.
    done: Option<tokio::sync::oneshot::Receiver<Result<(), lifecycle::LifecycleError>>>,
    /// The webhook delivery worker (stopped with the lifecycle's token).
    _webhooks: webhooks::DeliveryHandle,
}

impl LifecycleHandle {
    /// Stops the workers after the steps in hand and waits for them; the error of a
    /// lifecycle that had failed meanwhile.
    pub async fn stop(mut self) -> Result<(), lifecycle::LifecycleError> {
        self.cancel.cancel();
        match self.done.take() {
            Some(done) => done.await.unwrap_or_else(|_| Err(thread_vanished())),
            None => Ok(()),
        }
    }

    /// Resolves when the workers end without being stopped (a panic of one of their
    /// threads), with why; never, while they run.
    pub async fn ended(&mut self) -> lifecycle::LifecycleError {
        let Some(done) = self.done.as_mut() else {
            return std::future::pending().await;
        };
        let outcome = done.await;
        self.done = None;
        match outcome {
            Ok(Err(e)) => e,
            Ok(Ok(())) => {
                lifecycle::LifecycleError::Failed("the workers stopped by themselves".into())
            }
            Err(_) => thread_vanished(),
        }
    }
}

fn thread_vanished() -> lifecycle::LifecycleError {
    lifecycle::LifecycleError::Failed("the lifecycle's thread ended without a word".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test
mod tests {
    use super::*;
    use lifecycle::Fault;
    use std::time::Duration;

    /// A panic in either lifecycle thread ends `App::serve` with an error (the binary
    /// then exits non-zero), instead of a server that answers while nothing is issued.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_lifecycle_thread_stops_the_server_with_an_error() {
        for fault in [Fault::WorkerPanic, Fault::StorePanic] {
            let dir = tempfile::tempdir().unwrap();
            let mut config = Config::new(dir.path());
            config.lifecycle = true;
            // Nothing is due, so nothing is asked; a resolver on loopback all the same.
            config.dcv_resolvers = vec![std::net::SocketAddr::from(([127, 0, 0, 1], 9))];
            let app = App::open(config, Arc::new(clock::SystemClock))
                .await
                .unwrap();
            let signals = app.state.signals.clone();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            signals.inject(fault);
            let served = tokio::time::timeout(
                Duration::from_secs(60),
                app.serve(listener, std::future::pending()),
            )
            .await;
            let err = match served {
                Ok(Err(e)) => e,
                Ok(Ok(())) => panic!("{fault:?}: the server ended without an error"),
                Err(_) => panic!("{fault:?}: the server kept serving with a dead lifecycle"),
            };
            assert!(err.to_string().contains("panicked"), "{fault:?}: {err}");
            assert!(!signals.workers_running());
        }
    }
}
