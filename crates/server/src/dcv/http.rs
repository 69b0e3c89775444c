//! HTTP validation with Boulder's rules: resolve through our resolvers, connect only to public
//! addresses (IPv6 first, IPv4 once), follow a bounded number of plain redirects, read a few bytes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::WebPkiSupportedAlgorithms;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};
use url::Url;

use hickory_resolver::proto::rr::{RData, RecordType};

use super::dns::LookupFailure;
use super::{DcvConfig, DcvError, Inner, address, human_duration, quote};

/// Boulder's limit on redirects followed.
const MAX_REDIRECTS: usize = 10;
/// Boulder's limit on the body read: a token response is far shorter.
const MAX_BODY: usize = 128;
const USER_AGENT: &str = "zonecert-dcv/0.1";

pub(super) async fn check(inner: &Inner, url: &str, expected: &str) -> Result<(), String> {
    let deadline = Instant::now() + inner.config.timeout;
    let start = Url::parse(url).map_err(|e| format!("{url:?} is not a valid URL: {e}"))?;
    if start.scheme() != "http" {
        return Err(format!(
            "HTTP validation starts on an http:// URL, not {url}"
        ));
    }
    let mut target = Target::new(start, &inner.config, None)?;
    let mut redirects = 0;
    loop {
        let reply = fetch(inner, &target, deadline).await?;
        match reply.status {
            200 => return compare(&target.url, &reply.body, expected),
            301 | 302 | 307 | 308 => {
                redirects += 1;
                let location = reply.location.ok_or_else(|| {
                    format!(
                        "HTTP {} redirect from {} has no usable Location header",
                        reply.status, target.url
                    )
                })?;
                let next = target.url.join(&location).map_err(|e| {
                    format!(
                        "redirect from {} has an invalid Location {location:?}: {e}",
                        target.url
                    )
                })?;
                if redirects > MAX_REDIRECTS {
                    return Err(format!(
                        "too many redirects: more than {MAX_REDIRECTS} starting at {url} \
                         (the last from {} to {next})",
                        target.url
                    ));
                }
                target = Target::new(next, &inner.config, Some(&target.url))?;
            }
            status @ 300..=399 => {
                return Err(format!(
                    "HTTP {status} redirect from {} is not followed (only 301, 302, 307 and 308 are)",
                    target.url
                ));
            }
            status => return Err(format!("HTTP {status} from {}", target.url)),
        }
    }
}

/// One URL to fetch, already checked against the redirect rules.
struct Target {
    url: Url,
    host: String,
    port: u16,
    https: bool,
}

impl Target {
    /// Checks `url` (reached by a redirect from `from`, if any) and picks the port to use.
    fn new(url: Url, config: &DcvConfig, from: Option<&Url>) -> Result<Target, String> {
        let what = match from {
            Some(from) => format!("redirect from {from} to {url}"),
            None => format!("validation URL {url}"),
        };
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "{what} uses the {other:?} scheme; only http and https are followed"
                ));
            }
        };
        let host = match url.host_str() {
            Some(h) if h.starts_with('[') || h.parse::<IpAddr>().is_ok() => {
                return Err(format!(
                    "{what} names an IP address; only host names are followed"
                ));
            }
            Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
            _ => return Err(format!("{what} has no host")),
        };
        if host.contains('*') {
            return Err(format!(
                "{what} names a wildcard host; HTTP validation cannot prove control of a wildcard"
            ));
        }
        // The configured ports stand for 80 and 443: a URL without a port uses the one of its
        // scheme, and an explicit port must be one of the two (Boulder allows either with
        // either scheme).
        let port = match url.port() {
            None if https => config.https_port,
            None => config.http_port,
            Some(p) if p == config.http_port || p == config.https_port => p,
            Some(p) => {
                return Err(format!(
                    "{what} uses port {p}; only ports {} and {} are followed",
                    config.http_port, config.https_port
                ));
            }
        };
        Ok(Target {
            url,
            host,
            port,
            https,
        })
    }

    /// The request target in origin form (`/path?query`).
    fn path_and_query(&self) -> String {
        match self.url.query() {
            Some(query) => format!("{}?{query}", self.url.path()),
            None => self.url.path().to_owned(),
        }
    }
}

