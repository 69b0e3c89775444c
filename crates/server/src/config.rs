//! The server's settings, each defined once: a field of [`Config`] is at the same time
//! the `--flag` of `zonecert serve` (dashes), its `ZONECERT_*` variable and its key in the
//! TOML file (underscores), and its doc line is the help text. Precedence: flags, then
//! variables, then the file ([`with_file_defaults`] makes the file's values the flags'
//! defaults), then the defaults written here.

use clap::builder::{OsStr, ValueParser};
use clap::{ArgAction, Args, Command, FromArgMatches};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::issuance::KeyType;
pub use crate::issuance::acme::{AcmeCaSettings, Eab};
use crate::model::CaChoice;
pub use crate::sched::{LifecycleCpus, RequestCpus};

/// Where the server keeps its data unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "zonecert-data";

/// Everything the server needs to run. Adding a setting is adding a field here with its
/// doc line and `#[arg(long, env = "ZONECERT_...")]`: the flag, the variable and the TOML
/// key follow from it.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Data directory: database, CA, deployed certificates.
    #[arg(long, env = "ZONECERT_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Database URL: `postgres://USER:PASSWORD@HOST:PORT/DB` (nodes sharing one
    /// PostgreSQL database) or `sqlite://PATH`; the embedded SQLite database in the data
    /// directory by default.
    #[arg(long, env = "ZONECERT_DATABASE")]
    pub database: Option<String>,
    /// Connections to PostgreSQL this node keeps at most (SQLite has no pool).
    #[arg(long, env = "ZONECERT_DATABASE_POOL", default_value = "16",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub database_pool: u16,
    /// Bring the database's schema up to this version's at start (nodes starting
    /// together migrate once). `false`: a database without it or at an older version
    /// stops the start instead, for installations that migrate in a step of their own
    /// (`zonecert db migrate`).
    #[arg(long, env = "ZONECERT_MIGRATE", default_value = "true", action = ArgAction::Set)]
    pub migrate: bool,
    /// The key-encryption key that seals certificates' private keys in the database: a
    /// file of 64 hex characters. `<data-dir>/secret.key` by default, created (mode
    /// 0600) on first start with SQLite; with PostgreSQL it is required, the same file
    /// on every node.
    #[arg(long, env = "ZONECERT_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// Seed the API documentation's example zone, pack and user, and print a token.
    #[arg(long, env = "ZONECERT_DEV")]
    pub dev: bool,
    /// Offer the test controls (`/_zonecert/v1/...`: clock, auto-validation, faults,
    /// reset) to tokens with the "zonecert Test Controls" group; `--dev` implies it.
    /// Never on a server others rely on: they move its clock and empty its database.
    #[arg(long, env = "ZONECERT_TEST_CONTROLS")]
    pub test_controls: bool,
    /// Test controls: every DCV check passes as if the records existed (CAA, issuance
    /// and deployment still run). Needs `--dev` or `--test-controls`.
    #[arg(long, env = "ZONECERT_DCV_AUTO_VALIDATE")]
    pub dcv_auto_validate: bool,
    /// Test controls: return the database to the documentation's seed state at start
    /// (as `zonecert dev reset`). Needs `--dev` or `--test-controls`.
    #[arg(long, env = "ZONECERT_FRESH")]
    pub fresh: bool,
    /// Requests per authenticated identity (failed authentications: per client address):
    /// `off`, `N` (per 5 minutes) or `N/SECONDS`.
    #[arg(long, env = "ZONECERT_RATE_LIMIT", default_value = "1200/300",
          value_parser = ValueParser::new(RateLimit::parse))]
    pub rate_limit: ::std::option::Option<RateLimit>,
    /// Advanced certificate packs a zone may hold.
    #[arg(long, env = "ZONECERT_QUOTA_ADVANCED", default_value = "100")]
    pub quota_advanced: u64,
    /// Shape of GET /ssl/verification: `per-host` or `live` (the live API's).
    #[arg(long, env = "ZONECERT_VERIFICATION_FORM", default_value = "per-host",
          value_parser = ValueParser::new(VerificationForm::parse))]
    pub verification_form: VerificationForm,
    /// Domain under which delegated (cname) DCV targets live:
    /// `<host>.<zone-dcv-id>.dcv.<service-domain>`.
    #[arg(
        long,
        env = "ZONECERT_SERVICE_DOMAIN",
        default_value = "zonecert.localhost"
    )]
    pub service_domain: String,
    /// Answer DNS (UDP and TCP) for `dcv.<service-domain>` on this address, `ADDR:PORT`:
    /// the TXT records of pending delegated (cname) ACME challenges, read from the store
    /// (off by default).
    #[arg(long, env = "ZONECERT_DNS_LISTEN",
          value_parser = ValueParser::new(parse_listen))]
    pub dns_listen: Option<SocketAddr>,
    /// Run the lifecycle workers (DCV checks, issuance, renewal); `serve --dev` without
    /// --dcv-resolvers leaves them off unless told (the seeded example.com cannot validate).
    // Embedded servers (`Config::new`) start with them off, so a test never reaches the
    // system's resolvers.
    #[arg(long, env = "ZONECERT_LIFECYCLE", default_value = "true", action = ArgAction::Set)]
    pub lifecycle: bool,
    /// DNS resolvers for DCV and CAA checks, `ADDRESS:PORT,...`; the system's by default.
    #[arg(long, env = "ZONECERT_DCV_RESOLVERS", value_delimiter = ',',
          value_parser = ValueParser::new(parse_resolver))]
    pub dcv_resolvers: Vec<SocketAddr>,
    /// Port HTTP validation connects to.
    #[arg(long, env = "ZONECERT_DCV_HTTP_PORT", default_value = "80",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub dcv_http_port: u16,
    /// Let HTTP validation connect to loopback and private addresses (tests, labs only).
    #[arg(long, env = "ZONECERT_DCV_ALLOW_PRIVATE_ADDRESSES")]
    pub dcv_allow_private_addresses: bool,
    /// How many DCV checks run at once across all packs.
    #[arg(long, env = "ZONECERT_CHECK_CONCURRENCY", default_value = "64",
          value_parser = ValueParser::new(parse_positive))]
    pub check_concurrency: usize,
    /// Time between looks for due work when nothing wakes the workers (`10s`, `2m`).
    #[arg(long, env = "ZONECERT_POLL_INTERVAL", default_value = "10s",
          value_parser = ValueParser::new(parse_duration))]
    pub poll_interval: Duration,
    /// How long a server owns a claimed pack (renewed while it works); a crashed server's
    /// claims are taken over after this.
    #[arg(long, env = "ZONECERT_LEASE", default_value = "2m",
          value_parser = ValueParser::new(parse_duration))]
    pub lease: Duration,
    /// How long a validated pack may spend in issuance and deployment (failures retried
    /// every 5 minutes) before it is `issuance_timed_out` or `deployment_timed_out`.
    #[arg(long, env = "ZONECERT_ISSUANCE_TIMEOUT", default_value = "24h",
          value_parser = ValueParser::new(parse_duration))]
    pub issuance_timeout: Duration,
    /// Where certificates and keys are written; `<data-dir>/certs` by default.
    #[arg(long, env = "ZONECERT_DEPLOY_DIR")]
    pub deploy_dir: Option<PathBuf>,
    /// How often this node brings its deploy directory up to date with the database's
    /// active certificates (those other nodes issued or renewed); `off` leaves it to
    /// what this node issues.
    #[arg(long, env = "ZONECERT_DEPLOY_SYNC", default_value = "10s",
          value_parser = ValueParser::new(parse_optional_duration))]
    pub deploy_sync: ::std::option::Option<Duration>,
    /// Command run after each deployment: program and arguments, split on whitespace (an
    /// array in the file), run without a shell.
    #[arg(long, env = "ZONECERT_DEPLOY_HOOK", default_value = "", hide_default_value = true,
          value_parser = ValueParser::new(parse_command))]
    pub deploy_hook: ::std::option::Option<Vec<String>>,
    /// Key type of issued certificates: `ecdsa-p256` or `rsa-2048`.
    #[arg(long, env = "ZONECERT_KEY_TYPE", default_value = "ecdsa-p256",
          value_parser = ValueParser::new(parse_key_type))]
    pub key_type: KeyType,
    /// Words that put a pack on hold for an operator's review (brand check), `a,b,...`.
    #[arg(long, env = "ZONECERT_BRAND_KEYWORDS", value_delimiter = ',',
          value_parser = ValueParser::new(parse_word))]
    pub brand_keywords: Vec<String>,
    /// CPUs of the lifecycle's threads: `auto` (with two CPUs or more, every CPU but the
    /// first, which is left to requests), `all`, or a list such as `1-3`.
    #[arg(long, env = "ZONECERT_LIFECYCLE_CPUS", default_value = "auto",
          value_parser = ValueParser::new(LifecycleCpus::parse))]
    pub lifecycle_cpus: LifecycleCpus,
    /// CPUs of the request threads: `all`, or a list such as `0` that keeps them apart
    /// from the lifecycle's CPUs and from other busy programs on the machine.
    #[arg(long, env = "ZONECERT_REQUEST_CPUS", default_value = "all",
          value_parser = ValueParser::new(RequestCpus::parse))]
    pub request_cpus: RequestCpus,
    /// Longest wait for a request head, from its first byte to its end (slowloris).
    #[arg(long, env = "ZONECERT_HEADER_READ_TIMEOUT", default_value = "10s",
          value_parser = ValueParser::new(parse_duration))]
    pub header_read_timeout: Duration,
    /// Longest wait for a request body to arrive (then 408), and for a client to take
    /// any part of a response.
    #[arg(long, env = "ZONECERT_BODY_READ_TIMEOUT", default_value = "30s",
          value_parser = ValueParser::new(parse_duration))]
    pub body_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    #[arg(long, env = "ZONECERT_IDLE_TIMEOUT", default_value = "60s",
          value_parser = ValueParser::new(parse_duration))]
    pub idle_timeout: Duration,
    /// Most connections open at once, a quarter of them from one client address; by
    /// default sized from the open-descriptor limit (at most 4096).
    #[arg(long, env = "ZONECERT_MAX_CONNECTIONS",
          value_parser = ValueParser::new(parse_positive))]
    pub max_connections: Option<usize>,
    /// How long shutdown (SIGTERM) lets requests in flight finish before it closes
    /// every connection.
    #[arg(long, env = "ZONECERT_SHUTDOWN_TIMEOUT", default_value = "10s",
          value_parser = ValueParser::new(parse_duration))]
    pub shutdown_timeout: Duration,
    /// Webhook deliveries: how long one attempt may take (connect, send, answer) before
    /// it counts as failed and is retried.
    #[arg(long, env = "ZONECERT_WEBHOOK_TIMEOUT", default_value = "10s",
          value_parser = ValueParser::new(parse_duration))]
    pub webhook_timeout: Duration,
    /// Webhook deliveries in flight per endpoint (a slow endpoint holds only its own).
    #[arg(long, env = "ZONECERT_WEBHOOK_CONCURRENCY", default_value = "16",
          value_parser = ValueParser::new(parse_positive))]
    pub webhook_concurrency: usize,
    /// How long a webhook delivery is retried (from when its event was written) before
    /// it is marked failed.
    #[arg(long, env = "ZONECERT_WEBHOOK_RETRY_FOR", default_value = "24h",
          value_parser = ValueParser::new(parse_duration))]
    pub webhook_retry_for: Duration,
    /// The longest wait between two attempts of a webhook delivery (the wait starts at
    /// 1 s and doubles, with jitter).
    #[arg(long, env = "ZONECERT_WEBHOOK_MAX_BACKOFF", default_value = "1h",
          value_parser = ValueParser::new(parse_duration))]
    pub webhook_max_backoff: Duration,
    /// ACME certificate authorities (`--acme NAME=DIRECTORY` and its per-CA options).
    #[command(flatten)]
    pub acme: AcmeConfig,
    /// Prometheus metrics (`--metrics`, `--metrics-listen`, `--metrics-per-zone`).
    #[command(flatten)]
    pub metrics: crate::metrics::MetricsConfig,
    /// Largest accepted request body in bytes.
    #[arg(skip = 1024 * 1024_usize)]
    pub max_body_bytes: usize,
    /// How long `retry=true` and the verification PATCH wait for the checks they asked
    /// for before answering with the state as it is.
    #[arg(skip = Duration::from_secs(5))]
    pub retry_wait: Duration,
    /// For this long after a `retry=true` asked for a pack's checks, later retries wait
    /// for those checks instead of asking again, so a storm of retries causes no more
    /// checks than one (zero: every retry rechecks).
    #[arg(skip = Duration::from_secs(5))]
    pub retry_coalesce: Duration,
    /// Upper bound on one DCV or CAA check.
    #[arg(skip = Duration::from_secs(5))]
    pub dcv_timeout: Duration,
    /// Upper bound on one request to an ACME CA (connecting: at most 10 s of it).
    #[arg(skip = Duration::from_secs(60))]
    pub acme_timeout: Duration,
}

