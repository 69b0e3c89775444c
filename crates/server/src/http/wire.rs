//! The one place where model types become wire types.

use crate::clock::rfc3339;
use crate::config::{Config, VerificationForm};
use crate::model::{DcvMethod, DcvRecord, Pack, PackHost, PackState, Zone};
use serde_json::{Map, Value, json};
use zonecert_api as api;

/// The pack status as Cloudflare names it.
pub fn pack_status(state: PackState) -> api::PackStatus {
    api::PackStatus::parse_known(state.as_str())
        .unwrap_or_else(|| api::PackStatus::Other(state.as_str().to_owned()))
}

/// The verification view's word, derived from the pack's state.
pub fn certificate_status(state: PackState) -> api::CertificateStatus {
    pack_status(state)
        .certificate_status()
        .unwrap_or(api::CertificateStatus::Initializing)
}

/// The signature algorithm: the issued certificate's, or the one the pack's key type
/// will produce (ECDSA P-256 by default).
fn signature(pack: &Pack) -> api::Signature {
    match &pack.certificate {
        Some(cert) => cert
            .signature
            .parse()
            .unwrap_or(api::Signature::EcdsaWithSha256),
        None => api::Signature::EcdsaWithSha256,
    }
}

/// The method as the pack API shows it. Its schema allows txt, http and email only:
/// delegated DCV (cname) is still a TXT check by the CA, shown as `txt` with the
/// delegation in `dcv_delegation_records` (a decision written in ARCHITECTURE.md).
fn pack_method(method: DcvMethod) -> api::ValidationMethod {
    match method {
        DcvMethod::Txt | DcvMethod::Cname => api::ValidationMethod::Txt,
        DcvMethod::Http => api::ValidationMethod::Http,
        DcvMethod::Email => api::ValidationMethod::Email,
    }
}

fn record_status(host: &PackHost) -> String {
    match host.check.verified {
        Some(true) => "active".into(),
        _ => "pending".into(),
    }
}

/// A record in the pack API's `validation_records` shape.
fn validation_record(host: &PackHost) -> api::ValidationRecord {
    let mut r = api::ValidationRecord {
        status: Some(record_status(host)),
        ..Default::default()
    };
    match &host.record {
        DcvRecord::Txt { name, value } => {
            r.txt_name = Some(name.clone());
            r.txt_value = Some(value.clone());
        }
        DcvRecord::Http { url, body } => {
            r.http_url = Some(url.clone());
            r.http_body = Some(body.clone());
        }
        DcvRecord::Cname { name, target } => {
            r.cname = Some(name.clone());
            r.cname_target = Some(target.clone());
        }
        DcvRecord::Email { emails } => r.emails = Some(emails.clone()),
    }
    r
}

/// A pack as the certificate-pack endpoints return it.
pub fn pack(pack: &Pack) -> api::CertificatePack {
    let hosts: Vec<String> = pack.hosts.iter().map(|h| h.hostname.to_string()).collect();
    let certificates = pack
        .certificate
        .iter()
        .map(|c| api::Certificate {
            id: c.id.clone(),
            hosts: hosts.clone(),
            status: "active".into(),
            bundle_method: Some("ubiquitous".into()),
            expires_on: Some(rfc3339(c.not_after)),
            issuer: Some(c.issuer.clone()),
            modified_on: Some(rfc3339(c.issued_at)),
            priority: Some(0.0),
            signature: c.signature.parse().ok(),
            uploaded_on: Some(rfc3339(c.issued_at)),
            zone_id: Some(pack.zone_id.to_string()),
            extra: Map::new(),
        })
        .collect();
    let delegated = pack.method == DcvMethod::Cname;
    let records: Vec<api::ValidationRecord> = pack.hosts.iter().map(validation_record).collect();
    let errors: Vec<api::ValidationError> = pack
        .hosts
        .iter()
        .filter(|h| h.check.verified == Some(false))
        .filter_map(|h| {
            h.check.reason.as_ref().map(|reason| api::ValidationError {
                message: Some(format!("{}: {reason}", h.hostname)),
            })
        })
        .chain(pack.errors.iter().map(|e| api::ValidationError {
            message: Some(e.clone()),
        }))
        .collect();
    api::CertificatePack {
        id: pack.id.to_string(),
        pack_type: api::PackType::Advanced,
        hosts,
        status: pack_status(pack.state),
        certificates,
        certificate_authority: pack.ca.as_str().parse().ok(),
        cloudflare_branding: Some(pack.cloudflare_branding),
        dcv_delegation_records: (delegated && pack.state != PackState::Initializing)
            .then(|| records.clone()),
        primary_certificate: pack.certificate.as_ref().map(|c| c.id.clone()),
        validation_errors: (!errors.is_empty()).then_some(errors),
        validation_method: Some(pack_method(pack.method)),
        validation_records: (!delegated && pack.state != PackState::Initializing)
            .then_some(records),
        validity_days: Some(pack.validity_days),
        extra: Map::new(),
    }
}