struct Reply {
    status: u16,
    location: Option<String>,
    /// Up to `MAX_BODY + 1` bytes of the body of a 200 answer (one more tells it was longer).
    body: Vec<u8>,
}

/// Why one connection attempt failed; only a failure to connect lets the next address be tried.
enum AttemptError {
    Connect(String),
    Exchange(String),
}

async fn fetch(inner: &Inner, target: &Target, deadline: Instant) -> Result<Reply, String> {
    let addresses = resolve(inner, &target.host, deadline).await?;
    let mut earlier: Option<String> = None;
    for (i, ip) in addresses.iter().enumerate() {
        let addr = SocketAddr::new(*ip, target.port);
        // When IPv4 is there to fall back on, IPv6 gets half of the time left, so a dead IPv6
        // path cannot use up the whole check.
        let last = i + 1 == addresses.len();
        let connect_deadline = if last {
            deadline
        } else {
            let now = Instant::now();
            now + deadline.saturating_duration_since(now) / 2
        };
        let budget = if last {
            inner.config.timeout
        } else {
            connect_deadline.saturating_duration_since(Instant::now())
        };
        match attempt(inner, target, addr, connect_deadline, budget, deadline).await {
            Ok(reply) => return Ok(reply),
            Err(AttemptError::Connect(reason)) if !last => earlier = Some(reason),
            Err(AttemptError::Connect(reason) | AttemptError::Exchange(reason)) => {
                return Err(match earlier {
                    Some(first) => format!("{reason} (after IPv6 failed: {first})"),
                    None => reason,
                });
            }
        }
    }
    // `resolve` never returns an empty list; this only keeps the function total.
    Err(format!("no address to connect to for {}", target.host))
}

/// The addresses to try for `host`: its first allowed IPv6 address, then its first allowed IPv4
/// address (Boulder tries IPv6 first and falls back to IPv4 once).
async fn resolve(inner: &Inner, host: &str, deadline: Instant) -> Result<Vec<IpAddr>, String> {
    let timeout = inner.config.timeout;
    let lookups = async {
        tokio::join!(
            inner.dns.lookup(host, RecordType::AAAA),
            inner.dns.lookup(host, RecordType::A)
        )
    };
    let (v6_result, v4_result) = timeout_at(deadline, lookups).await.map_err(|_| {
        format!(
            "timed out after {} looking up addresses for {host}",
            human_duration(timeout)
        )
    })?;
    let v6 = addresses_of(&v6_result);
    let v4 = addresses_of(&v4_result);
    if v6.is_empty() && v4.is_empty() {
        return Err(no_address(host, v6_result.err(), v4_result.err(), timeout));
    }
    let allowed =
        |ip: &IpAddr| inner.config.allow_private_addresses || address::reserved_kind(*ip).is_none();
    let chosen: Vec<IpAddr> = [
        v6.iter().find(|ip| allowed(ip)),
        v4.iter().find(|ip| allowed(ip)),
    ]
    .into_iter()
    .flatten()
    .copied()
    .collect();
    if chosen.is_empty() {
        let refused: Vec<String> = v6
            .iter()
            .chain(&v4)
            .map(|ip| match address::reserved_kind(*ip) {
                Some(kind) => format!("{ip} ({kind})"),
                None => ip.to_string(),
            })
            .collect();
        return Err(format!(
            "refusing to connect to {host} at {}: private and reserved addresses are not allowed",
            refused.join(", ")
        ));
    }
    Ok(chosen)
}

