//! The string enums of the API.
//!
//! Every enum keeps values it does not know in an `Other(String)` variant, so that a
//! value Cloudflare adds tomorrow never breaks a client that decodes it today.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Declares a `#[non_exhaustive]` string enum with an `Other(String)` fallback,
/// its serde impls, `as_str`, `Display` and `FromStr` (which never fails), and with
/// the `schema` feature its JSON schema: a string enum of the known values.
macro_rules! string_enum {
    (
        $(#[doc = $doc:literal])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )+
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this version of the crate does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// Every value this version of the crate knows, in the API's order.
            pub const KNOWN: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The value as it appears on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $wire, )+
                    $name::Other(s) => s.as_str(),
                }
            }

            /// Parses a wire value; `None` when it is not one of the known values.
            pub fn parse_known(s: &str) -> Option<Self> {
                match s {
                    $( $wire => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(Self::parse_known(s).unwrap_or_else(|| $name::Other(s.to_owned())))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                Ok(Self::parse_known(&s).unwrap_or($name::Other(s)))
            }
        }

        /// The known values as a string enum. The `Other` fallback is not in the schema:
        /// a value outside the list is a value this version does not know yet, which
        /// clients keep rather than reject (the description says so).
        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }

            fn schema_id() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(concat!(module_path!(), "::", stringify!($name)))
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                crate::schema::string_enum(&[$($doc),*], &[$($wire),+])
            }
        }
    };
}

string_enum! {
    /// The seven words of the verification view (`certificate_status`).
    ///
    /// Live payloads have also carried `pending_validation` here; it decodes as
    /// `Other("pending_validation")`.
    pub enum CertificateStatus {
        /// The order was accepted; tokens are being obtained from the CA.
        Initializing => "initializing",
        /// DCV records are published; waiting until every host validates.
        Authorizing => "authorizing",
        /// The certificate is deployed and served.
        Active => "active",
        /// The certificate passed its expiry without being renewed.
        Expired => "expired",
        /// Validation passed; the CA is signing.
        Issuing => "issuing",
        /// A stage of the order ran out of time.
        TimingOut => "timing_out",
        /// The certificate is issued and being deployed.
        PendingDeployment => "pending_deployment",
    }
}

string_enum! {
    /// The status of a certificate pack (21 values in Cloudflare's API).
    pub enum PackStatus {
        /// Order accepted.
        Initializing => "initializing",
        /// Waiting for domain control validation.
        PendingValidation => "pending_validation",
        /// Deleted.
        Deleted => "deleted",
        /// Validation passed; waiting for the CA.
        PendingIssuance => "pending_issuance",
        /// Issued; being deployed.
        PendingDeployment => "pending_deployment",
        /// Being deleted.
        PendingDeletion => "pending_deletion",
        /// About to expire.
        PendingExpiration => "pending_expiration",
        /// Expired.
        Expired => "expired",
        /// Deployed and served.
        Active => "active",
        /// Initialisation ran out of time.
        InitializingTimedOut => "initializing_timed_out",
        /// Validation ran out of time (the DCV tokens expired).
        ValidationTimedOut => "validation_timed_out",
        /// Issuance ran out of time.
        IssuanceTimedOut => "issuance_timed_out",
        /// Deployment ran out of time.
        DeploymentTimedOut => "deployment_timed_out",
        /// Deletion ran out of time.
        DeletionTimedOut => "deletion_timed_out",
        /// Being cleaned up.
        PendingCleanup => "pending_cleanup",
        /// Deployed to staging.
        StagingDeployment => "staging_deployment",
        /// Active on staging.
        StagingActive => "staging_active",
        /// Being deactivated.
        Deactivating => "deactivating",
        /// Inactive.
        Inactive => "inactive",
        /// A backup certificate was issued.
        BackupIssued => "backup_issued",
        /// Deployment is on hold.
        HoldingDeployment => "holding_deployment",
    }
}

