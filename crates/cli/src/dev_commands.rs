//! `zonecert dev reset|clock|auto-validate|faults`: a running server's test controls
//! (`/_zonecert/v1/...`, offered under `serve --dev` or `--test-controls`), through the
//! client crate, on the same environment as the `ssl` commands (`CLOUDFLARE_BASE_URL`,
//! `CLOUDFLARE_API_TOKEN`: the dev token has the test controls' group).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::process::ExitCode;
use zonecert_client::Client;
use zonecert_client::api::NewFault;

/// `--json`: the API's result instead of a sentence.
#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print the API's result as JSON.
    #[arg(long)]
    json: bool,
}

/// `zonecert dev clock ...`
#[derive(Debug, Subcommand)]
pub enum ClockCommand {
    /// Print the server's now and how far it travelled.
    Show(JsonArg),
    /// Move the server's clock forward (`60d`, `2h 30m`); due work runs at once.
    Advance {
        /// How far: `60d`, `2h 30m`, `90s`.
        by: String,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Set the server's clock to a later time (RFC 3339: `2027-03-01T00:00:00Z`).
    Set {
        /// The new now.
        to: String,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Back to real time.
    Reset(JsonArg),
}

/// `zonecert dev auto-validate ZONE_ID on|off`
#[derive(Debug, Args)]
pub struct AutoValidateArgs {
    /// The zone whose DCV checks pass as if the records existed (CAA, issuance and
    /// deployment still run).
    zone_id: String,
    /// `on` or `off`.
    #[arg(value_parser = ["on", "off"])]
    switch: String,
    #[command(flatten)]
    json: JsonArg,
}

/// `zonecert dev faults ...`
#[derive(Debug, Subcommand)]
pub enum FaultsCommand {
    /// List the injected faults.
    List(JsonArg),
    /// Inject a fault: the lifecycle meets it instead of the real outcome.
    Add {
        /// `nxdomain`, `wrong_value`, `servfail`, `timeout`, `http_404` (DCV checks),
        /// `caa` (CAA refusal), `ca` (the CA refuses), `deploy_hook` (the hook fails).
        #[arg(value_parser = ["nxdomain", "wrong_value", "servfail", "timeout", "http_404", "caa", "ca", "deploy_hook"])]
        kind: String,
        /// Only this zone's packs.
        #[arg(long)]
        zone_id: Option<String>,
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
        /// For the next N attempts of each host (DCV) or pack (the others); until
        /// cleared without it.
        #[arg(long)]
        attempts: Option<u32>,
        /// For `ca`: the ACME problem type.
        #[arg(long)]
        problem_type: Option<String>,
        /// Replaces the failure's default wording.
        #[arg(long)]
        detail: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Remove one fault (by id), or all of them.
    Clear {
        /// The fault's id; every fault without it.
        id: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
}

fn client() -> Result<Client> {
    Client::from_env().context(
        "configuring the API client (CLOUDFLARE_BASE_URL and the dev token, as `serve --dev` prints)",
    )
}

/// Prints `value` as JSON with `--json`, else the sentence.
fn print<T: Serialize>(json: &JsonArg, value: &T, sentence: impl FnOnce() -> String) -> Result<()> {
    if json.json {
        outln!("{}", serde_json::to_string_pretty(value)?);
    } else {
        outln!("{}", sentence());
    }
    Ok(())
}

/// `zonecert dev reset`
pub async fn reset(json: JsonArg) -> Result<ExitCode> {
    let done = client()?.test_controls().reset().await?;
    print(&json, &done, || {
        format!(
            "reset to the seed state in {} ms: zone {}, pack {}, user {}",
            done.took_ms, done.zone_id, done.pack_id, done.user_email
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `zonecert dev clock ...`
pub async fn clock(cmd: ClockCommand) -> Result<ExitCode> {
    let client = client()?;
    let controls = client.test_controls();
    let (state, json) = match cmd {
        ClockCommand::Show(json) => (controls.clock().await?, json),
        ClockCommand::Advance { by, json } => (controls.advance_clock(&by).await?, json),
        ClockCommand::Set { to, json } => (controls.set_clock(&to).await?, json),
        ClockCommand::Reset(json) => (controls.reset_clock().await?, json),
    };
    print(&json, &state, || {
        format!(
            "server time {} (real time {}, offset {} s)",
            state.now, state.real_now, state.offset_seconds
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `zonecert dev auto-validate ZONE_ID on|off`
pub async fn auto_validate(args: AutoValidateArgs) -> Result<ExitCode> {
    let enabled = args.switch == "on";
    let state = client()?
        .test_controls()
        .set_auto_validation(&args.zone_id, enabled)
        .await?;
    print(&args.json, &state, || {
        format!(
            "auto-validation {} for zone {}",
            if state.enabled { "on" } else { "off" },
            args.zone_id
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `zonecert dev faults ...`
pub async fn faults(cmd: FaultsCommand) -> Result<ExitCode> {
    let client = client()?;
    let controls = client.test_controls();
    match cmd {
        FaultsCommand::List(json) => {
            let faults = controls.faults().await?;
            print(&json, &faults, || {
                if faults.is_empty() {
                    return "no faults".to_owned();
                }
                faults
                    .iter()
                    .map(|f| {
                        let scope = match (&f.zone_id, &f.host) {
                            (Some(z), Some(h)) => format!("host {h} of zone {z}"),
                            (Some(z), None) => format!("zone {z}"),
                            (None, Some(h)) => format!("host {h}"),
                            (None, None) => "everything".to_owned(),
                        };
                        let times = f
                            .attempts
                            .map_or("until cleared".to_owned(), |n| format!("{n} attempts"));
                        format!(
                            "{}  {}  {scope}, {times}, struck {}: {}",
                            f.id, f.kind, f.struck, f.reason
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        }
        FaultsCommand::Add {
            kind,
            zone_id,
            host,
            attempts,
            problem_type,
            detail,
            json,
        } => {
            let fault = controls
                .add_fault(&NewFault {
                    kind,
                    zone_id,
                    host,
                    attempts,
                    problem_type,
                    detail,
                })
                .await?;
            print(&json, &fault, || {
                format!("fault {} ({}): {}", fault.id, fault.kind, fault.reason)
            })?;
        }
        FaultsCommand::Clear { id, json } => {
            let cleared = match &id {
                Some(id) => controls.delete_fault(id).await?,
                None => controls.clear_faults().await?,
            };
            print(&json, &cleared, || {
                format!("removed {} fault(s)", cleared.cleared)
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
