//! What a transition reports: the events a webhook or a metric will tell.

use crate::model::ids::Hostname;
use crate::model::pack::{DcvMethod, PackState};

/// What a transition reports: what a webhook or a metric will tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A host's record was found.
    HostValidated {
        /// The host.
        host: Hostname,
    },
    /// Checks failed, with each host's reason (`host: reason`).
    ValidationFailed {
        /// One per failed host.
        reasons: Vec<String>,
    },
    /// Every host validated and CAA allows the CA: on to issuance.
    Validated,
    /// Every host validated but CAA forbids the CA.
    CaaRefused {
        /// Why.
        reason: String,
    },
    /// An active pack's records were checked again and CAA allows the CA: the renewal's
    /// certificate is to be issued.
    Revalidated,
    /// A renewal's checks failed (the pack stays active).
    RenewalFailed {
        /// Why.
        reason: String,
    },
    /// Renewal stopped 24 hours before expiry: the certificate will expire.
    RenewalAbandoned,
    /// The issuer began the order: its tokens are published.
    OrderBegun,
    /// A certificate was issued (`renewal`: for an active pack).
    Issued {
        /// Its serial number (hex).
        serial: String,
        /// Whether it renews an active pack's certificate.
        renewal: bool,
    },
    /// Issuance failed; retried later.
    IssuanceFailed {
        /// Why.
        reason: String,
    },
    /// Deployment failed; retried later.
    DeploymentFailed {
        /// Why.
        reason: String,
    },
    /// The certificate is deployed: the pack is active.
    Active {
        /// The deployed certificate's serial number (hex).
        serial: String,
    },
    /// A stage ran out of time.
    TimedOut {
        /// The timed-out state.
        state: PackState,
    },
    /// The certificate expired.
    Expired,
    /// A timed-out pack was restarted with fresh tokens.
    Restarted,
    /// The pack validates with another method, with fresh records.
    MethodChanged {
        /// The new method.
        method: DcvMethod,
    },
    /// Hosts were made due now (`retry=true`, a PATCH with the same method).
    RecheckRequested {
        /// How many.
        hosts: usize,
        /// How many more were being checked and are asked for anew.
        running: usize,
    },
    /// The pack's branding changed.
    BrandingChanged {
        /// The new value.
        cloudflare_branding: bool,
    },
    /// An operator approved the pack.
    Approved,
    /// The pack is deleted.
    Deleted,
}
