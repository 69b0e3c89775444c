//! Administration: zones, users, API tokens and manual review of packs. Used by the `zonecert` binary's admin
//! commands (directly on the store, safe while a server runs on the same database) and
//! by the zone endpoints.

use crate::model::{
    DcvMethod, Hostname, Pack, PackId, PackState, Permission, Token, User, Zone, ZoneId,
};
use crate::secrets;
use crate::store::{Store, StoreError};

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

/// Creates a zone named `name` (its apex), with a fresh id unless `id` is given.
pub async fn create_zone(
    store: &Store,
    name: &str,
    id: Option<&str>,
    now: i64,
) -> Result<Zone, AdminError> {
    let name = Hostname::parse(name).map_err(|e| AdminError::Invalid(e.0))?;
    if name.is_wildcard() {
        return Err(AdminError::Invalid(format!(
            "{name}: a zone name cannot be a wildcard"
        )));
    }
    let id = match id {
        Some(id) => ZoneId::parse(id).map_err(|e| AdminError::Invalid(e.0))?,
        None => ZoneId::generate(),
    };
    let zone = Zone {
        id,
        name,
        created_at: now,
    };
    store.insert_zone(&zone).await?;
    Ok(zone)
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
    /// The name of the token minted at each dev start (the previous one is revoked).
    pub const TOKEN_NAME: &str = "dev";
}

/// Seeds the documentation's identifiers if they are missing, and mints a fresh dev
/// token with SSL and zone read and write on every zone (revoking the previous one).
/// Returns the token's secret.
pub async fn seed_dev(
    store: &Store,
    dcv_suffix: impl Fn(&ZoneId) -> String,
    quota: u64,
    now: i64,
) -> Result<String, AdminError> {
    use crate::model::{CaChoice, DcvMethod, Pack, PackId};
    let zone_id = ZoneId::parse(dev::ZONE_ID).map_err(|e| AdminError::Invalid(e.0))?;
    if store.zone(&zone_id).await?.is_none() {
        let zone = create_zone(store, dev::ZONE_NAME, Some(dev::ZONE_ID), now).await?;
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
    store.delete_tokens_named(dev::TOKEN_NAME).await?;
    let all = [
        Permission::SslRead,
        Permission::SslWrite,
        Permission::ZoneRead,
        Permission::ZoneWrite,
    ]
    .map(|p| p.name().to_owned());
    Ok(create_token(store, dev::TOKEN_NAME, &all, &[], now)
        .await?
        .secret)
}

/// Approves a pack held for manual review: the brand check is lifted and, for e-mail
/// validation (which no machine can check), every host counts as validated, as if the
/// recipient had clicked the link. The workers then take the pack on at once.
pub async fn approve_pack(store: &Store, id: &str, now: i64) -> Result<Pack, AdminError> {
    let id = PackId::parse(id).map_err(|e| AdminError::Invalid(e.0))?;
    // A worker may write the pack meanwhile: read again and retry a few times.
    for _ in 0..5 {
        let mut pack = store
            .pack_by_id(&id)
            .await?
            .ok_or_else(|| AdminError::Invalid(format!("no certificate pack {}", id.as_str())))?;
        if pack.state != PackState::PendingValidation {
            return Err(AdminError::Invalid(format!(
                "pack {} is {}: only packs pending validation can be approved",
                id.as_str(),
                pack.state.as_str()
            )));
        }
        pack.brand_check = false;
        for host in &mut pack.hosts {
            if host.record.method() == DcvMethod::Email && host.check.verified != Some(true) {
                host.check.verified = Some(true);
                host.check.reason = None;
                host.check.last_checked_at = Some(now);
            }
            host.check.next_due_at = now;
        }
        pack.updated_at = now;
        match store.update_pack(&mut pack).await {
            Ok(()) => return Ok(pack),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AdminError::Store(StoreError::Conflict))
}

/// Rejects a pack held for manual review: it is deleted (its quota freed), as a CA
/// refusing an order leaves nothing to validate.
pub async fn reject_pack(store: &Store, id: &str) -> Result<Pack, AdminError> {
    let id = PackId::parse(id).map_err(|e| AdminError::Invalid(e.0))?;
    let pack = store
        .pack_by_id(&id)
        .await?
        .ok_or_else(|| AdminError::Invalid(format!("no certificate pack {}", id.as_str())))?;
    store.delete_pack(&pack.zone_id, &pack.id).await?;
    Ok(pack)
}
