//! The ACME issuer (RFC 8555) over instant-acme: one account per directory, orders whose
//! challenges become the packs' DCV records, and finalization with a CSR for a key made
//! here.
//!
//! - [`AcmeCaSettings`]: what the operator configured for one certificate-authority name.
//! - [`AcmeIssuer::begin`]: `newOrder`, the authorizations, and per host the record to
//!   publish (dns-01 for txt and cname, http-01 for http); the returned [`AcmeOrderRef`] is
//!   what the pack stores, so a restarted server resumes the same order.
//! - [`AcmeIssuer::finish`]: answers the challenges (once), polls with the CA's
//!   `Retry-After`, finalizes, downloads the chain. The certificate's key is written to
//!   `<data_dir>/acme/keys/` (0600) before finalizing and removed ([`AcmeIssuer::forget`])
//!   once the lifecycle deployed the certificate: a server killed in between finishes
//!   the same order with the same key instead of ordering twice.
//!
//! Failures are [`AcmeError`]s with a typed [`AcmeErrorKind`].

mod account;
pub use account::account_aad;
mod http;
pub(crate) use http::REQUESTS_IN_FLIGHT;
mod problem;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewOrder,
    OrderStatus, RetryPolicy, RevocationReason, RevocationRequest,
};
use rcgen::{
    CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256,
    RsaKeySize,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::sync::Mutex;
use tokio_rustls::rustls::pki_types::{CertificateDer, Der};
use x509_parser::extensions::ParsedExtension;

pub use problem::{AcmeError, AcmeErrorKind};

/// Where the ACME account of `settings`' directory is kept in `data_dir`.
pub fn account_file(settings: &AcmeCaSettings, data_dir: &Path) -> PathBuf {
    account::account_path(settings, data_dir)
}

use super::{IssueRequest, IssuedLeaf, KeyType, PrivateKeyPem};
use crate::model::{CaChoice, DcvMethod, DcvRecord, Hostname};

/// External Account Binding credentials (RFC 8555 section 7.3.4).
#[derive(Clone, PartialEq, Eq)]
pub struct Eab {
    /// The key identifier the CA gave.
    pub key_id: String,
    /// The HMAC key, decoded from the base64url the CA gave.
    pub hmac_key: Vec<u8>,
}

impl std::fmt::Debug for Eab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eab")
            .field("key_id", &self.key_id)
            .field("hmac_key", &"[redacted]")
            .finish()
    }
}

/// What the operator configured for one certificate-authority name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeCaSettings {
    /// The `certificate_authority` name orders use.
    pub ca: CaChoice,
    /// The ACME directory URL.
    pub directory: String,
    /// Contact e-mail of the account (`mailto:` added).
    pub contact: Option<String>,
    /// External Account Binding, when the CA requires it.
    pub eab: Option<Eab>,
    /// A PEM file of roots trusted for the ACME server's TLS, besides the platform's.
    pub root_pem: Option<PathBuf>,
    /// ACME profile per `validity_days` (draft-ietf-acme-profiles), where mapped.
    pub profiles: BTreeMap<u32, String>,
    /// The issuer domain names CAA records must allow for this CA.
    pub caa_domains: Vec<String>,
}

/// What a pack stores of its ACME order: enough for any node to resume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeOrderRef {
    /// The directory the order was placed with (its account is the directory's).
    pub directory: String,
    /// The order's URL.
    pub order_url: String,
    /// The validation method the challenges were chosen for.
    pub method: String,
    /// One challenge per host, in the pack's host order.
    pub challenges: Vec<AcmeChallenge>,
    /// The certificate this order replaces (a renewal, RFC 9773 `replaces`: its
    /// `<authority key id>.<serial>`), when the CA offers renewal information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// What a CA suggests for renewing one certificate (ACME Renewal Information, RFC 9773).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalAdvice {
    /// The suggested window's start: renew from then on.
    pub start: time::OffsetDateTime,
    /// The suggested window's end.
    pub end: time::OffsetDateTime,
    /// When to ask again (the CA's `Retry-After`).
    pub ask_again_in: Duration,
    /// The CA's page explaining the window, if it gave one.
    pub explanation_url: Option<String>,
}