fn addresses_of(
    result: &Result<Vec<hickory_resolver::proto::rr::Record>, LookupFailure>,
) -> Vec<IpAddr> {
    match result {
        Ok(records) => records
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Explains why `host` has no address: a real lookup failure (SERVFAIL, timeout) first, else
/// what the zone says.
fn no_address(
    host: &str,
    v6: Option<LookupFailure>,
    v4: Option<LookupFailure>,
    timeout: Duration,
) -> String {
    let failures = [(RecordType::AAAA, v6), (RecordType::A, v4)];
    if let Some((rtype, failure)) = failures
        .iter()
        .find_map(|(t, f)| f.as_ref().filter(|f| !f.is_absent()).map(|f| (*t, f)))
    {
        return failure.describe(rtype, host, timeout);
    }
    if failures
        .iter()
        .all(|(_, f)| matches!(f, Some(LookupFailure::NxDomain)))
    {
        format!("no A or AAAA record at {host} (NXDOMAIN)")
    } else {
        format!("no A or AAAA record at {host}")
    }
}

async fn attempt(
    inner: &Inner,
    target: &Target,
    addr: SocketAddr,
    connect_deadline: Instant,
    connect_budget: Duration,
    deadline: Instant,
) -> Result<Reply, AttemptError> {
    let tcp = match timeout_at(connect_deadline, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(AttemptError::Connect(format!(
                "timed out after {} connecting to {addr}",
                human_duration(connect_budget)
            )));
        }
        Ok(Err(e)) => {
            return Err(AttemptError::Connect(format!(
                "cannot connect to {addr}: {e}"
            )));
        }
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    if !target.https {
        return exchange(inner, target, addr, tcp, deadline).await;
    }
    let server_name = ServerName::try_from(target.host.clone()).map_err(|e| {
        AttemptError::Exchange(format!(
            "{} is not a valid TLS server name: {e}",
            target.host
        ))
    })?;
    let tls = match timeout_at(deadline, inner.https.connect(server_name, tcp)).await {
        Err(_) => {
            return Err(AttemptError::Exchange(format!(
                "timed out after {} in the TLS handshake with {addr} for {}",
                human_duration(inner.config.timeout),
                target.url
            )));
        }
        Ok(Err(e)) => {
            return Err(AttemptError::Exchange(format!(
                "TLS handshake with {addr} for {} failed: {e}",
                target.url
            )));
        }
        Ok(Ok(tls)) => tls,
    };
    exchange(inner, target, addr, tls, deadline).await
}

/// Sends the GET on an open connection and reads the answer (the body only for a 200).
async fn exchange<S>(
    inner: &Inner,
    target: &Target,
    addr: SocketAddr,
    stream: S,
    deadline: Instant,
) -> Result<Reply, AttemptError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let url = &target.url;
    let timed_out = |doing: &str| {
        AttemptError::Exchange(format!(
            "timed out after {} {doing} {url} from {addr}",
            human_duration(inner.config.timeout)
        ))
    };
    let failed = |doing: &str, e: hyper::Error| {
        AttemptError::Exchange(format!("error {doing} {url} from {addr}: {e}"))
    };
    let (mut sender, connection) = match timeout_at(
        deadline,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    {
        Err(_) => return Err(timed_out("requesting")),
        Ok(Err(e)) => return Err(failed("requesting", e)),
        Ok(Ok(parts)) => parts,
    };
    // The connection is driven by its own task, stopped when this attempt ends.
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = hyper::Request::get(target.path_and_query())
        .header(header::HOST, target.host.as_str())
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::ACCEPT, "*/*")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| AttemptError::Exchange(format!("cannot build a request for {url}: {e}")))?;
    let response = match timeout_at(deadline, sender.send_request(request)).await {
        Err(_) => return Err(timed_out("waiting for an answer to")),
        Ok(Err(e)) => return Err(failed("requesting", e)),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    if status == 200 {
        let mut incoming = response.into_body();
        while body.len() <= MAX_BODY {
            match timeout_at(deadline, incoming.frame()).await {
                Err(_) => return Err(timed_out("reading the body of")),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(failed("reading the body of", e)),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let room = MAX_BODY + 1 - body.len();
                        body.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
            }
        }
    }
    drop(driver);
    Ok(Reply {
        status,
        location,
        body,
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The body must be the expected value, give or take trailing whitespace.
fn compare(url: &Url, body: &[u8], expected: &str) -> Result<(), String> {
    if body.len() > MAX_BODY {
        return Err(format!(
            "the answer from {url} is longer than {MAX_BODY} bytes, so it is not the expected value"
        ));
    }
    if body.trim_ascii_end() == expected.as_bytes() {
        Ok(())
    } else {
        Err(format!(
            "the answer from {url} does not match the expected value (got {})",
            quote(&String::from_utf8_lossy(body))
        ))
    }
}

/// A TLS client for redirects to https. Like Boulder, it does not verify certificates: HTTP
/// validation proves control through the token in the body, and the host is usually getting
/// its first certificate precisely because it has no valid one yet. Signatures in the handshake
/// are still checked, so the session itself is sound.
pub(super) fn tls_connector() -> Result<TlsConnector, DcvError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AnyCertificate {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DcvError::Setup(format!("TLS client: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
