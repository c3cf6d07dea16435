//! Wake-ups for long-polling syncs.
//!
//! A sync that finds nothing new listens for its user (and its device); a
//! write wakes exactly the users, or for to-device messages exactly the
//! devices, who may see it. A listener is a `watch` receiver: registering it
//! before looking for news means a write that lands in between is never
//! missed, and an idle listener is a parked future that costs no CPU.

use std::{collections::HashMap, hash::Hash, sync::Mutex};

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use tokio::sync::watch;

/// Per-user and per-device wake-up channels.
#[derive(Debug, Default)]
pub struct Notifier {
    users: Channels<OwnedUserId>,
    devices: Channels<(OwnedUserId, OwnedDeviceId)>,
}

/// Resolves once something for its user (or its device, when it listens
/// for one) was written after it was created.
#[derive(Debug)]
pub struct Listener {
    user: watch::Receiver<()>,
    device: Option<watch::Receiver<()>>,
}

impl Listener {
    /// Waits for the next wake-up.
    pub async fn woken(&mut self) {
        match &mut self.device {
            None => changed(&mut self.user).await,
            Some(device) => tokio::select! {
                () = changed(&mut self.user) => {}
                () = changed(device) => {}
            },
        }
    }
}

async fn changed(receiver: &mut watch::Receiver<()>) {
    // An error means the sender is gone, which only happens when the map
    // entry was pruned with no receivers left; this receiver then never wakes.
    if receiver.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Notifier {
    /// Starts listening for `user_id`.
    pub fn listen(&self, user_id: &UserId) -> Listener {
        Listener {
            user: self.users.subscribe(user_id.to_owned()),
            device: None,
        }
    }

    /// Starts listening for `user_id` and for messages to one of its devices.
    pub fn listen_device(&self, user_id: &UserId, device_id: &DeviceId) -> Listener {
        Listener {
            user: self.users.subscribe(user_id.to_owned()),
            device: Some(
                self.devices
                    .subscribe((user_id.to_owned(), device_id.to_owned())),
            ),
        }
    }

    /// Wakes every listener of these users.
    pub fn wake<'a>(&self, user_ids: impl IntoIterator<Item = &'a UserId>) {
        self.users.wake(user_ids.into_iter().map(ToOwned::to_owned));
    }

    /// Wakes the listeners of these devices only.
    pub fn wake_devices(&self, devices: impl IntoIterator<Item = (OwnedUserId, OwnedDeviceId)>) {
        self.devices.wake(devices);
    }
}

/// A map of wake-up channels, pruned as their listeners go away.
#[derive(Debug)]
struct Channels<K>(Mutex<HashMap<K, watch::Sender<()>>>);

impl<K> Default for Channels<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq> Channels<K> {
    fn subscribe(&self, key: K) -> watch::Receiver<()> {
        self.lock()
            .entry(key)
            .or_insert_with(|| watch::channel(()).0)
            .subscribe()
    }

    fn wake(&self, keys: impl IntoIterator<Item = K>) {
        let mut channels = self.lock();
        for key in keys {
            if let Some(sender) = channels.get(&key) {
                if sender.receiver_count() == 0 {
                    channels.remove(&key);
                } else {
                    sender.send_replace(());
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, watch::Sender<()>>> {
        // A poisoned lock only means a panic elsewhere; the map is still whole.
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ruma::{device_id, user_id};

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
        assert!(notifier.users.lock().is_empty());
    }

    #[tokio::test]
    async fn a_device_wakes_for_its_user_and_for_itself() {
        let notifier = Notifier::default();
        let alice = user_id!("@alice:x");
        let mut phone = notifier.listen_device(alice, device_id!("PHONE"));
        notifier.wake_devices([(alice.to_owned(), device_id!("PHONE").to_owned())]);
        tokio::time::timeout(Duration::from_secs(5), phone.woken())
            .await
            .expect("woken by a device wake-up");
        notifier.wake([alice]);
        tokio::time::timeout(Duration::from_secs(5), phone.woken())
            .await
            .expect("woken by a user wake-up");
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_wake_up_leaves_the_other_devices_asleep() {
        let notifier = Notifier::default();
        let alice = user_id!("@alice:x");
        let mut laptop = notifier.listen_device(alice, device_id!("LAPTOP"));
        notifier.wake_devices([(alice.to_owned(), device_id!("PHONE").to_owned())]);
        assert!(
            tokio::time::timeout(Duration::from_secs(30), laptop.woken())
                .await
                .is_err()
        );
    }
}
