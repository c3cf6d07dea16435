//! Finding a server from its name, as the spec's [Resolving server names]
//! says:
//!
//! 0. a fixed `host:port` from `[federation] addresses` (tests, private
//!    deployments);
//! 1. an IP literal: that address, with its port or 8448;
//! 2. a host with an explicit port: that host and port;
//! 3. `https://<host>/.well-known/matrix/server` naming a delegated server
//!    (cached a day when found, an hour when not): an IP literal or a name
//!    with a port is used as it is; otherwise the delegated name's SRV
//!    records (`_matrix-fed._tcp`, then the deprecated `_matrix._tcp`), else
//!    the delegated name on 8448;
//! 4. otherwise the host's SRV records the same way, else the host on 8448.
//!
//! The `Host` header and the certificate name are the server name (the
//! delegated name after step 3), never an SRV target. Of the SRV records,
//! the first by priority, then weight, is used.
//!
//! [Resolving server names]: https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use hickory_resolver::TokioResolver;
use http_body_util::Full;
use hyper::{Request, StatusCode, Uri, header};
use ruma::{OwnedServerName, ServerName};
use serde::Deserialize;
use tracing::{debug, warn};

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

/// What discovery asks the network: the real [`NetworkLookups`], or fakes
/// in tests.
#[async_trait]
pub trait NameLookups: Send + Sync {
    /// The server named by `https://<host>/.well-known/matrix/server`.
    async fn well_known(&self, host: &str) -> Option<OwnedServerName>;
    /// The SRV records of `name` (`_matrix-fed._tcp.example.org`) as
    /// `(target, port)`, the one to use first.
    async fn srv(&self, name: &str) -> Vec<(String, u16)>;
}

/// Well-known files over the federation transport, SRV records from the
/// system's DNS resolver.
pub struct NetworkLookups {
    transport: Transport,
    dns: Option<TokioResolver>,
}

impl std::fmt::Debug for NetworkLookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkLookups")
            .field("has_dns", &self.dns.is_some())
            .finish_non_exhaustive()
    }
}

impl NetworkLookups {
    /// Lookups through `transport` and the system's resolver configuration
    /// (`/etc/resolv.conf`); without one, SRV records are not looked up.
    pub fn new(transport: Transport) -> Self {
        let dns = match TokioResolver::builder_tokio() {
            Ok(builder) => Some(builder.build()),
            Err(error) => {
                warn!(%error, "no DNS resolver configuration: SRV records will not be looked up");
                None
            }
        };
        Self { transport, dns }
    }
}

#[async_trait]
impl NameLookups for NetworkLookups {
    async fn well_known(&self, host: &str) -> Option<OwnedServerName> {
        fetch_well_known(&self.transport, host).await
    }

    async fn srv(&self, name: &str) -> Vec<(String, u16)> {
        let Some(dns) = &self.dns else {
            return Vec::new();
        };
        let records = match dns.srv_lookup(format!("{name}.")).await {
            Ok(records) => records,
            Err(error) => {
                debug!(%name, %error, "no SRV records");
                return Vec::new();
            }
        };
        let mut records: Vec<_> = records
            .iter()
            .map(|srv| {
                let target = srv.target().to_utf8();
                let target = target.trim_end_matches('.').to_owned();
                (
                    srv.priority(),
                    std::cmp::Reverse(srv.weight()),
                    target,
                    srv.port(),
                )
            })
            // A target of "." says the service is not offered.
            .filter(|(_, _, target, _)| !target.is_empty())
            .collect();
        records.sort();
        records
            .into_iter()
            .map(|(_, _, target, port)| (target, port))
            .collect()
    }
}

