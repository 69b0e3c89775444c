//! The server's configuration: what `zonecert serve` is told by flags, `ZONECERT_*`
//! environment variables and an optional TOML file (in that order of precedence; the
//! binary merges them, this module holds the result and the file's format).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::issuance::KeyType;
pub use crate::sched::LifecycleCpus;

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
    /// Run the lifecycle workers (DCV checks, issuance, renewal) in this process. Off in
    /// [`Config::new`], so a server embedded in a test never reaches out to the system's
    /// resolvers; `zonecert serve` turns it on (see its `--lifecycle`).
    pub lifecycle: bool,
    /// DNS resolvers DCV and CAA checks ask (`addr:port`); empty means the system's.
    pub dcv_resolvers: Vec<SocketAddr>,
    /// The port HTTP validation connects to (80).
    pub dcv_http_port: u16,
    /// Lets HTTP validation reach loopback and private addresses (tests, labs).
    pub dcv_allow_private_addresses: bool,
    /// Upper bound on one DCV or CAA check.
    pub dcv_timeout: Duration,
    /// How many checks run at once across all packs.
    pub check_concurrency: usize,
    /// How often the workers look for due work when nothing wakes them.
    pub poll_interval: Duration,
    /// How long a worker owns a claimed pack before another server may take it over
    /// (a crashed server's claims run again after this).
    pub lease: Duration,
    /// How long a validated pack may stay in `pending_issuance` and `pending_deployment`
    /// (issuance and deployment failing and being retried) before it is
    /// `issuance_timed_out` or `deployment_timed_out`, from where a PATCH restarts it.
    pub issuance_timeout: Duration,
    /// Where certificates and keys are written; `<data_dir>/certs` by default.
    pub deploy_dir: Option<PathBuf>,
    /// A command run after each deployment (program and arguments, no shell).
    pub deploy_hook: Option<Vec<String>>,
    /// The key algorithm of issued certificates.
    pub key_type: KeyType,
    /// Hosts containing one of these words (case-insensitive) are held for manual review
    /// (`brand_check`) until an operator approves or rejects the pack.
    pub brand_keywords: Vec<String>,
    /// The CPUs the lifecycle's threads (and the database's checkpointer) run on; by
    /// default all but one, which is left to requests (see [`crate::sched`]).
    pub lifecycle_cpus: LifecycleCpus,
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
            lifecycle: false,
            dcv_resolvers: Vec::new(),
            dcv_http_port: 80,
            dcv_allow_private_addresses: false,
            dcv_timeout: Duration::from_secs(5),
            check_concurrency: 64,
            poll_interval: Duration::from_secs(10),
            lease: Duration::from_secs(120),
            issuance_timeout: Duration::from_secs(24 * 3600),
            deploy_dir: None,
            deploy_hook: None,
            key_type: KeyType::EcdsaP256,
            brand_keywords: Vec::new(),
            lifecycle_cpus: LifecycleCpus::Auto,
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

    /// Where certificates and keys are deployed.
    pub fn deploy_dir(&self) -> PathBuf {
        self.deploy_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("certs"))
    }

    /// The first brand keyword one of `hosts` contains, if any.
    pub fn brand_keyword<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) -> Option<&str> {
        let hosts: Vec<String> = hosts.into_iter().map(str::to_ascii_lowercase).collect();
        self.brand_keywords
            .iter()
            .map(String::as_str)
            .filter(|k| !k.is_empty())
            .find(|k| {
                let k = k.to_ascii_lowercase();
                hosts.iter().any(|h| h.contains(&k))
            })
    }
}

/// Parses a key type: `ecdsa-p256` or `rsa-2048`.
pub fn parse_key_type(s: &str) -> Result<KeyType, String> {
    match s {
        "ecdsa-p256" => Ok(KeyType::EcdsaP256),
        "rsa-2048" => Ok(KeyType::Rsa2048),
        other => Err(format!(
            "key type {other:?}: expected `ecdsa-p256` or `rsa-2048`"
        )),
    }
}

/// Parses a comma-separated list of resolvers, `addr:port` each (`[v6]:port` for IPv6).
pub fn parse_resolvers(s: &str) -> Result<Vec<SocketAddr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.parse()
                .map_err(|_| format!("resolver {r:?}: expected ADDRESS:PORT"))
        })
        .collect()
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
    /// Run the lifecycle workers.
    pub lifecycle: Option<bool>,
    /// DCV resolvers, `addr:port` each.
    pub dcv_resolvers: Option<Vec<String>>,
    /// Port HTTP validation connects to.
    pub dcv_http_port: Option<u16>,
    /// Let HTTP validation reach private addresses.
    pub dcv_allow_private_addresses: Option<bool>,
    /// Checks running at once.
    pub check_concurrency: Option<usize>,
    /// Seconds between polls for due work.
    pub poll_interval_secs: Option<u64>,
    /// Seconds a server owns a claimed pack.
    pub lease_secs: Option<u64>,
    /// Seconds a validated pack may spend in issuance and deployment.
    pub issuance_timeout_secs: Option<u64>,
    /// Deploy directory.
    pub deploy_dir: Option<PathBuf>,
    /// Deploy hook: program and arguments.
    pub deploy_hook: Option<Vec<String>>,
    /// `ecdsa-p256` or `rsa-2048`.
    pub key_type: Option<String>,
    /// Brand-check keywords.
    pub brand_keywords: Option<Vec<String>>,
    /// `auto`, `all` or a CPU list (`1-3,5`).
    pub lifecycle_cpus: Option<String>,
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
        let ok: ConfigFile = toml::from_str(
            "quota_advanced = 5\nrate_limit = \"off\"\nlease_secs = 3\nissuance_timeout_secs = 60",
        )
        .unwrap();
        assert_eq!(ok.quota_advanced, Some(5));
        assert_eq!(ok.lease_secs, Some(3));
        assert_eq!(ok.issuance_timeout_secs, Some(60));
        assert!(toml::from_str::<ConfigFile>("quota = 5").is_err());
    }

    #[test]
    fn lifecycle_settings_parse() {
        assert_eq!(
            parse_resolvers("127.0.0.1:5353, [::1]:53").unwrap().len(),
            2
        );
        assert!(parse_resolvers("127.0.0.1").is_err());
        assert_eq!(parse_key_type("rsa-2048").unwrap(), KeyType::Rsa2048);
        assert!(parse_key_type("dsa").is_err());
        let mut c = Config::new("/tmp/x");
        c.brand_keywords = vec!["PayPal".into()];
        assert_eq!(
            c.brand_keyword(["www.paypal-login.example"]),
            Some("PayPal")
        );
        assert_eq!(c.brand_keyword(["example.com"]), None);
        assert_eq!(c.deploy_dir(), PathBuf::from("/tmp/x/certs"));
    }
}
