//! Account data and read receipts: per-user data that sync delivers.

use std::sync::Arc;

use ruma::{EventId, OwnedUserId, RoomId, UserId};
use tokio::sync::{Mutex, MutexGuard};

use super::{
    ServiceError,
    federation::sender::FederationSender,
    notifier::Notifier,
    room_events::RoomEvents,
    stream::{Kind, Stream},
};
use crate::storage::{Millis, Receipt, Storage};

/// Longest thread id accepted: the spec's limit for an event id.
const MAX_THREAD_ID_BYTES: usize = 255;

/// Largest account data content accepted, in bytes.
pub const MAX_ACCOUNT_DATA_BYTES: usize = 65_536;

mod tags;

/// How many locks [`AccountData::lock_account`] spreads accounts over.
const ACCOUNT_LOCKS: usize = 64;

/// Account data and receipts.
#[derive(Debug)]
pub struct AccountData {
    storage: Arc<dyn Storage>,
    stream: Arc<Stream>,
    notifier: Arc<Notifier>,
    events: Arc<RoomEvents>,
    /// Sends public receipts to the room's other servers.
    outbound: FederationSender,
    /// Most entries one account may keep.
    max_entries: u64,
    /// Entries the server edits (push rules, tags) are read-modify-write of
    /// one document; two devices editing at once must not lose either edit.
    /// A fixed set of locks, an account taking the one its id hashes to:
    /// accounts rarely wait for each other, and nothing grows with their
    /// number.
    edits: Vec<Mutex<()>>,
}