/// Resolves server names.
pub struct Discovery {
    fixed: BTreeMap<OwnedServerName, (String, u16)>,
    lookups: Box<dyn NameLookups>,
    well_known: Mutex<HashMap<String, (Option<OwnedServerName>, Instant)>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("fixed", &self.fixed)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// A resolver with fixed `host:port` addresses for some server names,
    /// asking `lookups` for the rest. Entries that do not parse are
    /// skipped (the configuration check refuses them earlier).
    pub fn new(addresses: &BTreeMap<String, String>, lookups: Box<dyn NameLookups>) -> Self {
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
            lookups,
            well_known: Mutex::default(),
        }
    }

    /// Where to send requests for `server`.
    pub async fn resolve(&self, server: &ServerName) -> Destination {
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
        match self.delegation(host).await {
            Some(delegated) if delegated.is_ip_literal() || delegated.port().is_some() => {
                direct(&delegated)
            }
            Some(delegated) => self.by_srv(delegated.host()).await,
            None => self.by_srv(host).await,
        }
    }

    /// `host` through its SRV records, else on 8448; `Host` and the
    /// certificate name stay `host`.
    async fn by_srv(&self, host: &str) -> Destination {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            if let Some((target, port)) = self
                .lookups
                .srv(&format!("{service}.{host}"))
                .await
                .into_iter()
                .next()
            {
                return Destination {
                    target: Target {
                        host: target,
                        port,
                        tls_name: host.to_owned(),
                    },
                    host_header: host.to_owned(),
                };
            }
        }
        Destination {
            target: Target {
                host: host.to_owned(),
                port: DEFAULT_PORT,
                tls_name: host.to_owned(),
            },
            host_header: host.to_owned(),
        }
    }

    /// The server named by `https://<host>/.well-known/matrix/server`, cached.
    async fn delegation(&self, host: &str) -> Option<OwnedServerName> {
        let now = Instant::now();
        if let Some((delegated, expires)) = self.cache().get(host)
            && *expires > now
        {
            return delegated.clone();
        }
        let delegated = self.lookups.well_known(host).await;
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

    /// Delegations and SRV records as a test sets them, counting well-known fetches.
    #[derive(Default)]
    struct FakeLookups {
        well_known: BTreeMap<String, OwnedServerName>,
        srv: BTreeMap<String, (String, u16)>,
        fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait]
    impl NameLookups for FakeLookups {
        async fn well_known(&self, host: &str) -> Option<OwnedServerName> {
            self.fetches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.well_known.get(host).cloned()
        }

        async fn srv(&self, name: &str) -> Vec<(String, u16)> {
            self.srv.get(name).cloned().into_iter().collect()
        }
    }

    fn destination(host: &str, port: u16, tls_name: &str, host_header: &str) -> Destination {
        Destination {
            target: Target {
                host: host.to_owned(),
                port,
                tls_name: tls_name.to_owned(),
            },
            host_header: host_header.to_owned(),
        }
    }

    #[tokio::test]
    async fn server_names_resolve_in_the_specs_order() {
        let delegate = |name: &str| ServerName::parse(name).unwrap();
        let lookups = FakeLookups {
            well_known: BTreeMap::from([
                ("to-ip.example".to_owned(), delegate("10.0.0.1")),
                ("to-port.example".to_owned(), delegate("d.example:9000")),
                ("to-srv.example".to_owned(), delegate("srv-d.example")),
                ("to-old-srv.example".to_owned(), delegate("old-d.example")),
                ("to-plain.example".to_owned(), delegate("plain-d.example")),
                // Delegations are followed once: this one's target's own
                // well-known file is not asked for.
                ("to-chain.example".to_owned(), delegate("to-port.example")),
            ]),
            srv: BTreeMap::from([
                (
                    "_matrix-fed._tcp.srv-d.example".to_owned(),
                    ("t1.example".to_owned(), 1),
                ),
                (
                    "_matrix._tcp.srv-d.example".to_owned(),
                    ("wrong.example".to_owned(), 9),
                ),
                (
                    "_matrix._tcp.old-d.example".to_owned(),
                    ("t2.example".to_owned(), 2),
                ),
                (
                    "_matrix-fed._tcp.srv.example".to_owned(),
                    ("t3.example".to_owned(), 3),
                ),
            ]),
            ..FakeLookups::default()
        };
        let discovery = Discovery::new(
            &BTreeMap::from([("fixed.example".to_owned(), "127.0.0.1:1234".to_owned())]),
            Box::new(lookups),
        );
        let cases = [
            (
                server_name!("fixed.example"),
                destination("127.0.0.1", 1234, "fixed.example", "fixed.example"),
            ),
            (
                server_name!("1.2.3.4"),
                destination("1.2.3.4", 8448, "1.2.3.4", "1.2.3.4"),
            ),
            (
                server_name!("1.2.3.4:99"),
                destination("1.2.3.4", 99, "1.2.3.4", "1.2.3.4:99"),
            ),
            (
                server_name!("[::1]:5"),
                destination("::1", 5, "::1", "[::1]:5"),
            ),
            (
                server_name!("host.example:8000"),
                destination("host.example", 8000, "host.example", "host.example:8000"),
            ),
            (
                server_name!("to-ip.example"),
                destination("10.0.0.1", 8448, "10.0.0.1", "10.0.0.1"),
            ),
            (
                server_name!("to-port.example"),
                destination("d.example", 9000, "d.example", "d.example:9000"),
            ),
            (
                server_name!("to-srv.example"),
                destination("t1.example", 1, "srv-d.example", "srv-d.example"),
            ),
            (
                server_name!("to-old-srv.example"),
                destination("t2.example", 2, "old-d.example", "old-d.example"),
            ),
            (
                server_name!("to-plain.example"),
                destination(
                    "plain-d.example",
                    8448,
                    "plain-d.example",
                    "plain-d.example",
                ),
            ),
            (
                server_name!("to-chain.example"),
                destination(
                    "to-port.example",
                    8448,
                    "to-port.example",
                    "to-port.example",
                ),
            ),
            (
                server_name!("srv.example"),
                destination("t3.example", 3, "srv.example", "srv.example"),
            ),
            (
                server_name!("nothing.example"),
                destination(
                    "nothing.example",
                    8448,
                    "nothing.example",
                    "nothing.example",
                ),
            ),
        ];
        for (server, expected) in cases {
            assert_eq!(discovery.resolve(server).await, expected, "{server}");
        }
    }

    #[tokio::test]
    async fn delegations_and_their_absence_are_cached() {
        let lookups = FakeLookups {
            well_known: BTreeMap::from([(
                "a.example".to_owned(),
                ServerName::parse("b.example:1").unwrap(),
            )]),
            ..FakeLookups::default()
        };
        let fetches = lookups.fetches.clone();
        let discovery = Discovery::new(&BTreeMap::new(), Box::new(lookups));
        for _ in 0..3 {
            let delegated = discovery.resolve(server_name!("a.example")).await;
            assert_eq!(
                delegated,
                destination("b.example", 1, "b.example", "b.example:1")
            );
            discovery.resolve(server_name!("none.example")).await;
        }
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
