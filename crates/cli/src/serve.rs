//! `zonecert serve`: configuration from flags, `ZONECERT_*` variables and a TOML file
//! (in that order of precedence), then the server until SIGINT or SIGTERM.

use crate::log_sink::print_line;
use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;
use zonecert_server::App;
use zonecert_server::clock::SystemClock;
use zonecert_server::config::Config;

pub use zonecert_server::config::DEFAULT_DATA_DIR;

/// Flags of `zonecert serve`: the server's settings ([`Config`], each also a `ZONECERT_*`
/// variable and a key of the TOML file) and the few that belong to the process.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML file of settings, keys named as the flags with underscores
    /// (`poll_interval = "10s"`); flags and variables override it.
    #[arg(long = "config", env = "ZONECERT_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "ZONECERT_LISTEN", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Log as JSON lines instead of text (`ZONECERT_LOG` filters).
    #[arg(long, env = "ZONECERT_LOG_JSON")]
    log_json: bool,
    #[command(flatten)]
    settings: Config,
    /// Whether `lifecycle` was given (flag, variable or file) rather than defaulted.
    #[arg(skip)]
    lifecycle_given: bool,
}

impl ServeArgs {
    /// Keeps the calling thread and the threads it starts from now on (the request
    /// runtime's, started next) on `--request-cpus`; an error when the list names none of
    /// the process's CPUs. The main thread calls this before it builds the runtime.
    pub fn confine_request_threads(&self) -> anyhow::Result<()> {
        zonecert_server::sched::confine_request_threads(&self.settings.request_cpus)?;
        Ok(())
    }

    /// Records what only the parsed matches know: whether `--lifecycle` was given by a
    /// flag, a variable or the file (`file_keys`) instead of defaulted.
    pub fn note_sources(&mut self, matches: &ArgMatches, file_keys: &[String]) {
        self.lifecycle_given = matches.value_source("lifecycle") != Some(ValueSource::DefaultValue)
            || file_keys.iter().any(|k| k == "lifecycle");
    }
}

