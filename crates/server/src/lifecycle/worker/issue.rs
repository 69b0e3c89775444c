//! The issue and deploy steps: a validated pack's certificate from the issuer, then its
//! files in the deploy directory and the hook. What each outcome does to the pack is
//! the model's [`transition`](crate::model::transition) of [`Input::Issued`],
//! [`Input::IssuanceFailed`], [`Input::Deployed`] or [`Input::DeploymentFailed`].

use super::Worker;
use super::lease::Hold;
use crate::issuance::{
    DeployedPaths, IssuanceError, IssueRequest, IssuedLeaf, PrivateKeyPem, deploy_pem,
};
use crate::model::{Input, IssueFailure, IssuedCertificate, Pack, PackState};
use crate::store::{SealedKey, StoreError};
use std::sync::atomic::Ordering;
use tokio::sync::SemaphorePermit;

impl Worker {
    /// Obtains a certificate for the pack's hosts from the issuer, records it
    /// (`pending_deployment`), writes it to the deploy directory and marks the pack
    /// `active`. The private key is kept in the database sealed under the
    /// key-encryption key (`crate::keys`) before the certificate is recorded.
    pub(crate) async fn issue_and_deploy(&self, pack: Pack) -> Result<(), StoreError> {
        self.issue_and_deploy_held(pack, Hold::Unleased).await
    }

    /// [`Worker::issue_and_deploy`] of a pack held by `hold`: neither the issuance nor the
    /// deployment starts once its lease may have run out (the wait for a slot can be long).
    pub(super) async fn issue_and_deploy_held(
        &self,
        pack: Pack,
        hold: Hold,
    ) -> Result<(), StoreError> {
        // An ACME order is finished by the CA, over the network (its requests are bounded
        // per CA, see `issuance::acme`): it takes an issuance slot only to record and
        // deploy what the CA signed. Holding one while the CA validates would let a few
        // slow orders (and, while checks run, four) bound every ACME pack's issuance.
        let remote = self.issuer_for(pack.ca).orders_remotely();
        let mut slots = if remote {
            None
        } else {
            Some(self.issuance_slots().await)
        };
        if !self.still_held(hold, &pack.id) {
            return Ok(());
        }
        let now = self.clock.now();
        let started_in = pack.state;
        // An injected CA refusal (test controls): recorded as a CA's refusal with its ACME
        // problem type, one the order survives (retried later).
        if let Some(fault) = self.signals.controls().and_then(|c| {
            c.step_fault(
                crate::controls::FaultKind::Ca,
                &pack.zone_id,
                pack.id.as_str(),
                pack.hosts.iter().map(|h| h.hostname.as_str()),
            )
        }) {
            let input = Input::IssuanceFailed {
                started_in,
                failure: IssueFailure::Refused {
                    problem: fault
                        .problem_type
                        .clone()
                        .unwrap_or_else(|| crate::controls::DEFAULT_PROBLEM.to_owned()),
                    detail: fault.step_reason(),
                    retry_after: None,
                },
            };
            self.apply(pack, now, |_| Some(input.clone())).await?;
            return Ok(());
        }
        // A certificate already recorded (the node that issued it stopped before it was
        // deployed, or its deployment failed) is deployed as it is, with its kept key:
        // issuing again would make a second certificate for the pack.
        if pack.state == PackState::PendingDeployment
            && let Some(recorded) = self.recorded_certificate(&pack).await
        {
            let _slots = match slots {
                Some(held) => held,
                None => self.issuance_slots().await,
            };
            return self.deploy_step(pack, &recorded, now, hold).await;
        }
        let leaf = match self.issue(&pack, now).await {
            Ok(leaf) => leaf,
            Err(error) => {
                tracing::warn!(pack = %pack.id.as_str(), error = %error, "lifecycle");
                // A CA's refusal is typed: it may need a new order (see acme.rs).
                let input = self.finish_failed(&pack, &error, now);
                self.apply(pack, now, |_| Some(input.clone())).await?;
                return Ok(());
            }
        };
        if slots.is_none() {
            slots = Some(self.issuance_slots().await);
        }
        let _slots = slots;
        let certificate = IssuedCertificate {
            id: leaf.serial_hex.clone(),
            chain_pem: leaf.chain_pem.clone(),
            not_before: leaf.not_before.unix_timestamp(),
            not_after: leaf.not_after.unix_timestamp(),
            issuer: leaf.issuer.clone(),
            signature: leaf.signature.to_owned(),
            issued_at: now,
            renew_at: None,
            // The directory whose account ordered it, the one that may revoke it.
            acme_directory: match self.issuer_for(pack.ca) {
                crate::issuance::Issuer::Acme(acme) => Some(acme.settings().directory.clone()),
                crate::issuance::Issuer::Builtin(_) => None,
            },
        };
        let serial = certificate.id.clone();
        let issued = Input::Issued {
            started_in,
            certificate,
        };
        // The key, sealed, is written with the certificate it belongs to, first, in the
        // same transaction: every node (and `zonecert certs export`) can then deploy what
        // the database calls active. A write that fails keeps neither: the next try
        // issues afresh.
        let applied = match self.signals.kek() {
            Some(kek) => {
                let key = SealedKey {
                    pack: pack.id.clone(),
                    serial: serial.clone(),
                    sealed: kek.seal(pack.id.as_str(), leaf.key_pem.expose_secret().as_bytes()),
                };
                let access = self.store.with_key(key);
                self.apply_through(&access, pack, now, |_| Some(issued.clone()))
                    .await
            }
            None => self.apply(pack, now, |_| Some(issued.clone())).await,
        };
        let Some((pack, _)) = applied? else {
            return Ok(());
        };
        if !self.still_held(hold, &pack.id) {
            // The next claim issues afresh: the key of this certificate is not kept.
            return Ok(());
        }
        let deployment = Deployment {
            serial,
            chain_pem: leaf.chain_pem.clone(),
            key_pem: leaf.key_pem.clone(),
            hosts: leaf.hosts.clone(),
        };
        self.deploy_step(pack, &deployment, now, hold).await
    }

