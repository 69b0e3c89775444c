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

/// How much of a failed hook's stderr is read back (its end) to build the excerpt.
const STDERR_TAIL_BYTES: usize = 2048;
/// At most this many lines of the excerpt go into the error (and from there into the
/// pack's errors, the database and the logs).
const EXCERPT_LINES: usize = 10;
/// A run of this many characters that also occurs in the key (its base64 text, or its
/// bytes in hexadecimal) withholds the line: long enough that ordinary messages never
/// match by chance (16 base64 characters are 96 bits), short enough that any re-wrapped
/// or partial copy of the key matches.
const KEY_WINDOW: usize = 16;
/// After the hook exits, how long to wait for the rest of its stderr: a daemon it started may
/// inherit the pipe and keep it open forever.
const STDERR_DRAIN: Duration = Duration::from_millis(500);

/// A program run after each deployment, e.g. `systemctl reload nginx`.
///
/// It is executed directly, not through a shell; to use shell syntax, make the program
/// `/bin/sh` with args `["-c", "..."]`. Its environment adds `ZONECERT_PACK_ID`,
/// `ZONECERT_CERT_PATH` (the fullchain), `ZONECERT_KEY_PATH` and `ZONECERT_HOSTS`
/// (space-separated). Its stdin and stdout are empty/discarded; when it fails, the error
/// gives its exit status and the last lines of its stderr, any line holding part of the
/// key withheld.
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
    deploy_pem(
        deploy_dir,
        pack_id,
        &leaf.chain_pem,
        &leaf.key_pem,
        &leaf.hosts,
        hook,
    )
    .await
}

/// [`deploy`] of a chain and key as stored (a certificate another node issued).
pub async fn deploy_pem(
    deploy_dir: &Path,
    pack_id: &str,
    chain_pem: &str,
    key_pem: &PrivateKeyPem,
    hosts: &[String],
    hook: Option<&HookCommand>,
) -> Result<DeployedPaths, IssuanceError> {
    check_pack_id(pack_id)?;
    let dir = deploy_dir.join(pack_id);
    let paths = DeployedPaths {
        fullchain: dir.join(FULLCHAIN),
        privkey: dir.join(PRIVKEY),
        dir,
    };
    let chain = chain_pem.to_owned();
    let key = key_pem.clone();
    let to_write = paths.clone();
    let deploy_dir_owned = deploy_dir.to_path_buf();
    tokio::task::spawn_blocking(move || write_files(&deploy_dir_owned, &to_write, &chain, &key))
        .await??;

    if let Some(hook) = hook {
        run_hook(hook, pack_id, &paths, hosts, key_pem).await?;
    }
    Ok(paths)
}

/// The deployed chain of the pack, if its files are there.
pub fn deployed_chain(deploy_dir: &Path, pack_id: &str) -> Option<String> {
    check_pack_id(pack_id).ok()?;
    std::fs::read_to_string(deploy_dir.join(pack_id).join(FULLCHAIN)).ok()
}

/// Removes a deleted pack's deployment, `<deploy_dir>/<pack_id>/` with its key; returns
/// whether there was one. Called once the pack is gone from the database, so the API no
/// longer serves it; a TLS server that loaded the files keeps what it holds in memory
/// until it reloads (the deploy hook does not run for a deletion).
pub async fn remove_deployment(deploy_dir: &Path, pack_id: &str) -> Result<bool, IssuanceError> {
    check_pack_id(pack_id)?;
    let dir = deploy_dir.join(pack_id);
    tokio::task::spawn_blocking(move || remove_dir(&dir)).await?
}

fn remove_dir(dir: &Path) -> Result<bool, IssuanceError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(IssuanceError::io("remove", dir, e)),
    }
}

/// What [`sweep`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Staging directories and files of deployments that never finished (a crash).
    pub staging: usize,
    /// Directories of packs the database no longer holds.
    pub orphans: usize,
}

/// Cleans the deploy directory: staging leftovers (`.<pack>.tmp-*`, the temporary names a
/// deployment writes under, with keys inside) whose last change is older than
/// `stale_after` (a live deployment's are milliseconds old, and other servers may deploy
/// into the same directory), and the directories of packs for which `known` says no (a
/// pack deleted by another process, or while it was being deployed). Other entries are
/// the operator's and stay.
pub async fn sweep<F, Fut>(
    deploy_dir: &Path,
    stale_after: Duration,
    known: F,
) -> Result<Swept, IssuanceError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let dir = deploy_dir.to_path_buf();
    let listed = tokio::task::spawn_blocking(move || list_deploy_dir(&dir, stale_after)).await??;
    let mut swept = Swept::default();
    for path in listed.stale {
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match removed {
            Ok(()) => swept.staging += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(IssuanceError::io("remove", &path, e)),
        }
    }
    for pack in listed.packs {
        if !known(pack.clone()).await && remove_deployment(deploy_dir, &pack).await? {
            swept.orphans += 1;
        }
    }
    Ok(swept)
}

struct Listing {
    stale: Vec<PathBuf>,
    packs: Vec<String>,
}

