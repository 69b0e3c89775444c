//! Certificate packs and their hosts: inserts within the zone's quota, optimistic
//! updates, reads and listings.

use super::rows::{HOST_COLUMNS, PACK_COLUMNS, read_packs};
use super::{PgStore, clamp, is_unique_violation};
use crate::model::{DcvRecord, Pack, PackId, ZoneId};
use crate::store::cache::Touch;
use crate::store::webhooks::OutboxEvent;
use crate::store::{PackFilter, Page, StoreError};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Statement};

impl PgStore {
    pub(in crate::store) async fn insert_pack(
        &self,
        pack: &Pack,
        allocated: u64,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The zone's row lock orders the inserts of one zone across nodes, so two of
        // them never both see the last free slot of the quota.
        let zone = tx
            .query_opt(
                "SELECT 1 FROM zones WHERE id = $1 FOR UPDATE",
                &[&pack.zone_id.as_str()],
            )
            .await?;
        if zone.is_none() {
            return Err(StoreError::NotFound);
        }
        let used: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM packs WHERE zone_id = $1",
                &[&pack.zone_id.as_str()],
            )
            .await?
            .try_get(0)?;
        if used.max(0) as u64 >= allocated {
            return Err(StoreError::QuotaExceeded { allocated });
        }
        let changes = PackChanges::of(pack)?;
        let validity_days = i64::from(pack.validity_days);
        let leading: [&(dyn ToSql + Sync); 5] = [
            &pack.id.as_str(),
            &pack.zone_id.as_str(),
            &validity_days,
            &pack.ca.as_str(),
            &pack.created_at,
        ];
        let params: Vec<&(dyn ToSql + Sync)> =
            leading.into_iter().chain(changes.params()).collect();
        tx.execute(
            "INSERT INTO packs (id, zone_id, validity_days, ca, created_at, state, method, \
             cloudflare_branding, brand_check, errors, updated_at, stage_deadline, \
             cert_id, cert_chain_pem, cert_not_before, cert_not_after, cert_issuer, \
             cert_signature, cert_issued_at, order_ref, cert_renew_at, cert_acme_directory, \
             version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20, $21, $22, 0)",
            &params,
        )
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Duplicate(format!("pack {}", pack.id))
            } else {
                e.into()
            }
        })?;
        insert_hosts(&tx, pack).await?;
        self.commit(tx, Touch::Zone(&pack.zone_id)).await
    }

    pub(in crate::store) async fn update_pack(
        &self,
        pack: &mut Pack,
        events: &[OutboxEvent],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let update = prepare_update(&tx).await?;
        update_pack_row(&tx, &update, pack, true).await?;
        super::outbox::insert_events(&tx, events).await?;
        self.commit(tx, Touch::Zone(&pack.zone_id)).await?;
        pack.version += 1;
        Ok(())
    }

    pub(in crate::store) async fn pack(
        &self,
        zone: &ZoneId,
        id: &PackId,
    ) -> Result<Option<Pack>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                     JOIN pack_hosts h ON h.pack_id = p.id \
                     WHERE p.zone_id = $1 AND p.id = $2 ORDER BY h.position"
                ),
                &[&zone.as_str(), &id.as_str()],
            )
            .await?;
        Ok(read_packs(&rows)?.pop())
    }

    pub(in crate::store) async fn packs_of_zone(
        &self,
        zone: &ZoneId,
    ) -> Result<Vec<Pack>, StoreError> {
        let client = self.client().await?;
        packs_of_zone(&**client, zone).await
    }

    pub(in crate::store) async fn list_packs(
        &self,
        zone: &ZoneId,
        filter: PackFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<Pack>, StoreError> {
        let only_active = filter == PackFilter::Active;
        let client = self.client().await?;
        let total: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM packs WHERE zone_id = $1 \
                 AND (NOT $2::boolean OR state = 'active')",
                &[&zone.as_str(), &only_active],
            )
            .await?
            .try_get(0)?;
        let rows = client
            .query(
                &format!(
                    "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM \
                     (SELECT * FROM packs WHERE zone_id = $1 \
                      AND (NOT $2::boolean OR state = 'active') \
                      ORDER BY seq LIMIT $3 OFFSET $4) p \
                     JOIN pack_hosts h ON h.pack_id = p.id ORDER BY p.seq, h.position"
                ),
                &[&zone.as_str(), &only_active, &clamp(limit), &clamp(offset)],
            )
            .await?;
        Ok(Page {
            items: read_packs(&rows)?,
            total: total.max(0) as u64,
        })
    }

    pub(in crate::store) async fn count_packs(&self, zone: &ZoneId) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM packs WHERE zone_id = $1",
                &[&zone.as_str()],
            )
            .await?
            .try_get(0)?;
        Ok(n.max(0) as u64)
    }

    pub(in crate::store) async fn pack_by_id(
        &self,
        id: &PackId,
    ) -> Result<Option<Pack>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                     JOIN pack_hosts h ON h.pack_id = p.id \
                     WHERE p.id = $1 ORDER BY h.position"
                ),
                &[&id.as_str()],
            )
            .await?;
        Ok(read_packs(&rows)?.pop())
    }

    pub(in crate::store) async fn packs_with_cname_target(
        &self,
        target: &str,
    ) -> Result<Vec<Pack>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                     JOIN pack_hosts h ON h.pack_id = p.id \
                     WHERE p.id IN (SELECT pack_id FROM pack_hosts \
                                    WHERE record_kind = 'cname' AND record_value = $1) \
                     ORDER BY p.seq, h.position"
                ),
                &[&target],
            )
            .await?;
        read_packs(&rows)
    }

    pub(in crate::store) async fn has_cname_target_under(
        &self,
        name: &str,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT EXISTS(SELECT 1 FROM pack_hosts WHERE record_kind = 'cname' \
                 AND right(record_value, length($1) + 1) = '.' || $1)",
                &[&name],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    pub(in crate::store) async fn all_packs(
        &self,
        held_only: bool,
    ) -> Result<Vec<Pack>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                     JOIN pack_hosts h ON h.pack_id = p.id \
                     WHERE NOT $1::boolean OR (p.state = 'pending_validation' \
                                      AND (p.brand_check OR p.method = 'email')) \
                     ORDER BY p.seq, h.position"
                ),
                &[&held_only],
            )
            .await?;
        read_packs(&rows)
    }

    pub(in crate::store) async fn delete_pack(
        &self,
        zone: &ZoneId,
        id: &PackId,
        events: &[OutboxEvent],
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        super::revocations::record(&tx, zone, Some(id)).await?;
        let deleted = tx
            .execute(
                "DELETE FROM packs WHERE zone_id = $1 AND id = $2",
                &[&zone.as_str(), &id.as_str()],
            )
            .await?
            > 0;
        if deleted {
            super::outbox::insert_events(&tx, events).await?;
        }
        self.commit(tx, Touch::Zone(zone)).await?;
        Ok(deleted)
    }
}

