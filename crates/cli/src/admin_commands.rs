//! `zonecert zone|user|token|pack ...`: administration straight on the server's database
//! (safe while a server runs on it: SQLite serialises the writes).

use crate::serve::DEFAULT_DATA_DIR;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use zonecert_server::admin;
use zonecert_server::clock::{Clock, SystemClock};
use zonecert_server::model::ZoneId;
use zonecert_server::store::{Store, StoreError};

/// Which database to administer, and how to print.
#[derive(Debug, Args)]
pub struct Target {
    /// Data directory of the server [default: ./zonecert-data].
    #[arg(long, env = "ZONECERT_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Database URL (overrides the data directory).
    #[arg(long, env = "ZONECERT_DATABASE", global = true)]
    database: Option<String>,
    /// Where the server deploys certificates [default: <data-dir>/certs]: deleting a zone
    /// or rejecting a pack removes the packs' files there.
    #[arg(long, env = "ZONECERT_DEPLOY_DIR", global = true)]
    deploy_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
}

/// Output format of admin commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Lines for people.
    Text,
    /// One JSON document for scripts.
    Json,
}

impl Target {
    /// Opens the database, which must exist: see [`open_existing`].
    pub(crate) fn open(&self) -> anyhow::Result<Store> {
        open_existing(self.data_dir.as_deref(), self.database.as_deref())
    }

    /// Removes the deployed files of packs just deleted from the database. A failure is
    /// reported but does not fail the command (the deletion is done); the server's sweep
    /// of its deploy directory (at start, then hourly) removes what is left.
    async fn remove_deployments(&self, packs: &[zonecert_server::model::PackId]) {
        let deploy_dir = self.deploy_dir.clone().unwrap_or_else(|| {
            self.data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
                .join("certs")
        });
        for pack in packs {
            if let Err(e) =
                zonecert_server::issuance::remove_deployment(&deploy_dir, pack.as_str()).await
            {
                eprintln!("warning: removing the files of pack {}: {e}", pack.as_str());
            }
        }
    }

    pub(crate) fn print(&self, value: serde_json::Value, text: impl FnOnce() -> String) {
        match self.output {
            Output::Json => outln!("{value}"),
            Output::Text => outln!("{}", text()),
        }
    }
}

/// Opens the database of `data_dir` (or `database`) for administration, refusing one
/// that does not exist: run from the wrong folder, an admin command would otherwise
/// create an empty database that no server reads, and the operator would see their
/// zone "missing" (7003). Only `serve` and `init` create databases.
pub fn open_existing(data_dir: Option<&Path>, database: Option<&str>) -> anyhow::Result<Store> {
    let data_dir = data_dir.unwrap_or(Path::new(DEFAULT_DATA_DIR));
    match Store::open_existing(data_dir, database) {
        Ok(store) => Ok(store),
        Err(StoreError::NoDatabase(path)) => {
            let place = match database {
                Some(_) => path.display().to_string(),
                None => data_dir.display().to_string(),
            };
            anyhow::bail!(
                "no zonecert database at {place}: pass --data-dir or set ZONECERT_DATA_DIR \
                 (or --database / ZONECERT_DATABASE) to the server's; `zonecert init` or \
                 `zonecert serve` creates a new one"
            )
        }
        Err(e) => Err(anyhow::Error::new(e).context("opening the database")),
    }
}

/// `zonecert init`: creates the data directory (0700) and its database (0600).
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Data directory to create [default: ./zonecert-data].
    #[arg(long, env = "ZONECERT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL (overrides the data directory).
    #[arg(long, env = "ZONECERT_DATABASE")]
    database: Option<String>,
}

