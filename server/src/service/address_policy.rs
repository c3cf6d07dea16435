//! Which network addresses the server may connect to on its own initiative.
//!
//! Push gateway URLs are chosen by clients and federation destinations by
//! whoever names a server; either could point the server at what only it
//! can reach (loopback admin ports, cloud metadata, the private network).
//! Unless the configuration allows it, every address a host resolves to must
//! be public, and connections go to those checked addresses only, so a name
//! that resolves differently a moment later cannot redirect them.

use std::{
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use hyper_util::client::legacy::connect::dns::Name;

use crate::config::IpRange;

/// The addresses outgoing connections may reach: public ones always, and
/// non-public ones inside the allowed ranges.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow_all: bool,
    allowed: Arc<[IpRange]>,
}

impl AddressPolicy {
    /// Public addresses only.
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Public addresses and those in `allowed`.
    pub fn allowing(allowed: impl Into<Arc<[IpRange]>>) -> Self {
        Self {
            allow_all: false,
            allowed: allowed.into(),
        }
    }

    /// Every address, private ones included.
    pub fn allow_all() -> Self {
        Self {
            allow_all: true,
            allowed: Arc::new([]),
        }
    }

    /// Whether a connection to `ip` is allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_all || is_public(ip) || self.allowed.iter().any(|range| range.contains(ip))
    }

    /// Resolves `host` (a name or an address literal) and keeps the
    /// permitted addresses, each with `port`.
    ///
    /// # Errors
    /// The resolver's error; `PermissionDenied` when no address is permitted
    /// (see [`is_refused`]).
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port)).await?.collect(),
        };
        let permitted: Vec<SocketAddr> = addresses
            .into_iter()
            .filter(|address| self.permits(address.ip()))
            .collect();
        if permitted.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the host resolves to no permitted address",
            ));
        }
        Ok(permitted)
    }
}

/// A hyper resolver that applies an [`AddressPolicy`].
#[derive(Debug, Clone)]
pub struct CheckedResolver(pub AddressPolicy);

impl tower::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.0.clone();
        Box::pin(async move { Ok(policy.resolve(name.as_str(), 0).await?.into_iter()) })
    }
}

/// Whether `error` (or one of its causes) is an [`AddressPolicy`] refusal.
pub fn is_refused(error: &(dyn std::error::Error + 'static)) -> bool {
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

    #[test]
    fn allowed_ranges_open_only_themselves() {
        let policy = AddressPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(policy.permits("127.0.0.1".parse().unwrap()));
        assert!(policy.permits("8.8.8.8".parse().unwrap()));
        assert!(!policy.permits("10.0.0.1".parse().unwrap()));
        assert!(!policy.permits("::1".parse().unwrap()));
        assert!(!AddressPolicy::public_only().permits("127.0.0.1".parse().unwrap()));
        assert!(AddressPolicy::allow_all().permits("::1".parse().unwrap()));
        assert!(AddressPolicy::allow_all().permits("10.0.0.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn resolving_to_loopback_is_refused_unless_allowed() {
        let error = AddressPolicy::public_only()
            .resolve("localhost", 80)
            .await
            .unwrap_err();
        assert!(is_refused(&error), "{error}");
        let error = AddressPolicy::public_only()
            .resolve("[::1]", 80)
            .await
            .unwrap_err();
        assert!(is_refused(&error), "{error}");
        let allowed = AddressPolicy::allowing(vec!["127.0.0.1".parse().unwrap()])
            .resolve("127.0.0.1", 80)
            .await
            .unwrap();
        assert_eq!(allowed, vec![SocketAddr::from(([127, 0, 0, 1], 80))]);
    }
}