impl AccountData {
    /// Builds the service; an account keeps at most `max_entries` entries.
    pub fn new(
        storage: Arc<dyn Storage>,
        stream: Arc<Stream>,
        notifier: Arc<Notifier>,
        events: Arc<RoomEvents>,
        outbound: FederationSender,
        max_entries: u64,
    ) -> Self {
        Self {
            storage,
            stream,
            notifier,
            events,
            outbound,
            max_entries,
            edits: (0..ACCOUNT_LOCKS).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Held while one of the account's server-edited entries is read,
    /// changed and written back.
    pub(crate) async fn lock_account(&self, user_id: &UserId) -> MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(user_id.as_str());
        let index = usize::try_from(hash % ACCOUNT_LOCKS as u64).unwrap_or(0);
        self.edits[index].lock().await
    }

    /// Sets an account data entry (global when `room_id` is `None`).
    ///
    /// # Errors
    /// `Forbidden` for another user's data, or a new entry past the
    /// account's cap; `InvalidParam` for the types the server manages or
    /// oversized content.
    pub async fn set(
        &self,
        caller: &UserId,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: &str,
    ) -> Result<(), ServiceError> {
        if caller != user_id {
            return Err(ServiceError::Forbidden(
                "you may only change your own account data".to_owned(),
            ));
        }
        // The spec reserves these: the server derives them from other endpoints.
        if matches!(data_type, "m.fully_read" | "m.push_rules") {
            return Err(ServiceError::InvalidParam(format!(
                "{data_type} cannot be set directly"
            )));
        }
        self.store(user_id, room_id, data_type, content).await
    }

    /// Stores an entry within the account's limits: its size, and the
    /// number of entries.
    async fn store(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: &str,
    ) -> Result<(), ServiceError> {
        if content.len() > MAX_ACCOUNT_DATA_BYTES
            || data_type.is_empty()
            || data_type.contains('\0')
        {
            return Err(ServiceError::InvalidParam(
                "invalid account data".to_owned(),
            ));
        }
        // Each type (and room) is a row kept for good: cap how many an
        // account has, but never refuse changing one it has. Two new
        // entries at once may pass the cap by one each.
        let is_new = self
            .storage
            .account_data(user_id, room_id, data_type)
            .await?
            .is_none();
        if is_new && self.storage.account_data_count(user_id).await? >= self.max_entries {
            return Err(ServiceError::Forbidden(format!(
                "an account may keep at most {} account data entries",
                self.max_entries
            )));
        }
        self.write(user_id, room_id, data_type, content).await
    }

    /// One entry's content.
    ///
    /// # Errors
    /// `Forbidden` for another user's data; `NotFound` when unset.
    pub async fn get(
        &self,
        caller: &UserId,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
    ) -> Result<String, ServiceError> {
        if caller != user_id {
            return Err(ServiceError::Forbidden(
                "you may only read your own account data".to_owned(),
            ));
        }
        self.storage
            .account_data(user_id, room_id, data_type)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such account data".to_owned()))
    }

    /// Records that the user read up to `event_id`: `m.read` (shared with the
    /// room), `m.read.private` (only for the user), or the `m.fully_read`
    /// marker (room account data).
    ///
    /// # Errors
    /// `Forbidden` unless the user is joined; `NotFound` for an event not in
    /// the room; `InvalidParam` for other receipt types, or a thread that is
    /// not an event of the room.
    pub async fn set_receipt(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        receipt_type: &str,
        event_id: &EventId,
        thread_id: Option<&str>,
    ) -> Result<(), ServiceError> {
        // Whether the user is joined, and whom a public receipt wakes: the
        // room's joined members.
        let wakes_room = receipt_type == "m.read";
        let (is_joined, joined): (bool, Vec<OwnedUserId>) = self
            .events
            .read_state(room_id, |state| {
                let is_joined = state.membership_of(user_id.as_str()) == Some("join");
                let joined = if is_joined && wakes_room {
                    state.members_in(&["join"]).map(ToOwned::to_owned).collect()
                } else {
                    Vec::new()
                };
                (is_joined, joined)
            })
            .await?
            .ok_or_else(ServiceError::not_in_room)?;
        if !is_joined {
            return Err(ServiceError::not_in_room());
        }
        if self
            .storage
            .event(event_id)
            .await?
            .is_none_or(|event| event.room_id != room_id)
        {
            return Err(ServiceError::NotFound(
                "no such event in this room".to_owned(),
            ));
        }
        // A thread is named by its root event. Anything else would let a
        // client store one receipt per made-up thread id, without end.
        if let Some(thread_id) = thread_id {
            let root = (thread_id.len() <= MAX_THREAD_ID_BYTES)
                .then(|| EventId::parse(thread_id).ok())
                .flatten();
            let is_room_event = match root {
                Some(root) => self
                    .storage
                    .event(&root)
                    .await?
                    .is_some_and(|event| event.room_id == room_id),
                None => false,
            };
            if !is_room_event {
                return Err(ServiceError::InvalidParam(
                    "thread_id must be `main` or the id of an event in this room".to_owned(),
                ));
            }
        }
        match receipt_type {
            "m.fully_read" => {
                let content = serde_json::json!({ "event_id": event_id }).to_string();
                self.write(user_id, Some(room_id), "m.fully_read", &content)
                    .await
            }
            "m.read" | "m.read.private" => {
                let receipt = Receipt {
                    room_id: room_id.to_owned(),
                    receipt_type: receipt_type.to_owned(),
                    user_id: user_id.to_string(),
                    thread_id: thread_id.unwrap_or_default().to_owned(),
                    event_id: event_id.to_string(),
                    ts: Millis::now().0,
                };
                let storage = &self.storage;
                let receipt = &receipt;
                self.stream
                    .append(Kind::Receipt, |position| async move {
                        Ok(storage.set_receipt(receipt, position).await?)
                    })
                    .await?;
                if wakes_room {
                    self.notifier.wake(joined.iter().map(|member| &**member));
                    self.outbound.read_receipt(receipt, &joined).await?;
                } else {
                    self.notifier.wake([user_id]);
                }
                Ok(())
            }
            other => Err(ServiceError::InvalidParam(format!(
                "unknown receipt type {other}"
            ))),
        }
    }

    /// Stores an entry and wakes the owner's syncs, without the checks of
    /// [`AccountData::set`]: for the services that manage the reserved types.
    pub(crate) async fn write(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: &str,
    ) -> Result<(), ServiceError> {
        let storage = &self.storage;
        self.stream
            .append(Kind::AccountData, |position| async move {
                Ok(storage
                    .set_account_data(user_id, room_id, data_type, content, position)
                    .await?)
            })
            .await?;
        self.notifier.wake([user_id]);
        Ok(())
    }
}
