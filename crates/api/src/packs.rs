//! Certificate packs: order, list, get, edit, delete, quota.

use crate::enums::{CertificateAuthority, PackStatus, PackType, Signature, ValidationMethod};
use crate::verification::ValidationRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A certificate pack with all its properties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CertificatePack {
    /// The pack's id (a UUID).
    pub id: String,
    /// The pack's type; `advanced` for ordered packs.
    #[serde(rename = "type")]
    pub pack_type: PackType,
    /// The hosts the pack covers.
    pub hosts: Vec<String>,
    /// Where the pack is in its lifecycle.
    pub status: PackStatus,
    /// The certificates issued for the pack (empty until issuance).
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    /// The CA that was ordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<CertificateAuthority>,
    /// Whether a Cloudflare-branded common name was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudflare_branding: Option<bool>,
    /// Records for delegated (CNAME) DCV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcv_delegation_records: Option<Vec<ValidationRecord>>,
    /// The id of the primary certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_certificate: Option<String>,
    /// Why validation has not passed yet, per host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_errors: Option<Vec<ValidationError>>,
    /// How domain control is validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::pack_validation_method")
    )]
    pub validation_method: Option<ValidationMethod>,
    /// The records that must exist, one per host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_records: Option<Vec<ValidationRecord>>,
    /// The validity that was ordered, in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::validity_days")
    )]
    pub validity_days: Option<u32>,
    /// Keys this version does not know, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One certificate of a pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Certificate {
    /// The certificate's id.
    pub id: String,
    /// The hosts it covers.
    pub hosts: Vec<String>,
    /// Its status (`active`, ...).
    pub status: String,
    /// Bundle method (`ubiquitous`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_method: Option<String>,
    /// When it expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<String>,
    /// The issuing CA's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// When it was last modified (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_on: Option<String>,
    /// Its priority among the pack's certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<f64>,
    /// Its signature algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    /// When it was uploaded or issued (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded_on: Option<String>,
    /// The zone it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    /// Keys this version does not know, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A domain validation error of a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ValidationError {
    /// What went wrong, e.g. `SERVFAIL looking up CAA for app.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Body of `POST /zones/{zone_id}/ssl/certificate_packs/order`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OrderCertificatePack {
    /// Always [`PackType::Advanced`].
    #[serde(rename = "type")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::advanced_type")
    )]
    pub pack_type: PackType,
    /// 1 to 50 hosts, including the zone apex.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 50)))]
    pub hosts: Vec<String>,
    /// `txt`, `http` or `email`.
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::pack_validation_method")
    )]
    pub validation_method: ValidationMethod,
    /// 14, 30, 90 or 365.
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::validity_days")
    )]
    pub validity_days: u32,
    /// The CA to order from.
    pub certificate_authority: CertificateAuthority,
    /// Whether to add a Cloudflare-branded common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudflare_branding: Option<bool>,
}

/// Body of `PATCH /zones/{zone_id}/ssl/certificate_packs/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EditCertificatePack {
    /// Whether to add a Cloudflare-branded common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudflare_branding: Option<bool>,
}

/// Query of `GET /zones/{zone_id}/ssl/certificate_packs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ListCertificatePacks {
    /// Page number, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u64>,
    /// Page size, 5 to 50 (20 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_page: Option<u64>,
    /// `all` includes packs of every status, not only active ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Result of `DELETE /zones/{zone_id}/ssl/certificate_packs/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeletedCertificatePack {
    /// The deleted pack's id.
    pub id: String,
}

/// Result of `GET /zones/{zone_id}/ssl/certificate_packs/quota`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CertificatePackQuota {
    /// The quota of advanced packs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<Quota>,
}

/// Allocated and used quantities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Quota {
    /// How many may exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<u64>,
    /// How many exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
}
