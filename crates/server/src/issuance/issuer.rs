//! The issuer seam: the one interface through which the lifecycle obtains certificates.
//!
//! An order has two steps, matching ACME (RFC 8555):
//!
//! 1. [`Issuer::begin`] while the pack is `initializing`: the issuer hands out one DCV record
//!    per host and an opaque order reference, which the lifecycle stores with the pack.
//! 2. [`Issuer::finish`] once zonecert's own check of every record passed (`issuing`): the
//!    issuer makes its CA validate and sign, and returns the certificate.
//!
//! Only the built-in CA exists today. An ACME issuer (Let's Encrypt, Pebble) is meant to
//! become a second variant, `Issuer::Acme`, without changing this interface: `begin` creates
//! the ACME order and returns the CA's challenges (`_acme-challenge` TXT value =
//! base64url(SHA-256(key authorization)), or the http-01 URL and key authorization) with the
//! authorizations' expiry in [`IssuerOrder::tokens_expire`], and an order reference carrying
//! the order URL; `finish` tells the CA the challenges are ready, polls the order, finalizes
//! it with a CSR for a locally generated key of the request's [`KeyType`](super::KeyType),
//! and downloads the chain. Hence the async methods and the serialised order reference.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zonecert_api::ValidationMethod;

use super::leaf::check_hosts;
use super::{BuiltinCa, IssuanceError, IssueRequest, IssuedLeaf};

/// A certificate authority the lifecycle can order from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Issuer {
    /// zonecert's own CA. It trusts zonecert's DCV check: `finish` signs without validating
    /// again.
    Builtin(Arc<BuiltinCa>),
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
    pub host: String,
    /// The challenge token (for the built-in CA, 43 base64url characters from 256 random bits).
    pub token: String,
    /// What must be published where.
    pub record: DcvRecord,
}

/// Where a DCV token must be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcvRecord {
    /// A TXT record. For the cname method this is the record the delegation target must serve.
    Txt {
        /// `_acme-challenge.<host without "*.">`.
        name: String,
        /// The value one of the TXT strings at `name` must equal.
        value: String,
    },
    /// An HTTP resource.
    Http {
        /// `http://<host>/.well-known/acme-challenge/<token>`.
        url: String,
        /// The body it must answer with (trailing whitespace ignored).
        body: String,
    },
}

/// What the order reference of each issuer holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "issuer", rename_all = "snake_case")]
enum OrderRef {
    Builtin { hosts: Vec<String> },
}

impl Issuer {
    /// Starts an order for `hosts` to be validated by `method`.
    ///
    /// Fails for email validation, which zonecert does not run, and for http validation of a
    /// wildcard host, which no CA may accept (CA/Browser Forum ballot SC45).
    pub async fn begin(
        &self,
        hosts: &[String],
        method: &ValidationMethod,
    ) -> Result<IssuerOrder, IssuanceError> {
        check_hosts(hosts)?;
        let http = match method {
            ValidationMethod::Http => true,
            ValidationMethod::Txt | ValidationMethod::Cname => false,
            other => {
                return Err(IssuanceError::UnsupportedValidation {
                    host: hosts.join(", "),
                    method: other.as_str().to_owned(),
                    reason: "zonecert validates only by http, txt and cname",
                });
            }
        };
        if http && let Some(wildcard) = hosts.iter().find(|h| h.starts_with("*.")) {
            return Err(IssuanceError::UnsupportedValidation {
                host: wildcard.clone(),
                method: method.as_str().to_owned(),
                reason: "a wildcard host can only be validated through DNS (txt or cname)",
            });
        }
        match self {
            Issuer::Builtin(_) => {
                let challenges = hosts
                    .iter()
                    .map(|host| {
                        let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
                        let record = if http {
                            DcvRecord::Http {
                                url: format!("http://{host}/.well-known/acme-challenge/{token}"),
                                body: token.clone(),
                            }
                        } else {
                            let base = host.strip_prefix("*.").unwrap_or(host);
                            DcvRecord::Txt {
                                name: format!("_acme-challenge.{base}"),
                                value: token.clone(),
                            }
                        };
                        HostChallenge {
                            host: host.clone(),
                            token,
                            record,
                        }
                    })
                    .collect();
                let order_ref = serde_json::to_string(&OrderRef::Builtin {
                    hosts: hosts.to_vec(),
                })
                .map_err(|e| IssuanceError::Generation(format!("order reference: {e}")))?;
                Ok(IssuerOrder {
                    order_ref,
                    challenges,
                    tokens_expire: None,
                })
            }
        }
    }

    /// Completes the order `order_ref` (from [`Issuer::begin`]) and returns the certificate.
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
        }
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