/// The ACME settings, per certificate-authority name (`google`, `lets_encrypt`,
/// `ssl_com`). Each option is `NAME=VALUE` and may repeat; in the TOML file they are one
/// table per name, `[acme.lets_encrypt]` with the keys `directory`, `contact`,
/// `eab_key_id`, `eab_hmac_key`, `root`, `profiles` (`{ 90 = "classic" }`) and
/// `caa_domains`. A name without a directory is signed by the built-in CA.
#[derive(Debug, Clone, Default, Args)]
pub struct AcmeConfig {
    /// ACME directory for a certificate-authority name, `NAME=URL` (repeatable), e.g.
    /// `lets_encrypt=https://acme-v02.api.letsencrypt.org/directory`.
    #[arg(long = "acme", env = "ZONECERT_ACME", value_delimiter = ',',
          value_parser = ValueParser::new(parse_named))]
    pub directories: Vec<Named>,
    /// Contact e-mail of a CA's ACME account, `NAME=EMAIL`.
    #[arg(long = "acme-contact", env = "ZONECERT_ACME_CONTACT", value_delimiter = ',',
          value_parser = ValueParser::new(parse_named))]
    pub contacts: Vec<Named>,
    /// External Account Binding of a CA, `NAME=KEY_ID:HMAC_KEY` (the HMAC key in the
    /// base64url the CA gives).
    #[arg(long = "acme-eab", env = "ZONECERT_ACME_EAB", value_delimiter = ',',
          value_parser = ValueParser::new(parse_named))]
    pub eab: Vec<Named>,
    /// Extra trusted roots (PEM file) for a CA's ACME server TLS, `NAME=PATH`.
    #[arg(long = "acme-root", env = "ZONECERT_ACME_ROOT", value_delimiter = ',',
          value_parser = ValueParser::new(parse_named))]
    pub roots: Vec<Named>,
    /// ACME profile to order for a validity, `NAME=DAYS:PROFILE` (e.g.
    /// `lets_encrypt=90:tlsserver`; DAYS one of the name's `validity_days`).
    #[arg(long = "acme-profile", env = "ZONECERT_ACME_PROFILE", value_delimiter = ',',
          value_parser = ValueParser::new(parse_named))]
    pub profiles: Vec<Named>,
    /// Issuer domain names CAA records must allow for a CA, `NAME=DOMAIN` (repeatable;
    /// `letsencrypt.org`, `pki.goog`, `ssl.com` by default).
    #[arg(long = "acme-caa", env = "ZONECERT_ACME_CAA", value_delimiter = ',',
          value_parser = ValueParser::new(parse_named))]
    pub caa_domains: Vec<Named>,
    /// Revoke a deleted pack's certificate at the ACME CA that issued it (best effort: a
    /// failure is logged with the CA's reason; the deletion never waits for it).
    #[arg(long = "acme-revoke-on-delete", env = "ZONECERT_ACME_REVOKE_ON_DELETE")]
    pub revoke_on_delete: bool,
}

