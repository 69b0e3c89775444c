//! The ACME benchmark's floor (`bench/acme.sh`, see `acme.rs`): a plain instant-acme loop
//! against the same Pebble and loopback DNS server as zonecert.

use crate::{Args, median, ms};
use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    Account, BodyWrapper, BytesResponse, ChallengeType, HttpClient, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use zonecert_testkit::DnsServer;
use zonecert_testkit::pebble::Pebble;

/// The floor: one account, `--singles` orders one at a time, then `--packs` orders
/// `--concurrency` at a time; returns the single order's median and the run's time.
pub(crate) async fn floor(
    args: &Args,
    pebble: &Pebble,
    directory: &str,
    dns: &Arc<DnsServer>,
) -> anyhow::Result<(Duration, Duration)> {
    let http = PlainHttp::new(&pebble.tls_root_pem)?;
    let (account, _) = Account::builder_with_http(Box::new(http))
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_owned(),
            None,
        )
        .await?;
    let mut singles = Vec::new();
    for i in 0..args.singles {
        let t = Instant::now();
        floor_order(&account, dns, &format!("s{i:03}.floor.test")).await?;
        singles.push(t.elapsed());
    }
    let floor_single = median(&mut singles);
    eprintln!("== floor: single order median {}", ms(floor_single));
    let t = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (account, dns, next) = (account.clone(), dns.clone(), next.clone());
        let n = args.packs;
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let apex = format!("f{i:05}.floor.test");
                // A request that never ends would leave the run waiting forever (Pebble
                // 2.4 can stop answering POSTs under load): the order fails instead.
                tokio::time::timeout(FLOOR_ORDER_LIMIT, floor_order(&account, &dns, &apex))
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "floor order for {apex} not done within {FLOOR_ORDER_LIMIT:?}: Pebble stopped answering?"
                        )
                    })??;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok((floor_single, t.elapsed()))
}

/// How many times the floor runs before a wedged Pebble ends the benchmark.
pub(crate) const FLOOR_ATTEMPTS: u32 = 8;

/// How long one floor order may take before the run gives up on Pebble.
const FLOOR_ORDER_LIMIT: Duration = Duration::from_secs(120);

/// One order of the floor, start to chain.
async fn floor_order(account: &Account, dns: &DnsServer, apex: &str) -> anyhow::Result<()> {
    let ids = [
        Identifier::Dns(apex.to_owned()),
        Identifier::Dns(format!("*.{apex}")),
    ];
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let mut values = Vec::new();
    {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            let challenge = authz
                .challenge(ChallengeType::Dns01)
                .context("no dns-01 challenge")?;
            values.push(challenge.key_authorization().dns_value());
        }
    }
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    dns.set_txt(&format!("_acme-challenge.{apex}"), &refs);
    {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            let mut challenge = authz
                .challenge(ChallengeType::Dns01)
                .context("no dns-01 challenge")?;
            challenge.set_ready().await?;
        }
    }
    // The same polling as zonecert's issuer.
    let policy = RetryPolicy::new()
        .initial_delay(Duration::from_millis(200))
        .backoff(1.5)
        .timeout(Duration::from_secs(90));
    let status = order.poll_ready(&policy).await?;
    if status != OrderStatus::Ready {
        bail!("order for {apex}: {status:?}");
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![apex.to_owned(), format!("*.{apex}")])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    order.poll_certificate(&policy).await?;
    dns.remove(&format!("_acme-challenge.{apex}"));
    Ok(())
}

/// instant-acme's HTTP over reqwest, trusting Pebble's TLS root.
#[derive(Clone)]
pub(crate) struct PlainHttp {
    client: reqwest::Client,
}

impl PlainHttp {
    pub(crate) fn new(root_pem: &str) -> anyhow::Result<Self> {
        // Timeouts as zonecert's own ACME client has them.
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes())?)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(PlainHttp { client })
    }
}

impl HttpClient for PlainHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.client.clone();
        Box::pin(async move {
            let other = |e: Box<dyn std::error::Error + Send + Sync>| instant_acme::Error::Other(e);
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let req = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(|e| other(Box::new(e)))?;
            let rsp = client.execute(req).await.map_err(|e| other(Box::new(e)))?;
            let rsp: http::Response<reqwest::Body> = rsp.into();
            let (parts, body) = rsp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| other(Box::new(e)))?
                .to_bytes();
            Ok(BytesResponse::from(http::Response::from_parts(
                parts,
                http_body_util::Full::new(body),
            )))
        })
    }
}
