//! [`TestServer`]: zonecert's server in the test's process, on 127.0.0.1:0, with a data
//! directory of its own (or the test's), the clock, resolvers and settings the test
//! chooses. It is the real [`App`] serving real HTTP: tests call it with reqwest or the
//! SDK, never a mock.
//!
//! ```no_run
//! # async fn demo() {
//! use zonecert_testkit::{DnsServer, TestServer};
//! let dns = DnsServer::start().await;
//! let server = TestServer::builder()
//!     .resolvers([dns.addr()])
//!     .lifecycle(true)
//!     .config(|c| c.poll_interval = std::time::Duration::from_millis(100))
//!     .start()
//!     .await;
//! let (status, body) = server.get("/zones").await;
//! # }
//! ```

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;
use zonecert_server::App;
use zonecert_server::clock::{SharedClock, SystemClock};
use zonecert_server::config::Config;
use zonecert_server::store::Store;

type Tweak<'a> = Box<dyn FnOnce(&mut Config) + Send + 'a>;

/// How a [`TestServer`] starts; from [`TestServer::builder`].
pub struct TestServerBuilder<'a> {
    data_dir: Option<PathBuf>,
    clock: SharedClock,
    resolvers: Option<Vec<SocketAddr>>,
    lifecycle: bool,
    dev_seed: bool,
    tweaks: Vec<Tweak<'a>>,
}

impl std::fmt::Debug for TestServerBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServerBuilder")
            .field("data_dir", &self.data_dir)
            .field("resolvers", &self.resolvers)
            .field("lifecycle", &self.lifecycle)
            .field("dev_seed", &self.dev_seed)
            .field("tweaks", &self.tweaks.len())
            .finish_non_exhaustive()
    }
}

impl<'a> TestServerBuilder<'a> {
    /// Serves this data directory (kept after the server stops, so a test can start
    /// another server on it) instead of a temporary one removed with the server.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The server's clock (default: the system clock), e.g. a `ManualClock`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Where the DCV checks ask DNS: the testkit's [`crate::DnsServer`], on loopback.
    pub fn resolvers(mut self, resolvers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.resolvers = Some(resolvers.into_iter().collect());
        self
    }

    /// Runs the background lifecycle (default: off, as `Config::new`).
    pub fn lifecycle(mut self, on: bool) -> Self {
        self.lifecycle = on;
        self
    }

    /// Seeds the dev zone, pack and credentials and keeps the dev token as
    /// [`TestServer::token`] (default: on).
    pub fn dev_seed(mut self, on: bool) -> Self {
        self.dev_seed = on;
        self
    }

    /// Changes any setting; called after the builder's own, in the order given.
    pub fn config(mut self, tweak: impl FnOnce(&mut Config) + Send + 'a) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    /// Opens the app and serves it on 127.0.0.1:0. Panics when it cannot start: a test
    /// without its server has nothing to say.
    pub async fn start(self) -> TestServer {
        let (dir, data_dir) = match self.data_dir {
            Some(path) => (None, path),
            None => {
                let dir = tempfile::tempdir().expect("a temporary data directory");
                let path = dir.path().to_owned();
                (Some(dir), path)
            }
        };
        let mut config = Config::new(&data_dir);
        // Tests send requests in bursts; the rate-limit tests turn limits on themselves.
        config.rate_limit = None;
        config.lifecycle = self.lifecycle;
        if let Some(resolvers) = self.resolvers {
            config.dcv_resolvers = resolvers;
        }
        for tweak in self.tweaks {
            tweak(&mut config);
        }
        let app = App::open(config, self.clock.clone())
            .await
            .expect("the app opens");
        let token = if self.dev_seed {
            Some(app.seed_dev().await.expect("the dev seed"))
        } else {
            None
        };
        let store = app.store().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port on 127.0.0.1");
        let addr = listener.local_addr().expect("the listener's address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            base_url: format!("http://{addr}/client/v4"),
            token,
            store,
            data_dir,
            clock: self.clock,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }
}

/// `builder.await` is `builder.start().await`.
impl<'a> std::future::IntoFuture for TestServerBuilder<'a> {
    type Output = TestServer;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = TestServer> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.start())
    }
}

/// zonecert serving in this process (see the module's documentation). Stops when
/// dropped; [`TestServer::shutdown`] stops it and waits for `serve` to return.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    base_url: String,
    token: Option<String>,
    store: Store,
    data_dir: PathBuf,
    clock: SharedClock,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A builder with the defaults: a temporary data directory, the system clock, no
    /// lifecycle, rate limits off, the dev seed in.
    pub fn builder<'a>() -> TestServerBuilder<'a> {
        TestServerBuilder {
            data_dir: None,
            clock: Arc::new(SystemClock),
            resolvers: None,
            lifecycle: false,
            dev_seed: true,
            tweaks: Vec::new(),
        }
    }

    /// [`Self::builder`] started as it is.
    pub async fn start() -> TestServer {
        Self::builder().start().await
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/client/v4`, what an SDK takes as its base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `base_url` followed by `path` (`/zones/...`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The dev token. Panics when started without the dev seed.
    pub fn token(&self) -> &str {
        self.token
            .as_deref()
            .expect("the server was started with the dev seed")
    }

    /// The app's store, for setting up and inspecting what the API does not show.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The HTTP client the helpers below use.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The clock the server was started with.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// A new API token with these permission groups, on these zones (all zones when
    /// empty); its secret.
    pub async fn create_token(&self, permissions: &[&str], zones: &[&str]) -> String {
        let permissions: Vec<String> = permissions.iter().map(|p| (*p).to_owned()).collect();
        let zones: Vec<String> = zones.iter().map(|z| (*z).to_owned()).collect();
        zonecert_server::admin::create_token(&self.store, "test", &permissions, &zones, 0)
            .await
            .expect("the token is created")
            .secret
    }

    /// A request to `path` (below the base URL) with `token` as its bearer, if any.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let req = self.http.request(method, self.url(path));
        match token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends `method path` with `token` and a JSON `body`; the status and the JSON answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.request(method, path, token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("the server answers");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("a JSON answer");
        (status, body)
    }

    /// `GET path` with the dev token.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, Some(self.token()), None).await
    }

    /// `method path` with the dev token and a JSON body.
    pub async fn send(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.call(method, path, Some(self.token()), Some(body))
            .await
    }

    /// Stops serving and waits for `serve` to return; its result.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("serve does not panic"),
            None => Ok(()),
        }
    }
}

/// Every error code of a failure envelope, after checking it is one (`success: false`,
/// `result: null`).
pub fn envelope_codes(body: &Value) -> Vec<u64> {
    assert_eq!(body["success"], false, "{body}");
    assert!(body["result"].is_null(), "{body}");
    body["errors"]
        .as_array()
        .expect("an errors array")
        .iter()
        .map(|e| e["code"].as_u64().expect("a numeric code"))
        .collect()
}
