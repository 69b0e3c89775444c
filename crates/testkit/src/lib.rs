//! Real servers on loopback for zonecert's tests and benchmarks: an authoritative DNS server
//! ([`DnsServer`]) and an HTTP origin ([`HttpOrigin`]), both configurable while running and
//! stopped when dropped; [`console`] drives both with line commands. Everything binds
//! 127.0.0.1 (or `::1`) on port 0.
//!
//! With the `server` feature, zonecert itself for a test: `TestServer` (the app in the
//! test's process) and `ServeCommand` (the built binary as a child process). With the
//! `postgres` feature, `PgCluster`: a throwaway PostgreSQL cluster. [`pebble`] runs Pebble
//! (Let's Encrypt's test ACME CA), and with the `server` feature configures zonecert for
//! it; `ari_front` stands in front of it with scripted renewal information.

#[cfg(feature = "server")]
pub mod ari_front;
pub mod console;
mod dns;
mod http;
pub mod pebble;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "server")]
mod process;
#[cfg(feature = "server")]
mod server;

pub use dns::{DnsServer, free_dns_addr};
pub use http::{HttpOrigin, LoggedRequest};
#[cfg(feature = "postgres")]
pub use postgres::PgCluster;
#[cfg(feature = "server")]
pub use process::{ServeCommand, ServeProcess, line_reader};
#[cfg(feature = "server")]
pub use server::{TestServer, TestServerBuilder, envelope_codes};
