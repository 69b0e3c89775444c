//! The client, its configuration, and the one place requests are sent and retried.

use crate::error::{ApiError, Error, Result};
use crate::retry::{self, RetryPolicy};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use zonecert_api::{Envelope, ResponseMessage};

/// Where requests go when neither the builder nor `CLOUDFLARE_BASE_URL` says otherwise.
pub const DEFAULT_BASE_URL: &str = "https://api.cloudflare.com/client/v4";
/// How long one attempt may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times a failed request is retried.
pub const DEFAULT_MAX_RETRIES: u32 = 2;

/// Bodies of failed answers are kept up to this many bytes for the error message.
const KEPT_BODY_BYTES: usize = 512;

/// How requests prove who sends them.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// An API token, sent as `Authorization: Bearer <token>` (the preferred scheme).
    ApiToken(String),
    /// A user's global API key and e-mail, sent as `X-Auth-Key` and `X-Auth-Email`.
    ApiKey {
        /// The account's e-mail address.
        email: String,
        /// The global API key.
        key: String,
    },
}

impl fmt::Debug for Credentials {
    // Secrets stay out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::ApiToken(_) => f.write_str("ApiToken(<redacted>)"),
            Credentials::ApiKey { email, .. } => f
                .debug_struct("ApiKey")
                .field("email", email)
                .field("key", &"<redacted>")
                .finish(),
        }
    }
}

/// A client of the Cloudflare API (or of a zonecert server, which speaks the same API).
///
/// Cheap to clone: clones share one connection pool. Resources hang off it the way
/// they do in the official SDKs: [`Client::ssl`], [`Client::zones`], [`Client::user`].
///
/// ```no_run
/// # async fn run() -> Result<(), zonecert_client::Error> {
/// use std::time::Duration;
/// use zonecert_client::Client;
///
/// let client = Client::builder()
///     .base_url("http://127.0.0.1:8443/client/v4/")
///     .api_token("Sn3lZJTBX6kkg7OdcBUAxOO963GEIyGQqnFTOFYY")
///     .timeout(Duration::from_secs(10))
///     .max_retries(3)
///     .build()?;
/// let quota = client.ssl().certificate_packs().quota("023e105f4ecef8ad9ca31a8372d0c353").await?;
/// println!("{quota:?}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    credentials: Option<Credentials>,
    timeout: Duration,
    retry: RetryPolicy,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url.as_str())
            .field("credentials", &self.inner.credentials)
            .field("timeout", &self.inner.timeout)
            .field("max_retries", &self.inner.retry.max_retries)
            .finish()
    }
}

impl Client {
    /// A client configured from the environment, like the official SDKs:
    ///
    /// - `CLOUDFLARE_API_TOKEN`, or else `CLOUDFLARE_API_KEY` with `CLOUDFLARE_EMAIL`;
    /// - `CLOUDFLARE_BASE_URL`, by default [`DEFAULT_BASE_URL`].
    ///
    /// Fails with [`Error::Config`] when no credentials are set, when only one of
    /// key and e-mail is set, or when the base URL is not an `http(s)` URL.
    pub fn from_env() -> Result<Client> {
        let builder = ClientBuilder::from_env();
        if builder.token.is_none() && builder.key.is_none() && builder.email.is_none() {
            return Err(Error::Config(
                "no credentials: set CLOUDFLARE_API_TOKEN, or CLOUDFLARE_API_KEY and CLOUDFLARE_EMAIL"
                    .into(),
            ));
        }
        builder.build()
    }

    /// A builder starting from the defaults (no credentials, the Cloudflare base URL).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The base URL every path is appended to.
    pub fn base_url(&self) -> &str {
        self.inner.base_url.as_str()
    }

