//! `zonecert serve`: configuration from flags, `ZONECERT_*` variables and a TOML file
//! (in that order of precedence), then the server until SIGINT or SIGTERM.

use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use zonecert_server::App;
use zonecert_server::clock::SystemClock;
use zonecert_server::config::{Config, ConfigFile, RateLimit, VerificationForm};

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
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8787)));
    Ok((config, listen))
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZONECERT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
    let (config, listen) = configure(&args)?;
    let dev = config.dev;
    let data_dir = config.data_dir.clone();
    let app = App::open(config, Arc::new(SystemClock))
        .await
        .with_context(|| format!("opening the database in {}", data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    // These lines are read by people and by scripts (tests find the port here).
    println!("listening on http://{addr}");
    if dev {
        let token = app.seed_dev().await.context("seeding the dev data")?;
        println!(
            "dev zone example.com (023e105f4ecef8ad9ca31a8372d0c353), user user@example.com, key 144c9defac04969c7bfad8efaa8ea194"
        );
        println!("export CLOUDFLARE_BASE_URL=http://{addr}/client/v4 CLOUDFLARE_API_TOKEN={token}");
    }
    tracing::info!(%addr, data_dir = %data_dir.display(), "zonecert serving");
    app.serve(listener, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
