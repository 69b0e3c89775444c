//! `zonecert ca ...`: the built-in CA, whose root certificate is what clients must trust
//! to accept the certificates zonecert issues.

use crate::serve::DEFAULT_DATA_DIR;
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use zonecert_server::config::AcmeConfig;
use zonecert_server::issuance::BuiltinCa;
use zonecert_server::issuance::acme::account_file;
use zonecert_server::model::CaChoice;

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
    /// Show which CA signs each `certificate_authority` name: an ACME directory
    /// (`--acme NAME=URL`, the same options and file as `serve`) or the built-in CA.
    List {
        /// TOML file of settings (its `[acme.NAME]` tables are read).
        #[arg(long = "config", env = "ZONECERT_CONFIG")]
        config_file: Option<PathBuf>,
        /// Data directory of the server, where ACME accounts are kept [default: ./zonecert-data].
        #[arg(long, env = "ZONECERT_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Database URL (overrides the data directory's database), where the nodes'
        /// shared ACME accounts are kept.
        #[arg(long, env = "ZONECERT_DATABASE")]
        database: Option<String>,
        #[command(flatten)]
        acme: AcmeConfig,
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
        CaCommand::List {
            data_dir,
            database,
            acme,
            ..
        } => {
            let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let cas = acme.cas().map_err(anyhow::Error::msg)?;
            // The account the servers use is the database's once one published it; no
            // database (yet) is no shared account.
            let store =
                crate::admin_commands::open_existing(Some(&data_dir), database.as_deref()).ok();
            for name in [CaChoice::Google, CaChoice::LetsEncrypt, CaChoice::SslCom] {
                match cas.iter().find(|c| c.ca == name) {
                    Some(c) => {
                        let shared = match &store {
                            Some(store) => store.acme_account(&c.directory).await.ok().flatten(),
                            None => None,
                        };
                        let account = account_file(c, &data_dir);
                        let account = if shared.is_some() {
                            "account shared through the database".to_owned()
                        } else if account.exists() {
                            format!("account {}", account.display())
                        } else {
                            "account created on first order".to_owned()
                        };
                        let eab = if c.eab.is_some() { ", EAB" } else { "" };
                        outln!(
                            "{:<13} ACME {} (CAA {}{eab}; {account})",
                            name.as_str(),
                            c.directory,
                            c.caa_domains.join(" ")
                        );
                    }
                    None => outln!("{:<13} built-in CA (no --acme directory)", name.as_str()),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
