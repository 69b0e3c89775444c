//! ACME benchmark of issue 13 (`bench/acme.sh`): zonecert ordering from Pebble against a
//! floor measured in the same run, on the same Pebble and the same loopback DNS.
//!
//! 1. Floor: a plain instant-acme loop (one account; per order: newOrder for `apex` and
//!    `*.apex`, the dns-01 values put in DNS, the challenges answered, ready polled,
//!    finalized with a fresh P-256 key, the chain downloaded), `--singles` orders one at a
//!    time (the single-order time) then `--packs` orders `--concurrency` at a time.
//! 2. zonecert (`zonecert serve`, release, pinned to `--server-cpu`) with `--acme
//!    lets_encrypt=<Pebble>`: the same number of packs ordered through the API with the
//!    workers off, then the GET verification p99 idle; the workers on: as each pack's CA
//!    records appear (read from the database, read-only) they are put in DNS and the
//!    zone's `GET /ssl/verification?retry=true` is sent, as a customer would; the time
//!    until every pack is active gives the throughput, with the GET p99 sampled meanwhile.
//! 3. order -> active, one at a time on the idle server: POST, the records put in DNS as
//!    soon as the verification view shows them, `retry=true`, polled until active.
//!
//! Pebble runs with `PEBBLE_VA_NOSLEEP=1` (the testkit's launcher), so the CA's own
//! validation adds no random sleep to either side, and is restarted between the floor
//! and zonecert, so each side starts with an empty CA. Pebble, the loopback DNS server,
//! the testkit's front and the customers stand in for machines elsewhere: by default
//! they run on the server's CPUs but the first (`--stand-ins-cpus`), in the idle
//! scheduling class (`--stand-ins-idle`), for the floor and zonecert alike, and
//! zonecert's request threads keep the first CPU (`zonecert serve --request-cpus`). The
//! server starts in the normal class whatever this process runs at; the sampler (a
//! short time slice) may use every CPU. A Pebble
//! that deadlocks (Debian's 2.4 does, often in zonecert's first burst of orders) is told
//! within seconds and the phase runs again on a restarted Pebble.
//!
//! The GET sampler sends 100 requests a second (20 s idle: 2,000 samples), so a p99 is
//! the 20th slowest, not the second slowest of 200. The idle and the busy sampling are
//! seconds apart, not at once: work of other programs on the machine in one and not the
//! other moves the ratio (`perf sched` showed another session's compiler in a run).

mod acme_floor;
#[allow(dead_code)]
mod sampler;
#[allow(dead_code)]
mod server;

use acme_floor::{FLOOR_ATTEMPTS, floor};
use anyhow::{Context, bail};
use clap::Parser;
use server::{Launch, Server, sibling_binary};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use zonecert_server::admin;
use zonecert_server::sched::parse_cpu_list;
use zonecert_server::store::Store;
use zonecert_testkit::DnsServer;
use zonecert_testkit::pebble::{Pebble, PebbleOptions};

