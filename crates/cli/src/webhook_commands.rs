//! `zonecert webhook add|list|remove|test|deliveries`: webhook endpoints, straight on the
//! server's database like the other admin commands. A running server reads the
//! endpoints every few hundred milliseconds; its delivery worker does the sending.

use crate::admin_commands::Target;
use clap::Subcommand;
use serde_json::json;
use std::process::ExitCode;
use zonecert_server::clock::{Clock, SystemClock};
use zonecert_server::model::ZoneId;
use zonecert_server::store::WebhookEndpoint;
use zonecert_server::webhooks::{EVENT_TYPES, events, sign, target};

/// `zonecert webhook ...`
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Add an endpoint; prints its signing secret (`whsec_...`) once.
    Add {
        /// Where events are POSTed (http or https).
        url: String,
        /// Only this zone's events (its id).
        #[arg(long)]
        zone: Option<String>,
        /// Only these event types (`pack.issued,pack.expiring`); every type when absent.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// Allow loopback and private addresses (a receiver on your own network, tests).
        #[arg(long)]
        allow_private: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List the endpoints (never their secrets).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Remove an endpoint and its pending deliveries.
    Remove {
        /// The endpoint's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Send a signed `webhook.test` event to an endpoint now, and say how it answered.
    Test {
        /// The endpoint's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// The newest deliveries and where they stand.
    Deliveries {
        /// Only those given up after 24 hours of retries.
        #[arg(long)]
        failed: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs a `webhook` command.
pub async fn webhook(cmd: WebhookCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WebhookCommand::Add {
            url,
            zone,
            events,
            allow_private,
            target,
        } => {
            let checked = target::check_url(&url, allow_private).map_err(|e| anyhow::anyhow!(e))?;
            if let Some(unknown) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
                anyhow::bail!(
                    "unknown event type {unknown:?}; the types are {}",
                    EVENT_TYPES.join(", ")
                );
            }
            let store = target.open()?;
            if let Some(z) = &zone {
                let id = ZoneId::parse(z).map_err(|e| anyhow::anyhow!(e.0))?;
                if store.zone(&id).await?.is_none() {
                    anyhow::bail!("no zone with id {z}");
                }
            }
            let endpoint = WebhookEndpoint {
                id: format!("we_{}", &events::message_id()[4..]),
                url: checked.to_string(),
                zone_id: zone,
                events,
                secret: sign::new_secret(),
                created_at: SystemClock.now(),
                allow_private,
            };
            store.insert_webhook_endpoint(&endpoint).await?;
            target.print(
                json!({"id": endpoint.id, "url": endpoint.url, "secret": endpoint.secret}),
                || {
                    format!(
                        "added webhook {} -> {}\nsigning secret (shown once): {}",
                        endpoint.id, endpoint.url, endpoint.secret
                    )
                },
            );
        }
        WebhookCommand::List { target } => {
            let store = target.open()?;
            let endpoints = store.webhook_endpoints().await?;
            let value = json!(
                endpoints
                    .iter()
                    .map(|e| json!({"id": e.id, "url": e.url, "zone": e.zone_id,
                        "events": e.events, "allow_private": e.allow_private}))
                    .collect::<Vec<_>>()
            );
            target.print(value, || {
                endpoints
                    .iter()
                    .map(|e| {
                        format!(
                            "{}  {}  zone: {}  events: {}",
                            e.id,
                            e.url,
                            e.zone_id.as_deref().unwrap_or("all"),
                            if e.events.is_empty() {
                                "all".to_owned()
                            } else {
                                e.events.join(",")
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        WebhookCommand::Remove { id, target } => {
            let store = target.open()?;
            if !store.delete_webhook_endpoint(&id).await? {
                anyhow::bail!("no webhook endpoint {id}");
            }
            target.print(json!({"id": id}), || format!("removed webhook {id}"));
        }
        WebhookCommand::Test { id, target } => {
            let store = target.open()?;
            let endpoint = store
                .webhook_endpoints()
                .await?
                .into_iter()
                .find(|e| e.id == id)
                .ok_or_else(|| anyhow::anyhow!("no webhook endpoint {id}"))?;
            let (message, sent) =
                zonecert_server::webhooks::deliver::send_test(&endpoint, SystemClock.now()).await;
            match sent {
                Ok(()) => target.print(json!({"id": message, "delivered": true}), || {
                    format!("delivered {message} to {}", endpoint.url)
                }),
                Err(e) => {
                    target.print(
                        json!({"id": message, "delivered": false, "error": e}),
                        || format!("not delivered to {}: {e}", endpoint.url),
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        WebhookCommand::Deliveries {
            failed,
            limit,
            target,
        } => {
            let store = target.open()?;
            let list = store.list_deliveries(failed, limit).await?;
            let value =
                json!(
                list.iter()
                    .map(|d| json!({"event": d.event_id, "type": d.kind, "endpoint": d.endpoint_id,
                        "pack": d.pack_id, "state": d.state.as_str(), "attempts": d.attempts,
                        "last_error": d.last_error}))
                    .collect::<Vec<_>>()
            );
            target.print(value, || {
                list.iter()
                    .map(|d| {
                        format!(
                            "{}  {}  {}  {}  {} attempt(s){}",
                            d.event_id,
                            d.kind,
                            d.endpoint_id,
                            d.state.as_str(),
                            d.attempts,
                            d.last_error
                                .as_deref()
                                .map(|e| format!("  last error: {e}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