/// The settings as the server will run with them.
fn configure(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = args.settings.clone();
    if config.lifecycle_cpus != zonecert_server::config::LifecycleCpus::Auto {
        // Checked here, so that a list the kernel cannot honour stops the start with an
        // error (`run` installs the choice and would only warn).
        let ours = zonecert_server::sched::server_cpus()?;
        config
            .lifecycle_cpus
            .resolve(&ours)
            .map_err(anyhow::Error::msg)?;
    }
    // Dev mode's zone is the documentation's example.com, which no one running it
    // controls: checking it through the system's resolvers could never pass, so dev mode
    // runs the workers only against resolvers it is given (a test DNS server, a lab).
    // With auto-validation the seeded zone validates after all: the workers run (CAA is
    // still looked up, through the system's resolvers unless given others).
    if !args.lifecycle_given
        && config.dev
        && config.dcv_resolvers.is_empty()
        && !config.dcv_auto_validate
    {
        config.lifecycle = false;
    }
    config.check_test_controls().map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// Logs to stderr, filtered by `ZONECERT_LOG` (`info` when unset): a default level and
/// per-target levels, e.g. `warn,zonecert_server::lifecycle=debug`. (`Targets` rather than
/// `EnvFilter`: the same directives without span-field filters, and no regex engine to build.)
fn init_logs(json: bool) {
    let default = Targets::new().with_default(LevelFilter::INFO);
    let (filter, refused) = match std::env::var("ZONECERT_LOG") {
        Ok(directives) => match directives.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(e) => (default, Some(format!("ZONECERT_LOG={directives:?}: {e}"))),
        },
        Err(_) => (default, None),
    };
    // Never an error nor a panic when stderr fails (see `log_sink`); and no fallback
    // message about a failed write, which would go to the same stderr.
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(crate::log_sink::stderr)
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        tracing_subscriber::registry()
            .with(layer.json())
            .with(filter)
            .init();
    } else {
        tracing_subscriber::registry()
            .with(layer.fmt_fields(crate::log_fields::PlainFields))
            .with(filter)
            .init();
    }
    if let Some(refused) = refused {
        tracing::warn!("{refused}; logging at info instead");
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

/// Dev mode's credentials must not outlive it: the published global key opens every
/// zone to anyone who read the documentation, and the dev token was printed on a
/// console. Without `--dev`, the server does not start while either is valid.
async fn refuse_dev_credentials(app: &App, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let left = zonecert_server::admin::dev_credentials(app.store(), data_dir)
        .await
        .context("looking for dev mode's credentials")?;
    if !left.any() {
        return Ok(());
    }
    let mut what = Vec::new();
    if left.published_key {
        what.push("user@example.com with the documentation's published global key".to_owned());
    }
    if let Some(id) = &left.token_id {
        what.push(format!("the dev token {id}"));
    }
    anyhow::bail!(
        "this data directory was used with --dev and still holds dev mode's credentials \
         ({}), which would give access to every zone; remove them with `zonecert dev clean \
         --data-dir {}`, or start with --dev",
        what.join(" and "),
        data_dir.display()
    )
}

/// Runs the server.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logs(args.log_json);
    // For this thread (it accepts connections), and to report what the runtime's own
    // threads met when they asked the same before logging was set up.
    if let Err(e) = zonecert_server::sched::prefer_latency() {
        tracing::warn!(reason = %e, "request threads keep the default scheduling: lifecycle work may delay them");
    }
    let config = configure(&args)?;
    // The binary's placement of the server's threads (see `zonecert_server::sched`),
    // before the store opens: its checkpointer is a background thread.
    if config.request_cpus != zonecert_server::config::RequestCpus::All {
        let cpus = zonecert_server::sched::process_cpus().unwrap_or_default();
        tracing::info!(?cpus, "request threads run on these CPUs");
    }
    match zonecert_server::sched::install(&config.lifecycle_cpus) {
        Ok(Some(cpus)) => tracing::info!(?cpus, "lifecycle threads run on these CPUs"),
        Ok(None) => {}
        Err(e) => tracing::warn!(reason = %e, "lifecycle threads run on every CPU"),
    }
    let listen = args.listen;
    let dev = config.dev;
    let (test_controls, fresh) = (config.test_controls_enabled(), config.fresh);
    let lifecycle = config.lifecycle;
    let data_dir = config.data_dir.clone();
    let metrics_listen = config
        .metrics
        .enabled
        .then_some(config.metrics.metrics_listen)
        .flatten();
    let mut app = App::open(config, Arc::new(SystemClock))
        .await
        .with_context(|| format!("opening the database in {}", data_dir.display()))?;
    // A server with the test controls is a test server, whose reset seeds dev mode's
    // credentials: they are refused only on the others.
    if !test_controls {
        refuse_dev_credentials(&app, &data_dir).await?;
    }
    if fresh {
        let took = app
            .reset()
            .await
            .context("resetting the database (--fresh)")?;
        tracing::info!(
            millis = took.as_millis() as u64,
            "database reset to the seed state"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    // These lines are read by people and by scripts (tests find the port here). A
    // closed or full stdout loses them but stops nothing (`println!` would panic).
    let out = std::io::stdout;
    print_line(out(), format_args!("listening on http://{addr}"));
    if let Some(metrics_listen) = metrics_listen {
        let listener = tokio::net::TcpListener::bind(metrics_listen)
            .await
            .with_context(|| format!("listening on {metrics_listen} (--metrics-listen)"))?;
        let metrics_addr = listener.local_addr()?;
        print_line(
            out(),
            format_args!("metrics on http://{metrics_addr}/metrics"),
        );
        app.serve_metrics_on(listener);
    }
    if dev || fresh {
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
    if test_controls {
        print_line(
            out(),
            format_args!(
                "test controls on http://{addr}{} (zonecert dev reset|clock|faults|auto-validate)",
                zonecert_server::http::CONTROLS_BASE
            ),
        );
    }
    if !dev && !fresh {
        // A fresh database answers every request with 9106/10000 until someone makes a
        // credential: say how, once, where the person starting the server looks.
        let store = app.store();
        let empty = store.list_tokens().await?.is_empty() && store.list_users().await?.is_empty();
        if empty {
            let target = if store.backend() == "postgres" {
                // The URL holds the password: name the variable rather than print it.
                "--database \"$ZONECERT_DATABASE\"".to_owned()
            } else {
                format!("--data-dir {}", data_dir.display())
            };
            print_line(
                out(),
                format_args!(
                    "no API credentials in this database yet; create a zone and a token (the secret is printed once):\n  \
                     zonecert zone create example.org {target}\n  \
                     zonecert token create --name admin --permission \"SSL and Certificates Write\" {target}\n\
                     (or start with --dev for the documentation's example zone and a printed token)"
                ),
            );
        }
    }
    tracing::info!(%addr, data_dir = %data_dir.display(), lifecycle, "zonecert serving");
    app.serve(listener, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
