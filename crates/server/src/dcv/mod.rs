//! Domain-control validation: checks that a DNS record or an HTTP resource holds what the
//! certificate lifecycle published, and that CAA allows the CA, before the CA is asked to
//! validate or sign.
//!
//! Every check looks at the world as it is now (no answer is cached between checks), through the
//! configured resolvers, and reports a failure with a reason a person can act on. The module
//! knows nothing of packs or stores: it takes names and values and returns a [`CheckOutcome`].

pub(crate) mod address;
mod caa;
pub use caa::CaaRequest;
mod dns;
mod http;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::rr::{RData, RecordType};

use dns::{Dns, LookupFailure};

/// How checks reach the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcvConfig {
    /// DNS resolvers (address and port) asked over UDP, with TCP for truncated answers. Empty
    /// means the system's (`/etc/resolv.conf`).
    pub resolvers: Vec<SocketAddr>,
    /// The port HTTP validation starts on and that `http://` redirects use by default (80).
    pub http_port: u16,
    /// The port `https://` redirects use by default (443).
    pub https_port: u16,
    /// Lets HTTP validation connect to loopback, private and reserved addresses (tests only).
    pub allow_private_addresses: bool,
    /// Upper bound on one whole check (all its DNS queries, connections and redirects).
    pub timeout: Duration,
}

impl Default for DcvConfig {
    fn default() -> Self {
        DcvConfig {
            resolvers: Vec::new(),
            http_port: 80,
            https_port: 443,
            allow_private_addresses: false,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why a [`Validator`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DcvError {
    /// The system resolver configuration could not be read (only when no resolver is configured).
    #[error("cannot read the system DNS configuration: {0}")]
    SystemResolvers(String),
    /// The resolver or the TLS client could not be set up.
    #[error("cannot set up domain-control validation: {0}")]
    Setup(String),
    /// A configuration value is unusable.
    #[error("invalid DCV configuration: {0}")]
    InvalidConfig(&'static str),
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The record or resource is as expected.
    Passed,
    /// It is not; the reason says what was found and where, for the person fixing it.
    Failed(String),
}

impl CheckOutcome {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        matches!(self, CheckOutcome::Passed)
    }

    fn from_result(result: Result<(), String>) -> CheckOutcome {
        match result {
            Ok(()) => CheckOutcome::Passed,
            Err(reason) => CheckOutcome::Failed(reason),
        }
    }
}

impl fmt::Display for CheckOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckOutcome::Passed => f.write_str("passed"),
            CheckOutcome::Failed(reason) => f.write_str(reason),
        }
    }
}

/// Runs DCV and CAA checks. Cheap to clone and share between tasks; build one per process.
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
    /// Set by [`Validator::sharing_answers`].
    shared: Option<Arc<dns::SharedAnswers>>,
}

struct Inner {
    config: DcvConfig,
    dns: Dns,
    https: tokio_rustls::TlsConnector,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Longest list of unexpected TXT values quoted back in a failure.
const QUOTED_VALUES: usize = 4;

impl Validator {
    /// Sets up the resolver and the HTTP client once.
    ///
    /// Must be called inside a Tokio runtime.
    pub fn new(config: DcvConfig) -> Result<Self, DcvError> {
        if config.timeout.is_zero() {
            return Err(DcvError::InvalidConfig("timeout must be more than zero"));
        }
        if config.http_port == 0 || config.https_port == 0 {
            return Err(DcvError::InvalidConfig(
                "http_port and https_port must not be 0",
            ));
        }
        let dns = Dns::new(&config)?;
        let https = http::tls_connector()?;
        Ok(Validator {
            inner: Arc::new(Inner { config, dns, https }),
            shared: None,
        })
    }

    /// A validator whose DNS lookups share their answers: identical lookups of the checks
    /// made through it (and its clones) go out once. Meant for the checks of one pack,
    /// which start together: an apex and its wildcard share a TXT name, and every host
    /// of a pack shares the CAA names above it. Nothing is kept past those checks.
    pub fn sharing_answers(&self) -> Validator {
        Validator {
            inner: Arc::clone(&self.inner),
            shared: Some(Arc::default()),
        }
    }

