//! The issuer seam: the one interface through which the lifecycle obtains certificates.
//!
//! An order has two steps, matching ACME (RFC 8555):
//!
//! 1. [`Issuer::begin`] while the pack is `initializing`: the issuer hands out one DCV record
//!    per host (the model's [`DcvRecord`], the same type the pack stores and the validator
//!    checks) and an opaque order reference, which the lifecycle stores with the pack.
//! 2. [`Issuer::finish`] once zonecert's own check of every record passed (`pending_issuance`): the
//!    issuer makes its CA validate and sign, and returns the certificate.
//!
//! The built-in CA trusts zonecert's check, so its records need no CA: they are minted when
//! the pack is ordered ([`Pack::order`](crate::model::Pack::order)), the pack starts in
//! `pending_validation`, and the lifecycle names the order with [`Issuer::local_order`]
//! instead of storing a reference. Its `begin` mints the same records the same way.
//!
//! The ACME issuer ([`Issuer::Acme`], Let's Encrypt, Google Trust Services, Pebble, ...):
//! `begin` creates the ACME order and returns the CA's challenges as records (a TXT record
//! whose value is base64url(SHA-256(key authorization)), or the http-01 URL with the key
//! authorization as body), and an order reference carrying the order URL and the
//! challenges; `finish` tells the CA the challenges are ready, polls the order, finalizes
//! it with a CSR for a locally generated key of the request's [`KeyType`](super::KeyType),
//! and downloads the chain (see [`super::acme`]). `local_order` has no meaning for it and
//! refuses. How the lifecycle drives the two steps is described in [`crate::lifecycle`]'s
//! worker.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::acme::{AcmeIssuer, AcmeOrderRef};
use super::leaf::check_hosts;
use super::{BuiltinCa, IssuanceError, IssueRequest, IssuedLeaf};
use crate::dcv::CaaRequest;
use crate::model::{CaChoice, DcvMethod, DcvRecord, Hostname};

/// A certificate authority the lifecycle can order from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Issuer {
    /// zonecert's own CA. It trusts zonecert's DCV check: `finish` signs without validating
    /// again.
    Builtin(Arc<BuiltinCa>),
    /// An ACME CA: its own validation decides, after zonecert's check passed.
    Acme(Arc<AcmeIssuer>),
}

/// The first half of an order: what to publish, and what to give back to `finish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerOrder {
    /// Opaque to the caller; store it verbatim and pass it to [`Issuer::finish`].
    pub order_ref: String,
    /// One record per host, in the order the hosts were given.
    pub challenges: Vec<HostChallenge>,
    /// When the CA forgets the tokens (ACME authorizations expire); `None` when the issuer
    /// sets no limit and the lifecycle's own validation timeout applies.
    pub tokens_expire: Option<OffsetDateTime>,
}

/// The DCV record that proves control of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChallenge {
    /// The host, as ordered (may be a wildcard).
    pub host: Hostname,
    /// What must be published where; the token is inside it (the TXT value, the HTTP
    /// URL and body).
    pub record: DcvRecord,
}

/// What the order reference of each issuer holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "issuer", rename_all = "snake_case")]
enum OrderRef {
    Builtin { hosts: Vec<String> },
    Acme(AcmeOrderRef),
}

impl Issuer {
    /// Starts an order for `hosts` to be validated by `method`. `dcv_target_suffix` is where
    /// delegated (cname) validations point, as for [`DcvRecord::mint`].
    ///
    /// Fails for email validation, which no CA runs for zonecert (an operator approves such
    /// packs), and for http validation of a wildcard host, which no CA may accept
    /// (CA/Browser Forum ballot SC45).
    pub async fn begin(
        &self,
        hosts: &[Hostname],
        method: DcvMethod,
        dcv_target_suffix: &str,
        validity_days: Option<u32>,
    ) -> Result<IssuerOrder, IssuanceError> {
        self.begin_replacing(hosts, method, dcv_target_suffix, validity_days, None)
            .await
    }

