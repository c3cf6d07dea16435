//! The EDUs local actions send to other servers: their JSON, and whom
//! they go to. Only local users' actions go out; a remote user's typing
//! or receipt that this server was told of is never sent on.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{OwnedServerName, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::FederationSender;
use crate::{service::ServiceError, storage::Receipt};

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
