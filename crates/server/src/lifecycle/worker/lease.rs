//! Leases from the worker's side: how a task holds its pack, until when its lease surely
//! holds, the renewals, and the node identity that lets a restarted server take its own
//! leases back at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a task holds its pack.
#[derive(Debug, Clone, Copy)]
pub(super) enum Hold {
    /// Claimed through a lease asked for at this instant.
    Leased(Instant),
    /// Not through a lease: the dev seed issues its pack before any worker runs.
    Unleased,
}

/// Until when this worker's leases are known to hold, in the worker's monotonic time.
///
/// A claim leases a pack for at least `lease` from when the store thread runs it (the
/// stored lease is a second longer, times being whole wall-clock seconds); the worker
/// notes `claimed_at` before asking, so `claimed_at + lease` is a safe bound. Each
/// renewal asked
/// at `at` extends every lease of this worker still running then to `at + lease`. While
/// renewals follow each other within a lease (a chain), every pack claimed since the
/// chain began, or still leased when it began, is covered by the last one; when a renewal
/// comes too late the chain breaks and older packs are only as good as their own claim.
#[derive(Debug)]
pub(super) struct LeaseClock {
    pub(super) lease: Duration,
    chain: Mutex<RenewalChain>,
}

#[derive(Debug, Clone, Copy)]
struct RenewalChain {
    /// When the first renewal of the unbroken chain was asked for.
    since: Instant,
    /// What the last renewal guarantees.
    until: Instant,
}

impl LeaseClock {
    /// A clock with no renewal yet, from `start` on (before any claim).
    pub(super) fn new(lease: Duration, start: Instant) -> Self {
        LeaseClock {
            lease,
            chain: Mutex::new(RenewalChain {
                since: start,
                until: start,
            }),
        }
    }

    fn chain(&self) -> std::sync::MutexGuard<'_, RenewalChain> {
        // The chain is two instants, whole after every write: a panic elsewhere
        // cannot leave it half-written.
        self.chain.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a successful renewal asked for at `at`.
    pub(super) fn renewed(&self, at: Instant) {
        let mut chain = self.chain();
        if at >= chain.until {
            chain.since = at;
        }
        chain.until = chain.until.max(at + self.lease);
    }

    /// Whether work on a pack held by `hold` may still start: its lease surely holds.
    pub(super) fn holds(&self, hold: Hold) -> bool {
        let Hold::Leased(claimed_at) = hold else {
            return true;
        };
        let own = claimed_at + self.lease;
        let chain = *self.chain();
        let until = if own > chain.since {
            own.max(chain.until)
        } else {
            own
        };
        Instant::now() < until
    }
}

/// The file in the data directory that keeps the node's identity.
const NODE_ID_FILE: &str = "node-id";

/// This worker's lease owner. A server keeps a stable identity, `node-<id>` with the id in
/// `<data_dir>/node-id`, so that after a crash it knows which leases were its own and takes
/// them back at once instead of waiting for them to run out. The file is locked while a
/// worker uses it: a second worker on the same data directory at the same time (another
/// process, or the dev seed's) gets a fresh `worker-<id>` instead, and the lock goes with
/// the process, so a crashed server's is free again. Returns the lock when it was taken.
pub(super) fn node_identity(data_dir: &std::path::Path) -> (String, Option<std::fs::File>) {
    match lock_node_identity(data_dir) {
        Ok(Some((id, lock))) => (format!("node-{id}"), Some(lock)),
        Ok(None) => {
            tracing::info!(
                "another worker holds this data directory's node identity: this one leases under a fresh identity"
            );
            (format!("worker-{}", crate::secrets::mint_id()), None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no node identity in the data directory: a restart waits for this worker's leases to run out");
            (format!("worker-{}", crate::secrets::mint_id()), None)
        }
    }
}

fn lock_node_identity(
    data_dir: &std::path::Path,
) -> std::io::Result<Option<(String, std::fs::File)>> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(NODE_ID_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let id = text.trim();
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Some((id.to_owned(), file)));
    }
    let id = crate::secrets::mint_id();
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(format!("{id}\n").as_bytes())?;
    file.sync_all()?;
    Ok(Some((id, file)))
}

/// Asks the store thread to renew the worker's leases every `period` until `stop`.
pub(super) async fn ask_for_renewals(
    renew_asked: Arc<Notify>,
    period: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(period);
    // After a stall, renew once, not once per missed period.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => renew_asked.notify_one(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_for_its_claim_and_as_long_as_renewals_follow_each_other() {
        let lease = Duration::from_secs(60);
        let now = Instant::now();
        let start = now.checked_sub(Duration::from_secs(300)).unwrap();
        let leases = LeaseClock::new(lease, start);
        let fresh = Hold::Leased(now);
        let old = Hold::Leased(now - Duration::from_secs(59));
        let lapsed = Hold::Leased(now - Duration::from_secs(61));
        assert!(leases.holds(fresh) && leases.holds(old));
        assert!(
            !leases.holds(lapsed),
            "no renewal: only the claim's own lease"
        );
        assert!(leases.holds(Hold::Unleased));

        // A renewal covers every lease still running when it was asked for.
        leases.renewed(now - Duration::from_secs(30));
        assert!(leases.holds(Hold::Leased(now - Duration::from_secs(80))));
        assert!(
            !leases.holds(Hold::Leased(now - Duration::from_secs(95))),
            "lapsed before the renewal"
        );
        // The next renewal, within the lease, carries the chain on.
        leases.renewed(now - Duration::from_secs(5));
        assert!(leases.holds(Hold::Leased(now - Duration::from_secs(80))));

        // Renewals stopped for longer than a lease: the chain is broken, and a late
        // renewal covers only leases running when it was asked for.
        let stalled = LeaseClock::new(lease, start);
        stalled.renewed(now - Duration::from_secs(200));
        stalled.renewed(now - Duration::from_secs(10));
        assert!(!stalled.holds(Hold::Leased(now - Duration::from_secs(190))));
        assert!(stalled.holds(Hold::Leased(now - Duration::from_secs(65))));
    }
}
