//! A bounded cache of what the read paths ask for again and again: stored
//! events by id, full state groups, sync filters, the session behind each
//! access token (looked up by every authenticated request), each device's
//! key counts and the account data a sync consults (ignored users, push
//! rules), each user's memberships, unread counts, and the newest events
//! ([`RecentEvents`]). Tokens, key counts, account data, memberships and
//! read receipts change; their writers invalidate them ([`Invalidated`]).
//!
//! State groups never change once written. An event changes only when a
//! redaction applies, and that goes through `append_event_chains` in this process,
//! which updates the cache. (Several server processes sharing one
//! PostgreSQL would need an invalidation channel; they are not supported
//! yet, see spec-notes/sync.md.)

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{DeviceId, EventId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, UserId};

use super::recent::RecentEvents;
use crate::storage::{Membership, StateEntry, StoredEvent, StoredToken, StreamPosition, TokenHash};

/// Events kept; each is one event's JSON (at most 64 KiB, typically < 1 KiB).
const MAX_EVENTS: usize = 4096;
/// State groups kept.
const MAX_GROUPS: usize = 1024;
/// Access tokens kept.
const MAX_SESSIONS: usize = 8192;

/// Devices whose key counts are kept.
const MAX_DEVICES: usize = 4096;
/// Sync filters kept.
const MAX_FILTERS: usize = 1024;
/// Account data entries kept.
const MAX_ACCOUNT_DATA: usize = 4096;
/// Users whose memberships are kept.
const MAX_MEMBERSHIP_LISTS: usize = 4096;
/// Unread counts kept (a room and a user each).
const MAX_UNREAD_COUNTS: usize = 8192;

/// The cache; cheap to share.
#[derive(Debug)]
pub struct ReadCache {
    events: Mutex<Generations<OwnedEventId, StoredEvent>>,
    groups: Mutex<Generations<i64, Arc<Vec<StateEntry>>>>,
    sessions: Mutex<Invalidated<TokenHash, StoredToken>>,
    one_time_key_counts: Mutex<Invalidated<DeviceKey, Vec<(String, u64)>>>,
    unused_fallback_keys: Mutex<Invalidated<DeviceKey, Vec<String>>>,
    filters: Mutex<Generations<(OwnedUserId, i64), String>>,
    account_data: Mutex<Invalidated<AccountDataKey, Option<String>>>,
    memberships: Mutex<Invalidated<OwnedUserId, Arc<Vec<Membership>>>>,
    unread_counts: Mutex<Invalidated<UnreadKey, UnreadCount>>,
    recent: Mutex<RecentEvents>,
}

/// An unread count's key: the room and the user.
pub type UnreadKey = (OwnedRoomId, String);

/// A user's unread count in a room.
#[derive(Debug, Clone, Copy)]
pub struct UnreadCount {
    /// The position it was counted up to.
    pub upto: StreamPosition,
    /// The position of the event the user's read receipt names (0 without one).
    pub read_upto: StreamPosition,
    /// Counted messages in `(read_upto, upto]`.
    pub count: u64,
}

/// An account data entry's key: user, room (`""` for global), type.
pub type AccountDataKey = (OwnedUserId, String, String);

impl Default for ReadCache {
    fn default() -> Self {
        Self {
            events: Mutex::default(),
            groups: Mutex::default(),
            sessions: Mutex::new(Invalidated::new(MAX_SESSIONS)),
            one_time_key_counts: Mutex::new(Invalidated::new(MAX_DEVICES)),
            unused_fallback_keys: Mutex::new(Invalidated::new(MAX_DEVICES)),
            filters: Mutex::default(),
            account_data: Mutex::new(Invalidated::new(MAX_ACCOUNT_DATA)),
            memberships: Mutex::new(Invalidated::new(MAX_MEMBERSHIP_LISTS)),
            unread_counts: Mutex::new(Invalidated::new(MAX_UNREAD_COUNTS)),
            recent: Mutex::default(),
        }
    }
}

impl ReadCache {
    /// A cached event.
    pub fn event(&self, event_id: &EventId) -> Option<StoredEvent> {
        lock(&self.events).get(event_id, MAX_EVENTS)
    }

    /// Remembers an event (as it is stored now).
    pub fn put_event(&self, event: StoredEvent) {
        lock(&self.events).insert(event.event_id.clone(), event, MAX_EVENTS);
    }

    /// Replaces a cached event's JSON after a redaction.
    pub fn redact(&self, event_id: &EventId, json: &str) {
        let mut events = lock(&self.events);
        let events = &mut *events;
        for generation in [&mut events.current, &mut events.previous] {
            if let Some(event) = generation.get_mut(event_id) {
                json.clone_into(&mut event.json);
            }
        }
    }

    /// A cached full state group.
    pub fn group(&self, group: i64) -> Option<Arc<Vec<StateEntry>>> {
        lock(&self.groups).get(&group, MAX_GROUPS)
    }

    /// Remembers a full state group.
    pub fn put_group(&self, group: i64, entries: Arc<Vec<StateEntry>>) {
        lock(&self.groups).insert(group, entries, MAX_GROUPS);
    }

