//! Accounts, devices, access tokens and profiles.

use async_trait::async_trait;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use super::{
    Account, Device, IssuedTokens, Millis, NewAccount, Profile, ProfileField, Session,
    StorageError, StoredToken, TokenHash,
};

/// What the account services persist.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account.
    ///
    /// # Errors
    /// [`StorageError::Conflict`] when the user id is taken.
    async fn create_account(&self, account: &NewAccount) -> Result<(), StorageError>;

    /// The account with this id, if any.
    async fn account(&self, user_id: &UserId) -> Result<Option<Account>, StorageError>;

    /// Replaces an account's password hash.
    async fn set_password_hash(&self, user_id: &UserId, hash: &str) -> Result<(), StorageError>;

    /// Gives `device_id` new tokens, creating the device (named
    /// `display_name`) if it does not exist, and revoking the device's older
    /// access and refresh tokens if it does.
    async fn open_session(
        &self,
        session: &Session,
        display_name: Option<&str>,
        tokens: &IssuedTokens,
        now: Millis,
    ) -> Result<(), StorageError>;

    /// Spends a refresh token: stores `tokens` for its device and returns
    /// the session, or `None` for an unknown (or revoked) refresh token.
    /// The device's other tokens are revoked; the spent one stays valid
    /// until `tokens` are first used.
    async fn refresh_session(
        &self,
        spent: &TokenHash,
        tokens: &IssuedTokens,
        now: Millis,
    ) -> Result<Option<Session>, StorageError>;

    /// The live token with this hash and who it acts for. Its first use
    /// revokes the refresh token spent to issue it.
    async fn session_for_token(
        &self,
        token: &TokenHash,
    ) -> Result<Option<StoredToken>, StorageError>;

    /// Every device of a user.
    async fn devices(&self, user_id: &UserId) -> Result<Vec<Device>, StorageError>;

    /// One device of a user.
    async fn device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Option<Device>, StorageError>;

    /// Renames a device.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] when the user has no such device.
    async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<&str>,
    ) -> Result<(), StorageError>;

    /// Deletes devices and every token they hold. Unknown ids are ignored.
    async fn delete_devices(
        &self,
        user_id: &UserId,
        device_ids: &[OwnedDeviceId],
    ) -> Result<(), StorageError>;

    /// Deletes all of a user's devices and tokens but `keep` and the
    /// dehydrated device (which has no tokens).
    async fn delete_devices_except(
        &self,
        user_id: &UserId,
        keep: Option<&DeviceId>,
    ) -> Result<(), StorageError>;

    /// Makes a guest account a full one with this password; its devices
    /// (and their tokens) end. `false` when it is not a guest (any more).
    async fn upgrade_guest(
        &self,
        user_id: &UserId,
        password_hash: &str,
    ) -> Result<bool, StorageError>;

    /// Deactivates an account for good: marks it, and deletes its devices
    /// (with their tokens and keys) and its key backups; `erase` also
    /// clears its profile. One transaction.
    async fn deactivate_account(&self, user_id: &UserId, erase: bool) -> Result<(), StorageError>;

    /// The user directory: active accounts whose user id or display name
    /// contains `term` (lower case, matched case-insensitively), that share
    /// a room with `searcher` or are joined to a room with the `public` join
    /// rule (any account with `all_users`); at most `limit`, by user id.
    async fn search_user_directory(
        &self,
        searcher: &UserId,
        term: &str,
        limit: u32,
        all_users: bool,
    ) -> Result<Vec<(OwnedUserId, Profile)>, StorageError>;

    /// A user's profile, or `None` when there is no such account.
    async fn profile(&self, user_id: &UserId) -> Result<Option<Profile>, StorageError>;

    /// Sets or clears one profile field.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] when there is no such account.
    async fn set_profile_field(
        &self,
        user_id: &UserId,
        field: ProfileField,
        value: Option<&str>,
    ) -> Result<(), StorageError>;
}