impl PackStatus {
    /// The word of the verification view that this pack status shows as.
    ///
    /// Returns `None` for statuses that have no verification word (deleted, inactive, ...).
    pub fn certificate_status(&self) -> Option<CertificateStatus> {
        use PackStatus::*;
        Some(match self {
            Initializing => CertificateStatus::Initializing,
            PendingValidation => CertificateStatus::Authorizing,
            PendingIssuance => CertificateStatus::Issuing,
            PendingDeployment | StagingDeployment | HoldingDeployment => {
                CertificateStatus::PendingDeployment
            }
            Active | StagingActive | BackupIssued => CertificateStatus::Active,
            Expired | PendingExpiration => CertificateStatus::Expired,
            InitializingTimedOut | ValidationTimedOut | IssuanceTimedOut | DeploymentTimedOut => {
                CertificateStatus::TimingOut
            }
            _ => return None,
        })
    }
}

string_enum! {
    /// How domain control is validated.
    ///
    /// Orders accept `txt`, `http` and `email`; the verification view and its PATCH
    /// also know `cname` (delegated DCV).
    pub enum ValidationMethod {
        /// An HTTP token under `/.well-known/` of the host.
        Http => "http",
        /// A CNAME delegating `_acme-challenge.<host>` to the service.
        Cname => "cname",
        /// A TXT record at `_acme-challenge.<host>`.
        Txt => "txt",
        /// E-mail to the domain's administrative addresses.
        Email => "email",
    }
}

string_enum! {
    /// The certificate authority of an order.
    pub enum CertificateAuthority {
        /// Google Trust Services.
        Google => "google",
        /// Let's Encrypt.
        LetsEncrypt => "lets_encrypt",
        /// SSL.com.
        SslCom => "ssl_com",
    }
}

string_enum! {
    /// A certificate's signature algorithm.
    pub enum Signature {
        /// ECDSA P-256 with SHA-256.
        EcdsaWithSha256 => "ECDSAWithSHA256",
        /// RSA with SHA-1 (legacy imported certificates only).
        Sha1WithRsa => "SHA1WithRSA",
        /// RSA with SHA-256.
        Sha256WithRsa => "SHA256WithRSA",
    }
}

string_enum! {
    /// The verification view's `verification_type`.
    pub enum VerificationType {
        /// A DNS record (txt or cname methods).
        Cname => "cname",
        /// An HTTP file (http method).
        MetaTag => "meta tag",
    }
}

string_enum! {
    /// The type of a certificate pack.
    pub enum PackType {
        /// Multi-host custom certificate.
        MhCustom => "mh_custom",
        /// Managed hostname.
        ManagedHostname => "managed_hostname",
        /// SNI custom certificate.
        SniCustom => "sni_custom",
        /// Universal SSL.
        Universal => "universal",
        /// Advanced Certificate Manager (the only type that can be ordered).
        Advanced => "advanced",
        /// Total TLS.
        TotalTls => "total_tls",
        /// Keyless SSL.
        Keyless => "keyless",
        /// Legacy custom certificate.
        LegacyCustom => "legacy_custom",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_survive_a_round_trip() {
        let s: CertificateStatus = serde_json::from_str("\"pending_validation\"").unwrap();
        assert_eq!(s, CertificateStatus::Other("pending_validation".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"pending_validation\"");
    }

    #[test]
    fn known_values_decode_to_their_variant() {
        let t: VerificationType = serde_json::from_str("\"meta tag\"").unwrap();
        assert_eq!(t, VerificationType::MetaTag);
        let s: Signature = serde_json::from_str("\"ECDSAWithSHA256\"").unwrap();
        assert_eq!(s, Signature::EcdsaWithSha256);
    }

    #[test]
    fn every_pack_status_maps_consistently() {
        assert_eq!(
            PackStatus::PendingValidation.certificate_status(),
            Some(CertificateStatus::Authorizing)
        );
        assert_eq!(
            PackStatus::ValidationTimedOut.certificate_status(),
            Some(CertificateStatus::TimingOut)
        );
        assert_eq!(PackStatus::Deleted.certificate_status(), None);
        assert_eq!(PackStatus::KNOWN.len(), 21);
    }
}
