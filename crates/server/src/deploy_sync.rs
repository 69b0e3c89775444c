//! Every node's deploy directory follows the database: each active certificate whose key
//! is kept (sealed, see [`crate::keys`]) is written there, whichever node issued it, and
//! rewritten when it is renewed, removed when its pack is deleted on any node.
//! A node that was down catches up at its first pass. The deploy hook runs for each
//! certificate a pass writes, as after an issuance.

use crate::issuance::{self, HookCommand, PrivateKeyPem};
use crate::keys::Kek;
use crate::model::PackId;
use crate::store::Store;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// Certificates written (new here, or renewed).
    pub written: usize,
    /// Certificates that could not be written (logged; retried at the next pass).
    pub failed: usize,
    /// Folders of packs deleted elsewhere, removed.
    pub removed: usize,
}

/// The serial each pack has in this node's deploy directory, as far as this process
/// knows (empty at start: the files are compared once).
pub type Deployed = HashMap<PackId, String>;

/// One pass: writes every active certificate the deploy directory lacks or holds an
/// older version of. `deployed_here` is what this node's worker deployed since the last
/// pass (taken before the active certificates are read): those files are this node's
/// already, as if compared.
pub async fn sync_once(
    store: &Store,
    kek: &Kek,
    deploy_dir: &Path,
    hook: Option<&HookCommand>,
    deployed: &mut Deployed,
    deployed_here: Deployed,
) -> Result<Synced, crate::store::StoreError> {
    let mut synced = Synced::default();
    let active = store.active_certificate_keys().await?;
    // Only what is still active with that serial counts; the rest is compared as usual.
    for (pack_id, serial) in &active {
        if deployed_here.get(pack_id) == Some(serial) {
            deployed.insert(pack_id.clone(), serial.clone());
        }
    }
    // Packs no longer active are forgotten (a pack made active again is compared anew);
    // those deleted on another node lose their folder here too (the sweep at start
    // covers what was deleted while this node was down).
    let live: std::collections::HashSet<&PackId> = active.iter().map(|(p, _)| p).collect();
    let gone: Vec<PackId> = deployed
        .keys()
        .filter(|p| !live.contains(p))
        .cloned()
        .collect();
    for pack_id in gone {
        deployed.remove(&pack_id);
        if let Ok(None) = store.pack_by_id(&pack_id).await {
            match issuance::remove_deployment(deploy_dir, pack_id.as_str()).await {
                Ok(true) => synced.removed += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(pack = %pack_id.as_str(), %error, "deploy sync: removing a deleted pack's files failed");
                }
            }
        }
    }
    for (pack_id, serial) in &active {
        if deployed.get(pack_id) == Some(serial) {
            continue;
        }
        match sync_pack(store, kek, deploy_dir, hook, pack_id, serial).await {
            Ok(wrote) => {
                synced.written += usize::from(wrote);
                deployed.insert(pack_id.clone(), serial.clone());
            }
            Err(error) => {
                synced.failed += 1;
                tracing::warn!(pack = %pack_id.as_str(), %error, "deploy sync: writing a certificate failed; retried at the next pass");
            }
        }
    }
    Ok(synced)
}

/// Writes one pack's certificate unless the files hold it already; `true` if written.
async fn sync_pack(
    store: &Store,
    kek: &Kek,
    deploy_dir: &Path,
    hook: Option<&HookCommand>,
    pack_id: &PackId,
    serial: &str,
) -> Result<bool, String> {
    let pack = store
        .pack_by_id(pack_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("deleted meanwhile")?;
    let Some(cert) = pack.certificate.as_ref().filter(|c| c.id == serial) else {
        return Ok(false); // renewed meanwhile: the next pass sees the new one
    };
    let on_disk = {
        let (dir, id) = (deploy_dir.to_path_buf(), pack_id.as_str().to_owned());
        tokio::task::spawn_blocking(move || issuance::deployed_chain(&dir, &id))
            .await
            .ok()
            .flatten()
    };
    if on_disk.as_deref() == Some(cert.chain_pem.as_str()) {
        return Ok(false);
    }
    let key = store
        .certificate_key(pack_id)
        .await
        .map_err(|e| e.to_string())?
        .filter(|k| k.serial == serial)
        .ok_or("its key is not kept (replaced meanwhile)")?;
    let key_pem = kek
        .open(pack_id.as_str(), &key.sealed)
        .map_err(|e| e.to_string())?;
    let hosts: Vec<String> = pack
        .hosts
        .iter()
        .map(|h| h.hostname.as_str().to_owned())
        .collect();
    issuance::deploy_pem(
        deploy_dir,
        pack_id.as_str(),
        &cert.chain_pem,
        &PrivateKeyPem::new(key_pem),
        &hosts,
        hook,
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(pack = %pack_id.as_str(), serial = %serial, "deploy sync: certificate deployed");
    Ok(true)
}

/// Runs [`sync_once`] every `every`, for as long as the task lives.
pub(crate) async fn sync_deployments(
    store: Store,
    kek: std::sync::Arc<Kek>,
    deploy_dir: std::path::PathBuf,
    hook: Option<HookCommand>,
    every: Duration,
    signals: std::sync::Arc<crate::lifecycle::Signals>,
) {
    let mut deployed = Deployed::new();
    // Without this, every certificate the worker deployed was read back (its pack from the
    // store, its chain from the files) at the next pass, only to find it there.
    signals.track_deployed_here();
    loop {
        let here = signals.take_deployed_here();
        match sync_once(
            &store,
            &kek,
            &deploy_dir,
            hook.as_ref(),
            &mut deployed,
            here,
        )
        .await
        {
            Ok(s) if s.written > 0 => {
                tracing::info!(
                    written = s.written,
                    failed = s.failed,
                    "deploy sync: pass done"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "deploy sync: reading the active certificates failed")
            }
        }
        tokio::time::sleep(every).await;
    }
}