/// One `NAME=VALUE` of an ACME option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The certificate-authority name.
    pub ca: CaChoice,
    /// What follows `=`.
    pub value: String,
}

fn parse_named(s: &str) -> Result<Named, String> {
    let s = s.trim();
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))?;
    let ca = CaChoice::parse(name.trim()).ok_or_else(|| {
        format!("{s:?}: unknown certificate authority {name:?} (google, lets_encrypt, ssl_com)")
    })?;
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("{s:?}: no value after `=`"));
    }
    Ok(Named {
        ca,
        value: value.to_owned(),
    })
}

impl AcmeConfig {
    /// Whether `ca` is configured with an ACME directory (its packs' records come from
    /// the CA's order).
    pub fn orders_remotely(&self, ca: CaChoice) -> bool {
        self.directories.iter().any(|d| d.ca == ca)
    }

    /// The ACME settings of each configured name. Refuses an option for a name that has
    /// no directory (it would be silently ignored), two directories for one name, and
    /// malformed values.
    pub fn cas(&self) -> Result<Vec<AcmeCaSettings>, String> {
        let mut cas: Vec<AcmeCaSettings> = Vec::new();
        for d in &self.directories {
            if cas.iter().any(|c| c.ca == d.ca) {
                return Err(format!("--acme: two directories for {}", d.ca.as_str()));
            }
            if !(d.value.starts_with("https://") || d.value.starts_with("http://")) {
                return Err(format!(
                    "--acme {}={}: the directory must be an https:// URL",
                    d.ca.as_str(),
                    d.value
                ));
            }
            cas.push(AcmeCaSettings {
                ca: d.ca,
                directory: d.value.clone(),
                contact: None,
                eab: None,
                root_pem: None,
                profiles: Default::default(),
                caa_domains: Vec::new(),
            });
        }
        let find = |flag: &str, n: &Named| -> Result<usize, String> {
            cas.iter().position(|c| c.ca == n.ca).ok_or_else(|| {
                format!(
                    "--{flag} {}=...: {} has no ACME directory (--acme {}=URL)",
                    n.ca.as_str(),
                    n.ca.as_str(),
                    n.ca.as_str()
                )
            })
        };
        let mut contacts = Vec::new();
        for n in &self.contacts {
            contacts.push((find("acme-contact", n)?, n.value.clone()));
        }
        let mut eabs = Vec::new();
        for n in &self.eab {
            let i = find("acme-eab", n)?;
            let (kid, key) = n.value.split_once(':').ok_or_else(|| {
                format!("--acme-eab {}=...: expected KEY_ID:HMAC_KEY", n.ca.as_str())
            })?;
            let hmac = base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                key.trim().trim_end_matches('='),
            )
            .map_err(|e| {
                format!(
                    "--acme-eab {}=...: the HMAC key is not base64url: {e}",
                    n.ca.as_str()
                )
            })?;
            eabs.push((
                i,
                Eab {
                    key_id: kid.trim().to_owned(),
                    hmac_key: hmac,
                },
            ));
        }
        let mut roots = Vec::new();
        for n in &self.roots {
            roots.push((find("acme-root", n)?, PathBuf::from(&n.value)));
        }
        let mut profiles = Vec::new();
        for n in &self.profiles {
            let i = find("acme-profile", n)?;
            let parsed = n
                .value
                .split_once(':')
                .and_then(|(d, p)| Some((d.trim().parse::<u32>().ok()?, p.trim().to_owned())))
                .filter(|(_, p)| !p.is_empty())
                .ok_or_else(|| {
                    format!(
                        "--acme-profile {}={}: expected DAYS:PROFILE",
                        n.ca.as_str(),
                        n.value
                    )
                })?;
            // A validity no order of this name can ask for would map nothing, silently
            // (Let's Encrypt packs are 90 days, so `lets_encrypt=6:shortlived` never
            // applied).
            let allowed = n.ca.allowed_validity_days();
            if !allowed.contains(&parsed.0) {
                let days: Vec<String> = allowed.iter().map(u32::to_string).collect();
                return Err(format!(
                    "--acme-profile {}={}: {} packs are ordered for {} days (validity_days), \
                     so a profile for {} days would never be used",
                    n.ca.as_str(),
                    n.value,
                    n.ca.as_str(),
                    days.join(", "),
                    parsed.0
                ));
            }
            profiles.push((i, parsed));
        }
        let mut caa = Vec::new();
        for n in &self.caa_domains {
            caa.push((find("acme-caa", n)?, n.value.to_ascii_lowercase()));
        }
        for (i, v) in contacts {
            cas[i].contact = Some(v);
        }
        for (i, v) in eabs {
            cas[i].eab = Some(v);
        }
        for (i, v) in roots {
            cas[i].root_pem = Some(v);
        }
        for (i, (days, p)) in profiles {
            cas[i].profiles.insert(days, p);
        }
        for (i, v) in caa {
            cas[i].caa_domains.push(v);
        }
        for c in &mut cas {
            if c.caa_domains.is_empty() {
                c.caa_domains.push(c.ca.caa_identity().to_owned());
            }
        }
        Ok(cas)
    }
}

