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

/// Exit status when a pack's validation timed out (or it expired) during `watch`.
const EXIT_PACK_FAILED: u8 = 2;
/// Exit status when `watch --timeout` passed with packs still pending.
const EXIT_WATCH_TIMEOUT: u8 = 3;
/// The terminal width tables are made to fit.
const WIDTH: usize = 80;

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

fn opt_number(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

fn display_or_dash<T: std::fmt::Display>(value: Option<&T>) -> String {
    value.map_or_else(|| "-".into(), ToString::to_string)
}

/// The packs of a verification answer, in the order they first appear.
fn by_pack(items: &[Verification]) -> Vec<(String, Vec<&Verification>)> {
    let mut groups: Vec<(String, Vec<&Verification>)> = Vec::new();
    for item in items {
        let id = item.cert_pack_uuid.clone().unwrap_or_else(|| "-".into());
        match groups.iter_mut().find(|(g, _)| *g == id) {
            Some((_, members)) => members.push(item),
            None => groups.push((id, vec![item])),
        }
    }
    groups
}

/// The host an item is about: its `hostname`, or the names of its records.
fn host_of(item: &Verification) -> String {
    if let Some(host) = &item.hostname {
        return host.clone();
    }
    item.verification_info
        .as_ref()
        .and_then(|info| info.records().iter().find_map(record_host))
        .unwrap_or_else(|| "-".into())
}

fn record_host(record: &ValidationRecord) -> Option<String> {
    let name = record
        .txt_name
        .as_deref()
        .or(record.cname.as_deref())
        .map(|n| n.trim_start_matches("_acme-challenge.").to_owned());
    name.or_else(|| {
        let url = record.http_url.as_deref()?;
        let rest = url.split("://").nth(1)?;
        Some(rest.split('/').next()?.to_owned())
    })
}

fn verified_word(item: &Verification) -> &'static str {
    match item.verification_status {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

fn verification_table(items: &[Verification]) -> String {
    if items.is_empty() {
        return "no certificate packs in this zone\n".into();
    }
    // The pack id heads its group rather than filling a column: it is 36 characters
    // that must stay whole, to be pasted into `--pack-id`.
    let mut out = String::new();
    for (i, (pack, members)) in by_pack(items).into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "pack {pack}");
        let mut table = Table::new(&["HOST", "STATUS", "METHOD", "VERIFIED"]);
        for item in members {
            table.row(vec![
                host_of(item),
                item.certificate_status.to_string(),
                display_or_dash(item.validation_method.as_ref()),
                verified_word(item).into(),
            ]);
        }
        out.push_str(&table.render());
    }
    out
}

fn packs_table(packs: &[CertificatePack]) -> String {
    if packs.is_empty() {
        return "no certificate packs\n".into();
    }
    let mut table = Table::new(&["ID", "STATUS", "METHOD", "HOSTS"]);
    for pack in packs {
        let hosts = match pack.hosts.as_slice() {
            [] => "-".into(),
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first} +{}", rest.len()),
        };
        table.row(vec![
            pack.id.clone(),
            pack.status.to_string(),
            display_or_dash(pack.validation_method.as_ref()),
            hosts,
        ]);
    }
    table.render()
}

fn pack_details(pack: &CertificatePack) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pack       {}", pack.id);
    let _ = writeln!(out, "status     {}", pack.status);
    let _ = writeln!(out, "type       {}", pack.pack_type);
    let _ = writeln!(
        out,
        "method     {}",
        display_or_dash(pack.validation_method.as_ref())
    );
    let _ = writeln!(
        out,
        "authority  {}",
        display_or_dash(pack.certificate_authority.as_ref())
    );
    if let Some(days) = pack.validity_days {
        let _ = writeln!(out, "validity   {days} days");
    }
    let _ = writeln!(out, "hosts      {}", pack.hosts.join(", "));
    for record in pack.validation_records.iter().flatten() {
        for line in record_instructions(record) {
            let _ = writeln!(out, "  {line}");
        }
    }
    for error in pack.validation_errors.iter().flatten() {
        if let Some(message) = &error.message {
            let _ = writeln!(out, "  error: {message}");
        }
    }
    for cert in &pack.certificates {
        let _ = writeln!(
            out,
            "certificate {} {} expires {}",
            cert.id,
            cert.status,
            cert.expires_on.as_deref().unwrap_or("-")
        );
    }
    out
}

