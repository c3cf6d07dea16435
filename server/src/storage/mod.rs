//! Persistence: one storage interface, two backends.
//!
//! [`Storage`] names what the domain needs; [`sql`] implements it once for
//! SQLite (the embedded default) and PostgreSQL. Each backend has its own
//! versioned migrations under `server/migrations/<backend>/`, run at start-up.

mod accounts;
mod dehydrated_devices;
mod device_lists;
mod e2ee_keys;
mod federation_inbox;
mod federation_outbound;
mod key_backup;
mod keys;
mod media;
mod push;
mod remote_keys;
mod remote_rooms;
mod rooms;
mod sql;
#[cfg(test)]
pub(crate) mod testing;
mod to_device;
mod user_data;

use async_trait::async_trait;
use ruma::{OwnedDeviceId, OwnedUserId};

use crate::config::DatabaseLocation;

pub use accounts::AccountStore;
pub use dehydrated_devices::{DehydratedDevice, DehydratedDeviceStore};
pub use device_lists::{DeviceListChange, DeviceListStore};
pub use e2ee_keys::{
    CrossSigningKey, CrossSigningKeyType, DeviceKeys, E2eeKeyStore, KeySignature, OneTimeKey,
    QueriedDevice, SignatureTarget,
};
pub use federation_inbox::FederationInboxStore;
pub use federation_outbound::{OutboundEdu, OutboundStore, OutgoingEvent};
pub use key_backup::{
    BackedUpKey, BackupInfo, BackupVersion, KeyBackupStore, KeyRank, KeySelection, KeysState,
    KeysUpload, NotABackupVersion,
};
pub use keys::{KeyStore, StoredSigningKey};
pub use media::{MediaContent, MediaRecord, MediaStore, MediaUsage};
pub use push::{NewPushAction, Notification, NotificationCounts, PushStore};
pub use remote_keys::{RemoteKey, RemoteKeyDocument, RemoteKeyStore};
pub use remote_rooms::{
    ImportedState, OutOfRoomMembership, Outlier, RemoteRoomStore, StoredOutOfRoomMembership,
};
pub use rooms::{
    ChainOutcome, DagEvent, EventStatus, Membership, NewEvent, NewStateGroup, NewTransaction,
    RoomHead, RoomRecord, RoomStore, StateEntry, StoredEvent, StreamPosition, WithheldEvent,
};
pub use sql::{PostgresStorage, SqliteStorage};
pub use to_device::{Queued, SendId, ToDeviceMessage, ToDeviceSend, ToDeviceStore, UserMessages};
pub use user_data::{AccountDataEntry, NewPusher, PresenceState, Receipt, UserDataStore};

/// Milliseconds since the Unix epoch, as Matrix timestamps are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub i64);

impl Millis {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The SHA-256 of an access token: what is stored and looked up, never the token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash([redacted])")
    }
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Its full user id.
    pub user_id: OwnedUserId,
    /// The argon2 PHC string of its password.
    pub password_hash: String,
    /// Whether the account administers the server.
    pub is_admin: bool,
    /// Whether it is a guest account.
    pub is_guest: bool,
    /// When it was created.
    pub created: Millis,
}

/// A stored account.
#[derive(Clone)]
pub struct Account {
    /// Its full user id.
    pub user_id: OwnedUserId,
    /// The argon2 PHC string of its password.
    pub password_hash: String,
    /// Whether the account administers the server.
    pub is_admin: bool,
    /// Whether the account was deactivated: it can no longer log in.
    pub deactivated: bool,
    /// Whether it is a guest account.
    pub is_guest: bool,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("user_id", &self.user_id)
            .field("is_admin", &self.is_admin)
            .finish_non_exhaustive()
    }
}

/// A user's device as the devices API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device id, unique per user.
    pub device_id: OwnedDeviceId,
    /// A name the user chose.
    pub display_name: Option<String>,
}

/// Who an access token acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The account.
    pub user_id: OwnedUserId,
    /// The device the token belongs to.
    pub device_id: OwnedDeviceId,
    /// Whether the account is a guest, limited to the guest endpoints.
    pub is_guest: bool,
}

/// A live access token as stored.
#[derive(Debug, Clone)]
pub struct StoredToken {
    /// The stored hash, for the final constant-time comparison.
    pub hash: TokenHash,
    /// Who it acts for.
    pub session: Session,
    /// When it stops working; `None` for tokens issued without a refresh token.
    pub expires: Option<Millis>,
}

/// The tokens a login, registration or refresh hands out, by their hashes.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    /// The access token.
    pub access: TokenHash,
    /// When the access token expires (only with a refresh token).
    pub access_expires: Option<Millis>,
    /// The refresh token, for clients that asked for one.
    pub refresh: Option<TokenHash>,
}

/// A user's public profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Display name.
    pub displayname: Option<String>,
    /// `mxc://` URI of the avatar.
    pub avatar_url: Option<String>,
}

/// Which profile field a write changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileField {
    /// `displayname`.
    Displayname,
    /// `avatar_url`.
    AvatarUrl,
}

/// A storage failure. `NotFound` and `Conflict` are outcomes callers act on;
/// `Backend` is a fault.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The row the write targets does not exist.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// A uniqueness constraint refused the write.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The database failed.
    #[error("database error: {0}")]
    Backend(#[from] sqlx::Error),
    /// The embedded database failed on SQLite's message writer thread.
    #[error("database error: {0}")]
    Embedded(#[from] rusqlite::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The data directory could not be created.
    #[error("cannot create data directory: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value no longer parses as its type: the database was edited by hand or is corrupt.
    #[error("corrupt row in {table}: {reason}")]
    Corrupt {
        /// The table holding the row.
        table: &'static str,
        /// What failed to parse.
        reason: String,
    },
}

/// Everything the server persists: one trait per area, so each area's
/// storage code stays in its own file.
#[async_trait]
pub trait Storage:
    AccountStore
    + DehydratedDeviceStore
    + DeviceListStore
    + E2eeKeyStore
    + FederationInboxStore
    + OutboundStore
    + KeyBackupStore
    + KeyStore
    + MediaStore
    + PushStore
    + RemoteKeyStore
    + RemoteRoomStore
    + RoomStore
    + ToDeviceStore
    + UserDataStore
    + Send
    + Sync
    + 'static
{
    /// Waits for in-flight work and closes the database (SQLite checkpoints its log).
    async fn close(&self);
}

/// Opens the configured database, creating it if needed, and applies migrations.
///
/// # Errors
/// When the database cannot be reached or created, or a migration fails.
pub async fn open(
    location: &DatabaseLocation,
) -> Result<std::sync::Arc<dyn Storage>, StorageError> {
    Ok(match location {
        DatabaseLocation::Sqlite(path) => std::sync::Arc::new(SqliteStorage::open(path).await?),
        DatabaseLocation::Postgres(url) => {
            std::sync::Arc::new(PostgresStorage::open(url.expose()).await?)
        }
    })
}