    /// [`Issuer::begin`] for a renewal of the certificate `replaces_pem` (leaf first,
    /// PEM): an ACME CA offering renewal information is told which certificate the order
    /// replaces (RFC 9773).
    pub async fn begin_replacing(
        &self,
        hosts: &[Hostname],
        method: DcvMethod,
        dcv_target_suffix: &str,
        validity_days: Option<u32>,
        replaces_pem: Option<&str>,
    ) -> Result<IssuerOrder, IssuanceError> {
        let names = host_names(hosts);
        check_hosts(&names)?;
        match method {
            DcvMethod::Txt | DcvMethod::Http | DcvMethod::Cname => {}
            DcvMethod::Email => {
                return Err(IssuanceError::UnsupportedValidation {
                    host: names.join(", "),
                    method: method.as_str().to_owned(),
                    reason: "an issuer validates only by http, txt and cname",
                });
            }
        }
        if method == DcvMethod::Http
            && let Some(wildcard) = hosts.iter().find(|h| h.is_wildcard())
        {
            return Err(IssuanceError::UnsupportedValidation {
                host: wildcard.as_str().to_owned(),
                method: method.as_str().to_owned(),
                reason: "a wildcard host can only be validated through DNS (txt or cname)",
            });
        }
        match self {
            Issuer::Builtin(_) => Ok(IssuerOrder {
                order_ref: self.local_order(hosts)?,
                challenges: hosts
                    .iter()
                    .map(|host| HostChallenge {
                        host: host.clone(),
                        record: DcvRecord::mint(method, host, dcv_target_suffix),
                    })
                    .collect(),
                tokens_expire: None,
            }),
            Issuer::Acme(acme) => {
                // Boxed, as every ACME call here: an ACME request's future is tens of
                // kilobytes, and inline it would make every caller's future (the
                // lifecycle's step of each pack, built-in CA or not) that large.
                let (order, records) = Box::pin(acme.begin_replacing(
                    hosts,
                    method,
                    dcv_target_suffix,
                    validity_days,
                    replaces_pem,
                ))
                .await?;
                Ok(IssuerOrder {
                    order_ref: serde_json::to_string(&OrderRef::Acme(order))
                        .map_err(|e| IssuanceError::Generation(format!("order reference: {e}")))?,
                    challenges: hosts
                        .iter()
                        .zip(records)
                        .map(|(host, record)| HostChallenge {
                            host: host.clone(),
                            record,
                        })
                        .collect(),
                    tokens_expire: None,
                })
            }
        }
    }

    /// When the CA suggests renewing the certificate `chain_pem` (leaf first, PEM): ACME
    /// Renewal Information (RFC 9773), where the CA's directory offers it; `None` for the
    /// built-in CA and for ACME CAs without it.
    pub async fn renewal_info(
        &self,
        chain_pem: &str,
    ) -> Result<Option<super::acme::RenewalAdvice>, IssuanceError> {
        match self {
            Issuer::Builtin(_) => Ok(None),
            Issuer::Acme(acme) => Ok(Box::pin(acme.renewal_info(chain_pem)).await?),
        }
    }

    /// Forgets what was kept to resume the order `order_ref` (an ACME order's pending
    /// key), once its certificate is deployed and recorded.
    pub fn forget(&self, order_ref: &str) {
        if let (Issuer::Acme(acme), Ok(OrderRef::Acme(order))) =
            (self, serde_json::from_str::<OrderRef>(order_ref))
        {
            acme.forget(&order);
        }
    }

    /// What CAA records must allow for this issuer to issue for a pack of `ca` validated
    /// by `method`: the CA's issuer domain names (the configured ones for an ACME CA),
    /// the ACME account (RFC 8657 `accounturi`, once the account exists) and method
    /// (`validationmethods`).
    pub async fn caa_request(&self, ca: CaChoice, method: DcvMethod) -> CaaRequest {
        let method = match method {
            DcvMethod::Http => Some("http-01".to_owned()),
            DcvMethod::Txt | DcvMethod::Cname => Some("dns-01".to_owned()),
            DcvMethod::Email => None,
        };
        match self {
            Issuer::Builtin(_) => CaaRequest {
                identities: vec![ca.caa_identity().to_owned()],
                account_uri: None,
                method,
            },
            Issuer::Acme(acme) => CaaRequest {
                identities: acme.settings().caa_domains.clone(),
                account_uri: Box::pin(acme.account_id()).await.ok(),
                method,
            },
        }
    }