/// The verification view's method: its enum has http, cname and txt only.
fn verification_method(method: DcvMethod) -> Option<api::ValidationMethod> {
    match method {
        DcvMethod::Txt => Some(api::ValidationMethod::Txt),
        DcvMethod::Http => Some(api::ValidationMethod::Http),
        DcvMethod::Cname => Some(api::ValidationMethod::Cname),
        DcvMethod::Email => None,
    }
}

fn verification_type(method: DcvMethod) -> Option<api::VerificationType> {
    match method {
        DcvMethod::Txt | DcvMethod::Cname => Some(api::VerificationType::Cname),
        DcvMethod::Http => Some(api::VerificationType::MetaTag),
        DcvMethod::Email => None,
    }
}

/// `verification_info` in zonecert's default form: the spec's `record_name` and
/// `record_target` name the keys that carry the record, and those keys carry it.
fn verification_info(record: &DcvRecord) -> api::ValidationRecord {
    let mut r = api::ValidationRecord::default();
    match record {
        DcvRecord::Txt { name, value } => {
            r.record_name = Some("txt_name".into());
            r.record_target = Some("txt_value".into());
            r.txt_name = Some(name.clone());
            r.txt_value = Some(value.clone());
        }
        DcvRecord::Http { url, body } => {
            r.record_name = Some("http_url".into());
            r.record_target = Some("http_body".into());
            r.http_url = Some(url.clone());
            r.http_body = Some(body.clone());
        }
        DcvRecord::Cname { name, target } => {
            r.record_name = Some("cname".into());
            r.record_target = Some("cname_target".into());
            r.cname = Some(name.clone());
            r.cname_target = Some(target.clone());
        }
        DcvRecord::Email { emails } => r.emails = Some(emails.clone()),
    }
    r
}

/// Why a pending pack's hosts are not checked at all, when nothing will check them until
/// someone acts: a brand-check hold (an operator approves), or a dev server whose
/// lifecycle is off (started without resolvers). `None` when the checks run.
fn not_checked_because(pack: &Pack, config: &Config) -> Option<String> {
    if pack.state != PackState::PendingValidation {
        return None;
    }
    if pack.brand_check {
        let hosts = || pack.hosts.iter().map(|h| h.hostname.as_str());
        let why = match config.brand_keyword(hosts()) {
            Some(keyword) => {
                let keyword = keyword.to_ascii_lowercase();
                let host = hosts()
                    .find(|h| h.to_ascii_lowercase().contains(&keyword))
                    .unwrap_or_default();
                format!("host {host} matches brand keyword {keyword:?}")
            }
            // The keywords changed since the order: the hold stays until decided.
            None => "brand check".to_owned(),
        };
        return Some(format!(
            "held for operator approval: {why} (zonecert pack approve {})",
            pack.id
        ));
    }
    if !config.lifecycle && config.dev {
        return Some(
            "not checked: the lifecycle is off (dev mode without --dcv-resolvers); restart \
             with --dcv-resolvers ADDRESS:PORT (a DNS server you control) to run the checks"
                .to_owned(),
        );
    }
    None
}

