//! HTTP transport to the Client-Server API: JSON in and out, 429 retries,
//! and errors that name the endpoint, the status and the Matrix errcode.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Timeout for ordinary requests (long-polls add their own timeout to it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Wait when a 429 carries no `retry_after_ms`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_millis(500);
/// Never sleep longer than this for one 429, whatever the server asks.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A client for one homeserver. Cheap to clone; clones share the
/// connection pool and the 429 counter.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    max_retries: u32,
    retries: Arc<AtomicU64>,
}

/// A non-2xx answer from the server (after any 429 retries).
#[derive(Debug)]
pub struct ApiError {
    /// HTTP method of the failed request.
    pub method: Method,
    /// Path of the failed request, without query string.
    pub path: String,
    /// HTTP status the server answered.
    pub status: StatusCode,
    /// The Matrix `errcode`, if the body had one.
    pub errcode: Option<String>,
    /// The Matrix `error` text, or the start of a non-JSON body.
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} answered {} {}",
            self.method,
            self.path,
            self.status.as_u16(),
            self.errcode.as_deref().unwrap_or("(no errcode)")
        )?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// A server answer: status and JSON body (`Null` when the body was empty).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Parsed JSON body.
    pub body: Value,
}

impl Api {
    /// A client for the homeserver at `base` (e.g. `http://127.0.0.1:8008`).
    pub fn new(base: &str, max_retries: u32) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            max_retries,
            retries: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The homeserver base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Checks that `GET /_matrix/client/versions` answers, and returns the
    /// spec versions the server lists.
    pub async fn versions(&self) -> anyhow::Result<Vec<String>> {
        let url = format!("{}/_matrix/client/versions", self.base);
        let response = self
            .http
            .get(&url)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot reach the homeserver: GET {url}: {}", causes(&e))
            })?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("GET {url} answered {status} without JSON"))?;
        if !status.is_success() {
            anyhow::bail!("GET {url} answered {status}");
        }
        Ok(body
            .get("versions")
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// How many 429 answers were retried so far, over all clones.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Sends `method /_matrix/client/v3{path_and_query}` and returns any
    /// non-429 answer. A 429 is retried after the server's `retry_after_ms`
    /// up to `max_retries` times, each retry counted.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        token: Option<&str>,
        body: Option<&Value>,
        timeout: Duration,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}/_matrix/client/v3{path_and_query}", self.base);
        let mut attempt = 0;
        loop {
            let mut builder = self.http.request(method.clone(), &url).timeout(timeout);
            if let Some(token) = token {
                builder = builder.bearer_auth(token);
            }
            if let Some(body) = body {
                builder = builder.json(body);
            }
            let response = builder
                .send()
                .await
                .map_err(|e| transport_error(&method, path_and_query, &e))?;
            let status = response.status();
            let header_wait = retry_after_header(&response);
            let bytes = response
                .bytes()
                .await
                .map_err(|e| transport_error(&method, path_and_query, &e))?;
            let parsed = parse_body(&bytes);
            if status == StatusCode::TOO_MANY_REQUESTS && attempt < self.max_retries {
                attempt += 1;
                self.retries.fetch_add(1, Ordering::Relaxed);
                let wait = parsed
                    .as_ref()
                    .ok()
                    .and_then(retry_after_ms)
                    .or(header_wait)
                    .unwrap_or(DEFAULT_RETRY_AFTER)
                    .min(MAX_RETRY_AFTER);
                tokio::time::sleep(wait).await;
                continue;
            }
            return match parsed {
                Ok(body) => Ok(Reply { status, body }),
                Err(snippet) if status.is_success() => Err(anyhow::anyhow!(
                    "{method} {} answered {} with a body that is not JSON: {snippet}",
                    strip_query(path_and_query),
                    status.as_u16()
                )),
                Err(snippet) => Err(ApiError {
                    method,
                    path: strip_query(path_and_query),
                    status,
                    errcode: None,
                    message: snippet,
                }
                .into()),
            };
        }
    }

    /// Like [`Api::request`], but any non-2xx answer is an [`ApiError`].
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        token: Option<&str>,
        body: Option<&Value>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let reply = self
            .request(method.clone(), path_and_query, token, body, timeout)
            .await?;
        if reply.status.is_success() {
            Ok(reply.body)
        } else {
            Err(api_error(method, path_and_query, &reply).into())
        }
    }
}