#[derive(Debug, Parser)]
#[command(
    about = "ACME throughput and latency against Pebble, with a floor measured in the same run"
)]
pub(crate) struct Args {
    /// Orders in the floor's and in zonecert's throughput runs.
    #[arg(long, default_value_t = 1000)]
    packs: usize,
    /// Orders in flight at once in the floor's run.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Single orders (floor) and order -> active samples (zonecert), one at a time.
    #[arg(long, default_value_t = 7)]
    singles: usize,
    /// GET verification requests per second while sampling. Enough that a p99 is a
    /// figure: 20 s idle give 2,000 samples (the 20th slowest), a 15-s run 1,500; at 20
    /// a second the idle p99 was the second slowest of 200.
    #[arg(long, default_value_t = 100)]
    sampler_rate: u32,
    /// Seconds of idle GET sampling.
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
    /// `retry=true` requests in flight at once in zonecert's throughput run: customers
    /// publishing their records. Each is answered once its pack is issued and deployed
    /// (README), so this many bounds how many orders zonecert is finishing at once, as
    /// `--concurrency` does for the floor.
    #[arg(long, default_value_t = 256)]
    customers: usize,
    /// `taskset -c` list for zonecert serve.
    #[arg(long, default_value = "0-1")]
    server_cpu: String,
    /// Run the stand-ins for other machines in the idle scheduling class (`SCHED_IDLE`):
    /// Pebble, the loopback DNS server, the testkit's front and this process's own
    /// work (the customers, the floor's client, the progress poller), all but the GET
    /// sampler. Recorded with `perf sched` at the server's priority (quiet machine, 6 s
    /// of zonecert's run): Pebble took 4.9 s of CPU, 3.0 s of it on the CPU the
    /// request threads wake up on, and was running during 75 % of the time request
    /// threads and the sampler waited over a millisecond for a CPU; the customers'
    /// runtime took another 1.6 s. On machines of their own neither takes the server's
    /// CPU. `false`: they run at the normal class (Pebble at `--pebble-nice`, the DNS
    /// server at nice 10), as before.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    stand_ins_idle: bool,
    /// Where the stand-ins run, in the floor's phase and zonecert's alike: `auto` (the
    /// default: the server's CPUs but the first), a `taskset -c` list, or `all`
    /// (anywhere, the layout of sessions 13-16). Every thread of Pebble and of this
    /// process but the GET sampler's moves there, and zonecert's request threads go to
    /// the server's other CPUs (`zonecert serve --request-cpus`); its lifecycle keeps
    /// its default (`--lifecycle-cpus auto`: every CPU but the first), beside the
    /// stand-ins. So on two CPUs the API has the first to itself, as on a machine where
    /// the CA, the name servers and the customers are elsewhere, and zonecert's
    /// lifecycle and the floor's client share the second with Pebble.
    ///
    /// Why: the idle class does not keep an idle-class thread off a CPU a normal thread
    /// wakes up on. With `all`, a `perf record` of sched_switch and sched_wakeup during
    /// a run showed request threads woken on CPU 0 while CPU 0 switched from one
    /// idle-class Pebble thread to another for 1-2 ms (35 waits over 0.5 ms in 5 s, 42
    /// ms in all; softirqs were not it, the longest NET_RX 248 us), and the GET p99
    /// ratio passed in 6 of 10 runs of sessions 16 and 17 (1.79-3.17). With the
    /// stand-ins kept off the first CPU but zonecert's request threads free to follow
    /// them onto the second (session 16's `auto`): 1.88-2.51. With the API on the first
    /// CPU alone: 0.89-1.82 in 14 of 14 runs (docs/benchmarks.md, session 17).
    #[arg(long, default_value = "auto")]
    stand_ins_cpus: String,
    /// Extra flags for zonecert serve (space-separated).
    #[arg(long, default_value = "")]
    server_flags: String,
    /// Pebble's nice value (it runs under `nice -n`), for the floor and zonecert alike.
    /// Pebble stands in for a CA on other machines; at the server's priority its Go
    /// threads (busy for ~40 % of the machine during zonecert's run) ran 4-5 ms at a
    /// time on the CPU a woken request thread waited for (`perf sched timehist` of a
    /// run: waits of 2-11 ms behind Pebble and another session's compiler). Not lowered
    /// by default yet: one run completed lowered (GET p99 1.05x idle). Debian's Pebble
    /// 2.4 deadlocked in most of zonecert's first bursts at either value (24 of 25
    /// attempts at nice 10, 25 of 29 at nice 0).
    #[arg(long, default_value_t = 0)]
    pebble_nice: i8,
    /// Probe Pebble's management API for a deadlock (see `until_wedged`); off, a wedged
    /// Pebble is told only by nothing moving for 45 s.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wedge_probe: bool,
    /// Orders and authorization fetches reach Pebble through the testkit's front, which
    /// never lets a newOrder run beside an authorization request: Pebble 2.4's deadlock
    /// (`AriFront::keep_orders_apart`). Floor and zonecert alike.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    keep_orders_apart: bool,
    /// Kept after the run when given (else a temporary folder).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let idle = args.stand_ins_idle;
    let stand_in_thread = move || {
        if idle {
            // Where refused, the stand-ins run at the normal class (as without the flag).
            let _ = zonecert_server::sched::idle_priority();
        }
    };
    // This thread runs the main future (the customers, the floor's client): a stand-in.
    stand_in_thread();
    // The sampler keeps the CPUs the program started with, whatever the stand-ins get.
    sampler::sample_on_cpus(zonecert_server::sched::process_cpus().unwrap_or_default());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(stand_in_thread)
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&work)?;
    let dns = start_dns_below_the_sampler(args.stand_ins_idle)?;
    let mut pebble = Pebble::try_start(
        &work,
        PebbleOptions {
            dns: Some(dns.addr()),
            nice: args.pebble_nice,
            idle_class: args.stand_ins_idle,
            ..Default::default()
        },
    )
    .await
    .map_err(anyhow::Error::msg)?;
    eprintln!("== pebble at {}", pebble.directory);
    // The front stays up across Pebble's restarts (same ports).
    let front = zonecert_testkit::ari_front::AriFront::start(&pebble).await;
    front.keep_orders_apart(true);
    let directory = if args.keep_orders_apart {
        eprintln!(
            "== orders kept apart from authorization requests by a front at {}",
            front.directory
        );
        front.directory.clone()
    } else {
        pebble.directory.clone()
    };

    // ---- 1: the floor ----
    // Debian's Pebble 2.4 deadlocks now and then under concurrent orders (see below);
    // the floor's orders then time out, and it runs again on a restarted Pebble.
    let placement = placement(&args.stand_ins_cpus, &args.server_cpu)?;
    let mut attempt = 1;
    let (floor_single, floor_elapsed) = loop {
        confine_stand_ins(&pebble, placement.as_ref())?;
        match until_wedged(
            &pebble,
            args.wedge_probe,
            floor(&args, &pebble, &directory, &dns),
        )
        .await
        {
            Ok(figures) => break figures,
            Err(e) if attempt < FLOOR_ATTEMPTS => {
                eprintln!(
                    "== floor attempt {attempt} failed: {e:#}; Pebble's log: {}; Pebble restarted",
                    pebble.log.display()
                );
                attempt += 1;
                pebble.resume().await;
            }
            Err(e) => bail!("{e:#}; Pebble's log: {}", pebble.log.display()),
        }
    };
    let floor_rate = args.packs as f64 / floor_elapsed.as_secs_f64();
    eprintln!(
        "== floor: {} orders in {:.1} s ({floor_rate:.1}/s)",
        args.packs,
        floor_elapsed.as_secs_f64()
    );

    // ---- 2 and 3: zonecert ----
    // Against Pebble restarted (same ports and configuration, nothing kept): it holds
    // everything in memory, and each newOrder scans every authorization it ever made
    // under its store's lock (FindValidAuthorization), so zonecert would otherwise meet a
    // CA carrying the floor's thousands of authorizations. Debian's Pebble 2.4 also
    // deadlocks on that lock now and then (a newOrder scanning holds it shared and waits
    // for an authorization that a concurrent authorization fetch holds while it waits
    // for the store behind a queued writer); the longer the scan, the likelier. Seen
    // in zonecert's first burst of orders too (0 of 1,000 active, 289 orders placed,
    // Pebble's log ending in `POST /authZ/` handlers): then zonecert's phase runs again,
    // from a new database, on a restarted Pebble, as the floor does.
    let mut attempt = 1;
    let ZonecertFigures {
        idle,
        busy,
        elapsed: zc_elapsed,
        mut latencies,
    } = loop {
        pebble.resume().await;
        let dir = work.join(format!("zonecert-{attempt}"));
        let phase = zonecert_phase(&args, placement.as_ref(), &pebble, &directory, &dns, &dir);
        match until_wedged(&pebble, args.wedge_probe, phase).await {
            Ok(figures) => break figures,
            Err(e) if attempt < ZONECERT_ATTEMPTS => {
                eprintln!(
                    "== zonecert attempt {attempt} failed: {e:#}; Pebble's log: {}; Pebble restarted",
                    pebble.log.display()
                );
                attempt += 1;
            }
            Err(e) => bail!("{e:#}; Pebble's log: {}", pebble.log.display()),
        }
    };
    let zc_rate = args.packs as f64 / zc_elapsed.as_secs_f64();
    let zc_single = median(&mut latencies);
    pebble.stop().await;

    let throughput_ratio = zc_rate / floor_rate;
    let latency_ratio = zc_single.as_secs_f64() / floor_single.as_secs_f64();
    let p99_ratio = busy.quantile(0.99).as_secs_f64() / idle.quantile(0.99).as_secs_f64();
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!(
        "ACME benchmark, {} packs (apex + wildcard, dns-01), Pebble with PEBBLE_VA_NOSLEEP=1 at nice {}, stand-ins (Pebble, DNS, front, customers, the floor's client) {} {}, GET sampler {}/s",
        args.packs,
        args.pebble_nice,
        if args.stand_ins_idle {
            "in the idle class"
        } else {
            "in the normal class (DNS at nice 10)"
        },
        match &placement {
            Some(p) => format!(
                "on CPUs {}, zonecert's request threads on {} (--request-cpus)",
                p.stand_ins, p.requests
            ),
            None => format!("on any of CPUs {}, as zonecert", args.server_cpu),
        },
        args.sampler_rate
    );
    println!(
        "floor (instant-acme loop, {} in flight): {:.1} orders/s ({:.1} s); single order median {}",
        args.concurrency,
        floor_rate,
        floor_elapsed.as_secs_f64(),
        ms(floor_single)
    );
    println!(
        "zonecert throughput ({} customers retrying at once): {zc_rate:.1} packs/s ({:.1} s to all active) = {throughput_ratio:.2}x floor (>= 0.8: {})",
        args.customers,
        zc_elapsed.as_secs_f64(),
        verdict(throughput_ratio >= 0.8)
    );
    println!(
        "order -> active median (retry=true, records in place, {} samples): {} = {latency_ratio:.2}x floor single (<= 2: {})",
        latencies.len(),
        ms(zc_single),
        verdict(latency_ratio <= 2.0)
    );
    println!(
        "GET verification p99: idle {} ({} req, {} errors), during ACME run {} ({} req, {} errors) = {p99_ratio:.2}x (<= 2: {})",
        ms(idle.quantile(0.99)),
        idle.count(),
        idle.errors,
        ms(busy.quantile(0.99)),
        busy.count(),
        busy.errors,
        verdict(p99_ratio <= 2.0)
    );
    println!(
        "GET verification p50: idle {}, during {}",
        ms(idle.quantile(0.5)),
        ms(busy.quantile(0.5))
    );
    Ok(())
}

