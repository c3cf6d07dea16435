//! The rooms whose current state is kept in memory, bounded.
//!
//! Every room a request names gets a slot (its lock and cached state) on
//! first use. Clients can name many rooms, so the slots are capped: past the
//! capacity, the least recently used idle slots are dropped, and their
//! rooms' state is loaded from storage again on next use. A slot is idle
//! when nothing but this map holds it: no send is queued or running, no
//! read holds its lock. Only idle slots are dropped, so a room never has
//! two slots (and two writers) at once; while every slot is busy the map
//! may briefly pass its capacity, by at most the number of rooms in use.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use ruma::{OwnedRoomId, RoomId};

/// A capped map of per-room slots.
#[derive(Debug)]
pub struct RoomSlots<T> {
    inner: Mutex<Inner<T>>,
    capacity: usize,
}

#[derive(Debug)]
struct Inner<T> {
    slots: HashMap<OwnedRoomId, Entry<T>>,
    /// Counts uses, to tell which slot was used least recently.
    clock: u64,
}

#[derive(Debug)]
struct Entry<T> {
    slot: Arc<T>,
    last_used: u64,
}

impl<T: Default> RoomSlots<T> {
    /// An empty map that keeps about `capacity` slots (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                clock: 0,
            }),
            capacity: capacity.max(1),
        }
    }

    /// The room's slot, made on first use.
    pub fn get(&self, room_id: &RoomId) -> Arc<T> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        if let Some(entry) = inner.slots.get_mut(room_id) {
            entry.last_used = now;
            return entry.slot.clone();
        }
        if inner.slots.len() >= self.capacity {
            // Down to nine tenths at once, so the scan is paid once per
            // tenth of the capacity rather than on every new room.
            inner.evict_idle(self.capacity - self.capacity.div_ceil(10));
        }
        let slot = Arc::new(T::default());
        inner.slots.insert(
            room_id.to_owned(),
            Entry {
                slot: slot.clone(),
                last_used: now,
            },
        );
        slot
    }

    /// Forgets a room's slot (for a room that turned out not to exist).
    pub fn remove(&self, room_id: &RoomId) {
        self.lock().slots.remove(room_id);
    }

    /// How many slots are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether no slot is kept.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.lock().slots.is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // A poisoned lock only means a panic elsewhere; the map is still whole.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl<T> Inner<T> {
    /// Drops the least recently used idle slots until at most `target` are left.
    fn evict_idle(&mut self, target: usize) {
        let mut idle: Vec<(u64, OwnedRoomId)> = self
            .slots
            .iter()
            // Only this map holds it, and new holders must come through the
            // map's lock, which the caller holds.
            .filter(|(_, entry)| Arc::strong_count(&entry.slot) == 1)
            .map(|(room_id, entry)| (entry.last_used, room_id.clone()))
            .collect();
        idle.sort_unstable();
        let excess = self.slots.len().saturating_sub(target);
        for (_, room_id) in idle.into_iter().take(excess) {
            self.slots.remove(&room_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::OwnedRoomId;

    use super::*;

    fn room(n: usize) -> OwnedRoomId {
        OwnedRoomId::try_from(format!("!r{n}:a.test")).unwrap()
    }

    #[test]
    fn the_map_stays_within_its_capacity() {
        let slots: RoomSlots<u8> = RoomSlots::new(10);
        for n in 0..1_000 {
            slots.get(&room(n));
            assert!(slots.len() <= 10, "{} slots after {n} rooms", slots.len());
        }
    }

    #[test]
    fn slots_in_use_are_never_dropped_and_recent_ones_stay() {
        let slots: RoomSlots<u8> = RoomSlots::new(10);
        let held = slots.get(&room(0));
        for n in 1..10 {
            slots.get(&room(n));
        }
        // Room 9 was used last among the idle ones, room 1 first.
        slots.get(&room(9));
        slots.get(&room(100));
        assert!(
            Arc::ptr_eq(&held, &slots.get(&room(0))),
            "a slot in use keeps its identity: one room, one writer"
        );
        let inner = slots.lock();
        assert!(inner.slots.contains_key(&*room(9)));
        assert!(
            !inner.slots.contains_key(&*room(1)),
            "the least recently used goes first"
        );
    }

    #[test]
    fn when_every_slot_is_busy_the_map_grows_rather_than_split_a_room() {
        let slots: RoomSlots<u8> = RoomSlots::new(2);
        let held: Vec<Arc<u8>> = (0..5).map(|n| slots.get(&room(n))).collect();
        assert_eq!(slots.len(), 5);
        for (n, slot) in held.iter().enumerate() {
            assert!(Arc::ptr_eq(slot, &slots.get(&room(n))));
        }
        drop(held);
        slots.get(&room(99));
        assert!(
            slots.len() <= 2,
            "idle again, the excess goes: {}",
            slots.len()
        );
    }
}
