//! CAA (RFC 8659): may this CA issue for this host?

use futures_util::stream::{FuturesOrdered, StreamExt};
use hickory_resolver::proto::rr::rdata::CAA;
use hickory_resolver::proto::rr::{RData, RecordType};

use super::Validator;
use super::dns;

/// Property tags this checker understands; an unknown tag flagged critical forbids issuance.
const KNOWN_TAGS: &[&str] = &[
    "issue",
    "issuewild",
    "iodef",
    "contactemail",
    "contactphone",
    "issuemail",
    "issuevmc",
];

/// Who asks to issue, as CAA records may restrict it: the CA's issuer domain names, and
/// (RFC 8657) the ACME account and validation method in use, when known.
#[derive(Debug, Clone, Default)]
pub struct CaaRequest {
    /// Issuer domain names of the CA (`letsencrypt.org`); any one of them allows.
    pub identities: Vec<String>,
    /// The ACME account URI, matched against an `accounturi` parameter.
    pub account_uri: Option<String>,
    /// The ACME method (`dns-01`, `http-01`), matched against `validationmethods`.
    pub method: Option<String>,
}

pub(super) async fn check(
    validator: &Validator,
    host: &str,
    request: &CaaRequest,
) -> Result<(), String> {
    let host = dns::display_name(host);
    let (wildcard, base) = match host.strip_prefix("*.") {
        Some(base) => (true, base.to_owned()),
        None => (false, host.clone()),
    };
    if base.is_empty() || base.contains('*') {
        return Err(format!(
            "{host:?} is not a host name CAA can be checked for"
        ));
    }
    let timeout = validator.inner.config.timeout;
    // The relevant record set is the one at the closest name, going up from the host, that has
    // CAA records (RFC 8659 section 3). The root is never asked. Every name is asked at once
    // (as Let's Encrypt's Boulder does) and the answers read closest first, as they come:
    // that decides exactly as asking one after another would, without waiting for the
    // names above a decisive answer. Asked in turn, each NXDOMAIN was a round trip before
    // the parent's question, and the check as slow as the tree was deep.
    let mut names = vec![base.as_str()];
    while let Some((_, parent)) = names.last().and_then(|n| n.split_once('.')) {
        if parent.is_empty() {
            break;
        }
        names.push(parent);
    }
    let mut answers: FuturesOrdered<_> = names
        .iter()
        .map(|&name| async move { (name, validator.lookup(name, RecordType::CAA).await) })
        .collect();
    while let Some((name, answer)) = answers.next().await {
        match answer {
            Ok(records) => {
                let set: Vec<&CAA> = records
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::CAA(caa) => Some(caa),
                        _ => None,
                    })
                    .collect();
                if !set.is_empty() {
                    return evaluate(&set, name, &host, wildcard, request);
                }
            }
            Err(failure) if failure.is_absent() => {}
            // RFC 8659 section 3: a failed lookup must not be taken as permission.
            Err(failure) => return Err(failure.describe(RecordType::CAA, name, timeout)),
        }
    }
    Ok(())
}

/// Applies one CAA record set found at `at` to a request for `host`.
fn evaluate(
    set: &[&CAA],
    at: &str,
    host: &str,
    wildcard: bool,
    request: &CaaRequest,
) -> Result<(), String> {
    if let Some(critical) = set.iter().find(|caa| {
        caa.issuer_critical && !KNOWN_TAGS.contains(&caa.tag.to_ascii_lowercase().as_str())
    }) {
        return Err(format!(
            "CAA at {at} has an unknown critical property {:?}, which forbids issuance",
            critical.tag
        ));
    }
    let with_tag = |tag: &str| -> Vec<&CAA> {
        set.iter()
            .copied()
            .filter(|caa| caa.tag.eq_ignore_ascii_case(tag))
            .collect()
    };
    let issuewild = with_tag("issuewild");
    let (tag, properties) = if wildcard && !issuewild.is_empty() {
        ("issuewild", issuewild)
    } else {
        ("issue", with_tag("issue"))
    };
    if properties.is_empty() {
        // Only other properties (iodef, ...): no restriction on issuers.
        return Ok(());
    }
    let wanted: Vec<&str> = request
        .identities
        .iter()
        .map(|i| i.trim_end_matches('.'))
        .collect();
    let issuers: Vec<String> = properties
        .iter()
        .filter_map(|caa| issuer_domain(&caa.value))
        .collect();
    let mut restricted = Vec::new();
    for caa in &properties {
        let Some(issuer) = issuer_domain(&caa.value) else {
            continue;
        };
        if !wanted.iter().any(|w| issuer.eq_ignore_ascii_case(w)) {
            continue;
        }
        // RFC 8657: the property may bind the issuer to one account and some methods.
        match parameters_refuse(&caa.value, request) {
            None => return Ok(()),
            Some(why) => restricted.push(why),
        }
    }
    if let Some(why) = restricted.first() {
        return Err(format!(
            "CAA at {at} allows {} for {host} only {why}",
            wanted.join(" / ")
        ));
    }
    let wanted = wanted.join(" / ");
    let mut named: Vec<&str> = issuers
        .iter()
        .map(String::as_str)
        .filter(|i| !i.is_empty())
        .collect();
    named.sort_unstable();
    named.dedup();
    let which = if tag == "issuewild" {
        "CAA issuewild"
    } else {
        "CAA"
    };
    Err(if named.is_empty() {
        format!("{which} at {at} forbids issuance by any CA for {host}")
    } else {
        format!(
            "{which} at {at} allows only {}, not {wanted}, to issue for {host}",
            named.join(", ")
        )
    })
}

