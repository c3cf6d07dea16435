//! Send-to-device messaging: a per-device inbox that `/sync` drains.
//!
//! Each send takes one position on the server-wide stream, so a sync token
//! says which messages a device has: a sync delivers the device's messages
//! above its `since` and deletes those at or below it. A sync whose answer
//! is lost is therefore answered again, and a message is deleted only once
//! the device shows, by syncing from a later token, that it has it.
//!
//! Contents are opaque: stored and served as the sender's JSON text, never
//! parsed past "is an object", never logged.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#send-to-device-messaging>

use std::{collections::BTreeMap, sync::Arc};

use ruma::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use tracing::debug;

use super::{
    ServiceError,
    inbox_marks::InboxMarks,
    notifier::Notifier,
    stream::{Kind, Stream},
};
use crate::storage::{
    Queued, Storage, StorageError, StreamPosition, ToDeviceMessage, ToDeviceSend, UserMessages,
};

/// Most to-device messages one sync returns; the rest follow in the next
/// sync, which answers at once because they are pending.
pub const TO_DEVICE_PAGE: usize = 100;

/// Longest event type accepted, in bytes (the spec's limit for event types).
const MAX_EVENT_TYPE_BYTES: usize = 255;

/// Longest transaction id accepted, in bytes.
const MAX_TXN_ID_BYTES: usize = 255;

/// The device id that addresses every device of a user.
const ALL_DEVICES: &str = "*";

/// A device's share of one sync.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// Its messages, oldest first.
    pub messages: Vec<ToDeviceMessage>,
    /// When more messages are waiting than one sync carries: the position
    /// of the last one delivered, which the next token acknowledges instead
    /// of the sync's own position.
    pub delivered_upto: Option<StreamPosition>,
}

/// The to-device service.
#[derive(Debug)]
pub struct ToDevice {
    storage: Arc<dyn Storage>,
    stream: Arc<Stream>,
    notifier: Arc<Notifier>,
    server_name: OwnedServerName,
    max_pending: u64,
    inboxes: InboxMarks,
}

impl ToDevice {
    /// Builds the service; `max_pending` caps each device's inbox.
    pub fn new(
        storage: Arc<dyn Storage>,
        stream: Arc<Stream>,
        notifier: Arc<Notifier>,
        server_name: OwnedServerName,
        max_pending: u64,
    ) -> Self {
        Self {
            inboxes: InboxMarks::new(stream.current()),
            storage,
            stream,
            notifier,
            server_name,
            max_pending,
        }
    }

    /// Queues one send: `messages` maps each recipient to device ids (or
    /// `*`) and the content (a JSON object's text) each gets. A retried
    /// `txn_id` from the same device succeeds without sending again.
    /// Unknown local users and devices are skipped.
    ///
    /// # Errors
    /// `InvalidParam` for a bad event type or transaction id, or a recipient
    /// on another server (there is no federation yet, and dropping the
    /// message silently would let the sender believe it was delivered);
    /// `ToDeviceInboxFull` when a recipient device has `max_pending`
    /// messages waiting, in which case nothing of the send is stored.
    pub async fn send(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        event_type: &str,
        txn_id: &str,
        messages: BTreeMap<OwnedUserId, BTreeMap<String, String>>,
    ) -> Result<(), ServiceError> {
        check_identifier("the event type", event_type, MAX_EVENT_TYPE_BYTES)?;
        check_identifier("the transaction id", txn_id, MAX_TXN_ID_BYTES)?;
        if let Some(remote) = messages
            .keys()
            .find(|user_id| user_id.server_name() != self.server_name)
        {
            return Err(ServiceError::InvalidParam(format!(
                "{remote} is on another server; to-device messages cannot reach other \
                 servers yet (no federation)"
            )));
        }
        let messages: BTreeMap<OwnedUserId, UserMessages> = messages
            .into_iter()
            .map(|(user_id, by_device)| (user_id, user_messages(by_device)))
            .collect();
        let messages = &messages;
        let max_pending = self.max_pending;
        let storage = &self.storage;
        let inboxes = &self.inboxes;
        let queued = self
            .stream
            .append(Kind::ToDevice, |position| async move {
                let send = ToDeviceSend {
                    sender,
                    sender_device,
                    txn_id,
                    event_type,
                    messages,
                    position,
                    max_pending,
                };
                // On PostgreSQL a recipient device deleted between the read
                // of the user's devices and the insert fails the insert (and
                // rolls the send back); a new attempt no longer sees it.
                let mut attempts = 3;
                loop {
                    match storage.queue_to_device(&send).await {
                        Err(StorageError::NotFound("device")) if attempts > 1 => attempts -= 1,
                        outcome => {
                            if let Ok(Queued::Delivered(devices)) = &outcome {
                                inboxes.written(devices, position);
                            }
                            break Ok(outcome?);
                        }
                    }
                }
            })
            .await?;
        match queued {
            Queued::Delivered(devices) => {
                debug!(%sender, recipients = devices.len(), "to-device messages queued");
                self.notifier.wake_devices(devices);
                Ok(())
            }
            Queued::Duplicate => {
                debug!(%sender, "to-device transaction retried");
                Ok(())
            }
            Queued::InboxFull { user_id, device_id } => {
                debug!(%sender, %user_id, %device_id, "to-device inbox full");
                Err(ServiceError::ToDeviceInboxFull {
                    user_id,
                    device_id,
                    limit: self.max_pending,
                })
            }
        }
    }

    /// The messages a device's sync carries: the device acknowledged every
    /// message at or below `acknowledged` (they are deleted), and gets those
    /// above it up to `now`, at most [`TO_DEVICE_PAGE`].
    ///
    /// # Errors
    /// Storage failures.
    pub async fn deliver(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        acknowledged: Option<StreamPosition>,
        now: StreamPosition,
    ) -> Result<Delivery, ServiceError> {
        if let Some(acknowledged) = acknowledged {
            if self.inboxes.is_empty(user_id, device_id) {
                return Ok(Delivery::default());
            }
            self.storage
                .acknowledge_to_device(user_id, device_id, acknowledged)
                .await?;
            self.inboxes.emptied(user_id, device_id, acknowledged);
        }
        let page = u32::try_from(TO_DEVICE_PAGE + 1).unwrap_or(u32::MAX);
        let mut messages = self
            .storage
            .to_device_messages(
                user_id,
                device_id,
                acknowledged.unwrap_or(StreamPosition(0)),
                now,
                page,
            )
            .await?;
        let more = messages.len() > TO_DEVICE_PAGE;
        messages.truncate(TO_DEVICE_PAGE);
        let delivered_upto = more
            .then(|| messages.last().map(|message| message.position))
            .flatten();
        Ok(Delivery {
            messages,
            delivered_upto,
        })
    }
}

/// Splits a user's `device id -> content` map into `*` and named devices.
fn user_messages(by_device: BTreeMap<String, String>) -> UserMessages {
    let mut messages = UserMessages::default();
    for (device_id, content) in by_device {
        if device_id == ALL_DEVICES {
            messages.all_devices = Some(content);
        } else {
            messages
                .by_device
                .insert(OwnedDeviceId::from(device_id), content);
        }
    }
    messages
}

/// Refuses empty, oversized or NUL-holding identifiers before they reach a
/// database column.
fn check_identifier(what: &str, value: &str, max_bytes: usize) -> Result<(), ServiceError> {
    if value.is_empty() || value.len() > max_bytes || value.contains('\0') {
        return Err(ServiceError::InvalidParam(format!(
            "{what} must be 1 to {max_bytes} bytes without NUL characters"
        )));
    }
    Ok(())
}
