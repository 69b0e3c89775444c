//! Keeping every node's read cache exact: each commit that changes what the cache holds
//! notifies the other nodes of what it touched (`NOTIFY zonecert_changes` in the same
//! transaction, so the notice is sent if and only if the commit happens), and each node
//! listens on a connection of its own.
//!
//! A notice travels on its own: it may arrive after a request that should see its
//! commit has started. So a request's first cached read makes a round trip on the
//! listening connection first (an empty query): PostgreSQL sends a listening session the
//! notices of every transaction committed before the query, ahead of the query's answer,
//! and the listener applies each notice as it reads it, so once the answer is back, every
//! commit made before the request started has been forgotten by the cache.
//!
//! Requests that arrive together share that round trip ([`Syncs`]): a request waits for
//! the first one that starts after it arrived (the one in flight may have been sent
//! before a commit the request must see), so under load one round trip answers every
//! request that came while the previous one was in flight, instead of one each.
//!
//! When the listening connection is down (PostgreSQL restarted, a network cut), notices
//! are lost: reads go past the cache until it is connected and listening again, and the
//! cache is emptied before it is used again.

use super::{Inner, PgStore};
use crate::model::ZoneId;
use crate::store::StoreError;
use crate::store::cache::{ReadCache, Touch};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The channel every node listens on.
const CHANNEL: &str = "zonecert_changes";

/// The listening connection's `application_name`.
pub const LISTENER_NAME: &str = "zonecert-listener";

/// PostgreSQL refuses payloads of 8000 bytes or more; past this, a notice says
/// "everything changed" instead of listing the zones.
const MAX_PAYLOAD: usize = 7_000;

/// The listening side of a store.
#[derive(Default)]
pub(super) struct Listener {
    /// The listening connection's client while it is connected and listening.
    client: Mutex<Option<Arc<tokio_postgres::Client>>>,
    /// The round trips on it that requests wait for.
    syncs: Syncs,
}

/// The round trips ("syncs") on the listening connection, shared by the requests that
/// wait at the same time. Each has a number; one runs at a time, and the requests that
/// arrive while one is in flight wait for the next, started as soon as the one in flight
/// is answered.
struct Syncs {
    state: Mutex<SyncState>,
    /// The last sync answered: its number and whether it succeeded.
    done: tokio::sync::watch::Sender<(u64, bool)>,
}

#[derive(Default)]
struct SyncState {
    /// The number of the last sync started.
    started: u64,
    /// Whether one is in flight.
    in_flight: bool,
    /// Whether a request waits for the next one.
    again: bool,
}

impl Default for Syncs {
    fn default() -> Self {
        Syncs {
            state: Mutex::new(SyncState::default()),
            done: tokio::sync::watch::Sender::new((0, false)),
        }
    }
}

impl Syncs {
    fn state(&self) -> std::sync::MutexGuard<'_, SyncState> {
        // Plain values, whole after every write.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Longest a request waits for a sync before reading past the cache (a sync is one
/// round trip; this only bounds a connection that stopped answering).
const SYNC_WAIT: Duration = Duration::from_secs(5);

impl Listener {
    fn current(&self) -> Option<Arc<tokio_postgres::Client>> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, client: Option<Arc<tokio_postgres::Client>>) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = client;
    }
}

/// What a notice says: `NODE c` (credentials), `NODE z ID,ID,...` (zones), `NODE *`.
pub(super) fn payload(node: &str, touch: &Touch<'_>) -> Option<String> {
    let what = match touch {
        // Nothing this backend caches (its lifecycle reads the endpoints each batch).
        Touch::Nothing | Touch::Webhooks => return None,
        Touch::Credentials => "c".to_owned(),
        Touch::Everything => "*".to_owned(),
        Touch::Zone(id) => format!("z {}", id.as_str()),
        Touch::Packs(packs) if packs.is_empty() => return None,
        Touch::Packs(packs) => {
            let mut zones: Vec<&str> = packs.iter().map(|p| p.zone_id.as_str()).collect();
            zones.sort_unstable();
            zones.dedup();
            format!("z {}", zones.join(","))
        }
    };
    if what.len() > MAX_PAYLOAD {
        return Some(format!("{node} *"));
    }
    Some(format!("{node} {what}"))
}

