//! The PostgreSQL benchmark of issue 14 (`zonecert-pg-bench`, run by bench/postgres.sh).
//! Prints figures, it is not a test.
//!
//! 1. GET verification, SQLite against PostgreSQL in the same run: `--zones` zones of 2
//!    packs x 2 hosts stored in a SQLite data directory, copied into PostgreSQL with
//!    `zonecert db copy`; then the same wrk load (random zones' verification views, one
//!    token) against `zonecert serve` on each, alternated for `--rounds` rounds. The
//!    server (and, for PostgreSQL, every PostgreSQL process) is pinned to `--server-cpu`,
//!    wrk to `--load-cpu`: both backends get the same one CPU.
//! 2. Lifecycle throughput with 1, 2, 3 nodes on one PostgreSQL: `--packs` one-host TXT
//!    packs (records in a loopback DNS server in this process) stored in a fresh
//!    database; then N `zonecert serve` processes; time until every pack is validated and
//!    until every pack is active, the nodes' CPU time and PostgreSQL's.
//!
//! PostgreSQL is testkit's throwaway cluster (fsync and synchronous_commit off, as in the
//! tests): the figures are CPU costs, not disk ones.

#[allow(dead_code)]
mod server;

use anyhow::{Context, bail};
use clap::Parser;
use server::{Launch, Server};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zonecert_server::admin;
use zonecert_server::clock::{Clock, SystemClock};
use zonecert_server::config::Config;
use zonecert_server::model::{CaChoice, DcvMethod, DcvRecord, Hostname, Pack};
use zonecert_server::store::Store;
use zonecert_testkit::{DnsServer, PgCluster};

/// Issue 14's target: GET verification on PostgreSQL >= this x SQLite.
const MIN_GET_RATIO: f64 = 0.8;
/// Packs per zone (the default quota).
const PER_ZONE: usize = 100;

#[derive(Debug, Parser)]
#[command(about = "zonecert on PostgreSQL against SQLite, and lifecycle with 1-3 nodes (issue 14)")]
struct Args {
    /// Zones (2 packs x 2 hosts each) of the GET verification phase (0 skips it).
    #[arg(long, default_value_t = 2000)]
    zones: usize,
    /// Seconds of each measured wrk run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of wrk warm-up before each run.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Rounds of (SQLite, PostgreSQL) GET runs.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// One-host TXT packs of each lifecycle run (0 skips the phase).
    #[arg(long, default_value_t = 3000)]
    packs: usize,
    /// Node counts of the lifecycle runs, comma-separated.
    #[arg(long, default_value = "1,2,3")]
    nodes: String,
    /// CPU of the server (and PostgreSQL) in the GET phase.
    #[arg(long, default_value = "0")]
    server_cpu: String,
    /// CPU of wrk in the GET phase.
    #[arg(long, default_value = "1")]
    load_cpu: String,
    /// CPUs of the nodes in the lifecycle phase.
    #[arg(long, default_value = "0-1")]
    nodes_cpu: String,
    /// bench/wrk_report.lua.
    #[arg(long)]
    wrk_script: PathBuf,
    /// The `zonecert` binary [default: next to this one].
    #[arg(long)]
    zonecert: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.zonecert {
        Some(b) => b.clone(),
        None => server::sibling_binary()?,
    };
    if !bin.exists() {
        bail!(
            "{} not found: cargo build --release -p zonecert",
            bin.display()
        );
    }
    let work = tempfile::Builder::new()
        .prefix("zonecert-pgbench-")
        .tempdir()?;
    // ZONECERT_BENCH_KEEP keeps the data directories and the nodes' logs.
    let kept = std::env::var_os("ZONECERT_BENCH_KEEP").map(|_| work.path().to_owned());
    if let Some(dir) = &kept {
        eprintln!("== keeping {}", dir.display());
    }
    let cluster = PgCluster::start().map_err(anyhow::Error::msg)?;
    let pg = PgProcesses::find(cluster.port())?;
    eprintln!(
        "== PostgreSQL on port {} (postmaster pid {})",
        cluster.port(),
        pg.postmaster
    );
    let mut report = Vec::new();
    if args.zones > 0 {
        report.extend(get_phase(&args, &bin, work.path(), &cluster, &pg).await?);
    }
    if args.packs > 0 {
        report.extend(lifecycle_phase(&args, &bin, work.path(), &cluster, &pg).await?);
    }
    println!();
    for line in report {
        println!("{line}");
    }
    if kept.is_some() {
        let _ = work.keep();
    }
    Ok(())
}

