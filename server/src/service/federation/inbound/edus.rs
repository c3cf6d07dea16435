//! EDUs received in a transaction. Each names users of the origin only
//! (anything else is ignored: a server speaks for its own users), and is
//! handed to the service that keeps the same thing for local users, so
//! sync shows it as it shows theirs. Malformed EDUs are skipped; none
//! fails the transaction.

use std::{collections::BTreeMap, time::Duration};

use ruma::{EventId, OwnedRoomId, OwnedUserId, RoomId, ServerName, UserId};
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::debug;

use super::{Inbound, acl_allows};
use crate::{service::ServiceError, storage::DeviceListChange};

/// How long a remote user types after an `m.typing` EDU: the EDU carries
/// no timeout, and a server that stops sending must not leave its user
/// typing for ever.
const REMOTE_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

/// Most receipts taken from one `m.receipt` EDU.
const MAX_RECEIPTS_PER_EDU: usize = 100;

/// Longest to-device `message_id` or event type, in bytes.
const MAX_IDENTIFIER_BYTES: usize = 255;

#[derive(Debug, Deserialize)]
struct Edu {
    edu_type: String,
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Deserialize)]
struct TypingContent {
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    typing: bool,
}

#[derive(Debug, Deserialize)]
struct UserReceipt {
    event_ids: Vec<String>,
    #[serde(default)]
    data: ReceiptData,
}

