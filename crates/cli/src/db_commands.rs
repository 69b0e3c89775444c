//! `zonecert db copy`: a single-node installation's SQLite database moved into an empty
//! PostgreSQL database (see `zonecert_server::store::Store::copy_into`); `zonecert db
//! migrate`: the schema brought up to this version's, as `serve` does at start unless
//! `--migrate false`.

use crate::admin_commands::open_existing;
use crate::serve::DEFAULT_DATA_DIR;
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use zonecert_server::store::Store;

/// The database itself.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy a data directory's SQLite database into an empty PostgreSQL database, every
    /// table in one transaction; prints each table's rows and checksum (the same read
    /// back from PostgreSQL before it commits). Stop the server first. Refuses a target
    /// that holds any table of its own or any zonecert data.
    Copy {
        /// The data directory whose database is copied [default: ./zonecert-data].
        #[arg(long, env = "ZONECERT_DATA_DIR")]
        from: Option<PathBuf>,
        /// The PostgreSQL database to fill (`postgres://USER:PASSWORD@HOST:PORT/DB`;
        /// `ZONECERT_DATABASE` keeps the password off the command line).
        #[arg(long, env = "ZONECERT_DATABASE")]
        to: String,
    },
    /// Bring the database's schema up to this zonecert's version (what `serve` does at
    /// start unless --migrate false), creating it in an empty PostgreSQL database. Safe
    /// while nodes start: they and this migrate once, one after the other.
    Migrate {
        /// The data directory whose SQLite database is migrated [default: ./zonecert-data].
        #[arg(long, env = "ZONECERT_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The database (`postgres://USER:PASSWORD@HOST:PORT/DB`), instead of the data
        /// directory's.
        #[arg(long, env = "ZONECERT_DATABASE")]
        database: Option<String>,
    },
}

/// Runs a `db` command.
pub async fn db(cmd: DbCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DbCommand::Copy { from, to } => {
            let from = from.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let source = open_existing(Some(&from), None)?;
            // The URL holds the password: the errors never repeat it.
            let target = Store::open_copy_target(&to).context("the target database")?;
            let copied = source.copy_into(&target).await.context("db copy")?;
            outln!("{:<20} {:>9}  sha256 of the rows", "table", "rows");
            for t in &copied {
                outln!("{:<20} {:>9}  {}", t.table, t.rows, t.checksum);
            }
            outln!(
                "copied {} rows into PostgreSQL; every table read back with the same count and checksum",
                copied.iter().map(|t| t.rows).sum::<u64>()
            );
            outln!(
                "next: every node gets --database (ZONECERT_DATABASE), --secret-key-file {} \
                 (or the one the server was given: the key the copied private keys are sealed \
                 under) and a copy of {} (the built-in CA)",
                from.join("secret.key").display(),
                from.join("ca").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Migrate { data_dir, database } => {
            let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            // An empty PostgreSQL database gets the schema (nodes would create it too);
            // a missing SQLite database is not made here (`zonecert init` makes one).
            let store = match &database {
                Some(url) => Store::open_url(url),
                None => Store::open_existing(&data_dir, None),
            }
            .context("migrating the database")?;
            outln!(
                "the database's schema is at version {}, this zonecert's ({})",
                store.written_schema_version(),
                store.backend()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
