//! Checkpoints of the SQLite write-ahead log, on a thread of their own.
//!
//! SQLite copies the WAL back into the database file (a checkpoint) in whichever
//! connection commits once the WAL holds 1,000 pages: about 4 MB of writes and an
//! `fsync` inside that commit. Here the committer is the store's writer connection, used
//! by request writes and by the lifecycle's store thread, and a checkpoint there held
//! the CPU in the kernel for 3-5 ms at a time while requests waited (the lifecycle
//! benchmark's `perf sched` traces). So the writer's automatic checkpoint is only a
//! backstop for a checkpointer that cannot keep up ([`BACKSTOP_PAGES`]), and this thread,
//! at background priority, runs the checkpoints when the writer tells it the WAL has
//! grown by [`CHECKPOINT_FRAMES`]. Its checkpoints are PASSIVE: they never wait for
//! readers or writers, and no reader or writer waits for them.

use super::StoreError;
use super::connect;
use std::path::Path;
use std::sync::mpsc;

/// Frames not yet checkpointed at which the writer asks for a checkpoint: SQLite's own
/// default threshold.
pub(super) const CHECKPOINT_FRAMES: u32 = 1_000;

/// The writer connection's own automatic checkpoint, in pages (about 64 MB of WAL with
/// 4 KiB pages): reached only if the checkpointer falls far behind.
pub(super) const BACKSTOP_PAGES: u32 = 16_000;

/// The handle the store keeps. Dropping it ends the thread and waits for it: the
/// thread's connection must be closed before the store's writer connection closes. In
/// the lifecycle benchmark, a checkpoint still running while the writer (then the last
/// other connection of the process) closed the database died of SIGBUS reading the
/// shared-memory index.
#[derive(Debug)]
pub(super) struct Checkpointer {
    wake: Option<mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread, with a connection of its own to the database at `path`.
    pub(super) fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = connect(path)?;
        // One pending request is enough: asks that arrive while a checkpoint runs are
        // covered by the next one, which copies everything committed by then.
        let (wake, asked) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("zonecert-ckpt".into())
            .spawn(move || {
                crate::sched::background_thread();
                while asked.recv().is_ok() {
                    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    });
                    match done {
                        Ok((frames, copied)) => {
                            tracing::debug!(frames, copied, "WAL checkpoint");
                        }
                        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("starting the checkpointer: {e}")))?;
        Ok(Checkpointer {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint; returns at once.
    pub(super) fn ask(&self) {
        // Full: one is pending already. Disconnected: the thread is gone (it logged why).
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Without a sender the thread's `recv` fails once a pending ask has run.
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the thread was already reported by the panic hook.
            let _ = thread.join();
        }
    }
}
