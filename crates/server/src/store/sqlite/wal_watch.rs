//! Notices commits to the database without a database round trip, for the read cache.
//!
//! In WAL mode, SQLite keeps a header in the `-shm` file (the "wal-index", documented in
//! <https://www.sqlite.org/walformat.html>) with a counter, `iChange`, that every
//! commit moves on. Asking SQLite instead (`PRAGMA data_version`) opens a read
//! transaction, two `fcntl` locks, which cost more than the rest of a cached request.
//!
//! On Linux the header is read from a shared mapping of the file's first page, as
//! SQLite's own connections read it: no system call. A `pread` of it (what other
//! systems do here) was the one system call of a cached request besides the socket's
//! read and write, every request.
//!
//! The header is written twice in a row by the committer (the second copy first) and
//! read as a pair, the first copy first: two equal copies are a consistent header, as
//! SQLite's own readers decide.

use std::fs::File;
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

/// Bytes read from the start of the `-shm` file: the two header copies and the
/// checkpoint information's first field (a whole number of 32-bit words).
const READ: usize = BACKFILLED + 4;
const _: () = assert!(READ.is_multiple_of(4) && HEADER.is_multiple_of(4));

/// An open `-shm` file of one database.
#[derive(Debug)]
pub(super) struct WalWatch {
    #[cfg(target_os = "linux")]
    shm: mapping::Mapped,
    /// The file stays open as long as the watch, mapped or not: closing any descriptor
    /// of a file releases every POSIX lock the process holds on it, SQLite's own locks
    /// on the `-shm` file included. Closed after mapping, another process opening the
    /// database (the admin CLI) found no lock held, took itself for the only user and
    /// rebuilt the WAL index, restarting its commit counter, so that a second such
    /// process's commit left the counter at a value the cache already knew, and went
    /// unnoticed (crates/cli/tests/serve.rs caught it).
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    file: File,
}

impl WalWatch {
    /// Opens the `-shm` file of the database at `db_path`. It exists while any
    /// connection has the database open in WAL mode; the caller keeps one open for as
    /// long as it watches, so that SQLite never deletes the file under it nor, as the
    /// first connection to open a database does, truncates it.
    pub(super) fn open(db_path: &Path) -> std::io::Result<WalWatch> {
        let mut name = db_path.as_os_str().to_owned();
        name.push("-shm");
        let file = File::open(name)?;
        Ok(WalWatch {
            #[cfg(target_os = "linux")]
            shm: mapping::Mapped::new(&file)?,
            file,
        })
    }

    /// The commit counter, or `None` when no consistent header could be read (a commit
    /// was writing it each time, or the file cannot be read).
    pub(super) fn counter(&self) -> Option<u32> {
        self.state().map(|s| s.counter)
    }

    /// The commit counter and the WAL's frames not yet checkpointed, from one read.
    pub(super) fn state(&self) -> Option<WalState> {
        let mut buf = [0u8; READ];
        let u32_at = |bytes: &[u8], at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        for _ in 0..3 {
            self.read(&mut buf).ok()?;
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

    #[cfg(target_os = "linux")]
    fn read(&self, buf: &mut [u8; READ]) -> std::io::Result<()> {
        self.shm.read(buf);
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn read(&self, buf: &mut [u8; READ]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, 0)
    }
}

/// The shared mapping of the `-shm` file's first page. The crate's one `unsafe` code
/// besides `sched_setattr`: no safe wrapper maps a file (`rustix`'s `mmap` is `unsafe`
/// too, for the same reasons).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod mapping {
    use super::READ;
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{Ordering, fence};

    /// `READ` bytes at the start of the file, mapped read-only and shared: SQLite's
    /// writes to the file (through its own mapping) show through at once.
    #[derive(Debug)]
    pub(super) struct Mapped {
        at: std::ptr::NonNull<u8>,
    }

    // SAFETY: the mapping is read-only memory owned by this value alone; reading it from
    // several threads at once is what `read` does with volatile reads.
    unsafe impl Send for Mapped {}
    // SAFETY: as above: `&Mapped` only reads.
    unsafe impl Sync for Mapped {}

    impl Mapped {
        /// Maps the first page of `file` (which must hold `READ` bytes: a wal-index
        /// in use holds at least a 32 KiB region). The caller keeps the file open
        /// (see `WalWatch::file`).
        pub(super) fn new(file: &File) -> std::io::Result<Mapped> {
            let len = file.metadata()?.len();
            if len < READ as u64 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the WAL index holds {len} bytes, less than its header"),
                ));
            }
            // SAFETY: a new read-only shared mapping of `READ` bytes of an open file,
            // at an address the kernel chooses; nothing else in this process is at that
            // address. The page lies within the file (checked above), so reading it
            // cannot fault with SIGBUS as long as the file is not truncated, which
            // SQLite does only when it opens a database no connection has open: the
            // store's writer connection stays open as long as this mapping lives.
            let at = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    READ,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            if at == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            std::ptr::NonNull::new(at.cast::<u8>())
                .map(|at| Mapped { at })
                .ok_or_else(|| std::io::Error::other("mmap returned a null mapping"))
        }

        /// Copies the bytes, in order: the first header copy before the second, with a
        /// barrier between them as SQLite's readers have (its writer writes the second
        /// copy, a barrier, then the first). Volatile: another process writes them. By
        /// aligned 32-bit words, the width of every field.
        pub(super) fn read(&self, buf: &mut [u8; READ]) {
            const SPLIT: usize = super::HEADER;
            let words = self.at.as_ptr().cast::<u32>();
            for (i, chunk) in buf.chunks_exact_mut(4).enumerate() {
                if i * 4 == SPLIT {
                    fence(Ordering::SeqCst);
                }
                // SAFETY: `i * 4 + 4 <= READ`, within the mapping, which lives as long
                // as `self`; the mapping is page-aligned, so the word is aligned.
                let word = unsafe { std::ptr::read_volatile(words.add(i)) };
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
        }
    }

    impl Drop for Mapped {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`, of that length, unmapped once; no
            // reference into it outlives `self`.
            unsafe {
                libc::munmap(self.at.as_ptr().cast(), READ);
            }
        }
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
