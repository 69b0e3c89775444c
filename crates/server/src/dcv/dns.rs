//! DNS lookups for the checks: the configured resolvers, no caching, failures classified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, Record, RecordType};

use super::{DcvConfig, DcvError, human_duration};

/// What a lookup found.
pub(super) type Answer = Result<Vec<Record>, LookupFailure>;

/// One answer, got once for everyone who asks.
type SharedAnswer = Arc<tokio::sync::OnceCell<Answer>>;

/// Answers shared by the checks of one pack: identical lookups that they make (the TXT
/// name an apex and its wildcard share, the CAA names above the hosts) go out once.
/// Never kept past those checks, which start together, so no check sees an answer older
/// than itself.
#[derive(Debug, Default)]
pub(super) struct SharedAnswers {
    answers: Mutex<HashMap<(String, RecordType), SharedAnswer>>,
}

impl SharedAnswers {
    /// The answer for `name` and `rtype`: the one another check got or is getting, or a
    /// new lookup through `dns`.
    pub(super) async fn lookup(&self, dns: &Dns, name: &str, rtype: RecordType) -> Answer {
        let key = (display_name(name), rtype);
        let cell = {
            // A panic while holding the lock leaves the map whole: still usable.
            let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(answers.entry(key).or_default())
        };
        cell.get_or_init(|| dns.lookup(name, rtype)).await.clone()
    }
}

/// How a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LookupFailure {
    /// The name does not exist.
    NxDomain,
    /// The name exists but has no record of the type asked.
    NoData,
    /// The server answered with an error code (SERVFAIL, REFUSED, ...).
    Rcode(ResponseCode),
    /// No answer within the check's time.
    Timeout,
    /// The name is not a valid DNS name.
    InvalidName(String),
    /// Anything else (network errors, malformed answers).
    Other(String),
}

impl LookupFailure {
    /// The failure as a sentence, e.g. `no TXT record at x.example.com (NXDOMAIN)`.
    pub(super) fn describe(&self, rtype: RecordType, name: &str, timeout: Duration) -> String {
        match self {
            LookupFailure::NxDomain => format!("no {rtype} record at {name} (NXDOMAIN)"),
            LookupFailure::NoData => {
                format!("no {rtype} record at {name} (the name exists, with no {rtype} record)")
            }
            LookupFailure::Rcode(code) => {
                format!("{} looking up {rtype} for {name}", rcode_word(*code))
            }
            LookupFailure::Timeout => format!(
                "timed out after {} looking up {rtype} for {name}",
                human_duration(timeout)
            ),
            LookupFailure::InvalidName(reason) => {
                format!("{name:?} is not a valid DNS name: {reason}")
            }
            LookupFailure::Other(reason) => {
                format!("DNS error looking up {rtype} for {name}: {reason}")
            }
        }
    }

    /// Whether the name simply has no such record (as opposed to the lookup failing).
    pub(super) fn is_absent(&self) -> bool {
        matches!(self, LookupFailure::NxDomain | LookupFailure::NoData)
    }
}

/// The mnemonic DNS people know a response code by.
fn rcode_word(code: ResponseCode) -> String {
    match code {
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::NotAuth => "NOTAUTH".to_owned(),
        other => format!("response code {}", u16::from(other)),
    }
}

pub(super) struct Dns {
    resolver: TokioResolver,
    timeout: Duration,
}

impl Dns {
    pub(super) fn new(config: &DcvConfig) -> Result<Dns, DcvError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if config.resolvers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| DcvError::SystemResolvers(e.to_string()))?
        } else {
            let servers = config
                .resolvers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    // NXDOMAIN from one resolver is final: asking the others would only slow
                    // down a check whose answer is already known.
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        // Each check must see the records as they are now: a TXT published a second ago has to
        // pass, and one deleted a second ago has to fail. So nothing is cached, positive or
        // negative, whatever TTL the zone gives.
        opts.cache_size = 0;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        // One retransmission within the check's time, for a lost UDP datagram.
        opts.attempts = 2;
        opts.timeout = (config.timeout / 2).max(Duration::from_millis(50));
        opts.use_hosts_file = ResolveHosts::Never;
        opts.edns0 = true;
        opts.preserve_intermediates = true;
        let resolver = builder
            .build()
            .map_err(|e| DcvError::Setup(format!("DNS resolver: {e}")))?;
        Ok(Dns {
            resolver,
            timeout: config.timeout,
        })
    }

    /// The answer records for `name` (CNAMEs followed, the CNAMEs themselves included).
    pub(super) async fn lookup(&self, name: &str, rtype: RecordType) -> Answer {
        let name = parse_name(name)?;
        let lookup = tokio::time::timeout(self.timeout, self.resolver.lookup(name, rtype)).await;
        match lookup {
            Err(_elapsed) => Err(LookupFailure::Timeout),
            Ok(Ok(lookup)) => Ok(lookup.answers().to_vec()),
            Ok(Err(error)) => Err(classify(error)),
        }
    }
}

fn classify(error: NetError) -> LookupFailure {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => {
            if no_records.response_code == ResponseCode::NXDomain {
                LookupFailure::NxDomain
            } else {
                LookupFailure::NoData
            }
        }
        NetError::Dns(DnsError::ResponseCode(code)) => LookupFailure::Rcode(code),
        NetError::Timeout => LookupFailure::Timeout,
        other => LookupFailure::Other(other.to_string()),
    }
}

/// Parses a name as given by a user (Unicode allowed) into a fully qualified name, so no search
/// domain is ever appended.
pub(super) fn parse_name(name: &str) -> Result<Name, LookupFailure> {
    if name.is_empty() {
        return Err(LookupFailure::InvalidName("empty name".to_owned()));
    }
    let mut parsed =
        Name::from_utf8(name).map_err(|e| LookupFailure::InvalidName(e.to_string()))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// A name as shown in messages: lower-case, without the trailing dot.
pub(super) fn display_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}