/// The PostgreSQL cluster's processes, for their CPU time and pinning.
struct PgProcesses {
    postmaster: u32,
}

impl PgProcesses {
    /// The postmaster listening on `port`: a `postgres` process whose arguments hold
    /// `-p PORT`.
    fn find(port: u16) -> anyhow::Result<PgProcesses> {
        let port = port.to_string();
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_postgres = argv
                .first()
                .is_some_and(|a| a.ends_with(b"/postgres") || *a == b"postgres");
            let on_port = argv
                .windows(2)
                .any(|w| w[0] == b"-p" && w[1] == port.as_bytes());
            if is_postgres && on_port {
                return Ok(PgProcesses { postmaster: pid });
            }
        }
        bail!("no postgres process with -p {port}")
    }

    /// The postmaster and its children now.
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.postmaster];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                if stat_fields(pid).is_some_and(|f| {
                    f.get(1).map(String::as_str) == Some(&*self.postmaster.to_string())
                }) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// CPU seconds of the cluster so far: the postmaster's own and its reaped children's,
    /// and those of its live children.
    fn cpu_secs(&self) -> f64 {
        let hz = clock_ticks();
        let mut ticks = 0u64;
        for pid in self.pids() {
            let Some(f) = stat_fields(pid) else { continue };
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            // After ')': state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
            ticks += field(11) + field(12);
            if pid == self.postmaster {
                ticks += field(13) + field(14);
            }
        }
        ticks as f64 / hz
    }

    /// Pins every process of the cluster (and so the backends it forks later) to `cpus`.
    fn pin(&self, cpus: &str) -> anyhow::Result<()> {
        for pid in self.pids() {
            let status = std::process::Command::new("taskset")
                .args(["-a", "-p", "-c", cpus, &pid.to_string()])
                .stdout(std::process::Stdio::null())
                .status()?;
            if !status.success() && pid == self.postmaster {
                bail!("taskset -p {cpus} {pid} failed");
            }
        }
        Ok(())
    }
}

/// The fields of `/proc/PID/stat` after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// One wrk run's figures.
#[derive(Debug, Clone, Copy)]
struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

async fn wrk(
    args: &Args,
    base: &str,
    token: &str,
    ids: &Path,
    secs: u64,
) -> anyhow::Result<WrkResult> {
    let out = tokio::process::Command::new("taskset")
        .args(["-c", &args.load_cpu, "wrk", "-t1"])
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{secs}s"))
        .args(["-H", &format!("Authorization: Bearer {token}"), "-s"])
        .arg(&args.wrk_script)
        .arg(format!("{base}/"))
        .args(["--", "verification"])
        .arg(ids)
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .with_context(|| format!("no RESULT from wrk: {text}"))?;
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(WrkResult {
        rps: field("requests") as f64 / (field("duration_us").max(1) as f64 / 1e6),
        p50_ms: field("p50_us") as f64 / 1000.0,
        p99_ms: field("p99_us") as f64 / 1000.0,
        errors: field("status_errors") + field("socket_errors"),
    })
}