/// Every pack of a zone with its hosts, in order of creation.
pub(super) async fn packs_of_zone(
    client: &impl GenericClient,
    zone: &ZoneId,
) -> Result<Vec<Pack>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {PACK_COLUMNS}, {HOST_COLUMNS} FROM packs p \
                 JOIN pack_hosts h ON h.pack_id = p.id \
                 WHERE p.zone_id = $1 ORDER BY p.seq, h.position"
            ),
            &[&zone.as_str()],
        )
        .await?;
    read_packs(&rows)
}

/// The UPDATE of [`update_pack_row`], prepared once per transaction (a lifecycle batch
/// runs it for each of its packs).
pub(super) async fn prepare_update(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<Statement, StoreError> {
    Ok(tx
        .prepare(
            "UPDATE packs SET state = $3, method = $4, cloudflare_branding = $5, \
             brand_check = $6, errors = $7, updated_at = $8, stage_deadline = $9, \
             cert_id = $10, cert_chain_pem = $11, cert_not_before = $12, \
             cert_not_after = $13, cert_issuer = $14, cert_signature = $15, \
             cert_issued_at = $16, order_ref = $17, cert_renew_at = $18, \
             cert_acme_directory = $19, \
             version = version + 1 \
             WHERE id = $1 AND version = $2",
        )
        .await?)
}

/// Writes a changed pack back if its `version` is still the stored one (the caller bumps
/// its copy's version on success). Under READ COMMITTED an UPDATE that waited for another
/// transaction's lock on the row checks `version` again against the row that one left,
/// so of two concurrent writers of one version exactly one succeeds. The host rows are
/// rewritten when `hosts` (else they are the stored version's already).
pub(super) async fn update_pack_row(
    tx: &tokio_postgres::Transaction<'_>,
    update: &Statement,
    pack: &Pack,
    hosts: bool,
) -> Result<(), StoreError> {
    let changes = PackChanges::of(pack)?;
    let leading: [&(dyn ToSql + Sync); 2] = [&pack.id.as_str(), &pack.version];
    let params: Vec<&(dyn ToSql + Sync)> = leading.into_iter().chain(changes.params()).collect();
    let changed = tx.execute(update, &params).await?;
    if changed == 0 {
        let exists: bool = tx
            .query_one(
                "SELECT EXISTS(SELECT 1 FROM packs WHERE id = $1)",
                &[&pack.id.as_str()],
            )
            .await?
            .try_get(0)?;
        return Err(if exists {
            StoreError::Conflict
        } else {
            StoreError::NotFound
        });
    }
    if hosts {
        tx.execute(
            "DELETE FROM pack_hosts WHERE pack_id = $1",
            &[&pack.id.as_str()],
        )
        .await?;
        insert_hosts(tx, pack).await?;
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
            errors: serde_json::to_string(&pack.errors)
                .map_err(|e| StoreError::Database(format!("encoding a JSON column: {e}")))?,
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

    fn params(&self) -> [&(dyn ToSql + Sync); 17] {
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

/// Inserts a pack's hosts, all in one statement (one round trip whatever their number).
async fn insert_hosts(tx: &tokio_postgres::Transaction<'_>, pack: &Pack) -> Result<(), StoreError> {
    let mut positions = Vec::with_capacity(pack.hosts.len());
    let mut hostnames = Vec::with_capacity(pack.hosts.len());
    let mut kinds = Vec::with_capacity(pack.hosts.len());
    let mut names = Vec::with_capacity(pack.hosts.len());
    let mut values = Vec::with_capacity(pack.hosts.len());
    let mut verified = Vec::with_capacity(pack.hosts.len());
    let mut checked = Vec::with_capacity(pack.hosts.len());
    let mut reasons = Vec::with_capacity(pack.hosts.len());
    let mut attempts = Vec::with_capacity(pack.hosts.len());
    let mut due = Vec::with_capacity(pack.hosts.len());
    for (position, host) in pack.hosts.iter().enumerate() {
        let (name, value) = match &host.record {
            DcvRecord::Txt { name, value } => (name.clone(), value.clone()),
            DcvRecord::Http { url, body } => (url.clone(), body.clone()),
            DcvRecord::Cname { name, target } => (name.clone(), target.clone()),
            DcvRecord::Email { emails } => (String::new(), emails.join(",")),
        };
        positions.push(clamp(position as u64));
        hostnames.push(host.hostname.as_str());
        kinds.push(host.record.method().as_str());
        names.push(name);
        values.push(value);
        verified.push(host.check.verified);
        checked.push(host.check.last_checked_at);
        reasons.push(host.check.reason.as_deref());
        attempts.push(i64::from(host.check.attempts));
        due.push(host.check.next_due_at);
    }
    tx.execute(
        "INSERT INTO pack_hosts (pack_id, position, hostname, record_kind, record_name, \
         record_value, verified, last_checked_at, reason, attempts, next_due_at) \
         SELECT $1::text, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::boolean[], $8::bigint[], $9::text[], $10::bigint[], $11::bigint[])",
        &[
            &pack.id.as_str(),
            &positions,
            &hostnames,
            &kinds,
            &names,
            &values,
            &verified,
            &checked,
            &reasons,
            &attempts,
            &due,
        ],
    )
    .await?;
    Ok(())
}
