//! Which to-device inboxes may hold something, so that a sync can skip the
//! inbox queries (and the delete that takes SQLite's write lock) for a
//! device with nothing waiting and nothing to delete.
//!
//! For each device that got a message or acknowledged one since the process
//! started: the position of its latest message, and the position up to
//! which its inbox was emptied by an acknowledgement. The inbox is known
//! empty when it was emptied at or past its latest message. A device first
//! seen counts as "written at the start position": what the database held
//! before the process started is unknown until an acknowledgement past it.
//!
//! A send marks its recipients before its position is published, so a sync
//! that reads that position also sees the mark.

use std::{collections::HashMap, sync::Mutex};

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use crate::storage::StreamPosition;

/// The marks; see the module docs.
#[derive(Debug)]
pub struct InboxMarks {
    start: StreamPosition,
    users: Mutex<HashMap<OwnedUserId, HashMap<OwnedDeviceId, Marks>>>,
}

#[derive(Debug, Clone, Copy)]
struct Marks {
    latest_message: StreamPosition,
    emptied_upto: StreamPosition,
}

impl InboxMarks {
    /// Marks for a process whose stream starts after `start`.
    pub fn new(start: StreamPosition) -> Self {
        Self {
            start,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Records messages at `position` for `devices`.
    pub fn written(&self, devices: &[(OwnedUserId, OwnedDeviceId)], position: StreamPosition) {
        let mut users = self.lock();
        for (user_id, device_id) in devices {
            let marks = self.entry(&mut users, user_id, device_id);
            marks.latest_message = marks.latest_message.max(position);
        }
    }

    /// Records that the device's messages at or below `upto` are deleted.
    pub fn emptied(&self, user_id: &UserId, device_id: &DeviceId, upto: StreamPosition) {
        let mut users = self.lock();
        let marks = self.entry(&mut users, user_id, device_id);
        marks.emptied_upto = marks.emptied_upto.max(upto);
    }

    /// Whether the device's inbox is known to hold nothing: no message to
    /// deliver and none to delete.
    pub fn is_empty(&self, user_id: &UserId, device_id: &DeviceId) -> bool {
        self.lock()
            .get(user_id)
            .and_then(|devices| devices.get(device_id))
            .is_some_and(|marks| marks.emptied_upto >= marks.latest_message)
    }

    fn entry<'m>(
        &self,
        users: &'m mut HashMap<OwnedUserId, HashMap<OwnedDeviceId, Marks>>,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> &'m mut Marks {
        users
            .entry(user_id.to_owned())
            .or_default()
            .entry(device_id.to_owned())
            .or_insert(Marks {
                latest_message: self.start,
                emptied_upto: StreamPosition(0),
            })
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<OwnedUserId, HashMap<OwnedDeviceId, Marks>>> {
        // A poisoned lock only means a panic elsewhere; the map is still whole.
        self.users
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use ruma::{device_id, owned_device_id, owned_user_id, user_id};

    use super::*;

    #[test]
    fn an_inbox_is_empty_only_once_emptied_past_its_latest_message() {
        let marks = InboxMarks::new(StreamPosition(10));
        let (alice, phone) = (user_id!("@alice:x"), device_id!("PHONE"));
        assert!(
            !marks.is_empty(alice, phone),
            "unknown before an acknowledgement"
        );
        marks.emptied(alice, phone, StreamPosition(9));
        assert!(
            !marks.is_empty(alice, phone),
            "what came before the start is unknown"
        );
        marks.emptied(alice, phone, StreamPosition(10));
        assert!(marks.is_empty(alice, phone));

        marks.written(
            &[(owned_user_id!("@alice:x"), owned_device_id!("PHONE"))],
            StreamPosition(12),
        );
        assert!(!marks.is_empty(alice, phone), "a new message waits");
        marks.emptied(alice, phone, StreamPosition(11));
        assert!(
            !marks.is_empty(alice, phone),
            "acknowledged up to before it"
        );
        marks.emptied(alice, phone, StreamPosition(12));
        assert!(marks.is_empty(alice, phone));
        assert!(
            !marks.is_empty(alice, device_id!("LAPTOP")),
            "another device is unknown"
        );
    }
}
