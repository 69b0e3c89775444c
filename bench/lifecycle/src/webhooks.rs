//! The webhook fan-out benchmark of issue 15: `--events` events (spread over packs,
//! `--events-per-pack` each, delivered in order per pack) written to the outbox of a
//! fresh SQLite database that has `--endpoints` endpoints on loopback (receivers in this
//! process, each verifying every signature), then the release `zonecert serve` started
//! on that data directory. Prints the time from the server's start, and from its first
//! delivery, until every endpoint holds every event, and how many arrived twice.
//! bench/webhooks.sh builds and runs it.

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use clap::Parser;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zonecert_server::store::{OutboxEvent, Store, WebhookEndpoint};
use zonecert_server::webhooks::{events, sign};

#[derive(Parser)]
struct Args {
    /// The zonecert binary to measure.
    #[arg(long)]
    zonecert: PathBuf,
    /// Events written to the outbox.
    #[arg(long, default_value = "10000")]
    events: usize,
    /// Endpoints, each wanting every event.
    #[arg(long, default_value = "3")]
    endpoints: usize,
    /// Events per pack (a pack's events are delivered one after the other).
    #[arg(long, default_value = "4")]
    events_per_pack: usize,
    /// The target, in seconds from the server's start.
    #[arg(long, default_value = "10")]
    target_secs: f64,
    /// Give up after this many seconds.
    #[arg(long, default_value = "120")]
    timeout_secs: u64,
}

/// What the receivers got.
#[derive(Default)]
struct Received {
    /// (endpoint, webhook-id) seen.
    ids: HashSet<(usize, String)>,
    total: usize,
    duplicates: usize,
    bad_signatures: usize,
    first: Option<Instant>,
}

struct Receivers {
    keys: Vec<Vec<u8>>,
    got: Mutex<Received>,
}

