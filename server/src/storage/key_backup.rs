//! Server-side key backups: backup versions and the room keys in them.
//!
//! The server keeps each backup's `auth_data` and each key's `session_data`
//! as verbatim JSON text and never interprets them; only the three fields the
//! spec ranks keys by are stored as columns ([spec]).
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#server-side-key-backups

use std::{fmt, str::FromStr};

use async_trait::async_trait;
use ruma::{OwnedRoomId, RoomId, UserId};

use super::StorageError;

/// A backup version's number. Versions are numbered per user from 1 and a
/// number is never reused, even after its backup is deleted. On the wire it
/// is a decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupVersion(pub i64);

impl fmt::Display for BackupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The text is not a version this server could have issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a backup version")]
pub struct NotABackupVersion;

impl FromStr for BackupVersion {
    type Err = NotABackupVersion;

    /// Accepts exactly the canonical decimal form the server issues (`"7"`,
    /// not `"07"` or `"+7"`), so one version has one spelling.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number: i64 = text.parse().map_err(|_| NotABackupVersion)?;
        if number < 1 || number.to_string() != text {
            return Err(NotABackupVersion);
        }
        Ok(Self(number))
    }
}

/// A backup version as stored, with the state of its keys.
#[derive(Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// Its number.
    pub version: BackupVersion,
    /// The backup algorithm, such as `m.megolm_backup.v1.curve25519-aes-sha2`.
    pub algorithm: String,
    /// The algorithm's public parameters, verbatim JSON.
    pub auth_data: String,
    /// Changes whenever the keys in the backup change.
    pub etag: i64,
    /// How many sessions the backup holds.
    pub count: u64,
}

impl fmt::Debug for BackupInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupInfo")
            .field("version", &self.version)
            .field("algorithm", &self.algorithm)
            .field("etag", &self.etag)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// The fields by which the spec decides which of two backups of one session
/// to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRank {
    /// Whether the uploading device had verified the key's sender.
    pub is_verified: bool,
    /// The first Megolm message index the key can decrypt.
    pub first_message_index: i64,
    /// How many times the key was forwarded between devices.
    pub forwarded_count: i64,
}

impl KeyRank {
    /// Whether a key ranked `self` should replace a stored key ranked `stored`.
    ///
    /// The spec compares "first by the `is_verified` flag (`true` is better
    /// than `false`), then by the `first_message_index` (a lower number is
    /// better), and finally by `forwarded_count` (a lower number is better)".
    /// A key that is merely as good does not replace the stored one.
    pub fn is_better_than(&self, stored: &Self) -> bool {
        let key = |rank: &Self| {
            (
                !rank.is_verified,
                rank.first_message_index,
                rank.forwarded_count,
            )
        };
        key(self) < key(stored)
    }
}

/// One backed-up Megolm session.
#[derive(Clone, PartialEq, Eq)]
pub struct BackedUpKey {
    /// The room the session belongs to.
    pub room_id: OwnedRoomId,
    /// The Megolm session id.
    pub session_id: String,
    /// How good this copy of the key is.
    pub rank: KeyRank,
    /// The encrypted key, verbatim JSON.
    pub session_data: String,
}

impl fmt::Debug for BackedUpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackedUpKey")
            .field("room_id", &self.room_id)
            .field("session_id", &self.session_id)
            .field("rank", &self.rank)
            .finish_non_exhaustive()
    }
}

/// Which keys of a backup a read or delete covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySelection<'a> {
    /// Every key in the backup.
    All,
    /// The keys of one room.
    Room(&'a RoomId),
    /// One session of one room.
    Session(&'a RoomId, &'a str),
}

/// The state of a backup's keys after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysState {
    /// Changes whenever the keys change.
    pub etag: i64,
    /// How many sessions the backup holds.
    pub count: u64,
}

/// What an upload of keys came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysUpload {
    /// The keys were stored where better than what was there.
    Stored(KeysState),
    /// The version exists but is not the user's latest, which is given.
    NotLatest(BackupVersion),
    /// The user has no such version.
    UnknownVersion,
}