    /// Whether this issuer's records come from its CA (`begin` must run before the
    /// pack can be validated), rather than being minted by zonecert.
    pub fn orders_remotely(&self) -> bool {
        matches!(self, Issuer::Acme(_))
    }

    /// The order reference of `hosts` whose records zonecert minted itself when the pack
    /// was ordered, so no [`Issuer::begin`] ran and no reference was stored: the lifecycle
    /// passes it to [`Issuer::finish`]. The built-in CA trusts zonecert's check, so its
    /// order is nothing but the hosts. An issuer whose tokens come from its CA (ACME) has
    /// no such order; its packs keep the reference `begin` returned.
    pub fn local_order(&self, hosts: &[Hostname]) -> Result<String, IssuanceError> {
        match self {
            Issuer::Builtin(_) => serde_json::to_string(&OrderRef::Builtin {
                hosts: host_names(hosts),
            })
            .map_err(|e| IssuanceError::Generation(format!("order reference: {e}"))),
            Issuer::Acme(_) => Err(IssuanceError::OrderMismatch(
                "an ACME CA's order must be placed with begin first".to_owned(),
            )),
        }
    }

    /// Completes the order `order_ref` (from [`Issuer::begin`] or [`Issuer::local_order`])
    /// and returns the certificate. The built-in CA signs on a blocking thread.
    /// `req.hosts` must be the order's hosts (in any order), as a CA finalizes only what it
    /// authorized.
    pub async fn finish(
        &self,
        order_ref: &str,
        req: &IssueRequest,
    ) -> Result<IssuedLeaf, IssuanceError> {
        let parsed: OrderRef = serde_json::from_str(order_ref).map_err(|e| {
            IssuanceError::OrderMismatch(format!(
                "the order reference was not made by this issuer: {e}"
            ))
        })?;
        match (self, parsed) {
            (Issuer::Builtin(ca), OrderRef::Builtin { hosts }) => {
                if !same_hosts(&hosts, &req.hosts) {
                    return Err(IssuanceError::OrderMismatch(format!(
                        "the order is for [{}] but the request asks for [{}]",
                        hosts.join(", "),
                        req.hosts.join(", ")
                    )));
                }
                let ca = Arc::clone(ca);
                let req = req.clone();
                // RSA key generation takes tens of milliseconds: keep it off the async workers.
                tokio::task::spawn_blocking(move || ca.issue(&req)).await?
            }
            (Issuer::Acme(acme), OrderRef::Acme(order)) => {
                let hosts: Vec<String> = order.challenges.iter().map(|c| c.host.clone()).collect();
                if !same_hosts(&hosts, &req.hosts) {
                    return Err(IssuanceError::OrderMismatch(format!(
                        "the order is for [{}] but the request asks for [{}]",
                        hosts.join(", "),
                        req.hosts.join(", ")
                    )));
                }
                Ok(Box::pin(acme.finish(&order, req)).await?)
            }
            (Issuer::Builtin(_), OrderRef::Acme(_))
            | (Issuer::Acme(_), OrderRef::Builtin { .. }) => Err(IssuanceError::OrderMismatch(
                "the order was placed with another CA than the one now configured for \
                     this name"
                    .to_owned(),
            )),
        }
    }
}

/// The dns-01 TXT value `order_ref` (a stored ACME order reference) asks `host` to
/// publish, if it is an ACME order with a challenge for that host: what the DNS responder
/// answers at a delegated host's CNAME target.
pub fn acme_dns_value(order_ref: &str, host: &str) -> Option<String> {
    match serde_json::from_str::<OrderRef>(order_ref).ok()? {
        OrderRef::Acme(order) if order.method != "http" => order
            .challenges
            .into_iter()
            .find(|c| c.host.eq_ignore_ascii_case(host))
            .map(|c| c.value),
        _ => None,
    }
}

fn same_hosts(a: &[String], b: &[String]) -> bool {
    let normalise = |list: &[String]| {
        let mut v: Vec<String> = list.iter().map(|h| h.to_ascii_lowercase()).collect();
        v.sort();
        v
    };
    normalise(a) == normalise(b)
}

fn host_names(hosts: &[Hostname]) -> Vec<String> {
    hosts.iter().map(|h| h.as_str().to_owned()).collect()
}
