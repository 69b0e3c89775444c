//! Identifiers and names, each built only by parsing ("parse, don't validate").

use std::fmt;

/// Why a string is not a valid identifier or name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// `u8::is_ascii_hexdigit` in arithmetic alone, so that a loop over it vectorizes.
fn is_hex_digit(b: u8) -> bool {
    // `| 0x20` folds A-F onto a-f (and nothing else onto them).
    (b.wrapping_sub(b'0') < 10) | ((b | 0x20).wrapping_sub(b'a') < 6)
}

/// A zone id: 32 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZoneId(String);

impl ZoneId {
    /// Accepts exactly 32 hex characters; upper case is folded to lower case.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        // Every byte is checked, without an early exit, so the loop compiles to a few
        // vector instructions; `all` with `is_ascii_hexdigit` took a step of several
        // branches per character, about 1 % of a GET verification's CPU (`perf record`
        // under `bench/verification.sh`'s load).
        if s.len() == 32 && s.bytes().fold(true, |ok, b| ok & is_hex_digit(b)) {
            Ok(ZoneId(s.to_ascii_lowercase()))
        } else {
            Err(ParseError(format!(
                "zone id must be 32 hexadecimal characters, got {s:?}"
            )))
        }
    }

    /// A fresh random zone id.
    pub fn generate() -> Self {
        ZoneId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ZoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A certificate pack id: a UUID in its hyphenated form (36 characters).
///
/// The spec says maxLength 32 for the path parameter, yet Cloudflare's ids (and its
/// own examples) are 36-character UUIDs; both the hyphenated and the 32-character
/// simple form are accepted, and the hyphenated form is what is stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(String);

impl PackId {
    /// Parses a UUID (hyphenated or simple form).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.len() != 36 && s.len() != 32 {
            return Err(ParseError(format!(
                "certificate pack id must be a UUID, got {s:?}"
            )));
        }
        uuid::Uuid::try_parse(s)
            .map(|u| PackId(u.hyphenated().to_string()))
            .map_err(|_| ParseError(format!("certificate pack id must be a UUID, got {s:?}")))
    }

    /// A fresh random pack id.
    pub fn generate() -> Self {
        PackId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DNS name as a certificate host: lower case, without a trailing dot, LDH labels,
/// and at most one wildcard, as the whole leftmost label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hostname(String);

impl Hostname {
    /// Parses and normalises a host name (`*.Example.COM.` becomes `*.example.com`).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let bad = |why: &str| Err(ParseError(format!("{s:?} is not a valid host name: {why}")));
        if lower.is_empty() {
            return bad("it is empty");
        }
        if lower.len() > 253 {
            return bad("it is longer than 253 characters");
        }
        let labels: Vec<&str> = lower.split('.').collect();
        if labels.len() < 2 {
            return bad("it needs at least two labels");
        }
        for (i, label) in labels.iter().enumerate() {
            if *label == "*" && i == 0 {
                continue;
            }
            if label.is_empty() {
                return bad("it has an empty label");
            }
            if label.len() > 63 {
                return bad("a label is longer than 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return bad("only letters, digits, '-' and a leading '*.' are allowed");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return bad("a label starts or ends with '-'");
            }
        }
        if labels[0] == "*" && labels.len() < 3 {
            return bad("a wildcard needs at least two labels below it");
        }
        Ok(Hostname(lower))
    }

    /// Checks that a certificate authority could issue for this name, for names that come
    /// in as new zones or ordered hosts (names already stored are read with
    /// [`Hostname::parse`] alone, so a rule added here never makes stored data unreadable).
    /// Refused: IP addresses and names whose last label is numeric (no top-level domain
    /// is: `127.0.0.1`, `1.0.0.127`), labels that are not valid IDNA (`xn--` labels must
    /// decode and encode back to themselves), and public suffixes of the Public Suffix
    /// List (`co.uk`, `in-addr.arpa`, `github.io`), including a wildcard right below one.
    pub fn check_issuable(&self) -> Result<(), ParseError> {
        let name = self.base();
        let bad = |why: String| Err(ParseError(format!("{name:?} cannot be issued for: {why}")));
        let last = name.rsplit('.').next().unwrap_or(name);
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return bad("it is an IP address; certificates here are for domain names".into());
        }
        if last.bytes().all(|b| b.is_ascii_digit()) {
            return bad(format!(
                "its last label {last:?} is numeric, as in an IP address; no top-level domain is"
            ));
        }
        for label in name.split('.') {
            if label.len() >= 4 && label[..4].eq_ignore_ascii_case("xn--") {
                let (unicode, decoded) = idna::domain_to_unicode(label);
                let round_trip = idna::domain_to_ascii_strict(&unicode);
                if decoded.is_err() || round_trip.as_deref().ok() != Some(label) {
                    return bad(format!(
                        "the label {label:?} is not valid IDNA (punycode that does not decode \
                         to a valid name)"
                    ));
                }
            } else if label.len() >= 4 && label.as_bytes()[2..4] == *b"--" {
                return bad(format!(
                    "the label {label:?} has '--' in its third and fourth characters, which \
                     only IDNA ('xn--') labels may"
                ));
            }
        }
        if psl::suffix_str(name) == Some(name) {
            return bad(if self.is_wildcard() {
                format!("{name} is a public suffix: no one may hold a wildcard right below it")
            } else {
                "it is a public suffix (Public Suffix List): names are registered below it"
                    .to_owned()
            });
        }
        Ok(())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the name is a wildcard (`*.example.com`).
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// The name without its wildcard label: `*.example.com` -> `example.com`.
    pub fn base(&self) -> &str {
        self.0.strip_prefix("*.").unwrap_or(&self.0)
    }

    /// Whether the name is `apex` or below it.
    pub fn is_within(&self, apex: &Hostname) -> bool {
        let base = self.base();
        base == apex.as_str()
            || base
                .strip_suffix(apex.as_str())
                .is_some_and(|rest| rest.ends_with('.'))
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arithmetic_hex_digit_check_agrees_with_std_on_every_byte() {
        for b in 0..=u8::MAX {
            assert_eq!(is_hex_digit(b), b.is_ascii_hexdigit(), "byte {b:#04x}");
        }
    }

    #[test]
    fn zone_ids_are_32_hex() {
        assert!(ZoneId::parse("023e105f4ecef8ad9ca31a8372d0c353").is_ok());
        assert_eq!(
            ZoneId::parse("023E105F4ECEF8AD9CA31A8372D0C353")
                .unwrap()
                .as_str(),
            "023e105f4ecef8ad9ca31a8372d0c353"
        );
        assert!(ZoneId::parse("023e105f4ecef8ad9ca31a8372d0c35").is_err());
        assert!(ZoneId::parse("023e105f4ecef8ad9ca31a8372d0c35g").is_err());
        assert!(ZoneId::parse("").is_err());
    }

    #[test]
    fn pack_ids_are_uuids() {
        let id = PackId::parse("a77f8bd7-3b47-46b4-a6f1-75cf98109948").unwrap();
        assert_eq!(id.as_str(), "a77f8bd7-3b47-46b4-a6f1-75cf98109948");
        assert_eq!(
            PackId::parse("a77f8bd73b4746b4a6f175cf98109948").unwrap(),
            id
        );
        assert!(PackId::parse("not-a-uuid").is_err());
        assert!(PackId::parse("a77f8bd7-3b47-46b4-a6f1-75cf9810994z").is_err());
    }

    #[test]
    fn host_names_are_normalised_and_checked() {
        assert_eq!(
            Hostname::parse("WWW.Example.com.").unwrap().as_str(),
            "www.example.com"
        );
        assert!(Hostname::parse("*.example.com").unwrap().is_wildcard());
        for bad in [
            "", "com", "a..b", "*.com", "a.*.com", "-a.com", "a_b.com", "é.com", "*",
        ] {
            assert!(Hostname::parse(bad).is_err(), "{bad} should be refused");
        }
        let apex = Hostname::parse("example.com").unwrap();
        assert!(Hostname::parse("*.example.com").unwrap().is_within(&apex));
        for bad in [
            "127.0.0.1",
            "1.0.0.127",
            "10.1",
            "co.uk",
            "in-addr.arpa",
            "github.io",
            "*.co.uk",
            "xn--zz.example.com",
            "ab--cd.example.com",
        ] {
            let name = Hostname::parse(bad).unwrap();
            assert!(name.check_issuable().is_err(), "{bad} should be refused");
        }
        for good in [
            "example.com",
            "*.example.com",
            "example.co.uk",
            "xn--bcher-kva.example",
            "shop.test",
            "a-b.example.org",
            "123.example.com",
        ] {
            let name = Hostname::parse(good).unwrap();
            assert!(
                name.check_issuable().is_ok(),
                "{good}: {:?}",
                name.check_issuable()
            );
        }
        assert!(Hostname::parse("a.b.example.com").unwrap().is_within(&apex));
        assert!(!Hostname::parse("badexample.com").unwrap().is_within(&apex));
        assert!(!Hostname::parse("example.org").unwrap().is_within(&apex));
    }
}