/// The `[acme.NAME]` tables of a configuration file as the flags' values: (flag, values).
fn acme_tables(table: &toml::Table, path: &Path) -> Result<Vec<(String, Vec<String>)>, String> {
    let err = |what: String| format!("{}: {what}", path.display());
    let mut flags: Vec<(String, Vec<String>)> = [
        "acme",
        "acme-contact",
        "acme-eab",
        "acme-root",
        "acme-profile",
        "acme-caa",
    ]
    .iter()
    .map(|f| ((*f).to_owned(), Vec::new()))
    .collect();
    let mut push = |flag: usize, v: String| flags[flag].1.push(v);
    for (name, value) in table {
        let toml::Value::Table(ca) = value else {
            return Err(err(format!("`acme.{name}`: a table, e.g. [acme.{name}]")));
        };
        let text = |key: &str| -> Result<Option<String>, String> {
            match ca.get(key) {
                None => Ok(None),
                Some(v) => scalar(v)
                    .map(Some)
                    .ok_or_else(|| err(format!("`acme.{name}.{key}`: a value"))),
            }
        };
        for key in ca.keys() {
            if ![
                "directory",
                "contact",
                "eab_key_id",
                "eab_hmac_key",
                "root",
                "profiles",
                "caa_domains",
            ]
            .contains(&key.as_str())
            {
                return Err(err(format!("unknown key `acme.{name}.{key}`")));
            }
        }
        let directory = text("directory")?
            .ok_or_else(|| err(format!("`acme.{name}`: `directory` is required")))?;
        push(0, format!("{name}={directory}"));
        if let Some(c) = text("contact")? {
            push(1, format!("{name}={c}"));
        }
        match (text("eab_key_id")?, text("eab_hmac_key")?) {
            (Some(k), Some(h)) => push(2, format!("{name}={k}:{h}")),
            (None, None) => {}
            _ => {
                return Err(err(format!(
                    "`acme.{name}`: eab_key_id and eab_hmac_key go together"
                )));
            }
        }
        if let Some(r) = text("root")? {
            push(3, format!("{name}={r}"));
        }
        match ca.get("profiles") {
            None => {}
            Some(toml::Value::Table(p)) => {
                for (days, profile) in p {
                    let profile = scalar(profile)
                        .ok_or_else(|| err(format!("`acme.{name}.profiles.{days}`: a name")))?;
                    push(4, format!("{name}={days}:{profile}"));
                }
            }
            Some(_) => {
                return Err(err(format!(
                    "`acme.{name}.profiles`: a table of days to profile, {{ 90 = \"classic\" }}"
                )));
            }
        }
        match ca.get("caa_domains") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for item in items {
                    let d = scalar(item)
                        .ok_or_else(|| err(format!("`acme.{name}.caa_domains`: names")))?;
                    push(5, format!("{name}={d}"));
                }
            }
            Some(other) => {
                let d = scalar(other)
                    .ok_or_else(|| err(format!("`acme.{name}.caa_domains`: names")))?;
                push(5, format!("{name}={d}"));
            }
        }
    }
    Ok(flags.into_iter().filter(|(_, v)| !v.is_empty()).collect())
}

