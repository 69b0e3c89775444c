//! An open-loop latency sampler: `GET /zones/{random zone}/ssl/verification` sent at a
//! fixed rate whatever the answers do, so a stalled server is not hidden by the sampler
//! waiting for it (no coordinated omission). Each latency runs from the moment the request
//! is handed to the HTTP client, not from its timer tick: the tick fires up to a
//! millisecond late (the timer's resolution) and this process shares its CPU with the DNS
//! server, and neither delay is the server's. A light load on purpose: it measures what clients see while the
//! lifecycle runs, not the server's peak throughput (bench/verification.sh does that). A
//! closed loop of a few connections would saturate the server's core by itself and leave
//! the lifecycle only what the sampler does not take.
//!
//! The sampler runs on a thread of its own, with a runtime of its own, and asks the
//! scheduler for a short time slice (as the server's request threads do): the
//! benchmark's other work on this CPU (the DNS server answering the lifecycle's
//! queries, the progress poller's SQLite reads) would otherwise delay sending requests
//! and reading answers, and that delay is the benchmark's, not the server's.

use rand::Rng;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

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

/// The CPUs the sampler's thread runs on, once set ([`sample_on_cpus`]); else those of
/// the thread that starts it, which the ACME benchmark may have confined with the
/// stand-ins.
static CPUS: OnceLock<Vec<usize>> = OnceLock::new();

/// Runs every later sampler thread on `cpus` (the first call wins).
#[allow(dead_code)] // the lifecycle benchmark confines nothing
pub fn sample_on_cpus(cpus: Vec<usize>) {
    let _ = CPUS.set(cpus);
}

/// Samples at `rate` requests per second until `stop` turns true (or `limit` passes),
/// then waits for the answers still due. Runs on a thread of its own (see above).
pub async fn sample(
    api: &str,
    token: &str,
    zones: Arc<Vec<String>>,
    rate: u32,
    limit: Duration,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Latencies> {
    let (api, token) = (api.to_owned(), token.to_owned());
    let (reply, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sampler".into())
        .spawn(move || {
            // Where refused, the sampler runs at the default slice (as before).
            let _ = zonecert_server::sched::prefer_latency();
            if let Some(cpus) = CPUS.get().filter(|c| !c.is_empty()) {
                let _ = zonecert_server::sched::run_on_cpus(cpus);
            }
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(sample_here(&api, &token, zones, rate, limit, stop)));
            let _ = reply.send(outcome);
        })?;
    answer.await?
}

async fn sample_here(
    api: &str,
    token: &str,
    zones: Arc<Vec<String>>,
    rate: u32,
    limit: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Latencies> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let auth = format!("Bearer {token}");
    let started = Instant::now();
    let deadline = started + limit;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    // Late ticks fire at once: the rate holds whatever the answers do.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let (done, mut answers) = mpsc::unbounded_channel();
    // With ZONECERT_BENCH_TRACE=FILE, each request carries an `x-request-id` (the server
    // logs it) and its send and receive wall-clock times go to FILE, so a run can be split
    // into time before the server's handler, in it, and after it (see
    // docs/benchmarks-lifecycle.md).
    let trace = std::env::var_os("ZONECERT_BENCH_TRACE");
    let (trace_tx, mut trace_rx) = mpsc::unbounded_channel::<String>();
    let mut sequence = 0u64;
    let run: u32 = rand::rng().random();
    loop {
        tokio::select! {
            due = ticks.tick() => {
                if due.into_std() >= deadline || *stop.borrow() {
                    break;
                }
                let zone = &zones[rand::rng().random_range(0..zones.len())];
                sequence += 1;
                let id = format!("b{run:08x}-{sequence:07}");
                let mut request = client
                    .get(format!("{api}/zones/{zone}/ssl/verification"))
                    .header("Authorization", &auth);
                if trace.is_some() {
                    request = request.header("x-request-id", &id);
                }
                let done = done.clone();
                let trace_tx = trace.is_some().then(|| trace_tx.clone());
                tokio::spawn(async move {
                    let unix_us = || {
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_micros())
                    };
                    let sent_unix = unix_us();
                    let sent = Instant::now();
                    let ok = match request.send().await {
                        Ok(resp) => {
                            let status = resp.status();
                            resp.bytes().await.is_ok() && status.is_success()
                        }
                        Err(_) => false,
                    };
                    if let Some(tx) = trace_tx {
                        let _ = tx.send(format!("{id} {sent_unix} {}\n", unix_us()));
                    }
                    let _ = done.send(ok.then(|| sent.elapsed()));
                });
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    drop(done);
    drop(trace_tx);
    let mut all = Latencies::default();
    while let Some(answer) = answers.recv().await {
        match answer {
            Some(latency) => all.sorted.push(latency),
            None => all.errors += 1,
        }
    }
    all.elapsed = started.elapsed();
    all.sorted.sort();
    if let Some(path) = trace {
        let mut lines = String::new();
        while let Ok(line) = trace_rx.try_recv() {
            lines.push_str(&line);
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        std::io::Write::write_all(&mut file, lines.as_bytes())?;
    }
    Ok(all)
}

/// Samples for a fixed time.
pub async fn sample_for(
    api: &str,
    token: &str,
    zones: Arc<Vec<String>>,
    rate: u32,
    period: Duration,
) -> anyhow::Result<Latencies> {
    let (_keep, stop) = watch::channel(false);
    sample(api, token, zones, rate, period, stop).await
}
