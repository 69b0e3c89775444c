//! The zone and token endpoints zonecert offers around the SSL API.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A zone (a DNS domain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Zone {
    /// 32 lowercase hex characters.
    pub id: String,
    /// The zone's apex, e.g. `example.com`.
    pub name: String,
    /// `active` for every zonecert zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// When it was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_on: Option<String>,
    /// When it was last modified (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_on: Option<String>,
    /// Keys this version does not know, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Body of `POST /zones`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateZone {
    /// The zone's apex, e.g. `example.com`.
    pub name: String,
}

/// Result of `GET /user/tokens/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TokenStatus {
    /// The token's id.
    pub id: String,
    /// `active` (revoked tokens do not verify at all).
    pub status: String,
}
