//! How many ECDSA certificates the built-in CA signs per second on one thread, next to
//! the issue's target of 500/s. A benchmark, not a test:
//!
//! `cargo run --release -p zonecert-server --example issuance_rate -- 5000`

use std::time::Instant;
use zonecert_server::issuance::{BuiltinCa, IssueRequest, KeyType};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(5000);
    let data = tempfile::tempdir()?;
    let ca = BuiltinCa::load_or_create(data.path())?;
    let now = time::OffsetDateTime::now_utc();
    let req = IssueRequest {
        hosts: vec!["bench.example".into(), "*.bench.example".into()],
        not_before: now,
        not_after: now + time::Duration::days(90),
        key_type: KeyType::EcdsaP256,
    };
    let started = Instant::now();
    for _ in 0..count {
        ca.issue(&req)?;
    }
    let elapsed = started.elapsed();
    let rate = f64::from(count) / elapsed.as_secs_f64();
    let verdict = if rate >= 500.0 { "PASS" } else { "FAIL" };
    println!(
        "{count} ECDSA issuances in {elapsed:.2?} on one thread: {rate:.0}/s ({verdict}: target >= 500/s)"
    );
    Ok(())
}