    /// Sends a request and returns its whole envelope, with retries and typed errors.
    ///
    /// The resource methods are built on this; it is public for endpoints this crate
    /// does not wrap, and for callers that want the API's JSON unchanged
    /// (`T = serde_json::Value`). Every resource's parameters can produce their
    /// request, e.g. [`VerificationGetParams::to_request`](crate::VerificationGetParams::to_request).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), zonecert_client::Error> {
    /// use zonecert_client::{ApiRequest, Client};
    ///
    /// let client = Client::from_env()?;
    /// let request = ApiRequest::get(["zones", "023e105f4ecef8ad9ca31a8372d0c353", "ssl", "verification"]);
    /// let envelope = client.request::<serde_json::Value>(&request).await?;
    /// println!("{}", envelope.result.unwrap_or_default());
    /// # Ok(()) }
    /// ```
    pub async fn request<T: DeserializeOwned>(&self, request: &ApiRequest) -> Result<Envelope<T>> {
        let url = self.url_of(request)?;
        let policy = self.inner.retry;
        let mut retries = 0;
        loop {
            match self.attempt(request, &url, retries).await {
                Attempt::Finished(result) => return result,
                Attempt::Failed {
                    error,
                    retryable,
                    wait,
                } => {
                    let wait_ok = wait.is_none_or(retry::wait_is_honoured);
                    if !retryable || !wait_ok || retries >= policy.max_retries {
                        return Err(error);
                    }
                    tokio::time::sleep(wait.unwrap_or_else(|| policy.backoff(retries))).await;
                    retries += 1;
                }
            }
        }
    }

    /// The URL of a request: the base URL with each path segment appended, encoded.
    fn url_of(&self, request: &ApiRequest) -> Result<Url> {
        let mut url = self.inner.base_url.clone();
        if request.test_controls {
            // zonecert's test controls live beside the API, outside Cloudflare's
            // namespace: `<server>/_zonecert/v1/...` for a base URL `<server>/client/v4`.
            let path = url.path().trim_end_matches('/');
            let root = path.strip_suffix(crate::controls::API_PATH).unwrap_or(path);
            let controls = format!("{root}{}", crate::controls::CONTROLS_PATH);
            url.set_path(&controls);
        }
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| Error::Config("the base URL cannot take a path".into()))?;
            // A trailing slash leaves an empty last segment; drop it so that
            // `.../client/v4/` and `.../client/v4` give the same URLs.
            segments.pop_if_empty();
            segments.extend(request.path.iter().map(String::as_str));
        }
        Ok(url)
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        request: &ApiRequest,
        url: &Url,
        retries: u32,
    ) -> Attempt<T> {
        let inner = &self.inner;
        let mut builder = inner
            .http
            .request(request.method.clone(), url.clone())
            .timeout(inner.timeout)
            .header("x-stainless-retry-count", retries.to_string());
        if !request.query.is_empty() {
            builder = builder.query(&request.query);
        }
        match &inner.credentials {
            Some(Credentials::ApiToken(token)) => builder = builder.bearer_auth(token),
            Some(Credentials::ApiKey { email, key }) => {
                builder = builder
                    .header("X-Auth-Email", email)
                    .header("X-Auth-Key", key);
            }
            None => {}
        }
        match &request.body {
            Some(Ok(bytes)) => {
                builder = builder
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bytes.clone());
            }
            Some(Err(message)) => {
                return Attempt::Finished(Err(Error::Config(format!(
                    "the request body cannot be encoded: {message}"
                ))));
            }
            None => {}
        }

        let response = match builder.send().await {
            Ok(response) => response,
            Err(e) => {
                // A connection that was never opened carried no request: safe to repeat.
                let unsent = e.is_connect();
                return Attempt::Failed {
                    retryable: request.idempotent || unsent,
                    wait: None,
                    error: self.transport_error(e),
                };
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                return Attempt::Failed {
                    retryable: request.idempotent,
                    wait: None,
                    error: self.transport_error(e),
                };
            }
        };

        if status.is_success() {
            return Attempt::Finished(decode_success(status, &headers, &body));
        }
        let wait = retry::requested_wait(&headers);
        let retryable = retry::server_says_retry(&headers)
            .unwrap_or_else(|| retry::status_is_retryable(status, request.idempotent));
        Attempt::Failed {
            error: Error::from_answer(api_error(status, &headers, &body), wait),
            retryable,
            wait,
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            Error::Timeout {
                after: self.inner.timeout,
            }
        } else {
            Error::Connection {
                source: Box::new(e),
            }
        }
    }
}

enum Attempt<T> {
    Finished(Result<Envelope<T>>),
    Failed {
        error: Error,
        retryable: bool,
        wait: Option<Duration>,
    },
}

