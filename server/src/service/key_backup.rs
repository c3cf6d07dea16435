//! Server-side key backups ([spec]): a user's backup versions and the
//! encrypted Megolm session keys in them.
//!
//! The server is a blind store here. A version's `auth_data` and each key's
//! `session_data` are the client's (public parameters and ciphertext); they
//! are kept as verbatim JSON text and never parsed, compared or logged. The
//! server reads only what the spec has it act on: the algorithm name (which
//! an update may not change) and each key's `is_verified`,
//! `first_message_index` and `forwarded_count`, which decide whether an
//! upload replaces the copy already stored ([`KeyRank::is_better_than`]).
//!
//! Keys can be written only to the user's latest version, so a client still
//! writing to a backup that another device replaced learns so
//! ([`ServiceError::WrongRoomKeysVersion`]) instead of filling a dead backup.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#server-side-key-backups

use std::sync::Arc;

use ruma::UserId;
use tracing::{debug, instrument};

use super::ServiceError;
use crate::storage::{
    BackedUpKey, BackupInfo, BackupVersion, KeySelection, KeysState, KeysUpload, Storage,
    StorageError,
};

/// Key backup storage.
#[derive(Debug)]
pub struct KeyBackup {
    storage: Arc<dyn Storage>,
    max_versions: u64,
}

impl KeyBackup {
    /// Builds the service; an account may create `max_versions` versions.
    pub fn new(storage: Arc<dyn Storage>, max_versions: u64) -> Self {
        Self {
            storage,
            max_versions,
        }
    }

    /// Creates a backup version, which becomes the user's latest.
    ///
    /// # Errors
    /// `InvalidParam` for an empty algorithm name; `Forbidden` once the
    /// account has created as many versions as it may (deleted ones count:
    /// their numbers are never given out again).
    #[instrument(skip_all, fields(user_id = %user_id))]
    pub async fn create_version(
        &self,
        user_id: &UserId,
        algorithm: &str,
        auth_data: &str,
    ) -> Result<BackupVersion, ServiceError> {
        if algorithm.is_empty() {
            return Err(ServiceError::InvalidParam(
                "algorithm must not be empty".to_owned(),
            ));
        }
        if self.storage.backup_version_count(user_id).await? >= self.max_versions {
            return Err(ServiceError::Forbidden(format!(
                "an account may create at most {} backup versions",
                self.max_versions
            )));
        }
        let version = self
            .storage
            .create_backup_version(user_id, algorithm, auth_data)
            .await?;
        debug!(%version, "backup version created");
        Ok(version)
    }

    /// The user's latest backup version.
    ///
    /// # Errors
    /// `NotFound` when the user has no backup.
    pub async fn latest_version(&self, user_id: &UserId) -> Result<BackupInfo, ServiceError> {
        self.storage
            .backup_version(user_id, None)
            .await?
            .ok_or_else(|| ServiceError::NotFound("no current backup version".to_owned()))
    }

    /// One of the user's backup versions.
    ///
    /// # Errors
    /// `NotFound` when the user has no such version (or it was deleted).
    pub async fn version(
        &self,
        user_id: &UserId,
        version: &str,
    ) -> Result<BackupInfo, ServiceError> {
        let version = parse_version(version)?;
        self.storage
            .backup_version(user_id, Some(version))
            .await?
            .ok_or_else(unknown_version)
    }

    /// Replaces a version's `auth_data`; the algorithm must stay the same,
    /// and a `version` in the body must name the version being updated.
    ///
    /// # Errors
    /// `NotFound` for an unknown version; `InvalidParam` for a different
    /// algorithm or version.
    #[instrument(skip_all, fields(user_id = %user_id))]
    pub async fn update_version(
        &self,
        user_id: &UserId,
        version: &str,
        body_version: Option<&str>,
        algorithm: &str,
        auth_data: &str,
    ) -> Result<(), ServiceError> {
        let current = self.version(user_id, version).await?;
        if body_version.is_some_and(|body_version| body_version != version) {
            return Err(ServiceError::InvalidParam(
                "the version in the body does not match the version in the path".to_owned(),
            ));
        }
        if algorithm != current.algorithm {
            return Err(ServiceError::InvalidParam(
                "the algorithm of a backup version cannot be changed".to_owned(),
            ));
        }
        self.storage
            .set_backup_auth_data(user_id, current.version, auth_data)
            .await
            .map_err(not_found_as_unknown)?;
        debug!(version = %current.version, "backup version updated");
        Ok(())
    }

