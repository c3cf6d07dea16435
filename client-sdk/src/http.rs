//! Typed calls to the Client-Server API over reqwest (rustls): URL
//! building with per-segment escaping, the access token, error mapping, and
//! retries with backoff.

use std::{sync::RwLock, time::Duration};

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{
    error::{Error, ErrorKind, MatrixError, Result},
    session::AccessToken,
};

/// How often and how patiently a request is retried after a transient
/// failure (network error, 5xx, 429). A server's `retry_after_ms` always
/// wins over the computed backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; `None` retries until the
    /// caller cancels (the sync loop's default).
    pub max_attempts: Option<u32>,
    /// The wait after the first failure; it doubles after each further one.
    pub initial_backoff: Duration,
    /// The longest computed wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts, waiting 0.5 s, 1 s, 2 s, 4 s (at most 30 s).
    fn default() -> Self {
        Self {
            max_attempts: Some(5),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        Self {
            max_attempts: Some(1),
            ..Self::default()
        }
    }

    /// The wait before attempt `failures + 1`, after `error`.
    pub(crate) fn delay(&self, failures: u32, error: &Error) -> Duration {
        error.retry_after().unwrap_or_else(|| {
            let factor = 2u32.saturating_pow(failures.saturating_sub(1));
            self.initial_backoff
                .saturating_mul(factor)
                .min(self.max_backoff)
        })
    }

    /// Whether another attempt is allowed after `failures` failed ones.
    pub(crate) fn allows_another(&self, failures: u32) -> bool {
        self.max_attempts.is_none_or(|max| failures < max)
    }
}

/// One API request. Paths are lists of segments, escaped one by one, so an
/// ID with `/` or `#` in it cannot change the endpoint.
/// `Debug` shows the route, never the body or the query's values (a body
/// can hold a password, a room key bundle, key material).
#[derive(Clone)]
pub(crate) struct Request {
    method: Method,
    api: &'static str,
    version: &'static str,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    body: Option<Body>,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let query: Vec<&str> = self.query.iter().map(|(name, _)| name.as_str()).collect();
        let body = match &self.body {
            None => "none".to_owned(),
            Some(Body::Json(_)) => "json".to_owned(),
            Some(Body::Bytes { data, .. }) => format!("{} bytes", data.len()),
        };
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("api", &self.api)
            .field("version", &self.version)
            .field("segments", &self.segments)
            .field("query", &query)
            .field("body", &body)
            .finish_non_exhaustive()
    }
}

/// A request body: JSON for the API, raw bytes for media uploads.
#[derive(Clone)]
enum Body {
    Json(Value),
    Bytes {
        data: bytes::Bytes,
        content_type: String,
    },
}

impl Request {
    /// `method /_matrix/client/v3/<segments>`.
    pub(crate) fn v3(method: Method, segments: &[&str]) -> Self {
        Self::under("client", "v3", method, segments)
    }

    /// `method /_matrix/client/v1/<segments>` (authenticated media lives here).
    pub(crate) fn client_v1(method: Method, segments: &[&str]) -> Self {
        Self::under("client", "v1", method, segments)
    }

    /// `method /_matrix/client/unstable/org.matrix.msc3814.v1/<segments>`
    /// (dehydrated devices).
    pub(crate) fn msc3814(method: Method, segments: &[&str]) -> Self {
        Self::under("client", "unstable/org.matrix.msc3814.v1", method, segments)
    }

    /// `method /_matrix/media/v3/<segments>` (uploads).
    pub(crate) fn media_v3(method: Method, segments: &[&str]) -> Self {
        Self::under("media", "v3", method, segments)
    }

    fn under(api: &'static str, version: &'static str, method: Method, segments: &[&str]) -> Self {
        Self {
            method,
            api,
            version,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
            timeout: None,
        }
    }

    /// Adds a query parameter.
    pub(crate) fn query(mut self, name: &str, value: impl Into<String>) -> Self {
        self.query.push((name.to_owned(), value.into()));
        self
    }

    /// Sets the JSON body.
    pub(crate) fn json(mut self, body: Value) -> Self {
        self.body = Some(Body::Json(body));
        self
    }

    /// Sets a raw body (a media upload). `Bytes` clones cheaply, so a
    /// retried upload does not copy the file.
    pub(crate) fn bytes(mut self, data: bytes::Bytes, content_type: &str) -> Self {
        self.body = Some(Body::Bytes {
            data,
            content_type: content_type.to_owned(),
        });
        self
    }