impl Config {
    /// Whether the test controls are offered (`--test-controls`, or `--dev`).
    pub fn test_controls_enabled(&self) -> bool {
        self.test_controls || self.dev
    }

    /// Refuses settings that only mean something with the test controls on, so a
    /// production server never runs with checks that pass by themselves.
    pub fn check_test_controls(&self) -> Result<(), String> {
        if self.test_controls_enabled() {
            return Ok(());
        }
        for (given, flag) in [
            (self.dcv_auto_validate, "--dcv-auto-validate"),
            (self.fresh, "--fresh"),
        ] {
            if given {
                return Err(format!(
                    "{flag} is a test control: it needs --dev or --test-controls"
                ));
            }
        }
        Ok(())
    }

    /// The defaults, keeping data in `data_dir`, with the lifecycle workers off (an
    /// embedded server starts them only when told, see [`Config::lifecycle`]). The
    /// defaults are the ones the flags declare; no `ZONECERT_*` variable is read.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let command = Config::augment_args(Command::new("zonecert")).mut_args(|a| a.env(None));
        // The declared defaults parse (a unit test checks it): nothing here comes from input.
        #[allow(clippy::expect_used)]
        let mut config = command
            .try_get_matches_from(["zonecert"])
            .and_then(|m| Config::from_arg_matches(&m))
            .expect("the declared defaults parse");
        config.data_dir = data_dir.into();
        config.lifecycle = false;
        config
    }
}