#[derive(Debug, Default, Deserialize)]
struct ReceiptData {
    thread_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DirectToDevice {
    sender: OwnedUserId,
    #[serde(rename = "type")]
    event_type: String,
    message_id: String,
    messages: BTreeMap<OwnedUserId, Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct KeysChanged {
    user_id: OwnedUserId,
}

impl Inbound {
    /// Takes one EDU; never fails (what cannot be taken is logged and
    /// skipped).
    pub(super) async fn receive_edu(&self, origin: &ServerName, edu: Value) {
        let Ok(Edu { edu_type, content }) = serde_json::from_value::<Edu>(edu) else {
            debug!(%origin, "skipped a malformed EDU");
            return;
        };
        let outcome = match edu_type.as_str() {
            "m.typing" => self.receive_typing(origin, content).await,
            "m.receipt" => self.receive_receipts(origin, content).await,
            "m.direct_to_device" => self.receive_to_device(origin, content).await,
            "m.device_list_update" | "m.signing_key_update" => {
                self.receive_keys_changed(origin, content).await
            }
            // Presence is not shared over federation; unknown types are
            // for other servers.
            _ => Ok(()),
        };
        if let Err(error) = outcome {
            debug!(%origin, edu_type, %error, "skipped an EDU");
        }
    }

    /// `m.typing`: the user types (for [`REMOTE_TYPING_TIMEOUT`]) or stops.
    async fn receive_typing(
        &self,
        origin: &ServerName,
        content: Value,
    ) -> Result<(), ServiceError> {
        let typing: TypingContent = parse(content)?;
        check_origin(origin, &typing.user_id)?;
        let members = self
            .joined_members_if(origin, &typing.room_id, &typing.user_id)
            .await?;
        let timeout = typing.typing.then_some(REMOTE_TYPING_TIMEOUT);
        self.services
            .typing
            .set(&typing.room_id, &typing.user_id, timeout, members);
        Ok(())
    }

    /// `m.receipt`: `{room_id: {"m.read": {user_id: {event_ids, data}}}}`.
    /// Only public `m.read` receipts travel; a private one from another
    /// server would be a leak on its part, and is ignored.
    async fn receive_receipts(
        &self,
        origin: &ServerName,
        content: Value,
    ) -> Result<(), ServiceError> {
        let rooms: BTreeMap<OwnedRoomId, Map<String, Value>> = parse(content)?;
        let mut taken = 0;
        for (room_id, by_type) in rooms {
            let Some(read) = by_type.get("m.read") else {
                continue;
            };
            let users: BTreeMap<OwnedUserId, UserReceipt> = parse(read.clone())?;
            for (user_id, receipt) in users {
                if taken == MAX_RECEIPTS_PER_EDU {
                    return Ok(());
                }
                taken += 1;
                if let Err(error) = self
                    .receive_receipt(origin, &room_id, &user_id, receipt)
                    .await
                {
                    debug!(%origin, %room_id, %error, "skipped a receipt");
                }
            }
        }
        Ok(())
    }

    async fn receive_receipt(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        receipt: UserReceipt,
    ) -> Result<(), ServiceError> {
        check_origin(origin, user_id)?;
        if !self
            .room_allows(room_id, |state| acl_allows(state, origin))
            .await?
        {
            return Err(ServiceError::not_in_room());
        }
        // A receipt names one event; the spec's list exists for history.
        let Some(event_id) = receipt.event_ids.last() else {
            return Ok(());
        };
        let event_id = EventId::parse(event_id)
            .map_err(|_| ServiceError::BadJson("receipt event id".to_owned()))?;
        // Stored as a local receipt is: the user must be joined, the event
        // and any thread root in the room.
        self.services
            .account_data
            .set_receipt(
                user_id,
                room_id,
                "m.read",
                &event_id,
                receipt.data.thread_id.as_deref(),
            )
            .await
    }

    /// `m.direct_to_device`: messages for local users' devices, delivered
    /// once per `(origin, message_id)`.
    async fn receive_to_device(
        &self,
        origin: &ServerName,
        content: Value,
    ) -> Result<(), ServiceError> {
        let message: DirectToDevice = parse(content)?;
        check_origin(origin, &message.sender)?;
        if message.message_id.is_empty()
            || message.message_id.len() > MAX_IDENTIFIER_BYTES
            || message.message_id.contains('\0')
        {
            return Err(ServiceError::BadJson("message_id".to_owned()));
        }
        let local = self.services.federation.server_name();
        let messages: BTreeMap<OwnedUserId, BTreeMap<String, String>> = message
            .messages
            .into_iter()
            .filter(|(user_id, _)| user_id.server_name() == local)
            .map(|(user_id, by_device)| {
                let by_device = by_device
                    .into_iter()
                    .filter(|(_, content)| content.is_object())
                    .map(|(device_id, content)| (device_id, content.to_string()))
                    .collect();
                (user_id, by_device)
            })
            .collect();
        if messages.is_empty() {
            return Ok(());
        }
        self.services
            .to_device
            .receive_remote(
                origin,
                &message.sender,
                &message.event_type,
                &message.message_id,
                messages,
            )
            .await?;
        Ok(())
    }

    /// `m.device_list_update` and `m.signing_key_update`: local users who
    /// share a room with the user see them in `device_lists.changed` and
    /// query their keys again (from the origin: remote keys are not cached
    /// here, so the `prev_id` chain needs no tracking).
    async fn receive_keys_changed(
        &self,
        origin: &ServerName,
        content: Value,
    ) -> Result<(), ServiceError> {
        let changed: KeysChanged = parse(content)?;
        check_origin(origin, &changed.user_id)?;
        self.services
            .device_lists
            .record(&[DeviceListChange::public(&changed.user_id)])
            .await
    }

    /// The room's joined members when `user_id` is one of them and the
    /// room's ACL lets `origin` in.
    async fn joined_members_if(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Vec<OwnedUserId>, ServiceError> {
        self.services
            .events
            .read_state(room_id, |state| {
                let is_joined = state.membership_of(user_id.as_str()) == Some("join");
                (acl_allows(state, origin) && is_joined)
                    .then(|| state.members_in(&["join"]).map(ToOwned::to_owned).collect())
            })
            .await?
            .flatten()
            .ok_or_else(ServiceError::not_in_room)
    }
}

/// Refuses a user of another server than the origin.
fn check_origin(origin: &ServerName, user_id: &UserId) -> Result<(), ServiceError> {
    if user_id.server_name() == origin {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(format!(
            "{user_id} is not a user of {origin}"
        )))
    }
}

fn parse<T: serde::de::DeserializeOwned>(content: Value) -> Result<T, ServiceError> {
    serde_json::from_value(content).map_err(|e| ServiceError::BadJson(e.to_string()))
}
