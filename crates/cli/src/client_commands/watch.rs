//! `zonecert ssl verification watch`: polls until every pack is active (or failed, or
//! the timeout passes), printing what changed and what to do.

use super::render::*;
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PackOutcome {
    Active,
    Pending,
    Failed,
}

pub(super) fn outcome(members: &[&Verification]) -> PackOutcome {
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
pub(super) fn watch_block(
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

pub(super) async fn watch(
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
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
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

pub(super) fn show_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}.{}s", secs, d.subsec_millis() / 100)
    }
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
}
