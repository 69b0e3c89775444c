//! The rules an order must follow before it becomes a pack.

use super::ids::Hostname;
use super::pack::{CaChoice, DcvMethod};

/// Most hosts one pack may cover.
pub const MAX_HOSTS: usize = 50;

/// The validity periods anyone may order, in days.
pub const VALIDITY_DAYS: [u32; 4] = [14, 30, 90, 365];

/// A rule an order broke, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderError {
    /// The body field at fault (`hosts`, `validity_days`, ...).
    pub field: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> OrderError {
    OrderError {
        field,
        message: message.into(),
    }
}

/// Checks and normalises an order's hosts and options for a zone whose apex is `apex`.
///
/// Hosts must be 1 to 50 distinct valid names, include the apex, and all lie within
/// the zone; wildcard hosts cannot validate over http (CA/Browser Forum ballot SC45);
/// Let's Encrypt sells 90-day certificates only.
pub fn check_order(
    apex: &Hostname,
    hosts: &[String],
    method: DcvMethod,
    validity_days: u32,
    ca: CaChoice,
) -> Result<Vec<Hostname>, OrderError> {
    if hosts.is_empty() {
        return Err(err("hosts", "hosts must contain at least the zone apex"));
    }
    if hosts.len() > MAX_HOSTS {
        return Err(err(
            "hosts",
            format!(
                "hosts may contain at most {MAX_HOSTS} names, got {}",
                hosts.len()
            ),
        ));
    }
    let mut parsed: Vec<Hostname> = Vec::with_capacity(hosts.len());
    for raw in hosts {
        let host = Hostname::parse(raw).map_err(|e| err("hosts", e.0))?;
        host.check_issuable().map_err(|e| err("hosts", e.0))?;
        if !host.is_within(apex) {
            return Err(err(
                "hosts",
                format!("{host} does not belong to the zone {apex}"),
            ));
        }
        if parsed.contains(&host) {
            return Err(err("hosts", format!("{host} is listed twice")));
        }
        if host.is_wildcard() && method == DcvMethod::Http {
            return Err(err(
                "validation_method",
                format!(
                    "{host} is a wildcard: wildcard hosts cannot be validated over http; use txt"
                ),
            ));
        }
        parsed.push(host);
    }
    if !parsed.contains(apex) {
        return Err(err(
            "hosts",
            format!("hosts must include the zone apex {apex}"),
        ));
    }
    if method == DcvMethod::Cname {
        return Err(err(
            "validation_method",
            "an order validates with txt, http or email; switch to cname afterwards with PATCH /ssl/verification",
        ));
    }
    if !VALIDITY_DAYS.contains(&validity_days) {
        return Err(err(
            "validity_days",
            format!("validity_days must be one of 14, 30, 90, 365, got {validity_days}"),
        ));
    }
    if !ca.allowed_validity_days().contains(&validity_days) {
        return Err(err(
            "validity_days",
            format!(
                "{} issues certificates valid for {:?} days only, got {validity_days}",
                ca.as_str(),
                ca.allowed_validity_days()
            ),
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apex() -> Hostname {
        Hostname::parse("example.com").unwrap()
    }

    fn hosts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn accepts_a_normal_order() {
        let ok = check_order(
            &apex(),
            &hosts(&["example.com", "*.example.com", "WWW.example.com"]),
            DcvMethod::Txt,
            90,
            CaChoice::LetsEncrypt,
        )
        .unwrap();
        assert_eq!(ok[2].as_str(), "www.example.com");
    }

    #[test]
    fn refuses_what_cloudflare_refuses() {
        let cases: Vec<(Vec<String>, DcvMethod, u32, CaChoice, &str)> = vec![
            (
                hosts(&[]),
                DcvMethod::Txt,
                90,
                CaChoice::LetsEncrypt,
                "hosts",
            ),
            (
                hosts(&["www.example.com"]),
                DcvMethod::Txt,
                90,
                CaChoice::LetsEncrypt,
                "hosts",
            ),
            (
                hosts(&["example.com", "example.org"]),
                DcvMethod::Txt,
                90,
                CaChoice::Google,
                "hosts",
            ),
            (
                hosts(&["example.com", "example.com"]),
                DcvMethod::Txt,
                90,
                CaChoice::Google,
                "hosts",
            ),
            (
                hosts(&["example.com", "*.example.com"]),
                DcvMethod::Http,
                90,
                CaChoice::Google,
                "validation_method",
            ),
            (
                hosts(&["example.com"]),
                DcvMethod::Txt,
                60,
                CaChoice::Google,
                "validity_days",
            ),
            (
                hosts(&["example.com"]),
                DcvMethod::Txt,
                30,
                CaChoice::LetsEncrypt,
                "validity_days",
            ),
            (
                hosts(&["example.com"]),
                DcvMethod::Cname,
                90,
                CaChoice::Google,
                "validation_method",
            ),
        ];
        for (h, m, v, ca, field) in cases {
            let e = check_order(&apex(), &h, m, v, ca).unwrap_err();
            assert_eq!(e.field, field, "{h:?} {m:?} {v}: {}", e.message);
        }
        let many: Vec<String> = std::iter::once("example.com".to_string())
            .chain((0..50).map(|i| format!("h{i}.example.com")))
            .collect();
        assert_eq!(
            check_order(&apex(), &many, DcvMethod::Txt, 90, CaChoice::Google)
                .unwrap_err()
                .field,
            "hosts"
        );
    }
}