/// Makes the TOML file at `path` the defaults of `command`'s arguments, so that flags and
/// `ZONECERT_*` variables still win over it. A key is an argument's name with underscores
/// (`poll_interval = "10s"`); a list takes an array or a comma-separated string; an
/// unknown key is an error, so a typo does not silently fall back to a default (`config`
/// itself is not a key).
/// Returns the command and the keys the file set.
pub fn with_file_defaults(command: Command, path: &Path) -> Result<(Command, Vec<String>), String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut defaults = Vec::new();
    for (key, value) in &table {
        if let ("acme", toml::Value::Table(acme)) = (key.as_str(), value) {
            defaults.extend(acme_tables(acme, path)?);
            continue;
        }
        let flag = key.replace('_', "-");
        let Some(arg) = command.get_arguments().find(|a| {
            a.get_long() == Some(flag.as_str())
                && (a.get_action().takes_values() || matches!(a.get_action(), ArgAction::SetTrue))
                && flag != "config"
        }) else {
            return Err(format!("{}: unknown key `{key}`", path.display()));
        };
        let delimiter = arg.get_value_delimiter();
        let values: Vec<String> = match value {
            toml::Value::Array(items) => {
                let words = items
                    .iter()
                    .map(scalar)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("{}: `{key}`: a list of values", path.display()))?;
                match delimiter {
                    Some(_) => words,
                    // A one-value setting given as an array (the deploy hook's words).
                    None => vec![words.join(" ")],
                }
            }
            other => {
                let one = scalar(other)
                    .ok_or_else(|| format!("{}: `{key}`: a value, not a table", path.display()))?;
                match delimiter {
                    Some(d) => one.split(d).map(|v| v.trim().to_owned()).collect(),
                    None => vec![one],
                }
            }
        };
        defaults.push((flag, values));
    }
    let keys = table.keys().cloned().collect();
    Ok((apply_defaults(command, defaults), keys))
}

