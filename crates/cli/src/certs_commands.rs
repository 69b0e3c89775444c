//! `zonecert certs export|rotate-key`: certificates and their keys as the database holds
//! them (keys sealed under the key-encryption key, see `zonecert_server::keys`).

use crate::admin_commands::open_existing;
use crate::serve::DEFAULT_DATA_DIR;
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use zonecert_server::keys::{self, Kek};
use zonecert_server::model::PackId;

/// The database and the key-encryption key.
#[derive(Debug, Args)]
pub struct KeyTarget {
    /// Data directory of the server [default: ./zonecert-data].
    #[arg(long, env = "ZONECERT_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Database URL (overrides the data directory).
    #[arg(long, env = "ZONECERT_DATABASE", global = true)]
    database: Option<String>,
    /// The key-encryption key's file [default: <data-dir>/secret.key].
    #[arg(long, env = "ZONECERT_SECRET_KEY_FILE", global = true)]
    secret_key_file: Option<PathBuf>,
}

impl KeyTarget {
    fn kek(&self) -> anyhow::Result<Kek> {
        let path = self.secret_key_file.clone().unwrap_or_else(|| {
            self.data_dir
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_DATA_DIR))
                .join("secret.key")
        });
        Kek::load(&path).context("the key-encryption key")
    }
}

/// Certificates and keys in the database.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Print a pack's current certificate chain, then its private key (PEM).
    Export {
        /// The certificate pack's id.
        id: String,
        #[command(flatten)]
        target: KeyTarget,
    },
    /// Reseal every stored private key under a new key-encryption key. Then give every
    /// node the new file (--secret-key-file) and restart it; run again afterwards to
    /// reseal keys issued meanwhile under the old one (it skips keys already resealed).
    RotateKey {
        /// The new key-encryption key's file: created (0600) if missing.
        #[arg(long)]
        new_key_file: PathBuf,
        #[command(flatten)]
        target: KeyTarget,
    },
}

/// Runs a `certs` command.
pub async fn certs(cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Export { id, target } => {
            let pack = PackId::parse(&id).map_err(|e| anyhow::anyhow!("{id:?}: {}", e.0))?;
            let kek = target.kek()?;
            let store = open_existing(target.data_dir.as_deref(), target.database.as_deref())?;
            let exported = keys::export(&store, &kek, &pack).await?;
            outln!("{}", exported.chain_pem.trim_end());
            outln!("{}", exported.key_pem.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::RotateKey {
            new_key_file,
            target,
        } => {
            let old = target.kek()?;
            let new = Kek::load_or_create(&new_key_file).context("the new key-encryption key")?;
            if old.fingerprint_hex() == new.fingerprint_hex() {
                anyhow::bail!("the new key-encryption key is the current one");
            }
            let store = open_existing(target.data_dir.as_deref(), target.database.as_deref())?;
            let rotated = keys::rotate(&store, &old, &new).await?;
            outln!(
                "resealed {} keys under {} ({} already were, {} changed meanwhile: run again)",
                rotated.resealed,
                new.fingerprint_hex(),
                rotated.already,
                rotated.raced
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
