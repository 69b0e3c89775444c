//! One ACME account per directory: created on first use (with External Account Binding
//! where configured), its credentials (key and URL) kept in
//! `<data_dir>/acme/accounts/<ca>-<digest of the directory>.json` with mode 0600, and
//! reused by every later start.
//!
//! A server also shares it through its database ([`SharedAccounts`]): the first node to
//! use a directory publishes its account there, sealed under the KEK (`crate::keys`, the
//! directory as associated data), and every node (itself after a restart included) uses
//! the database's account from then on, so orders, renewals and revocations of one node's
//! certificates work from any other as the account that ordered them.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};
use sha2::{Digest, Sha256};

use super::AcmeCaSettings;
use super::http::ReqwestHttp;
use super::problem::{AcmeError, AcmeErrorKind};
use crate::keys::Kek;
use crate::store::Store;
use std::sync::Arc;

/// Where the account of `settings`' directory is kept.
pub(crate) fn account_path(settings: &AcmeCaSettings, data_dir: &Path) -> PathBuf {
    let digest = Sha256::digest(settings.directory.as_bytes());
    let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    data_dir
        .join("acme")
        .join("accounts")
        .join(format!("{}-{short}.json", settings.ca.as_str()))
}

/// Creates `dir` (and its parents) with mode 0700, or tightens it.
pub(crate) fn private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("setting the mode of {}: {e}", dir.display()))
}

/// Renames the account file of `settings` to `<file>.<why>-<unix seconds>` (kept for the
/// operator), so that the next use creates a new account; returns the new name. A file
/// holding another account than `id` (this node's own, while the CA refused the
/// database's) is left alone.
pub(crate) fn set_aside(
    settings: &AcmeCaSettings,
    data_dir: &Path,
    why: &str,
    id: &str,
) -> Option<PathBuf> {
    let path = account_path(settings, data_dir);
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(file) = serde_json::from_slice::<serde_json::Value>(&bytes)
        && file
            .get("id")
            .and_then(|v| v.as_str())
            .is_some_and(|f| f != id)
    {
        return None;
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = path.with_extension(format!("json.{why}-{secs}"));
    match std::fs::rename(&path, &aside) {
        Ok(()) => {
            tracing::warn!(
                ca = settings.ca.as_str(),
                file = %aside.display(),
                "the ACME CA does not know or no longer accepts this account: set aside, a new one will be created"
            );
            Some(aside)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "setting an ACME account aside");
            None
        }
    }
}

/// Where the nodes of one database share their ACME accounts: the store, and the KEK
/// the credentials are sealed under.
#[derive(Debug, Clone)]
pub struct SharedAccounts {
    /// The database every node uses.
    pub store: Store,
    /// The key-encryption key (`--secret-key-file`).
    pub kek: Arc<Kek>,
}

/// The associated data the sealed credentials of `directory`'s account are bound to.
pub fn account_aad(directory: &str) -> String {
    format!("acme-account:{directory}")
}

/// The account to use for `settings`' directory, and its sealed credentials when it is
/// the database's: the database's account when there is one (it is opened with the KEK),
/// else this node's own (loaded from its file or created at the CA), published to the
/// database unless another node published one first, which is then used instead. A
/// database that cannot be read, or an account sealed under another KEK, leaves the node
/// with its own account (logged).
pub(crate) async fn load_shared_or_create(
    settings: &AcmeCaSettings,
    data_dir: &Path,
    http: &ReqwestHttp,
    shared: Option<&SharedAccounts>,
) -> Result<(Account, Option<Vec<u8>>), AcmeError> {
    let Some(shared) = shared else {
        return Ok((load_or_create(settings, data_dir, http).await?.0, None));
    };
    let directory = settings.directory.as_str();
    let aad = account_aad(directory);
    // Twice at most: a node that lost the race to publish adopts the winner's.
    for _ in 0..2 {
        match shared.store.acme_account(directory).await {
            Ok(Some(sealed)) => {
                match shared.kek.open(&aad, &sealed) {
                    Ok(json) => {
                        let credentials: AccountCredentials = serde_json::from_str(&json).map_err(|e| {
                        AcmeError::new(
                            AcmeErrorKind::Other("account".into()),
                            format!("the database's ACME account for {directory} is not one: {e}"),
                        )
                    })?;
                        let account = Account::builder_with_http(Box::new(http.clone()))
                            .from_credentials(credentials)
                            .await
                            .map_err(|e| directory_error(settings, e))?;
                        return Ok((account, Some(sealed)));
                    }
                    Err(e) => {
                        tracing::warn!(ca = settings.ca.as_str(), error = %e, "the database's ACME account cannot be opened with this node's KEK; using this node's own account");
                        break;
                    }
                }
            }
            Ok(None) => {
                let (account, json) = load_or_create(settings, data_dir, http).await?;
                let sealed = shared.kek.seal(&aad, &json);
                match shared.store.insert_acme_account(directory, &sealed).await {
                    Ok(true) => {
                        tracing::info!(
                            ca = settings.ca.as_str(),
                            account = account.id(),
                            "this node's ACME account is now the one every node on the database uses"
                        );
                        return Ok((account, Some(sealed)));
                    }
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(ca = settings.ca.as_str(), error = %e, "publishing the ACME account to the database failed; using this node's own for now");
                        return Ok((account, None));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(ca = settings.ca.as_str(), error = %e, "reading the shared ACME account failed; using this node's own for now");
                break;
            }
        }
    }
    Ok((load_or_create(settings, data_dir, http).await?.0, None))
}

/// This node's own account for `settings`' directory, from its file, when it has one
/// (never created): the account that ordered this node's certificates before the
/// database's account became the one every node uses, which the CA may still require
/// to revoke them (see `AcmeIssuer::revoke`).
pub(crate) async fn load_own(
    settings: &AcmeCaSettings,
    data_dir: &Path,
    http: &ReqwestHttp,
) -> Result<Option<Account>, AcmeError> {
    let path = account_path(settings, data_dir);
    let local = |why: String| AcmeError::new(AcmeErrorKind::Other("account file".into()), why);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(local(format!("reading {}: {e}", path.display()))),
    };
    open_account(settings, http, &path, &bytes, "")
        .await
        .map(Some)
}