async fn get_phase(
    args: &Args,
    bin: &Path,
    work: &Path,
    cluster: &PgCluster,
    pg: &PgProcesses,
) -> anyhow::Result<Vec<String>> {
    let sqlite_dir = work.join("sqlite");
    std::fs::create_dir_all(&sqlite_dir)?;
    let ids_file = work.join("zone-ids.txt");
    let began = Instant::now();
    let token = {
        let store = Store::open_sqlite(&sqlite_dir)?;
        let now = SystemClock.now();
        let config = Config::new(&sqlite_dir);
        let mut ids = String::new();
        for z in 0..args.zones {
            let apex = format!("z{z}.example");
            let zone = admin::create_zone(&store, &apex, None, false, now).await?;
            for sub in ["www", "api"] {
                let hosts = vec![
                    Hostname::parse(&apex)?,
                    Hostname::parse(&format!("{sub}.{apex}"))?,
                ];
                let pack = Pack::order(
                    zone.id.clone(),
                    hosts,
                    DcvMethod::Txt,
                    90,
                    CaChoice::LetsEncrypt,
                    false,
                    &config.dcv_suffix(&zone.id),
                    now,
                );
                store.insert_pack(&pack, PER_ZONE as u64).await?;
            }
            ids.push_str(zone.id.as_str());
            ids.push('\n');
        }
        std::fs::write(&ids_file, ids)?;
        admin::create_token(
            &store,
            "bench-reader",
            &["SSL and Certificates Read".to_string()],
            &[],
            now,
        )
        .await?
        .secret
    };
    eprintln!(
        "== {} zones x 2 packs x 2 hosts stored in SQLite in {:.1} s",
        args.zones,
        began.elapsed().as_secs_f64()
    );
    let url = cluster.create_database().map_err(anyhow::Error::msg)?;
    let copied = std::process::Command::new(bin)
        .args(["db", "copy", "--from"])
        .arg(&sqlite_dir)
        .args(["--to", &url])
        .output()?;
    if !copied.status.success() {
        bail!(
            "zonecert db copy failed: {}",
            String::from_utf8_lossy(&copied.stderr)
        );
    }
    eprintln!("== copied into PostgreSQL with zonecert db copy");
    let kek = work.join("secret.key");
    zonecert_server::keys::Kek::load_or_create(&kek)?;
    let pg_dir = work.join("pg-node");
    std::fs::create_dir_all(&pg_dir)?;
    pg.pin(&args.server_cpu)?;

    let launch = |backend: &str| -> Launch {
        let mut flags = vec!["--lifecycle".to_string(), "false".to_string()];
        let data_dir = if backend == "postgres" {
            flags.extend([
                "--database".to_string(),
                url.clone(),
                "--secret-key-file".to_string(),
                kek.display().to_string(),
            ]);
            pg_dir.clone()
        } else {
            sqlite_dir.clone()
        };
        Launch {
            bin: bin.to_owned(),
            cpu: args.server_cpu.clone(),
            data_dir,
            flags,
            log: work.join(format!("{backend}.log")),
        }
    };
    let mut runs: Vec<(&str, WrkResult, f64)> = Vec::new();
    for round in 0..args.rounds {
        for backend in ["sqlite", "postgres"] {
            let server = Server::start(&launch(backend)).await?;
            let base = server.api.trim_end_matches("/client/v4").to_owned();
            wrk(args, &base, &token, &ids_file, args.warmup).await?;
            let (cpu0, pg0) = (server.cpu_time()?.as_secs_f64(), pg.cpu_secs());
            let result = wrk(args, &base, &token, &ids_file, args.duration).await?;
            let (cpu1, pg1) = (server.cpu_time()?.as_secs_f64(), pg.cpu_secs());
            let requests = result.rps * args.duration as f64;
            let db = if backend == "postgres" {
                pg1 - pg0
            } else {
                0.0
            };
            let cpu_us = (cpu1 - cpu0 + db) * 1e6 / requests.max(1.0);
            eprintln!(
                "== round {}: {backend}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors, \
                 {cpu_us:.0} us CPU per request (server{})",
                round + 1,
                result.rps,
                result.p50_ms,
                result.p99_ms,
                result.errors,
                if backend == "postgres" {
                    " + PostgreSQL"
                } else {
                    ""
                }
            );
            runs.push((backend, result, cpu_us));
            server.stop().await?;
        }
    }
    pg.pin("0-1023").ok();
    let mean = |backend: &str, f: &dyn Fn(&WrkResult, f64) -> f64| -> f64 {
        let of: Vec<f64> = runs
            .iter()
            .filter(|(b, _, _)| *b == backend)
            .map(|(_, r, c)| f(r, *c))
            .collect();
        of.iter().sum::<f64>() / of.len().max(1) as f64
    };
    let mut out = vec![format!(
        "GET /zones/{{random of {}}}/ssl/verification, wrk {} connections on CPU {}, server \
         (and PostgreSQL) on CPU {}, mean of {} runs each",
        args.zones, args.connections, args.load_cpu, args.server_cpu, args.rounds
    )];
    out.push(format!(
        "{:<12} {:>9} {:>8} {:>8} {:>12} {:>7}",
        "backend", "req/s", "p50 ms", "p99 ms", "CPU us/req", "errors"
    ));
    for backend in ["sqlite", "postgres"] {
        out.push(format!(
            "{:<12} {:>9.0} {:>8.2} {:>8.2} {:>12.0} {:>7.0}",
            backend,
            mean(backend, &|r, _| r.rps),
            mean(backend, &|r, _| r.p50_ms),
            mean(backend, &|r, _| r.p99_ms),
            mean(backend, &|_, c| c),
            mean(backend, &|r, _| r.errors as f64) * args.rounds as f64,
        ));
    }
    let ratio = mean("postgres", &|r, _| r.rps) / mean("sqlite", &|r, _| r.rps);
    out.push(format!(
        "{}  PostgreSQL / SQLite req/s = {ratio:.2} (target >= {MIN_GET_RATIO})",
        if ratio >= MIN_GET_RATIO {
            "PASS"
        } else {
            "FAIL"
        }
    ));
    out.push(String::new());
    Ok(out)
}

