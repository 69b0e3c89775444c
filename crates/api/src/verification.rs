//! The seed endpoint: `GET /zones/{zone_id}/ssl/verification` and its PATCH.

use crate::enums::{CertificateStatus, PackStatus, Signature, ValidationMethod, VerificationType};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The verification state of one certificate pack (or, in zonecert's default form,
/// of one host of a pack).
///
/// Only `certificate_status` is always present. Keys this version does not know are
/// kept in [`Verification::extra`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Verification {
    /// Where the certificate is in its lifecycle.
    pub certificate_status: CertificateStatus,
    /// Whether the CA is manually reviewing the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand_check: Option<bool>,
    /// The certificate pack's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pack_uuid: Option<String>,
    /// The host this item is about (sent by the live API and by zonecert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The certificate's signature algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    /// How domain control is validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::verification_validation_method")
    )]
    pub validation_method: Option<ValidationMethod>,
    /// The record that must exist: an object (zonecert, the spec) or an array of
    /// records (the live API since 2022).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_info: Option<VerificationInfo>,
    /// Whether the record was found; absent while unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_status: Option<bool>,
    /// `cname` for DNS methods, `meta tag` for http.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_type: Option<VerificationType>,
    /// Keys this version does not know, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What must exist for validation to pass.
// The object form is the common one; boxing it would make every match and
// construction noisier for a few hundred bytes per item.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
#[cfg_attr(feature = "schema", schemars(transform = crate::schema::exclusive_forms))]
pub enum VerificationInfo {
    /// One record as an object. zonecert sends the spec's `record_name`/`record_target`
    /// (naming which keys carry the record) together with the real keys.
    Record(ValidationRecord),
    /// A list of records, as the live API sends it.
    Records(Vec<ValidationRecord>),
}

impl VerificationInfo {
    /// The records, whichever form arrived.
    pub fn records(&self) -> &[ValidationRecord] {
        match self {
            VerificationInfo::Record(r) => std::slice::from_ref(r),
            VerificationInfo::Records(rs) => rs,
        }
    }
}

/// A DCV record: TXT, HTTP file, CNAME delegation or e-mail addresses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ValidationRecord {
    /// In `verification_info`: the name of the key that holds the record's name
    /// (`txt_name`, `http_url`, `cname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::record_name")
    )]
    pub record_name: Option<String>,
    /// In `verification_info`: the name of the key that holds the record's value
    /// (`txt_value`, `http_body`, `cname_target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::record_target")
    )]
    pub record_target: Option<String>,
    /// The TXT record's name, `_acme-challenge.<host>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txt_name: Option<String>,
    /// The TXT record's value (the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txt_value: Option<String>,
    /// The URL that must answer with `http_body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_url: Option<String>,
    /// The body `http_url` must answer with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_body: Option<String>,
    /// The CNAME's name for delegated DCV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cname: Option<String>,
    /// The CNAME's target for delegated DCV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cname_target: Option<String>,
    /// Addresses e-mail validation writes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emails: Option<Vec<String>>,
    /// The record's state (`pending`, `active`, ...), with zonecert's reason when pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Keys this version does not know, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Body of `PATCH /zones/{zone_id}/ssl/verification/{certificate_pack_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EditVerification {
    /// The method to validate with from now on (the same one rechecks at once).
    pub validation_method: ValidationMethod,
}

/// Result of the verification PATCH.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EditVerificationResult {
    /// The pack's status after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PackStatus>,
    /// The method now in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_method: Option<ValidationMethod>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_seed_example() {
        let body = r#"{
          "certificate_status": "active", "brand_check": false,
          "cert_pack_uuid": "a77f8bd7-3b47-46b4-a6f1-75cf98109948",
          "signature": "ECDSAWithSHA256", "validation_method": "txt",
          "verification_info": {"record_name": "record_name", "record_target": "record_value"},
          "verification_status": true, "verification_type": "cname"
        }"#;
        let v: Verification = serde_json::from_str(body).unwrap();
        assert_eq!(v.certificate_status, CertificateStatus::Active);
        let info = v.verification_info.unwrap();
        assert_eq!(
            info.records()[0].record_target.as_deref(),
            Some("record_value")
        );
    }

    #[test]
    fn decodes_the_live_array_form_with_extra_keys() {
        let body = r#"{
          "certificate_status": "pending_validation", "hostname": "example.com",
          "verification_info": [{"status":"pending","txt_name":"_acme-challenge.example.com","txt_value":"abc"}],
          "future_key": 7
        }"#;
        let v: Verification = serde_json::from_str(body).unwrap();
        assert_eq!(
            v.certificate_status,
            CertificateStatus::Other("pending_validation".into())
        );
        assert_eq!(v.hostname.as_deref(), Some("example.com"));
        let info = v.verification_info.unwrap();
        assert_eq!(info.records()[0].txt_value.as_deref(), Some("abc"));
        assert_eq!(v.extra.get("future_key"), Some(&serde_json::json!(7)));
    }

    #[test]
    fn absent_verification_info_is_none() {
        let v: Verification = serde_json::from_str(r#"{"certificate_status":"issuing"}"#).unwrap();
        assert!(v.verification_info.is_none());
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"certificate_status":"issuing"}"#
        );
    }
}
