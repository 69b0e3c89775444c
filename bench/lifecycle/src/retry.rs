//! Order -> active with `retry=true`: the benchmark's latency samples of one order at a time.

use super::*;

/// Order -> active samples.
#[derive(Debug, Default)]
pub(super) struct RetrySamples {
    pub(super) samples: Vec<f64>,
    pub(super) active_in_call: usize,
    /// Further `retry=true` GETs sent when the first answer was not active yet.
    pub(super) repeated_retries: usize,
    pub(super) post_median_ms: f64,
    pub(super) get_median_ms: f64,
}

impl RetrySamples {
    pub(super) fn quantile_ms(&self, q: f64) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        if s.is_empty() {
            return 0.0;
        }
        s[((s.len() - 1) as f64 * q).round() as usize]
    }

    pub(super) fn median_ms(&self) -> f64 {
        self.quantile_ms(0.5)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// One at a time: POST an order, put its records in DNS, GET the verification view with
/// `retry=true`; if the pack is not active in that answer, poll it until it is.
pub(super) async fn order_to_active(
    api: &str,
    token: &str,
    zones: &[(String, String)],
    dns: &DnsServer,
) -> anyhow::Result<RetrySamples> {
    let client = reqwest::Client::new();
    let mut out = RetrySamples::default();
    let (mut posts, mut gets) = (Vec::new(), Vec::new());
    for (zone, apex) in zones {
        let t = Instant::now();
        let (id, records) = order(&client, api, token, zone, apex).await?;
        posts.push(ms(t.elapsed()));
        put_records(dns, &records);
        let g = Instant::now();
        let view = verification(&client, api, token, zone, true).await?;
        gets.push(ms(g.elapsed()));
        if pack_active_in(&view, &id)? {
            out.active_in_call += 1;
        } else {
            // What a client does next: ask again. A check that ran before the records
            // were in DNS can answer the first retry with the pack still pending.
            let mut active = false;
            for _ in 0..20 {
                out.repeated_retries += 1;
                let view = verification(&client, api, token, zone, true).await?;
                if pack_active_in(&view, &id)? {
                    active = true;
                    break;
                }
            }
            if !active {
                wait_active(&client, api, token, zone, &id).await?;
            }
        }
        out.samples.push(ms(t.elapsed()));
    }
    out.post_median_ms = median(posts);
    out.get_median_ms = median(gets);
    Ok(out)
}

async fn verification(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    zone: &str,
    retry: bool,
) -> anyhow::Result<serde_json::Value> {
    let query = if retry { "?retry=true" } else { "" };
    Ok(client
        .get(format!("{api}/zones/{zone}/ssl/verification{query}"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?)
}

/// Whether every verification item of pack `id` says `active`.
fn pack_active_in(view: &serde_json::Value, id: &str) -> anyhow::Result<bool> {
    let items: Vec<&serde_json::Value> = view["result"]
        .as_array()
        .context("verification view without result")?
        .iter()
        .filter(|v| v["cert_pack_uuid"] == id)
        .collect();
    Ok(!items.is_empty() && items.iter().all(|v| v["certificate_status"] == "active"))
}

async fn wait_active(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    zone: &str,
    id: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let pack: serde_json::Value = client
            .get(format!("{api}/zones/{zone}/ssl/certificate_packs/{id}"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        if pack["result"]["status"] == "active" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("pack {id} did not become active within 60 s")
}
