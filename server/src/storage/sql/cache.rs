//! A bounded cache of what the read paths ask for again and again: stored
//! events by id, full state groups, and the session behind each access
//! token (looked up by every authenticated request).
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

use ruma::{EventId, OwnedEventId};

use crate::storage::{StateEntry, StoredEvent, StoredToken, TokenHash};

/// Events kept; each is one event's JSON (at most 64 KiB, typically < 1 KiB).
const MAX_EVENTS: usize = 4096;
/// State groups kept.
const MAX_GROUPS: usize = 1024;
/// Access tokens kept.
const MAX_SESSIONS: usize = 8192;

/// The cache; cheap to share.
#[derive(Debug, Default)]
pub struct ReadCache {
    events: Mutex<Generations<OwnedEventId, StoredEvent>>,
    groups: Mutex<Generations<i64, Arc<Vec<StateEntry>>>>,
    sessions: Mutex<Sessions>,
}

/// Cached sessions, and an epoch that moves whenever tokens are deleted.
#[derive(Debug, Default)]
struct Sessions {
    epoch: u64,
    by_hash: Generations<TokenHash, StoredToken>,
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

    /// The cached session of a token hash.
    pub fn session(&self, hash: &TokenHash) -> Option<StoredToken> {
        lock(&self.sessions).by_hash.get(hash, MAX_SESSIONS)
    }

    /// The current token epoch: read it before looking a token up in the
    /// database, and pass it to [`ReadCache::put_session`].
    pub fn session_epoch(&self) -> u64 {
        lock(&self.sessions).epoch
    }

    /// Remembers a session read from the database, unless tokens were
    /// deleted since `epoch`: the row read may be one that is gone now, and
    /// a logged-out token must not live on in the cache.
    pub fn put_session(&self, epoch: u64, token: StoredToken) {
        let mut sessions = lock(&self.sessions);
        if sessions.epoch == epoch {
            sessions
                .by_hash
                .insert(token.hash.clone(), token, MAX_SESSIONS);
        }
    }

    /// Forgets every cached session; called once a deletion of tokens has
    /// committed (logout, device deletion, a new login on a device).
    /// Deletions are rare next to lookups, so forgetting all is simpler
    /// than finding the affected ones and costs little.
    pub fn forget_sessions(&self) {
        let mut sessions = lock(&self.sessions);
        sessions.epoch += 1;
        sessions.by_hash = Generations::default();
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
