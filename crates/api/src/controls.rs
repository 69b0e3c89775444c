//! zonecert's test controls (`/_zonecert/v1/...`, outside Cloudflare's namespace): the
//! simulated clock, auto-validation, injected faults and the reset to the seed state. A
//! server offers them only when started with `--dev` or `--test-controls`.

use serde::{Deserialize, Serialize};

/// The server's clock: real time plus the offset the test controls moved it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClockState {
    /// The server's now (RFC 3339): what the lifecycle and the API use.
    pub now: String,
    /// The real time (RFC 3339).
    pub real_now: String,
    /// How far ahead of real time the clock is, in seconds (0: not travelling).
    pub offset_seconds: i64,
}

/// Body of `POST /_zonecert/v1/clock/advance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClockAdvance {
    /// How far forward: `60d`, `2h 30m`, `90s` (a bare number is seconds). Must be
    /// positive: the clock never moves backwards.
    pub by: String,
}

/// Body of `POST /_zonecert/v1/clock/set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClockSet {
    /// The new now, RFC 3339 (`2027-03-01T00:00:00Z`); not before the clock's current now.
    pub to: String,
}

/// Result of `POST /_zonecert/v1/reset`: what the database holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResetResult {
    /// The documentation's example zone.
    pub zone_id: String,
    /// Its example certificate pack (active, freshly issued by the built-in CA).
    pub pack_id: String,
    /// The example user's e-mail (with the documentation's global key).
    pub user_email: String,
    /// How long the reset took, in milliseconds.
    pub took_ms: u64,
}

/// Result of `GET /_zonecert/v1/auto_validation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AutoValidation {
    /// Every zone is auto-validated (the server runs with `--dcv-auto-validate`).
    pub all_zones: bool,
    /// The zones switched on over the control API.
    pub zones: Vec<String>,
}

/// Body of `PUT /_zonecert/v1/zones/{zone_id}/auto_validation`, and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ZoneAutoValidation {
    /// The zone (ignored in the body: the path names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    /// Whether the zone's DCV checks pass as if the records existed.
    pub enabled: bool,
}

/// Body of `POST /_zonecert/v1/faults`: a failure the lifecycle meets instead of the
/// real outcome.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NewFault {
    /// What fails: `nxdomain`, `wrong_value`, `servfail`, `timeout`, `http_404` (a DCV
    /// check), `caa` (CAA forbids the CA), `ca` (the CA refuses to sign), `deploy_hook`
    /// (the deploy hook fails).
    pub kind: String,
    /// Only this zone's packs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    /// Only this host (in any zone, or in `zone_id`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// For the next N attempts of each host (DCV kinds) or pack (the others); absent:
    /// until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// For `ca`: the ACME problem type (default
    /// `urn:ietf:params:acme:error:rejectedIdentifier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    /// Replaces the default wording of the failure (for `ca`: the problem's detail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An injected fault, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Fault {
    /// Its id, for `DELETE /_zonecert/v1/faults/{fault_id}`.
    pub id: String,
    /// What fails (see [`NewFault::kind`]).
    pub kind: String,
    /// Only this zone's packs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    /// Only this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// How many attempts it was given (absent: until cleared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// How many times it struck so far.
    pub struck: u64,
    /// The reason the lifecycle records when it strikes.
    pub reason: String,
}

/// Result of `DELETE /_zonecert/v1/faults`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FaultsCleared {
    /// How many faults were removed.
    pub cleared: u64,
}
