//! `client.test_controls()`: a zonecert server's test controls (`/_zonecert/v1/...`),
//! which only a server started with `--dev` or `--test-controls` offers (others answer
//! 404, [`Error::NotFound`](crate::Error::NotFound)), to credentials holding the
//! "zonecert Test Controls" permission group (the dev token has it).

use crate::client::{ApiRequest, Client};
use crate::error::Result;
use crate::ssl::fetch;
use zonecert_api::{
    AutoValidation, ClockAdvance, ClockSet, ClockState, Fault, FaultsCleared, NewFault,
    ResetResult, ZoneAutoValidation,
};

/// The API's path under a server's root.
pub(crate) const API_PATH: &str = "/client/v4";
/// The test controls' path under a server's root.
pub(crate) const CONTROLS_PATH: &str = "/_zonecert/v1";

/// The test controls of a zonecert server: reset, clock, auto-validation, faults.
///
/// ```no_run
/// # async fn run() -> Result<(), zonecert_client::Error> {
/// use zonecert_client::Client;
///
/// // CLOUDFLARE_BASE_URL=http://127.0.0.1:8787/client/v4 and the dev token.
/// let client = Client::from_env()?;
/// let controls = client.test_controls();
/// controls.reset().await?; // the documentation's seed state
/// controls.set_auto_validation("023e105f4ecef8ad9ca31a8372d0c353", true).await?;
/// let clock = controls.advance_clock("61d").await?; // into the renewal window
/// println!("the server's now: {}", clock.now);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TestControls<'a> {
    pub(crate) client: &'a Client,
}

fn request(method: reqwest::Method, path: &[&str]) -> ApiRequest {
    ApiRequest::new(method, path.iter().copied()).at_test_controls()
}

impl TestControls<'_> {
    /// `POST /_zonecert/v1/reset`: the database back to the documentation's seed state
    /// (example zone, active example pack, user, the same dev token); the clock back to
    /// real time, faults and per-zone auto-validation cleared. Idempotent, so retried.
    pub async fn reset(&self) -> Result<ResetResult> {
        let req = request(reqwest::Method::POST, &["reset"]).idempotent(true);
        fetch(self.client, req).await
    }

    /// `GET /_zonecert/v1/clock`: the server's now and how far it travelled.
    pub async fn clock(&self) -> Result<ClockState> {
        fetch(self.client, request(reqwest::Method::GET, &["clock"])).await
    }

    /// `POST /_zonecert/v1/clock/advance`: moves the server's clock forward by `by`
    /// (`"60d"`, `"2h 30m"`, `"90s"`); what became due (renewals, expiry, timeouts,
    /// checks) runs at once. Not retried: two moves would travel twice as far.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), zonecert_client::Error> {
    /// let client = zonecert_client::Client::from_env()?;
    /// let clock = client.test_controls().advance_clock("60d").await?;
    /// assert!(clock.offset_seconds >= 60 * 86_400);
    /// # Ok(()) }
    /// ```
    pub async fn advance_clock(&self, by: &str) -> Result<ClockState> {
        let body = ClockAdvance { by: by.to_owned() };
        let req = request(reqwest::Method::POST, &["clock", "advance"]).json(&body);
        fetch(self.client, req).await
    }

    /// `POST /_zonecert/v1/clock/set`: sets the server's clock to `to` (RFC 3339, not
    /// before its now). Idempotent, so retried.
    pub async fn set_clock(&self, to: &str) -> Result<ClockState> {
        let body = ClockSet { to: to.to_owned() };
        let req = request(reqwest::Method::POST, &["clock", "set"])
            .json(&body)
            .idempotent(true);
        fetch(self.client, req).await
    }

    /// `POST /_zonecert/v1/clock/reset`: back to real time. Idempotent, so retried.
    pub async fn reset_clock(&self) -> Result<ClockState> {
        let req = request(reqwest::Method::POST, &["clock", "reset"]).idempotent(true);
        fetch(self.client, req).await
    }

    /// `GET /_zonecert/v1/auto_validation`: which zones' DCV checks pass by themselves.
    pub async fn auto_validation(&self) -> Result<AutoValidation> {
        fetch(
            self.client,
            request(reqwest::Method::GET, &["auto_validation"]),
        )
        .await
    }

    /// `PUT /_zonecert/v1/zones/{zone_id}/auto_validation`: the zone's DCV checks pass
    /// as if the records existed (`enabled`), or are real again. CAA, issuance and
    /// deployment always run.
    pub async fn set_auto_validation(
        &self,
        zone_id: &str,
        enabled: bool,
    ) -> Result<ZoneAutoValidation> {
        let body = ZoneAutoValidation {
            zone_id: None,
            enabled,
        };
        let req = request(reqwest::Method::PUT, &["zones", zone_id, "auto_validation"]).json(&body);
        fetch(self.client, req).await
    }

    /// `GET /_zonecert/v1/faults`: the injected faults.
    pub async fn faults(&self) -> Result<Vec<Fault>> {
        fetch(self.client, request(reqwest::Method::GET, &["faults"])).await
    }

    /// `POST /_zonecert/v1/faults`: injects a fault. Not retried (it would be added
    /// twice).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), zonecert_client::Error> {
    /// use zonecert_client::api::NewFault;
    ///
    /// let client = zonecert_client::Client::from_env()?;
    /// // The next three DCV checks of www.example.com meet SERVFAIL.
    /// let fault = client
    ///     .test_controls()
    ///     .add_fault(&NewFault {
    ///         kind: "servfail".into(),
    ///         host: Some("www.example.com".into()),
    ///         attempts: Some(3),
    ///         ..NewFault::default()
    ///     })
    ///     .await?;
    /// println!("fault {}: {}", fault.id, fault.reason);
    /// # Ok(()) }
    /// ```
    pub async fn add_fault(&self, fault: &NewFault) -> Result<Fault> {
        let req = request(reqwest::Method::POST, &["faults"]).json(fault);
        fetch(self.client, req).await
    }

    /// `DELETE /_zonecert/v1/faults`: removes every injected fault.
    pub async fn clear_faults(&self) -> Result<FaultsCleared> {
        fetch(self.client, request(reqwest::Method::DELETE, &["faults"])).await
    }

    /// `DELETE /_zonecert/v1/faults/{fault_id}`: removes one injected fault.
    pub async fn delete_fault(&self, fault_id: &str) -> Result<FaultsCleared> {
        fetch(
            self.client,
            request(reqwest::Method::DELETE, &["faults", fault_id]),
        )
        .await
    }
}
