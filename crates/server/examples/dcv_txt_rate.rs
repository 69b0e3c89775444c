//! Measures TXT checks per second against the loopback test DNS server.
//!
//! `cargo run --release -p zonecert-server --example dcv_txt_rate -- [names] [concurrency]`

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use zonecert_server::dcv::{DcvConfig, Validator};
use zonecert_testkit::DnsServer;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let names: usize = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(64), |a| a.parse())?;

    let dns = DnsServer::start().await;
    for i in 0..names {
        dns.set_txt(
            &format!("_acme-challenge.h{i}.example.com"),
            &[&format!("token-{i}")],
        );
    }
    dns.set_a("unrelated.example.com", Ipv4Addr::new(192, 0, 2, 1));
    let validator = Validator::new(DcvConfig {
        resolvers: vec![dns.addr()],
        timeout: Duration::from_secs(5),
        ..DcvConfig::default()
    })?;

    let sequential = names.min(2_000);
    let started = Instant::now();
    for i in 0..sequential {
        let outcome = validator
            .check_txt(
                &format!("_acme-challenge.h{i}.example.com"),
                &format!("token-{i}"),
            )
            .await;
        anyhow::ensure!(outcome.passed(), "check {i}: {outcome}");
    }
    let elapsed = started.elapsed();
    println!(
        "sequential: {sequential} checks in {:.2} s = {:.0} checks/s",
        elapsed.as_secs_f64(),
        sequential as f64 / elapsed.as_secs_f64()
    );

    let started = Instant::now();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..names {
        let permit = semaphore.clone().acquire_owned().await?;
        let validator = validator.clone();
        tasks.spawn(async move {
            let outcome = validator
                .check_txt(
                    &format!("_acme-challenge.h{i}.example.com"),
                    &format!("token-{i}"),
                )
                .await;
            drop(permit);
            outcome.passed()
        });
    }
    let mut failed = 0;
    while let Some(passed) = tasks.join_next().await {
        if !passed? {
            failed += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "concurrent ({concurrency} in flight): {names} checks in {:.2} s = {:.0} checks/s, {failed} failed",
        elapsed.as_secs_f64(),
        names as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
