//! Crash-safe file replacement: a reader sees either the old file or the new one, never a
//! partial write, and after `commit` returns the new content survives a power loss.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
        let dir = parent_dir(dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The random suffix keeps concurrent writers of the same destination apart;
        // create_new refuses to follow a planted file or symlink.
        let tmp = dir.join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| IssuanceError::io("create temporary file", &tmp, e))?;
        let staged = StagedFile {
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        };
        file.write_all(contents)
            .map_err(|e| IssuanceError::io("write", &staged.tmp, e))?;
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

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
