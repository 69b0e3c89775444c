//! Placeholder.

pub mod issuance;
