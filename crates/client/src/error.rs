//! What can go wrong, as types a caller can match on.

use std::fmt;
use std::time::Duration;
use zonecert_api::ResponseMessage;

/// A shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Codes Cloudflare (and zonecert) answer with when the credentials themselves are
/// missing, malformed or unknown, as opposed to valid credentials lacking a permission.
///
/// 9106: no credential; 9103: unknown key/email pair; 10000: authentication error;
/// 6111/6102/6103: malformed `Authorization` / `X-Auth-Email` / `X-Auth-Key` header
/// (they arrive in the `error_chain` of a 6003).
const AUTHENTICATION_CODES: &[u32] = &[9106, 9103, 10000, 6111, 6102, 6103];

/// An error returned by [`Client`](crate::Client) calls.
///
/// Every variant that stems from an HTTP answer carries an [`ApiError`] with the
/// status and each Cloudflare error of the body. Match on the variant to decide what
/// to do; [`Error::status`], [`Error::errors`] and [`Error::retry_after`] read the
/// common parts without matching.
///
/// ```
/// use zonecert_client::Error;
///
/// fn advice(err: &Error) -> &'static str {
///     match err {
///         Error::Authentication(_) => "check CLOUDFLARE_API_TOKEN",
///         Error::PermissionDenied(_) => "the token lacks SSL and Certificates permission",
///         Error::NotFound(_) => "check the zone and pack ids",
///         Error::RateLimited { .. } => "wait and try again",
///         Error::Timeout { .. } | Error::Connection { .. } => "check the network",
///         _ => "see the error message",
///     }
/// }
/// # let _ = advice;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request was refused as malformed (HTTP 400 or 422, except credential
    /// errors): a parameter or body field is invalid.
    #[error("bad request: {0}")]
    BadRequest(ApiError),
    /// The credentials are missing, malformed or unknown (HTTP 401, or the
    /// authentication codes 9106, 9103, 10000, 6111, 6102, 6103).
    #[error("authentication failed: {0}")]
    Authentication(ApiError),
    /// The credentials are valid but may not do this (HTTP 403, e.g. code 9109).
    #[error("permission denied: {0}")]
    PermissionDenied(ApiError),
    /// The zone, pack or route does not exist (HTTP 404, codes 7003/7000).
    #[error("not found: {0}")]
    NotFound(ApiError),
    /// The request conflicts with the current state (HTTP 409).
    #[error("conflict: {0}")]
    Conflict(ApiError),
    /// Too many requests (HTTP 429, code 971), after the retries allowed.
    #[error("rate limited{}: {error}", wait_suffix(*.retry_after))]
    RateLimited {
        /// The answer.
        error: ApiError,
        /// How long the server asked to wait (`Retry-After` / `retry-after-ms`).
        retry_after: Option<Duration>,
    },
    /// The server failed (HTTP 5xx), after the retries allowed.
    #[error("server error: {0}")]
    Server(ApiError),
    /// Any other unsuccessful answer: an unexpected status, or a 2xx whose
    /// envelope says `"success": false`.
    #[error("unexpected answer: {0}")]
    Status(ApiError),
    /// No answer came within the timeout.
    #[error("request timed out after {}", crate::retry::human_duration(*.after))]
    Timeout {
        /// The timeout of the last attempt.
        after: Duration,
    },
    /// The request could not be sent or the connection broke before an answer.
    #[error("connection error: {source}")]
    Connection {
        /// The transport's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A successful answer whose body is not what the API documents.
    #[error("could not decode the answer (HTTP {status}): {message}")]
    Decode {
        /// The HTTP status of the answer.
        status: u16,
        /// What did not match.
        message: String,
        /// The start of the body, for diagnosis.
        body: String,
    },
    /// The client is misconfigured (missing credentials, invalid base URL, ...).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

fn wait_suffix(wait: Option<Duration>) -> String {
    match wait {
        Some(d) => format!(" (retry after {})", crate::retry::human_duration(d)),
        None => String::new(),
    }
}

impl Error {
    /// The HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Decode { status, .. } => Some(*status),
            _ => self.api_error().map(|e| e.status),
        }
    }

    /// The answer's details, for the variants that come from an HTTP answer.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Error::BadRequest(e)
            | Error::Authentication(e)
            | Error::PermissionDenied(e)
            | Error::NotFound(e)
            | Error::Conflict(e)
            | Error::Server(e)
            | Error::Status(e)
            | Error::RateLimited { error: e, .. } => Some(e),
            _ => None,
        }
    }

    /// The Cloudflare errors of the answer (empty when there was no answer).
    pub fn errors(&self) -> &[ResponseMessage] {
        self.api_error().map(|e| e.errors.as_slice()).unwrap_or(&[])
    }

    /// How long the server asked to wait before the next request, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether any error of the answer, or of its `error_chain`, has this code.
    pub fn has_code(&self, code: u32) -> bool {
        self.api_error().is_some_and(|e| e.has_code(code))
    }

    /// Classifies an unsuccessful answer into its variant.
    pub(crate) fn from_answer(error: ApiError, retry_after: Option<Duration>) -> Error {
        let auth_code = AUTHENTICATION_CODES.iter().any(|c| error.has_code(*c));
        match error.status {
            401 => Error::Authentication(error),
            400 | 403 if auth_code => Error::Authentication(error),
            403 => Error::PermissionDenied(error),
            400 | 422 => Error::BadRequest(error),
            404 => Error::NotFound(error),
            409 => Error::Conflict(error),
            429 => Error::RateLimited { error, retry_after },
            500..=599 => Error::Server(error),
            _ if auth_code => Error::Authentication(error),
            _ => Error::Status(error),
        }
    }
}