/// The exact record a person must create for a validation record, as lines.
fn record_instructions(record: &ValidationRecord) -> Vec<String> {
    let mut lines = Vec::new();
    if let (Some(name), Some(value)) = (&record.txt_name, &record.txt_value) {
        lines.push(format!("create DNS record: {name} TXT"));
        lines.push(format!("  value: {value}"));
    }
    if let (Some(url), Some(body)) = (&record.http_url, &record.http_body) {
        lines.push(format!("serve over HTTP: {url}"));
        lines.push(format!("  body: {body}"));
    }
    if let (Some(name), Some(target)) = (&record.cname, &record.cname_target) {
        lines.push(format!("create DNS record: {name} CNAME"));
        lines.push(format!("  target: {target}"));
    }
    if let Some(emails) = record.emails.as_ref().filter(|e| !e.is_empty()) {
        lines.push(format!("approve the e-mail sent to {}", emails.join(", ")));
    }
    lines
}

/// Why a host's last check failed: the item's `verification_error` (zonecert's
/// per-host item: the last check's reason, or why no check runs), else the pack's
/// `validation_errors` (the live API's form, and the per-pack item).
fn item_reason(item: &Verification, pack: Option<&CertificatePack>, host: &str) -> String {
    if let Some(text) = item.extra.get("verification_error").and_then(Value::as_str) {
        return text.to_owned();
    }
    // The pack's messages name their host ("shop.test: no TXT record ..."); the line
    // that shows one is already under that host, so the name is not repeated.
    let from_pack = pack
        .and_then(|p| p.validation_errors.as_ref())
        .and_then(|errors| {
            let messages: Vec<&str> = errors.iter().filter_map(|e| e.message.as_deref()).collect();
            let own = format!("{host}: ");
            messages
                .iter()
                .find_map(|m| m.strip_prefix(own.as_str()))
                .or_else(|| messages.iter().find(|m| m.contains(host)).copied())
                .or(messages.first().copied())
                .map(str::to_owned)
        });
    from_pack.unwrap_or_else(|| match item.verification_status {
        Some(false) => "the record was not found yet".into(),
        _ => "not checked yet".into(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PackOutcome {
    Active,
    Pending,
    Failed,
}

fn outcome(members: &[&Verification]) -> PackOutcome {
    let statuses: Vec<&CertificateStatus> = members.iter().map(|m| &m.certificate_status).collect();
    if statuses
        .iter()
        .any(|s| matches!(s, CertificateStatus::TimingOut | CertificateStatus::Expired))
    {
        PackOutcome::Failed
    } else if statuses.iter().all(|s| **s == CertificateStatus::Active) {
        PackOutcome::Active
    } else {
        PackOutcome::Pending
    }
}

/// The progress block of one poll.
fn watch_block(
    groups: &[(String, Vec<&Verification>)],
    packs: &BTreeMap<String, CertificatePack>,
) -> String {
    let mut out = String::new();
    for (pack_id, members) in groups {
        let verified = members
            .iter()
            .filter(|m| {
                m.verification_status == Some(true)
                    || m.certificate_status == CertificateStatus::Active
            })
            .count();
        let status = members
            .first()
            .map(|m| m.certificate_status.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "pack {pack_id}  {status}  {verified}/{} hosts verified",
            members.len()
        );
        let pack = packs.get(pack_id);
        for item in members {
            let done = item.verification_status == Some(true)
                || item.certificate_status == CertificateStatus::Active;
            let host = host_of(item);
            if done {
                let _ = writeln!(out, "  {host}: verified");
                continue;
            }
            let _ = writeln!(out, "  {host}: {}", item.certificate_status);
            let records: Vec<ValidationRecord> = match &item.verification_info {
                Some(info) => info.records().to_vec(),
                // The live API's per-pack item may carry no records: use the pack's.
                None => pack
                    .and_then(|p| p.validation_records.clone())
                    .unwrap_or_default(),
            };
            let mut any = false;
            for record in &records {
                for line in record_instructions(record) {
                    any = true;
                    let _ = writeln!(out, "    {line}");
                }
            }
            if !any {
                let _ = writeln!(out, "    (the server gave no record to create yet)");
            }
            let _ = writeln!(out, "    last check: {}", item_reason(item, pack, &host));
        }
    }
    out
}

async fn watch(
    client: &Client,
    zone_id: &str,
    timeout: Duration,
    interval: Duration,
    recheck: Duration,
) -> Result<ExitCode> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut last_recheck: Option<Instant> = None;
    let mut last_block = String::new();
    loop {
        let retry = last_recheck.is_none_or(|at| at.elapsed() >= recheck);
        let params = VerificationGetParams::new(zone_id).retry(retry);
        let items = match client.ssl().verification().get(params).await {
            Ok(items) => items,
            // Passing trouble (the client has already retried) should not end a long watch.
            Err(
                e @ (Error::Server(_)
                | Error::Timeout { .. }
                | Error::Connection { .. }
                | Error::RateLimited { .. }),
            ) => {
                errln!("warning: {e}; polling again");
                if Instant::now() + interval >= deadline {
                    errln!("timed out after {}", show_duration(timeout));
                    return Ok(ExitCode::from(EXIT_WATCH_TIMEOUT));
                }
                tokio::time::sleep(interval).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if retry {
            last_recheck = Some(Instant::now());
        }
        if items.is_empty() {
            bail!("zone {zone_id} has no certificate packs to watch");
        }
        let groups = by_pack(&items);
        // Packs still pending are read in full for their validation errors.
        let mut packs = BTreeMap::new();
        for (pack_id, members) in &groups {
            if outcome(members) != PackOutcome::Active && pack_id != "-" {
                let params = CertificatePackParams::new(zone_id, pack_id.as_str());
                if let Ok(pack) = client.ssl().certificate_packs().get(params).await {
                    packs.insert(pack_id.clone(), pack);
                }
            }
        }
        let block = watch_block(&groups, &packs);
        if block != last_block {
            outln!("[{}]", show_duration(started.elapsed()));
            out!("{block}");
            last_block = block;
        }
        let outcomes: Vec<PackOutcome> = groups.iter().map(|(_, m)| outcome(m)).collect();
        if let Some(i) = outcomes.iter().position(|o| *o == PackOutcome::Failed) {
            let (pack_id, members) = &groups[i];
            let status = members
                .iter()
                .find(|m| outcome(&[m]) == PackOutcome::Failed)
                .map(|m| m.certificate_status.to_string())
                .unwrap_or_default();
            let restart = if packs
                .get(pack_id)
                .is_some_and(|p| p.status == PackStatus::ValidationTimedOut)
            {
                format!(
                    "; restart it with: zonecert ssl packs edit --zone-id {zone_id} --pack-id {pack_id}"
                )
            } else {
                String::new()
            };
            errln!("pack {pack_id} is {status}{restart}");
            return Ok(ExitCode::from(EXIT_PACK_FAILED));
        }
        if outcomes.iter().all(|o| *o == PackOutcome::Active) {
            outln!("all {} certificate packs are active", groups.len());
            return Ok(ExitCode::SUCCESS);
        }
        let now = Instant::now();
        if now >= deadline {
            let pending = outcomes
                .iter()
                .filter(|o| **o == PackOutcome::Pending)
                .count();
            errln!(
                "timed out after {}: {pending} certificate pack(s) still pending",
                show_duration(timeout)
            );
            return Ok(ExitCode::from(EXIT_WATCH_TIMEOUT));
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
}

/// Parses `90s`, `10m`, `1h30m`, `500ms`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected e.g. 90s, 10m, 1h30m"
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid number in {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "d" => Duration::from_secs(number.saturating_mul(86_400)),
            unit => {
                return Err(format!(
                    "unknown unit {unit:?} in {text:?} (use ms, s, m, h, d)"
                ));
            }
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn show_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}.{}s", secs, d.subsec_millis() / 100)
    }
}

/// Columns that fit [`WIDTH`]: the widest columns give up characters first, and a
/// shortened cell ends with `…`.
struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let gaps = 2 * n.saturating_sub(1);
        while widths.iter().sum::<usize>() + gaps > WIDTH {
            let Some((widest, _)) = widths.iter().enumerate().max_by_key(|(_, w)| **w) else {
                break;
            };
            if widths[widest] <= 8 {
                break;
            }
            widths[widest] -= 1;
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                let cell = fit(cell, *width);
                if i + 1 == n {
                    line.push_str(&cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn fit(cell: &str, width: usize) -> String {
    if cell.chars().count() <= width {
        return cell.to_owned();
    }
    let kept: String = cell.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn tables_fit_eighty_columns() {
        let long_host = "a-very-long-host-name.with.many.labels.and-more-labels.example.com";
        let item: Verification = serde_json::from_value(serde_json::json!({
            "certificate_status": "pending_deployment",
            "cert_pack_uuid": "a77f8bd7-3b47-46b4-a6f1-75cf98109948",
            "hostname": long_host, "validation_method": "cname", "verification_status": false
        }))
        .unwrap();
        let text = verification_table(&[item]);
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        assert!(text.contains('…'), "{text}");
        assert!(
            text.contains("pack a77f8bd7-3b47-46b4-a6f1-75cf98109948"),
            "{text}"
        );
        assert!(text.contains("pending_deployment"), "{text}");
    }
}