/// Why the RFC 8657 parameters of a matching `issue` value refuse `request`, if they do:
/// an `accounturi` other than the account in use, or a `validationmethods` list without
/// the method in use. A parameter is checked only when the request knows what it binds
/// (the built-in CA has no ACME account: its checks ignore `accounturi`).
fn parameters_refuse(value: &[u8], request: &CaaRequest) -> Option<String> {
    let value = std::str::from_utf8(value).ok()?;
    for parameter in value.split(';').skip(1) {
        let Some((key, v)) = parameter.split_once('=') else {
            continue;
        };
        let (key, v) = (key.trim(), v.trim());
        if key.eq_ignore_ascii_case("accounturi")
            && let Some(account) = request.account_uri.as_deref()
            && account != v
        {
            return Some(format!(
                "for the ACME account {v} (this server's is {account})"
            ));
        }
        if key.eq_ignore_ascii_case("validationmethods")
            && let Some(method) = request.method.as_deref()
            && !v.split(',').any(|a| a.trim().eq_ignore_ascii_case(method))
        {
            return Some(format!(
                "through {v} (this pack validates through {method})"
            ));
        }
    }
    None
}

/// The issuer domain name of an `issue`/`issuewild` value (`"letsencrypt.org; accounturi=..."`),
/// empty for a value that names no issuer (`";"`), `None` for a malformed one, which names no CA
/// and so authorizes none.
fn issuer_domain(value: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(value).ok()?;
    let domain = value.split(';').next().unwrap_or("").trim();
    let valid = domain.split('.').all(|label| {
        !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if domain.is_empty() || valid {
        Some(domain.trim_end_matches('.').to_owned())
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failed test
mod tests {
    use super::*;

    #[test]
    fn rfc_8657_parameters_bind_the_account_and_the_method() {
        let request = CaaRequest {
            identities: vec!["letsencrypt.org".into()],
            account_uri: Some("https://acme.example/acct/1".into()),
            method: Some("dns-01".into()),
        };
        assert_eq!(parameters_refuse(b"letsencrypt.org", &request), None);
        assert_eq!(
            parameters_refuse(
                b"letsencrypt.org; accounturi=https://acme.example/acct/1; validationmethods=dns-01,http-01",
                &request
            ),
            None
        );
        let other = parameters_refuse(
            b"letsencrypt.org; accounturi=https://acme.example/acct/2",
            &request,
        )
        .unwrap();
        assert!(
            other.contains("acct/2") && other.contains("acct/1"),
            "{other}"
        );
        let method =
            parameters_refuse(b"letsencrypt.org; validationmethods=http-01", &request).unwrap();
        assert!(method.contains("dns-01"), "{method}");
        let unknown = CaaRequest {
            account_uri: None,
            ..request
        };
        assert_eq!(
            parameters_refuse(b"letsencrypt.org; accounturi=x", &unknown),
            None,
            "no account to compare (the built-in CA)"
        );
    }

    #[test]
    fn issuer_domain_takes_the_part_before_parameters() {
        assert_eq!(
            issuer_domain(b"letsencrypt.org").as_deref(),
            Some("letsencrypt.org")
        );
        assert_eq!(
            issuer_domain(b" pki.goog ; accounturi=x").as_deref(),
            Some("pki.goog")
        );
        assert_eq!(issuer_domain(b";").as_deref(), Some(""));
        assert_eq!(issuer_domain(b"").as_deref(), Some(""));
        assert_eq!(issuer_domain(b"bad..name"), None);
        assert_eq!(issuer_domain(b"not a name"), None);
    }
}