/// What zonecert's phase measured.
struct ZonecertFigures {
    /// GET verification latencies with the workers off.
    idle: sampler::Latencies,
    /// GET verification latencies while the packs were ordered.
    busy: sampler::Latencies,
    /// Workers' start to every pack active.
    elapsed: Duration,
    /// Order -> active, one pack at a time on the idle server.
    latencies: Vec<Duration>,
}

/// How many times zonecert's phase runs before a wedged Pebble ends the benchmark. On
/// this machine (2 CPUs, other sessions' builds beside it) Pebble wedged in 5 of 6 of
/// zonecert's first bursts in one run and in 8 of 8 in another, every time before the
/// first certificate (each failed attempt is told within seconds, see [`until_wedged`]).
const ZONECERT_ATTEMPTS: u32 = 16;

/// How often [`until_wedged`] asks Pebble, and how long it waits for the answer.
const WEDGE_PROBE_EVERY: Duration = Duration::from_secs(2);
const WEDGE_PROBE_LIMIT: Duration = Duration::from_secs(5);

/// Runs `work` while Pebble answers: its management API's certificate lookup reads the
/// same store, under the same lock, as the ACME requests, so once Pebble 2.4 has
/// deadlocked (a writer queued behind a reader that waits for an authorization's lock,
/// see `main`) the lookup never answers. `work` then ends with an error after
/// [`WEDGE_PROBE_LIMIT`], instead of after its own orders' timeouts (minutes).
async fn until_wedged<T>(
    pebble: &Pebble,
    probe: bool,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    if !probe {
        return work.await;
    }
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(
            pebble.tls_root_pem.as_bytes(),
        )?)
        .timeout(WEDGE_PROBE_LIMIT)
        .build()?;
    let probe = format!("{}/cert-status-by-serial/1", pebble.management);
    let watch = async {
        loop {
            tokio::time::sleep(WEDGE_PROBE_EVERY).await;
            // Any answer (404 for an unknown serial) says the store's lock is free.
            if let Err(e) = client.get(&probe).send().await
                && e.is_timeout()
            {
                return anyhow::anyhow!(
                    "Pebble's store stopped answering (no answer to {probe} within {WEDGE_PROBE_LIMIT:?}): Pebble 2.4 deadlocked"
                );
            }
        }
    };
    tokio::select! {
        done = work => done,
        wedged = watch => Err(wedged),
    }
}

