//! Authentication (who is calling) and authorization (may they do this), per the table
//! in domain.md: Bearer tokens or e-mail + global key, on every endpoint.

use super::error::ApiError;
use crate::model::{Need, Principal, ZoneId};
use crate::secrets;
use crate::store::{Reads, Store};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};

/// The principal the rate limiter authenticated (once per request), for the handler.
#[derive(Debug, Clone)]
pub(super) struct Authenticated(pub(super) Principal);

/// A request's credentials: its headers, and its principal when the rate limiter has
/// authenticated it already.
#[derive(Debug)]
pub(super) struct Caller {
    headers: HeaderMap,
    known: Option<Principal>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            headers: parts.headers.clone(),
            known: parts.extensions.get::<Authenticated>().map(|a| a.0.clone()),
        })
    }
}

impl Caller {
    /// The request's headers.
    pub(super) fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The principal already authenticated, if any.
    pub(super) fn known(&self) -> Option<&Principal> {
        self.known.as_ref()
    }
}

/// The caller: `known` when already authenticated, else from the credential of `headers`.
pub async fn principal(
    reads: &Reads<'_>,
    headers: &HeaderMap,
    known: Option<&Principal>,
) -> Result<Principal, ApiError> {
    match known {
        Some(p) => Ok(p.clone()),
        None => authenticate(reads, &credential(headers)?).await,
    }
}

/// The credential a request presents, parsed but not yet checked. A token borrows the
/// request's header: copying it into a `String` for every request only to hash it was
/// an allocation and its free on the API's hottest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `Authorization: Bearer <token>`.
    Token(&'a str),
    /// `X-Auth-Email` + `X-Auth-Key`.
    GlobalKey {
        /// The user's e-mail.
        email: String,
        /// The global key.
        key: String,
    },
}

/// The e-mail header of the global-key scheme.
static X_AUTH_EMAIL: HeaderName = HeaderName::from_static("x-auth-email");
/// The key header of the global-key scheme.
static X_AUTH_KEY: HeaderName = HeaderName::from_static("x-auth-key");

/// A header's value, trimmed. By `HeaderName`: a `&str` name is parsed (lower-cased and
/// checked) at every lookup, on every request.
fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ()> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| ()),
    }
}

/// Reads the credential of a request. A token wins when both kinds are sent (the
/// TypeScript SDK sends every credential it was given).
pub fn credential(headers: &HeaderMap) -> Result<Credential<'_>, ApiError> {
    if let Some(value) =
        header(headers, &AUTHORIZATION).map_err(|_| ApiError::bad_authorization_header())?
    {
        let (scheme, token) = value
            .split_once(' ')
            .ok_or_else(ApiError::bad_authorization_header)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || !secrets::looks_like_token(token) {
            return Err(ApiError::bad_authorization_header());
        }
        return Ok(Credential::Token(token));
    }
    let email = header(headers, &X_AUTH_EMAIL).map_err(|_| ApiError::bad_email_header())?;
    let key = header(headers, &X_AUTH_KEY).map_err(|_| ApiError::bad_key_header())?;
    match (email, key) {
        (Some(email), Some(key)) => {
            if !secrets::looks_like_email(email) {
                return Err(ApiError::bad_email_header());
            }
            if !secrets::looks_like_global_key(key) {
                return Err(ApiError::bad_key_header());
            }
            Ok(Credential::GlobalKey {
                email: email.to_ascii_lowercase(),
                key: key.to_ascii_lowercase(),
            })
        }
        _ => Err(ApiError::missing_credentials()),
    }
}

/// Checks a credential against the store.
pub async fn authenticate(
    reads: &Reads<'_>,
    credential: &Credential<'_>,
) -> Result<Principal, ApiError> {
    match credential {
        Credential::Token(secret) => {
            let hash = secrets::hash(secret);
            match reads.token_by_hash(&hash).await? {
                Some(token) if secrets::hashes_match(&token.secret_hash, &hash) => {
                    Ok(Principal::Token(token))
                }
                _ => Err(ApiError::authentication()),
            }
        }
        Credential::GlobalKey { email, key } => {
            let hash = secrets::hash(key);
            match reads.user_by_email(email).await? {
                Some(user) if secrets::hashes_match(&user.key_hash, &hash) => {
                    Ok(Principal::User(user))
                }
                _ => Err(ApiError::unknown_key()),
            }
        }
    }
}

/// Authenticates a request and checks it may do `need` (on `zone`, when given).
pub(super) async fn authorize(
    store: &Store,
    caller: &Caller,
    need: Need,
    zone: Option<&ZoneId>,
) -> Result<Principal, ApiError> {
    let principal = principal(&store.reads(), caller.headers(), caller.known()).await?;
    if !principal.has(need) || zone.is_some_and(|z| !principal.covers_zone(z)) {
        return Err(ApiError::unauthorized());
    }
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn parses_both_schemes() {
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer abc_DEF-1")])).unwrap(),
            Credential::Token("abc_DEF-1")
        );
        assert!(matches!(
            credential(&headers(&[
                ("x-auth-email", "User@Example.com"),
                ("x-auth-key", "144c9defac04969c7bfad8efaa8ea194")
            ])),
            Ok(Credential::GlobalKey { .. })
        ));
    }

    #[test]
    fn refuses_malformed_and_missing() {
        let status = |h: HeaderMap| credential(&h).unwrap_err().status().as_u16();
        assert_eq!(status(headers(&[])), 400);
        assert_eq!(status(headers(&[("authorization", "Basic abc")])), 400);
        assert_eq!(status(headers(&[("authorization", "Bearer a b")])), 400);
        assert_eq!(status(headers(&[("authorization", "Bearer")])), 400);
        assert_eq!(
            status(headers(&[("x-auth-email", "user@example.com")])),
            400
        );
        assert_eq!(
            status(headers(&[
                ("x-auth-email", "nope"),
                ("x-auth-key", "144c9defac04969c7bfad8efaa8ea194")
            ])),
            400
        );
        assert_eq!(
            status(headers(&[
                ("x-auth-email", "user@example.com"),
                ("x-auth-key", "zz")
            ])),
            400
        );
    }
}