    /// A DNS lookup, shared as [`Validator::sharing_answers`] says.
    async fn lookup(&self, name: &str, rtype: RecordType) -> dns::Answer {
        match &self.shared {
            Some(shared) => shared.lookup(&self.inner.dns, name, rtype).await,
            None => self.inner.dns.lookup(name, rtype).await,
        }
    }

    /// The configuration this validator was built with.
    pub fn config(&self) -> &DcvConfig {
        &self.inner.config
    }

    /// Passes when one of the TXT records at `name` (following CNAMEs, so a delegated
    /// `_acme-challenge` name works) equals `expected`. A record split into several
    /// character-strings counts as their concatenation.
    pub async fn check_txt(&self, name: &str, expected: &str) -> CheckOutcome {
        CheckOutcome::from_result(self.txt(name, expected).await)
    }

    async fn txt(&self, name: &str, expected: &str) -> Result<(), String> {
        let shown = dns::display_name(name);
        let values = self.txt_values(name).await?;
        if values.iter().any(|v| v.as_bytes() == expected.as_bytes()) {
            return Ok(());
        }
        let quoted: Vec<String> = values
            .iter()
            .take(QUOTED_VALUES)
            .map(|v| quote(v))
            .collect();
        let more = if values.len() > QUOTED_VALUES {
            ", ..."
        } else {
            ""
        };
        Err(match values.len() {
            1 => format!(
                "TXT {shown} has 1 value, which does not match (found {}{more})",
                quoted.join(", ")
            ),
            n => format!(
                "TXT {shown} has {n} values, none matches (found {}{more})",
                quoted.join(", ")
            ),
        })
    }

    /// The TXT values at `name`, each the concatenation of its character-strings.
    async fn txt_values(&self, name: &str) -> Result<Vec<String>, String> {
        let shown = dns::display_name(name);
        let timeout = self.inner.config.timeout;
        let records = match self.lookup(name, RecordType::TXT).await {
            Ok(records) => records,
            Err(failure) if failure.is_absent() => {
                return Err(self.explain_absent_txt(name, &failure).await);
            }
            Err(failure) => return Err(failure.describe(RecordType::TXT, &shown, timeout)),
        };
        let values: Vec<String> = records
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect();
        if values.is_empty() {
            return Err(self.explain_absent_txt(name, &LookupFailure::NoData).await);
        }
        Ok(values)
    }

    /// Says there is no TXT at `name`, naming the alias target when `name` is a CNAME: a person
    /// who delegated the name needs to know the record is missing at the other end.
    async fn explain_absent_txt(&self, name: &str, failure: &LookupFailure) -> String {
        let shown = dns::display_name(name);
        let timeout = self.inner.config.timeout;
        let source = dns::parse_name(name).ok();
        let alias = match self.lookup(name, RecordType::CNAME).await {
            Ok(records) => records.iter().find_map(|r| match &r.data {
                RData::CNAME(cname) if Some(&r.name) == source.as_ref() => Some(cname.0.clone()),
                _ => None,
            }),
            Err(_) => None,
        };
        match alias {
            Some(target) => {
                let target = dns::display_name(&target.to_utf8());
                let why = match failure {
                    LookupFailure::NxDomain => " (NXDOMAIN)",
                    _ => "",
                };
                format!(
                    "no TXT record at {shown}: it is a CNAME to {target}, which has no TXT record{why}"
                )
            }
            None => failure.describe(RecordType::TXT, &shown, timeout),
        }
    }

    /// Passes when `name` is a CNAME to `target` (delegated DCV). When `name` has no CNAME but a
    /// TXT record, the failure says that TXT conflicts with the delegation.
    pub async fn check_cname(&self, name: &str, target: &str) -> CheckOutcome {
        CheckOutcome::from_result(self.cname(name, target).await)
    }