/// Like [`with_file_defaults`] for a command that has only the ACME options (`zonecert ca
/// list`): the file's `[acme.NAME]` tables become their defaults, other keys are the
/// server's and are left alone.
pub fn with_acme_file_defaults(command: Command, path: &Path) -> Result<Command, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let defaults = match table.get("acme") {
        Some(toml::Value::Table(acme)) => acme_tables(acme, path)?,
        Some(_) => return Err(format!("{}: `acme`: tables [acme.NAME]", path.display())),
        None => Vec::new(),
    };
    Ok(apply_defaults(command, defaults))
}

/// Makes `values` the defaults of each named flag.
fn apply_defaults(command: Command, defaults: Vec<(String, Vec<String>)>) -> Command {
    defaults
        .into_iter()
        .fold(command, |command, (flag, values)| {
            command.mut_args(|a| {
                if a.get_long() == Some(flag.as_str()) {
                    a.default_values(values.iter().map(|v| OsStr::from(v.clone())))
                } else {
                    a
                }
            })
        })
}

/// A TOML scalar as the text a flag would take.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// Parses a duration in human form (`10s`, `2m`, `1h 30m`); a bare number is seconds.
/// Zero is refused: every duration setting is a period or a limit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("duration {s:?}: {e} (expected e.g. `10s`, `2m`, `24h`)"))?,
    };
    if d.is_zero() {
        return Err(format!("duration {s:?}: must be more than zero"));
    }
    Ok(d)
}

