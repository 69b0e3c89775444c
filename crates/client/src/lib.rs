//! A Rust client for Cloudflare's SSL verification and certificate-pack API, which
//! works the same against `https://api.cloudflare.com/client/v4` and a zonecert server.
//!
//! The official TypeScript SDK reads `client.ssl.verification.get({ zone_id })`; here:
//!
//! ```no_run
//! use zonecert_client::Client;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), zonecert_client::Error> {
//!     // CLOUDFLARE_API_TOKEN (or CLOUDFLARE_API_KEY + CLOUDFLARE_EMAIL), and
//!     // CLOUDFLARE_BASE_URL when talking to a zonecert server.
//!     let client = Client::from_env()?;
//!
//!     let verifications = client
//!         .ssl()
//!         .verification()
//!         .get("023e105f4ecef8ad9ca31a8372d0c353")
//!         .await?;
//!
//!     println!("{verifications:#?}");
//!     Ok(())
//! }
//! ```
//!
//! Against a local server, e.g. `zonecert serve --dev`, set the base URL it prints:
//! `CLOUDFLARE_BASE_URL=http://127.0.0.1:PORT/client/v4`. Without it, requests go to
//! Cloudflare.
//!
//! # What is here
//!
//! - [`Client`], built with [`Client::from_env`] or [`Client::builder`] (base URL with
//!   or without a trailing slash, credentials, timeout 60 s, 2 retries, user agent).
//! - [`Client::ssl`]: [`verification`](Ssl::verification) (`get`, `edit`) and
//!   [`certificate_packs`](Ssl::certificate_packs) (`create`, `list`, `get`, `edit`,
//!   `delete`, `quota`); `list` is a [`ListStream`] that fetches pages as it is read.
//! - [`Client::zones`] and [`Client::user`] (`tokens().verify()`).
//! - [`Client::test_controls`]: a zonecert server's test controls (reset, clock,
//!   auto-validation, faults), offered under `--dev` or `--test-controls`.
//! - [`Error`]: one variant per kind of failure, each answer's Cloudflare errors
//!   (`u32` codes, messages, `error_chain`) in [`ApiError`].
//! - The wire types of [`zonecert_api`], re-exported: they decode what the live API
//!   sends (unknown enum values and keys kept, `verification_info` as an object or an
//!   array).
//!
//! # Retries
//!
//! Connection failures and answers 408, 409, 429 and 5xx are retried with exponential
//! backoff and jitter, honouring `retry-after-ms` and `Retry-After`; requests that may
//! have been applied are retried only when idempotent, so a pack is never ordered
//! twice ([`ClientBuilder::max_retries`] sets how many retries, 2 by default):
//!
//! - idempotent: GET, DELETE, the verification PATCH (setting a method twice is setting
//!   it once) and the pack PATCH;
//! - POST (order a pack, create a zone) is retried only if the connection was never
//!   opened, or the server answered 408, 429 or 503, or said `x-should-retry: true`;
//! - a 429 asking to wait a minute or more is not slept through:
//!   [`Error::RateLimited`] carries the wait.
//!
//! # Handling errors
//!
//! ```no_run
//! # async fn run() -> Result<(), zonecert_client::Error> {
//! use zonecert_client::{Client, Error};
//!
//! let client = Client::from_env()?;
//! match client.ssl().verification().get("023e105f4ecef8ad9ca31a8372d0c353").await {
//!     Ok(items) => println!("{} items", items.len()),
//!     Err(Error::NotFound(e)) => eprintln!("no such zone: {e}"),
//!     Err(Error::RateLimited { retry_after, .. }) => eprintln!("slow down: {retry_after:?}"),
//!     Err(e) => {
//!         for cf in e.errors() {
//!             eprintln!("{} {}", cf.code, cf.message);
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
// Tests may unwrap: a panic there is a failed test, not a crash reachable from input.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod client;
mod controls;
mod error;
mod pagination;
mod retry;
mod ssl;
mod zones;

pub use client::{
    ApiRequest, Client, ClientBuilder, Credentials, DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
};
pub use controls::TestControls;
pub use error::{ApiError, Error, Result};
pub use pagination::ListStream;
pub use reqwest::Method;
pub use ssl::{
    CertificatePackCreateParams, CertificatePackEditParams, CertificatePackListParams,
    CertificatePackParams, CertificatePacks, Ssl, VerificationEditParams, VerificationGetParams,
    VerificationResource, quota_request,
};
pub use zones::{DeletedZone, Tokens, User, ZoneListParams, Zones};

/// The wire types, so that callers need no direct dependency on `zonecert-api`.
pub use zonecert_api as api;
pub use zonecert_api::{
    CertificateAuthority, CertificatePack, CertificatePackQuota, CertificateStatus,
    DeletedCertificatePack, EditVerificationResult, PackStatus, ResponseMessage, ValidationMethod,
    ValidationRecord, Verification, VerificationInfo, Zone,
};

impl Client {
    /// The SSL resources: verification and certificate packs.
    pub fn ssl(&self) -> Ssl<'_> {
        Ssl { client: self }
    }

    /// The zones.
    pub fn zones(&self) -> Zones<'_> {
        Zones { client: self }
    }

    /// The user of the credentials (`tokens().verify()`).
    pub fn user(&self) -> User<'_> {
        User { client: self }
    }

    /// A zonecert server's test controls (reset, clock, auto-validation, faults), for
    /// test suites: see [`TestControls`]. Cloudflare has none.
    pub fn test_controls(&self) -> TestControls<'_> {
        TestControls { client: self }
    }
}
