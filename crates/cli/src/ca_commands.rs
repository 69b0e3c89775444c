//! `zonecert ca ...`: the built-in CA, whose root certificate is what clients must trust
//! to accept the certificates zonecert issues.

use crate::serve::DEFAULT_DATA_DIR;
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use zonecert_server::issuance::BuiltinCa;

/// `zonecert ca ...`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print the built-in CA's root certificate (PEM), creating the CA if the data
    /// directory (which must hold a database) has none yet: add it to a trust store to
    /// trust issued certificates.
    Export {
        /// Data directory of the server [default: ./zonecert-data].
        #[arg(long, env = "ZONECERT_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// Runs a `zonecert ca` command.
pub async fn ca(cmd: CaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CaCommand::Export { data_dir } => {
            let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            // A CA belongs to a server's data directory: from the wrong folder this would
            // create a CA no server uses.
            drop(crate::admin_commands::open_existing(Some(&data_dir), None)?);
            // Loading takes a file lock and may create keys: off the async threads.
            let dir = data_dir.clone();
            let ca = tokio::task::spawn_blocking(move || BuiltinCa::load_or_create(&dir))
                .await
                .context("loading the CA")?
                .with_context(|| format!("loading the CA in {}", data_dir.display()))?;
            out!("{}", ca.certificate_pem());
            Ok(ExitCode::SUCCESS)
        }
    }
}
