//! Decoding rows into model types. Every column is read with `try_get`: a column of an
//! unexpected type is an error to report, never a panic.

use super::corrupt;
use crate::model::{
    CaChoice, DcvMethod, DcvRecord, HostCheck, Hostname, IssuedCertificate, Pack, PackHost, PackId,
    PackState, Zone, ZoneId,
};
use crate::store::StoreError;
use tokio_postgres::Row;

pub(super) const PACK_COLUMNS: &str = "p.id, p.zone_id, p.state, p.method, p.validity_days, p.ca, \
    p.cloudflare_branding, p.brand_check, p.errors, p.created_at, p.updated_at, \
    p.stage_deadline, p.cert_id, p.cert_chain_pem, p.cert_not_before, p.cert_not_after, \
    p.cert_issuer, p.cert_signature, p.cert_issued_at, p.version, p.order_ref, \
    p.cert_renew_at, p.cert_acme_directory";
pub(super) const HOST_COLUMNS: &str = "h.hostname, h.record_kind, h.record_name, h.record_value, \
    h.verified, h.last_checked_at, h.reason, h.attempts, h.next_due_at";

pub(super) const ZONE_COLUMNS: &str = "id, name, created_at";

/// A zone from its columns ([`ZONE_COLUMNS`]).
pub(super) fn zone(r: &Row) -> Result<Zone, StoreError> {
    zone_at(r, 0)
}

/// A zone from its columns ([`ZONE_COLUMNS`]) starting at column `at`.
pub(super) fn zone_at(r: &Row, at: usize) -> Result<Zone, StoreError> {
    let id: &str = r.try_get(at)?;
    let name: &str = r.try_get(at + 1)?;
    Ok(Zone {
        id: ZoneId::parse(id).map_err(|_| corrupt("zone id", id))?,
        name: Hostname::parse(name).map_err(|_| corrupt("zone name", name))?,
        created_at: r.try_get(at + 2)?,
    })
}

fn small(value: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| corrupt(what, &value.to_string()))
}

/// Folds joined rows (ordered by pack, then host) into packs. A pack's own columns
/// repeat on each of its host rows; they are decoded once, on its first row.
pub(super) fn read_packs(rows: &[Row]) -> Result<Vec<Pack>, StoreError> {
    let mut packs: Vec<Pack> = Vec::new();
    for row in rows {
        let id: &str = row.try_get(0)?;
        if packs.last().is_none_or(|last| last.id.as_str() != id) {
            packs.push(pack(row)?);
        }
        let host = host(row)?;
        if let Some(pack) = packs.last_mut() {
            pack.hosts.push(host);
        }
    }
    Ok(packs)
}

fn pack(r: &Row) -> Result<Pack, StoreError> {
    let id: String = r.try_get(0)?;
    let zone_id: String = r.try_get(1)?;
    let state: String = r.try_get(2)?;
    let method: String = r.try_get(3)?;
    let ca: String = r.try_get(5)?;
    let errors: String = r.try_get(8)?;
    let cert_id: Option<String> = r.try_get(12)?;
    let cert_chain_pem: Option<String> = r.try_get(13)?;
    let cert_not_before: Option<i64> = r.try_get(14)?;
    let cert_not_after: Option<i64> = r.try_get(15)?;
    let certificate = match (cert_id, cert_chain_pem, cert_not_before, cert_not_after) {
        (Some(id), Some(chain_pem), Some(not_before), Some(not_after)) => {
            let issuer: Option<String> = r.try_get(16)?;
            let signature: Option<String> = r.try_get(17)?;
            let issued_at: Option<i64> = r.try_get(18)?;
            let renew_at: Option<i64> = r.try_get(21)?;
            let acme_directory: Option<String> = r.try_get(22)?;
            Some(IssuedCertificate {
                id,
                chain_pem,
                not_before,
                not_after,
                issuer: issuer.unwrap_or_default(),
                signature: signature.unwrap_or_default(),
                issued_at: issued_at.unwrap_or(not_before),
                renew_at,
                acme_directory,
            })
        }
        _ => None,
    };
    Ok(Pack {
        id: PackId::parse(&id).map_err(|_| corrupt("pack id", &id))?,
        zone_id: ZoneId::parse(&zone_id).map_err(|_| corrupt("zone id", &zone_id))?,
        state: PackState::parse(&state).ok_or_else(|| corrupt("pack state", &state))?,
        method: DcvMethod::parse(&method).ok_or_else(|| corrupt("method", &method))?,
        validity_days: small(r.try_get(4)?, "validity days")?,
        ca: CaChoice::parse(&ca).ok_or_else(|| corrupt("certificate authority", &ca))?,
        cloudflare_branding: r.try_get(6)?,
        brand_check: r.try_get(7)?,
        hosts: Vec::new(),
        errors: serde_json::from_str(&errors).map_err(|_| corrupt("pack errors", &errors))?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
        stage_deadline: r.try_get(11)?,
        certificate,
        order_ref: r.try_get(20)?,
        version: r.try_get(19)?,
    })
}

/// The host columns ([`HOST_COLUMNS`], after the pack's) of a joined row.
fn host(r: &Row) -> Result<PackHost, StoreError> {
    let hostname: String = r.try_get(23)?;
    let kind: String = r.try_get(24)?;
    let name: String = r.try_get(25)?;
    let value: String = r.try_get(26)?;
    let method = DcvMethod::parse(&kind).ok_or_else(|| corrupt("record kind", &kind))?;
    let record = match method {
        DcvMethod::Txt => DcvRecord::Txt { name, value },
        DcvMethod::Http => DcvRecord::Http {
            url: name,
            body: value,
        },
        DcvMethod::Cname => DcvRecord::Cname {
            name,
            target: value,
        },
        DcvMethod::Email => DcvRecord::Email {
            emails: value.split(',').map(str::to_owned).collect(),
        },
    };
    Ok(PackHost {
        hostname: Hostname::parse(&hostname).map_err(|_| corrupt("host", &hostname))?,
        record,
        check: HostCheck {
            verified: r.try_get(27)?,
            last_checked_at: r.try_get(28)?,
            reason: r.try_get(29)?,
            attempts: small(r.try_get(30)?, "attempts")?,
            next_due_at: r.try_get(31)?,
        },
    })
}