fn list_deploy_dir(dir: &Path, stale_after: Duration) -> Result<Listing, IssuanceError> {
    let mut listing = Listing {
        stale: Vec::new(),
        packs: Vec::new(),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
        Err(e) => return Err(IssuanceError::io("read directory", dir, e)),
    };
    let now = std::time::SystemTime::now();
    for entry in entries {
        let entry = entry.map_err(|e| IssuanceError::io("read directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp-") {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| now.duration_since(at).is_ok_and(|age| age >= stale_after));
            if old {
                listing.stale.push(entry.path());
            }
        } else if check_pack_id(&name).is_ok() && entry.file_type().is_ok_and(|t| t.is_dir()) {
            listing.packs.push(name);
        }
    }
    Ok(listing)
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
        let mut staged = StagedDir::create(&paths.dir, 0o755)?;
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
    key: &PrivateKeyPem,
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
        stderr_tail: stderr_excerpt(&bytes, key),
    })
}

/// The end of a failed hook's stderr, bounded ([`EXCERPT_LINES`] lines) and sanitised so
/// it cannot carry the key it was given (the hook may print its key file, whole or in
/// part, in PEM, one long base64 line, or hexadecimal as `xxd`, `od` and `openssl
/// ... -text` do): every line that shares a [`KEY_WINDOW`]-character run with the key's
/// base64 text or its bytes in hexadecimal, or that names a private key, is withheld, and
/// the excerpt says how many were. The error goes into the pack's errors (readable with
/// an SSL read token), the database and the logs.
fn stderr_excerpt(bytes: &[u8], key: &PrivateKeyPem) -> String {
    let start = bytes.len().saturating_sub(STDERR_TAIL_BYTES);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let secret = KeyWindows::of(key);
    let mut kept: Vec<&str> = Vec::new();
    let mut withheld = 0usize;
    for line in text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
    {
        if secret.appears_in(line) {
            withheld += 1;
        } else {
            kept.push(line);
        }
    }
    let skipped = kept.len().saturating_sub(EXCERPT_LINES);
    let mut excerpt = kept[skipped..].join("\n");
    if withheld > 0 {
        let note = format!(
            "[{withheld} line{} withheld: {} private key material]",
            if withheld == 1 { "" } else { "s" },
            if withheld == 1 {
                "it contains"
            } else {
                "they contain"
            }
        );
        excerpt = if excerpt.is_empty() {
            note
        } else {
            format!("{note}\n{excerpt}")
        };
    }
    excerpt
}

/// Every [`KEY_WINDOW`]-character run of a key's base64 text and of its bytes in
/// lower-case hexadecimal.
struct KeyWindows {
    base64: std::collections::HashSet<String>,
    hex: std::collections::HashSet<String>,
}

impl KeyWindows {
    fn of(key: &PrivateKeyPem) -> Self {
        use base64::Engine as _;
        let body: String = key
            .expose_secret()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .unwrap_or_default();
        let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
        KeyWindows {
            base64: windows(&body),
            hex: windows(&hex),
        }
    }

    /// Whether `line` holds part of the key, or names a private key.
    fn appears_in(&self, line: &str) -> bool {
        if line.contains("PRIVATE KEY") {
            return true;
        }
        let base64_runs = runs(
            line,
            |c| c.is_ascii_alphanumeric() || "+/=".contains(c),
            |_| false,
        );
        // Hex dumps separate bytes with spaces or colons and prefix offsets: those are
        // skipped within a run, and every window of it is tried.
        let hex_runs = runs(line, |c| c.is_ascii_hexdigit(), |c| c == ' ' || c == ':');
        base64_runs
            .iter()
            .any(|r| windows(r).iter().any(|w| self.base64.contains(w)))
            || hex_runs
                .iter()
                .map(|r| r.to_ascii_lowercase())
                .any(|r| windows(&r).iter().any(|w| self.hex.contains(w)))
    }
}

/// The maximal runs of `line` made of characters that are `part`, ignoring characters
/// that are `skip` within a run.
fn runs(line: &str, part: impl Fn(char) -> bool, skip: impl Fn(char) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut run = String::new();
    for c in line.chars() {
        if part(c) {
            run.push(c);
        } else if !skip(c) && !run.is_empty() {
            out.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// Every [`KEY_WINDOW`]-character substring of an ASCII string.
fn windows(text: &str) -> std::collections::HashSet<String> {
    let bytes = text.as_bytes();
    if bytes.len() < KEY_WINDOW {
        return std::collections::HashSet::new();
    }
    bytes
        .windows(KEY_WINDOW)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
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
    fn the_excerpt_is_bounded_and_keeps_ordinary_lines() {
        let key = PrivateKeyPem::new(
            "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
                .into(),
        );
        let many: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let excerpt = stderr_excerpt(many.as_bytes(), &key);
        assert_eq!(excerpt.lines().count(), EXCERPT_LINES);
        assert!(excerpt.ends_with("line 49"), "{excerpt}");
        let plain =
            "nginx: [emerg] cannot load certificate \"/etc/ssl/a.pem\": BIO_new_file() failed";
        assert_eq!(stderr_excerpt(plain.as_bytes(), &key), plain);
    }
}
