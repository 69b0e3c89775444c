//! Crash-safe file replacement: a reader sees either the old file or the new one, never a
//! partial write, and after `commit` returns the new content survives a power loss.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use super::IssuanceError;

/// Creates `dir` (with `dir_mode`) if needed and takes an exclusive lock on the file
/// `lock_name` in it, held until the returned file is dropped: it serialises the
/// processes and threads that write in that folder.
pub(crate) fn lock_dir(dir: &Path, dir_mode: u32, lock_name: &str) -> Result<File, IssuanceError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(dir_mode)
        .create(dir)
        .map_err(|e| IssuanceError::io("create directory", dir, e))?;
    let lock_path = dir.join(lock_name);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| IssuanceError::io("open lock file", &lock_path, e))?;
    lock.lock()
        .map_err(|e| IssuanceError::io("lock", &lock_path, e))?;
    Ok(lock)
}

/// A complete, fsynced temporary file next to its destination, waiting to be renamed over it.
/// Dropping it without `commit` removes the temporary file.
#[derive(Debug)]
pub(crate) struct StagedFile {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl StagedFile {
    /// Writes `contents` to a fresh temporary file in `dest`'s directory, created with `mode`
    /// from the start so a secret never sits in a more permissive file, and fsyncs it.
    pub(crate) fn stage(dest: &Path, contents: &[u8], mode: u32) -> Result<Self, IssuanceError> {
        let tmp = temp_sibling(dest);
        let file = create_new(&tmp, contents, mode)?;
        let staged = StagedFile {
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        };
        file.sync_all()
            .map_err(|e| IssuanceError::io("fsync", &staged.tmp, e))?;
        Ok(staged)
    }

    /// Renames the temporary file over the destination. The caller fsyncs the directory
    /// (once for several files) to make the rename durable.
    pub(crate) fn commit(mut self) -> Result<(), IssuanceError> {
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| IssuanceError::io("rename into place", &self.dest, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a leftover temporary file is harmless, only untidy.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A new directory built complete under a temporary name next to its destination, then
/// renamed into place in one step: a reader sees no directory or the whole of it, and two
/// writers racing to create the same destination cannot mix their files (the second rename
/// fails, the destination being no longer empty). Dropping it without a successful `commit`
/// removes the temporary directory.
#[derive(Debug)]
pub(crate) struct StagedDir {
    tmp: PathBuf,
    dest: PathBuf,
    /// The files written so far, made durable together in `commit`.
    written: Vec<(PathBuf, File)>,
    committed: bool,
}

impl StagedDir {
    /// Creates the temporary directory, with `mode`, next to `dest`.
    pub(crate) fn create(dest: &Path, mode: u32) -> Result<Self, IssuanceError> {
        let parent = parent_dir(dest);
        let tmp = temp_sibling(dest);
        let created = match std::fs::DirBuilder::new().mode(mode).create(&tmp) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // The first directory ever deployed to: create the parents too.
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(mode)
                    .create(parent)
                    .and_then(|()| std::fs::DirBuilder::new().mode(mode).create(&tmp))
            }
            other => other,
        };
        created.map_err(|e| IssuanceError::io("create directory", &tmp, e))?;
        Ok(StagedDir {
            tmp,
            dest: dest.to_path_buf(),
            written: Vec::new(),
            committed: false,
        })
    }

    /// Writes the file `name` in the staged directory, created with `mode` from the start;
    /// `commit` makes it durable.
    pub(crate) fn write(
        &mut self,
        name: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<(), IssuanceError> {
        let path = self.tmp.join(name);
        let file = create_new(&path, contents, mode)?;
        self.written.push((path, file));
        Ok(())
    }

    /// Makes the staged files and the directory's entries durable and renames it to the
    /// destination. Returns `false`, leaving the destination alone, when it already exists
    /// with content. The caller fsyncs the parent directory to make the rename itself
    /// durable.
    ///
    /// Every file is written before the first is synced: a journaling file system (ext4,
    /// XFS) then commits all of them in the first sync's transaction, and the later syncs
    /// find little left to do. Synced one after each write, each paid a journal commit of
    /// its own, and a first deployment three of them.
    pub(crate) fn commit(mut self) -> Result<bool, IssuanceError> {
        for (path, file) in std::mem::take(&mut self.written) {
            // Data and size; the names are made durable by the directory's fsync below.
            file.sync_data()
                .map_err(|e| IssuanceError::io("fsync", &path, e))?;
        }
        sync_dir(&self.tmp)?;
        match std::fs::rename(&self.tmp, &self.dest) {
            Ok(()) => {
                self.committed = true;
                Ok(true)
            }
            Err(e)
                if e.kind() == ErrorKind::DirectoryNotEmpty
                    || e.kind() == ErrorKind::AlreadyExists =>
            {
                Ok(false)
            }
            Err(e) => Err(IssuanceError::io("rename into place", &self.dest, e)),
        }
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort, as for a staged file.
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// A fresh name next to `dest` to build it under: the random suffix keeps concurrent
/// writers of the same destination apart.
fn temp_sibling(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(dest).join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()))
}

/// Creates the file `path` with `mode` from the start, so a secret never sits in a more
/// permissive file, and writes `contents` (not yet durable). `create_new` refuses to follow
/// a planted file or symlink. A file it created but could not fill is removed again.
fn create_new(path: &Path, contents: &[u8], mode: u32) -> Result<File, IssuanceError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| IssuanceError::io("create", path, e))?;
    if let Err(e) = file.write_all(contents) {
        let _ = std::fs::remove_file(path);
        return Err(IssuanceError::io("write", path, e));
    }
    Ok(file)
}

/// Stages, commits and makes durable one file.
pub(crate) fn write_atomic(dest: &Path, contents: &[u8], mode: u32) -> Result<(), IssuanceError> {
    StagedFile::stage(dest, contents, mode)?.commit()?;
    sync_dir(parent_dir(dest))
}

/// Fsyncs a directory so that renames and creations inside it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), IssuanceError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IssuanceError::io("fsync directory", dir, e))
}

/// Fsyncs a directory on behalf of every caller whose change in it happened before the
/// fsync started: concurrent callers (deployments of many packs into one deploy directory)
/// share one fsync instead of queueing one each. Returns once a covering fsync succeeded.
pub(crate) fn sync_dir_shared(dir: &Path) -> Result<(), IssuanceError> {
    static GROUPS: LazyLock<Mutex<HashMap<PathBuf, Arc<SyncGroup>>>> =
        LazyLock::new(Mutex::default);
    let group = Arc::clone(locked(&GROUPS).entry(dir.to_path_buf()).or_default());
    let ticket = {
        let mut tickets = locked(&group.tickets);
        tickets.issued += 1;
        tickets.issued
    };
    let _one_at_a_time = locked(&group.running);
    let covers = {
        let tickets = locked(&group.tickets);
        if tickets.synced >= ticket {
            // An fsync that started after this caller's change has completed meanwhile.
            return Ok(());
        }
        tickets.issued
    };
    sync_dir(dir)?;
    let mut tickets = locked(&group.tickets);
    tickets.synced = tickets.synced.max(covers);
    Ok(())
}

/// The fsync state of one directory: callers take increasing tickets after their change;
/// `synced` is the highest ticket an fsync is known to cover.
#[derive(Debug, Default)]
struct SyncGroup {
    tickets: Mutex<Tickets>,
    running: Mutex<()>,
}

#[derive(Debug, Default)]
struct Tickets {
    issued: u64,
    synced: u64,
}

/// A poisoned lock here guards plain counters that are never left half-updated.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
