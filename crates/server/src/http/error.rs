//! `ApiError`: every failure a client can see, rendered in Cloudflare's error envelope
//! with the right HTTP status and code. Internal causes are logged, never returned.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use zonecert_api::{Envelope, MessageSource, ResponseMessage};

/// Codes zonecert uses where Cloudflare's are not published (see ARCHITECTURE.md).
pub mod codes {
    /// An internal failure.
    pub const INTERNAL: u32 = 1000;
    /// The body is not a JSON object.
    pub const MALFORMED_BODY: u32 = 1001;
    /// A body field has the wrong type or value.
    pub const INVALID_FIELD: u32 = 1002;
    /// A query parameter is invalid.
    pub const INVALID_PARAMETER: u32 = 1003;
    /// The body is larger than allowed.
    pub const BODY_TOO_LARGE: u32 = 1004;
    /// The zone's pack quota is used up.
    pub const QUOTA_EXCEEDED: u32 = 1005;
    /// The pack's state does not allow the operation.
    pub const WRONG_STATE: u32 = 1006;
    /// The request is not well-formed HTTP (request line, header bytes).
    pub const MALFORMED_REQUEST: u32 = 1007;
    /// The request URI is longer than allowed.
    pub const URI_TOO_LONG: u32 = 1008;
    /// The request head has too many or too large header fields.
    pub const HEADERS_TOO_LARGE: u32 = 1009;
    /// The request body did not arrive in time.
    pub const REQUEST_TIMEOUT: u32 = 1010;
    /// Too many connections are open (overall, or from the client's address).
    pub const TOO_MANY_CONNECTIONS: u32 = 1011;
    /// The server is not ready (`/readyz`): its store does not answer or its lifecycle
    /// does not run.
    pub const NOT_READY: u32 = 1012;
    /// The database cannot be reached (PostgreSQL down or restarting): try again.
    pub const DATABASE_UNAVAILABLE: u32 = 1013;
    /// A zone of that name exists.
    pub const DUPLICATE: u32 = 1061;
    /// Invalid request headers.
    pub const INVALID_HEADERS: u32 = 6003;
    /// Malformed X-Auth-Email.
    pub const BAD_EMAIL_HEADER: u32 = 6102;
    /// Malformed X-Auth-Key.
    pub const BAD_KEY_HEADER: u32 = 6103;
    /// Malformed Authorization.
    pub const BAD_AUTHORIZATION: u32 = 6111;
    /// No route for that URI.
    pub const NO_ROUTE: u32 = 7000;
    /// Method not allowed on this route.
    pub const METHOD_NOT_ALLOWED: u32 = 7001;
    /// Unknown object identifier.
    pub const UNKNOWN_OBJECT: u32 = 7003;
    /// Unknown X-Auth-Key or X-Auth-Email.
    pub const UNKNOWN_KEY: u32 = 9103;
    /// No credentials.
    pub const MISSING_CREDENTIALS: u32 = 9106;
    /// Not allowed to access the resource.
    pub const UNAUTHORIZED: u32 = 9109;
    /// Too many requests.
    pub const RATE_LIMITED: u32 = 971;
    /// Authentication error (unknown token).
    pub const AUTHENTICATION: u32 = 10000;
}