    /// An issuance slot, and while checks run one of the few issuance keeps then (see
    /// `ISSUANCE_WHILE_CHECKING`): held for the steps that use this machine (signing,
    /// the key sealed and recorded, files written, the hook).
    async fn issuance_slots(&self) -> (Option<SemaphorePermit<'_>>, Option<SemaphorePermit<'_>>) {
        // The semaphores are never closed; without a permit this would only run unbounded.
        let slot = self.issuing.acquire().await.ok();
        let checks_first = if self.checking.load(Ordering::Relaxed) > 0 {
            self.issuing_while_checking.acquire().await.ok()
        } else {
            None
        };
        (slot, checks_first)
    }

    /// The pack's recorded certificate with its key as the database keeps it, when the
    /// key is there for that certificate and opens under this node's key-encryption key.
    async fn recorded_certificate(&self, pack: &Pack) -> Option<Deployment> {
        let certificate = pack.certificate.as_ref()?;
        let kek = self.signals.kek()?;
        let kept = match self.store.read_key(pack.id.clone()).await {
            Ok(kept) => kept?,
            Err(e) => {
                tracing::warn!(pack = %pack.id.as_str(), error = %e, "lifecycle: reading the recorded certificate's key failed");
                return None;
            }
        };
        if kept.serial != certificate.id {
            return None;
        }
        match kek.open(pack.id.as_str(), &kept.sealed) {
            Ok(key_pem) => Some(Deployment {
                serial: certificate.id.clone(),
                chain_pem: certificate.chain_pem.clone(),
                key_pem: PrivateKeyPem::new(key_pem),
                hosts: pack
                    .hosts
                    .iter()
                    .map(|h| h.hostname.as_str().to_owned())
                    .collect(),
            }),
            Err(e) => {
                tracing::warn!(pack = %pack.id.as_str(), error = %e, "lifecycle: the recorded certificate's key does not open; issuing afresh");
                None
            }
        }
    }

