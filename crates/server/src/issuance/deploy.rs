//! Writing an issued certificate where a TLS server reads it, and telling that server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::atomic_file::{StagedDir, StagedFile, lock_dir, sync_dir, sync_dir_shared};
use super::{IssuanceError, IssuedLeaf, PrivateKeyPem};

const FULLCHAIN: &str = "fullchain.pem";
const PRIVKEY: &str = "privkey.pem";

/// How much of a failed hook's stderr goes into the error.
const STDERR_TAIL_BYTES: usize = 2048;
/// After the hook exits, how long to wait for the rest of its stderr: a daemon it started may
/// inherit the pipe and keep it open forever.
const STDERR_DRAIN: Duration = Duration::from_millis(500);

/// A program run after each deployment, e.g. `systemctl reload nginx`.
///
/// It is executed directly, not through a shell; to use shell syntax, make the program
/// `/bin/sh` with args `["-c", "..."]`. Its environment adds `ZONECERT_PACK_ID`,
/// `ZONECERT_CERT_PATH` (the fullchain), `ZONECERT_KEY_PATH` and `ZONECERT_HOSTS`
/// (space-separated). Its stdin and stdout are empty/discarded; the end of its stderr is
/// reported when it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCommand {
    /// The executable (looked up in `PATH` when it has no slash).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// How long it may run before it is killed and the deployment fails.
    pub timeout: Duration,
}

/// Where a deployment put the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployedPaths {
    /// `<deploy_dir>/<pack_id>`.
    pub dir: PathBuf,
    /// The leaf followed by its CA chain.
    pub fullchain: PathBuf,
    /// The private key (mode 0600).
    pub privkey: PathBuf,
}

/// Writes `leaf` to `<deploy_dir>/<pack_id>/fullchain.pem` and `privkey.pem`, replacing any
/// previous files atomically, then runs `hook` if given.
///
/// A first deployment builds the pack's directory under a temporary name (both files
/// written and fsynced, the directory fsynced) and renames it into place: the directory
/// appears complete or not at all. A later one (a renewal) writes each file to a temporary
/// file in the directory, fsyncs it and renames it over the old one, then fsyncs the
/// directory; the key is renamed first and the chain last, so a server watching
/// `fullchain.pem` never sees the new certificate with the old key, and concurrent
/// replacements of the same pack are serialised by a lock file so their files do not mix.
/// Either way the deploy directory is fsynced before this returns (one fsync shared by
/// concurrent deployments), so the files are durable. The hook runs only after both files
/// are in place.
pub async fn deploy(
    deploy_dir: &Path,
    pack_id: &str,
    leaf: &IssuedLeaf,
    hook: Option<&HookCommand>,
) -> Result<DeployedPaths, IssuanceError> {
    check_pack_id(pack_id)?;
    let dir = deploy_dir.join(pack_id);
    let paths = DeployedPaths {
        fullchain: dir.join(FULLCHAIN),
        privkey: dir.join(PRIVKEY),
        dir,
    };
    let chain = leaf.chain_pem.clone();
    let key = leaf.key_pem.clone();
    let to_write = paths.clone();
    let deploy_dir_owned = deploy_dir.to_path_buf();
    tokio::task::spawn_blocking(move || write_files(&deploy_dir_owned, &to_write, &chain, &key))
        .await??;

    if let Some(hook) = hook {
        run_hook(hook, pack_id, &paths, &leaf.hosts).await?;
    }
    Ok(paths)
}

/// Pack ids become directory names: only plain names, so none can climb out of `deploy_dir`.
fn check_pack_id(pack_id: &str) -> Result<(), IssuanceError> {
    let plain = !pack_id.is_empty()
        && pack_id.len() <= 64
        && pack_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        Ok(())
    } else {
        Err(IssuanceError::InvalidPackId(pack_id.to_owned()))
    }
}