async fn lifecycle_phase(
    args: &Args,
    bin: &Path,
    work: &Path,
    cluster: &PgCluster,
    pg: &PgProcesses,
) -> anyhow::Result<Vec<String>> {
    let dns = DnsServer::start().await;
    let kek = work.join("secret.key");
    zonecert_server::keys::Kek::load_or_create(&kek)?;
    let mut out = vec![format!(
        "Lifecycle: {} one-host TXT packs per run, nodes on CPUs {} with PostgreSQL \
         (unpinned), from the first node's start",
        args.packs, args.nodes_cpu
    )];
    out.push(format!(
        "{:<6} {:>10} {:>10} {:>10} {:>12} {:>12} {:>9} {:>13} {:>13}",
        "nodes",
        "validated",
        "active",
        "checks/s",
        "issuances/s",
        "nodes CPU s",
        "DB CPU s",
        "DB share",
        "DB ms/pack"
    ));
    let mut per_pack: Vec<(usize, f64, f64)> = Vec::new();
    for nodes in args
        .nodes
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let nodes: usize = nodes.parse().context("--nodes")?;
        let url = cluster.create_database().map_err(anyhow::Error::msg)?;
        let store = Store::open_url(&url)?;
        store_packs(&store, &dns, args.packs, nodes).await?;
        drop(store);
        // One connection for the whole run: a new one per poll would fork a backend
        // each time, counted as PostgreSQL's CPU.
        let mut counter = Counter::open(&url).await?;
        let pg0 = pg.cpu_secs();
        let started = Instant::now();
        let mut servers = Vec::new();
        for i in 0..nodes {
            let dir = work.join(format!("run{nodes}-node{i}"));
            std::fs::create_dir_all(&dir)?;
            servers.push(
                Server::start(&Launch {
                    bin: bin.to_owned(),
                    cpu: args.nodes_cpu.clone(),
                    data_dir: dir.clone(),
                    flags: vec![
                        "--database".into(),
                        url.clone(),
                        "--secret-key-file".into(),
                        kek.display().to_string(),
                        "--dcv-resolvers".into(),
                        dns.addr().to_string(),
                        "--lifecycle-cpus".into(),
                        "all".into(),
                    ],
                    log: dir.with_extension("log"),
                })
                .await?,
            );
        }
        let mut validated_at = None;
        let active_at = loop {
            let (validated, active) = counter.counts().await?;
            if validated_at.is_none() && validated == args.packs {
                validated_at = Some(started.elapsed());
            }
            if active == args.packs {
                break started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!(
                    "{nodes} nodes: {active} of {} packs active after 600 s",
                    args.packs
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let validated_at = validated_at.unwrap_or(active_at);
        let mut nodes_cpu = 0.0;
        for s in &servers {
            nodes_cpu += s.cpu_time()?.as_secs_f64();
        }
        let db_cpu = pg.cpu_secs() - pg0;
        for s in servers {
            s.stop().await?;
        }
        let packs = args.packs as f64;
        out.push(format!(
            "{:<6} {:>9.1}s {:>9.1}s {:>10.0} {:>12.0} {:>12.1} {:>9.1} {:>12.0}% {:>13.2}",
            nodes,
            validated_at.as_secs_f64(),
            active_at.as_secs_f64(),
            packs / validated_at.as_secs_f64(),
            packs / active_at.as_secs_f64(),
            nodes_cpu,
            db_cpu,
            100.0 * db_cpu / (db_cpu + nodes_cpu).max(1e-9),
            1000.0 * db_cpu / packs,
        ));
        per_pack.push((nodes, nodes_cpu / packs, db_cpu / packs));
    }
    if let Some((_, node_cost, db_cost)) = per_pack.iter().max_by_key(|(n, _, _)| *n) {
        let nodes_per_primary = node_cost / db_cost.max(1e-9);
        out.push(format!(
            "Estimate: a pack costs {:.2} ms of node CPU and {:.2} ms of PostgreSQL CPU; a \
             primary with as many cores as one node is CPU-bound at about {nodes_per_primary:.1} \
             busy nodes (node CPU per pack / database CPU per pack; checks and issuance only, \
             no disk: fsync is off)",
            node_cost * 1000.0,
            db_cost * 1000.0
        ));
    }
    Ok(out)
}

/// Stores `n` one-host TXT packs in zones of [`PER_ZONE`] and puts their records in `dns`.
async fn store_packs(store: &Store, dns: &DnsServer, n: usize, run: usize) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let config = Config::new(Path::new("unused"));
    let mut tasks = tokio::task::JoinSet::new();
    for z in 0..n.div_ceil(PER_ZONE) {
        let apex = format!("z{z:03}.run{run}.bench.test");
        let zone = admin::create_zone(store, &apex, None, false, now).await?;
        let mut packs = Vec::new();
        for h in 0..PER_ZONE.min(n - z * PER_ZONE) {
            let host = Hostname::parse(&format!("h{h:03}.{apex}"))?;
            let pack = Pack::order(
                zone.id.clone(),
                vec![host],
                DcvMethod::Txt,
                90,
                CaChoice::LetsEncrypt,
                false,
                &config.dcv_suffix(&zone.id),
                now,
            );
            for host in &pack.hosts {
                if let DcvRecord::Txt { name, value } = &host.record {
                    dns.set_txt(name, &[value]);
                }
            }
            packs.push(pack);
        }
        let store = store.clone();
        tasks.spawn(async move {
            for pack in packs {
                store.insert_pack(&pack, PER_ZONE as u64).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// A `psql` session kept open to count the packs by state.
struct Counter {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Counter {
    async fn open(url: &str) -> anyhow::Result<Counter> {
        let mut child = tokio::process::Command::new("psql")
            .args([url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting psql")?;
        let stdin = child.stdin.take().context("psql stdin")?;
        let stdout = child.stdout.take().context("psql stdout")?;
        use tokio::io::AsyncBufReadExt;
        Ok(Counter {
            _child: child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
        })
    }

    /// Packs past validation, and packs active.
    async fn counts(&mut self) -> anyhow::Result<(usize, usize)> {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(
                b"SELECT count(*) FILTER (WHERE state NOT IN ('pending_validation', 'initializing')), \
                  count(*) FILTER (WHERE state = 'active') FROM packs;\n",
            )
            .await?;
        self.stdin.flush().await?;
        let line = loop {
            let line = self.lines.next_line().await?.context("psql ended")?;
            if !line.trim().is_empty() {
                break line;
            }
        };
        line.trim()
            .split_once('|')
            .and_then(|(v, a)| Some((v.parse().ok()?, a.parse().ok()?)))
            .with_context(|| format!("psql answered {line:?}"))
    }
}
