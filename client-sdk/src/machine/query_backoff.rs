//! Backing off from servers whose `/keys/query` fails.
//!
//! A keys/query that fails (the request, or one user's server in its
//! `failures`) leaves those users' device lists outdated. Asking again at
//! once would hammer a server that is down, and waiting for it would block
//! every send to a room one of its users is in. So each failure backs the
//! user's *server* off, from [`BASE_MS`] doubling to [`MAX_MS`]: until then
//! its users are not queried, and sharing goes ahead with the devices we
//! know for them (counted as `shared_with_stale_device_lists` in
//! [`super::OlmMachine::utd_counts`]: devices added meanwhile will not have
//! the key). An answer for a user of the server ends its back-off.

use std::collections::BTreeMap;

use ruma::{OwnedServerName, OwnedUserId, UserId};

/// The first wait after a failure.
const BASE_MS: u64 = 5_000;
/// The longest wait.
const MAX_MS: u64 = 5 * 60 * 1000;
/// At most this many servers are remembered; a server beyond it is not
/// backed off (the map is filled by user ids, which anyone can make up).
const MAX_SERVERS: usize = 10_000;

/// Per server: consecutive failures, and when it may be asked again.
#[derive(Debug, Default)]
pub(super) struct QueryBackoff {
    servers: BTreeMap<OwnedServerName, (u32, u64)>,
}

impl QueryBackoff {
    /// Records a failed query for `users` at `now_ms`.
    pub(super) fn failed<'a>(
        &mut self,
        users: impl IntoIterator<Item = &'a OwnedUserId>,
        now_ms: u64,
    ) {
        let mut servers: Vec<OwnedServerName> = users
            .into_iter()
            .map(|u| u.server_name().to_owned())
            .collect();
        servers.sort_unstable();
        servers.dedup();
        for server in servers {
            if !self.servers.contains_key(&server) && self.servers.len() >= MAX_SERVERS {
                continue;
            }
            let entry = self.servers.entry(server).or_default();
            entry.0 = entry.0.saturating_add(1);
            let delay = BASE_MS
                .saturating_mul(1 << (entry.0 - 1).min(16))
                .min(MAX_MS);
            entry.1 = now_ms.saturating_add(delay);
        }
    }

    /// Records an answer for `user`: their server is fine again.
    pub(super) fn answered(&mut self, user: &UserId) {
        self.servers.remove(user.server_name());
    }

    /// Whether `user`'s server is not to be asked at `now_ms`.
    pub(super) fn is_backing_off(&self, user: &UserId, now_ms: u64) -> bool {
        self.servers
            .get(user.server_name())
            .is_some_and(|(_, retry_at)| now_ms < *retry_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> OwnedUserId {
        UserId::parse(id).unwrap()
    }

    #[test]
    fn failures_back_off_per_server_doubling_up_to_the_maximum() {
        let mut backoff = QueryBackoff::default();
        let bob = user("@bob:down.example");
        backoff.failed([&bob], 0);
        assert!(backoff.is_backing_off(&user("@carol:down.example"), BASE_MS - 1));
        assert!(!backoff.is_backing_off(&user("@dave:up.example"), 0));
        assert!(!backoff.is_backing_off(&bob, BASE_MS));
        backoff.failed([&bob], BASE_MS);
        assert!(backoff.is_backing_off(&bob, 3 * BASE_MS - 1));
        for _ in 0..40 {
            backoff.failed([&bob], 0);
        }
        assert!(!backoff.is_backing_off(&bob, MAX_MS));
        backoff.answered(&user("@carol:down.example"));
        assert!(!backoff.is_backing_off(&bob, 0));
    }

    #[test]
    fn servers_are_told_apart_by_port() {
        let mut backoff = QueryBackoff::default();
        backoff.failed([&user("@erin:up.example:8448")], 0);
        assert!(backoff.is_backing_off(&user("@frank:up.example:8448"), 0));
        assert!(!backoff.is_backing_off(&user("@frank:up.example"), 0));
    }
}