    /// Overrides the client's request timeout (long polls).
    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The HTTP side of a client: one connection pool, one homeserver, the
/// current access token.
#[derive(Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
    homeserver: Url,
    token: RwLock<Option<AccessToken>>,
}

/// The time a request may take unless it says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Http {
    pub(crate) fn new(client: reqwest::Client, homeserver: Url) -> Self {
        Self {
            client,
            homeserver,
            token: RwLock::new(None),
        }
    }

    pub(crate) fn homeserver(&self) -> &Url {
        &self.homeserver
    }

    pub(crate) fn set_token(&self, token: Option<AccessToken>) {
        // A poisoned lock only means another thread panicked mid-assignment
        // of an Option; the value inside is still a whole Option.
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = token;
    }

    fn token(&self) -> Option<AccessToken> {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends `request` once and parses a successful answer as `T`.
    pub(crate) async fn send<T: DeserializeOwned>(&self, request: &Request) -> Result<T> {
        let (status, body) = self.send_raw(request).await?;
        if !status.is_success() {
            return Err(error_from_answer(status, &body, None));
        }
        parse(status, body)
    }

    /// Sends `request`, retrying transient failures under `policy` with
    /// the same request (so the same transaction id).
    pub(crate) async fn send_with_retries<T: DeserializeOwned>(
        &self,
        request: &Request,
        policy: &RetryPolicy,
    ) -> Result<T> {
        let mut failures = 0;
        loop {
            match self.send(request).await {
                Err(error) if error.is_transient() => {
                    failures += 1;
                    if !policy.allows_another(failures) {
                        return Err(error);
                    }
                    let delay = policy.delay(failures, &error);
                    tracing::debug!(
                        failures,
                        delay_ms = delay.as_millis() as u64,
                        "retrying request"
                    );
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Sends `request` once; returns the status and the JSON body of any
    /// answer (`Value::Null` for a body that is not JSON), mapping only
    /// transport failures to errors.
    pub(crate) async fn send_raw(&self, request: &Request) -> Result<(StatusCode, Value)> {
        let (status, retry_after_header, bytes) = self.execute(request).await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(error_from_answer(status, &body, retry_after_header))
                .or_else(|error| keep_uia_answer(status, body, error));
        }
        Ok((status, body))
    }

    /// Sends `request` once and returns a successful answer's body as bytes
    /// (media downloads); an error answer is mapped as for JSON calls.
    pub(crate) async fn send_for_bytes(&self, request: &Request) -> Result<bytes::Bytes> {
        let response = self.send_for_stream(request).await?;
        response.bytes().await.map_err(Error::Network)
    }

    /// Sends `request` once and hands back a successful answer unread, for
    /// the caller to stream its body; an error answer is mapped as for
    /// JSON calls.
    pub(crate) async fn send_for_stream(&self, request: &Request) -> Result<reqwest::Response> {
        let response = self.start(request).await?;
        let status = response.status();
        if !status.is_success() {
            let retry_after_header = retry_after_header(&response);
            let bytes = response.bytes().await.map_err(Error::Network)?;
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(error_from_answer(status, &body, retry_after_header));
        }
        Ok(response)
    }

    /// Sends `request` once: the status, a `Retry-After` header and the body.
    async fn execute(
        &self,
        request: &Request,
    ) -> Result<(StatusCode, Option<Duration>, bytes::Bytes)> {
        let response = self.start(request).await?;
        let status = response.status();
        let retry_after_header = retry_after_header(&response);
        let bytes = response.bytes().await.map_err(Error::Network)?;
        Ok((status, retry_after_header, bytes))
    }

    /// Sends `request` once and returns the answer with its body unread.
    async fn start(&self, request: &Request) -> Result<reqwest::Response> {
        let mut url = self.homeserver.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| Error::InvalidInput("homeserver URL cannot be a base".to_owned()))?;
            path.pop_if_empty()
                .extend(["_matrix", request.api])
                // An unstable prefix is two segments (`unstable/<feature>`).
                .extend(request.version.split('/'))
                .extend(&request.segments);
        }
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&request.query);
        }
        let mut builder = self
            .client
            .request(request.method.clone(), url)
            .timeout(request.timeout.unwrap_or(DEFAULT_TIMEOUT));
        if let Some(token) = self.token() {
            builder = builder.bearer_auth(token.expose());
        }
        match &request.body {
            Some(Body::Json(body)) => builder = builder.json(body),
            Some(Body::Bytes { data, content_type }) => {
                builder = builder
                    .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                    .body(data.clone());
            }
            None => {}
        }
        builder.send().await.map_err(Error::Network)
    }
}