    /// Writes the certificate and its key where they are served and runs the hook. The
    /// step of a pack held by `hold` ends here.
    async fn deploy_step(
        &self,
        pack: Pack,
        deployment: &Deployment,
        now: i64,
        hold: Hold,
    ) -> Result<(), StoreError> {
        let id = pack.id.as_str().to_owned();
        let renewal = pack.state == PackState::Active;
        let order_ref = pack.order_ref.clone();
        let issuer = self.issuer_for(pack.ca).clone();
        // An injected hook failure (test controls): the files are written as for real,
        // then the "hook" fails.
        let hook_fault = self.signals.controls().and_then(|c| {
            c.step_fault(
                crate::controls::FaultKind::DeployHook,
                &pack.zone_id,
                &id,
                pack.hosts.iter().map(|h| h.hostname.as_str()),
            )
        });
        // The error, and whether it was the hook's.
        let deployed = match hook_fault {
            Some(fault) => deployment
                .deploy(&self.config.deploy_dir(), &id, None)
                .await
                .map_err(|e| (e.to_string(), false))
                .and(Err((fault.step_reason(), true))),
            None => deployment
                .deploy(&self.config.deploy_dir(), &id, self.hook.as_ref())
                .await
                .map_err(|e| {
                    let hook = matches!(
                        e,
                        IssuanceError::HookSpawn { .. }
                            | IssuanceError::HookTimeout { .. }
                            | IssuanceError::HookFailed { .. }
                    );
                    (e.to_string(), hook)
                }),
        };
        self.signals
            .metrics()
            .deployment(deployed.as_ref().map(|_| ()).map_err(|(_, hook)| *hook));
        let deployed = deployed.map_err(|(error, _)| error);
        match deployed {
            Ok(_) => {
                // The step's last write, unless the CA is asked about the certificate's
                // renewal after it (`ask_renewal_info`, remote CAs only): the lease is
                // given up with it.
                let saved = if matches!(hold, Hold::Leased(_)) && !issuer.orders_remotely() {
                    let last = self.store.last_write();
                    self.apply_through(&last, pack, now, |_| Some(Input::Deployed))
                        .await?
                } else {
                    self.apply(pack, now, |_| Some(Input::Deployed)).await?
                };
                if let Some((active, _)) = &saved {
                    self.signals.deployed_here(&active.id, &deployment.serial);
                }
                // Deployed and recorded: the order's kept key is no longer needed to
                // resume it.
                if saved.is_some()
                    && let Some(order_ref) = &order_ref
                {
                    issuer.forget(order_ref);
                }
                // A first certificate's line is the pack's transition to `active`, with its
                // serial (`store::apply_transition`); a renewal's leaves the state as it is.
                if renewal {
                    tracing::info!(pack = %id, serial = %deployment.serial, "certificate deployed");
                }
                // When the CA offers renewal information, its advice for the new
                // certificate decides when it is renewed.
                if let Some((active, _)) = saved {
                    self.ask_renewal_info(&active, now).await?;
                }
            }
            Err(error) => {
                tracing::warn!(pack = %id, error = %format!("deployment failed: {error}"), "lifecycle");
                self.apply(pack, now, |_| Some(Input::DeploymentFailed(error.clone())))
                    .await?;
            }
        }
        Ok(())
    }

    /// The issuer's certificate for the pack, valid from `now` for the ordered days.
    async fn issue(&self, pack: &Pack, now: i64) -> Result<IssuedLeaf, IssuanceError> {
        let at = |secs: i64| {
            time::OffsetDateTime::from_unix_timestamp(secs)
                .map_err(|e| IssuanceError::InvalidRequest(format!("time: {e}")))
        };
        let hosts: Vec<_> = pack.hosts.iter().map(|h| h.hostname.clone()).collect();
        let req = IssueRequest {
            hosts: hosts.iter().map(|h| h.as_str().to_owned()).collect(),
            not_before: at(now)?,
            not_after: at(now + i64::from(pack.validity_days) * 86_400)?,
            key_type: self.config.key_type,
        };
        let issuer = self.issuer_for(pack.ca);
        // The built-in CA's records were minted when the pack was ordered: its order is a
        // local one. An ACME pack carries the order `begin` placed.
        let order_ref = match &pack.order_ref {
            Some(order_ref) => order_ref.clone(),
            None => issuer.local_order(&hosts)?,
        };
        issuer.finish(&order_ref, &req).await
    }
}

/// What a deployment writes: a certificate just issued, or one recorded before.
struct Deployment {
    serial: String,
    chain_pem: String,
    key_pem: PrivateKeyPem,
    hosts: Vec<String>,
}

impl Deployment {
    async fn deploy(
        &self,
        deploy_dir: &std::path::Path,
        pack_id: &str,
        hook: Option<&crate::issuance::HookCommand>,
    ) -> Result<DeployedPaths, IssuanceError> {
        deploy_pem(
            deploy_dir,
            pack_id,
            &self.chain_pem,
            &self.key_pem,
            &self.hosts,
            hook,
        )
        .await
    }
}