/// One host's challenge in an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeChallenge {
    /// The host as ordered (`*.example.org` for a wildcard).
    pub host: String,
    /// The challenge's URL (answered with `{}` when the records are in place).
    pub url: String,
    /// The challenge token.
    pub token: String,
    /// What must be published: the dns-01 TXT value, or the http-01 body.
    pub value: String,
}

/// Issues certificates from one ACME directory.
pub struct AcmeIssuer {
    settings: AcmeCaSettings,
    data_dir: PathBuf,
    http: http::ReqwestHttp,
    /// Loaded or created on first use, with its sealed credentials when it is the
    /// database's; dropped when the CA no longer knows it or no longer accepts it.
    account: Mutex<AccountSlot>,
    /// The database and KEK the nodes share their account through, if set.
    shared: Option<account::SharedAccounts>,
    /// Whether the directory offers `renewalInfo` (RFC 9773), once a request told:
    /// [`ARI_UNKNOWN`], [`ARI_OFFERED`] or [`ARI_ABSENT`].
    ari: AtomicU8,
}

/// The issuer's account, and the last failure to get one.
#[derive(Default)]
struct AccountSlot {
    account: Option<(Account, Option<Vec<u8>>)>,
    /// When getting the account last failed (finished), and why.
    failed: Option<(std::time::Instant, AcmeError)>,
}

const ARI_UNKNOWN: u8 = 0;
const ARI_OFFERED: u8 = 1;
const ARI_ABSENT: u8 = 2;

impl std::fmt::Debug for AcmeIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeIssuer")
            .field("ca", &self.settings.ca)
            .field("directory", &self.settings.directory)
            .finish_non_exhaustive()
    }
}

/// How many times `begin` and `finish` go again, at once, when a request still meets
/// `badNonce` after instant-acme's own two retries: a CA refusing many nonces (Pebble's
/// `PEBBLE_WFE_NONCEREJECT`) would otherwise send a pack to the 5-minute retry at almost
/// every order, since an order takes ten requests or more.
const NONCE_RETRIES: u32 = 8;

/// How long `finish` polls an order before leaving it for the next attempt.
const POLL_FOR: Duration = Duration::from_secs(90);

impl AcmeIssuer {
    /// An issuer for `settings`, keeping its account and pending keys under
    /// `<data_dir>/acme/`. Reads the extra root now, so a wrong path stops the start.
    pub fn new(settings: AcmeCaSettings, data_dir: &Path) -> Result<Self, String> {
        Self::with_timeout(settings, data_dir, http::REQUEST_TIMEOUT)
    }

