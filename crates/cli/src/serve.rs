//! `zonecert serve`: configuration from flags, `ZONECERT_*` variables and a TOML file
//! (in that order of precedence), then the server until SIGINT or SIGTERM.

use crate::log_sink::print_line;
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use zonecert_server::App;
use zonecert_server::clock::SystemClock;
use zonecert_server::config::{
    Config, ConfigFile, LifecycleCpus, RateLimit, VerificationForm, parse_key_type, parse_resolvers,
};

/// Where the server keeps its data unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "zonecert-data";

/// Flags of `zonecert serve`; each also reads a `ZONECERT_*` variable.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8787]; port 0 picks a free port.
    #[arg(long, env = "ZONECERT_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory: database, CA, deployed certificates [default: ./zonecert-data].
    #[arg(long, env = "ZONECERT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL (sqlite://PATH); the embedded database in the data directory by default.
    #[arg(long, env = "ZONECERT_DATABASE")]
    database: Option<String>,
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "ZONECERT_CONFIG")]
    config: Option<PathBuf>,
    /// Seed the API documentation's example zone, pack and user, and print a fresh token.
    #[arg(long, env = "ZONECERT_DEV")]
    dev: bool,
    /// Requests per credential: `off`, `N` (per 5 minutes) or `N/SECONDS` [default: 1200/300].
    #[arg(long, env = "ZONECERT_RATE_LIMIT")]
    rate_limit: Option<String>,
    /// Advanced certificate packs a zone may hold [default: 100].
    #[arg(long, env = "ZONECERT_QUOTA_ADVANCED")]
    quota_advanced: Option<u64>,
    /// Shape of GET /ssl/verification: `per-host` (default) or `live`.
    #[arg(long, env = "ZONECERT_VERIFICATION_FORM")]
    verification_form: Option<String>,
    /// Domain under which delegated (cname) DCV targets live [default: zonecert.localhost].
    #[arg(long, env = "ZONECERT_SERVICE_DOMAIN")]
    service_domain: Option<String>,
    /// Run the lifecycle workers (DCV checks, issuance, renewal) [default: true, except
    /// with --dev and no --dcv-resolvers: the seeded example.com can never validate].
    #[arg(long, env = "ZONECERT_LIFECYCLE")]
    lifecycle: Option<bool>,
    /// DNS resolvers for DCV and CAA checks, comma-separated ADDRESS:PORT [default: the system's].
    #[arg(long, env = "ZONECERT_DCV_RESOLVERS")]
    dcv_resolvers: Option<String>,
    /// Port HTTP validation connects to [default: 80].
    #[arg(long, env = "ZONECERT_DCV_HTTP_PORT")]
    dcv_http_port: Option<u16>,
    /// Let HTTP validation connect to loopback and private addresses (tests, labs only).
    #[arg(long, env = "ZONECERT_DCV_ALLOW_PRIVATE_ADDRESSES")]
    dcv_allow_private_addresses: bool,
    /// How many DCV checks run at once [default: 64].
    #[arg(long, env = "ZONECERT_CHECK_CONCURRENCY")]
    check_concurrency: Option<usize>,
    /// Seconds between looks for due work when nothing wakes the workers [default: 10].
    #[arg(long, env = "ZONECERT_POLL_INTERVAL")]
    poll_interval: Option<u64>,
    /// Seconds a server owns a claimed pack; a crashed server's claims are taken over
    /// after this [default: 120].
    #[arg(long, env = "ZONECERT_LEASE")]
    lease: Option<u64>,
    /// Seconds a validated pack may spend in issuance and deployment (failures retried
    /// every 5 minutes) before it is `issuance_timed_out` or `deployment_timed_out`
    /// [default: 86400].
    #[arg(long, env = "ZONECERT_ISSUANCE_TIMEOUT")]
    issuance_timeout: Option<u64>,
    /// Where certificates and keys are written [default: <data-dir>/certs].
    #[arg(long, env = "ZONECERT_DEPLOY_DIR")]
    deploy_dir: Option<PathBuf>,
    /// Command run after each deployment (split on whitespace, run without a shell).
    #[arg(long, env = "ZONECERT_DEPLOY_HOOK")]
    deploy_hook: Option<String>,
    /// Key type of issued certificates: `ecdsa-p256` (default) or `rsa-2048`.
    #[arg(long, env = "ZONECERT_KEY_TYPE")]
    key_type: Option<String>,
    /// Comma-separated words that put a pack on hold for review (brand check).
    #[arg(long, env = "ZONECERT_BRAND_KEYWORDS")]
    brand_keywords: Option<String>,
    /// CPUs of the lifecycle's threads: `auto` (with two CPUs or more, every CPU but the
    /// first, which is left to requests), `all`, or a list such as `1-3` [default: auto].
    #[arg(long, env = "ZONECERT_LIFECYCLE_CPUS")]
    lifecycle_cpus: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "ZONECERT_LOG_JSON")]
    log_json: bool,
}