/// The account whose credentials `bytes` (read from `path`) hold; `hint` follows the
/// message when they are not an account file's.
async fn open_account(
    settings: &AcmeCaSettings,
    http: &ReqwestHttp,
    path: &Path,
    bytes: &[u8],
    hint: &str,
) -> Result<Account, AcmeError> {
    let credentials: AccountCredentials = serde_json::from_slice(bytes).map_err(|e| {
        AcmeError::new(
            AcmeErrorKind::Other("account file".into()),
            format!("{} is not an ACME account file ({e}){hint}", path.display()),
        )
    })?;
    Account::builder_with_http(Box::new(http.clone()))
        .from_credentials(credentials)
        .await
        .map_err(|e| directory_error(settings, e))
}

/// This node's own account for `settings`' directory, from its file or created at the
/// CA (and written to the file), with its credentials' JSON.
async fn load_or_create(
    settings: &AcmeCaSettings,
    data_dir: &Path,
    http: &ReqwestHttp,
) -> Result<(Account, Vec<u8>), AcmeError> {
    let path = account_path(settings, data_dir);
    let local = |why: String| AcmeError::new(AcmeErrorKind::Other("account file".into()), why);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let hint = "; move it away to create a new account";
            let account = open_account(settings, http, &path, &bytes, hint).await?;
            return Ok((account, bytes));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(local(format!("reading {}: {e}", path.display()))),
    }
    let contact = settings.contact.as_ref().map(|c| format!("mailto:{c}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = settings
        .eab
        .as_ref()
        .map(|eab| ExternalAccountKey::new(eab.key_id.clone(), &eab.hmac_key));
    let (account, credentials) = Account::builder_with_http(Box::new(http.clone()))
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(|e| directory_error(settings, e))?;
    let json = serde_json::to_vec_pretty(&credentials)
        .map_err(|e| local(format!("encoding the account: {e}")))?;
    if let Some(dir) = path.parent() {
        private_dir(dir).map_err(local)?;
    }
    crate::issuance::write_private_file(&path, &json).map_err(|e| local(e.to_string()))?;
    tracing::info!(
        ca = settings.ca.as_str(),
        directory = %settings.directory,
        account = account.id(),
        file = %path.display(),
        "created an ACME account"
    );
    Ok((account, json))
}

/// A failure before any order: fetching the directory is the first request, so a
/// transport failure there is an unreachable directory.
fn directory_error(settings: &AcmeCaSettings, err: instant_acme::Error) -> AcmeError {
    let mut e = AcmeError::from_client(err);
    match e.kind {
        AcmeErrorKind::Transport => {
            e.kind = AcmeErrorKind::DirectoryUnreachable;
            e.detail = format!("{}: {}", settings.directory, e.detail);
        }
        AcmeErrorKind::Other(ref t) if t == "client" => {
            e.kind = AcmeErrorKind::DirectoryUnreachable;
            e.detail = format!(
                "{} is not an ACME directory: {}",
                settings.directory, e.detail
            );
        }
        _ => {}
    }
    e
}
