//! MSC3814 dehydrated devices: a device the user keeps on the server while
//! none of theirs is online.
//!
//! The client creates the device (its keys uploaded like `/keys/upload`
//! would, so other users see it in `/keys/query`, claim its keys and send
//! it room keys) and hands the server its account, encrypted with a key
//! only the user holds, as an opaque JSON object. A later device of the
//! user fetches that object, decrypts the account, pages through the
//! device's to-device messages and replaces it with a fresh one.
//!
//! See `spec-notes/dehydrated-devices.md`.

use std::sync::Arc;

use ruma::{DeviceId, OwnedDeviceId, UserId};
use tracing::info;

use super::{
    ServiceError,
    accounts::{Accounts, check_device_id, check_display_name},
    e2ee::{
        keys::{E2eeKeys, KeysUpload},
        validate::check_device_keys,
    },
    stream::Stream,
    to_device::{Delivery, ToDevice},
};
use crate::storage::{
    DehydratedDevice, Millis, Session, Storage, StorageError, StreamPosition, ToDeviceMessage,
};

/// Largest `device_data` object accepted, in bytes of JSON text.
pub const MAX_DEVICE_DATA_BYTES: usize = 128 * 1024;

/// A `PUT /dehydrated_device` body; keys and data as their JSON text.
#[derive(Debug)]
pub struct NewDehydratedDevice {
    /// The id the client chose for the device.
    pub device_id: OwnedDeviceId,
    /// The encrypted account, a JSON object's text.
    pub device_data: String,
    /// The device's display name.
    pub display_name: Option<String>,
    /// The device's keys, checked like those of `/keys/upload`.
    pub keys: KeysUpload,
}

/// One page of a dehydrated device's to-device messages.
#[derive(Debug)]
pub struct EventsPage {
    /// The messages, oldest first.
    pub messages: Vec<ToDeviceMessage>,
    /// The token that acknowledges this page and asks for the next.
    pub next_batch: StreamPosition,
}

/// The dehydrated-device service.
#[derive(Debug)]
pub struct DehydratedDevices {
    storage: Arc<dyn Storage>,
    accounts: Arc<Accounts>,
    e2ee_keys: Arc<E2eeKeys>,
    to_device: Arc<ToDevice>,
    stream: Arc<Stream>,
}

impl DehydratedDevices {
    /// Builds the service.
    pub fn new(
        storage: Arc<dyn Storage>,
        accounts: Arc<Accounts>,
        e2ee_keys: Arc<E2eeKeys>,
        to_device: Arc<ToDevice>,
        stream: Arc<Stream>,
    ) -> Self {
        Self {
            storage,
            accounts,
            e2ee_keys,
            to_device,
            stream,
        }
    }

    /// Makes `device` the user's dehydrated device, deleting the one it
    /// replaces with its keys and messages.
    ///
    /// # Errors
    /// `TooLarge` for data over [`MAX_DEVICE_DATA_BYTES`]; `InvalidParam`
    /// for a bad device id or name, a device id one of the user's other
    /// devices has, or keys that fail the checks of `/keys/upload` (nothing
    /// is kept then).
    pub async fn replace(
        &self,
        user_id: &UserId,
        device: NewDehydratedDevice,
    ) -> Result<OwnedDeviceId, ServiceError> {
        check_device_id(&device.device_id)?;
        check_display_name(device.display_name.as_deref())?;
        if device.device_data.len() > MAX_DEVICE_DATA_BYTES {
            return Err(ServiceError::TooLarge(format!(
                "device_data is limited to {MAX_DEVICE_DATA_BYTES} bytes"
            )));
        }
        // The cheap checks first, so that a bad upload does not cost the
        // user their current dehydrated device.
        if let Some(json) = &device.keys.device_keys {
            check_device_keys(json, user_id, &device.device_id)?;
        }
        let stored = DehydratedDevice {
            device_id: device.device_id,
            device_data: device.device_data,
        };
        match self
            .storage
            .replace_dehydrated_device(
                user_id,
                &stored,
                device.display_name.as_deref(),
                Millis::now(),
            )
            .await
        {
            Err(StorageError::Conflict(_)) => {
                return Err(ServiceError::InvalidParam(
                    "another device of the user has this device id".to_owned(),
                ));
            }
            other => other?,
        };
        let session = Session {
            user_id: user_id.to_owned(),
            device_id: stored.device_id.clone(),
            is_guest: false,
        };
        if let Err(error) = self.e2ee_keys.upload(&session, device.keys).await {
            self.storage
                .delete_dehydrated_device(user_id, Some(&stored.device_id))
                .await?;
            self.accounts.devices_changed(user_id).await?;
            return Err(error);
        }
        // Those tracking the user must forget the replaced device (and see
        // the new one, whose keys the upload published).
        self.accounts.devices_changed(user_id).await?;
        info!(%user_id, device_id = %stored.device_id, "dehydrated device stored");
        Ok(stored.device_id)
    }

    /// The user's dehydrated device.
    ///
    /// # Errors
    /// `NotFound` when the user has none.
    pub async fn get(&self, user_id: &UserId) -> Result<DehydratedDevice, ServiceError> {
        self.storage
            .dehydrated_device(user_id)
            .await?
            .ok_or_else(not_found)
    }

    /// Deletes the user's dehydrated device with its keys and messages.
    ///
    /// # Errors
    /// `NotFound` when the user has none.
    pub async fn delete(&self, user_id: &UserId) -> Result<OwnedDeviceId, ServiceError> {
        let deleted = self
            .storage
            .delete_dehydrated_device(user_id, None)
            .await?
            .ok_or_else(not_found)?;
        self.accounts.devices_changed(user_id).await?;
        info!(%user_id, device_id = %deleted, "dehydrated device deleted");
        Ok(deleted)
    }

    /// A page of the to-device messages of the user's dehydrated device
    /// `device_id`; `since`, a `next_batch` of an earlier page, acknowledges
    /// (deletes) every message that page and those before it returned.
    ///
    /// # Errors
    /// `NotFound` unless `device_id` is the user's dehydrated device;
    /// `InvalidParam` for a token that is not one.
    pub async fn events(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        since: Option<&str>,
    ) -> Result<EventsPage, ServiceError> {
        let since = since.map(parse_batch_token).transpose()?;
        let is_dehydrated = self
            .storage
            .dehydrated_device(user_id)
            .await?
            .is_some_and(|device| device.device_id == device_id);
        if !is_dehydrated {
            return Err(not_found());
        }
        let Delivery { messages, .. } = self
            .to_device
            .deliver(user_id, device_id, since, self.stream.current())
            .await?;
        let next_batch = messages
            .last()
            .map(|message| message.position)
            .or(since)
            .unwrap_or(StreamPosition(0));
        Ok(EventsPage {
            messages,
            next_batch,
        })
    }
}

/// A `next_batch` token: the stream position of the last message handed out.
fn parse_batch_token(token: &str) -> Result<StreamPosition, ServiceError> {
    token
        .parse::<i64>()
        .ok()
        .filter(|position| *position >= 0)
        .map(StreamPosition)
        .ok_or_else(|| {
            ServiceError::InvalidParam("next_batch is not a token this server gave".to_owned())
        })
}

fn not_found() -> ServiceError {
    ServiceError::NotFound("no such dehydrated device".to_owned())
}