    /// The sessions behind access tokens.
    pub fn sessions(&self) -> std::sync::MutexGuard<'_, Invalidated<TokenHash, StoredToken>> {
        lock(&self.sessions)
    }

    /// Each device's unclaimed one-time key counts, by algorithm.
    pub fn one_time_key_counts(
        &self,
    ) -> std::sync::MutexGuard<'_, Invalidated<DeviceKey, Vec<(String, u64)>>> {
        lock(&self.one_time_key_counts)
    }

    /// Each device's unused fallback key algorithms.
    pub fn unused_fallback_keys(
        &self,
    ) -> std::sync::MutexGuard<'_, Invalidated<DeviceKey, Vec<String>>> {
        lock(&self.unused_fallback_keys)
    }

    /// A stored sync filter (filters never change once created).
    pub fn filter(&self, user_id: &UserId, filter_id: i64) -> Option<String> {
        lock(&self.filters).get(&(user_id.to_owned(), filter_id), MAX_FILTERS)
    }

    /// Remembers a stored sync filter.
    pub fn put_filter(&self, user_id: &UserId, filter_id: i64, json: String) {
        lock(&self.filters).insert((user_id.to_owned(), filter_id), json, MAX_FILTERS);
    }

    /// Account data entries (and their absence), by user, room and type.
    pub fn account_data(
        &self,
    ) -> std::sync::MutexGuard<'_, Invalidated<AccountDataKey, Option<String>>> {
        lock(&self.account_data)
    }

    /// Each user's latest membership in each room (not forgotten), as
    /// `memberships_of(user, None)` answers.
    pub fn memberships(
        &self,
    ) -> std::sync::MutexGuard<'_, Invalidated<OwnedUserId, Arc<Vec<Membership>>>> {
        lock(&self.memberships)
    }

    /// Unread counts, by room and user; a read receipt forgets the user's.
    pub fn unread_counts(&self) -> std::sync::MutexGuard<'_, Invalidated<UnreadKey, UnreadCount>> {
        lock(&self.unread_counts)
    }

    /// The newest committed events.
    pub fn recent(&self) -> std::sync::MutexGuard<'_, RecentEvents> {
        lock(&self.recent)
    }

    /// Forgets everything cached about devices and their tokens; for
    /// deletions of devices and new logins, which are rare.
    pub fn forget_devices(&self) {
        self.sessions().forget_all();
        self.one_time_key_counts().forget_all();
        self.unused_fallback_keys().forget_all();
    }

    /// Forgets what is cached about one device's keys, after they changed.
    pub fn forget_device_keys(&self, user_id: &UserId, device_id: &DeviceId) {
        let key = (user_id.to_owned(), device_id.to_owned());
        self.one_time_key_counts().forget(&key);
        self.unused_fallback_keys().forget(&key);
    }
}

/// A device, as a cache key.
pub type DeviceKey = (OwnedUserId, OwnedDeviceId);

/// A cache of values that writes make stale. Every invalidation moves an
/// epoch; a value read from the database is stored only if the epoch has
/// not moved since the read began, since it may be what the invalidating
/// write replaced (otherwise a logged-out token, say, could live on).
#[derive(Debug)]
pub struct Invalidated<K, V> {
    epoch: u64,
    entries: Generations<K, V>,
    max: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Invalidated<K, V> {
    fn new(max: usize) -> Self {
        Self {
            epoch: 0,
            entries: Generations::default(),
            max,
        }
    }

    /// A cached value.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.entries.get(key, self.max)
    }

    /// The epoch to read before looking a value up in the database and to
    /// pass to [`Invalidated::put`].
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Stores a value read from the database, unless an invalidation
    /// happened since `epoch`.
    pub fn put(&mut self, epoch: u64, key: K, value: V) {
        if self.epoch == epoch {
            self.entries.insert(key, value, self.max);
        }
    }

    /// Forgets one key's value; call once the write that changed it has
    /// committed.
    pub fn forget(&mut self, key: &K) {
        self.epoch += 1;
        self.entries.current.remove(key);
        self.entries.previous.remove(key);
    }

    /// Forgets every value.
    pub fn forget_all(&mut self) {
        self.epoch += 1;
        self.entries = Generations::default();
    }
}

/// A bounded map that ages entries in two generations: when the current one
/// is full it becomes the previous one (dropping the old previous), and a hit
/// in the previous generation moves back to the current one. Recently used
/// entries survive a turnover, which a single map emptied when full does not.
#[derive(Debug)]
struct Generations<K, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
}

impl<K, V> Default for Generations<K, V> {
    fn default() -> Self {
        Self {
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Generations<K, V> {
    fn get<Q>(&mut self, key: &Q, max: usize) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(value) = self.current.get(key) {
            return Some(value.clone());
        }
        let value = self.previous.remove(key)?;
        self.insert(key.to_owned(), value.clone(), max);
        Some(value)
    }

    fn insert(&mut self, key: K, value: V, max: usize) {
        if self.current.len() >= max / 2 {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, value);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; a cache stays usable.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::Generations;

    #[test]
    fn recently_used_entries_survive_a_turnover() {
        let mut cache = Generations::default();
        for key in 0..4 {
            cache.insert(key, key, 8);
        }
        // Key 0 is read while the next batch pushes the first one to the old generation.
        for key in 4..8 {
            cache.insert(key, key, 8);
        }
        assert_eq!(cache.get(&0, 8), Some(0));
        for key in 8..12 {
            cache.insert(key, key, 8);
        }
        assert_eq!(
            cache.get(&0, 8),
            Some(0),
            "a hit moved it to the current generation"
        );
        assert_eq!(cache.get(&1, 8), None, "an unused old entry is gone");
        assert!(cache.current.len() + cache.previous.len() <= 8);
    }
}
