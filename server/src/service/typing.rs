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

/// Who types in one room: until when, and the id of the timer that expires it.
type Typers = HashMap<OwnedUserId, (Instant, u64)>;

#[derive(Debug, Default)]
struct Rooms {
    /// Per room: who types until when (and which timer expires it), and
    /// the counter value of the last change.
    rooms: HashMap<OwnedRoomId, (Typers, u64)>,
    counter: u64,
    /// Expiry timers running; one per typing user at most.
    timers: usize,
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
    ///
    /// One timer per typing user expires the notification: a renewal moves
    /// the deadline of the running timer instead of starting another, so a
    /// client repeating the call holds one task and one member list.
    pub fn set(
        self: &Arc<Self>,
        room_id: &RoomId,
        user_id: &UserId,
        timeout: Option<Duration>,
        members: Vec<OwnedUserId>,
    ) {
        let deadline = timeout.map(|t| Instant::now() + t.min(MAX_TYPING_TIMEOUT));
        let (changed, new_timer) = {
            let mut guard = lock(&self.state);
            let rooms = &mut *guard;
            rooms.counter += 1;
            let counter = rooms.counter;
            let (typers, version) = rooms.rooms.entry(room_id.to_owned()).or_default();
            *version = counter;
            match deadline {
                Some(deadline) => match typers.get_mut(user_id) {
                    Some(entry) => {
                        entry.0 = deadline;
                        (true, None)
                    }
                    None => {
                        typers.insert(user_id.to_owned(), (deadline, counter));
                        rooms.timers += 1;
                        (true, Some((deadline, counter)))
                    }
                },
                None => (typers.remove(user_id).is_some(), None),
            }
        };
        if changed {
            self.notifier.wake(members.iter().map(AsRef::as_ref));
        }
        if let Some((deadline, timer)) = new_timer {
            let typing = Arc::clone(self);
            let (room_id, user_id) = (room_id.to_owned(), user_id.to_owned());
            tokio::spawn(async move {
                let expired = typing.expire(&room_id, &user_id, deadline, timer).await;
                lock(&typing.state).timers -= 1;
                if expired {
                    typing.notifier.wake(members.iter().map(AsRef::as_ref));
                }
            });
        }
    }

    /// Sleeps until the user's typing deadline, following renewals, and
    /// removes the entry if it is still this timer's (then `true`).
    async fn expire(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        deadline: Instant,
        timer: u64,
    ) -> bool {
        let mut wake_at = deadline;
        loop {
            tokio::time::sleep_until(wake_at).await;
            let mut rooms = lock(&self.state);
            rooms.counter += 1;
            let counter = rooms.counter;
            let Some((typers, version)) = rooms.rooms.get_mut(room_id) else {
                return false;
            };
            match typers.get(user_id) {
                Some(&(later, owner)) if owner == timer && later > wake_at => wake_at = later,
                Some(&(_, owner)) if owner == timer => {
                    typers.remove(user_id);
                    *version = counter;
                    return true;
                }
                // Stopped, or stopped and started again under a new timer.
                _ => return false,
            }
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
                .filter(|(_, (deadline, _))| *deadline > now)
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

    #[tokio::test(start_paused = true)]
    async fn renewals_share_one_timer() {
        let typing = Arc::new(Typing::new(Arc::new(Notifier::default())));
        let room = room_id!("!r:x");
        for _ in 0..100 {
            typing.set(room, user_id!("@a:x"), Some(Duration::from_secs(5)), vec![]);
        }
        assert_eq!(lock(&typing.state).timers, 1);
        tokio::time::sleep(Duration::from_secs(3)).await;
        typing.set(room, user_id!("@a:x"), Some(Duration::from_secs(5)), vec![]);
        // Past the first deadline the renewal still holds.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(typing.typers_since(room, None).unwrap().len(), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(typing.typers_since(room, None).unwrap().is_empty());
        tokio::task::yield_now().await;
        assert_eq!(lock(&typing.state).timers, 0);
    }
}
