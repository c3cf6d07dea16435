//! Finding a server from its name, as the spec's [Resolving server names]
//! says, minus SRV records:
//!
//! 0. a fixed `host:port` from `[federation] addresses` (tests, private
//!    deployments);
//! 1. an IP literal: that address, with its port or 8448;
//! 2. a host with an explicit port: that host and port;
//! 3. `https://<host>/.well-known/matrix/server` naming a delegated server
//!    (cached a day when found, an hour when not): the delegated host, with
//!    its port or 8448;
//! 4. otherwise the host on port 8448.
//!
//! The `Host` header is the server name (or the delegated name after
//! step 3) and the certificate must be valid for its host part. SRV records
//! (`_matrix-fed._tcp`, `_matrix._tcp`) are not looked up: no DNS resolver
//! crate is a dependency yet.
//!
//! [Resolving server names]: https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode, Uri, header};
use ruma::{OwnedServerName, ServerName};
use serde::Deserialize;
use tracing::debug;

use super::transport::{Target, Transport};

/// Port of a server whose name and delegation name none.
pub const DEFAULT_PORT: u16 = 8448;
/// How long a found delegation is used before asking again.
const WELL_KNOWN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long the absence of a delegation is remembered.
const NO_WELL_KNOWN_TTL: Duration = Duration::from_secs(60 * 60);
/// Largest `.well-known/matrix/server` answer read.
const MAX_WELL_KNOWN_BYTES: usize = 50 * 1024;
/// Redirects followed while fetching `.well-known/matrix/server`.
const MAX_REDIRECTS: usize = 3;
/// Host names whose delegation is kept in memory.
const MAX_CACHED: usize = 10_000;

/// Where a request to a server goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The address and certificate name.
    pub target: Target,
    /// The `Host` header.
    pub host_header: String,
}

/// Resolves server names.
#[derive(Debug, Default)]
pub struct Discovery {
    fixed: BTreeMap<OwnedServerName, (String, u16)>,
    well_known: Mutex<HashMap<String, (Option<OwnedServerName>, Instant)>>,
}

impl Discovery {
    /// A resolver with fixed `host:port` addresses for some server names.
    /// Entries that do not parse are skipped (the configuration check
    /// refuses them earlier).
    pub fn new(addresses: &BTreeMap<String, String>) -> Self {
        let fixed = addresses
            .iter()
            .filter_map(|(name, address)| {
                let name = ServerName::parse(name).ok()?;
                let (host, port) = address.rsplit_once(':')?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                Some((name, (host.to_owned(), port.parse().ok()?)))
            })
            .collect();
        Self {
            fixed,
            well_known: Mutex::default(),
        }
    }

    /// Where to send requests for `server`.
    pub async fn resolve(&self, transport: &Transport, server: &ServerName) -> Destination {
        let host = unbracketed(server.host());
        if let Some((address, port)) = self.fixed.get(server) {
            return Destination {
                target: Target {
                    host: address.clone(),
                    port: *port,
                    tls_name: host.to_owned(),
                },
                host_header: server.to_string(),
            };
        }
        if server.is_ip_literal() || server.port().is_some() {
            return direct(server);
        }
        match self.delegation(transport, host).await {
            Some(delegated) if delegated.is_ip_literal() || delegated.port().is_some() => {
                direct(&delegated)
            }
            Some(delegated) => Destination {
                target: Target {
                    host: delegated.host().to_owned(),
                    port: DEFAULT_PORT,
                    tls_name: delegated.host().to_owned(),
                },
                host_header: delegated.host().to_owned(),
            },
            None => direct(server),
        }
    }

