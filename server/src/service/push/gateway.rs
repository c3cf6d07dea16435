//! The HTTP client that posts notifications to push gateways
//! (`POST /_matrix/push/v1/notify`), over hyper's legacy client with
//! rustls for `https` gateways.
//!
//! A pusher's URL is chosen by a client, so the server must not become a
//! way to reach what only it can reach: unless the configuration allows
//! private gateways, every address a gateway's host resolves to must be
//! public, and the connection goes to those checked addresses only (a name
//! that resolves differently a moment later cannot redirect it).

use std::{
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{HttpConnector, dns::Name},
    },
    rt::TokioExecutor,
};
use serde_json::Value;

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
    allow_private: bool,
}

impl GatewayClient {
    /// A client that reaches loopback and private addresses only when
    /// `allow_private`.
    pub fn new(allow_private: bool) -> Self {
        let mut http = HttpConnector::new_with_resolver(CheckedResolver { allow_private });
        http.enforce_http(false);
        http.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            allow_private,
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
            && !self.allow_private
            && !is_public(ip)
        {
            return Err(GatewayError::Refused("a private address"));
        }
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| GatewayError::Refused("not a valid request URL"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if is_refused_by_resolver(&e) {
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

/// Resolves gateway hosts and keeps only the addresses the server may
/// connect to.
#[derive(Debug, Clone, Copy)]
struct CheckedResolver {
    allow_private: bool,
}

impl tower::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|address| allow_private || is_public(address.ip()))
                .collect();
            if addresses.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the gateway resolves to no public address",
                ));
            }
            Ok(addresses.into_iter())
        })
    }
}

/// Whether `error` comes from [`CheckedResolver`] refusing every address.
fn is_refused_by_resolver(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::PermissionDenied)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Whether `ip` is a public unicast address: not loopback, private,
/// link-local, shared (CGNAT), documentation, unspecified or multicast.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        // 100.64.0.0/10, shared address space.
        || (a == 100 && (64..128).contains(&b))
        // 198.18.0.0/15, benchmarking.
        || (a == 198 && (18..20).contains(&b))
        // 240.0.0.0/4, reserved.
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7, unique local.
        || (first & 0xfe00) == 0xfc00
        // fe80::/10, link-local.
        || (first & 0xffc0) == 0xfe80
        // 2001:db8::/32, documentation.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_loopback_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

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
