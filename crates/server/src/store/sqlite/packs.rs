//! Certificate packs and their hosts: inserts with the zone's quota, optimistic
//! updates, reads and listings.

use super::rows::{HOST_COLUMNS, PACK_COLUMNS, read_packs};
use super::{SqliteStore, clamp, errors_json};
use crate::model::{DcvRecord, Pack, PackId, ZoneId};
use crate::store::cache::Touch;
use crate::store::webhooks::OutboxEvent;
use crate::store::{PackFilter, Page, StoreError};
use rusqlite::{Connection, ToSql, params, params_from_iter};

impl SqliteStore {
    pub(in crate::store) fn insert_pack(
        &self,
        pack: &Pack,
        allocated: u64,
    ) -> Result<(), StoreError> {
        self.write(Touch::Zone(&pack.zone_id), |tx| {
            let used: i64 = tx.query_row(
                "SELECT COUNT(*) FROM packs WHERE zone_id = ?1",
                [pack.zone_id.as_str()],
                |r| r.get(0),
            )?;
            if used.max(0) as u64 >= allocated {
                return Err(StoreError::QuotaExceeded { allocated });
            }
            let changes = PackChanges::of(pack)?;
            let leading: [&dyn ToSql; 5] = [
                &pack.id.as_str(),
                &pack.zone_id.as_str(),
                &pack.validity_days,
                &pack.ca.as_str(),
                &pack.created_at,
            ];
            tx.execute(
                "INSERT INTO packs (id, zone_id, validity_days, ca, created_at, state, method, \
                 cloudflare_branding, brand_check, errors, updated_at, stage_deadline, \
                 cert_id, cert_chain_pem, cert_not_before, cert_not_after, cert_issuer, \
                 cert_signature, cert_issued_at, order_ref, cert_renew_at, cert_acme_directory, \
                 version) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18, ?19, ?20, ?21, ?22, 0)",
                params_from_iter(leading.into_iter().chain(changes.params())),
            )?;
            insert_hosts(tx, pack)?;
            Ok(())
        })
    }

    pub(in crate::store) fn update_pack(
        &self,
        pack: &mut Pack,
        events: &[OutboxEvent],
    ) -> Result<(), StoreError> {
        self.write(Touch::Zone(&pack.zone_id), |tx| {
            update_pack_row(tx, pack, true)?;
            super::outbox::insert_events(tx, events)
        })?;
        pack.version += 1;
        Ok(())
    }

