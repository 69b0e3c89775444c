//! Certificate issuance and deployment.
//!
//! - [`BuiltinCa`]: zonecert's own CA, created on first start in `<data_dir>/ca/`.
//! - [`Issuer`]: the seam the lifecycle talks to: `begin` yields the DCV records of an order,
//!   `finish` returns the signed certificate.
//! - [`deploy`]: writes `fullchain.pem` / `privkey.pem` atomically and runs a hook.
//!
//! Private keys travel only inside [`PrivateKeyPem`], whose `Debug` is redacted, and never
//! appear in an [`IssuanceError`].

pub mod acme;
mod atomic_file;
mod ca;
mod deploy;
mod error;
mod issuer;
mod leaf;
mod leaf_key;

pub use ca::BuiltinCa;
pub use deploy::{
    DeployedPaths, HookCommand, Swept, deploy, deploy_pem, deployed_chain, remove_deployment, sweep,
};
pub use error::IssuanceError;
pub use issuer::{HostChallenge, Issuer, IssuerOrder, acme_dns_value};
pub use leaf::{IssueRequest, IssuedLeaf, KeyType, PrivateKeyPem};

/// Writes a secret file (mode 0600 from the start) atomically and durably.
pub(crate) fn write_private_file(
    path: &std::path::Path,
    contents: &[u8],
) -> Result<(), IssuanceError> {
    atomic_file::write_atomic(path, contents, 0o600)
}
