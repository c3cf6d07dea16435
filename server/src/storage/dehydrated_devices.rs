//! MSC3814 dehydrated devices: one per user, a device without tokens whose
//! data (the client's encrypted account) the server keeps for the user.

use std::fmt;

use async_trait::async_trait;
use ruma::{DeviceId, OwnedDeviceId, UserId};

use super::{Millis, StorageError};

/// A user's dehydrated device as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct DehydratedDevice {
    /// Its device id.
    pub device_id: OwnedDeviceId,
    /// The client's opaque JSON object, as its text.
    pub device_data: String,
}

impl fmt::Debug for DehydratedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DehydratedDevice")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// What the dehydrated-device service persists.
#[async_trait]
pub trait DehydratedDeviceStore: Send + Sync {
    /// In one transaction: deletes the user's dehydrated device (with its
    /// keys and inbox), creates the device `device.device_id` without
    /// tokens and records it as the user's dehydrated device. Returns the
    /// id of the device it replaced.
    ///
    /// # Errors
    /// [`StorageError::Conflict`] when the user has another (logged-in)
    /// device with this id.
    async fn replace_dehydrated_device(
        &self,
        user_id: &UserId,
        device: &DehydratedDevice,
        display_name: Option<&str>,
        now: Millis,
    ) -> Result<Option<OwnedDeviceId>, StorageError>;

    /// The user's dehydrated device, if any.
    async fn dehydrated_device(
        &self,
        user_id: &UserId,
    ) -> Result<Option<DehydratedDevice>, StorageError>;

    /// Deletes the user's dehydrated device if it is `device_id` (any, for
    /// `None`), with its keys and inbox; returns the id deleted.
    async fn delete_dehydrated_device(
        &self,
        user_id: &UserId,
        device_id: Option<&DeviceId>,
    ) -> Result<Option<OwnedDeviceId>, StorageError>;
}
