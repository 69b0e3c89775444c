//! Test controls for the teams whose test suites drive zonecert: the travelling clock,
//! auto-validation, injected faults and the reset to the documentation's seed state.
//!
//! Only a server started with `--dev` or `--test-controls` has them
//! ([`crate::config::Config::test_controls_enabled`]); the HTTP side offers them under
//! `/_zonecert/v1/...` (outside Cloudflare's namespace) to the "zonecert Test Controls"
//! group. The lifecycle reads them through [`crate::lifecycle::Signals::controls`]: the
//! clock is the one it runs on, and auto-validation and faults are inputs of its check,
//! CAA, issuance and deployment steps, whose outcomes it then treats as real ones.
//!
//! The clock's offset is kept in the database (it survives a restart); faults and the
//! per-zone auto-validation switches live in memory and end with the process.

mod clock;
mod faults;
mod reset;

pub use clock::{ClockError, TravelClock};
pub use faults::{DEFAULT_PROBLEM, Fault, FaultKind, Faults, INJECTED};
pub use reset::{ResetError, issue_seed_pack};

use crate::clock::SharedClock;
use crate::issuance::BuiltinCa;
use crate::model::{CheckResult, DcvRecord, ZoneId};
use crate::store::{Store, StoreError};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The `meta` key of the clock's offset (seconds, decimal).
pub const CLOCK_OFFSET_KEY: &str = "test_clock_offset";

/// What a validated host's check records as its note when auto-validation passed it,
/// so the verification view says so (`validated_automatically`).
pub use crate::model::AUTO_VALIDATED;

/// The test controls of one server.
#[derive(Debug)]
pub struct Controls {
    clock: Arc<TravelClock>,
    /// Every zone is auto-validated (`--dcv-auto-validate`).
    auto_all: bool,
    auto_zones: Mutex<BTreeSet<ZoneId>>,
    faults: Mutex<Faults>,
    /// Serialises the moves of the clock and resets: each stores the offset before
    /// applying it, and two at once could store one and apply the other.
    moving: tokio::sync::Mutex<()>,
    /// The built-in CA, loaded at the first reset.
    ca: OnceLock<Arc<BuiltinCa>>,
}

/// What the lifecycle does instead of a DCV check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcvOverride {
    /// Fail with this reason (an injected fault).
    Fail(String),
    /// Pass without looking (auto-validation).
    Pass,
}

