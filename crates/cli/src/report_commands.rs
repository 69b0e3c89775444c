//! `zonecert report expiry`: which certificates expire when, and why each renewal is not
//! done yet, straight from the database (like the admin commands).

use crate::admin_commands::Target;
use clap::Subcommand;
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;
use zonecert_server::clock::{Clock, SystemClock, rfc3339};
use zonecert_server::model::{Pack, PackState};

/// `zonecert report ...`
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Certificates expiring within `--within` (and those already expired), soonest
    /// first, with why each renewal is not done yet.
    Expiry {
        /// How far ahead to look (`30d`, `7d`, `12h`).
        #[arg(long, default_value = "30d", value_parser = zonecert_server::config::parse_duration)]
        within: Duration,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs a `report` command.
pub async fn report(cmd: ReportCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReportCommand::Expiry { within, target } => {
            let store = target.open()?;
            // The server's time: a test server's travelled clock is kept in the database.
            let offset = zonecert_server::controls::stored_offset(&store).await?;
            let now = SystemClock.now().saturating_add(offset);
            let until = now.saturating_add(i64::try_from(within.as_secs()).unwrap_or(i64::MAX));
            let mut packs: Vec<(i64, Pack)> = store
                .all_packs(false)
                .await?
                .into_iter()
                .filter_map(|p| {
                    let not_after = p.certificate.as_ref()?.not_after;
                    (not_after <= until).then_some((not_after, p))
                })
                .collect();
            packs.sort_by(|a, b| {
                a.0.cmp(&b.0)
                    .then_with(|| a.1.id.as_str().cmp(b.1.id.as_str()))
            });
            let rows: Vec<_> = packs
                .iter()
                .map(|(not_after, p)| {
                    let hosts: Vec<&str> = p.hosts.iter().map(|h| h.hostname.as_str()).collect();
                    json!({
                        "id": p.id.as_str(),
                        "zone_id": p.zone_id.as_str(),
                        "status": p.state.as_str(),
                        "hosts": hosts,
                        "expires_on": rfc3339(*not_after),
                        "renewal_starts_on": p.renewal_starts_at().map(rfc3339),
                        "why_not_renewed": why_not_renewed(p, now),
                    })
                })
                .collect();
            target.print(json!(rows), || {
                if packs.is_empty() {
                    return format!(
                        "no certificate expires within {} days",
                        within.as_secs_f64() / 86_400.0
                    );
                }
                packs
                    .iter()
                    .map(|(not_after, p)| {
                        let hosts: Vec<&str> =
                            p.hosts.iter().map(|h| h.hostname.as_str()).collect();
                        let left = (not_after - now) as f64 / 86_400.0;
                        let when = if left < 0.0 {
                            format!("expired {:.1} days ago", -left)
                        } else {
                            format!("in {left:.1} days")
                        };
                        let reasons = why_not_renewed(p, now)
                            .iter()
                            .map(|r| format!("\n    {r}"))
                            .collect::<String>();
                        format!(
                            "{}  {}  expires {} ({when})  {}  {}{reasons}",
                            p.id.as_str(),
                            p.state.as_str(),
                            rfc3339(*not_after),
                            p.zone_id.as_str(),
                            hosts.join(","),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Why the pack's certificate is not renewed yet, in words: the window not open yet, each
/// host's last failed check, the pack's errors (CAA, issuance, deployment).
fn why_not_renewed(p: &Pack, now: i64) -> Vec<String> {
    let mut out = Vec::new();
    match p.state {
        PackState::Expired => out.push("expired: not renewed before its end".to_owned()),
        PackState::Active => {}
        other => out.push(format!("the pack is {}", other.as_str())),
    }
    if let Some(starts) = p.renewal_starts_at()
        && now < starts
    {
        out.push(format!("renewal window opens on {}", rfc3339(starts)));
        return out;
    }
    if let Some(gives_up) = p.renewal_gives_up_at()
        && now >= gives_up
        && p.state == PackState::Active
    {
        out.push(format!(
            "renewal gave up on {} (24 h before expiry)",
            rfc3339(gives_up)
        ));
    }
    for host in &p.hosts {
        if let Some(reason) = host.check.reason.as_deref().filter(|r| !r.is_empty()) {
            out.push(format!(
                "{}: {reason} (next check {})",
                host.hostname.as_str(),
                rfc3339(host.check.next_due_at)
            ));
        }
    }
    out.extend(p.errors.iter().cloned());
    if out.is_empty() {
        out.push("renewal in progress: no failure recorded yet".to_owned());
    }
    out
}
