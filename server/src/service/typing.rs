//! Typing notifications: in memory only, each with a timeout.
//!
//! Typing has its own counter (it is never persisted, so it cannot share
//! the stream's positions across restarts); sync tokens carry it beside the
//! stream position.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::time::Instant;

use super::notifier::Notifier;

/// Longest a client may say it will keep typing.
pub const MAX_TYPING_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
struct Rooms {
    /// Per room: who types until when, and the counter value of the last change.
    rooms: HashMap<OwnedRoomId, (HashMap<OwnedUserId, Instant>, u64)>,
    counter: u64,
}

/// Who is typing where.
#[derive(Debug)]
pub struct Typing {
    state: Arc<Mutex<Rooms>>,
    notifier: Arc<Notifier>,
}

impl Typing {
    /// Builds the service.
    pub fn new(notifier: Arc<Notifier>) -> Self {
        Self {
            state: Arc::new(Mutex::new(Rooms::default())),
            notifier,
        }
    }

    /// The typing counter now.
    pub fn current(&self) -> u64 {
        lock(&self.state).counter
    }

    /// Marks `user_id` as typing (for `timeout`) or not, and wakes `members`.
    pub fn set(
        self: &Arc<Self>,
        room_id: &RoomId,
        user_id: &UserId,
        timeout: Option<Duration>,
        members: Vec<OwnedUserId>,
    ) {
        let deadline = timeout.map(|t| Instant::now() + t.min(MAX_TYPING_TIMEOUT));
        let changed = {
            let mut rooms = lock(&self.state);
            rooms.counter += 1;
            let counter = rooms.counter;
            let (typers, version) = rooms.rooms.entry(room_id.to_owned()).or_default();
            let changed = match deadline {
                Some(deadline) => typers.insert(user_id.to_owned(), deadline).is_none(),
                None => typers.remove(user_id).is_some(),
            };
            *version = counter;
            changed || deadline.is_some()
        };
        if changed {
            self.notifier.wake(members.iter().map(AsRef::as_ref));
        }
        if let Some(deadline) = deadline {
            // Expire the notification when its timeout passes, unless renewed.
            let typing = Arc::clone(self);
            let (room_id, user_id) = (room_id.to_owned(), user_id.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline).await;
                let expired = {
                    let mut rooms = lock(&typing.state);
                    rooms.counter += 1;
                    let counter = rooms.counter;
                    match rooms.rooms.get_mut(&room_id) {
                        Some((typers, version)) if typers.get(&user_id) == Some(&deadline) => {
                            typers.remove(&user_id);
                            *version = counter;
                            true
                        }
                        _ => false,
                    }
                };
                if expired {
                    typing.notifier.wake(members.iter().map(AsRef::as_ref));
                }
            });
        }
    }

    /// Who types in the room now, if that changed after counter `since`
    /// (always, when `since` is `None`).
    pub fn typers_since(
        &self,
        room_id: &RoomId,
        since: Option<u64>,
    ) -> Option<BTreeSet<OwnedUserId>> {
        let rooms = lock(&self.state);
        let (typers, version) = rooms.rooms.get(room_id)?;
        if since.is_some_and(|since| *version <= since) {
            return None;
        }
        let now = Instant::now();
        Some(
            typers
                .iter()
                .filter(|(_, deadline)| **deadline > now)
                .map(|(user, _)| user.clone())
                .collect(),
        )
    }
}

fn lock(state: &Mutex<Rooms>) -> std::sync::MutexGuard<'_, Rooms> {
    // A poisoned lock only means a panic elsewhere; the maps stay whole.
    state.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, user_id};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn typing_expires_after_its_timeout() {
        let typing = Arc::new(Typing::new(Arc::new(Notifier::default())));
        let room = room_id!("!r:x");
        typing.set(room, user_id!("@a:x"), Some(Duration::from_secs(5)), vec![]);
        let seen = typing.current();
        assert_eq!(typing.typers_since(room, None).unwrap().len(), 1);
        assert!(
            typing.typers_since(room, Some(seen)).is_none(),
            "nothing new since"
        );
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(
            typing.typers_since(room, Some(seen)).unwrap().is_empty(),
            "expired and reported"
        );
    }
}