    pub(in crate::store) fn pack(
        &self,
        zone: &ZoneId,
        id: &PackId,
    ) -> Result<Option<Pack>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                 JOIN pack_hosts h ON h.pack_id = p.id \
                 WHERE p.zone_id = ?1 AND p.id = ?2 ORDER BY h.position"
            ))?;
            Ok(read_packs(stmt.query([zone.as_str(), id.as_str()])?)?.pop())
        })
    }

    pub(in crate::store) fn packs_of_zone(&self, zone: &ZoneId) -> Result<Vec<Pack>, StoreError> {
        self.with_conn(|conn| packs_of_zone(conn, zone))
    }

    pub(in crate::store) fn list_packs(
        &self,
        zone: &ZoneId,
        filter: PackFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<Pack>, StoreError> {
        let only_active = filter == PackFilter::Active;
        self.with_conn(|conn| {
            let total: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM packs WHERE zone_id = ?1 AND (?2 = 0 OR state = 'active')",
                )?
                .query_row(params![zone.as_str(), only_active], |r| r.get(0))?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM \
                 (SELECT * FROM packs WHERE zone_id = ?1 AND (?2 = 0 OR state = 'active') \
                  ORDER BY seq LIMIT ?3 OFFSET ?4) p \
                 JOIN pack_hosts h ON h.pack_id = p.id ORDER BY p.seq, h.position"
            ))?;
            let rows = stmt.query(params![
                zone.as_str(),
                only_active,
                clamp(limit),
                clamp(offset)
            ])?;
            Ok(Page {
                items: read_packs(rows)?,
                total: total.max(0) as u64,
            })
        })
    }

    pub(in crate::store) fn count_packs(&self, zone: &ZoneId) -> Result<u64, StoreError> {
        self.with_conn(|conn| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM packs WHERE zone_id = ?1")?
                .query_row([zone.as_str()], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
    }

    pub(in crate::store) fn pack_by_id(&self, id: &PackId) -> Result<Option<Pack>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                 JOIN pack_hosts h ON h.pack_id = p.id \
                 WHERE p.id = ?1 ORDER BY h.position"
            ))?;
            Ok(read_packs(stmt.query([id.as_str()])?)?.pop())
        })
    }

    pub(in crate::store) fn packs_with_cname_target(
        &self,
        target: &str,
    ) -> Result<Vec<Pack>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                 JOIN pack_hosts h ON h.pack_id = p.id \
                 WHERE p.id IN (SELECT pack_id FROM pack_hosts \
                                WHERE record_kind = 'cname' AND record_value = ?1) \
                 ORDER BY p.seq, h.position"
            ))?;
            read_packs(stmt.query([target])?)
        })
    }

    pub(in crate::store) fn has_cname_target_under(&self, name: &str) -> Result<bool, StoreError> {
        self.with_conn(|conn| {
            let found: i64 = conn
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM pack_hosts WHERE record_kind = 'cname' \
                     AND substr(record_value, -length(?1) - 1) = '.' || ?1)",
                )?
                .query_row([name], |r| r.get(0))?;
            Ok(found != 0)
        })
    }

    pub(in crate::store) fn all_packs(&self, held_only: bool) -> Result<Vec<Pack>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                 JOIN pack_hosts h ON h.pack_id = p.id \
                 WHERE ?1 = 0 OR (p.state = 'pending_validation' \
                                  AND (p.brand_check = 1 OR p.method = 'email')) \
                 ORDER BY p.seq, h.position"
            ))?;
            read_packs(stmt.query([held_only])?)
        })
    }

    pub(in crate::store) fn delete_pack(
        &self,
        zone: &ZoneId,
        id: &PackId,
        events: &[OutboxEvent],
    ) -> Result<bool, StoreError> {
        self.write(Touch::Zone(zone), |tx| {
            super::revocations::record(tx, zone, Some(id))?;
            let deleted = tx.execute(
                "DELETE FROM packs WHERE zone_id = ?1 AND id = ?2",
                [zone.as_str(), id.as_str()],
            )? > 0;
            if deleted {
                super::outbox::insert_events(tx, events)?;
            }
            Ok(deleted)
        })
    }
}

/// Every pack of a zone with its hosts, in order of creation.
pub(super) fn packs_of_zone(conn: &Connection, zone: &ZoneId) -> Result<Vec<Pack>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
         JOIN pack_hosts h ON h.pack_id = p.id \
         WHERE p.zone_id = ?1 ORDER BY p.seq, h.position"
    ))?;
    read_packs(stmt.query([zone.as_str()])?)
}

/// Writes a changed pack back if its `version` is still the stored one (the caller bumps
/// its copy's version on success).
/// Writes a changed pack back if its `version` is still the stored one; its host rows
/// too when `hosts` (else they are the stored version's already).
pub(super) fn update_pack_row(
    tx: &rusqlite::Transaction<'_>,
    pack: &Pack,
    hosts: bool,
) -> Result<(), StoreError> {
    let changes = PackChanges::of(pack)?;
    let leading: [&dyn ToSql; 2] = [&pack.id.as_str(), &pack.version];
    // Cached statements: the lifecycle writes packs in batches of hundreds.
    let changed = tx
        .prepare_cached(
            "UPDATE packs SET state = ?3, method = ?4, cloudflare_branding = ?5, \
         brand_check = ?6, errors = ?7, updated_at = ?8, stage_deadline = ?9, \
         cert_id = ?10, cert_chain_pem = ?11, cert_not_before = ?12, \
         cert_not_after = ?13, cert_issuer = ?14, cert_signature = ?15, \
         cert_issued_at = ?16, order_ref = ?17, cert_renew_at = ?18, \
         cert_acme_directory = ?19, \
             version = version + 1 \
         WHERE id = ?1 AND version = ?2",
        )?
        .execute(params_from_iter(
            leading.into_iter().chain(changes.params()),
        ))?;
    if changed == 0 {
        let exists: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM packs WHERE id = ?1)",
            [pack.id.as_str()],
            |r| r.get(0),
        )?;
        return Err(if exists {
            StoreError::Conflict
        } else {
            StoreError::NotFound
        });
    }
    if hosts {
        tx.prepare_cached("DELETE FROM pack_hosts WHERE pack_id = ?1")?
            .execute([pack.id.as_str()])?;
        insert_hosts(tx, pack)?;
    }
    Ok(())
}