/// What zonecert adds to each item so a person sees *why* it is pending: the last
/// check's time and reason and when the next check is due, or why no check will run.
/// (Extra keys: the official SDKs' models accept them.)
fn check_details(host: &PackHost, pack: &Pack, config: &Config) -> Map<String, Value> {
    let mut extra = Map::new();
    if let Some(at) = host.check.last_checked_at {
        extra.insert("last_checked_on".into(), json!(rfc3339(at)));
    }
    let pending = pack.state == PackState::PendingValidation && host.check.verified != Some(true);
    let renewal_failing = renewal_check_failing(host, pack);
    let stopped = pending.then(|| not_checked_because(pack, config)).flatten();
    if let Some(why) = stopped {
        extra.insert("verification_error".into(), json!(why));
        return extra;
    }
    match &host.check.reason {
        // A passed check carries a note only when the test controls' auto-validation
        // passed it without a lookup: the view says so, so a test never mistakes it
        // for a real validation.
        Some(note) if host.check.verified == Some(true) => {
            extra.insert(
                "validated_automatically".into(),
                json!(note == crate::controls::AUTO_VALIDATED),
            );
            extra.insert("verification_note".into(), json!(note));
        }
        Some(reason) => {
            extra.insert("verification_error".into(), json!(reason));
        }
        None if pack.state == PackState::Initializing => {
            extra.insert(
                "verification_error".into(),
                json!(format!(
                    "waiting for the order at {}: the record to create appears once the CA \
                     answers",
                    pack.ca.as_str()
                )),
            );
        }
        None => {}
    }
    // A failing renewal check is retried on the schedule until renewal gives up (a day
    // before expiry); after that no check is coming.
    let renewal_checks_again = renewal_failing
        && pack
            .renewal_gives_up_at()
            .is_some_and(|gives_up| host.check.next_due_at < gives_up);
    if pending || renewal_checks_again {
        extra.insert(
            "next_check_on".into(),
            json!(rfc3339(host.check.next_due_at)),
        );
    }
    extra
}

/// Whether `host` of an active pack failed its last renewal check. An active pack's hosts
/// all passed before its certificate was issued, and a renewal's checks that pass set
/// them back to passed: a host of an active pack that did not pass is a renewal check
/// failing (its reason says why), read from the stored pack without a clock, so the
/// cached answer stays true.
fn renewal_check_failing(host: &PackHost, pack: &Pack) -> bool {
    pack.state == PackState::Active && host.check.verified == Some(false)
}

/// The verification items of a zone's packs, in the shape `config` asks for.
pub fn verifications<'a>(
    packs: impl IntoIterator<Item = &'a Pack>,
    config: &Config,
) -> Vec<api::Verification> {
    let mut items = Vec::new();
    for p in packs {
        let base = api::Verification {
            certificate_status: certificate_status(p.state),
            brand_check: Some(p.brand_check),
            cert_pack_uuid: Some(p.id.to_string()),
            hostname: None,
            signature: Some(signature(p)),
            validation_method: verification_method(p.method),
            verification_info: None,
            verification_status: None,
            verification_type: verification_type(p.method),
            extra: Map::new(),
        };
        match config.verification_form {
            VerificationForm::PerHost => {
                for host in &p.hosts {
                    // An ACME pack's records exist once its CA's order is placed.
                    let info = (p.state != PackState::Initializing)
                        .then(|| api::VerificationInfo::Record(verification_info(&host.record)));
                    items.push(api::Verification {
                        hostname: Some(host.hostname.to_string()),
                        verification_info: info,
                        verification_status: host.check.verified,
                        extra: check_details(host, p, config),
                        ..base.clone()
                    });
                }
            }
            VerificationForm::Live => {
                let checked: Vec<bool> = p.hosts.iter().filter_map(|h| h.check.verified).collect();
                let status = (checked.len() == p.hosts.len()).then(|| checked.iter().all(|v| *v));
                let mut extra = Map::new();
                if let Some(why) = not_checked_because(p, config) {
                    extra.insert("verification_error".into(), json!(why));
                }
                items.push(api::Verification {
                    hostname: p.hosts.first().map(|h| h.hostname.to_string()),
                    verification_info: (p.state != PackState::Initializing).then(|| {
                        api::VerificationInfo::Records(
                            p.hosts.iter().map(validation_record).collect(),
                        )
                    }),
                    verification_status: status,
                    extra,
                    ..base
                });
            }
        }
    }
    items
}

/// A zone as the zone endpoints return it (the Cloudflare zone object's main keys).
pub fn zone(zone: &Zone) -> api::Zone {
    let created = rfc3339(zone.created_at);
    let extra = json!({
        "paused": false,
        "type": "full",
        "development_mode": 0,
        "name_servers": [],
        "original_name_servers": null,
        "original_registrar": null,
        "original_dnshost": null,
        "activated_on": created,
        "meta": {},
        "owner": {"id": null, "type": "user", "email": null},
        "account": {"id": "", "name": ""},
        "permissions": [],
    });
    api::Zone {
        id: zone.id.to_string(),
        name: zone.name.to_string(),
        status: Some("active".into()),
        created_on: Some(created.clone()),
        modified_on: Some(created),
        extra: match extra {
            Value::Object(m) => m,
            _ => Map::new(),
        },
    }
}