/// Zonecert's phase in `work` (a new directory): the packs ordered with the workers
/// off and the idle GET sampling, the throughput run with GET sampling, then order ->
/// active one pack at a time.
async fn zonecert_phase(
    args: &Args,
    placement: Option<&Placement>,
    pebble: &Pebble,
    directory: &str,
    dns: &Arc<DnsServer>,
    work: &Path,
) -> anyhow::Result<ZonecertFigures> {
    confine_stand_ins(pebble, placement)?;
    let bin = sibling_binary()?;
    let data = work.join("data");
    std::fs::create_dir_all(&data)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let store = Store::open_sqlite(&data)?;
    let mut zones = Vec::with_capacity(args.packs);
    for i in 0..args.packs {
        let name = format!("z{i:05}.bench.test");
        let id = admin::create_zone(&store, &name, None, true, now).await?.id;
        zones.push((id.to_string(), name));
    }
    let mut single_zones = Vec::new();
    for i in 0..args.singles {
        let name = format!("r{i:03}.bench.test");
        let id = admin::create_zone(&store, &name, None, true, now).await?.id;
        single_zones.push((id.to_string(), name));
    }
    let token = admin::create_token(
        &store,
        "bench",
        &[
            "SSL and Certificates Read".into(),
            "SSL and Certificates Write".into(),
        ],
        &[],
        now,
    )
    .await?
    .secret;
    drop(store);
    let mut flags: Vec<String> = vec![
        "--dcv-resolvers".into(),
        dns.addr().to_string(),
        "--acme".into(),
        format!("lets_encrypt={directory}"),
        "--acme-root".into(),
        format!("lets_encrypt={}", pebble.tls_root.display()),
    ];
    if let Some(placement) = placement {
        flags.extend(["--request-cpus".into(), placement.requests.clone()]);
    }
    flags.extend(args.server_flags.split_whitespace().map(str::to_owned));
    let launch = |lifecycle: bool| {
        let mut f = flags.clone();
        f.extend(["--lifecycle".into(), lifecycle.to_string()]);
        Launch {
            bin: bin.clone(),
            cpu: args.server_cpu.clone(),
            data_dir: data.clone(),
            flags: f,
            log: work.join(format!("server-lifecycle-{lifecycle}.log")),
        }
    };
    let zone_ids = Arc::new(zones.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());

    let srv = Server::start(&launch(false)).await?;
    let client = reqwest::Client::new();
    let t = Instant::now();
    order_all(&client, &srv.api, &token, &zones).await?;
    eprintln!(
        "== ordered {} packs in {:.1} s; idle GET sampling {} s",
        args.packs,
        t.elapsed().as_secs_f64(),
        args.idle_secs
    );
    let idle = sampler::sample_for(
        &srv.api,
        &token,
        zone_ids.clone(),
        args.sampler_rate,
        Duration::from_secs(args.idle_secs),
    )
    .await?;
    srv.stop().await?;

    let srv = Server::start(&launch(true)).await?;
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampling = {
        let (api, token, zones) = (srv.api.clone(), token.clone(), zone_ids.clone());
        let rate = args.sampler_rate;
        tokio::spawn(async move {
            sampler::sample(
                &api,
                &token,
                zones,
                rate,
                Duration::from_secs(3600),
                stop_rx,
            )
            .await
        })
    };
    let run = publish_until_active(
        &data.join("zonecert.db"),
        dns,
        &client,
        &srv.api,
        &token,
        Expect {
            packs: args.packs,
            customers: args.customers,
            limit: Duration::from_secs(1800),
            pebble_log: pebble.log.clone(),
        },
    )
    .await;
    let _ = stop_tx.send(true);
    let busy = sampling.await??;
    let zc_elapsed = run?;
    let zc_rate = args.packs as f64 / zc_elapsed.as_secs_f64();
    eprintln!(
        "== zonecert: {} packs active in {:.1} s ({zc_rate:.1}/s)",
        args.packs,
        zc_elapsed.as_secs_f64()
    );
    let _ = started;

    // ---- 3: order -> active, one at a time ----
    let mut latencies = Vec::new();
    for (zone, apex) in &single_zones {
        latencies.push(order_to_active(&client, &srv.api, &token, zone, apex, dns).await?);
    }
    srv.stop().await?;
    Ok(ZonecertFigures {
        idle,
        busy,
        elapsed: zc_elapsed,
        latencies,
    })
}

