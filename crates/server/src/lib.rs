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
pub mod dcv;
pub mod http;
pub mod issuance;
pub mod lifecycle;
pub mod model;
pub mod secrets;
pub mod store;

use clock::SharedClock;
use config::Config;
use std::future::Future;
use std::sync::Arc;
use store::{Store, StoreError};
use tokio::net::TcpListener;

/// A server ready to serve: its store opened and its state built.
#[derive(Debug)]
pub struct App {
    state: http::AppState,
}

impl App {
    /// Opens the database named by `config` and prepares the server.
    pub async fn open(config: Config, clock: SharedClock) -> Result<App, StoreError> {
        let store = match &config.database {
            Some(url) => Store::open_url(url)?,
            None => Store::open_sqlite(&config.data_dir)?,
        };
        let signals = Arc::new(lifecycle::Signals::default());
        Ok(App {
            state: http::AppState::new(store, Arc::new(config), clock, signals),
        })
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// Seeds the API documentation's example identifiers (first start) and mints a
    /// fresh dev token, returning its secret.
    pub async fn seed_dev(&self) -> Result<String, admin::AdminError> {
        let config = self.state.config.clone();
        admin::seed_dev(
            &self.state.store,
            |zone| config.dcv_suffix(zone),
            config.quota_advanced,
            self.state.clock.now(),
        )
        .await
    }

    /// Serves the API on `listener` until `shutdown` resolves, then finishes the
    /// requests in flight.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = http::router(self.state.clone());
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}