/// Applies a notice from another node to the cache (this node's own were applied when
/// it committed).
fn apply(cache: &ReadCache, node: &str, notice: &str) {
    let Some((from, what)) = notice.split_once(' ') else {
        cache.forget_all();
        return;
    };
    if from == node {
        return;
    }
    match what.split_once(' ') {
        None if what == "c" => cache.forget(Touch::Credentials),
        Some(("z", zones)) => {
            for zone in zones.split(',') {
                match ZoneId::parse(zone) {
                    Ok(id) => cache.forget(Touch::Zone(&id)),
                    Err(_) => cache.forget_all(),
                }
            }
        }
        // "*", or a notice of a later version: forget everything, which is always exact.
        _ => cache.forget_all(),
    }
}

impl PgStore {
    /// Sends this transaction's notice of what it touched (delivered when it commits).
    pub(super) async fn notify(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        touch: &Touch<'_>,
    ) -> Result<(), StoreError> {
        if let Some(payload) = payload(&self.inner.node, touch) {
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await?;
        }
        Ok(())
    }

    /// The cache's epoch for a request's reads, once it heard every notice of the
    /// commits made before now; `None` (read past the cache) while not listening.
    pub(in crate::store) async fn cache_epoch(&self) -> Option<u64> {
        let client = self.inner.listener.current()?;
        let syncs = &self.inner.listener.syncs;
        let mut done = syncs.done.subscribe();
        // The first sync to start from now on answers this request.
        let (target, start) = {
            let mut state = syncs.state();
            if state.in_flight {
                state.again = true;
                (state.started + 1, false)
            } else {
                state.in_flight = true;
                state.started += 1;
                (state.started, true)
            }
        };
        if start {
            self.run_syncs(client, target);
        }
        let answered = async {
            loop {
                let (number, ok) = *done.borrow_and_update();
                if number >= target {
                    return ok;
                }
                if done.changed().await.is_err() {
                    return false;
                }
            }
        };
        // The answer comes after the notices of every commit before it (see the module's
        // documentation); a failure means notices may be lost.
        let ok = tokio::time::timeout(SYNC_WAIT, answered)
            .await
            .unwrap_or(false);
        ok.then(|| self.inner.cache.current_epoch())
    }

    /// Runs sync `first` on the store's runtime, then the next ones as long as requests
    /// wait for them.
    fn run_syncs(&self, client: Arc<tokio_postgres::Client>, first: u64) {
        let Some(runtime) = self.inner.runtime.as_ref() else {
            return;
        };
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let (mut number, mut client) = (first, Some(client));
            loop {
                let ok = match &client {
                    Some(c) => c.batch_execute("").await.is_ok(),
                    None => false,
                };
                let Some(alive) = inner.upgrade() else {
                    return;
                };
                let syncs = &alive.listener.syncs;
                syncs.done.send_replace((number, ok));
                {
                    let mut state = syncs.state();
                    if !state.again {
                        state.in_flight = false;
                        return;
                    }
                    state.again = false;
                    state.started += 1;
                    number = state.started;
                }
                client = alive.listener.current();
            }
        });
    }

    /// Whether the store hears the other nodes' changes (its cache is in use).
    pub(super) fn listening(&self) -> bool {
        self.inner.listener.current().is_some()
    }

    /// Starts the listening connection on the store's runtime, reconnecting whenever it
    /// drops, for as long as the store lives.
    pub(super) fn start_listening(&self, config: tokio_postgres::Config, tls: MakeRustlsConnect) {
        let Some(runtime) = self.inner.runtime.as_ref() else {
            return;
        };
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            loop {
                match listen_once(&inner, &config, &tls).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "PostgreSQL change notices: not listening; the read cache is off until listening again");
                    }
                }
                let Some(alive) = inner.upgrade() else {
                    return;
                };
                alive.listener.set(None);
                drop(alive);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

