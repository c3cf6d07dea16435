//! Send-to-device inboxes: messages waiting for one device of one user.
//!
//! Contents are the sender's JSON text, stored and returned byte for byte;
//! nothing here reads them, and `Debug` never prints them.

use std::{collections::BTreeMap, fmt};

use async_trait::async_trait;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, ServerName, UserId};

use super::{Millis, StorageError, StreamPosition};

/// The messages of one send for one recipient user.
#[derive(Clone, Default)]
pub struct UserMessages {
    /// The content for every device of the user (`*`), if any.
    pub all_devices: Option<String>,
    /// Contents for named devices; these win over `all_devices`.
    pub by_device: BTreeMap<OwnedDeviceId, String>,
}

impl fmt::Debug for UserMessages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserMessages")
            .field("all_devices", &self.all_devices.is_some())
            .field("devices", &self.by_device.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// One `PUT /sendToDevice` request, ready to store.
#[derive(Debug)]
pub struct ToDeviceSend<'a> {
    /// Who sends.
    pub sender: &'a UserId,
    /// What makes the send unique: the same id again stores nothing.
    pub send_id: SendId<'a>,
    /// The event type every message of the send has.
    pub event_type: &'a str,
    /// Recipients (local users only) and what they get.
    pub messages: &'a BTreeMap<OwnedUserId, UserMessages>,
    /// The stream position the messages take.
    pub position: StreamPosition,
    /// Most messages a device's inbox may hold.
    pub max_pending: u64,
    /// Most messages from this sender a device's inbox may hold.
    pub max_pending_per_sender: u64,
}

/// What identifies a send, so that one repeated is stored once.
#[derive(Debug, Clone, Copy)]
pub enum SendId<'a> {
    /// A local client's transaction id, scoped to its device.
    Device {
        /// The sending device.
        device_id: &'a DeviceId,
        /// The client's transaction id.
        txn_id: &'a str,
    },
    /// The `message_id` of an `m.direct_to_device` EDU, scoped to the
    /// server that sent it.
    Federation {
        /// The sending server.
        origin: &'a ServerName,
        /// The EDU's `message_id`.
        message_id: &'a str,
        /// When it arrived (ids are forgotten after a while).
        received: Millis,
    },
}

/// What became of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    /// Stored for the devices in `delivered` (unknown users and devices
    /// were skipped); the devices in `refused` got nothing, their inbox
    /// being full or holding as many of this sender's messages as it may.
    Delivered {
        /// The devices that got their message.
        delivered: Vec<(OwnedUserId, OwnedDeviceId)>,
        /// The devices that did not.
        refused: Vec<(OwnedUserId, OwnedDeviceId)>,
    },
    /// The send's id was used before; nothing was stored.
    Duplicate,
    /// Every recipient device's inbox was full; nothing was stored, the
    /// transaction id included.
    InboxFull(Vec<(OwnedUserId, OwnedDeviceId)>),
}

/// A message in an inbox.
#[derive(Clone, PartialEq, Eq)]
pub struct ToDeviceMessage {
    /// The position it was sent at.
    pub position: StreamPosition,
    /// Who sent it.
    pub sender: OwnedUserId,
    /// Its event type.
    pub event_type: String,
    /// Its content, the sender's JSON text.
    pub content: String,
}

impl fmt::Debug for ToDeviceMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToDeviceMessage")
            .field("position", &self.position)
            .field("sender", &self.sender)
            .field("event_type", &self.event_type)
            .finish_non_exhaustive()
    }
}

/// What the to-device service persists.
#[async_trait]
pub trait ToDeviceStore: Send + Sync {
    /// Stores a send in one transaction, skipping the devices whose inbox
    /// is full (`max_pending` messages, or `max_pending_per_sender` from
    /// this sender); nothing at all when the transaction id was used or
    /// every recipient device was skipped for a full inbox.
    async fn queue_to_device(&self, send: &ToDeviceSend<'_>) -> Result<Queued, StorageError>;

    /// Up to `limit` messages of a device's inbox in `(after, upto]`, oldest first.
    async fn to_device_messages(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        after: StreamPosition,
        upto: StreamPosition,
        limit: u32,
    ) -> Result<Vec<ToDeviceMessage>, StorageError>;

    /// Deletes a device's messages at or below `upto` (the device has them).
    async fn acknowledge_to_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        upto: StreamPosition,
    ) -> Result<(), StorageError>;
}
