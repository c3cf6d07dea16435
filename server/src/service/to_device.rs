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

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, ServerName, UserId};
use tracing::debug;

use super::{
    ServiceError,
    federation::sender::FederationSender,
    inbox_marks::InboxMarks,
    notifier::Notifier,
    stream::{Kind, Stream},
};
use crate::storage::{
    Millis, Queued, SendId, Storage, StorageError, StreamPosition, ToDeviceMessage, ToDeviceSend,
    UserMessages,
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

/// What one send may cost (`spec-notes/to-device.md`).
#[derive(Debug, Clone, Copy)]
pub struct ToDeviceLimits {
    /// Most messages waiting in one device's inbox.
    pub max_pending: u64,
    /// Most messages from one sender waiting in one device's inbox.
    pub max_pending_per_sender: u64,
    /// Largest content of one message, in bytes.
    pub max_message_bytes: usize,
}

/// A recipient device that did not get its message, its inbox being full.
pub type RefusedDevice = (OwnedUserId, OwnedDeviceId);

/// The to-device service.
#[derive(Debug)]
pub struct ToDevice {
    storage: Arc<dyn Storage>,
    stream: Arc<Stream>,
    notifier: Arc<Notifier>,
    /// Sends messages for users of other servers.
    outbound: FederationSender,
    limits: ToDeviceLimits,
    inboxes: InboxMarks,
}

impl ToDevice {
    /// Builds the service with the inbox and message limits; messages for
    /// users of other servers go to `outbound`.
    pub fn new(
        storage: Arc<dyn Storage>,
        stream: Arc<Stream>,
        notifier: Arc<Notifier>,
        outbound: FederationSender,
        limits: ToDeviceLimits,
    ) -> Self {
        Self {
            inboxes: InboxMarks::new(stream.current()),
            storage,
            stream,
            notifier,
            outbound,
            limits,
        }
    }

    /// Queues one send: `messages` maps each recipient to device ids (or
    /// `*`) and the content (a JSON object's text) each gets. A retried
    /// `txn_id` from the same device succeeds without sending again.
    /// Unknown local users and devices are skipped; users of other servers
    /// get theirs through federation, one EDU per server. Returns the
    /// devices that got nothing because their inbox is full (all of it, or
    /// the sender's share of it), or because their server has too many
    /// EDUs waiting; the others got their message.
    ///
    /// # Errors
    /// `InvalidParam` for a bad event type or transaction id; `TooLarge`
    /// for a content over the message limit; `ToDeviceInboxFull` when every
    /// local recipient device's inbox is full, in which case nothing of
    /// the send is stored, its transaction id included.
    pub async fn send(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        event_type: &str,
        txn_id: &str,
        messages: BTreeMap<OwnedUserId, BTreeMap<String, String>>,
    ) -> Result<Vec<RefusedDevice>, ServiceError> {
        check_identifier("the transaction id", txn_id, MAX_TXN_ID_BYTES)?;
        self.check_send(event_type, &messages)?;
        let (local, remote): (BTreeMap<_, _>, BTreeMap<_, _>) = messages
            .into_iter()
            .partition(|(user_id, _)| user_id.server_name() == self.outbound.server_name());
        let send_id = SendId::Device {
            device_id: sender_device,
            txn_id,
        };
        self.queue(sender, send_id, event_type, local, remote).await
    }

    /// Delivers the messages of an `m.direct_to_device` EDU from `origin`
    /// to local users' devices, as [`Self::send`] does; a `message_id`
    /// already delivered from `origin` delivers nothing. The caller keeps
    /// only local recipients and checks that `sender` is of `origin`.
    ///
    /// # Errors
    /// As [`Self::send`], but for the recipients' server.
    pub async fn receive_remote(
        &self,
        origin: &ServerName,
        sender: &UserId,
        event_type: &str,
        message_id: &str,
        messages: BTreeMap<OwnedUserId, BTreeMap<String, String>>,
    ) -> Result<Vec<RefusedDevice>, ServiceError> {
        check_identifier("the message id", message_id, MAX_TXN_ID_BYTES)?;
        self.check_send(event_type, &messages)?;
        let send_id = SendId::Federation {
            origin,
            message_id,
            received: Millis::now(),
        };
        self.queue(sender, send_id, event_type, messages, BTreeMap::new())
            .await
    }

    /// Refuses a bad event type or an oversized content.
    fn check_send(
        &self,
        event_type: &str,
        messages: &BTreeMap<OwnedUserId, BTreeMap<String, String>>,
    ) -> Result<(), ServiceError> {
        check_identifier("the event type", event_type, MAX_EVENT_TYPE_BYTES)?;
        let max_bytes = self.limits.max_message_bytes;
        if messages
            .values()
            .flat_map(BTreeMap::values)
            .any(|content| content.len() > max_bytes)
        {
            return Err(ServiceError::TooLarge(format!(
                "a to-device message's content is limited to {max_bytes} bytes"
            )));
        }
        Ok(())
    }

    /// Stores a checked send for local recipients and wakes their devices,
    /// then hands the messages of `remote` users to the outbound sender.
    async fn queue(
        &self,
        sender: &UserId,
        send_id: SendId<'_>,
        event_type: &str,
        messages: BTreeMap<OwnedUserId, BTreeMap<String, String>>,
        remote: BTreeMap<OwnedUserId, BTreeMap<String, String>>,
    ) -> Result<Vec<RefusedDevice>, ServiceError> {
        let messages: BTreeMap<OwnedUserId, UserMessages> = messages
            .into_iter()
            .map(|(user_id, by_device)| (user_id, user_messages(by_device)))
            .collect();
        let messages = &messages;
        let limits = self.limits;
        let storage = &self.storage;
        let inboxes = &self.inboxes;
        let queued = self
            .stream
            .append(Kind::ToDevice, |position| async move {
                let send = ToDeviceSend {
                    sender,
                    send_id,
                    event_type,
                    messages,
                    position,
                    max_pending: limits.max_pending,
                    max_pending_per_sender: limits.max_pending_per_sender,
                };
                // On PostgreSQL a recipient device deleted between the read
                // of the user's devices and the insert fails the insert (and
                // rolls the send back); a new attempt no longer sees it.
                let mut attempts = 3;
                loop {
                    match storage.queue_to_device(&send).await {
                        Err(StorageError::NotFound("device")) if attempts > 1 => attempts -= 1,
                        outcome => {
                            if let Ok(Queued::Delivered { delivered, .. }) = &outcome {
                                inboxes.written(delivered, position);
                            }
                            break Ok((outcome?, position));
                        }
                    }
                }
            })
            .await?;
        match queued {
            (
                Queued::Delivered {
                    delivered,
                    mut refused,
                },
                position,
            ) => {
                debug!(
                    %sender,
                    recipients = delivered.len(),
                    refused = refused.len(),
                    remote_users = remote.len(),
                    "to-device messages queued"
                );
                self.notifier.wake_devices(delivered);
                // The send's stream position makes each EDU's message id
                // unique; a retried transaction id never gets this far.
                if !remote.is_empty() {
                    let unsent = self
                        .outbound
                        .to_device(sender, event_type, &position.0.to_string(), remote)
                        .await?;
                    refused.extend(
                        unsent
                            .into_iter()
                            .map(|(user_id, device_id)| (user_id, OwnedDeviceId::from(device_id))),
                    );
                }
                Ok(refused)
            }
            (Queued::Duplicate, _) => {
                debug!(%sender, "to-device transaction retried");
                Ok(Vec::new())
            }
            (Queued::InboxFull(refused), _) => {
                debug!(%sender, refused = refused.len(), "to-device inboxes full");
                Err(ServiceError::ToDeviceInboxFull(refused))
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