/// The columns of a pack that change over its life, bound in this order by both the INSERT
/// and the UPDATE of a pack, after their own leading columns.
struct PackChanges<'a> {
    state: &'a str,
    method: &'a str,
    cloudflare_branding: bool,
    brand_check: bool,
    errors: String,
    updated_at: i64,
    stage_deadline: i64,
    cert_id: Option<&'a str>,
    cert_chain_pem: Option<&'a str>,
    cert_not_before: Option<i64>,
    cert_not_after: Option<i64>,
    cert_issuer: Option<&'a str>,
    cert_signature: Option<&'a str>,
    cert_issued_at: Option<i64>,
    order_ref: Option<&'a str>,
    cert_renew_at: Option<i64>,
    cert_acme_directory: Option<&'a str>,
}

impl<'a> PackChanges<'a> {
    fn of(pack: &'a Pack) -> Result<Self, StoreError> {
        let cert = pack.certificate.as_ref();
        Ok(PackChanges {
            state: pack.state.as_str(),
            method: pack.method.as_str(),
            cloudflare_branding: pack.cloudflare_branding,
            brand_check: pack.brand_check,
            errors: errors_json(&pack.errors)?,
            updated_at: pack.updated_at,
            stage_deadline: pack.stage_deadline,
            cert_id: cert.map(|c| c.id.as_str()),
            cert_chain_pem: cert.map(|c| c.chain_pem.as_str()),
            cert_not_before: cert.map(|c| c.not_before),
            cert_not_after: cert.map(|c| c.not_after),
            cert_issuer: cert.map(|c| c.issuer.as_str()),
            cert_signature: cert.map(|c| c.signature.as_str()),
            cert_issued_at: cert.map(|c| c.issued_at),
            order_ref: pack.order_ref.as_deref(),
            cert_renew_at: cert.and_then(|c| c.renew_at),
            cert_acme_directory: cert.and_then(|c| c.acme_directory.as_deref()),
        })
    }

    fn params(&self) -> [&dyn ToSql; 17] {
        [
            &self.state,
            &self.method,
            &self.cloudflare_branding,
            &self.brand_check,
            &self.errors,
            &self.updated_at,
            &self.stage_deadline,
            &self.cert_id,
            &self.cert_chain_pem,
            &self.cert_not_before,
            &self.cert_not_after,
            &self.cert_issuer,
            &self.cert_signature,
            &self.cert_issued_at,
            &self.order_ref,
            &self.cert_renew_at,
            &self.cert_acme_directory,
        ]
    }
}

fn insert_hosts(tx: &rusqlite::Transaction<'_>, pack: &Pack) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO pack_hosts (pack_id, position, hostname, record_kind, record_name, \
         record_value, verified, last_checked_at, reason, attempts, next_due_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for (position, host) in pack.hosts.iter().enumerate() {
        let (name, value) = match &host.record {
            DcvRecord::Txt { name, value } => (name.clone(), value.clone()),
            DcvRecord::Http { url, body } => (url.clone(), body.clone()),
            DcvRecord::Cname { name, target } => (name.clone(), target.clone()),
            DcvRecord::Email { emails } => (String::new(), emails.join(",")),
        };
        stmt.execute(params![
            pack.id.as_str(),
            position as i64,
            host.hostname.as_str(),
            host.record.method().as_str(),
            name,
            value,
            host.check.verified,
            host.check.last_checked_at,
            host.check.reason,
            host.check.attempts,
            host.check.next_due_at,
        ])?;
    }
    Ok(())
}