    async fn cname(&self, name: &str, target: &str) -> Result<(), String> {
        let shown = dns::display_name(name);
        let wanted = dns::display_name(target);
        let timeout = self.inner.config.timeout;
        let source =
            dns::parse_name(name).map_err(|f| f.describe(RecordType::CNAME, &shown, timeout))?;
        let wanted_name =
            dns::parse_name(target).map_err(|f| f.describe(RecordType::CNAME, &wanted, timeout))?;
        match self.lookup(name, RecordType::CNAME).await {
            Ok(records) => {
                let found: Vec<_> = records
                    .iter()
                    .filter(|r| r.name == source)
                    .filter_map(|r| match &r.data {
                        RData::CNAME(cname) => Some(cname.0.clone()),
                        _ => None,
                    })
                    .collect();
                match found.as_slice() {
                    [] => Err(self.missing_cname(name, &wanted).await),
                    [one] if *one == wanted_name => Ok(()),
                    [one] => Err(format!(
                        "CNAME {shown} points to {}, expected {wanted}",
                        dns::display_name(&one.to_utf8())
                    )),
                    several => Err(format!(
                        "{shown} has {} CNAME records ({}), expected one to {wanted}",
                        several.len(),
                        several
                            .iter()
                            .map(|n| dns::display_name(&n.to_utf8()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                }
            }
            Err(LookupFailure::NoData) => Err(self.missing_cname(name, &wanted).await),
            Err(failure) => Err(failure.describe(RecordType::CNAME, &shown, timeout)),
        }
    }

    /// Explains a missing CNAME, naming a TXT record left at the name if there is one (typically
    /// from an earlier TXT validation), since that is what the person must delete.
    async fn missing_cname(&self, name: &str, wanted: &str) -> String {
        let shown = dns::display_name(name);
        match self.lookup(name, RecordType::TXT).await {
            Ok(records) if records.iter().any(|r| matches!(r.data, RData::TXT(_))) => format!(
                "no CNAME at {shown}: it has a TXT record, which conflicts with delegating it \
                 to {wanted} (delete the TXT and add the CNAME)"
            ),
            _ => format!(
                "no CNAME record at {shown} (the name exists with other records); expected a \
                 CNAME to {wanted}"
            ),
        }
    }

    /// Passes when `url` (an `http://` URL) answers 200 with a body that, after trimming trailing
    /// whitespace, equals `expected_body`, following Boulder's HTTP-01 rules: addresses from the
    /// configured resolvers (IPv6 first, then IPv4 once), no private or reserved address unless
    /// allowed, at most 10 redirects (301/302/307/308 only, to http/https on the configured
    /// ports only), at most 128 bytes of body. Certificates are not verified on redirects to
    /// `https://` (as Boulder: the token proves control, not the certificate).
    pub async fn check_http(&self, url: &str, expected_body: &str) -> CheckOutcome {
        CheckOutcome::from_result(http::check(&self.inner, url, expected_body).await)
    }

    /// Passes when CAA (RFC 8659) lets `ca_identity` (e.g. `letsencrypt.org`) issue for `host`:
    /// the first name from `host` up the tree that has CAA records decides; `issuewild` applies
    /// to `*.` hosts when present; a set of `issue` (or `issuewild`) properties not naming the
    /// CA, or an unknown critical property, blocks. A lookup failure (SERVFAIL, timeout) blocks.
    pub async fn check_caa(&self, host: &str, ca_identity: &str) -> CheckOutcome {
        let request = CaaRequest {
            identities: vec![ca_identity.to_owned()],
            ..CaaRequest::default()
        };
        self.check_caa_for(host, &request).await
    }

    /// [`Validator::check_caa`] for a CA known by several issuer domain names, with the
    /// RFC 8657 `accounturi` and `validationmethods` parameters checked against the ACME
    /// account and method in `request`.
    pub async fn check_caa_for(&self, host: &str, request: &CaaRequest) -> CheckOutcome {
        CheckOutcome::from_result(caa::check(self, host, request).await)
    }
}

/// A value as shown in a failure: quoted, escaped, and cut if long.
fn quote(value: &str) -> String {
    const LONGEST: usize = 64;
    if value.chars().count() > LONGEST {
        let cut: String = value.chars().take(LONGEST).collect();
        format!("{cut:?}...")
    } else {
        format!("{value:?}")
    }
}

/// A duration as people write it in a message: `5 s`, `1.5 s`, `300 ms`.
fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{ms} ms")
    }
}
