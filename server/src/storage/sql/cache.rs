//! A bounded cache of what the room read paths ask for again and again:
//! stored events by id and full state groups.
//!
//! State groups never change once written. An event changes only when a
//! redaction applies, and that goes through `append_event` in this process,
//! which updates the cache. (Several server processes sharing one
//! PostgreSQL would need an invalidation channel; they are not supported
//! yet, see spec-notes/sync.md.)

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{EventId, OwnedEventId};

use crate::storage::{StateEntry, StoredEvent};

/// Events kept; each is one event's JSON (at most 64 KiB, typically < 1 KiB).
const MAX_EVENTS: usize = 4096;
/// State groups kept.
const MAX_GROUPS: usize = 1024;

/// The cache; cheap to share.
#[derive(Debug, Default)]
pub struct ReadCache {
    events: Mutex<HashMap<OwnedEventId, StoredEvent>>,
    groups: Mutex<HashMap<i64, Arc<Vec<StateEntry>>>>,
}

impl ReadCache {
    /// A cached event.
    pub fn event(&self, event_id: &EventId) -> Option<StoredEvent> {
        lock(&self.events).get(event_id).cloned()
    }

    /// Remembers an event (as it is stored now).
    pub fn put_event(&self, event: StoredEvent) {
        insert_bounded(
            &mut lock(&self.events),
            event.event_id.clone(),
            event,
            MAX_EVENTS,
        );
    }

    /// Replaces a cached event's JSON after a redaction.
    pub fn redact(&self, event_id: &EventId, json: &str) {
        if let Some(event) = lock(&self.events).get_mut(event_id) {
            json.clone_into(&mut event.json);
        }
    }

    /// A cached full state group.
    pub fn group(&self, group: i64) -> Option<Arc<Vec<StateEntry>>> {
        lock(&self.groups).get(&group).cloned()
    }

    /// Remembers a full state group.
    pub fn put_group(&self, group: i64, entries: Arc<Vec<StateEntry>>) {
        insert_bounded(&mut lock(&self.groups), group, entries, MAX_GROUPS);
    }
}

/// Inserts, first emptying a full map: crude, but bounded, and the working
/// set refills at once.
fn insert_bounded<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    key: K,
    value: V,
    max: usize,
) {
    if map.len() >= max {
        map.clear();
    }
    map.insert(key, value);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; a cache stays usable.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