/// Runs `zonecert init`: a new database, or the existing one left as it is.
pub async fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let existed = match &args.database {
        Some(_) => open_existing(Some(&data_dir), args.database.as_deref()).is_ok(),
        None => Store::sqlite_path(&data_dir).exists(),
    };
    let store = match &args.database {
        Some(url) => Store::open_url(url),
        None => Store::open_sqlite(&data_dir),
    }
    .context("creating the database")?;
    drop(store);
    let place = args
        .database
        .clone()
        .unwrap_or_else(|| Store::sqlite_path(&data_dir).display().to_string());
    if existed {
        println!("a zonecert database exists already at {place}: left as it is");
    } else {
        println!("created a zonecert database at {place}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `zonecert dev ...`
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Remove what `serve --dev` left that grants access: user@example.com's published
    /// global key and the dev token (the example zone and pack stay). A server without
    /// --dev refuses to start until this is done.
    Clean {
        #[command(flatten)]
        target: Target,
    },
    /// Run a loopback DNS server and HTTP origin whose records you type, one command per
    /// line (`txt NAME VALUE...`, `cname NAME TARGET`, `a NAME IPV4`, `aaaa NAME IPV6`,
    /// `caa NAME FLAGS TAG VALUE`, `remove NAME`, `http URL BODY`), to try validation on
    /// one machine: `serve --dcv-resolvers` takes the DNS address it prints. Both ports
    /// are chosen at random; it stops when its input ends (Ctrl-D).
    Dns,
    /// Run Pebble, Let's Encrypt's test ACME CA (Debian's `pebble`), on loopback for
    /// trying ACME issuance on one machine: it prints its directory and the root of its
    /// TLS certificate, to give `serve --acme NAME=DIRECTORY --acme-root NAME=ROOT`, and
    /// its management API (`/roots/0`: the root it issues under). It stops when its input
    /// ends (Ctrl-D).
    Pebble {
        /// The DNS server Pebble's validations ask (e.g. the one `dev dns` prints).
        #[arg(long)]
        dns: Option<std::net::SocketAddr>,
        /// The port Pebble's http-01 validations connect to (e.g. `dev dns`'s origin).
        #[arg(long)]
        http_port: Option<u16>,
    },
    /// Test controls of a running server (`serve --dev` or `--test-controls`; the
    /// environment of the `ssl` commands): return its database to the documentation's
    /// seed state (zone, pack, user, the same dev token), the clock to real time, and
    /// clear faults and auto-validation.
    Reset(crate::dev_commands::JsonArg),
    /// Test controls: the server's clock (`show`, `advance 60d`, `set TIME`, `reset`).
    #[command(subcommand)]
    Clock(crate::dev_commands::ClockCommand),
    /// Test controls: a zone's DCV checks pass as if the records existed (`on`), or not.
    AutoValidate(crate::dev_commands::AutoValidateArgs),
    /// Test controls: injected faults (`list`, `add KIND`, `clear [ID]`).
    #[command(subcommand)]
    Faults(crate::dev_commands::FaultsCommand),
}

/// Runs a `dev` command.
pub async fn dev(cmd: DevCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DevCommand::Reset(json) => return crate::dev_commands::reset(json).await,
        DevCommand::Clock(cmd) => return crate::dev_commands::clock(cmd).await,
        DevCommand::AutoValidate(args) => return crate::dev_commands::auto_validate(args).await,
        DevCommand::Faults(cmd) => return crate::dev_commands::faults(cmd).await,
        DevCommand::Dns => {
            // The console blocks on stdin; the servers' sockets are served by this
            // runtime's workers meanwhile.
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                zonecert_testkit::console::run(
                    &runtime,
                    std::io::stdin().lock(),
                    std::io::stdout().lock(),
                )
            })
            .await??;
        }
        DevCommand::Pebble { dns, http_port } => {
            let dir = tempfile::tempdir().context("a temporary folder for Pebble")?;
            let pebble = zonecert_testkit::pebble::Pebble::try_start(
                dir.path(),
                zonecert_testkit::pebble::PebbleOptions {
                    dns,
                    http_port,
                    ..Default::default()
                },
            )
            .await
            .map_err(anyhow::Error::msg)?;
            outln!("acme directory {}", pebble.directory);
            outln!("tls root {}", pebble.tls_root.display());
            outln!("management {}", pebble.management);
            // Until the input ends, as `dev dns`.
            tokio::task::spawn_blocking(|| {
                let mut sink = String::new();
                while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
                    sink.clear();
                }
            })
            .await?;
            pebble.stop().await;
        }
        DevCommand::Clean { target } => {
            let store = target.open()?;
            let data_dir = target
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let removed = admin::remove_dev_credentials(&store, &data_dir).await?;
            target.print(
                json!({
                    "published_key_removed": removed.published_key,
                    "token_revoked": removed.token_id,
                }),
                || {
                    let mut lines = Vec::new();
                    if removed.published_key {
                        lines.push(
                            "deleted user@example.com (its global key is published)".to_owned(),
                        );
                    }
                    if let Some(id) = &removed.token_id {
                        lines.push(format!("revoked the dev token {id}"));
                    }
                    if lines.is_empty() {
                        lines.push("no dev credentials left".to_owned());
                    }
                    lines.join("\n")
                },
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `zonecert zone ...`
#[derive(Debug, Subcommand)]
pub enum ZoneCommand {
    /// Create a zone.
    Create {
        /// The zone's apex, e.g. example.com.
        name: String,
        /// Use this id (32 hex characters) instead of a fresh one.
        #[arg(long)]
        id: Option<String>,
        /// Allow the zone to lie inside another zone, or above one (refused otherwise:
        /// two zones, and their tokens, would share control of the same names).
        #[arg(long)]
        allow_nested: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List zones.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Delete a zone and its certificate packs.
    Delete {
        /// The zone's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// `zonecert pack ...`: manual review of certificate packs.
#[derive(Debug, Subcommand)]
pub enum PackCommand {
    /// List certificate packs of every zone; `--held` those waiting for `approve|reject`.
    List {
        /// Only packs held by the brand check or waiting for e-mail validation.
        #[arg(long)]
        held: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Approve a pack held for review (brand check) or waiting for e-mail validation;
    /// the server then validates and issues it.
    Approve {
        /// The certificate pack's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Reject a pack held for review: it is deleted.
    Reject {
        /// The certificate pack's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs a `pack` command.
pub async fn pack(cmd: PackCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PackCommand::List { held, target } => {
            let store = target.open()?;
            let packs = store.all_packs(held).await?;
            let rows: Vec<_> = packs
                .iter()
                .map(|p| {
                    let hosts: Vec<&str> = p.hosts.iter().map(|h| h.hostname.as_str()).collect();
                    json!({
                        "id": p.id.as_str(),
                        "zone_id": p.zone_id.as_str(),
                        "status": p.state.as_str(),
                        "method": p.method.as_str(),
                        "brand_check": p.brand_check,
                        "hosts": hosts,
                    })
                })
                .collect();
            target.print(json!(rows), || {
                if packs.is_empty() {
                    return if held {
                        "no certificate packs wait for approval".to_owned()
                    } else {
                        "no certificate packs".to_owned()
                    };
                }
                packs
                    .iter()
                    .map(|p| {
                        let why = if p.brand_check {
                            "  held: brand check"
                        } else if held {
                            "  waiting: e-mail validation"
                        } else {
                            ""
                        };
                        let hosts: Vec<&str> =
                            p.hosts.iter().map(|h| h.hostname.as_str()).collect();
                        format!(
                            "{}  {}  {}  {}{why}",
                            p.id.as_str(),
                            p.state.as_str(),
                            p.method.as_str(),
                            hosts.join(",")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        PackCommand::Approve { id, target } => {
            let store = target.open()?;
            let pack = admin::approve_pack(&store, &id, now()).await?;
            target.print(
                json!({"id": pack.id.as_str(), "status": pack.state.as_str()}),
                || format!("approved certificate pack {}", pack.id.as_str()),
            );
        }
        PackCommand::Reject { id, target } => {
            let store = target.open()?;
            let pack = admin::reject_pack(&store, &id).await?;
            target
                .remove_deployments(std::slice::from_ref(&pack.id))
                .await;
            target.print(json!({"id": pack.id.as_str(), "deleted": true}), || {
                format!("rejected and deleted certificate pack {}", pack.id.as_str())
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `zonecert user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; prints its global API key once.
    Create {
        /// The user's e-mail.
        email: String,
        #[command(flatten)]
        target: Target,
    },
    /// List users.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Delete a user (by id or e-mail).
    Delete {
        /// Id or e-mail.
        user: String,
        #[command(flatten)]
        target: Target,
    },
}

/// `zonecert token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; prints its secret once.
    Create {
        /// A label for people.
        #[arg(long)]
        name: String,
        /// A permission group, e.g. "SSL and Certificates Read" (repeatable).
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        /// Limit the token to this zone id (repeatable); every zone when absent.
        #[arg(long = "zone")]
        zones: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a token.
    Revoke {
        /// The token's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

fn now() -> i64 {
    SystemClock.now()
}

/// Runs a `zone` command.
pub async fn zone(cmd: ZoneCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ZoneCommand::Create {
            name,
            id,
            allow_nested,
            target,
        } => {
            let store = target.open()?;
            let zone =
                admin::create_zone(&store, &name, id.as_deref(), allow_nested, now()).await?;
            target.print(
                json!({"id": zone.id.as_str(), "name": zone.name.as_str()}),
                || format!("created zone {} with id {}", zone.name, zone.id),
            );
        }
        ZoneCommand::List { target } => {
            let store = target.open()?;
            let zones = store.list_zones(None, None, 0, u64::MAX).await?.items;
            let value = json!(
                zones
                    .iter()
                    .map(|z| json!({"id": z.id.as_str(), "name": z.name.as_str()}))
                    .collect::<Vec<_>>()
            );
            target.print(value, || {
                zones
                    .iter()
                    .map(|z| format!("{}  {}", z.id, z.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ZoneCommand::Delete { id, target } => {
            let store = target.open()?;
            let id = ZoneId::parse(&id).map_err(|e| anyhow::anyhow!(e.0))?;
            let packs: Vec<_> = store
                .packs_of_zone(&id)
                .await?
                .into_iter()
                .map(|p| p.id)
                .collect();
            if !store.delete_zone(&id).await? {
                anyhow::bail!("no zone with id {id}");
            }
            target.remove_deployments(&packs).await;
            target.print(json!({"id": id.as_str()}), || format!("deleted zone {id}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a `user` command.
pub async fn user(cmd: UserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCommand::Create { email, target } => {
            let store = target.open()?;
            let new = admin::create_user(&store, &email, None, now()).await?;
            target.print(
                json!({"id": new.user.id, "email": new.user.email, "key": new.key}),
                || {
                    format!(
                        "created user {} (id {})\nglobal API key (shown once): {}",
                        new.user.email, new.user.id, new.key
                    )
                },
            );
        }
        UserCommand::List { target } => {
            let store = target.open()?;
            let users = store.list_users().await?;
            let value = json!(
                users
                    .iter()
                    .map(|u| json!({"id": u.id, "email": u.email}))
                    .collect::<Vec<_>>()
            );
            target.print(value, || {
                users
                    .iter()
                    .map(|u| format!("{}  {}", u.id, u.email))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        UserCommand::Delete { user, target } => {
            let store = target.open()?;
            if !store.delete_user(&user).await? {
                anyhow::bail!("no user {user}");
            }
            target.print(json!({"deleted": user}), || format!("deleted user {user}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a `token` command.
pub async fn token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            name,
            permissions,
            zones,
            target,
        } => {
            let store = target.open()?;
            let new = admin::create_token(&store, &name, &permissions, &zones, now()).await?;
            target.print(
                json!({"id": new.token.id, "name": new.token.name, "secret": new.secret}),
                || {
                    format!(
                        "created token {} ({})\nsecret (shown once): {}",
                        new.token.name, new.token.id, new.secret
                    )
                },
            );
        }
        TokenCommand::List { target } => {
            let store = target.open()?;
            let tokens = store.list_tokens().await?;
            let describe = |t: &zonecert_server::model::Token| {
                json!({
                    "id": t.id,
                    "name": t.name,
                    "permissions": t.permissions.iter().map(|p| p.name()).collect::<Vec<_>>(),
                    "zones": t.zones.as_ref().map(|zs| zs.iter().map(|z| z.as_str()).collect::<Vec<_>>()),
                })
            };
            let value = json!(tokens.iter().map(describe).collect::<Vec<_>>());
            target.print(value, || {
                tokens
                    .iter()
                    .map(|t| {
                        let zones = t.zones.as_ref().map_or("all zones".to_owned(), |zs| {
                            zs.iter().map(|z| z.as_str()).collect::<Vec<_>>().join(",")
                        });
                        let perms: Vec<&str> = t.permissions.iter().map(|p| p.name()).collect();
                        format!("{}  {}  [{}]  {}", t.id, t.name, perms.join("; "), zones)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        TokenCommand::Revoke { id, target } => {
            let store = target.open()?;
            if !store.delete_token(&id).await? {
                anyhow::bail!("no token with id {id}");
            }
            target.print(json!({"id": id}), || format!("revoked token {id}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
