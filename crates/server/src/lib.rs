//! Placeholder.

pub mod dcv;
