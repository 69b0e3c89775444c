//! The `zonecert` binary. Until the server commands land, it carries the client
//! commands only (`zonecert ssl ...`).

use clap::Parser;
use std::process::ExitCode;

mod client_commands;

/// zonecert: Cloudflare-compatible SSL verification and certificate packs.
#[derive(Debug, Parser)]
#[command(name = "zonecert", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Client commands for SSL verification and certificate packs.
    #[command(subcommand)]
    Ssl(client_commands::SslCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Ssl(cmd) => client_commands::run(cmd).await,
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
