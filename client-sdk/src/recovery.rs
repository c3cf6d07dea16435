//! Whether a device should ask its user for the recovery key: the account
//! keeps its secrets in secret storage, and this device is not yet signed
//! by the user's identity. The recovery itself is secret storage's
//! ([`Client::unlock_secret_storage`]) and the key backup's
//! ([`Client::restore_backup`]); `spec-notes/recovery.md` gives the order.

use crate::{Client, Error, error::Result, machine::secret_storage::DEFAULT_KEY_EVENT};

impl Client {
    /// Whether the account has secret storage (a default key) while this
    /// device is not verified by the user's cross-signing identity: a new
    /// device, or one that never unlocked it. The application then asks
    /// for the recovery key, unlocks secret storage with it, and restores
    /// the key backup with the backup key that unlocking returned.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`]; network and store errors.
    pub async fn needs_recovery(&self) -> Result<bool> {
        let session = self.session().ok_or(Error::NotLoggedIn)?;
        if self.account_data(DEFAULT_KEY_EVENT).await?.is_none() {
            return Ok(false);
        }
        let verified = self
            .is_device_verified(&session.user_id, &session.device_id)
            .await?;
        Ok(!verified)
    }
}
