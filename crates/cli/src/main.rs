//! `zonecert`: the server (`serve`), its administration (`zone`, `user`, `token`, `pack`,
//! `ca`), and the client commands (`ssl`).

/// `print!` for the commands' output: see [`stdout::write`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::stdout::write(format_args!($($arg)*)) };
}

/// `println!` for the commands' output: see [`stdout::write`].
macro_rules! outln {
    () => { $crate::stdout::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprintln!` that never panics (a closed or full stderr loses the line).
macro_rules! errln {
    ($($arg:tt)*) => { $crate::log_sink::print_line(std::io::stderr(), format_args!($($arg)*)) };
}

mod admin_commands;
mod ca_commands;
mod certs_commands;
mod client_commands;
mod db_commands;
mod dev_commands;
mod log_fields;
mod log_sink;
mod report_commands;
mod serve;
mod stdout;
mod webhook_commands;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "zonecert",
    version,
    about = "A self-hosted, Cloudflare-compatible SSL verification and certificate server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (creating its data directory and database on first start).
    Serve(Box<serve::ServeArgs>),
    /// Create the data directory and an empty database, for the admin commands to fill
    /// before the first `serve`.
    Init(admin_commands::InitArgs),
    /// Manage zones in the server's database.
    #[command(subcommand)]
    Zone(admin_commands::ZoneCommand),
    /// Manage users (e-mail + global API key) in the server's database.
    #[command(subcommand)]
    User(admin_commands::UserCommand),
    /// Manage API tokens in the server's database.
    #[command(subcommand)]
    Token(admin_commands::TokenCommand),
    /// Webhook endpoints (Standard Webhooks, signed) and their deliveries.
    #[command(subcommand)]
    Webhook(webhook_commands::WebhookCommand),
    /// Tools for trying zonecert on one machine: `dev dns` runs a loopback DNS server and
    /// HTTP origin whose records you type; `dev clean` removes dev mode's credentials;
    /// `dev reset|clock|auto-validate|faults` drive a running server's test controls.
    #[command(subcommand)]
    Dev(admin_commands::DevCommand),
    /// Review certificate packs: approve or reject held packs.
    #[command(subcommand)]
    Pack(admin_commands::PackCommand),
    /// Reports from the database: `report expiry` (what expires when, and why a renewal
    /// is not done yet).
    #[command(subcommand)]
    Report(report_commands::ReportCommand),
    /// Certificates and their keys in the database: export a pack's chain and key,
    /// rotate the key-encryption key.
    #[command(subcommand)]
    Certs(certs_commands::CertsCommand),
    /// The database: `db copy` moves a single-node installation (SQLite) into an empty
    /// PostgreSQL database.
    #[command(subcommand)]
    Db(db_commands::DbCommand),
    /// The CAs: export the built-in CA's root certificate, list which CA signs each name.
    #[command(subcommand)]
    Ca(ca_commands::CaCommand),
    /// Client commands: SSL verification and certificate packs, against Cloudflare
    /// or a zonecert server (CLOUDFLARE_BASE_URL).
    #[command(subcommand)]
    Ssl(client_commands::SslCommand),
}

/// Why the command line was not understood.
#[derive(Debug)]
enum ParseError {
    /// clap's own (usage, `--help`, `--version`): it prints and exits itself.
    Usage(clap::Error),
    /// The configuration file.
    File(String),
}

/// Parses a command line; for `serve --config FILE`, with the file's settings as the
/// flags' defaults, so that flags and `ZONECERT_*` variables win over the file.
fn parse_from(argv: Vec<OsString>) -> Result<Cli, ParseError> {
    let first = Cli::command()
        .try_get_matches_from(&argv)
        .map_err(ParseError::Usage)?;
    let mut command = Cli::command();
    let mut file_keys = Vec::new();
    if let Some(("serve", serve)) = first.subcommand()
        && let Some(path) = serve.get_one::<PathBuf>("config_file")
    {
        let sub = command
            .find_subcommand("serve")
            .cloned()
            .ok_or_else(|| ParseError::File("no serve command".into()))?;
        let (sub, keys) =
            zonecert_server::config::with_file_defaults(sub, path).map_err(ParseError::File)?;
        file_keys = keys;
        command = command.mut_subcommand("serve", |_| sub);
    }
    // `ca list` reads the same file's `[acme.NAME]` tables.
    if let Some(("ca", ca)) = first.subcommand()
        && let Some(("list", list)) = ca.subcommand()
        && let Some(path) = list.get_one::<PathBuf>("config_file")
    {
        let list_cmd = command
            .find_subcommand("ca")
            .and_then(|c| c.find_subcommand("list"))
            .cloned()
            .ok_or_else(|| ParseError::File("no ca list command".into()))?;
        let list_cmd = zonecert_server::config::with_acme_file_defaults(list_cmd, path)
            .map_err(ParseError::File)?;
        command = command.mut_subcommand("ca", |ca| ca.mut_subcommand("list", |_| list_cmd));
    }
    let matches = command
        .try_get_matches_from(argv)
        .map_err(ParseError::Usage)?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(ParseError::Usage)?;
    if let (Command::Serve(args), Some(("serve", m))) = (&mut cli.command, matches.subcommand()) {
        args.note_sources(m, &file_keys);
    }
    Ok(cli)
}

fn main() -> ExitCode {
    let cli = match parse_from(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(ParseError::Usage(e)) => e.exit(),
        Err(ParseError::File(e)) => {
            log_sink::print_line(std::io::stderr(), format_args!("error: {e}"));
            return ExitCode::from(2);
        }
    };
    // `serve --request-cpus`: before the runtime starts, so its threads inherit the CPUs.
    if let Command::Serve(args) = &cli.command
        && let Err(e) = args.confine_request_threads()
    {
        log_sink::print_line(std::io::stderr(), format_args!("error: {e}"));
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Request threads preempt lifecycle work when they wake (see
        // `zonecert_server::sched`). A refusal is reported by `serve`, which asks again
        // for this thread once logging is set up.
        .on_thread_start(|| {
            let _ = zonecert_server::sched::prefer_latency();
        })
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log_sink::print_line(
                std::io::stderr(),
                format_args!("error: cannot start the async runtime: {e}"),
            );
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Init(args) => admin_commands::init(args).await,
            Command::Zone(cmd) => admin_commands::zone(cmd).await,
            Command::User(cmd) => admin_commands::user(cmd).await,
            Command::Token(cmd) => admin_commands::token(cmd).await,
            Command::Webhook(cmd) => webhook_commands::webhook(cmd).await,
            Command::Pack(cmd) => admin_commands::pack(cmd).await,
            Command::Report(cmd) => report_commands::report(cmd).await,
            Command::Dev(cmd) => admin_commands::dev(cmd).await,
            Command::Ca(cmd) => ca_commands::ca(cmd).await,
            Command::Certs(cmd) => certs_commands::certs(cmd).await,
            Command::Db(cmd) => db_commands::db(cmd).await,
            Command::Ssl(cmd) => client_commands::run(cmd).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            // Not `eprintln!`: on a failed stderr it panics, and the exit status would be
            // a panic's 101 instead of this failure's.
            log_sink::print_line(std::io::stderr(), format_args!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
