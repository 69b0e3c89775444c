//! ACME failures as typed reasons: every problem document (RFC 8555 section 6.7) and every
//! way of not reaching the CA becomes an [`AcmeError`] whose [`AcmeErrorKind`] the
//! lifecycle acts on (wait for `Retry-After`, retry on the schedule, give up on the order)
//! and whose text a person can act on.

use std::fmt;
use std::time::SystemTime;

/// What kind of ACME failure happened. The lifecycle decides on the kind, never on text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcmeErrorKind {
    /// The directory could not be fetched (DNS, TCP, TLS, not a directory).
    DirectoryUnreachable,
    /// A request to the CA failed below ACME (connection refused or reset, TLS).
    Transport,
    /// `rateLimited`: wait for the CA's `Retry-After`.
    RateLimited,
    /// `badNonce` even after the client's own retries.
    BadNonce,
    /// `unauthorized`: the CA did not accept the proof of control.
    Unauthorized,
    /// `caa`: a CAA record forbids this CA.
    Caa,
    /// `dns`: the CA's DNS lookups failed.
    Dns,
    /// `connection`: the CA could not connect to the host for http-01.
    Connection,
    /// `incorrectResponse`: the CA found the record but not the expected value.
    IncorrectResponse,
    /// `rejectedIdentifier`: the CA will not issue for this name.
    RejectedIdentifier,
    /// `externalAccountRequired`: the CA needs External Account Binding.
    ExternalAccountRequired,
    /// The account is deactivated (or no longer valid, the CA does not say why): set
    /// aside, a new one is created.
    AccountUnusable,
    /// The CA revoked the account (RFC 8555 section 7.1.6: the server's doing, where a
    /// deactivation is the client's; Let's Encrypt revokes the accounts whose key it
    /// blocked as compromised): set aside as [`AcmeErrorKind::AccountUnusable`], and the
    /// operator should find out why.
    AccountRevoked,
    /// The CA does not know the account (`accountDoesNotExist`: a test CA restarted, the
    /// CA forgot it): a new one is created at the next order.
    AccountUnknown,
    /// The order is invalid, expired or gone: a new order is needed.
    OrderUnusable,
    /// `serverInternal` or any 5xx answer.
    ServerError,
    /// Any other problem type, named.
    Other(String),
}

impl AcmeErrorKind {
    /// The kind of a problem document's `type`.
    pub fn from_problem_type(problem_type: Option<&str>, status: Option<u16>) -> Self {
        let short = problem_type
            .and_then(|t| t.strip_prefix("urn:ietf:params:acme:error:"))
            .unwrap_or("");
        match short {
            "rateLimited" => AcmeErrorKind::RateLimited,
            "badNonce" => AcmeErrorKind::BadNonce,
            "unauthorized" => AcmeErrorKind::Unauthorized,
            "caa" => AcmeErrorKind::Caa,
            "dns" => AcmeErrorKind::Dns,
            "connection" | "tls" => AcmeErrorKind::Connection,
            "incorrectResponse" => AcmeErrorKind::IncorrectResponse,
            "rejectedIdentifier" | "unsupportedIdentifier" => AcmeErrorKind::RejectedIdentifier,
            "externalAccountRequired" => AcmeErrorKind::ExternalAccountRequired,
            "accountDoesNotExist" => AcmeErrorKind::AccountUnknown,
            "orderNotReady" => AcmeErrorKind::OrderUnusable,
            "serverInternal" => AcmeErrorKind::ServerError,
            _ if status.is_some_and(|s| s >= 500) => AcmeErrorKind::ServerError,
            "" => AcmeErrorKind::Other(problem_type.unwrap_or("no type").to_owned()),
            other => AcmeErrorKind::Other(other.to_owned()),
        }
    }

    /// Whether trying the same order again later can succeed. A refused validation
    /// (`unauthorized`, `dns`, ...) leaves the ACME order invalid: a new order is needed.
    pub fn order_survives(&self) -> bool {
        matches!(
            self,
            AcmeErrorKind::DirectoryUnreachable
                | AcmeErrorKind::Transport
                | AcmeErrorKind::RateLimited
                | AcmeErrorKind::BadNonce
                | AcmeErrorKind::ServerError
        )
    }
}

/// A failure talking to an ACME CA, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeError {
    /// What happened, for the lifecycle.
    pub kind: AcmeErrorKind,
    /// The host the failure is about, when the CA named one (an authorization's).
    pub host: Option<String>,
    /// The CA's own words (the problem's `detail`), or the transport error.
    pub detail: String,
    /// When the CA asked to be called again (`Retry-After`), if it did.
    pub retry_after: Option<SystemTime>,
}

