//! Notices commits to the database without a database round trip, for the read cache.
//!
//! In WAL mode, SQLite keeps a header in the `-shm` file (the "wal-index", documented in
//! <https://www.sqlite.org/walformat.html>) with a counter, `iChange`, that every
//! commit moves on. Reading it is one `pread` of 96 bytes; asking SQLite instead
//! (`PRAGMA data_version`) opens a read transaction, two `fcntl` locks, which cost more
//! than the rest of a cached request.
//!
//! The header is written twice in a row by the committer and read as a pair: two equal
//! copies are a consistent header, as SQLite's own readers decide.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Size of one copy of the wal-index header.
const HEADER: usize = 48;
/// Offset of `iChange` (native-endian u32) in a copy.
const CHANGE_COUNTER: usize = 8;
/// Offset of `isInit` (u8, non-zero once the header is valid) in a copy.
const IS_INIT: usize = 12;
/// Offset of `mxFrame` (u32: frames in the WAL) in a copy.
const MAX_FRAME: usize = 16;
/// Offset of `nBackfill` (u32: frames already copied into the database by checkpoints),
/// the first field of the checkpoint information after the two copies.
const BACKFILLED: usize = 2 * HEADER;

/// An open `-shm` file of one database.
#[derive(Debug)]
pub(super) struct WalWatch {
    shm: File,
}

impl WalWatch {
    /// Opens the `-shm` file of the database at `db_path`. It exists while any
    /// connection has the database open in WAL mode; the caller keeps one open for as
    /// long as it watches, so that SQLite never deletes the file under it.
    pub(super) fn open(db_path: &Path) -> std::io::Result<WalWatch> {
        let mut name = db_path.as_os_str().to_owned();
        name.push("-shm");
        Ok(WalWatch {
            shm: File::open(name)?,
        })
    }

    /// The commit counter, or `None` when no consistent header could be read (a commit
    /// was writing it each time, or the file cannot be read).
    pub(super) fn counter(&self) -> Option<u32> {
        self.state().map(|s| s.counter)
    }

    /// The commit counter and the WAL's frames not yet checkpointed, from one read.
    pub(super) fn state(&self) -> Option<WalState> {
        let mut buf = [0u8; BACKFILLED + 4];
        let u32_at = |bytes: &[u8], at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        for _ in 0..3 {
            self.shm.read_exact_at(&mut buf, 0).ok()?;
            let (first, rest) = buf.split_at(HEADER);
            let second = rest.get(..HEADER)?;
            if first == second && first[IS_INIT] != 0 {
                // The backfill count is outside the header pair: a checkpoint may move
                // it at any time, so it is a hint, good enough to decide when to run one.
                let frames = u32_at(first, MAX_FRAME)?;
                let backfilled = u32_at(&buf, BACKFILLED)?;
                return Some(WalState {
                    counter: u32_at(first, CHANGE_COUNTER)?,
                    frames_to_checkpoint: frames.saturating_sub(backfilled),
                });
            }
        }
        None
    }
}

/// What [`WalWatch::state`] reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct WalState {
    /// `iChange`: moves on with every commit.
    pub counter: u32,
    /// Frames in the WAL that no checkpoint has copied into the database yet.
    pub frames_to_checkpoint: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn the_counter_moves_with_each_commit_of_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let a = Connection::open(&path).unwrap();
        a.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x)")
            .unwrap();
        let watch = WalWatch::open(&path).unwrap();
        let start = watch.counter().unwrap();
        a.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert_eq!(watch.counter(), Some(start.wrapping_add(1)));
        let b = Connection::open(&path).unwrap();
        b.execute("INSERT INTO t VALUES (2)", []).unwrap();
        assert_eq!(watch.counter(), Some(start.wrapping_add(2)));
        // Reads and empty transactions leave it alone.
        let n: i64 = b
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        b.execute_batch("BEGIN IMMEDIATE; DELETE FROM t WHERE x = 3; COMMIT")
            .unwrap();
        assert_eq!(watch.counter(), Some(start.wrapping_add(2)));
    }

    #[test]
    fn frames_to_checkpoint_grow_with_commits_and_fall_with_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let a = Connection::open(&path).unwrap();
        a.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (x)",
        )
        .unwrap();
        let watch = WalWatch::open(&path).unwrap();
        let start = watch.state().unwrap().frames_to_checkpoint;
        for i in 0..10 {
            a.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        let grown = watch.state().unwrap().frames_to_checkpoint;
        assert!(grown >= start + 10, "{start} -> {grown}");
        a.execute_batch("PRAGMA wal_checkpoint(PASSIVE)").unwrap();
        assert_eq!(watch.state().unwrap().frames_to_checkpoint, 0);
    }
}
