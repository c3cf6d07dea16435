//! The HTTP client that posts notifications to push gateways
//! (`POST /_matrix/push/v1/notify`), over hyper's legacy client with
//! rustls for `https` gateways.
//!
//! A pusher's URL is chosen by a client, so the server must not become a
//! way to reach what only it can reach: unless the configuration allows
//! private gateways, every address a gateway's host resolves to must be
//! public, and the connection goes to those checked addresses only (a name
//! that resolves differently a moment later cannot redirect it).

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;

use crate::service::address_policy::{AddressPolicy, CheckedResolver, is_refused};

/// How long one request to a gateway may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest gateway answer read, in bytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why a post to a gateway failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The URL is not one the server will post to (not http(s), or a
    /// private address the configuration does not allow).
    #[error("refused gateway url: {0}")]
    Refused(&'static str),
    /// The gateway could not be reached or did not answer in time.
    #[error("gateway unreachable: {0}")]
    Unreachable(String),
    /// The gateway answered with an error status.
    #[error("gateway answered {0}")]
    Status(u16),
}

impl GatewayError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Refused(_) => false,
            Self::Unreachable(_) => true,
            Self::Status(status) => *status >= 500 || *status == 429,
        }
    }
}

/// Posts notifications to push gateways.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    client: Client<HttpsConnector<HttpConnector<CheckedResolver>>, Full<Bytes>>,
    policy: AddressPolicy,
}

impl GatewayClient {
    /// A client that reaches loopback and private addresses only when
    /// `allow_private`.
    pub fn new(allow_private: bool) -> Self {
        let policy = if allow_private {
            AddressPolicy::allow_all()
        } else {
            AddressPolicy::public_only()
        };
        let mut http = HttpConnector::new_with_resolver(CheckedResolver(policy.clone()));
        http.enforce_http(false);
        http.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            policy,
        }
    }

    /// Posts `body` to `url` and returns the gateway's JSON answer (`null`
    /// when it is not JSON).
    ///
    /// # Errors
    /// [`GatewayError`] for a refused URL, a network failure, a timeout or
    /// an error status.
    pub async fn post(&self, url: &str, body: &Value) -> Result<Value, GatewayError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| GatewayError::Refused("not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(GatewayError::Refused("not an http(s) URL"));
        }
        // An address written in the URL is never resolved, so it is checked here.
        let host = uri.host().unwrap_or_default();
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>()
            && !self.policy.permits(ip)
        {
            return Err(GatewayError::Refused("a private address"));
        }
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| GatewayError::Refused("not a valid request URL"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if is_refused(&e) {
                    GatewayError::Refused("resolves to no public address")
                } else {
                    GatewayError::Unreachable(e.to_string())
                }
            })?;
            let status = response.status();
            if !status.is_success() {
                return Err(GatewayError::Status(status.as_u16()));
            }
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| GatewayError::Unreachable(e.to_string()))?
                .to_bytes();
            Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| GatewayError::Unreachable("timed out".to_owned()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loopback_gateway_is_refused_unless_allowed() {
        let client = GatewayClient::new(false);
        let body = serde_json::json!({});
        for url in [
            "http://127.0.0.1:9/_matrix/push/v1/notify",
            "http://[::1]:9/_matrix/push/v1/notify",
            "http://localhost:9/_matrix/push/v1/notify",
        ] {
            let error = client.post(url, &body).await.unwrap_err();
            // Refused before any connection (nothing listens on port 9,
            // so an attempt would be `Unreachable`), and never retried.
            assert!(matches!(error, GatewayError::Refused(_)), "{url}: {error}");
            assert!(!error.is_transient());
        }
    }
}