/// The [`ApiError`] for a non-2xx `reply`.
pub fn api_error(method: Method, path_and_query: &str, reply: &Reply) -> ApiError {
    let field = |name: &str| {
        reply
            .body
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ApiError {
        method,
        path: strip_query(path_and_query),
        status: reply.status,
        errcode: field("errcode"),
        message: field("error").map(|m| snippet(&m)).unwrap_or_default(),
    }
}

fn transport_error(method: &Method, path_and_query: &str, e: &reqwest::Error) -> anyhow::Error {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    anyhow::anyhow!(
        "{method} {} {kind}: {}",
        strip_query(path_and_query),
        causes(e)
    )
}

/// The chain of causes under a reqwest error (its own Display repeats the
/// URL, which the caller already names), e.g. `tcp connect error: Connection refused`.
fn causes(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// JSON of the body; `Null` when empty; the start of the text when not JSON.
fn parse_body(bytes: &[u8]) -> Result<Value, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|_| snippet(&String::from_utf8_lossy(bytes)))
}

/// `retry_after_ms` of a Matrix 429 body.
fn retry_after_ms(body: &Value) -> Option<Duration> {
    body.get("retry_after_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
}

/// The standard `Retry-After` header, in whole seconds.
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

fn strip_query(path_and_query: &str) -> String {
    let path = path_and_query.split('?').next().unwrap_or(path_and_query);
    format!("/_matrix/client/v3{path}")
}

/// At most 200 characters of `text`, on one line.
fn snippet(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    one_line.trim().to_owned()
}

/// Percent-encodes one path segment (room ids, user ids, transaction ids).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Percent-encodes a query parameter value.
pub fn encode_query(value: &str) -> String {
    encode_segment(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("!abc:localhost"), "%21abc%3Alocalhost");
        assert_eq!(encode_segment("@u_1.x-y~:h"), "%40u_1.x-y~%3Ah");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn bodies_parse_or_give_a_snippet() {
        assert_eq!(parse_body(b""), Ok(Value::Null));
        assert_eq!(parse_body(b"  \n"), Ok(Value::Null));
        assert_eq!(parse_body(br#"{"a":1}"#), Ok(json!({"a": 1})));
        assert_eq!(
            parse_body(b"<html>\nBad Gateway</html>"),
            Err("<html> Bad Gateway</html>".to_owned())
        );
    }

    #[test]
    fn retry_after_comes_from_the_body() {
        let body = json!({"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 1200});
        assert_eq!(retry_after_ms(&body), Some(Duration::from_millis(1200)));
        assert_eq!(
            retry_after_ms(&json!({"errcode": "M_LIMIT_EXCEEDED"})),
            None
        );
        assert_eq!(retry_after_ms(&json!({"retry_after_ms": "soon"})), None);
    }

    #[test]
    fn errors_name_endpoint_status_and_errcode() {
        let reply = Reply {
            status: StatusCode::NOT_FOUND,
            body: json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
        };
        let error = api_error(Method::POST, "/createRoom?x=1", &reply);
        assert_eq!(
            error.to_string(),
            "POST /_matrix/client/v3/createRoom answered 404 M_UNRECOGNIZED: Unrecognized request"
        );
        let bare = Reply {
            status: StatusCode::BAD_GATEWAY,
            body: Value::Null,
        };
        assert_eq!(
            api_error(Method::GET, "/sync", &bare).to_string(),
            "GET /_matrix/client/v3/sync answered 502 (no errcode)"
        );
    }
}
