//! The response envelope every endpoint answers with.

use serde::{Deserialize, Serialize};

/// `{"success":..,"errors":[..],"messages":[..],"result":..}`, with `result_info` on lists.
///
/// ```
/// use zonecert_api::Envelope;
/// let body = r#"{"success":true,"errors":[],"messages":[],"result":[1,2]}"#;
/// let env: Envelope<Vec<u32>> = serde_json::from_str(body).unwrap();
/// assert_eq!(env.result, Some(vec![1, 2]));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
// The doc comment's example is for Rust readers; the schema gets a sentence.
#[cfg_attr(
    feature = "schema",
    schemars(
        rename = "Envelope_{T}",
        description = "The envelope every answer comes in: `success`, `errors`, `messages`, \
                       `result`, and `result_info` on lists."
    )
)]
pub struct Envelope<T> {
    /// Whether the call succeeded.
    #[serde(default)]
    pub success: bool,
    /// Errors; empty on success.
    #[serde(default)]
    pub errors: Vec<ResponseMessage>,
    /// Informational messages.
    #[serde(default)]
    pub messages: Vec<ResponseMessage>,
    /// The payload; `null` on failure.
    // A path rather than plain `default`: serde would otherwise demand `T: Default`.
    #[serde(default = "Option::<T>::default")]
    pub result: Option<T>,
    /// Pagination of list endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_info: Option<ResultInfo>,
}

impl<T> Envelope<T> {
    /// A successful envelope around `result`.
    pub fn ok(result: T) -> Self {
        Envelope {
            success: true,
            errors: Vec::new(),
            messages: Vec::new(),
            result: Some(result),
            result_info: None,
        }
    }

    /// A failed envelope carrying `errors` and a `null` result.
    pub fn failure(errors: Vec<ResponseMessage>) -> Self {
        Envelope {
            success: false,
            errors,
            messages: Vec::new(),
            result: None,
            result_info: None,
        }
    }
}

/// One entry of `errors` or `messages`.
///
/// Codes are integers of 1000 and more; they are kept as `u32` (Cloudflare's codes
/// pass 65,535, so a `u16` would truncate them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResponseMessage {
    /// The numeric code, e.g. `10000` for an authentication error.
    #[cfg_attr(feature = "schema", schemars(range(min = 1000)))]
    pub code: u32,
    /// Human-readable text.
    pub message: String,
    /// Causes, outermost first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_chain: Option<Vec<ResponseMessage>>,
    /// A link to documentation about this code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
    /// Where in the request the problem is (`{"pointer": "/hosts/0"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<MessageSource>,
}

impl ResponseMessage {
    /// A message with a code and text and nothing else.
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        ResponseMessage {
            code,
            message: message.into(),
            error_chain: None,
            documentation_url: None,
            source: None,
        }
    }
}

/// The part of a request an error message points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MessageSource {
    /// A JSON pointer into the request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

/// Pagination of a list response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResultInfo {
    /// The page returned, from 1.
    #[serde(default)]
    pub page: u64,
    /// The page size asked for.
    #[serde(default)]
    pub per_page: u64,
    /// How many items this page holds.
    #[serde(default)]
    pub count: u64,
    /// How many items all pages hold.
    #[serde(default)]
    pub total_count: u64,
    /// How many pages there are.
    #[serde(default)]
    pub total_pages: u64,
}
