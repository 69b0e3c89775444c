//! `zonecert ssl ...`: the client commands, built on `zonecert-client`.
//!
//! They read the same environment as the SDKs (`CLOUDFLARE_API_TOKEN`, or
//! `CLOUDFLARE_API_KEY` + `CLOUDFLARE_EMAIL`; `CLOUDFLARE_BASE_URL`), so they work
//! against Cloudflare and against a zonecert server alike. Table output fits 80
//! columns; `--output json` prints the API's `result` as it arrived.

use anyhow::{Context, Result, bail};
use futures_util::TryStreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use zonecert_client::api::{CertificateAuthority, PackStatus, ValidationMethod};
use zonecert_client::{
    ApiRequest, CertificatePack, CertificatePackCreateParams, CertificatePackEditParams,
    CertificatePackListParams, CertificatePackParams, CertificateStatus, Client, Error,
    ValidationRecord, Verification, VerificationEditParams, VerificationGetParams,
};

mod render;
mod watch;

use render::*;
use watch::*;

/// Exit status when a pack's validation timed out (or it expired) during `watch`.
const EXIT_PACK_FAILED: u8 = 2;
/// Exit status when `watch --timeout` passed with packs still pending.
const EXIT_WATCH_TIMEOUT: u8 = 3;

/// `zonecert ssl ...`
#[derive(Debug, clap::Subcommand)]
pub enum SslCommand {
    /// SSL verification: what to create so that a zone's certificates validate.
    #[command(subcommand)]
    Verification(VerificationCommand),
    /// Certificate packs: order, list, get, edit, delete, quota.
    #[command(subcommand)]
    Packs(PacksCommand),
}