    /// Deletes a version and every key in it. Its number is not reused.
    ///
    /// # Errors
    /// `NotFound` for an unknown version.
    #[instrument(skip_all, fields(user_id = %user_id))]
    pub async fn delete_version(
        &self,
        user_id: &UserId,
        version: &str,
    ) -> Result<(), ServiceError> {
        let version = parse_version(version)?;
        self.storage
            .delete_backup_version(user_id, version)
            .await
            .map_err(not_found_as_unknown)?;
        debug!(%version, "backup version deleted");
        Ok(())
    }

    /// Stores keys in the user's latest version, each unless the backup
    /// already holds a copy of its session at least as good.
    ///
    /// # Errors
    /// `WrongRoomKeysVersion` when `version` exists but is not the latest;
    /// `NotFound` when it does not exist.
    #[instrument(skip_all, fields(user_id = %user_id, keys = keys.len()))]
    pub async fn put_keys(
        &self,
        user_id: &UserId,
        version: &str,
        keys: &[BackedUpKey],
    ) -> Result<KeysState, ServiceError> {
        let version = parse_version(version)?;
        match self.storage.put_backup_keys(user_id, version, keys).await? {
            KeysUpload::Stored(state) => {
                debug!(%version, count = state.count, "backup keys uploaded");
                Ok(state)
            }
            KeysUpload::NotLatest(current) => Err(ServiceError::WrongRoomKeysVersion {
                current_version: current.to_string(),
            }),
            KeysUpload::UnknownVersion => Err(unknown_version()),
        }
    }

    /// The selected keys of one of the user's versions. A room with no keys
    /// is an empty answer; a single session that is not stored is `NotFound`.
    ///
    /// # Errors
    /// `NotFound` for an unknown version, or a session not in the backup.
    pub async fn keys(
        &self,
        user_id: &UserId,
        version: &str,
        selection: KeySelection<'_>,
    ) -> Result<Vec<BackedUpKey>, ServiceError> {
        let version = parse_version(version)?;
        let keys = self
            .storage
            .backup_keys(user_id, version, selection)
            .await?
            .ok_or_else(unknown_version)?;
        if matches!(selection, KeySelection::Session(..)) && keys.is_empty() {
            return Err(ServiceError::NotFound(
                "no such session in the backup".to_owned(),
            ));
        }
        Ok(keys)
    }

    /// Deletes the selected keys of one of the user's versions (which need
    /// not be the latest).
    ///
    /// # Errors
    /// `NotFound` for an unknown version.
    #[instrument(skip_all, fields(user_id = %user_id))]
    pub async fn delete_keys(
        &self,
        user_id: &UserId,
        version: &str,
        selection: KeySelection<'_>,
    ) -> Result<KeysState, ServiceError> {
        let version = parse_version(version)?;
        let state = self
            .storage
            .delete_backup_keys(user_id, version, selection)
            .await
            .map_err(not_found_as_unknown)?;
        debug!(%version, count = state.count, "backup keys deleted");
        Ok(state)
    }
}

/// A version the server could not have issued does not exist.
fn parse_version(version: &str) -> Result<BackupVersion, ServiceError> {
    version.parse().map_err(|_| unknown_version())
}

fn unknown_version() -> ServiceError {
    ServiceError::NotFound("unknown backup version".to_owned())
}

fn not_found_as_unknown(error: StorageError) -> ServiceError {
    match error {
        StorageError::NotFound(_) => unknown_version(),
        other => other.into(),
    }
}