/// Starts the loopback DNS server on a thread and runtime of its own, in the idle class
/// with `--stand-ins-idle` (as Pebble), else at nice 10: it stands in for name servers on
/// other machines, and at the server's priority its bursts of answers take the CPU that
/// the sampler's requests and the server's request threads wake up on.
fn start_dns_below_the_sampler(idle: bool) -> anyhow::Result<Arc<DnsServer>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bench-dns".into())
        .spawn(move || {
            if idle {
                let _ = zonecert_server::sched::idle_priority();
            } else {
                zonecert_server::sched::lower_priority();
            }
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let _ = tx.send(Ok(Arc::new(DnsServer::start().await)));
                // Serves until the program ends.
                std::future::pending::<()>().await;
            });
        })?;
    rx.recv()?
}

/// Where the stand-ins and zonecert's request threads run (`--stand-ins-cpus`).
#[derive(Debug, Clone)]
struct Placement {
    /// The stand-ins' CPUs, a `taskset -c` list.
    stand_ins: String,
    /// zonecert's request threads' CPUs (`--request-cpus`): the server's others.
    requests: String,
}

/// The placement `--stand-ins-cpus` asks for (`choice`) on the server's CPUs
/// (`server_cpus`, its `taskset -c` list); `None` for `all`, or when the server has a
/// single CPU (nothing to keep apart).
fn placement(choice: &str, server_cpus: &str) -> anyhow::Result<Option<Placement>> {
    let list = |cpus: &[usize]| {
        cpus.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let server =
        parse_cpu_list(server_cpus, "").map_err(|e| anyhow::anyhow!("--server-cpu: {e}"))?;
    let stand_ins = match choice {
        "all" => return Ok(None),
        "auto" if server.len() < 2 => return Ok(None),
        "auto" => server[1..].to_vec(),
        other => parse_cpu_list(other, "`auto`, `all`")
            .map_err(|e| anyhow::anyhow!("--stand-ins-cpus: {e}"))?,
    };
    let requests: Vec<usize> = server
        .iter()
        .copied()
        .filter(|c| !stand_ins.contains(c))
        .collect();
    if requests.is_empty() {
        bail!(
            "--stand-ins-cpus {choice:?} leaves zonecert's request threads none of --server-cpu {server_cpus:?}"
        );
    }
    Ok(Some(Placement {
        stand_ins: list(&stand_ins),
        requests: list(&requests),
    }))
}

/// Moves the stand-ins onto their CPUs: every thread of Pebble and of this process but
/// the GET sampler's. Threads they start later inherit it. Again after each restart of
/// Pebble (a new process).
fn confine_stand_ins(pebble: &Pebble, placement: Option<&Placement>) -> anyhow::Result<()> {
    let Some(placement) = placement else {
        return Ok(());
    };
    let cpus = &placement.stand_ins;
    let mut processes = vec![std::process::id()];
    processes.extend(pebble.pid());
    let mut moved = 0;
    for pid in processes {
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let tid = task?.file_name();
            let tid = tid.to_string_lossy();
            let comm =
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
            if comm.trim_end() == "sampler" {
                continue;
            }
            let status = std::process::Command::new("taskset")
                .args(["-p", "-c", cpus, &tid])
                .stdout(std::process::Stdio::null())
                .status()?;
            // A thread that ended meanwhile is no longer there to move.
            if !status.success() && std::fs::metadata(format!("/proc/{pid}/task/{tid}")).is_ok() {
                bail!("taskset -p -c {cpus} {tid} failed");
            }
            moved += 1;
        }
    }
    eprintln!(
        "== stand-ins ({moved} threads of Pebble and this process, not the sampler) on CPUs {cpus}"
    );
    Ok(())
}

