//! A user's devices: listing, naming and deleting them.

use std::sync::Arc;

use ruma::{DeviceId, OwnedDeviceId, UserId};
use tracing::info;

use super::{
    ServiceError,
    accounts::{Accounts, check_display_name},
    uia::{AuthSubmission, UiaAction},
};
use crate::storage::{Device, Storage, StorageError};

/// Most devices one `POST /delete_devices` may name.
pub const MAX_DEVICES_PER_DELETE: usize = 1000;

/// Device management.
#[derive(Debug)]
pub struct Devices {
    storage: Arc<dyn Storage>,
    accounts: Arc<Accounts>,
}

impl Devices {
    /// Builds the service.
    pub fn new(storage: Arc<dyn Storage>, accounts: Arc<Accounts>) -> Self {
        Self { storage, accounts }
    }

    /// Every device of the user.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list(&self, user_id: &UserId) -> Result<Vec<Device>, ServiceError> {
        Ok(self.storage.devices(user_id).await?)
    }

    /// One device of the user.
    ///
    /// # Errors
    /// `NotFound` when the user has no such device.
    pub async fn get(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Device, ServiceError> {
        self.storage
            .device(user_id, device_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no such device".to_owned()))
    }

    /// Renames one of the user's devices.
    ///
    /// # Errors
    /// `NotFound` for an unknown device; `InvalidParam` for an overlong name.
    /// Those who share a room with the user see the device list change.
    pub async fn rename(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<&str>,
    ) -> Result<(), ServiceError> {
        check_display_name(display_name)?;
        match self
            .storage
            .rename_device(user_id, device_id, display_name)
            .await
        {
            Err(StorageError::NotFound(_)) => {
                return Err(ServiceError::NotFound("no such device".to_owned()));
            }
            other => other?,
        }
        // `/keys/query` shows the name, so those who track the user's
        // devices must look again.
        self.accounts.devices_changed(user_id).await
    }

    /// Deletes devices after the user re-enters their password; their tokens die at once.
    ///
    /// # Errors
    /// `AuthRequired` until the password is given; `InvalidParam` for too many ids.
    pub async fn delete(
        &self,
        user_id: &UserId,
        device_ids: Vec<OwnedDeviceId>,
        auth: Option<AuthSubmission>,
    ) -> Result<(), ServiceError> {
        if device_ids.len() > MAX_DEVICES_PER_DELETE {
            return Err(ServiceError::InvalidParam(format!(
                "at most {MAX_DEVICES_PER_DELETE} devices per request"
            )));
        }
        let action = UiaAction::DeleteDevices(user_id.to_owned(), device_ids.clone());
        self.accounts
            .confirm_identity(user_id, action, auth)
            .await?;
        self.storage.delete_devices(user_id, &device_ids).await?;
        self.accounts.devices_deleted(user_id, &device_ids).await?;
        info!(%user_id, count = device_ids.len(), "devices deleted");
        Ok(())
    }
}