/// A failure answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    errors: Vec<ResponseMessage>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn one(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            errors: vec![ResponseMessage::new(code, message)],
            retry_after: None,
        }
    }

    fn chained(status: StatusCode, code: u32, message: &str, cause: ResponseMessage) -> Self {
        let mut outer = ResponseMessage::new(code, message);
        outer.error_chain = Some(vec![cause]);
        ApiError {
            status,
            errors: vec![outer],
            retry_after: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// No credential at all.
    pub fn missing_credentials() -> Self {
        Self::one(
            StatusCode::BAD_REQUEST,
            codes::MISSING_CREDENTIALS,
            "Missing X-Auth-Key, X-Auth-Email or Authorization headers",
        )
    }

    /// A malformed `Authorization` header.
    pub fn bad_authorization_header() -> Self {
        Self::chained(
            StatusCode::BAD_REQUEST,
            codes::INVALID_HEADERS,
            "Invalid request headers",
            ResponseMessage::new(
                codes::BAD_AUTHORIZATION,
                "Invalid format for Authorization header",
            ),
        )
    }

    /// A malformed `X-Auth-Key` header.
    pub fn bad_key_header() -> Self {
        Self::chained(
            StatusCode::BAD_REQUEST,
            codes::INVALID_HEADERS,
            "Invalid request headers",
            ResponseMessage::new(
                codes::BAD_KEY_HEADER,
                "Invalid format for X-Auth-Key header",
            ),
        )
    }

    /// A malformed `X-Auth-Email` header.
    pub fn bad_email_header() -> Self {
        Self::chained(
            StatusCode::BAD_REQUEST,
            codes::INVALID_HEADERS,
            "Invalid request headers",
            ResponseMessage::new(
                codes::BAD_EMAIL_HEADER,
                "Invalid format for X-Auth-Email header",
            ),
        )
    }

    /// An unknown or revoked API token.
    pub fn authentication() -> Self {
        Self::one(
            StatusCode::FORBIDDEN,
            codes::AUTHENTICATION,
            "Authentication error",
        )
    }

    /// A wrong e-mail and global key pair.
    pub fn unknown_key() -> Self {
        Self::one(
            StatusCode::FORBIDDEN,
            codes::UNKNOWN_KEY,
            "Unknown X-Auth-Key or X-Auth-Email",
        )
    }

    /// A valid credential without the permission or outside its zones.
    pub fn unauthorized() -> Self {
        Self::one(
            StatusCode::FORBIDDEN,
            codes::UNAUTHORIZED,
            "Unauthorized to access requested resource",
        )
    }

    /// An unknown zone or pack, or a malformed id, in the request `path`.
    pub fn unknown_object(path: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            errors: vec![
                ResponseMessage::new(
                    codes::UNKNOWN_OBJECT,
                    format!(
                        "Could not route to {path}, perhaps your object identifier is invalid?"
                    ),
                ),
                ResponseMessage::new(codes::NO_ROUTE, "No route for that URI"),
            ],
            retry_after: None,
        }
    }

    /// A path no route matches.
    pub fn no_route() -> Self {
        Self::one(
            StatusCode::NOT_FOUND,
            codes::NO_ROUTE,
            "No route for that URI",
        )
    }

    /// A known path with a method it does not have.
    pub fn method_not_allowed() -> Self {
        Self::one(
            StatusCode::METHOD_NOT_ALLOWED,
            codes::METHOD_NOT_ALLOWED,
            "Method not allowed for this route",
        )
    }

    /// Too many requests; retry after `secs`.
    pub fn rate_limited(secs: u64) -> Self {
        ApiError {
            retry_after: Some(secs),
            ..Self::one(
                StatusCode::TOO_MANY_REQUESTS,
                codes::RATE_LIMITED,
                "Please wait and consider throttling your request speed",
            )
        }
    }

    /// A body that is not a JSON object.
    pub fn malformed_body(detail: impl std::fmt::Display) -> Self {
        Self::one(
            StatusCode::BAD_REQUEST,
            codes::MALFORMED_BODY,
            format!("Malformed JSON in request body: {detail}"),
        )
    }

    /// A body over the size limit.
    pub fn body_too_large(limit: usize) -> Self {
        Self::one(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::BODY_TOO_LARGE,
            format!("Request body is larger than {limit} bytes"),
        )
    }

    /// A body field with a wrong type or value.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = if message.contains(field) {
            message
        } else {
            format!("{field}: {message}")
        };
        let mut msg = ResponseMessage::new(codes::INVALID_FIELD, message);
        msg.source = Some(MessageSource {
            pointer: Some(format!("/{field}")),
        });
        ApiError {
            status: StatusCode::BAD_REQUEST,
            errors: vec![msg],
            retry_after: None,
        }
    }

    /// An invalid query parameter.
    pub fn invalid_parameter(name: &str, message: impl Into<String>) -> Self {
        Self::one(
            StatusCode::BAD_REQUEST,
            codes::INVALID_PARAMETER,
            format!("Invalid query parameter {name}: {}", message.into()),
        )
    }

    /// The zone's quota is used up.
    pub fn quota_exceeded(allocated: u64) -> Self {
        Self::one(
            StatusCode::BAD_REQUEST,
            codes::QUOTA_EXCEEDED,
            format!(
                "Certificate pack quota exceeded: this zone may hold {allocated} advanced certificate packs"
            ),
        )
    }

    /// The pack's state does not allow the operation.
    pub fn wrong_state(message: impl Into<String>) -> Self {
        Self::one(StatusCode::BAD_REQUEST, codes::WRONG_STATE, message)
    }

    /// A duplicate name.
    pub fn duplicate(message: impl Into<String>) -> Self {
        Self::one(StatusCode::BAD_REQUEST, codes::DUPLICATE, message)
    }

    /// A request that is not well-formed HTTP.
    pub fn malformed_request(detail: impl std::fmt::Display) -> Self {
        Self::one(
            StatusCode::BAD_REQUEST,
            codes::MALFORMED_REQUEST,
            format!("Malformed HTTP request: {detail}"),
        )
    }

    /// A request URI over the limit.
    pub fn uri_too_long(limit: usize) -> Self {
        Self::one(
            StatusCode::URI_TOO_LONG,
            codes::URI_TOO_LONG,
            format!("Request URI is longer than {limit} bytes"),
        )
    }

    /// A request head over the limits.
    pub fn headers_too_large(limit: usize, fields: usize) -> Self {
        Self::one(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            codes::HEADERS_TOO_LARGE,
            format!("Request headers are larger than {limit} bytes or more than {fields} fields"),
        )
    }

    /// A request body that did not arrive within `limit`.
    pub fn request_timeout(limit: std::time::Duration) -> Self {
        Self::one(
            StatusCode::REQUEST_TIMEOUT,
            codes::REQUEST_TIMEOUT,
            format!(
                "The request body did not arrive within {} seconds",
                limit.as_secs()
            ),
        )
    }

    /// The server holds as many connections as it may.
    pub fn too_many_connections() -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::one(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::TOO_MANY_CONNECTIONS,
                "Too many open connections; try again shortly",
            )
        }
    }

    /// The client's address holds as many connections as one client may.
    pub fn too_many_connections_from_client() -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::one(
                StatusCode::TOO_MANY_REQUESTS,
                codes::TOO_MANY_CONNECTIONS,
                "Too many open connections from this address; reuse or close some",
            )
        }
    }

    /// The whole HTTP/1.1 answer, for the connection layer, which writes it to the
    /// socket itself (before a request exists) and then closes the connection.
    pub fn http1_bytes(&self) -> Vec<u8> {
        let body = serde_json::to_vec(&Envelope::<()>::failure(self.errors.clone()))
            .unwrap_or_else(|_| {
                br#"{"success":false,"errors":[],"messages":[],"result":null}"#.to_vec()
            });
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if let Some(secs) = self.retry_after {
            out.push_str(&format!("retry-after: {secs}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }

    /// `/readyz` when the server is not ready, with each reason.
    pub fn not_ready(reasons: &[String]) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            errors: reasons
                .iter()
                .map(|r| ResponseMessage::new(codes::NOT_READY, r.clone()))
                .collect(),
            retry_after: Some(5),
        }
    }

    /// An internal failure: the cause is logged, the client sees a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::one(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "Internal server error",
        )
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::QuotaExceeded { allocated } => {
                ApiError::quota_exceeded(allocated)
            }
            crate::store::StoreError::Duplicate(what) => {
                ApiError::duplicate(format!("{what} already exists"))
            }
            // Another writer (a server on the same database, an admin command) held the
            // lock past the busy timeout: the request may succeed in a moment.
            crate::store::StoreError::Busy(cause) => {
                tracing::warn!(%cause, "database busy");
                ApiError {
                    retry_after: Some(1),
                    ..Self::one(
                        StatusCode::SERVICE_UNAVAILABLE,
                        codes::INTERNAL,
                        "The database is busy; try again shortly",
                    )
                }
            }
            // The database cannot be reached (PostgreSQL down or restarting, a
            // connection refused or broken, the data directory gone read-only): the
            // request may succeed once it is back, which the store notices by itself.
            crate::store::StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                ApiError {
                    retry_after: Some(5),
                    ..Self::one(
                        StatusCode::SERVICE_UNAVAILABLE,
                        codes::DATABASE_UNAVAILABLE,
                        "The database is unavailable; try again shortly",
                    )
                }
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope::<()>::failure(self.errors);
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn a_busy_database_is_a_503_to_retry_and_other_failures_are_internal() {
        let busy = ApiError::from(StoreError::Busy("database is locked".into()));
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.retry_after, Some(1));
        assert_eq!(busy.errors[0].code, codes::INTERNAL);
        let down = ApiError::from(StoreError::Unavailable("connection refused".into()));
        assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.retry_after, Some(5));
        assert_eq!(down.errors[0].code, codes::DATABASE_UNAVAILABLE);
        assert!(down.errors[0].message.contains("database is unavailable"));
        for other in [
            StoreError::Database("x".into()),
            StoreError::Corrupt("x".into()),
        ] {
            let e = ApiError::from(other);
            assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(e.retry_after, None);
        }
    }
}
