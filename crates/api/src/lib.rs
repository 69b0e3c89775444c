//! Wire types of Cloudflare's SSL verification and certificate-pack API.
//!
//! These are the JSON shapes of `https://api.cloudflare.com/client/v4` for the
//! endpoints zonecert implements, shared by the zonecert server and the Rust client.
//! They depend on serde only: no HTTP, no async, no storage.
//!
//! Decoding is tolerant of what the live API sends: enums keep unknown values
//! (`Other(String)`), structs keep unknown keys (`extra`), and `verification_info`
//! is accepted as an object, an array or absent.
//!
//! ```
//! use zonecert_api::{CertificateStatus, Envelope, Verification};
//!
//! let body = r#"{"success":true,"errors":[],"messages":[],"result":[
//!   {"certificate_status":"authorizing","hostname":"example.com","validation_method":"txt",
//!    "verification_info":{"record_name":"txt_name","record_target":"txt_value",
//!      "txt_name":"_acme-challenge.example.com","txt_value":"token"}}]}"#;
//! let env: Envelope<Vec<Verification>> = serde_json::from_str(body)?;
//! let items = env.result.unwrap_or_default();
//! assert_eq!(items[0].certificate_status, CertificateStatus::Authorizing);
//! # Ok::<(), serde_json::Error>(())
//! ```

mod controls;
mod enums;
mod envelope;
mod packs;
#[cfg(feature = "schema")]
mod schema;
mod verification;
mod zones;

pub use controls::{
    AutoValidation, ClockAdvance, ClockSet, ClockState, Fault, FaultsCleared, NewFault,
    ResetResult, ZoneAutoValidation,
};
pub use enums::{
    CertificateAuthority, CertificateStatus, PackStatus, PackType, Signature, ValidationMethod,
    VerificationType,
};
pub use envelope::{Envelope, MessageSource, ResponseMessage, ResultInfo};
pub use packs::{
    Certificate, CertificatePack, CertificatePackQuota, DeletedCertificatePack,
    EditCertificatePack, ListCertificatePacks, OrderCertificatePack, Quota, ValidationError,
};
pub use verification::{
    EditVerification, EditVerificationResult, ValidationRecord, Verification, VerificationInfo,
};
pub use zones::{CreateZone, TokenStatus, Zone};