/// `zonecert ssl verification ...`
#[derive(Debug, clap::Subcommand)]
pub enum VerificationCommand {
    /// Show the verification state of every certificate pack of a zone.
    Get {
        #[command(flatten)]
        zone: ZoneArg,
        /// Ask the server to check the records again now.
        #[arg(long)]
        retry: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Switch a pack to another validation method, or recheck it with the same one.
    Edit {
        #[command(flatten)]
        zone: ZoneArg,
        /// The certificate pack's id.
        #[arg(long)]
        pack_id: String,
        /// The validation method.
        #[arg(long, value_enum)]
        method: EditMethod,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Follow the zone's packs until all are active, printing what to create.
    ///
    /// Exits 0 when every pack is active, 2 when a pack's validation timed out,
    /// 3 when --timeout passes first.
    Watch {
        #[command(flatten)]
        zone: ZoneArg,
        /// Give up after this long (e.g. 90s, 10m, 1h30m).
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        timeout: Duration,
        /// Time between two polls.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        interval: Duration,
        /// How often to ask the server to check the records now (`retry=true`);
        /// the polls in between only read the state.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        recheck: Duration,
    },
}

/// `zonecert ssl packs ...`
#[derive(Debug, clap::Subcommand)]
pub enum PacksCommand {
    /// Order an advanced certificate pack.
    Order {
        #[command(flatten)]
        zone: ZoneArg,
        /// A host the certificate covers (repeat; include the zone apex).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// How domain control is validated.
        #[arg(long, value_enum, default_value_t = OrderMethod::Txt)]
        method: OrderMethod,
        /// Validity in days: 14, 30, 90 or 365.
        #[arg(long, default_value_t = 90)]
        validity_days: u32,
        /// The certificate authority.
        #[arg(long, value_enum, default_value_t = CaArg::LetsEncrypt)]
        ca: CaArg,
        /// Add a Cloudflare-branded common name.
        #[arg(long)]
        cloudflare_branding: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List the packs of a zone, whatever their status (every page).
    List {
        #[command(flatten)]
        zone: ZoneArg,
        /// Only active packs (the API's default; without it, `status=all` is sent
        /// so that packs still validating show too).
        #[arg(long)]
        active_only: bool,
        /// Page size (5 to 50).
        #[arg(long)]
        per_page: Option<u64>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show one pack, with its validation records and errors.
    Get {
        #[command(flatten)]
        zone: ZoneArg,
        /// The pack's id.
        #[arg(long)]
        pack_id: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Restart validation of a pack whose validation timed out.
    Edit {
        #[command(flatten)]
        zone: ZoneArg,
        /// The pack's id.
        #[arg(long)]
        pack_id: String,
        /// Set Cloudflare branding on or off.
        #[arg(long)]
        cloudflare_branding: Option<bool>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Delete a pack.
    Delete {
        #[command(flatten)]
        zone: ZoneArg,
        /// The pack's id.
        #[arg(long)]
        pack_id: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show how many advanced packs the zone may have and has.
    Quota {
        #[command(flatten)]
        zone: ZoneArg,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// The zone a command is about.
#[derive(Debug, clap::Args)]
pub struct ZoneArg {
    /// The zone's id (32 hex characters).
    #[arg(long, env = "CLOUDFLARE_ZONE_ID")]
    zone_id: String,
}

/// How results are printed.
#[derive(Debug, clap::Args)]
pub struct OutputArg {
    /// `table` for people, `json` for the API's result unchanged.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Columns fitting 80 characters.
    Table,
    /// The API's `result`, pretty-printed.
    Json,
}

/// Methods the verification PATCH accepts.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EditMethod {
    /// TXT record at `_acme-challenge.<host>`.
    Txt,
    /// File under `http://<host>/.well-known/`.
    Http,
    /// CNAME delegating `_acme-challenge.<host>`.
    Cname,
}

/// Methods an order accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrderMethod {
    /// TXT record at `_acme-challenge.<host>`.
    Txt,
    /// File under `http://<host>/.well-known/`.
    Http,
    /// E-mail to the domain's administrators.
    Email,
}

/// Certificate authorities an order accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CaArg {
    /// Let's Encrypt.
    LetsEncrypt,
    /// Google Trust Services.
    Google,
    /// SSL.com.
    SslCom,
}

/// Runs an `ssl` command with a client configured from the environment.
pub async fn run(cmd: SslCommand) -> Result<ExitCode> {
    let client = Client::from_env().context("configuring the API client")?;
    let outcome = match cmd {
        SslCommand::Verification(cmd) => run_verification(&client, cmd).await,
        SslCommand::Packs(cmd) => run_packs(&client, cmd).await,
    };
    outcome.map_err(|e| with_credential_hint(e, client.base_url()))
}

/// A refused credential (10000: unknown token, 9103: unknown e-mail or key) says only
/// "Authentication error"; the usual causes are a token from another server or data
/// directory, or `CLOUDFLARE_BASE_URL` naming a different server than the one whose
/// token this is: say so, with the URL used.
fn with_credential_hint(e: anyhow::Error, base_url: &str) -> anyhow::Error {
    let refused = |code| {
        e.chain()
            .filter_map(|c| c.downcast_ref::<zonecert_client::Error>())
            .filter_map(zonecert_client::Error::api_error)
            .any(|api| api.has_code(code))
    };
    let hint = if refused(10000) {
        "the server does not know this token (CLOUDFLARE_API_TOKEN): it may be stale, \
         from an earlier server or another data directory (`serve --dev` prints the token \
         of its data directory), or CLOUDFLARE_BASE_URL may name a different server"
    } else if refused(9103) {
        "the server does not know this e-mail and key (CLOUDFLARE_EMAIL, \
         CLOUDFLARE_API_KEY): the user may have been deleted, or CLOUDFLARE_BASE_URL may \
         name a different server"
    } else {
        return e;
    };
    anyhow::anyhow!("{e:#}\nhint: {hint} (asked {base_url})")
}

async fn run_verification(client: &Client, cmd: VerificationCommand) -> Result<ExitCode> {
    match cmd {
        VerificationCommand::Get {
            zone,
            retry,
            output,
        } => {
            let params = VerificationGetParams::new(zone.zone_id).retry(retry);
            if output.output == Output::Json {
                return print_raw(client, &params.to_request()).await;
            }
            let items = client.ssl().verification().get(params).await?;
            out!("{}", verification_table(&items));
        }
        VerificationCommand::Edit {
            zone,
            pack_id,
            method,
            output,
        } => {
            let method = match method {
                EditMethod::Txt => ValidationMethod::Txt,
                EditMethod::Http => ValidationMethod::Http,
                EditMethod::Cname => ValidationMethod::Cname,
            };
            let params = VerificationEditParams::new(zone.zone_id, pack_id.as_str(), method);
            if output.output == Output::Json {
                return print_raw(client, &params.to_request()).await;
            }
            let result = client.ssl().verification().edit(params).await?;
            outln!(
                "pack {pack_id}: status {}, validation method {}",
                display_or_dash(result.status.as_ref()),
                display_or_dash(result.validation_method.as_ref()),
            );
        }
        VerificationCommand::Watch {
            zone,
            timeout,
            interval,
            recheck,
        } => return watch(client, &zone.zone_id, timeout, interval, recheck).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_packs(client: &Client, cmd: PacksCommand) -> Result<ExitCode> {
    let packs = client.ssl().certificate_packs();
    match cmd {
        PacksCommand::Order {
            zone,
            hosts,
            method,
            validity_days,
            ca,
            cloudflare_branding,
            output,
        } => {
            let mut params = CertificatePackCreateParams::new(zone.zone_id.clone(), hosts)
                .validation_method(match method {
                    OrderMethod::Txt => ValidationMethod::Txt,
                    OrderMethod::Http => ValidationMethod::Http,
                    OrderMethod::Email => ValidationMethod::Email,
                })
                .validity_days(validity_days)
                .certificate_authority(match ca {
                    CaArg::LetsEncrypt => CertificateAuthority::LetsEncrypt,
                    CaArg::Google => CertificateAuthority::Google,
                    CaArg::SslCom => CertificateAuthority::SslCom,
                });
            if cloudflare_branding {
                params = params.cloudflare_branding(true);
            }
            if output.output == Output::Json {
                return print_raw(client, &params.to_request()).await;
            }
            let pack = packs.create(params).await?;
            out!("{}", pack_details(&pack));
            outln!();
            outln!(
                "Next: zonecert ssl verification watch --zone-id {}",
                zone.zone_id
            );
        }
        PacksCommand::List {
            zone,
            active_only,
            per_page,
            output,
        } => {
            let mut params = CertificatePackListParams::new(zone.zone_id);
            if !active_only {
                params = params.status("all");
            }
            if let Some(per_page) = per_page {
                params = params.per_page(per_page);
            }
            if output.output == Output::Json {
                let all: Vec<Value> = packs.list_as(params).try_collect().await?;
                outln!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(ExitCode::SUCCESS);
            }
            let all: Vec<CertificatePack> = packs.list(params).try_collect().await?;
            out!("{}", packs_table(&all));
        }
        PacksCommand::Get {
            zone,
            pack_id,
            output,
        } => {
            let params = CertificatePackParams::new(zone.zone_id, pack_id);
            if output.output == Output::Json {
                return print_raw(client, &params.get_request()).await;
            }
            out!("{}", pack_details(&packs.get(params).await?));
        }
        PacksCommand::Edit {
            zone,
            pack_id,
            cloudflare_branding,
            output,
        } => {
            let mut params = CertificatePackEditParams::new(zone.zone_id, pack_id);
            if let Some(branding) = cloudflare_branding {
                params = params.cloudflare_branding(branding);
            }
            if output.output == Output::Json {
                return print_raw(client, &params.to_request()).await;
            }
            out!("{}", pack_details(&packs.edit(params).await?));
        }
        PacksCommand::Delete {
            zone,
            pack_id,
            output,
        } => {
            let params = CertificatePackParams::new(zone.zone_id, pack_id);
            if output.output == Output::Json {
                return print_raw(client, &params.delete_request()).await;
            }
            let deleted = packs.delete(params).await?;
            outln!("deleted pack {}", deleted.id);
        }
        PacksCommand::Quota { zone, output } => {
            if output.output == Output::Json {
                return print_raw(client, &zonecert_client::quota_request(&zone.zone_id)).await;
            }
            let quota = packs.quota(&zone.zone_id).await?;
            let advanced = quota.advanced.unwrap_or_default();
            let mut table = Table::new(&["PACKS", "USED", "ALLOCATED"]);
            table.row(vec![
                "advanced".into(),
                opt_number(advanced.used),
                opt_number(advanced.allocated),
            ]);
            out!("{}", table.render());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the `result` of a request exactly as the API sent it.
async fn print_raw(client: &Client, request: &ApiRequest) -> Result<ExitCode> {
    let envelope = client.request::<Value>(request).await?;
    let result = envelope.result.unwrap_or(Value::Null);
    outln!("{}", serde_json::to_string_pretty(&result)?);
    Ok(ExitCode::SUCCESS)
}