/// The merged configuration and the address to listen on.
fn configure(args: &ServeArgs) -> anyhow::Result<(Config, SocketAddr)> {
    let file = match &args.config {
        Some(path) => ConfigFile::load(path).map_err(anyhow::Error::msg)?,
        None => ConfigFile::default(),
    };
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let mut config = Config::new(data_dir);
    config.database = args.database.clone().or(file.database);
    config.dev = args.dev || file.dev.unwrap_or(false);
    if let Some(limit) = args.rate_limit.as_deref().or(file.rate_limit.as_deref()) {
        config.rate_limit = RateLimit::parse(limit).map_err(anyhow::Error::msg)?;
    }
    if let Some(q) = args.quota_advanced.or(file.quota_advanced) {
        config.quota_advanced = q;
    }
    if let Some(form) = &args.verification_form {
        config.verification_form = VerificationForm::parse(form).map_err(anyhow::Error::msg)?;
    } else if let Some(form) = file.verification_form {
        config.verification_form = form;
    }
    if let Some(domain) = args.service_domain.clone().or(file.service_domain) {
        config.service_domain = domain;
    }
    if let Some(list) = &args.dcv_resolvers {
        config.dcv_resolvers = parse_resolvers(list).map_err(anyhow::Error::msg)?;
    } else if let Some(list) = &file.dcv_resolvers {
        config.dcv_resolvers = parse_resolvers(&list.join(",")).map_err(anyhow::Error::msg)?;
    }
    if let Some(port) = args.dcv_http_port.or(file.dcv_http_port) {
        anyhow::ensure!(port != 0, "the DCV HTTP port must not be 0");
        config.dcv_http_port = port;
    }
    config.dcv_allow_private_addresses =
        args.dcv_allow_private_addresses || file.dcv_allow_private_addresses.unwrap_or(false);
    if let Some(n) = args.check_concurrency.or(file.check_concurrency) {
        anyhow::ensure!(n > 0, "the check concurrency must be at least 1");
        config.check_concurrency = n;
    }
    if let Some(secs) = args.poll_interval.or(file.poll_interval_secs) {
        anyhow::ensure!(secs > 0, "the poll interval must be at least 1 second");
        config.poll_interval = std::time::Duration::from_secs(secs);
    }
    if let Some(secs) = args.lease.or(file.lease_secs) {
        anyhow::ensure!(secs > 0, "the lease must be at least 1 second");
        config.lease = std::time::Duration::from_secs(secs);
    }
    if let Some(secs) = args.issuance_timeout.or(file.issuance_timeout_secs) {
        anyhow::ensure!(secs > 0, "the issuance timeout must be at least 1 second");
        config.issuance_timeout = std::time::Duration::from_secs(secs);
    }
    config.deploy_dir = args.deploy_dir.clone().or(file.deploy_dir);
    config.deploy_hook = match &args.deploy_hook {
        Some(cmd) => Some(cmd.split_whitespace().map(str::to_owned).collect()),
        None => file.deploy_hook,
    }
    .filter(|argv: &Vec<String>| !argv.is_empty());
    if let Some(kind) = args.key_type.as_deref().or(file.key_type.as_deref()) {
        config.key_type = parse_key_type(kind).map_err(anyhow::Error::msg)?;
    }
    if let Some(words) = &args.brand_keywords {
        config.brand_keywords = words
            .split(',')
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty())
            .collect();
    } else if let Some(words) = file.brand_keywords {
        config.brand_keywords = words;
    }
    if let Some(cpus) = args
        .lifecycle_cpus
        .as_deref()
        .or(file.lifecycle_cpus.as_deref())
    {
        config.lifecycle_cpus = LifecycleCpus::parse(cpus).map_err(anyhow::Error::msg)?;
        // Checked here, so that a list the kernel cannot honour stops the start with an
        // error (`App::open` applies the choice and would only warn).
        let ours = zonecert_server::sched::process_cpus()?;
        config
            .lifecycle_cpus
            .resolve(&ours)
            .map_err(anyhow::Error::msg)?;
    }
    // Dev mode's zone is the documentation's example.com, which no one running it
    // controls: checking it through the system's resolvers could never pass, so dev mode
    // runs the workers only against resolvers it is given (a test DNS server, a lab).
    config.lifecycle = args
        .lifecycle
        .or(file.lifecycle)
        .unwrap_or(!config.dev || !config.dcv_resolvers.is_empty());
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8787)));
    Ok((config, listen))
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZONECERT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Never an error nor a panic when stderr fails (see `log_sink`); and no fallback
    // message about a failed write, which would go to the same stderr.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::log_sink::stderr)
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Runs the server.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logs(args.log_json);
    // For this thread (it accepts connections), and to report what the runtime's own
    // threads met when they asked the same before logging was set up.
    if let Err(e) = zonecert_server::sched::prefer_latency() {
        tracing::warn!(reason = %e, "request threads keep the default scheduling: lifecycle work may delay them");
    }
    let (config, listen) = configure(&args)?;
    let dev = config.dev;
    let lifecycle = config.lifecycle;
    let data_dir = config.data_dir.clone();
    let app = App::open(config, Arc::new(SystemClock))
        .await
        .with_context(|| format!("opening the database in {}", data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    // These lines are read by people and by scripts (tests find the port here). A
    // closed or full stdout loses them but stops nothing (`println!` would panic).
    let out = std::io::stdout;
    print_line(out(), format_args!("listening on http://{addr}"));
    if dev {
        let token = app.seed_dev().await.context("seeding the dev data")?;
        print_line(
            out(),
            format_args!(
                "dev zone example.com (023e105f4ecef8ad9ca31a8372d0c353), user user@example.com, key 144c9defac04969c7bfad8efaa8ea194"
            ),
        );
        print_line(
            out(),
            format_args!(
                "export CLOUDFLARE_BASE_URL=http://{addr}/client/v4 CLOUDFLARE_API_TOKEN={token}"
            ),
        );
    }
    tracing::info!(%addr, data_dir = %data_dir.display(), lifecycle, "zonecert serving");
    app.serve(listener, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