    /// The server named by `https://<host>/.well-known/matrix/server`, cached.
    async fn delegation(&self, transport: &Transport, host: &str) -> Option<OwnedServerName> {
        let now = Instant::now();
        if let Some((delegated, expires)) = self.cache().get(host)
            && *expires > now
        {
            return delegated.clone();
        }
        let delegated = fetch_well_known(transport, host).await;
        let ttl = if delegated.is_some() {
            WELL_KNOWN_TTL
        } else {
            NO_WELL_KNOWN_TTL
        };
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, expires)| *expires > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(host.to_owned(), (delegated.clone(), now + ttl));
        delegated
    }

    fn cache(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Option<OwnedServerName>, Instant)>> {
        // Nothing panics while holding the lock; the map stays consistent.
        self.well_known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The server itself: its host, and its port or 8448.
fn direct(server: &ServerName) -> Destination {
    let host = unbracketed(server.host());
    Destination {
        target: Target {
            host: host.to_owned(),
            port: server.port().unwrap_or(DEFAULT_PORT),
            tls_name: host.to_owned(),
        },
        host_header: server.to_string(),
    }
}

fn unbracketed(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

#[derive(Deserialize)]
struct WellKnown {
    #[serde(rename = "m.server")]
    server: String,
}

/// Fetches and parses the delegation, following a few `https` redirects.
async fn fetch_well_known(transport: &Transport, host: &str) -> Option<OwnedServerName> {
    let mut target = Target {
        host: host.to_owned(),
        port: 443,
        tls_name: host.to_owned(),
    };
    let mut path = "/.well-known/matrix/server".to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let request = Request::get(path.as_str())
            .header(header::HOST, host_header(&target))
            .body(Full::new(Bytes::new()))
            .ok()?;
        let (status, headers, body) =
            match transport.send(&target, request, MAX_WELL_KNOWN_BYTES).await {
                Ok(answer) => answer,
                Err(error) => {
                    debug!(%host, %error, "no .well-known/matrix/server");
                    return None;
                }
            };
        if status.is_redirection() {
            let location: Uri = headers.get(header::LOCATION)?.to_str().ok()?.parse().ok()?;
            if let Some(authority) = location.authority() {
                if location.scheme_str() != Some("https") {
                    return None;
                }
                target = Target {
                    host: unbracketed(authority.host()).to_owned(),
                    port: authority.port_u16().unwrap_or(443),
                    tls_name: unbracketed(authority.host()).to_owned(),
                };
            }
            path = location
                .path_and_query()
                .map_or_else(|| "/".to_owned(), ToString::to_string);
            continue;
        }
        if status != StatusCode::OK {
            return None;
        }
        let well_known: WellKnown = serde_json::from_slice(&body).ok()?;
        return ServerName::parse(&well_known.server).ok();
    }
    None
}

fn host_header(target: &Target) -> String {
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    if target.port == 443 {
        host
    } else {
        format!("{host}:{}", target.port)
    }
}

#[cfg(test)]
mod tests {
    use ruma::server_name;

    use super::*;
    use crate::config::FederationConfig;

    fn target(host: &str, port: u16, tls_name: &str) -> Target {
        Target {
            host: host.to_owned(),
            port,
            tls_name: tls_name.to_owned(),
        }
    }

    #[tokio::test]
    async fn literals_ports_and_fixed_addresses_need_no_lookup() {
        let transport = Transport::new(&FederationConfig::default()).unwrap();
        let discovery = Discovery::new(&BTreeMap::from([(
            "fixed.example".to_owned(),
            "127.0.0.1:1234".to_owned(),
        )]));
        let cases = [
            (
                server_name!("1.2.3.4"),
                target("1.2.3.4", 8448, "1.2.3.4"),
                "1.2.3.4",
            ),
            (
                server_name!("1.2.3.4:99"),
                target("1.2.3.4", 99, "1.2.3.4"),
                "1.2.3.4:99",
            ),
            (server_name!("[::1]:5"), target("::1", 5, "::1"), "[::1]:5"),
            (
                server_name!("host.example:8000"),
                target("host.example", 8000, "host.example"),
                "host.example:8000",
            ),
            (
                server_name!("fixed.example"),
                target("127.0.0.1", 1234, "fixed.example"),
                "fixed.example",
            ),
        ];
        for (server, expected, host_header) in cases {
            let destination = discovery.resolve(&transport, server).await;
            assert_eq!(destination.target, expected, "{server}");
            assert_eq!(destination.host_header, host_header, "{server}");
        }
    }
}
