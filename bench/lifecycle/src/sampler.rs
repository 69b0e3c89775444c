//! A closed-loop latency sampler: a few connections, each sending
//! `GET /zones/{random zone}/ssl/verification` as soon as the previous answer arrived.
//! Light load on purpose: it measures what a client sees while the lifecycle runs, not
//! the server's peak throughput (bench/verification.sh does that).

use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Latencies of one sampling period.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    sorted: Vec<Duration>,
    /// Answers that were not 200.
    pub errors: u64,
    /// How long sampling ran.
    pub elapsed: Duration,
}

impl Latencies {
    /// The `q` quantile (0..=1), zero when nothing was sampled.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.sorted.len() - 1) as f64 * q).round() as usize;
        self.sorted[i.min(self.sorted.len() - 1)]
    }

    /// Requests answered.
    pub fn count(&self) -> usize {
        self.sorted.len()
    }

    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.count() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Samples until `stop` turns true (or `limit` passes).
pub async fn sample(
    api: &str,
    token: &str,
    zones: Arc<Vec<String>>,
    connections: usize,
    limit: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Latencies> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let client = client.clone();
        let zones = zones.clone();
        let api = api.to_owned();
        let auth = format!("Bearer {token}");
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            let mut errors = 0u64;
            while !*stop.borrow() && Instant::now() < deadline {
                let zone = &zones[rand::rng().random_range(0..zones.len())];
                let url = format!("{api}/zones/{zone}/ssl/verification");
                let t = Instant::now();
                let ok = match client.get(&url).header("Authorization", &auth).send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        resp.bytes().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                if ok {
                    out.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (out, errors)
        });
    }
    // Wake the loop when `stop` flips; the tasks check it between requests.
    let waiter = tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    let mut all = Latencies::default();
    while let Some(joined) = tasks.join_next().await {
        let (out, errors) = joined?;
        all.sorted.extend(out);
        all.errors += errors;
    }
    waiter.abort();
    all.elapsed = started.elapsed();
    all.sorted.sort();
    Ok(all)
}

/// Samples for a fixed time.
pub async fn sample_for(
    api: &str,
    token: &str,
    zones: Arc<Vec<String>>,
    connections: usize,
    period: Duration,
) -> anyhow::Result<Latencies> {
    let (_keep, stop) = watch::channel(false);
    sample(api, token, zones, connections, period, stop).await
}
