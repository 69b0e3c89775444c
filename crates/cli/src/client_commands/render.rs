//! What the client commands print: tables that fit [`WIDTH`] columns, a pack's details,
//! the records a person must create, and why a host's last check failed.

use super::*;

/// The terminal width tables are made to fit.
pub(super) const WIDTH: u16 = 80;

pub(super) fn opt_number(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

pub(super) fn display_or_dash<T: std::fmt::Display>(value: Option<&T>) -> String {
    value.map_or_else(|| "-".into(), ToString::to_string)
}

/// The packs of a verification answer, in the order they first appear.
pub(super) fn by_pack(items: &[Verification]) -> Vec<(String, Vec<&Verification>)> {
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
pub(super) fn host_of(item: &Verification) -> String {
    if let Some(host) = &item.hostname {
        return host.clone();
    }
    item.verification_info
        .as_ref()
        .and_then(|info| info.records().iter().find_map(record_host))
        .unwrap_or_else(|| "-".into())
}

pub(super) fn record_host(record: &ValidationRecord) -> Option<String> {
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

pub(super) fn verified_word(item: &Verification) -> &'static str {
    match item.verification_status {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

pub(super) fn verification_table(items: &[Verification]) -> String {
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

pub(super) fn packs_table(packs: &[CertificatePack]) -> String {
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

pub(super) fn pack_details(pack: &CertificatePack) -> String {
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
pub(super) fn record_instructions(record: &ValidationRecord) -> Vec<String> {
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
pub(super) fn item_reason(
    item: &Verification,
    pack: Option<&CertificatePack>,
    host: &str,
) -> String {
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

/// Columns that fit [`WIDTH`] (comfy-table's dynamic arrangement: the long columns give
/// up characters), one line a row, a shortened cell ending with `…`; no borders, columns
/// two spaces apart.
pub(super) struct Table(comfy_table::Table);

impl Table {
    pub(super) fn new(headers: &[&str]) -> Table {
        let mut table = comfy_table::Table::new();
        table
            .load_preset(comfy_table::presets::NOTHING)
            .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
            .set_width(WIDTH)
            .set_truncation_indicator("…")
            .set_header(headers.to_vec());
        let last = headers.len().saturating_sub(1);
        for (i, column) in table.column_iter_mut().enumerate() {
            column.set_padding((0, if i == last { 0 } else { 2 }));
        }
        Table(table)
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        let mut row = comfy_table::Row::from(cells);
        // A cell too long for its column is cut short rather than wrapped.
        row.max_height(1);
        self.0.add_row(row);
    }

    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        for line in self.0.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
        assert!(
            text.lines()
                .all(|l| l.chars().count() <= usize::from(WIDTH)),
            "{text}"
        );
        assert!(text.contains('…'), "{text}");
        assert!(
            text.contains("pack a77f8bd7-3b47-46b4-a6f1-75cf98109948"),
            "{text}"
        );
        assert!(text.contains("pending_deployment"), "{text}");
    }

    #[test]
    fn tables_have_no_borders_and_columns_two_spaces_apart() {
        let mut table = Table::new(&["ID", "STATUS"]);
        table.row(vec![
            "a77f8bd7-3b47-46b4-a6f1-75cf98109948".into(),
            "active".into(),
        ]);
        table.row(vec!["x".into(), "pending_validation".into()]);
        assert_eq!(
            table.render(),
            "ID                                    STATUS\n\
             a77f8bd7-3b47-46b4-a6f1-75cf98109948  active\n\
             x                                     pending_validation\n"
        );
    }
}