impl AcmeError {
    pub(crate) fn new(kind: AcmeErrorKind, detail: impl Into<String>) -> Self {
        AcmeError {
            kind,
            host: None,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// The error of a problem document the CA sent.
    pub(crate) fn from_problem(problem: &instant_acme::Problem) -> Self {
        let (detail, retry_after) = split_retry_after(problem.detail.as_deref().unwrap_or(""));
        let mut kind = AcmeErrorKind::from_problem_type(problem.r#type.as_deref(), problem.status);
        if kind == AcmeErrorKind::Unauthorized && account_gone(&detail) {
            kind = if detail.to_ascii_lowercase().contains("revoked") {
                AcmeErrorKind::AccountRevoked
            } else {
                AcmeErrorKind::AccountUnusable
            };
        }
        // A subproblem names the identifier; take the first one's kind when the top level
        // is only a summary (Boulder sends `malformed` or `rejectedIdentifier` with subproblems).
        let host = problem
            .subproblems
            .first()
            .and_then(|s| s.identifier.as_ref())
            .map(|i| match i {
                instant_acme::Identifier::Dns(name) => name.clone(),
                other => format!("{other:?}"),
            });
        AcmeError {
            kind,
            host,
            detail,
            retry_after,
        }
    }

    /// The error of anything instant-acme returns.
    pub(crate) fn from_client(err: instant_acme::Error) -> Self {
        match err {
            instant_acme::Error::Api(problem) => Self::from_problem(&problem),
            instant_acme::Error::Other(e) => {
                // Connection refused, TLS failures, timeouts: the error chain names them.
                let mut text = e.to_string();
                let mut source = e.source();
                while let Some(s) = source {
                    text.push_str(": ");
                    text.push_str(&s.to_string());
                    source = s.source();
                }
                AcmeError::new(AcmeErrorKind::Transport, text)
            }
            instant_acme::Error::Timeout(_) => AcmeError::new(
                AcmeErrorKind::ServerError,
                "the CA did not finish within the polling time; polled again later",
            ),
            other => AcmeError::new(AcmeErrorKind::Other("client".to_owned()), other.to_string()),
        }
    }

    pub(crate) fn for_host(mut self, host: &str) -> Self {
        self.host.get_or_insert_with(|| host.to_owned());
        self
    }
}

impl fmt::Display for AcmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.kind {
            AcmeErrorKind::DirectoryUnreachable => "the ACME directory is unreachable",
            AcmeErrorKind::Transport => "the ACME CA could not be reached",
            AcmeErrorKind::RateLimited => "the ACME CA's rate limit was hit",
            AcmeErrorKind::BadNonce => "the ACME CA kept refusing nonces (badNonce)",
            AcmeErrorKind::Unauthorized => "the ACME CA refused the validation (unauthorized)",
            AcmeErrorKind::Caa => "a CAA record forbids this ACME CA (caa)",
            AcmeErrorKind::Dns => "the ACME CA's DNS lookup failed (dns)",
            AcmeErrorKind::Connection => "the ACME CA could not connect to the host (connection)",
            AcmeErrorKind::IncorrectResponse => {
                "the ACME CA found a different value (incorrectResponse)"
            }
            AcmeErrorKind::RejectedIdentifier => "the ACME CA will not issue for this name",
            AcmeErrorKind::ExternalAccountRequired => {
                "the ACME CA requires External Account Binding: give zonecert the key id and \
                 HMAC key the CA issued (--acme-eab NAME=KEY_ID:HMAC_KEY, or eab_key_id and \
                 eab_hmac_key in [acme.NAME])"
            }
            AcmeErrorKind::AccountUnusable => {
                "the ACME account is deactivated or revoked at the CA, which never accepts it \
                 again: zonecert set it aside and creates a new account for the next order \
                 (with External Account Binding, the CA may want a new key id and HMAC key)"
            }
            AcmeErrorKind::AccountRevoked => {
                "the CA revoked the ACME account, and never accepts it again: zonecert set it \
                 aside and creates a new account, with a new key, for the next order (with \
                 External Account Binding, the CA may want a new key id and HMAC key); a CA \
                 revokes an account itself, for a compromised account key or a breach of its \
                 terms: ask the CA why (it writes to the account's contact address), and if \
                 the key was compromised, treat the keys in the data directory and the \
                 database as exposed"
            }
            AcmeErrorKind::AccountUnknown => {
                "the ACME CA does not know the account; a new one is created for the next order"
            }
            AcmeErrorKind::OrderUnusable => "the ACME order can no longer be used",
            AcmeErrorKind::ServerError => "the ACME CA failed (server error)",
            AcmeErrorKind::Other(t) => return write_other(f, t, self),
        };
        f.write_str(what)?;
        if let Some(host) = &self.host {
            write!(f, " for {host}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        if let Some(at) = self.retry_after {
            write!(f, " (the CA asks to wait until {})", rfc3339(at))?;
        }
        Ok(())
    }
}

/// `at` as RFC 3339 in UTC, to the second (what a person reads in a reason).
fn rfc3339(at: SystemTime) -> String {
    let secs = time::OffsetDateTime::from(at).unix_timestamp();
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} (unix time)"))
}

fn write_other(f: &mut fmt::Formatter<'_>, kind: &str, e: &AcmeError) -> fmt::Result {
    write!(f, "the ACME CA answered {kind}")?;
    if let Some(host) = &e.host {
        write!(f, " for {host}")?;
    }
    if !e.detail.is_empty() {
        write!(f, ": {}", e.detail)?;
    }
    Ok(())
}

impl std::error::Error for AcmeError {}

/// Whether an `unauthorized` detail says the account itself is unusable (Boulder and
/// Pebble word it "account ... deactivated/revoked/is not valid").
fn account_gone(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    // Not a revocation refused for a certificate another account ordered (Pebble: "The
    // certificate being revoked is not associated with account ..."): the account is
    // fine, the certificate is not its own.
    d.contains("account")
        && !d.contains("certificate")
        && (d.contains("deactivated") || d.contains("revoked") || d.contains("not valid"))
}

/// The marker [`super::http`] appends to a problem's `detail` to carry the response's
/// `Retry-After` through instant-acme, whose problem type has no field for it.
pub(crate) const RETRY_AFTER_MARK: &str = " [zonecert-retry-after-unix:";

/// Splits the `Retry-After` marker off a problem's detail.
fn split_retry_after(detail: &str) -> (String, Option<SystemTime>) {
    let Some((text, rest)) = detail.rsplit_once(RETRY_AFTER_MARK) else {
        return (detail.to_owned(), None);
    };
    let at = rest
        .strip_suffix(']')
        .and_then(|n| n.parse::<u64>().ok())
        .map(|secs| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    (text.to_owned(), at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_types_become_kinds() {
        let k = |t: &str| {
            AcmeErrorKind::from_problem_type(Some(&format!("urn:ietf:params:acme:error:{t}")), None)
        };
        assert_eq!(k("rateLimited"), AcmeErrorKind::RateLimited);
        assert_eq!(k("caa"), AcmeErrorKind::Caa);
        assert_eq!(k("rejectedIdentifier"), AcmeErrorKind::RejectedIdentifier);
        assert_eq!(
            k("externalAccountRequired"),
            AcmeErrorKind::ExternalAccountRequired
        );
        assert_eq!(k("weird"), AcmeErrorKind::Other("weird".into()));
        assert_eq!(
            AcmeErrorKind::from_problem_type(Some("about:blank"), Some(503)),
            AcmeErrorKind::ServerError
        );
        assert!(AcmeErrorKind::RateLimited.order_survives());
        assert!(!AcmeErrorKind::Unauthorized.order_survives());
    }

    #[test]
    fn a_certificate_of_another_account_is_not_a_gone_account() {
        assert!(!account_gone(
            "The certificate being revoked is not associated with account \"4b914c158972964\""
        ));
        assert!(account_gone(
            "Account is not valid, has status \"deactivated\""
        ));
        assert!(account_gone("the account has been revoked"));
        // Let's Encrypt's words for a revoked account (Boulder's wfe2), then a
        // deactivated one.
        let kind = |detail: &str| {
            let problem: instant_acme::Problem = serde_json::from_value(serde_json::json!({
                "type": "urn:ietf:params:acme:error:unauthorized",
                "detail": detail,
                "status": 403,
            }))
            .expect("a problem document");
            AcmeError::from_problem(&problem).kind
        };
        assert_eq!(
            kind(r#"Unable to validate JWS :: Account is not valid, has status "revoked""#),
            AcmeErrorKind::AccountRevoked
        );
        assert_eq!(
            kind(r#"Unable to validate JWS :: Account is not valid, has status "deactivated""#),
            AcmeErrorKind::AccountUnusable
        );
    }

    #[test]
    fn the_retry_after_mark_is_split_off() {
        let (d, at) = split_retry_after("too many [zonecert-retry-after-unix:100]");
        assert_eq!(d, "too many");
        assert_eq!(
            at,
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100))
        );
        assert_eq!(split_retry_after("plain").1, None);
    }
}