/// One listening connection, from connecting to its end (an error, or the store
/// dropped).
async fn listen_once(
    inner: &Weak<Inner>,
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
) -> Result<(), StoreError> {
    // Named, so that an operator (and a test) can tell it from the pool's connections.
    let mut config = config.clone();
    config.application_name(LISTENER_NAME);
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let client = Arc::new(client);
    let (node, cache) = {
        let Some(alive) = inner.upgrade() else {
            return Ok(());
        };
        (alive.node.clone(), Arc::clone(&alive.cache))
    };
    // The connection must be driven for LISTEN to be answered: drive it here, and send
    // LISTEN from a task beside it.
    let mut listening = {
        let client = Arc::clone(&client);
        tokio::spawn(async move { client.batch_execute(&format!("LISTEN {CHANNEL}")).await })
    };
    let mut listened = false;
    loop {
        tokio::select! {
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(n))) => apply(&cache, &node, n.payload()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            done = &mut listening, if !listened => {
                listened = true;
                match done {
                    // Notices flow from now on; what was committed before may have been
                    // missed: forget everything, then let requests use the cache.
                    Ok(Ok(())) => {
                        cache.forget_all();
                        let Some(alive) = inner.upgrade() else {
                            return Ok(());
                        };
                        alive.listener.set(Some(Arc::clone(&client)));
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Err(e) => return Err(StoreError::Unavailable(format!("LISTEN: {e}"))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Pack, ZoneId};

    const A: &str = "023e105f4ecef8ad9ca31a8372d0c353";

    #[test]
    fn notices_name_what_changed_and_fall_back_to_everything() {
        let a = ZoneId::parse(A).unwrap();
        assert_eq!(payload("n1", &Touch::Nothing), None);
        assert_eq!(payload("n1", &Touch::Packs(Vec::new())), None);
        assert_eq!(payload("n1", &Touch::Credentials).as_deref(), Some("n1 c"));
        assert_eq!(
            payload("n1", &Touch::Zone(&a)).as_deref(),
            Some(format!("n1 z {A}").as_str())
        );
        // Many zones in one batch: "everything" instead of a payload PostgreSQL refuses.
        let many: Vec<Pack> = (0..400)
            .map(|i| {
                let mut p = pack(A);
                p.zone_id = ZoneId::parse(&format!("{:032x}", i)).unwrap();
                p
            })
            .collect();
        assert_eq!(payload("n1", &Touch::Packs(many)).as_deref(), Some("n1 *"));
    }

    #[test]
    fn another_nodes_notice_forgets_what_it_names_and_an_odd_one_everything() {
        let a = ZoneId::parse(A).unwrap();
        let cache = ReadCache::default();
        let fill = |cache: &ReadCache| {
            let view = crate::store::cache::ZoneView::new(
                crate::model::Zone {
                    id: a.clone(),
                    name: crate::model::Hostname::parse("example.com").unwrap(),
                    created_at: 0,
                },
                Vec::new(),
            );
            cache.put_zone(cache.current_epoch(), Arc::new(view));
            assert!(cache.zone(&a).is_some());
        };
        fill(&cache);
        // Its own notices were applied when it committed.
        apply(&cache, "me", &format!("me z {A}"));
        assert!(cache.zone(&a).is_some());
        apply(&cache, "me", "other c");
        assert!(cache.zone(&a).is_some());
        apply(&cache, "me", &format!("other z {A}"));
        assert!(cache.zone(&a).is_none());
        for odd in ["garbage", "other *", "other z not-a-zone", "other q 1"] {
            fill(&cache);
            apply(&cache, "me", odd);
            assert!(cache.zone(&a).is_none(), "{odd}");
        }
    }

    fn pack(zone: &str) -> Pack {
        Pack::order(
            ZoneId::parse(zone).unwrap(),
            vec![crate::model::Hostname::parse("example.com").unwrap()],
            crate::model::DcvMethod::Txt,
            90,
            crate::model::CaChoice::LetsEncrypt,
            false,
            "x.dcv.test",
            100,
        )
    }
}
