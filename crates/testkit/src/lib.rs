//! Real servers on loopback for zonecert's tests and benchmarks: an authoritative DNS server
//! ([`DnsServer`]) and an HTTP origin ([`HttpOrigin`]), both configurable while running and
//! stopped when dropped; [`console`] drives both with line commands. Everything binds
//! 127.0.0.1 (or `::1`) on port 0.

pub mod console;
mod dns;
mod http;

pub use dns::DnsServer;
pub use http::{HttpOrigin, LoggedRequest};
