//! Wake-ups for long-polling syncs.
//!
//! A sync that finds nothing new listens for its user; a write wakes exactly
//! the users who may see it. A listener is a `watch` receiver: registering it
//! before looking for news means a write that lands in between is never
//! missed, and an idle listener is a parked future that costs no CPU.

use std::{collections::HashMap, sync::Mutex};

use ruma::{OwnedUserId, UserId};
use tokio::sync::watch;

/// Per-user wake-up channels.
#[derive(Debug, Default)]
pub struct Notifier {
    users: Mutex<HashMap<OwnedUserId, watch::Sender<()>>>,
}

/// Resolves once something for its user was written after it was created.
#[derive(Debug)]
pub struct Listener(watch::Receiver<()>);

impl Listener {
    /// Waits for the next wake-up.
    pub async fn woken(&mut self) {
        // An error means the sender is gone, which only happens when the map
        // entry was pruned with no receivers left; this receiver then never wakes.
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Notifier {
    /// Starts listening for `user_id`.
    pub fn listen(&self, user_id: &UserId) -> Listener {
        let mut users = self.lock();
        let sender = users
            .entry(user_id.to_owned())
            .or_insert_with(|| watch::channel(()).0);
        Listener(sender.subscribe())
    }

    /// Wakes every listener of these users.
    pub fn wake<'a>(&self, user_ids: impl IntoIterator<Item = &'a UserId>) {
        let mut users = self.lock();
        for user_id in user_ids {
            if let Some(sender) = users.get(user_id) {
                if sender.receiver_count() == 0 {
                    users.remove(user_id);
                } else {
                    sender.send_replace(());
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedUserId, watch::Sender<()>>> {
        // A poisoned lock only means a panic elsewhere; the map is still whole.
        self.users
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ruma::user_id;

    use super::*;

    #[tokio::test]
    async fn a_wake_after_listening_is_not_missed() {
        let notifier = Notifier::default();
        let mut listener = notifier.listen(user_id!("@alice:x"));
        notifier.wake([user_id!("@alice:x")]);
        tokio::time::timeout(Duration::from_secs(5), listener.woken())
            .await
            .expect("woken");
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_named_users_wake() {
        let notifier = Notifier::default();
        let mut alice = notifier.listen(user_id!("@alice:x"));
        notifier.wake([user_id!("@bob:x")]);
        // With the clock paused, the timeout elapses at once unless woken.
        assert!(
            tokio::time::timeout(Duration::from_secs(30), alice.woken())
                .await
                .is_err()
        );
    }

    #[test]
    fn entries_without_listeners_are_pruned() {
        let notifier = Notifier::default();
        drop(notifier.listen(user_id!("@alice:x")));
        notifier.wake([user_id!("@alice:x")]);
        assert!(notifier.lock().is_empty());
    }
}