/// An unsuccessful HTTP answer: its status and every error of its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// The HTTP status, e.g. `403`.
    pub status: u16,
    /// The envelope's `errors`, each with its code (`u32`), message and `error_chain`.
    /// Empty when the body was not a Cloudflare envelope (a proxy's HTML page, ...).
    pub errors: Vec<ResponseMessage>,
    /// The envelope's `messages`.
    pub messages: Vec<ResponseMessage>,
    /// The `cf-ray` header, which Cloudflare support asks for.
    pub ray_id: Option<String>,
    /// The start of the body when it was not an envelope.
    pub body: Option<String>,
}

impl ApiError {
    /// Whether an error of the answer, or one in its `error_chain`, has this code.
    pub fn has_code(&self, code: u32) -> bool {
        fn walk(list: &[ResponseMessage], code: u32) -> bool {
            list.iter()
                .any(|m| m.code == code || m.error_chain.as_deref().is_some_and(|c| walk(c, code)))
        }
        walk(&self.errors, code)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(body) = self.body.as_deref().filter(|b| !b.trim().is_empty())
            && self.errors.is_empty()
        {
            write!(f, ": {}", body.trim())?;
        }
        for (i, e) in self.errors.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write_message(f, e)?;
        }
        Ok(())
    }
}

fn write_message(f: &mut fmt::Formatter<'_>, m: &ResponseMessage) -> fmt::Result {
    write!(f, "{} {}", m.code, m.message)?;
    if let Some(chain) = m.error_chain.as_deref().filter(|c| !c.is_empty()) {
        f.write_str(" (")?;
        for (i, c) in chain.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write_message(f, c)?;
        }
        f.write_str(")")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, codes: &[u32]) -> ApiError {
        ApiError {
            status,
            errors: codes
                .iter()
                .map(|c| ResponseMessage::new(*c, format!("message {c}")))
                .collect(),
            messages: Vec::new(),
            ray_id: None,
            body: None,
        }
    }

    #[test]
    fn classifies_domain_md_table() {
        assert!(matches!(
            Error::from_answer(answer(400, &[9106]), None),
            Error::Authentication(_)
        ));
        let mut malformed = answer(400, &[6003]);
        malformed.errors[0].error_chain = Some(vec![ResponseMessage::new(6111, "bad header")]);
        assert!(matches!(
            Error::from_answer(malformed, None),
            Error::Authentication(_)
        ));
        assert!(matches!(
            Error::from_answer(answer(403, &[10000]), None),
            Error::Authentication(_)
        ));
        assert!(matches!(
            Error::from_answer(answer(403, &[9103]), None),
            Error::Authentication(_)
        ));
        assert!(matches!(
            Error::from_answer(answer(403, &[9109]), None),
            Error::PermissionDenied(_)
        ));
        assert!(matches!(
            Error::from_answer(answer(404, &[7003, 7000]), None),
            Error::NotFound(_)
        ));
        let limited = Error::from_answer(answer(429, &[971]), Some(Duration::from_secs(3)));
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
        assert!(matches!(
            Error::from_answer(answer(400, &[1001]), None),
            Error::BadRequest(_)
        ));
        assert!(matches!(
            Error::from_answer(answer(502, &[]), None),
            Error::Server(_)
        ));
    }

    #[test]
    fn display_shows_codes_and_chain() {
        let mut e = answer(400, &[6003]);
        e.errors[0].error_chain = Some(vec![ResponseMessage::new(6111, "Invalid format")]);
        assert_eq!(
            e.to_string(),
            "HTTP 400: 6003 message 6003 (6111 Invalid format)"
        );
        assert!(e.has_code(6111));
        assert!(!e.has_code(6112));
    }
}
