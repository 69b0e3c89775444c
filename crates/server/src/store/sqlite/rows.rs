//! Decoding the joined pack and host rows into model types.

use super::corrupt;
use crate::model::{
    CaChoice, DcvMethod, DcvRecord, HostCheck, Hostname, IssuedCertificate, Pack, PackHost, PackId,
    PackState, ZoneId,
};
use crate::store::StoreError;
use rusqlite::Row;

pub(super) const PACK_COLUMNS: &str = "p.id, p.zone_id, p.state, p.method, p.validity_days, p.ca, \
    p.cloudflare_branding, p.brand_check, p.errors, p.created_at, p.updated_at, \
    p.stage_deadline, p.cert_id, p.cert_chain_pem, p.cert_not_before, p.cert_not_after, \
    p.cert_issuer, p.cert_signature, p.cert_issued_at, p.version, p.order_ref, \
    p.cert_renew_at, p.cert_acme_directory";
pub(super) const HOST_COLUMNS: &str = "h.hostname, h.record_kind, h.record_name, h.record_value, \
    h.verified, h.last_checked_at, h.reason, h.attempts, h.next_due_at";

struct RawPack {
    id: String,
    zone_id: String,
    state: String,
    method: String,
    validity_days: u32,
    ca: String,
    cloudflare_branding: bool,
    brand_check: bool,
    errors: String,
    created_at: i64,
    updated_at: i64,
    stage_deadline: i64,
    cert_id: Option<String>,
    cert_chain_pem: Option<String>,
    cert_not_before: Option<i64>,
    cert_not_after: Option<i64>,
    cert_issuer: Option<String>,
    cert_signature: Option<String>,
    cert_issued_at: Option<i64>,
    version: i64,
    order_ref: Option<String>,
    cert_renew_at: Option<i64>,
    cert_acme_directory: Option<String>,
}

struct RawHost {
    hostname: String,
    kind: String,
    name: String,
    value: String,
    verified: Option<bool>,
    last_checked_at: Option<i64>,
    reason: Option<String>,
    attempts: u32,
    next_due_at: i64,
}

/// The pack columns (`PACK_COLUMNS`, first) of a joined row.
fn raw_pack(r: &Row<'_>) -> rusqlite::Result<RawPack> {
    Ok(RawPack {
        id: r.get(0)?,
        zone_id: r.get(1)?,
        state: r.get(2)?,
        method: r.get(3)?,
        validity_days: r.get(4)?,
        ca: r.get(5)?,
        cloudflare_branding: r.get(6)?,
        brand_check: r.get(7)?,
        errors: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        stage_deadline: r.get(11)?,
        cert_id: r.get(12)?,
        cert_chain_pem: r.get(13)?,
        cert_not_before: r.get(14)?,
        cert_not_after: r.get(15)?,
        cert_issuer: r.get(16)?,
        cert_signature: r.get(17)?,
        cert_issued_at: r.get(18)?,
        version: r.get(19)?,
        order_ref: r.get(20)?,
        cert_renew_at: r.get(21)?,
        cert_acme_directory: r.get(22)?,
    })
}

/// The host columns (`HOST_COLUMNS`, after the pack's) of a joined row.
fn raw_host(r: &Row<'_>) -> rusqlite::Result<RawHost> {
    Ok(RawHost {
        hostname: r.get(23)?,
        kind: r.get(24)?,
        name: r.get(25)?,
        value: r.get(26)?,
        verified: r.get(27)?,
        last_checked_at: r.get(28)?,
        reason: r.get(29)?,
        attempts: r.get(30)?,
        next_due_at: r.get(31)?,
    })
}

/// Folds joined rows (ordered by pack, then host) into packs. A pack's own columns
/// repeat on each of its host rows; they are decoded once, on its first row.
pub(super) fn read_packs(mut rows: rusqlite::Rows<'_>) -> Result<Vec<Pack>, StoreError> {
    let mut packs: Vec<Pack> = Vec::new();
    while let Some(row) = rows.next()? {
        let continues = match (packs.last(), row.get_ref(0)?.as_str()) {
            (Some(last), Ok(id)) => last.id.as_str() == id,
            _ => false,
        };
        if !continues {
            packs.push(pack_from_raw(raw_pack(row)?)?);
        }
        let host = host_from_raw(raw_host(row)?)?;
        if let Some(pack) = packs.last_mut() {
            pack.hosts.push(host);
        }
    }
    Ok(packs)
}

fn pack_from_raw(p: RawPack) -> Result<Pack, StoreError> {
    let certificate = match (
        p.cert_id,
        p.cert_chain_pem,
        p.cert_not_before,
        p.cert_not_after,
    ) {
        (Some(id), Some(chain_pem), Some(not_before), Some(not_after)) => Some(IssuedCertificate {
            id,
            chain_pem,
            not_before,
            not_after,
            issuer: p.cert_issuer.unwrap_or_default(),
            signature: p.cert_signature.unwrap_or_default(),
            issued_at: p.cert_issued_at.unwrap_or(not_before),
            renew_at: p.cert_renew_at,
            acme_directory: p.cert_acme_directory,
        }),
        _ => None,
    };
    Ok(Pack {
        id: PackId::parse(&p.id).map_err(|_| corrupt("pack id", &p.id))?,
        zone_id: ZoneId::parse(&p.zone_id).map_err(|_| corrupt("zone id", &p.zone_id))?,
        state: PackState::parse(&p.state).ok_or_else(|| corrupt("pack state", &p.state))?,
        method: DcvMethod::parse(&p.method).ok_or_else(|| corrupt("method", &p.method))?,
        validity_days: p.validity_days,
        ca: CaChoice::parse(&p.ca).ok_or_else(|| corrupt("certificate authority", &p.ca))?,
        cloudflare_branding: p.cloudflare_branding,
        brand_check: p.brand_check,
        hosts: Vec::new(),
        errors: serde_json::from_str(&p.errors).map_err(|_| corrupt("pack errors", &p.errors))?,
        created_at: p.created_at,
        updated_at: p.updated_at,
        stage_deadline: p.stage_deadline,
        certificate,
        order_ref: p.order_ref,
        version: p.version,
    })
}

fn host_from_raw(h: RawHost) -> Result<PackHost, StoreError> {
    let method = DcvMethod::parse(&h.kind).ok_or_else(|| corrupt("record kind", &h.kind))?;
    let record = match method {
        DcvMethod::Txt => DcvRecord::Txt {
            name: h.name,
            value: h.value,
        },
        DcvMethod::Http => DcvRecord::Http {
            url: h.name,
            body: h.value,
        },
        DcvMethod::Cname => DcvRecord::Cname {
            name: h.name,
            target: h.value,
        },
        DcvMethod::Email => DcvRecord::Email {
            emails: h.value.split(',').map(str::to_owned).collect(),
        },
    };
    Ok(PackHost {
        hostname: Hostname::parse(&h.hostname).map_err(|_| corrupt("host", &h.hostname))?,
        record,
        check: HostCheck {
            verified: h.verified,
            last_checked_at: h.last_checked_at,
            reason: h.reason,
            attempts: h.attempts,
            next_due_at: h.next_due_at,
        },
    })
}
