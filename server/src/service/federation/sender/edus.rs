//! The EDUs local actions send to other servers: their JSON, and whom
//! they go to. Only local users' actions go out; a remote user's typing
//! or receipt that this server was told of is never sent on.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{DeviceId, OwnedServerName, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::FederationSender;
use crate::{
    service::ServiceError,
    storage::{Receipt, StreamPosition},
};

impl FederationSender {
    /// A local user started or stopped typing in a room whose joined
    /// members are `members`: `m.typing` to the members' other servers.
    pub fn typing(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        is_typing: bool,
        members: &[OwnedUserId],
    ) {
        if user_id.server_name() != self.server_name() {
            return;
        }
        let destinations = self.other_servers(members.iter().map(|m| &**m));
        if destinations.is_empty() {
            return;
        }
        let edu = json!({
            "edu_type": "m.typing",
            "content": { "room_id": room_id, "user_id": user_id, "typing": is_typing },
        });
        self.queue_ephemeral(&destinations, &edu);
    }

    /// A local user's public read receipt (`m.read`; private receipts never
    /// leave the server) in a room whose joined members are `members`:
    /// `m.receipt` to the members' other servers.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn read_receipt(
        &self,
        receipt: &Receipt,
        members: &[OwnedUserId],
    ) -> Result<(), ServiceError> {
        let is_local = UserId::parse(receipt.user_id.as_str())
            .is_ok_and(|user_id| user_id.server_name() == self.server_name());
        if receipt.receipt_type != "m.read" || !is_local {
            return Ok(());
        }
        let mut data = json!({ "ts": receipt.ts });
        if !receipt.thread_id.is_empty() {
            data["thread_id"] = json!(receipt.thread_id);
        }
        let edu = json!({
            "edu_type": "m.receipt",
            "content": { receipt.room_id.as_str(): { "m.read": {
                receipt.user_id.as_str(): { "event_ids": [receipt.event_id], "data": data },
            } } },
        });
        let destinations = self.other_servers(members.iter().map(|m| &**m));
        self.queue_edus(destinations.into_iter().map(|d| (d, edu.clone())).collect())
            .await?;
        Ok(())
    }

    /// To-device messages of a local `sender` to users of other servers
    /// (`user -> device id or "*" -> content`, contents as JSON text): one
    /// `m.direct_to_device` per destination, each with its own
    /// `message_id` (`send_id` and the destination), which the destination
    /// uses to drop a repeat. Returns the recipients of destinations whose
    /// EDU queue is full, who get nothing.
    ///
    /// # Errors
    /// Storage failures (nothing is queued then).
    pub async fn to_device(
        &self,
        sender: &UserId,
        event_type: &str,
        send_id: &str,
        messages: BTreeMap<OwnedUserId, BTreeMap<String, String>>,
    ) -> Result<Vec<(OwnedUserId, String)>, ServiceError> {
        let mut by_server: BTreeMap<OwnedServerName, Map<String, Value>> = BTreeMap::new();
        let mut recipients: BTreeMap<OwnedServerName, Vec<(OwnedUserId, String)>> = BTreeMap::new();
        for (user_id, by_device) in messages {
            let server = user_id.server_name().to_owned();
            let mut devices = Map::new();
            for (device_id, content) in by_device {
                let content: Value = serde_json::from_str(&content)
                    .map_err(|e| ServiceError::BadJson(format!("to-device content: {e}")))?;
                recipients
                    .entry(server.clone())
                    .or_default()
                    .push((user_id.clone(), device_id.clone()));
                devices.insert(device_id, content);
            }
            by_server
                .entry(server)
                .or_default()
                .insert(user_id.to_string(), Value::Object(devices));
        }
        let edus = by_server
            .into_iter()
            .map(|(server, messages)| {
                let edu = json!({
                    "edu_type": "m.direct_to_device",
                    "content": {
                        "sender": sender,
                        "type": event_type,
                        "message_id": format!("{send_id}-{server}"),
                        "messages": messages,
                    },
                });
                (server, edu)
            })
            .collect();
        let full: BTreeSet<OwnedServerName> = self.queue_edus(edus).await?.into_iter().collect();
        Ok(recipients
            .into_iter()
            .filter(|(server, _)| full.contains(server))
            .flat_map(|(_, users)| users)
            .collect())
    }
}

/// A change of one of a local user's devices, as `m.device_list_update`
/// tells it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceChange<'a> {
    /// Whose device.
    pub user_id: &'a UserId,
    /// Which device.
    pub device_id: &'a DeviceId,
    /// The device-list stream position of the change: the EDU's
    /// `stream_id`, which the user's next change names as its `prev_id`.
    pub position: StreamPosition,
    /// The device's keys (a `DeviceKeys` object's JSON text), or `None`
    /// when the device was deleted.
    pub keys: Option<&'a str>,
}

impl FederationSender {
    /// `m.device_list_update` for a change of a local user's device, to
    /// `destinations` (the servers sharing a room with the user). Its
    /// `prev_id` is the user's previous change, so the changes form a
    /// chain; a destination that missed a link fetches the whole list
    /// (`/user/devices`).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn device_list_update(
        &self,
        change: DeviceChange<'_>,
        destinations: BTreeSet<OwnedServerName>,
    ) -> Result<(), ServiceError> {
        if change.user_id.server_name() != self.server_name() || destinations.is_empty() {
            return Ok(());
        }
        let prev = self
            .shared
            .storage
            .device_list_change_before(change.user_id, change.position)
            .await?;
        let mut content = json!({
            "user_id": change.user_id,
            "device_id": change.device_id,
            "stream_id": change.position.0,
            "prev_id": prev.map(|prev| prev.0).into_iter().collect::<Vec<_>>(),
            "deleted": change.keys.is_none(),
        });
        if let Some(keys) = change.keys {
            content["keys"] = serde_json::from_str(keys)
                .map_err(|e| ServiceError::Internal(format!("stored device keys: {e}")))?;
        }
        let edu = json!({ "edu_type": "m.device_list_update", "content": content });
        self.queue_edus(destinations.into_iter().map(|d| (d, edu.clone())).collect())
            .await?;
        Ok(())
    }

    /// `m.signing_key_update` for a local user's new cross-signing keys
    /// (`CrossSigningKey` objects' JSON text), to `destinations`. The
    /// user-signing key is private to the user and never sent.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn signing_key_update(
        &self,
        user_id: &UserId,
        master_key: Option<&str>,
        self_signing_key: Option<&str>,
        destinations: BTreeSet<OwnedServerName>,
    ) -> Result<(), ServiceError> {
        if user_id.server_name() != self.server_name()
            || destinations.is_empty()
            || (master_key.is_none() && self_signing_key.is_none())
        {
            return Ok(());
        }
        let mut content = json!({ "user_id": user_id });
        for (field, key) in [
            ("master_key", master_key),
            ("self_signing_key", self_signing_key),
        ] {
            if let Some(key) = key {
                content[field] = serde_json::from_str(key)
                    .map_err(|e| ServiceError::Internal(format!("stored signing key: {e}")))?;
            }
        }
        let edu = json!({ "edu_type": "m.signing_key_update", "content": content });
        self.queue_edus(destinations.into_iter().map(|d| (d, edu.clone())).collect())
            .await?;
        Ok(())
    }
}
