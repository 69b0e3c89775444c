//! Reading request parts into checked values: bodies, query parameters, path ids.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The path's parameters (zone and pack ids). A parameter that does not decode
/// (`%ff`, not UTF-8) is an id that names nothing: 404 in the envelope, as a malformed
/// id is, where axum's own extractor answers 400 in plain text.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(_) => {
                let path = parts
                    .extensions
                    .get::<OriginalUri>()
                    .map_or(parts.uri.path(), |uri| uri.0.path());
                Err(ApiError::unknown_object(path))
            }
        }
    }
}

/// The body as a JSON object. An empty body counts as `{}` when `empty_ok`.
pub fn json_object(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    empty_ok: bool,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(limit)
        } else {
            ApiError::malformed_body(rejection.body_text())
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(Map::new())
        } else {
            Err(ApiError::malformed_body("the body is empty"))
        };
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::malformed_body("the body must be a JSON object")),
        Err(e) => Err(ApiError::malformed_body(e)),
    }
}

/// A required string field.
pub fn required_str<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a str, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ApiError::invalid_field(
            field,
            format!("{field} is required"),
        )),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ApiError::invalid_field(
            field,
            format!("{field} must be a string, got {}", kind(other)),
        )),
    }
}

/// An optional boolean field.
pub fn optional_bool(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::invalid_field(
            field,
            format!("{field} must be a boolean, got {}", kind(other)),
        )),
    }
}

/// A required field that must be one of `allowed` (strings).
pub fn one_of<'a>(
    body: &'a Map<String, Value>,
    field: &str,
    allowed: &[&str],
) -> Result<&'a str, ApiError> {
    let value = required_str(body, field)?;
    if allowed.contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid_field(
            field,
            format!(
                "{field} must be one of {}, got {value:?}",
                allowed.join(", ")
            ),
        ))
    }
}

/// A required whole-number field.
pub fn required_u32(body: &Map<String, Value>, field: &str) -> Result<u32, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ApiError::invalid_field(
            field,
            format!("{field} is required"),
        )),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                ApiError::invalid_field(field, format!("{field} must be a whole number, got {n}"))
            }),
        Some(other) => Err(ApiError::invalid_field(
            field,
            format!("{field} must be a number, got {}", kind(other)),
        )),
    }
}

/// A required array of strings.
pub fn required_strings(body: &Map<String, Value>, field: &str) -> Result<Vec<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ApiError::invalid_field(
            field,
            format!("{field} is required"),
        )),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(ApiError::invalid_field(
                    field,
                    format!("{field} must contain strings only, got {}", kind(other)),
                )),
            })
            .collect(),
        Some(other) => Err(ApiError::invalid_field(
            field,
            format!("{field} must be an array of strings, got {}", kind(other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Query parameters, last value winning.
#[derive(Debug, Default)]
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        match raw {
            None => Ok(QueryParams::default()),
            Some(q) => serde_urlencoded_pairs(q).map(QueryParams),
        }
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A whole number in `min..=max`, or `default` when absent.
    pub fn number(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        let n: u64 = raw
            .parse::<u64>()
            .ok()
            .or_else(|| {
                raw.parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .ok_or_else(|| {
                ApiError::invalid_parameter(name, format!("expected a whole number, got {raw:?}"))
            })?;
        if n < min || n > max {
            return Err(ApiError::invalid_parameter(
                name,
                format!("must be between {min} and {max}, got {n}"),
            ));
        }
        Ok(n)
    }
}

fn serde_urlencoded_pairs(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{q}")
            .parse()
            .map_err(|_| ApiError::invalid_parameter("query", "the query string is not valid"))?,
    )
    .map(|axum::extract::Query(pairs)| pairs)
    .map_err(|_| ApiError::invalid_parameter("query", "the query string is not valid"))
}