fn decode_success<T: DeserializeOwned>(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Envelope<T>> {
    let envelope: Envelope<T> = serde_json::from_slice(body).map_err(|e| Error::Decode {
        status: status.as_u16(),
        message: e.to_string(),
        body: body_start(body),
    })?;
    // The live API has answered 200 with `"success": false`; that is a failure.
    if !envelope.success && !envelope.errors.is_empty() {
        return Err(Error::from_answer(
            ApiError {
                status: status.as_u16(),
                errors: envelope.errors,
                messages: envelope.messages,
                ray_id: ray_id(headers),
                body: None,
            },
            None,
        ));
    }
    Ok(envelope)
}

fn api_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ApiError {
    #[derive(serde::Deserialize)]
    struct ErrorEnvelope {
        #[serde(default)]
        errors: Vec<ResponseMessage>,
        #[serde(default)]
        messages: Vec<ResponseMessage>,
    }
    let (errors, messages, body) = match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(env) => (env.errors, env.messages, None),
        // Not an envelope: a proxy's page or an empty body. Keep its start for the message.
        Err(_) => (Vec::new(), Vec::new(), Some(body_start(body))),
    };
    ApiError {
        status: status.as_u16(),
        errors,
        messages,
        ray_id: ray_id(headers),
        body,
    }
}

fn ray_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("cf-ray")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn body_start(body: &[u8]) -> String {
    let end = body.len().min(KEPT_BODY_BYTES);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// Configures a [`Client`].
///
/// ```
/// use std::time::Duration;
/// use zonecert_client::Client;
///
/// let client = Client::builder()
///     .base_url("http://127.0.0.1:8443/client/v4")
///     .api_key("user@example.com", "144c9defac04969c7bfad8efaa8ea194")
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(client.base_url(), "http://127.0.0.1:8443/client/v4");
/// # Ok::<(), zonecert_client::Error>(())
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: String,
    token: Option<String>,
    email: Option<String>,
    key: Option<String>,
    timeout: Duration,
    retry: RetryPolicy,
    user_agent: String,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("email", &self.email)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.retry.max_retries)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            base_url: DEFAULT_BASE_URL.to_owned(),
            token: None,
            email: None,
            key: None,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            user_agent: concat!("zonecert-client/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl ClientBuilder {
    /// A builder filled from `CLOUDFLARE_API_TOKEN`, `CLOUDFLARE_API_KEY`,
    /// `CLOUDFLARE_EMAIL` and `CLOUDFLARE_BASE_URL`; empty variables count as unset.
    /// Later builder calls override what the environment said.
    pub fn from_env() -> ClientBuilder {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> ClientBuilder {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut builder = ClientBuilder::default();
        if let Some(url) = get("CLOUDFLARE_BASE_URL") {
            builder.base_url = url;
        }
        builder.token = get("CLOUDFLARE_API_TOKEN");
        builder.key = get("CLOUDFLARE_API_KEY");
        builder.email = get("CLOUDFLARE_EMAIL");
        builder
    }

    /// The API's base URL, with or without a trailing slash, e.g.
    /// `http://127.0.0.1:8443/client/v4`. Every path is appended to it.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Authenticates with an API token (takes precedence over a global key).
    pub fn api_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Authenticates with a user's e-mail and global API key.
    pub fn api_key(mut self, email: impl Into<String>, key: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self.key = Some(key.into());
        self
    }

    /// Sets the credentials, replacing any set before.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.token = None;
        self.email = None;
        self.key = None;
        match credentials {
            Credentials::ApiToken(token) => self.token = Some(token),
            Credentials::ApiKey { email, key } => {
                self.email = Some(email);
                self.key = Some(key);
            }
        }
        self
    }

    /// How long one attempt may take, answer included (60 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times a failed request is retried (2 by default; 0 disables retries).
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.retry.max_retries = max_retries;
        self
    }

    /// The wait before the first retry and the longest wait between retries, when the
    /// server does not say how long to wait (0.5 s and 8 s by default).
    pub fn retry_delay(mut self, initial: Duration, max: Duration) -> Self {
        self.retry.initial_delay = initial;
        self.retry.max_delay = max.max(initial);
        self
    }

    /// The `User-Agent` header (`zonecert-client/<version>` by default).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Builds the client.
    ///
    /// Fails with [`Error::Config`] when the base URL is not an `http(s)` URL, when
    /// only one of e-mail and key is set, or when a header value is not valid.
    pub fn build(self) -> Result<Client> {
        let base_url = Url::parse(self.base_url.trim())
            .map_err(|e| Error::Config(format!("invalid base URL {:?}: {e}", self.base_url)))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err(Error::Config(format!(
                "the base URL must be an http or https URL, not {:?}",
                self.base_url
            )));
        }
        let credentials = match (self.token, self.email, self.key) {
            (Some(token), _, _) => Some(Credentials::ApiToken(token)),
            (None, Some(email), Some(key)) => Some(Credentials::ApiKey { email, key }),
            (None, None, None) => None,
            (None, Some(_), None) => {
                return Err(Error::Config(
                    "an e-mail without an API key: set CLOUDFLARE_API_KEY too".into(),
                ));
            }
            (None, None, Some(_)) => {
                return Err(Error::Config(
                    "an API key without an e-mail: set CLOUDFLARE_EMAIL too".into(),
                ));
            }
        };
        // Invalid header bytes would otherwise fail every request; say so now.
        let header_ok = |v: &str| HeaderValue::from_str(v).is_ok();
        let valid = match &credentials {
            Some(Credentials::ApiToken(t)) => header_ok(&format!("Bearer {t}")),
            Some(Credentials::ApiKey { email, key }) => header_ok(email) && header_ok(key),
            None => true,
        };
        if !valid {
            return Err(Error::Config(
                "the credentials contain characters not allowed in HTTP headers".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .user_agent(self.user_agent)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base_url,
                credentials,
                timeout: self.timeout,
                retry: self.retry,
            }),
        })
    }
}