/// How long a customer waits before sending `retry=true` again for a pack still pending.
const RETRY_AGAIN: Duration = Duration::from_secs(2);

/// Orders one apex + wildcard pack per zone (16 at a time).
async fn order_all(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    zones: &[(String, String)],
) -> anyhow::Result<()> {
    let zones = Arc::new(zones.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, zones, next) = (client.clone(), zones.clone(), next.clone());
        let (api, token) = (api.to_owned(), token.to_owned());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((zone, apex)) = zones.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                order(&client, &api, &token, zone, apex).await?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}

async fn order(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    zone: &str,
    apex: &str,
) -> anyhow::Result<String> {
    let body = serde_json::json!({
        "type": "advanced",
        "hosts": [apex, format!("*.{apex}")],
        "validation_method": "txt",
        "validity_days": 90,
        "certificate_authority": "lets_encrypt",
    });
    let resp: serde_json::Value = client
        .post(format!("{api}/zones/{zone}/ssl/certificate_packs/order"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    if resp["success"] != true {
        bail!("order for {apex} failed: {resp}");
    }
    Ok(resp["result"]["id"]
        .as_str()
        .context("order without id")?
        .to_owned())
}

/// What [`publish_until_active`] waits for: `packs` active within `limit`, with at most
/// `customers` `retry=true` requests in flight.
struct Expect {
    packs: usize,
    customers: usize,
    limit: Duration,
    /// Pebble's log, named when nothing progresses for [`STALLED_FOR`].
    pebble_log: PathBuf,
}

/// How long zonecert's run may go without a pack becoming active or an order being
/// placed before the run gives up: Debian's Pebble 2.4 deadlocked (a healthy run of
/// 1,000 packs moves every second; the phase is then run again on a restarted Pebble).
const STALLED_FOR: Duration = Duration::from_secs(45);

/// Watches the database (read-only, every 20 ms): each pack's CA records, once its order
/// is placed, go into DNS and its zone gets a `retry=true`, again every [`RETRY_AGAIN`]
/// while it stays pending; returns when `packs` packs are active (time from the call).
async fn publish_until_active(
    db: &Path,
    dns: &Arc<DnsServer>,
    client: &reqwest::Client,
    api: &str,
    token: &str,
    expect: Expect,
) -> anyhow::Result<Duration> {
    let Expect {
        packs,
        customers,
        limit,
        pebble_log,
    } = expect;
    // (packs active, orders placed) and when that last changed.
    let mut progress = ((0_i64, 0_usize), Instant::now());
    let started = Instant::now();
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // pack id -> the record values published for it.
    let mut published: HashMap<String, Vec<String>> = HashMap::new();
    // pack id -> when its zone was last sent `retry=true`.
    let mut retried: HashMap<String, Instant> = HashMap::new();
    let retries = Arc::new(tokio::sync::Semaphore::new(customers.max(1)));
    let mut last_report = Instant::now();
    loop {
        let mut stmt = conn.prepare_cached(
            "SELECT p.id, p.zone_id, h.record_name, h.record_value FROM packs p \
             JOIN pack_hosts h ON h.pack_id = p.id \
             WHERE p.order_ref IS NOT NULL AND p.state = 'pending_validation' \
             AND h.record_kind = 'txt' ORDER BY p.id, h.position",
        )?;
        let rows: Vec<(String, String, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let mut by_pack: HashMap<String, (String, String, Vec<String>)> = HashMap::new();
        for (pack, zone, name, value) in rows {
            by_pack
                .entry(pack)
                .or_insert_with(|| (zone, name, Vec::new()))
                .2
                .push(value);
        }
        let mut zones_to_retry = HashSet::new();
        for (pack, (zone, name, values)) in by_pack {
            if published.get(&pack) == Some(&values) {
                // Still pending: as a customer would, retry again. A retry that arrives
                // while the order's own check runs (begun before the record was
                // published) waits for that check and answers pending (README).
                if retried
                    .get(&pack)
                    .is_some_and(|at: &Instant| at.elapsed() >= RETRY_AGAIN)
                {
                    retried.insert(pack, Instant::now());
                    zones_to_retry.insert(zone);
                }
                continue;
            }
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            dns.set_txt(&name, &refs);
            published.insert(pack.clone(), values);
            retried.insert(pack, Instant::now());
            zones_to_retry.insert(zone);
        }
        for zone in zones_to_retry {
            let (client, api, token) = (client.clone(), api.to_owned(), token.to_owned());
            let permit = retries.clone().acquire_owned().await?;
            tokio::spawn(async move {
                let _ = client
                    .get(format!("{api}/zones/{zone}/ssl/verification?retry=true"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                drop(permit);
            });
        }
        let active: i64 = conn.query_row(
            "SELECT COUNT(*) FROM packs WHERE state = 'active'",
            [],
            |r| r.get(0),
        )?;
        if active as usize >= packs {
            return Ok(started.elapsed());
        }
        let now_at = (active, published.len());
        if now_at != progress.0 {
            progress = (now_at, Instant::now());
        } else if progress.1.elapsed() > STALLED_FOR {
            bail!(
                "{active} of {packs} packs active, {} orders placed, and nothing moved for \
                 {STALLED_FOR:?}: Pebble stopped answering? Its log: {}",
                published.len(),
                pebble_log.display()
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "   {:.0} s: {active}/{packs} active",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if started.elapsed() > limit {
            bail!("only {active} of {packs} packs active after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// POST an order, put the CA's records in DNS as soon as the verification view shows
/// them, GET with `retry=true`, then poll the pack until it is active.
async fn order_to_active(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    zone: &str,
    apex: &str,
    dns: &DnsServer,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let id = order(client, api, token, zone, apex).await?;
    let get = |path: String| {
        let client = client.clone();
        let token = token.to_owned();
        async move {
            let v: serde_json::Value = client
                .get(path)
                .bearer_auth(&token)
                .send()
                .await?
                .json()
                .await?;
            Ok::<_, anyhow::Error>(v)
        }
    };
    let verification = format!("{api}/zones/{zone}/ssl/verification");
    loop {
        let v = get(verification.clone()).await?;
        let values: Vec<String> = v["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["cert_pack_uuid"] == id.as_str())
            .filter_map(|i| {
                i["verification_info"]["txt_value"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        if values.len() == 2 {
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            dns.set_txt(&format!("_acme-challenge.{apex}"), &refs);
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("no CA records for {apex} within 60 s: {v}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    get(format!("{verification}?retry=true")).await?;
    let pack = format!("{api}/zones/{zone}/ssl/certificate_packs/{id}");
    loop {
        let v = get(pack.clone()).await?;
        if v["result"]["status"] == "active" {
            return Ok(t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("{apex} not active within 120 s: {v}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