fn write_files(
    deploy_dir: &Path,
    paths: &DeployedPaths,
    chain: &str,
    key: &PrivateKeyPem,
) -> Result<(), IssuanceError> {
    let first = match std::fs::symlink_metadata(&paths.dir) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(IssuanceError::io("look up", &paths.dir, e)),
    };
    if first {
        // Three inodes and three fsyncs of its own per pack: creating inodes dominated the
        // deployment's cost in profiles, and a lock file would be a fourth.
        let staged = StagedDir::create(&paths.dir, 0o755)?;
        staged.write(PRIVKEY, key.expose_secret().as_bytes(), 0o600)?;
        staged.write(FULLCHAIN, chain.as_bytes(), 0o644)?;
        if staged.commit()? {
            return sync_dir_shared(deploy_dir);
        }
        // Another deployment of this pack created the directory meanwhile: replace its
        // files under the lock like any later deployment.
    }
    let lock = lock_dir(&paths.dir, 0o755, ".deploy.lock")?;

    let staged_key = StagedFile::stage(&paths.privkey, key.expose_secret().as_bytes(), 0o600)?;
    let staged_chain = StagedFile::stage(&paths.fullchain, chain.as_bytes(), 0o644)?;
    staged_key.commit()?;
    staged_chain.commit()?;
    sync_dir(&paths.dir)?;
    // The pack directory may be new (left empty by an interrupted first deployment): make
    // its own entry durable too.
    sync_dir_shared(deploy_dir)?;
    drop(lock);
    Ok(())
}

async fn run_hook(
    hook: &HookCommand,
    pack_id: &str,
    paths: &DeployedPaths,
    hosts: &[String],
) -> Result<(), IssuanceError> {
    let program = hook.program.display().to_string();
    let mut child = tokio::process::Command::new(&hook.program)
        .args(&hook.args)
        .env("ZONECERT_PACK_ID", pack_id)
        .env("ZONECERT_CERT_PATH", &paths.fullchain)
        .env("ZONECERT_KEY_PATH", &paths.privkey)
        .env("ZONECERT_HOSTS", hosts.join(" "))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| IssuanceError::HookSpawn {
            program: program.clone(),
            source,
        })?;

    let tail = Arc::new(Mutex::new(Vec::new()));
    let mut reader = child.stderr.take().map(|mut stderr| {
        let tail = Arc::clone(&tail);
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let mut buf = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 2 * STDERR_TAIL_BYTES {
                    let excess = buf.len() - STDERR_TAIL_BYTES;
                    buf.drain(..excess);
                }
            }
        })
    });

    let waited = tokio::time::timeout(hook.timeout, child.wait()).await;
    let status = match waited {
        Err(_elapsed) => {
            // Already exited or unkillable: either way the deployment has failed.
            let _ = child.kill().await;
            if let Some(reader) = reader {
                reader.abort();
            }
            return Err(IssuanceError::HookTimeout {
                program,
                timeout: hook.timeout,
            });
        }
        Ok(Err(e)) => return Err(IssuanceError::io("wait for deploy hook", &hook.program, e)),
        Ok(Ok(status)) => status,
    };
    if let Some(reader) = reader.as_mut() {
        let _ = tokio::time::timeout(STDERR_DRAIN, &mut *reader).await;
        reader.abort();
    }
    if status.success() {
        return Ok(());
    }
    let bytes = tail.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Err(IssuanceError::HookFailed {
        program,
        status,
        stderr_tail: stderr_tail(&bytes),
    })
}

fn stderr_tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_TAIL_BYTES);
    let text = String::from_utf8_lossy(&bytes[start..]);
    // A hook that prints the key it was given must not carry the key into zonecert's errors.
    if text.contains("PRIVATE KEY") {
        return "[withheld: it contains private key material]".to_owned();
    }
    text.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_ids_cannot_escape_the_deploy_dir() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\0b", &"x".repeat(65)] {
            assert!(check_pack_id(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(check_pack_id("3b8a5e4c-8a2f-4bf4-9d4a-0c1f7e2b9a10").is_ok());
    }

    #[test]
    fn stderr_tail_keeps_the_end_and_withholds_keys() {
        let long = format!("{}END", "x".repeat(5000));
        let tail = stderr_tail(long.as_bytes());
        assert!(tail.ends_with("END"));
        assert_eq!(tail.len(), STDERR_TAIL_BYTES);
        let leaked = stderr_tail(b"-----BEGIN PRIVATE KEY-----\nMIG...\n");
        assert!(!leaked.contains("MIG"));
    }
}