/// [`parse_duration`], or `off` (none).
fn parse_optional_duration(s: &str) -> Result<Option<Duration>, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_duration(s).map(Some)
}

/// Parses a count of at least 1.
fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?}: expected a whole number of at least 1")),
    }
}

/// One word of a list, trimmed (`a, b` lists the same words as `a,b`).
fn parse_word(s: &str) -> Result<String, String> {
    Ok(s.trim().to_owned())
}

/// A command line split on whitespace: program and arguments, no shell; none when empty.
fn parse_command(s: &str) -> Result<Option<Vec<String>>, String> {
    let argv: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
    Ok((!argv.is_empty()).then_some(argv))
}

/// Parses one resolver, `addr:port` (`[v6]:port` for IPv6).
fn parse_resolver(s: &str) -> Result<SocketAddr, String> {
    let r = s.trim();
    r.parse()
        .map_err(|_| format!("resolver {r:?}: expected ADDRESS:PORT"))
}

/// Parses a listening address, `ADDR:PORT` (`[v6]:port` for IPv6).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let r = s.trim();
    r.parse()
        .map_err(|_| format!("{r:?}: expected ADDRESS:PORT, e.g. 0.0.0.0:53"))
}

impl Config {
    /// Where delegated (cname) DCV records of a zone point:
    /// `<zone-dcv-id>.dcv.<service_domain>`, the zone-dcv-id being the zone id's first
    /// 16 characters.
    pub fn dcv_suffix(&self, zone: &crate::model::ZoneId) -> String {
        let short = zone.as_str().get(..16).unwrap_or(zone.as_str());
        format!("{short}.dcv.{}", self.service_domain)
    }

    /// The settings the model's pack transitions depend on.
    pub fn transition_rules(&self) -> crate::model::Rules {
        crate::model::Rules {
            issuance_timeout_secs: i64::try_from(self.issuance_timeout.as_secs())
                .unwrap_or(i64::MAX)
                .max(1),
        }
    }

    /// The key-encryption key's file (see [`Config::secret_key_file`]).
    pub fn secret_key_path(&self) -> PathBuf {
        self.secret_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secret.key"))
    }

    /// The key-encryption key: read from its file; on SQLite created when missing, on
    /// PostgreSQL (`shared`) required and never created (every node needs the same).
    pub fn load_kek(&self, shared: bool) -> Result<crate::keys::Kek, crate::keys::KeyError> {
        let path = self.secret_key_path();
        match (shared, &self.secret_key_file) {
            (true, None) => Err(crate::keys::KeyError::File {
                path: path.display().to_string(),
                error: "a PostgreSQL database needs --secret-key-file (ZONECERT_SECRET_KEY_FILE): \
                        the same key-encryption key on every node (`openssl rand -hex 32`)"
                    .into(),
            }),
            (true, Some(_)) => crate::keys::Kek::load(&path),
            (false, _) => crate::keys::Kek::load_or_create(&path),
        }
    }

    /// The deploy hook as a command, if one is configured.
    pub fn deploy_hook_command(&self) -> Option<crate::issuance::HookCommand> {
        let (program, args) = self.deploy_hook.as_ref()?.split_first()?;
        Some(crate::issuance::HookCommand {
            program: program.into(),
            args: args.to_vec(),
            timeout: Duration::from_secs(60),
        })
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