impl DcvOverride {
    /// The result the check step records.
    pub fn result(self) -> CheckResult {
        match self {
            DcvOverride::Fail(reason) => CheckResult::Failed(reason),
            DcvOverride::Pass => CheckResult::PassedAutomatically,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Controls {
    /// The controls of a server on `store` whose clock is `base`: the clock starts at the
    /// offset the database kept (0 when none); `auto_all` is `--dcv-auto-validate`.
    pub async fn open(
        store: &Store,
        base: SharedClock,
        auto_all: bool,
    ) -> Result<Self, StoreError> {
        let offset = stored_offset(store).await?;
        Ok(Controls {
            clock: TravelClock::new(base, offset),
            auto_all,
            auto_zones: Mutex::new(BTreeSet::new()),
            faults: Mutex::new(Faults::default()),
            moving: tokio::sync::Mutex::new(()),
            ca: OnceLock::new(),
        })
    }

    /// The travelling clock, which the whole server reads.
    pub fn clock(&self) -> &Arc<TravelClock> {
        &self.clock
    }

    /// Stores `offset`, then applies it (a move whose write fails changes nothing).
    async fn store_offset(&self, store: &Store, offset: i64) -> Result<(), StoreError> {
        let text = offset.to_string();
        let value = (offset != 0).then_some(text.as_str());
        store.set_setting(CLOCK_OFFSET_KEY, value).await?;
        self.clock.set_offset(offset);
        Ok(())
    }

    /// Moves the clock forward by `secs`.
    pub async fn advance(&self, store: &Store, secs: i64) -> Result<(), MoveError> {
        let _moving = self.moving.lock().await;
        let offset = self.clock.offset_after_advance(secs)?;
        Ok(self.store_offset(store, offset).await?)
    }

    /// Sets the clock to `target` (Unix seconds), not before its now.
    pub async fn set(&self, store: &Store, target: i64) -> Result<(), MoveError> {
        let _moving = self.moving.lock().await;
        let offset = self.clock.offset_to_reach(target)?;
        Ok(self.store_offset(store, offset).await?)
    }

    /// Back to real time: the one move backwards allowed, because asked for by name.
    pub async fn reset_clock(&self, store: &Store) -> Result<(), MoveError> {
        let _moving = self.moving.lock().await;
        Ok(self.store_offset(store, 0).await?)
    }

    /// Whether `--dcv-auto-validate` is on.
    pub fn auto_validates_all(&self) -> bool {
        self.auto_all
    }

    /// The zones auto-validated by their switch.
    pub fn auto_validated_zones(&self) -> Vec<ZoneId> {
        lock(&self.auto_zones).iter().cloned().collect()
    }

    /// Turns a zone's auto-validation on or off.
    pub fn set_auto_validation(&self, zone: &ZoneId, enabled: bool) {
        let mut zones = lock(&self.auto_zones);
        if enabled {
            zones.insert(zone.clone());
        } else {
            zones.remove(zone);
        }
    }

    /// Whether `zone`'s checks pass by themselves.
    pub fn auto_validates(&self, zone: &ZoneId) -> bool {
        self.auto_all || lock(&self.auto_zones).contains(zone)
    }

    /// The faults, oldest first.
    pub fn faults(&self) -> Vec<Fault> {
        lock(&self.faults).list()
    }

    /// Adds a fault; returns it with its id.
    pub fn add_fault(&self, fault: Fault) -> Fault {
        lock(&self.faults).add(fault)
    }

    /// Removes every fault; returns how many there were.
    pub fn clear_faults(&self) -> usize {
        lock(&self.faults).clear()
    }

    /// Removes one fault; whether it existed.
    pub fn remove_fault(&self, id: u64) -> bool {
        lock(&self.faults).remove(id)
    }

    /// What a DCV check of `host` (its `record`, in `zone`) does instead of looking: an
    /// injected fault with strikes left fails it (taking a strike), else auto-validation
    /// passes it; `None`: the real check runs.
    pub fn dcv_override(
        &self,
        zone: &ZoneId,
        host: &str,
        record: &DcvRecord,
    ) -> Option<DcvOverride> {
        if let Some(reason) = lock(&self.faults).strike_dcv(zone, host, record) {
            return Some(DcvOverride::Fail(reason));
        }
        self.auto_validates(zone).then_some(DcvOverride::Pass)
    }

    /// The `kind` fault (CAA, CA or deploy hook) that strikes this step of pack `pack`
    /// (of `zone`, with `hosts`), taking a strike; `None`: the step runs for real.
    pub fn step_fault<'a>(
        &self,
        kind: FaultKind,
        zone: &ZoneId,
        pack: &str,
        hosts: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<Fault> {
        lock(&self.faults).strike_step(kind, zone, pack, hosts)
    }
}

/// The travelled clock's offset kept in the database, in seconds (0 when the clock was
/// never moved, and on PostgreSQL, where there are no test controls): what the
/// administration commands add to the system's time to see the time a test server
/// sees (`zonecert report expiry`).
pub async fn stored_offset(store: &Store) -> Result<i64, StoreError> {
    if let Store::Postgres(_) = store {
        return Ok(0);
    }
    match store.setting(CLOCK_OFFSET_KEY).await? {
        Some(text) => text
            .trim()
            .parse::<i64>()
            .map_err(|e| StoreError::Corrupt(format!("meta {CLOCK_OFFSET_KEY} = {text:?}: {e}"))),
        None => Ok(0),
    }
}

/// Why the clock did not move.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The move itself is refused.
    #[error(transparent)]
    Refused(#[from] ClockError),
    /// Storing the offset failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
