//! Who is calling and what they may do: users, API tokens, permission groups.

use super::ids::ZoneId;
use std::sync::Arc;

/// A token permission group relevant to zonecert (Cloudflare's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// "SSL and Certificates Read".
    SslRead,
    /// "SSL and Certificates Write".
    SslWrite,
    /// "Access: Mutual TLS Certificates Read" (reads the verification view).
    MtlsRead,
    /// "Access: Mutual TLS Certificates Write" (reads the verification view).
    MtlsWrite,
    /// "Zone Read".
    ZoneRead,
    /// "Zone Write".
    ZoneWrite,
    /// "zonecert Test Controls": zonecert's own group, for the test controls
    /// (`/_zonecert/v1/...`: clock, auto-validation, faults, reset), which a server
    /// offers only under `--dev` or `--test-controls`.
    TestControls,
}

impl Permission {
    /// Every group, in the order they are listed to users.
    pub const ALL: [Permission; 7] = [
        Permission::SslRead,
        Permission::SslWrite,
        Permission::MtlsRead,
        Permission::MtlsWrite,
        Permission::ZoneRead,
        Permission::ZoneWrite,
        Permission::TestControls,
    ];

    /// Cloudflare's name of the group.
    pub fn name(self) -> &'static str {
        match self {
            Permission::SslRead => "SSL and Certificates Read",
            Permission::SslWrite => "SSL and Certificates Write",
            Permission::MtlsRead => "Access: Mutual TLS Certificates Read",
            Permission::MtlsWrite => "Access: Mutual TLS Certificates Write",
            Permission::ZoneRead => "Zone Read",
            Permission::ZoneWrite => "Zone Write",
            Permission::TestControls => "zonecert Test Controls",
        }
    }

    /// Parses a group's name (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
    }
}

/// What an endpoint needs: any one of its groups is enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// GET verification: any SSL or mTLS group (the spec's `x-api-token-group`).
    ReadVerification,
    /// Reading packs and quota: SSL read or write.
    ReadSsl,
    /// Ordering, editing, deleting packs and editing verification: SSL write.
    WriteSsl,
    /// Reading zones: any group on the zone.
    ReadZone,
    /// Creating and deleting zones: Zone Write.
    WriteZone,
    /// The test controls: their own group only, so that no SSL or zone token (a CI
    /// job's, say) can move a shared server's clock or reset its database.
    TestControls,
}

impl Need {
    /// The groups any one of which satisfies the need.
    pub fn groups(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Need::ReadVerification => &[SslRead, SslWrite, MtlsRead, MtlsWrite],
            Need::ReadSsl => &[SslRead, SslWrite],
            Need::WriteSsl => &[SslWrite],
            Need::ReadZone => &[ZoneRead, ZoneWrite, SslRead, SslWrite, MtlsRead, MtlsWrite],
            Need::WriteZone => &[ZoneWrite],
            Need::TestControls => &[TestControls],
        }
    }
}

/// A user with a global API key (the legacy scheme): full access to every zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// 32 hex characters.
    pub id: String,
    /// The login e-mail, lower case.
    pub email: String,
    /// SHA-256 of the global key; the key itself is never stored.
    pub key_hash: [u8; 32],
    /// Unix seconds.
    pub created_at: i64,
}

/// An API token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// 32 hex characters.
    pub id: String,
    /// A label for people.
    pub name: String,
    /// SHA-256 of the secret; the secret itself is never stored.
    pub secret_hash: [u8; 32],
    /// The groups granted.
    pub permissions: Vec<Permission>,
    /// `None`: every zone; otherwise only these.
    pub zones: Option<Vec<ZoneId>>,
    /// Unix seconds.
    pub created_at: i64,
}

/// The authenticated caller of a request. Shared with the store's read cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A user authenticated by e-mail and global key.
    User(Arc<User>),
    /// An API token.
    Token(Arc<Token>),
}

impl Principal {
    /// Whether the caller holds one of the groups `need` asks for.
    pub fn has(&self, need: Need) -> bool {
        match self {
            Principal::User(_) => true,
            Principal::Token(t) => need.groups().iter().any(|g| t.permissions.contains(g)),
        }
    }

    /// Whether the caller may act on `zone`.
    pub fn covers_zone(&self, zone: &ZoneId) -> bool {
        match self {
            Principal::User(_) => true,
            Principal::Token(t) => t.zones.as_ref().is_none_or(|zs| zs.contains(zone)),
        }
    }

    /// Whether the caller may create zones: a user, or a token not limited to some
    /// zones. A token scoped to zone A acts on A only; letting it create other zones
    /// would let it take names it was never given (their owners then meet 1061).
    pub fn may_create_zones(&self) -> bool {
        match self {
            Principal::User(_) => true,
            Principal::Token(t) => t.zones.is_none(),
        }
    }

    /// A stable key for rate limiting: one bucket per credential.
    pub fn rate_key(&self) -> String {
        match self {
            Principal::User(u) => format!("user:{}", u.id),
            Principal::Token(t) => format!("token:{}", t.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(perms: Vec<Permission>, zones: Option<Vec<ZoneId>>) -> Principal {
        Principal::Token(Arc::new(Token {
            id: "t".into(),
            name: "t".into(),
            secret_hash: [0; 32],
            permissions: perms,
            zones,
            created_at: 0,
        }))
    }

    #[test]
    fn read_groups_read_but_do_not_write() {
        let t = token(vec![Permission::SslRead], None);
        assert!(t.has(Need::ReadVerification));
        assert!(t.has(Need::ReadSsl));
        assert!(!t.has(Need::WriteSsl));
        let m = token(vec![Permission::MtlsRead], None);
        assert!(m.has(Need::ReadVerification));
        assert!(!m.has(Need::ReadSsl));
    }

    #[test]
    fn zone_scope_is_enforced() {
        let a = ZoneId::parse("023e105f4ecef8ad9ca31a8372d0c353").unwrap();
        let b = ZoneId::parse("123e105f4ecef8ad9ca31a8372d0c353").unwrap();
        let t = token(vec![Permission::SslRead], Some(vec![a.clone()]));
        assert!(t.covers_zone(&a));
        assert!(!t.covers_zone(&b));
        assert!(!t.may_create_zones(), "a scoped token creates no zones");
        assert!(token(vec![Permission::ZoneWrite], None).may_create_zones());
    }

    #[test]
    fn group_names_parse() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.name()), Some(p));
        }
        assert_eq!(
            Permission::parse("ssl and certificates write"),
            Some(Permission::SslWrite)
        );
        assert_eq!(Permission::parse("nope"), None);
    }

    #[test]
    fn only_the_test_controls_group_opens_the_test_controls() {
        let ssl = token(
            vec![
                Permission::SslWrite,
                Permission::ZoneWrite,
                Permission::MtlsWrite,
            ],
            None,
        );
        assert!(!ssl.has(Need::TestControls));
        let controls = token(vec![Permission::TestControls], None);
        assert!(controls.has(Need::TestControls));
        assert!(!controls.has(Need::ReadSsl), "and nothing else");
    }
}