/// What the key backup service persists. Every method is scoped to one
/// user: no user can see or change another's backups.
#[async_trait]
pub trait KeyBackupStore: Send + Sync {
    /// Creates a backup version numbered one past the user's highest ever.
    async fn create_backup_version(
        &self,
        user_id: &UserId,
        algorithm: &str,
        auth_data: &str,
    ) -> Result<BackupVersion, StorageError>;

    /// How many backup versions the user has created, deleted ones included.
    async fn backup_version_count(&self, user_id: &UserId) -> Result<u64, StorageError>;

    /// A live (not deleted) backup version; the latest when `version` is `None`.
    async fn backup_version(
        &self,
        user_id: &UserId,
        version: Option<BackupVersion>,
    ) -> Result<Option<BackupInfo>, StorageError>;

    /// Replaces a live version's `auth_data`.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] when the user has no such live version.
    async fn set_backup_auth_data(
        &self,
        user_id: &UserId,
        version: BackupVersion,
        auth_data: &str,
    ) -> Result<(), StorageError>;

    /// Deletes a live version and all its keys.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] when the user has no such live version.
    async fn delete_backup_version(
        &self,
        user_id: &UserId,
        version: BackupVersion,
    ) -> Result<(), StorageError>;

    /// Stores each key unless the backup already holds a copy of its session
    /// that is at least as good ([`KeyRank::is_better_than`]), provided
    /// `version` is the user's latest; all or nothing, in one transaction.
    /// The etag changes exactly when some key was stored.
    async fn put_backup_keys(
        &self,
        user_id: &UserId,
        version: BackupVersion,
        keys: &[BackedUpKey],
    ) -> Result<KeysUpload, StorageError>;

    /// The selected keys of a live version, ordered by room and session;
    /// `None` when the user has no such live version.
    async fn backup_keys(
        &self,
        user_id: &UserId,
        version: BackupVersion,
        selection: KeySelection<'_>,
    ) -> Result<Option<Vec<BackedUpKey>>, StorageError>;

    /// Deletes the selected keys of a live version. The etag changes
    /// exactly when some key was deleted.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] when the user has no such live version.
    async fn delete_backup_keys(
        &self,
        user_id: &UserId,
        version: BackupVersion,
        selection: KeySelection<'_>,
    ) -> Result<KeysState, StorageError>;
}

#[cfg(test)]
mod tests {
    use super::{BackupVersion, KeyRank};

    fn rank(is_verified: bool, first_message_index: i64, forwarded_count: i64) -> KeyRank {
        KeyRank {
            is_verified,
            first_message_index,
            forwarded_count,
        }
    }

    #[test]
    fn verified_beats_any_index_and_forwarding() {
        assert!(rank(true, 100, 9).is_better_than(&rank(false, 0, 0)));
        assert!(!rank(false, 0, 0).is_better_than(&rank(true, 100, 9)));
    }

    #[test]
    fn lower_index_then_lower_forwarding_wins() {
        assert!(rank(false, 1, 9).is_better_than(&rank(false, 2, 0)));
        assert!(!rank(false, 2, 0).is_better_than(&rank(false, 1, 9)));
        assert!(rank(true, 3, 1).is_better_than(&rank(true, 3, 2)));
        assert!(!rank(true, 3, 2).is_better_than(&rank(true, 3, 1)));
    }

    #[test]
    fn an_equal_key_does_not_replace() {
        assert!(!rank(true, 3, 1).is_better_than(&rank(true, 3, 1)));
    }

    #[test]
    fn versions_have_one_spelling() {
        assert_eq!("7".parse(), Ok(BackupVersion(7)));
        for text in ["07", "+7", "0", "-1", "", "7 ", "x", "99999999999999999999"] {
            assert!(text.parse::<BackupVersion>().is_err(), "{text:?}");
        }
        assert_eq!(BackupVersion(12).to_string(), "12");
    }
}