    /// [`AcmeIssuer::new`] whose requests to the CA may each take `timeout` (60 s for
    /// `new`; connecting at most 10 s of it).
    pub fn with_timeout(
        settings: AcmeCaSettings,
        data_dir: &Path,
        timeout: Duration,
    ) -> Result<Self, String> {
        let root = match &settings.root_pem {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                format!(
                    "ACME CA {}: reading the extra root {}: {e}",
                    settings.ca.as_str(),
                    path.display()
                )
            })?),
            None => None,
        };
        let http = http::ReqwestHttp::new(root.as_deref(), timeout)
            .map_err(|e| format!("ACME CA {}: {e}", settings.ca.as_str()))?;
        Ok(AcmeIssuer {
            settings,
            data_dir: data_dir.to_owned(),
            http,
            account: Mutex::new(AccountSlot::default()),
            shared: None,
            ari: AtomicU8::new(ARI_UNKNOWN),
        })
    }

    /// Shares the account with every node of `store`'s database, sealed under `kek`
    /// (see `account.rs`): the lifecycle's issuers do, so that a certificate is finished,
    /// renewed and revoked by any node as the account that ordered it.
    pub fn share_accounts(
        &mut self,
        store: crate::store::Store,
        kek: std::sync::Arc<crate::keys::Kek>,
    ) {
        self.shared = Some(account::SharedAccounts { store, kek });
    }

    /// The configuration this issuer runs with.
    pub fn settings(&self) -> &AcmeCaSettings {
        &self.settings
    }

    /// The account's URL at the CA, loading the account from its file or creating it at
    /// the CA on first use.
    pub async fn account_id(&self) -> Result<String, AcmeError> {
        Ok(self.account().await?.id().to_owned())
    }

    /// [`Self::account`], tried again when creating it met refused nonces, as an order
    /// is: those count in `refused` with the order's own.
    async fn account_counting_nonces(&self, refused: &mut u32) -> Result<Account, AcmeError> {
        loop {
            match self.account().await {
                Err(e) if e.kind == AcmeErrorKind::BadNonce && *refused < NONCE_RETRIES => {
                    *refused += 1;
                }
                other => return other,
            }
        }
    }

    /// The account, loaded from its file or created at the CA on first use.
    ///
    /// One caller at a time gets it (the others wait for the lock), and a failure is
    /// the answer of every caller that was already waiting for it: a CA refusing the
    /// account (`externalAccountRequired` without EAB configured) or not answering would
    /// otherwise be asked once per pack, one after the other, and every pack of that CA
    /// would wait its turn in the worker's hand (150 packs of a refusing CA 150 ms away
    /// held another CA's two packs up for 26.9 s, against 0.54 s alone; test
    /// `a_ca_that_keeps_refusing_does_not_hold_up_another_cas_packs`). A caller that
    /// comes after the failure asks the CA again.
    pub(crate) async fn account(&self) -> Result<Account, AcmeError> {
        let asked = std::time::Instant::now();
        let mut slot = self.account.lock().await;
        if let Some((account, _)) = slot.account.as_ref() {
            return Ok(account.clone());
        }
        if let Some((at, err)) = &slot.failed
            && *at >= asked
        {
            return Err(err.clone());
        }
        match account::load_shared_or_create(
            &self.settings,
            &self.data_dir,
            &self.http,
            self.shared.as_ref(),
        )
        .await
        {
            Ok((account, sealed)) => {
                slot.account = Some((account.clone(), sealed));
                slot.failed = None;
                Ok(account)
            }
            Err(e) => {
                slot.failed = Some((std::time::Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Passes `err` on; when it says the CA does not know the account
    /// ([`AcmeErrorKind::AccountUnknown`]) or no longer accepts it (deactivated or
    /// revoked, [`AcmeErrorKind::AccountUnusable`], [`AcmeErrorKind::AccountRevoked`]:
    /// final, RFC 8555 section 7.1.6), the
    /// account is set aside (its file renamed, kept for the operator; the database's
    /// copy removed) so that the next order creates a new one, and the error names it.
    ///
    /// Only the account `used` (its URL) is set aside: a request still in flight with
    /// it when another pack already replaced it must not throw the new one away.
    async fn unknown_account(&self, mut err: AcmeError, used: &str) -> AcmeError {
        let unusable = matches!(
            err.kind,
            AcmeErrorKind::AccountUnusable | AcmeErrorKind::AccountRevoked
        );
        if !(unusable || err.kind == AcmeErrorKind::AccountUnknown) {
            return err;
        }
        let forgotten = {
            let mut slot = self.account.lock().await;
            match &slot.account {
                Some((current, _)) if current.id() == used => slot.account.take(),
                _ => None,
            }
        };
        let why = if unusable { "unusable" } else { "unknown" };
        let aside = account::set_aside(&self.settings, &self.data_dir, why, used);
        if unusable {
            // Which account, and where it went: the CA's words name neither.
            err.detail = match &aside {
                Some(file) => format!(
                    "account {used}: {}; its file is kept as {}",
                    err.detail,
                    file.display()
                ),
                None => format!("account {used}: {}", err.detail),
            };
        }
        if let (Some((_, Some(sealed))), Some(shared)) = (forgotten, &self.shared)
            && let Err(e) = shared
                .store
                .delete_acme_account(&self.settings.directory, &sealed)
                .await
        {
            tracing::warn!(error = %e, "forgetting the database's ACME account failed");
        }
        err
    }

    /// Places a new order for `hosts` and returns its reference and one record per host,
    /// in the order of `hosts`.
    pub async fn begin(
        &self,
        hosts: &[Hostname],
        method: DcvMethod,
        dcv_target_suffix: &str,
        validity_days: Option<u32>,
    ) -> Result<(AcmeOrderRef, Vec<DcvRecord>), AcmeError> {
        self.begin_replacing(hosts, method, dcv_target_suffix, validity_days, None)
            .await
    }

    /// [`AcmeIssuer::begin`] for a renewal: the order names the certificate it replaces
    /// (`replaces_pem`, RFC 9773) when the CA offers renewal information.
    pub async fn begin_replacing(
        &self,
        hosts: &[Hostname],
        method: DcvMethod,
        dcv_target_suffix: &str,
        validity_days: Option<u32>,
        replaces_pem: Option<&str>,
    ) -> Result<(AcmeOrderRef, Vec<DcvRecord>), AcmeError> {
        let mut replaces = match replaces_pem {
            Some(pem) => self.replaces_id(pem).await,
            None => None,
        };
        let mut refused = 0;
        loop {
            let account = self.account_counting_nonces(&mut refused).await?;
            match self
                .place(
                    &account,
                    hosts,
                    method,
                    dcv_target_suffix,
                    validity_days,
                    replaces.clone(),
                )
                .await
            {
                Ok(placed) => return Ok(placed),
                // A new order (one placed before the refusal is left to expire).
                Err(e) if e.kind == AcmeErrorKind::BadNonce && refused < NONCE_RETRIES => {
                    refused += 1;
                    tracing::debug!(error = %e, refused, "ACME badNonce: placing the order again");
                }
                // The certificate was replaced by another order already, or the CA does not
                // take `replaces` after all (it must reflect it): a plain order.
                Err(e)
                    if replaces.is_some()
                        && (matches!(&e.kind, AcmeErrorKind::Other(t) if t == "alreadyReplaced")
                            || e.detail.contains("replaces field mismatch")) =>
                {
                    tracing::info!(error = %e, "ACME: ordering without naming the certificate replaced");
                    replaces = None;
                }
                Err(e) => return Err(self.unknown_account(e, account.id()).await),
            }
        }
    }

    /// The RFC 9773 identifier of the certificate a renewal order replaces, when the CA
    /// offers renewal information (asked once if not known yet); `None` otherwise.
    async fn replaces_id(&self, pem: &str) -> Option<CertificateIdentifier<'static>> {
        let id = match certificate_id(pem) {
            Ok(id) => id,
            Err(e) => {
                tracing::debug!(error = %e, "ACME: the replaced certificate has no identifier");
                return None;
            }
        };
        if self.ari.load(Ordering::Relaxed) == ARI_UNKNOWN {
            let _ = self.renewal_info(pem).await;
        }
        (self.ari.load(Ordering::Relaxed) == ARI_OFFERED).then_some(id)
    }

    /// The CA's renewal advice for the certificate at the head of `chain_pem` (ACME
    /// Renewal Information, RFC 9773); `None` when its directory offers no `renewalInfo`.
    pub async fn renewal_info(&self, chain_pem: &str) -> Result<Option<RenewalAdvice>, AcmeError> {
        let id = certificate_id(chain_pem)?;
        let account = self.account().await?;
        match account.renewal_info(&id).await {
            Ok((info, ask_again_in)) => {
                self.ari.store(ARI_OFFERED, Ordering::Relaxed);
                Ok(Some(RenewalAdvice {
                    start: info.suggested_window.start,
                    end: info.suggested_window.end,
                    ask_again_in,
                    explanation_url: info.explanation_url,
                }))
            }
            Err(instant_acme::Error::Unsupported(_)) => {
                self.ari.store(ARI_ABSENT, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => {
                self.ari.store(ARI_OFFERED, Ordering::Relaxed);
                Err(AcmeError::from_client(e))
            }
        }
    }

    async fn place(
        &self,
        account: &Account,
        hosts: &[Hostname],
        method: DcvMethod,
        dcv_target_suffix: &str,
        validity_days: Option<u32>,
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<(AcmeOrderRef, Vec<DcvRecord>), AcmeError> {
        let identifiers: Vec<Identifier> = hosts
            .iter()
            .map(|h| Identifier::Dns(h.as_str().to_ascii_lowercase()))
            .collect();
        let mut new_order = NewOrder::new(&identifiers);
        if let Some(profile) = validity_days.and_then(|d| self.settings.profiles.get(&d)) {
            new_order = new_order.profile(profile);
        }
        let replaced = replaces.as_ref().map(ToString::to_string);
        if let Some(id) = replaces {
            new_order = new_order.replaces(id);
        }
        let mut order = account
            .new_order(&new_order)
            .await
            .map_err(AcmeError::from_client)?;
        let order_url = order.url().to_owned();
        let wanted = challenge_type(method);
        let mut found: Vec<AcmeChallenge> = Vec::with_capacity(hosts.len());
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(AcmeError::from_client)?;
            let host = authz.identifier().to_string();
            let Some(challenge) = authz.challenge(wanted.clone()) else {
                return Err(AcmeError::new(
                    AcmeErrorKind::RejectedIdentifier,
                    format!("the CA offers no {wanted:?} challenge for {host}"),
                )
                .for_host(&host));
            };
            let key_authorization = challenge.key_authorization();
            let value = match method {
                DcvMethod::Http => key_authorization.as_str().to_owned(),
                _ => key_authorization.dns_value(),
            };
            found.push(AcmeChallenge {
                host,
                url: challenge.url.clone(),
                token: challenge.token.clone(),
                value,
            });
        }
        let mut challenges = Vec::with_capacity(hosts.len());
        let mut records = Vec::with_capacity(hosts.len());
        for host in hosts {
            let name = host.as_str().to_ascii_lowercase();
            let Some(ch) = found.iter().find(|c| c.host.eq_ignore_ascii_case(&name)) else {
                return Err(AcmeError::new(
                    AcmeErrorKind::OrderUnusable,
                    format!("the CA's order has no authorization for {name}"),
                ));
            };
            let base = host.base();
            records.push(match method {
                DcvMethod::Http => DcvRecord::Http {
                    url: format!("http://{base}/.well-known/acme-challenge/{}", ch.token),
                    body: ch.value.clone(),
                },
                DcvMethod::Cname => DcvRecord::Cname {
                    name: format!("_acme-challenge.{base}"),
                    target: format!("{base}.{dcv_target_suffix}"),
                },
                _ => DcvRecord::Txt {
                    name: format!("_acme-challenge.{base}"),
                    value: ch.value.clone(),
                },
            });
            challenges.push(ch.clone());
        }
        Ok((
            AcmeOrderRef {
                directory: self.settings.directory.clone(),
                order_url,
                method: method.as_str().to_owned(),
                challenges,
                replaces: replaced,
            },
            records,
        ))
    }

    /// Completes the order: answers its pending challenges, waits for the CA's
    /// validation, finalizes with a CSR for a fresh key of `req.key_type` (or the key a
    /// previous attempt left), downloads the chain.
    pub async fn finish(
        &self,
        order_ref: &AcmeOrderRef,
        req: &IssueRequest,
    ) -> Result<IssuedLeaf, AcmeError> {
        if order_ref.directory != self.settings.directory {
            return Err(AcmeError::new(
                AcmeErrorKind::OrderUnusable,
                format!(
                    "the order was placed with {}, this CA is now configured at {}",
                    order_ref.directory, self.settings.directory
                ),
            ));
        }
        let mut refused = 0;
        loop {
            let account = self.account_counting_nonces(&mut refused).await?;
            match self.complete(&account, order_ref, req).await {
                Ok(leaf) => return Ok(leaf),
                // `complete` resumes the order where it stands (answered challenges are not
                // answered again, a finalized order is downloaded with the kept key).
                Err(e) if e.kind == AcmeErrorKind::BadNonce && refused < NONCE_RETRIES => {
                    refused += 1;
                    tracing::debug!(error = %e, refused, "ACME badNonce: resuming the order");
                }
                Err(e) => return Err(self.unknown_account(e, account.id()).await),
            }
        }
    }

    async fn complete(
        &self,
        account: &Account,
        order_ref: &AcmeOrderRef,
        req: &IssueRequest,
    ) -> Result<IssuedLeaf, AcmeError> {
        let mut order = account
            .order(order_ref.order_url.clone())
            .await
            .map_err(gone_order)?;
        let wanted = challenge_type(DcvMethod::parse(&order_ref.method).unwrap_or(DcvMethod::Txt));
        let key_path = self.pending_key_path(&order_ref.order_url);
        let policy = RetryPolicy::new()
            .initial_delay(Duration::from_millis(200))
            .backoff(1.5)
            .timeout(POLL_FOR);

        if order.state().status == OrderStatus::Pending {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(AcmeError::from_client)?;
                if authz.status != AuthorizationStatus::Pending {
                    continue;
                }
                let host = authz.identifier().to_string();
                let Some(mut challenge) = authz.challenge(wanted.clone()) else {
                    return Err(AcmeError::new(
                        AcmeErrorKind::OrderUnusable,
                        format!("the CA's authorization offers no {wanted:?} challenge"),
                    )
                    .for_host(&host));
                };
                if challenge.status == instant_acme::ChallengeStatus::Pending {
                    challenge
                        .set_ready()
                        .await
                        .map_err(|e| AcmeError::from_client(e).for_host(&host))?;
                }
            }
            match order.poll_ready(&policy).await {
                Ok(OrderStatus::Invalid) => return Err(refusal(&mut order).await),
                Ok(_) => {}
                // An order that failed validation carries a summary problem; the failed
                // challenge names the host and the CA's reason.
                Err(instant_acme::Error::Api(problem)) => {
                    let mut e = refusal(&mut order).await;
                    if e.host.is_none() {
                        e = AcmeError::from_problem(&problem);
                    }
                    return Err(e);
                }
                Err(e) => return Err(AcmeError::from_client(e)),
            }
        }

        let key = match order.state().status {
            OrderStatus::Ready => {
                let key = new_key(req.key_type)?;
                let mut params = CertificateParams::new(req.hosts.clone()).map_err(|e| {
                    AcmeError::new(AcmeErrorKind::Other("csr".into()), e.to_string())
                })?;
                params.distinguished_name = DistinguishedName::new();
                let csr = params.serialize_request(&key).map_err(|e| {
                    AcmeError::new(AcmeErrorKind::Other("csr".into()), e.to_string())
                })?;
                // Kept on disk before the CA sees the CSR: a crash after finalize must find
                // the key of the certificate the CA will sign.
                self.save_pending_key(&key_path, &key)?;
                order
                    .finalize_csr(csr.der())
                    .await
                    .map_err(AcmeError::from_client)?;
                tracing::info!(order = %order_ref.order_url, "ACME order finalized; downloading the certificate");
                key
            }
            OrderStatus::Processing | OrderStatus::Valid => {
                let pem = std::fs::read_to_string(&key_path).map_err(|_| {
                    AcmeError::new(
                        AcmeErrorKind::OrderUnusable,
                        "the order was finalized but the key of its CSR is gone; a new order is needed",
                    )
                })?;
                KeyPair::from_pem(&pem).map_err(|e| {
                    AcmeError::new(
                        AcmeErrorKind::OrderUnusable,
                        format!("the pending key: {e}"),
                    )
                })?
            }
            OrderStatus::Invalid => return Err(refusal(&mut order).await),
            OrderStatus::Pending => {
                return Err(AcmeError::new(
                    AcmeErrorKind::ServerError,
                    "the CA is still validating; polled again later",
                ));
            }
        };
        let chain = order
            .poll_certificate(&policy)
            .await
            .map_err(AcmeError::from_client)?;
        // The key stays on disk until the lifecycle has deployed and recorded the
        // certificate ([`AcmeIssuer::forget`]): a crash before that downloads the same
        // certificate again instead of ordering a second one.
        leaf_from_chain(&chain, req, PrivateKeyPem::new(key.serialize_pem()))
    }

    /// Revokes the certificate at the head of `chain_pem` (RFC 8555 section 7.6), as this
    /// directory's account (the one that ordered it), for `cessationOfOperation`.
    ///
    /// A certificate ordered by a node's own account before the database's account
    /// became the one every node uses (`account::load_shared_or_create`) is refused to
    /// the shared account (`unauthorized`: a CA accepts a revocation from the ordering
    /// account, an account holding authorizations for every name, or the certificate's
    /// key). RFC 8555 lets the certificate's key sign instead, but instant-acme (0.8) signs
    /// only as an account; so the refused revocation is sent again as this node's own
    /// account (its file in the data directory) when it has one that is not the shared
    /// one. Without one, the error says so: the row is tried again later, by any node,
    /// and the node that ordered the certificate (it has the account file) revokes it.
    pub async fn revoke(&self, chain_pem: &str) -> Result<(), AcmeError> {
        let certificate = CertificateDer::from(leaf_der(chain_pem)?);
        let request = RevocationRequest {
            certificate: &certificate,
            reason: Some(RevocationReason::CessationOfOperation),
        };
        let account = self.account().await?;
        let refused = match revoke_as(&account, &request).await {
            Ok(()) => return Ok(()),
            Err(e) if refused_to_account(&e) => e,
            Err(e) => return Err(self.unknown_account(e, account.id()).await),
        };
        let own = account::load_own(&self.settings, &self.data_dir, &self.http).await?;
        match own {
            Some(own) if own.id() != account.id() => {
                tracing::info!(
                    ca = self.settings.ca.as_str(),
                    shared = account.id(),
                    own = own.id(),
                    "the CA refused the revocation to the shared ACME account; revoking as this node's own account, which may have ordered the certificate"
                );
                revoke_as(&own, &request).await.map_err(|e| {
                    AcmeError::new(
                        e.kind.clone(),
                        format!(
                            "refused to the database's account {} ({}) and to this node's own account {} ({}): neither ordered the certificate",
                            account.id(),
                            refused.detail,
                            own.id(),
                            e.detail
                        ),
                    )
                })
            }
            _ => Err(AcmeError::new(
                refused.kind.clone(),
                format!(
                    "the CA refused the revocation to account {} ({}): the certificate was ordered by another account (a node's own, from before this database's account was shared), which this node does not have; the node holding that account's file in its data directory revokes it when it claims this row",
                    account.id(),
                    refused.detail
                ),
            )),
        }
    }

    /// Removes the key kept for `order_ref` (its certificate is deployed).
    pub fn forget(&self, order_ref: &AcmeOrderRef) {
        let _ = std::fs::remove_file(self.pending_key_path(&order_ref.order_url));
    }

    fn pending_key_path(&self, order_url: &str) -> PathBuf {
        let digest = Sha256::digest(order_url.as_bytes());
        let name = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..18]);
        self.data_dir
            .join("acme")
            .join("keys")
            .join(format!("{name}.pem"))
    }

    fn save_pending_key(&self, path: &Path, key: &KeyPair) -> Result<(), AcmeError> {
        let io = |e: String| AcmeError::new(AcmeErrorKind::Other("local".into()), e);
        if let Some(dir) = path.parent() {
            account::private_dir(dir).map_err(io)?;
        }
        super::write_private_file(path, key.serialize_pem().as_bytes())
            .map_err(|e| io(e.to_string()))
    }
}

/// Revokes as `account`, sending again while the CA refuses nonces.
async fn revoke_as(account: &Account, request: &RevocationRequest<'_>) -> Result<(), AcmeError> {
    let mut refused = 0;
    loop {
        match account
            .revoke(request)
            .await
            .map_err(AcmeError::from_client)
        {
            Ok(()) => return Ok(()),
            Err(e) if e.kind == AcmeErrorKind::BadNonce && refused < NONCE_RETRIES => {
                refused += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether the CA refused a revocation to the account that asked (not the account's
/// own state: a deactivated or unknown account is handled as such).
fn refused_to_account(e: &AcmeError) -> bool {
    e.kind == AcmeErrorKind::Unauthorized
}

fn challenge_type(method: DcvMethod) -> ChallengeType {
    match method {
        DcvMethod::Http => ChallengeType::Http01,
        _ => ChallengeType::Dns01,
    }
}

fn new_key(key_type: KeyType) -> Result<KeyPair, AcmeError> {
    match key_type {
        KeyType::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        KeyType::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
    }
    .map_err(|e| AcmeError::new(AcmeErrorKind::Other("key".into()), e.to_string()))
}

/// An order the CA no longer knows is a reason to order again.
fn gone_order(err: instant_acme::Error) -> AcmeError {
    let mut e = AcmeError::from_client(err);
    if matches!(e.kind, AcmeErrorKind::Other(ref t) if t == "malformed") {
        e.kind = AcmeErrorKind::OrderUnusable;
    }
    e
}

/// Why an invalid order was refused: the first failed challenge's problem, with its host.
async fn refusal(order: &mut instant_acme::Order) -> AcmeError {
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        let host = authz.identifier().to_string();
        if let Some(problem) = authz.challenges.iter().find_map(|c| c.error.as_ref()) {
            return AcmeError::from_problem(problem).for_host(&host);
        }
    }
    match &order.state().error {
        Some(problem) => AcmeError::from_problem(problem),
        None => AcmeError::new(
            AcmeErrorKind::OrderUnusable,
            "the CA marked the order invalid",
        ),
    }
}

/// The RFC 9773 identifier of the certificate at the head of `chain_pem`: its authority
/// key identifier and serial, base64url, joined by a dot.
fn certificate_id(chain_pem: &str) -> Result<CertificateIdentifier<'static>, AcmeError> {
    let bad = |why: String| AcmeError::new(AcmeErrorKind::Other("certificate".into()), why);
    let der = leaf_der(chain_pem)?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| bad(format!("the certificate does not parse: {e}")))?;
    let aki = x509
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .ok_or_else(|| bad("the certificate has no authority key identifier".into()))?;
    Ok(CertificateIdentifier::new(
        Der::from_slice(&aki),
        Der::from_slice(x509.raw_serial()),
    ))
}

/// The DER of the first certificate of a PEM chain.
fn leaf_der(chain_pem: &str) -> Result<Vec<u8>, AcmeError> {
    x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map(|(_, pem)| pem.contents)
        .map_err(|e| {
            AcmeError::new(
                AcmeErrorKind::Other("certificate".into()),
                format!("the stored certificate is not PEM: {e}"),
            )
        })
}

/// The leaf's properties read back from the chain the CA sent.
fn leaf_from_chain(
    chain_pem: &str,
    req: &IssueRequest,
    key_pem: PrivateKeyPem,
) -> Result<IssuedLeaf, AcmeError> {
    let bad = |why: String| AcmeError::new(AcmeErrorKind::Other("certificate".into()), why);
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| bad(format!("the CA's chain is not PEM: {e}")))?;
    let x509 = pem
        .parse_x509()
        .map_err(|e| bad(format!("the CA's certificate does not parse: {e}")))?;
    let leaf_end = chain_pem
        .find("-----END CERTIFICATE-----")
        .map(|i| i + "-----END CERTIFICATE-----".len())
        .unwrap_or(chain_pem.len());
    let leaf_pem = format!("{}\n", chain_pem[..leaf_end].trim_start());
    Ok(IssuedLeaf {
        serial_hex: super::ca::hex(x509.raw_serial()),
        hosts: req.hosts.clone(),
        leaf_pem,
        chain_pem: chain_pem.to_owned(),
        key_pem,
        not_before: x509.validity().not_before.to_datetime(),
        not_after: x509.validity().not_after.to_datetime(),
        signature: super::ca::signature_name(&x509).map_err(|e| bad(e.to_string()))?,
        issuer: super::ca::common_name(&x509, false),
    })
}
