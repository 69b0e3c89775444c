//! Administration: zones, users, API tokens and manual review of packs. Used by the `zonecert` binary's admin
//! commands (directly on the store, safe while a server runs on the same database) and
//! by the zone endpoints.

use crate::model::{Hostname, Pack, PackId, Permission, Token, User, Zone, ZoneId};
use crate::secrets;
use crate::store::{Store, StoreError};
use std::path::Path;

/// Why an administrative action failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The input is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a zone named `name` (its apex), with a fresh id unless `id` is given. The
/// name must be one a CA could issue for ([`Hostname::check_issuable`]) and, unless
/// `allow_nested`, neither inside another zone nor above one: `sub.example.com` beside
/// `example.com` would split one domain's control between two zones (and their tokens).
pub async fn create_zone(
    store: &Store,
    name: &str,
    id: Option<&str>,
    allow_nested: bool,
    now: i64,
) -> Result<Zone, AdminError> {
    let name = Hostname::parse(name).map_err(|e| AdminError::Invalid(e.0))?;
    if name.is_wildcard() {
        return Err(AdminError::Invalid(format!(
            "{name}: a zone name cannot be a wildcard"
        )));
    }
    name.check_issuable()
        .map_err(|e| AdminError::Invalid(e.0))?;
    let id = match id {
        Some(id) => ZoneId::parse(id).map_err(|e| AdminError::Invalid(e.0))?,
        None => ZoneId::generate(),
    };
    let zone = Zone {
        id,
        name,
        created_at: now,
    };
    match store.insert_zone(&zone, allow_nested).await {
        Ok(()) => Ok(zone),
        Err(e @ StoreError::Nested { .. }) => Err(AdminError::Invalid(format!(
            "{e}; zones may not nest unless allowed explicitly (zonecert zone create \
             --allow-nested)"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A user and the global key minted for it (shown once, stored as a hash).
#[derive(Debug)]
pub struct NewUser {
    /// The stored user.
    pub user: User,
    /// The global key.
    pub key: String,
}

/// Creates a user; mints a global key unless `key` is given.
pub async fn create_user(
    store: &Store,
    email: &str,
    key: Option<&str>,
    now: i64,
) -> Result<NewUser, AdminError> {
    let email = email.trim().to_ascii_lowercase();
    if !secrets::looks_like_email(&email) {
        return Err(AdminError::Invalid(format!(
            "{email:?} is not an e-mail address"
        )));
    }
    let key = match key {
        Some(k) if secrets::looks_like_global_key(k) => k.to_ascii_lowercase(),
        Some(_) => {
            return Err(AdminError::Invalid(
                "a global key is 32 to 64 hexadecimal characters".into(),
            ));
        }
        None => secrets::mint_global_key(),
    };
    let user = User {
        id: secrets::mint_id(),
        email,
        key_hash: secrets::hash(&key),
        created_at: now,
    };
    store.insert_user(&user).await?;
    Ok(NewUser { user, key })
}

/// A token and its secret (shown once, stored as a hash).
#[derive(Debug)]
pub struct NewToken {
    /// The stored token.
    pub token: Token,
    /// The secret to send as `Authorization: Bearer <secret>`.
    pub secret: String,
}

/// Creates an API token with permission groups (by Cloudflare's names) on every zone
/// (`zones` empty) or on the listed zones.
pub async fn create_token(
    store: &Store,
    name: &str,
    permissions: &[String],
    zones: &[String],
    now: i64,
) -> Result<NewToken, AdminError> {
    if permissions.is_empty() {
        return Err(AdminError::Invalid(format!(
            "a token needs at least one permission group: {}",
            Permission::ALL.map(Permission::name).join(", ")
        )));
    }
    let permissions = permissions
        .iter()
        .map(|p| {
            Permission::parse(p).ok_or_else(|| {
                AdminError::Invalid(format!(
                    "unknown permission group {p:?}; known: {}",
                    Permission::ALL.map(Permission::name).join(", ")
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let zones = if zones.is_empty() {
        None
    } else {
        Some(
            zones
                .iter()
                .map(|z| ZoneId::parse(z).map_err(|e| AdminError::Invalid(e.0)))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    let secret = secrets::mint_token();
    let token = Token {
        id: secrets::mint_id(),
        name: name.to_owned(),
        secret_hash: secrets::hash(&secret),
        permissions,
        zones,
        created_at: now,
    };
    store.insert_token(&token).await?;
    Ok(NewToken { token, secret })
}

/// The identifiers Cloudflare's API documentation uses in its examples, seeded by
/// `serve --dev` so documented examples run verbatim.
pub mod dev {
    /// The example zone's id.
    pub const ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";
    /// The example zone's name.
    pub const ZONE_NAME: &str = "example.com";
    /// The example certificate pack's id.
    pub const PACK_ID: &str = "a77f8bd7-3b47-46b4-a6f1-75cf98109948";
    /// The example user's e-mail.
    pub const USER_EMAIL: &str = "user@example.com";
    /// The example user's global key.
    pub const USER_KEY: &str = "144c9defac04969c7bfad8efaa8ea194";
    /// The name of the token dev mode mints (a label only: dev mode finds its token by
    /// the secret kept in [`TOKEN_FILE`], never by name, so an operator's own token
    /// named "dev" is never touched).
    pub const TOKEN_NAME: &str = "dev";
    /// The file in the data directory (mode 0600) that keeps the dev token's secret, so
    /// every `serve --dev` on that directory prints the same, still valid, token.
    pub const TOKEN_FILE: &str = "dev-token";
}

/// Seeds the documentation's identifiers if they are missing, and returns the data
/// directory's dev token: the one kept in `<data_dir>/dev-token` while the database
/// still knows it, else a new one (SSL and zone read and write on every zone) written
/// there. Reusing it keeps a client configured by an earlier `serve --dev` working
/// across restarts.
pub async fn seed_dev(
    store: &Store,
    data_dir: &Path,
    dcv_suffix: impl Fn(&ZoneId) -> String,
    quota: u64,
    now: i64,
) -> Result<String, AdminError> {
    seed_dev_keeping(store, data_dir, dcv_suffix, quota, now, false).await
}

/// The dev token's groups: everything dev mode offers, the test controls included.
pub const DEV_PERMISSIONS: [Permission; 5] = [
    Permission::SslRead,
    Permission::SslWrite,
    Permission::ZoneRead,
    Permission::ZoneWrite,
    Permission::TestControls,
];

/// [`seed_dev`]; with `keep_secret`, a dev token the database no longer knows (the test
/// controls' reset emptied it) is stored again under the secret of `<data_dir>/dev-token`,
/// so that the test suite's configured token keeps working. Without it such a token is
/// not brought back (someone revoked it) and a new one is minted.
pub async fn seed_dev_keeping(
    store: &Store,
    data_dir: &Path,
    dcv_suffix: impl Fn(&ZoneId) -> String,
    quota: u64,
    now: i64,
    keep_secret: bool,
) -> Result<String, AdminError> {
    use crate::model::{CaChoice, DcvMethod, Pack, PackId};
    let zone_id = ZoneId::parse(dev::ZONE_ID).map_err(|e| AdminError::Invalid(e.0))?;
    if store.zone(&zone_id).await?.is_none() {
        // Nesting allowed: the documentation's example must seed even where an operator
        // already has a zone below example.com.
        let zone = create_zone(store, dev::ZONE_NAME, Some(dev::ZONE_ID), true, now).await?;
        let mut pack = Pack::order(
            zone.id.clone(),
            vec![
                zone.name.clone(),
                Hostname::parse(&format!("*.{}", zone.name))
                    .map_err(|e| AdminError::Invalid(e.0))?,
            ],
            DcvMethod::Txt,
            90,
            CaChoice::LetsEncrypt,
            false,
            &dcv_suffix(&zone.id),
            now,
        );
        pack.id = PackId::parse(dev::PACK_ID).map_err(|e| AdminError::Invalid(e.0))?;
        // The documentation shows this pack active with its records verified: it is
        // seeded as validated, and `App::seed_dev` has the built-in CA issue it.
        pack.state = crate::model::PackState::PendingIssuance;
        for host in &mut pack.hosts {
            host.check.verified = Some(true);
            host.check.last_checked_at = Some(now);
            host.check.attempts = 1;
        }
        store.insert_pack(&pack, quota.max(1)).await?;
    }
    if store.user_by_email(dev::USER_EMAIL).await?.is_none() {
        create_user(store, dev::USER_EMAIL, Some(dev::USER_KEY), now).await?;
    }
    let all = DEV_PERMISSIONS.map(|p| p.name().to_owned());
    match dev_token(store, data_dir).await? {
        Some((secret, Some(token)))
            if DEV_PERMISSIONS
                .iter()
                .all(|p| token.permissions.contains(p)) =>
        {
            return Ok(secret);
        }
        // A dev token from before the test controls: the same secret, with every group.
        Some((secret, Some(token))) => {
            store.delete_token(&token.id).await?;
            insert_token_with_secret(store, &secret, now).await?;
            return Ok(secret);
        }
        Some((secret, None)) if keep_secret => {
            insert_token_with_secret(store, &secret, now).await?;
            return Ok(secret);
        }
        _ => {}
    }
    let new = create_token(store, dev::TOKEN_NAME, &all, &[], now).await?;
    let file = data_dir.join(dev::TOKEN_FILE);
    crate::issuance::write_private_file(&file, format!("{}\n", new.secret).as_bytes())
        .map_err(|e| AdminError::Invalid(format!("keeping the dev token: {e}")))?;
    Ok(new.secret)
}

/// Stores the dev token under a secret already kept in `<data_dir>/dev-token`.
async fn insert_token_with_secret(store: &Store, secret: &str, now: i64) -> Result<(), AdminError> {
    let token = Token {
        id: secrets::mint_id(),
        name: dev::TOKEN_NAME.to_owned(),
        secret_hash: secrets::hash(secret),
        permissions: DEV_PERMISSIONS.to_vec(),
        zones: None,
        created_at: now,
    };
    store.insert_token(&token).await?;
    Ok(())
}

/// The dev token kept in `<data_dir>/dev-token`, with the stored token when the
/// database still knows it; `None` without the file.
async fn dev_token(
    store: &Store,
    data_dir: &Path,
) -> Result<Option<(String, Option<Token>)>, AdminError> {
    let file = data_dir.join(dev::TOKEN_FILE);
    let secret = match std::fs::read_to_string(&file) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AdminError::Invalid(format!(
                "reading {}: {e}",
                file.display()
            )));
        }
    };
    let stored = store
        .reads()
        .token_by_hash(&secrets::hash(&secret))
        .await?
        .map(|t| Token::clone(&t));
    Ok(Some((secret, stored)))
}

/// What dev mode left in a database that still grants access: the published global key
/// of `user@example.com` (anyone who read the documentation has it) and the dev token.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DevCredentials {
    /// `user@example.com` still has the documentation's global key.
    pub published_key: bool,
    /// The id of the dev token of `<data_dir>/dev-token`, still valid.
    pub token_id: Option<String>,
}

impl DevCredentials {
    /// Whether any of them is still valid.
    pub fn any(&self) -> bool {
        self.published_key || self.token_id.is_some()
    }
}

/// Finds the dev credentials still valid in `store` (see [`DevCredentials`]). A server
/// started without `--dev` refuses to run while there are any: the published key opens
/// every zone to anyone.
pub async fn dev_credentials(store: &Store, data_dir: &Path) -> Result<DevCredentials, AdminError> {
    let published_key = store
        .user_by_email(dev::USER_EMAIL)
        .await?
        .is_some_and(|u| secrets::hashes_match(&u.key_hash, &secrets::hash(dev::USER_KEY)));
    let token_id = match dev_token(store, data_dir).await? {
        Some((_, Some(token))) => Some(token.id),
        _ => None,
    };
    Ok(DevCredentials {
        published_key,
        token_id,
    })
}

/// Removes what dev mode left that grants access (`zonecert dev clean`): the user
/// `user@example.com` if it still has the published key, the dev token and its file. The
/// example zone and pack stay (they grant nothing). Returns what was removed.
pub async fn remove_dev_credentials(
    store: &Store,
    data_dir: &Path,
) -> Result<DevCredentials, AdminError> {
    let found = dev_credentials(store, data_dir).await?;
    if found.published_key {
        store.delete_user(dev::USER_EMAIL).await?;
    }
    if let Some(id) = &found.token_id {
        store.delete_token(id).await?;
    }
    let file = data_dir.join(dev::TOKEN_FILE);
    match std::fs::remove_file(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(AdminError::Invalid(format!(
                "removing {}: {e}",
                file.display()
            )));
        }
    }
    Ok(found)
}

/// Approves a pack held for manual review: the brand check is lifted and, for e-mail
/// validation (which no machine can check), every host counts as validated, as if the
/// recipient had clicked the link. The workers then take the pack on at once.
pub async fn approve_pack(store: &Store, id: &str, now: i64) -> Result<Pack, AdminError> {
    use crate::model::{Input, Refusal, Rules};
    use crate::store::{Applied, apply_transition};
    let id = PackId::parse(id).map_err(|e| AdminError::Invalid(e.0))?;
    let pack = store
        .pack_by_id(&id)
        .await?
        .ok_or_else(|| AdminError::Invalid(format!("no certificate pack {}", id.as_str())))?;
    // Approval's rule needs no setting.
    let rules = Rules {
        issuance_timeout_secs: 1,
    };
    // A worker may write the pack meanwhile: `apply_transition` reads it again and
    // applies the approval to what is stored.
    match apply_transition(store, pack, &rules, now, |_| Some(Input::Approve)).await? {
        Applied::Saved { pack, .. } => Ok(pack),
        Applied::Refused(Refusal::NotPendingValidation { state })
        | Applied::Refused(Refusal::MethodFixed { state, .. })
        | Applied::Refused(Refusal::NotTimedOut { state }) => Err(AdminError::Invalid(format!(
            "pack {} is {}: only packs pending validation can be approved",
            id.as_str(),
            state.as_str()
        ))),
        Applied::Unchanged(_) | Applied::Contended => Err(AdminError::Store(StoreError::Conflict)),
        Applied::Gone => Err(AdminError::Invalid(format!(
            "no certificate pack {}",
            id.as_str()
        ))),
    }
}

/// Rejects a pack held for manual review: it is deleted (its quota freed), as a CA
/// refusing an order leaves nothing to validate.
pub async fn reject_pack(store: &Store, id: &str) -> Result<Pack, AdminError> {
    let id = PackId::parse(id).map_err(|e| AdminError::Invalid(e.0))?;
    let pack = store
        .pack_by_id(&id)
        .await?
        .ok_or_else(|| AdminError::Invalid(format!("no certificate pack {}", id.as_str())))?;
    use crate::clock::{Clock, SystemClock};
    let deleted = crate::webhooks::events::deleted(&pack, SystemClock.now());
    store
        .delete_pack_with_events(&pack.zone_id, &pack.id, &[deleted])
        .await?;
    Ok(pack)
}