/// A request to the API: method, path under the base URL, query and JSON body.
///
/// Built by each resource's parameters (`to_request`) or by hand for endpoints this
/// crate does not wrap, and sent with [`Client::request`].
///
/// ```
/// use zonecert_client::ApiRequest;
///
/// let request = ApiRequest::get(["zones", "023e105f4ecef8ad9ca31a8372d0c353", "ssl", "verification"])
///     .query("retry", "true");
/// assert_eq!(request.path(), "zones/023e105f4ecef8ad9ca31a8372d0c353/ssl/verification");
/// assert!(request.is_idempotent());
/// ```
#[derive(Debug, Clone)]
pub struct ApiRequest {
    method: Method,
    path: Vec<String>,
    query: Vec<(String, String)>,
    body: Option<std::result::Result<Vec<u8>, String>>,
    idempotent: bool,
    test_controls: bool,
}

impl ApiRequest {
    /// A request with this method to these path segments (each is percent-encoded).
    ///
    /// GET, HEAD, PUT, DELETE and OPTIONS count as idempotent, POST and PATCH do not;
    /// [`ApiRequest::idempotent`] overrides that.
    pub fn new<S: Into<String>>(method: Method, path: impl IntoIterator<Item = S>) -> Self {
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        ApiRequest {
            method,
            path: path.into_iter().map(Into::into).collect(),
            query: Vec::new(),
            body: None,
            idempotent,
            test_controls: false,
        }
    }

    /// A GET request.
    pub fn get<S: Into<String>>(path: impl IntoIterator<Item = S>) -> Self {
        Self::new(Method::GET, path)
    }

    /// A POST request.
    pub fn post<S: Into<String>>(path: impl IntoIterator<Item = S>) -> Self {
        Self::new(Method::POST, path)
    }

    /// A PATCH request.
    pub fn patch<S: Into<String>>(path: impl IntoIterator<Item = S>) -> Self {
        Self::new(Method::PATCH, path)
    }

    /// A DELETE request.
    pub fn delete<S: Into<String>>(path: impl IntoIterator<Item = S>) -> Self {
        Self::new(Method::DELETE, path)
    }

    /// Adds a query parameter.
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    /// Sets the JSON body.
    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Self {
        self.body = Some(serde_json::to_vec(body).map_err(|e| e.to_string()));
        self
    }

    /// Declares whether sending the request twice has the effect of sending it once,
    /// which allows retrying it after a timeout or a dropped connection.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Sends the request to a zonecert server's test controls
    /// (`<server>/_zonecert/v1/<path>` for a base URL `<server>/client/v4`) instead of
    /// the API; see [`Client::test_controls`](crate::Client::test_controls).
    ///
    /// ```
    /// use zonecert_client::ApiRequest;
    ///
    /// let request = ApiRequest::get(["clock"]).at_test_controls();
    /// assert!(request.is_for_test_controls());
    /// ```
    pub fn at_test_controls(mut self) -> Self {
        self.test_controls = true;
        self
    }

