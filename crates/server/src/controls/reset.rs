//! The reset: the database back to the documentation's seed state, and the issuance of
//! the seed pack that `serve --dev` shares.

use super::{CLOCK_OFFSET_KEY, Controls, lock};
use crate::admin::{self, AdminError, dev};
use crate::config::Config;
use crate::issuance::{BuiltinCa, HookCommand, IssuanceError, IssueRequest, deploy};
use crate::model::{IssuedCertificate, PackId, PackState, ZoneId};
use crate::store::{Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a reset (or the seed pack's issuance) failed.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Seeding the zone, user, pack or token failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The built-in CA could not sign, or the files could not be deployed.
    #[error(transparent)]
    Issuance(#[from] IssuanceError),
}

impl Controls {
    /// Returns the database to the documentation's seed state: every zone, pack, user
    /// and token deleted (and the deployed files of the packs), then the example zone,
    /// the user with the published key, the dev token under the secret of
    /// `<data_dir>/dev-token` (so a test suite's token keeps working) and the example
    /// pack, issued by the built-in CA at the clock's now and deployed. The clock goes
    /// back to real time, and faults and per-zone auto-validation are cleared. Returns
    /// how long it took.
    pub async fn reset(&self, store: &Store, config: &Config) -> Result<Duration, ResetError> {
        let started = Instant::now();
        let _moving = self.moving.lock().await;
        let deleted = store.wipe(&[CLOCK_OFFSET_KEY]).await?;
        self.clock.set_offset(0);
        lock(&self.faults).clear();
        lock(&self.auto_zones).clear();
        let deploy_dir = config.deploy_dir();
        for id in &deleted {
            // A failure leaves files behind, which the deploy directory's sweep removes;
            // the reset itself is done.
            if let Err(e) = crate::issuance::remove_deployment(&deploy_dir, id.as_str()).await {
                tracing::warn!(pack = %id.as_str(), error = %e, "reset: removing a pack's files failed");
            }
        }
        let now = crate::clock::Clock::now(&**self.clock());
        admin::seed_dev_keeping(
            store,
            &config.data_dir,
            |zone| config.dcv_suffix(zone),
            config.quota_advanced,
            now,
            true,
        )
        .await?;
        let ca = match self.ca.get() {
            Some(ca) => Arc::clone(ca),
            None => {
                let dir = config.data_dir.clone();
                let ca = tokio::task::spawn_blocking(move || BuiltinCa::load_or_create(&dir))
                    .await
                    .map_err(IssuanceError::from)??;
                Arc::clone(self.ca.get_or_init(|| Arc::new(ca)))
            }
        };
        issue_seed_pack(store, config, ca, now).await?;
        Ok(started.elapsed())
    }
}

/// The deploy hook of `config`, as the lifecycle runs it.
pub(crate) fn hook_command(config: &Config) -> Option<HookCommand> {
    let (program, args) = config.deploy_hook.as_ref()?.split_first()?;
    Some(HookCommand {
        program: program.into(),
        args: args.to_vec(),
        timeout: Duration::from_secs(60),
    })
}

/// Has the built-in CA issue the seeded example pack (seeded as validated, waiting in
/// `pending_issuance`) with its validity from `now`, deploys it and makes it `active`,
/// as the documentation shows it. Nothing to do for a pack already issued.
pub async fn issue_seed_pack(
    store: &Store,
    config: &Config,
    ca: Arc<BuiltinCa>,
    now: i64,
) -> Result<(), ResetError> {
    let invalid = |e: crate::model::ParseError| AdminError::Invalid(e.0);
    let zone = ZoneId::parse(dev::ZONE_ID).map_err(invalid)?;
    let id = PackId::parse(dev::PACK_ID).map_err(invalid)?;
    let Some(mut pack) = store.pack(&zone, &id).await? else {
        return Ok(());
    };
    if pack.state != PackState::PendingIssuance {
        return Ok(());
    }
    let at = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|e| IssuanceError::InvalidRequest(format!("time: {e}")))
    };
    let req = IssueRequest {
        hosts: pack.hosts.iter().map(|h| h.hostname.to_string()).collect(),
        not_before: at(now)?,
        not_after: at(now + i64::from(pack.validity_days) * 86_400)?,
        key_type: config.key_type,
    };
    let leaf = tokio::task::spawn_blocking(move || ca.issue(&req))
        .await
        .map_err(IssuanceError::from)??;
    deploy(
        &config.deploy_dir(),
        pack.id.as_str(),
        &leaf,
        hook_command(config).as_ref(),
    )
    .await?;
    pack.certificate = Some(IssuedCertificate {
        id: leaf.serial_hex.clone(),
        chain_pem: leaf.chain_pem.clone(),
        not_before: leaf.not_before.unix_timestamp(),
        not_after: leaf.not_after.unix_timestamp(),
        issuer: leaf.issuer.clone(),
        signature: leaf.signature.to_owned(),
        issued_at: now,
        renew_at: None,
        acme_directory: None,
    });
    pack.state = PackState::Active;
    pack.errors.clear();
    pack.updated_at = now;
    if let Some(starts) = pack.renewal_starts_at() {
        for host in &mut pack.hosts {
            host.check.next_due_at = starts;
        }
    }
    store.update_pack(&mut pack).await?;
    Ok(())
}