async fn receive(
    State(state): State<Arc<Receivers>>,
    Path(n): Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let (id, ts, sig) = (
        header("webhook-id"),
        header("webhook-timestamp").parse::<i64>().unwrap_or(0),
        header("webhook-signature"),
    );
    let good = state
        .keys
        .get(n)
        .is_some_and(|key| sign::verify(key, id, ts, &body, sig));
    let mut got = state.got.lock().unwrap_or_else(|e| e.into_inner());
    if !good {
        got.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    got.first.get_or_insert_with(Instant::now);
    got.total += 1;
    if !got.ids.insert((n, id.to_owned())) {
        got.duplicates += 1;
    }
    StatusCode::NO_CONTENT
}

/// A delivery's body as zonecert writes one (about 1 kB: the pack as the API shows it).
fn payload(kind: &str, zone: &str, pack: &str, n: usize) -> String {
    serde_json::json!({
        "type": kind,
        "timestamp": "2026-12-02T15:00:00Z",
        "data": {
            "zone_id": zone,
            "serial": format!("{n:040x}"),
            "pack": {
                "id": pack,
                "type": "advanced",
                "hosts": ["example.com", "*.example.com"],
                "status": "active",
                "validation_method": "txt",
                "validity_days": 90,
                "certificate_authority": "lets_encrypt",
                "cloudflare_branding": false,
                "primary_certificate": format!("{n:032x}"),
                "certificates": [{
                    "id": format!("{n:032x}"),
                    "hosts": ["example.com", "*.example.com"],
                    "issuer": "zonecert built-in CA",
                    "signature": "ECDSAWithSHA256",
                    "status": "active",
                    "bundle_method": "ubiquitous",
                    "zone_id": zone,
                    "uploaded_on": "2026-12-02T15:00:00Z",
                    "modified_on": "2026-12-02T15:00:00Z",
                    "expires_on": "2027-03-02T15:00:00Z",
                    "priority": 1
                }],
                "validation_records": [],
                "validation_errors": [],
                "dcv_delegation_records": []
            }
        }
    })
    .to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.endpoints == 0 || args.events == 0 || args.events_per_pack == 0 {
        bail!("--events, --endpoints and --events-per-pack must be positive");
    }
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;

    // The receivers: one route per endpoint on one loopback listener.
    let secrets: Vec<String> = (0..args.endpoints).map(|_| sign::new_secret()).collect();
    let keys = secrets
        .iter()
        .map(|s| sign::secret_key(s).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let state = Arc::new(Receivers {
        keys,
        got: Mutex::new(Received::default()),
    });
    let app = axum::Router::new()
        .route("/hook/{n}", axum::routing::post(receive))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The outbox, written before the server starts.
    let store = Store::open_sqlite(&data).context("creating the database")?;
    for (n, secret) in secrets.iter().enumerate() {
        store
            .insert_webhook_endpoint(&WebhookEndpoint {
                id: format!("we_bench{n}"),
                url: format!("http://{addr}/hook/{n}"),
                zone_id: None,
                events: Vec::new(),
                secret: secret.clone(),
                created_at: 0,
                allow_private: true,
            })
            .await?;
    }
    let zone = "023e105f4ecef8ad9ca31a8372d0c353";
    let kinds = [
        "pack.validated",
        "pack.issued",
        "pack.active",
        "pack.expiring",
    ];
    let written = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for n in 0..args.events {
        let pack = format!("00000000-0000-4000-8000-{:012x}", n / args.events_per_pack);
        let kind = kinds[n % args.events_per_pack % kinds.len()];
        batch.push(OutboxEvent {
            id: events::message_id(),
            kind: kind.to_owned(),
            zone_id: zone.to_owned(),
            pack_id: pack.clone(),
            occurred_at: 0,
            payload: payload(kind, zone, &pack, n).into(),
            dedupe: None,
        });
        if batch.len() == 1000 || n + 1 == args.events {
            store.insert_events(&batch).await?;
            batch.clear();
        }
    }
    drop(store);
    let expected = args.events * args.endpoints;
    eprintln!(
        "wrote {} events x {} endpoints ({expected} deliveries) in {:.2} s",
        args.events,
        args.endpoints,
        written.elapsed().as_secs_f64()
    );

    let log = tmp.path().join("server.log");
    let started = Instant::now();
    let mut server = Command::new(&args.zonecert)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            "off",
            "--data-dir",
        ])
        .arg(&data)
        .env("ZONECERT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", args.zonecert.display()))?;
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let outcome = loop {
        let (unique, first) = {
            let got = state.got.lock().unwrap_or_else(|e| e.into_inner());
            (got.ids.len(), got.first)
        };
        if unique >= expected {
            break Ok((started.elapsed(), first));
        }
        if Instant::now() > deadline {
            break Err(unique);
        }
        if let Some(status) = server.try_wait()? {
            let _ = server.kill();
            bail!(
                "the server exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // A moment more, to see duplicates arriving late.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = server.kill();
    let _ = server.wait();
    let got = state.got.lock().unwrap_or_else(|e| e.into_inner());
    match outcome {
        Ok((took, first)) => {
            let from_first = first.map(|f| f.duration_since(started)).unwrap_or_default();
            let secs = took.as_secs_f64();
            println!(
                "{} events to {} endpoints: {expected} deliveries in {secs:.2} s from the server's start \
                 ({:.2} s from its first delivery, which came {:.2} s after the start); {:.0} deliveries/s",
                args.events,
                args.endpoints,
                secs - from_first.as_secs_f64(),
                from_first.as_secs_f64(),
                expected as f64 / secs
            );
            println!(
                "received {} requests: {} duplicates, {} bad signatures",
                got.total, got.duplicates, got.bad_signatures
            );
            let ok = secs < args.target_secs && got.bad_signatures == 0;
            println!(
                "{}  all delivered in < {} s (measured {secs:.2} s)",
                if ok { "PASS" } else { "FAIL" },
                args.target_secs
            );
            if !ok {
                std::process::exit(1);
            }
        }
        Err(unique) => {
            println!(
                "FAIL  only {unique} of {expected} deliveries after {} s; server log:\n{}",
                args.timeout_secs,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::process::exit(1);
        }
    }
    Ok(())
}