    /// Whether the request goes to the test controls.
    pub fn is_for_test_controls(&self) -> bool {
        self.test_controls
    }

    /// The HTTP method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path under the base URL, segments joined by `/` (not encoded).
    pub fn path(&self) -> String {
        self.path.join("/")
    }

    /// Whether the request may be retried after it may have been applied.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// Sets or replaces a query parameter (used by the pager to move between pages).
    pub(crate) fn set_query(&mut self, name: &str, value: String) {
        match self.query.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.query.push((name.to_owned(), value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn base_url_with_or_without_trailing_slash_gives_the_same_urls() {
        for base in [
            "http://127.0.0.1:9/client/v4",
            "http://127.0.0.1:9/client/v4/",
        ] {
            let client = Client::builder().base_url(base).build().unwrap();
            let url = client
                .url_of(&ApiRequest::get(["zones", "z", "ssl", "verification"]))
                .unwrap();
            assert_eq!(
                url.as_str(),
                "http://127.0.0.1:9/client/v4/zones/z/ssl/verification"
            );
        }
    }

    #[test]
    fn test_controls_live_beside_the_api() {
        for (base, expected) in [
            (
                "http://127.0.0.1:9/client/v4",
                "http://127.0.0.1:9/_zonecert/v1/clock/advance",
            ),
            (
                "http://127.0.0.1:9/client/v4/",
                "http://127.0.0.1:9/_zonecert/v1/clock/advance",
            ),
            (
                "http://127.0.0.1:9/proxy/client/v4",
                "http://127.0.0.1:9/proxy/_zonecert/v1/clock/advance",
            ),
        ] {
            let client = Client::builder().base_url(base).build().unwrap();
            let request = ApiRequest::post(["clock", "advance"]).at_test_controls();
            assert_eq!(client.url_of(&request).unwrap().as_str(), expected);
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        let client = Client::builder()
            .base_url("http://127.0.0.1:9/v4")
            .build()
            .unwrap();
        let url = client
            .url_of(&ApiRequest::get(["zones", "../x?y"]))
            .unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9/v4/zones/..%2Fx%3Fy");
    }

    #[test]
    fn environment_is_read_like_the_official_sdks() {
        let b = ClientBuilder::from_lookup(lookup(&[
            ("CLOUDFLARE_API_KEY", "k"),
            ("CLOUDFLARE_EMAIL", "e@example.com"),
            ("CLOUDFLARE_API_TOKEN", ""),
        ]));
        let client = b.build().unwrap();
        assert_eq!(client.base_url(), DEFAULT_BASE_URL);
        assert_eq!(
            client.inner.credentials,
            Some(Credentials::ApiKey {
                email: "e@example.com".into(),
                key: "k".into()
            })
        );
        let client = ClientBuilder::from_lookup(lookup(&[
            ("CLOUDFLARE_API_TOKEN", "t"),
            ("CLOUDFLARE_API_KEY", "k"),
            ("CLOUDFLARE_EMAIL", "e@example.com"),
            ("CLOUDFLARE_BASE_URL", "http://127.0.0.1:1/client/v4"),
        ]))
        .build()
        .unwrap();
        assert_eq!(
            client.inner.credentials,
            Some(Credentials::ApiToken("t".into()))
        );
        assert_eq!(client.base_url(), "http://127.0.0.1:1/client/v4");
        let half = ClientBuilder::from_lookup(lookup(&[("CLOUDFLARE_API_KEY", "k")])).build();
        assert!(matches!(half, Err(Error::Config(_))));
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for url in ["not a url", "mailto:a@b.c", "ftp://x/y"] {
            assert!(matches!(
                Client::builder().base_url(url).build(),
                Err(Error::Config(_))
            ));
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let client = Client::builder()
            .api_key("e@example.com", "secret-key")
            .build()
            .unwrap();
        let text = format!(
            "{client:?} {:?}",
            Client::builder().api_token("secret-token")
        );
        assert!(!text.contains("secret"), "{text}");
    }
}
