//! The server's configuration: what `zonecert serve` is told by flags, `ZONECERT_*`
//! environment variables and an optional TOML file (in that order of precedence; the
//! binary merges them, this module holds the result and the file's format).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the SQLite database, the CA and deployed certificates live.
    pub data_dir: PathBuf,
    /// A database URL overriding the embedded database in `data_dir`.
    pub database: Option<String>,
    /// Seed the documentation's example identifiers and print a dev token.
    pub dev: bool,
    /// Per-credential request budget; `None` turns rate limiting off.
    pub rate_limit: Option<RateLimit>,
    /// How many advanced certificate packs a zone may hold.
    pub quota_advanced: u64,
    /// The shape of `GET /ssl/verification` items.
    pub verification_form: VerificationForm,
    /// The domain under which delegated (cname) DCV targets live:
    /// `<host>.<zone-dcv-id>.dcv.<service_domain>`.
    pub service_domain: String,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// How long `retry=true` and the verification PATCH wait for the checks they
    /// asked for before answering with the state as it is.
    pub retry_wait: Duration,
}

impl Config {
    /// The defaults, keeping data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            database: None,
            dev: false,
            rate_limit: Some(RateLimit::CLOUDFLARE),
            quota_advanced: 100,
            verification_form: VerificationForm::PerHost,
            service_domain: "zonecert.localhost".into(),
            max_body_bytes: 1024 * 1024,
            retry_wait: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Where delegated (cname) DCV records of a zone point:
    /// `<zone-dcv-id>.dcv.<service_domain>`, the zone-dcv-id being the zone id's first
    /// 16 characters.
    pub fn dcv_suffix(&self, zone: &crate::model::ZoneId) -> String {
        let short = zone.as_str().get(..16).unwrap_or(zone.as_str());
        format!("{short}.dcv.{}", self.service_domain)
    }
}

/// A budget of requests over a window, refilled continuously (a token bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub requests: u32,
    /// The window.
    pub window: Duration,
}

impl RateLimit {
    /// Cloudflare's limit: 1,200 requests per 5 minutes per credential.
    pub const CLOUDFLARE: RateLimit = RateLimit {
        requests: 1200,
        window: Duration::from_secs(300),
    };

    /// Parses `off`, `N/SECONDS` (`1200/300`) or `N` (per 5 minutes).
    pub fn parse(s: &str) -> Result<Option<RateLimit>, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") || s == "0" {
            return Ok(None);
        }
        let (n, secs) = match s.split_once('/') {
            Some((n, secs)) => (n, secs),
            None => (s, "300"),
        };
        let requests: u32 = n
            .parse()
            .map_err(|_| format!("rate limit {s:?}: expected `off`, `N` or `N/SECONDS`"))?;
        let secs: u64 = secs
            .trim_end_matches('s')
            .parse()
            .map_err(|_| format!("rate limit {s:?}: expected `off`, `N` or `N/SECONDS`"))?;
        if requests == 0 || secs == 0 {
            return Err(format!("rate limit {s:?}: both numbers must be positive"));
        }
        Ok(Some(RateLimit {
            requests,
            window: Duration::from_secs(secs),
        }))
    }
}

/// The shape of the verification view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerificationForm {
    /// One item per (pack, host), `verification_info` an object carrying the spec's
    /// `record_name`/`record_target` and the real record (the default: valid for the
    /// official SDKs' strict schemas).
    PerHost,
    /// One item per pack, `verification_info` an array of records with `status`, as
    /// the live API answers.
    Live,
}

impl VerificationForm {
    /// Parses `per-host` or `live`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "per-host" => Ok(VerificationForm::PerHost),
            "live" => Ok(VerificationForm::Live),
            other => Err(format!(
                "verification form {other:?}: expected `per-host` or `live`"
            )),
        }
    }
}

/// The TOML configuration file. Every key is optional; unknown keys are an error so
/// that a typo does not silently fall back to a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Database URL.
    pub database: Option<String>,
    /// Dev mode.
    pub dev: Option<bool>,
    /// `off`, `N` or `N/SECONDS`.
    pub rate_limit: Option<String>,
    /// Advanced packs per zone.
    pub quota_advanced: Option<u64>,
    /// `per-host` or `live`.
    pub verification_form: Option<VerificationForm>,
    /// Delegated DCV domain.
    pub service_domain: Option<String>,
}

impl ConfigFile {
    /// Reads and parses a TOML file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse() {
        assert_eq!(RateLimit::parse("off").unwrap(), None);
        assert_eq!(
            RateLimit::parse("1200/300").unwrap(),
            Some(RateLimit::CLOUDFLARE)
        );
        assert_eq!(
            RateLimit::parse("1200").unwrap(),
            Some(RateLimit::CLOUDFLARE)
        );
        assert!(RateLimit::parse("x/1").is_err());
        assert!(RateLimit::parse("5/0").is_err());
    }

    #[test]
    fn config_files_refuse_unknown_keys() {
        let ok: ConfigFile = toml::from_str("quota_advanced = 5\nrate_limit = \"off\"").unwrap();
        assert_eq!(ok.quota_advanced, Some(5));
        assert!(toml::from_str::<ConfigFile>("quota = 5").is_err());
    }
}