/// User-interactive authentication answers 401 with the flows in the body
/// and often no `errcode`: hand those to the caller instead of failing.
fn keep_uia_answer(status: StatusCode, body: Value, error: Error) -> Result<(StatusCode, Value)> {
    if status == StatusCode::UNAUTHORIZED && body.get("flows").is_some() {
        Ok((status, body))
    } else {
        Err(error)
    }
}

/// Parses a successful answer.
pub(crate) fn parse<T: DeserializeOwned>(status: StatusCode, body: Value) -> Result<T> {
    serde_json::from_value(body).map_err(|error| Error::UnexpectedResponse {
        status: status.as_u16(),
        reason: format!("answer does not fit the endpoint: {error}"),
    })
}

/// Maps an error answer to a [`MatrixError`], or to
/// [`Error::UnexpectedResponse`] when it carries no `errcode`.
pub(crate) fn error_from_answer(
    status: StatusCode,
    body: &Value,
    retry_after_header: Option<Duration>,
) -> Error {
    let Some(errcode) = body.get("errcode").and_then(Value::as_str) else {
        return Error::UnexpectedResponse {
            status: status.as_u16(),
            reason: "error status without a Matrix error body".to_owned(),
        };
    };
    let retry_after = body
        .get("retry_after_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
        .or(retry_after_header);
    Error::Matrix(MatrixError {
        status: status.as_u16(),
        kind: ErrorKind::from_errcode(errcode),
        message: body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        retry_after,
        is_soft_logout: body
            .get("soft_logout")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// `Retry-After: <seconds>` (the spec's newer way to say `retry_after_ms`).
fn retry_after_header(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::StatusCode;
    use serde_json::json;

    use super::{Request, RetryPolicy, error_from_answer};
    use crate::error::{Error, ErrorKind};

    #[test]
    fn a_request_debug_shows_the_route_never_the_body() {
        let login = Request::v3(reqwest::Method::POST, &["login"]).json(json!({
            "type": "m.login.password", "password": "correct horse battery",
        }));
        let shown = format!("{login:?}");
        assert!(!shown.contains("correct horse"), "{shown}");
        assert!(shown.contains("POST") && shown.contains("login"), "{shown}");
        let media = Request::v3(reqwest::Method::POST, &["upload"]).bytes(
            bytes::Bytes::from_static(b"secret bundle"),
            "application/octet-stream",
        );
        let shown = format!("{media:?}");
        assert!(!shown.contains("115, 101, 99"), "{shown}"); // "sec"
    }

    #[test]
    fn matrix_errors_keep_code_message_and_retry_after() {
        let error = error_from_answer(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 1500}),
            None,
        );
        let matrix = error.as_matrix().unwrap();
        assert_eq!(matrix.kind, ErrorKind::LimitExceeded);
        assert_eq!(matrix.message, "slow down");
        assert_eq!(matrix.retry_after, Some(Duration::from_millis(1500)));
        assert!(error.is_transient());
    }

    #[test]
    fn nonsense_answers_are_typed_errors() {
        for body in [json!(null), json!("x"), json!({"errcode": 5}), json!([1])] {
            let error = error_from_answer(StatusCode::BAD_GATEWAY, &body, None);
            assert!(
                matches!(error, Error::UnexpectedResponse { status: 502, .. }),
                "{body}"
            );
            assert!(error.is_transient());
        }
        let forbidden = error_from_answer(
            StatusCode::FORBIDDEN,
            &json!({"errcode": "M_FORBIDDEN"}),
            None,
        );
        assert!(!forbidden.is_transient());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_yields_to_the_server() {
        let policy = RetryPolicy {
            max_attempts: Some(4),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        let network_like = Error::UnexpectedResponse {
            status: 503,
            reason: String::new(),
        };
        let delays: Vec<_> = (1..=4).map(|n| policy.delay(n, &network_like)).collect();
        assert_eq!(delays, [100, 200, 300, 300].map(Duration::from_millis));
        let limited = error_from_answer(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 7}),
            None,
        );
        assert_eq!(policy.delay(3, &limited), Duration::from_millis(7));
        assert!(policy.allows_another(3));
        assert!(!policy.allows_another(4));
    }
}
