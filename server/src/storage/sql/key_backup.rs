//! [`KeyBackupStore`] in SQL.
//!
//! Every write opens its transaction with an `UPDATE` of the version's row:
//! that takes SQLite's write lock up front (a read-then-write transaction
//! could fail to upgrade its lock) and, on PostgreSQL, locks the row, so
//! uploads, deletes and version deletion of one backup are serialised.

use async_trait::async_trait;
use ruma::{OwnedRoomId, UserId};

use super::{PostgresStorage, SqliteStorage};
use crate::storage::{
    BackedUpKey, BackupInfo, BackupVersion, KeyBackupStore, KeyRank, KeySelection, KeysState,
    KeysUpload, StorageError,
};

/// How often creating a version retries when a concurrent create took the
/// same number (PostgreSQL; SQLite serialises writers).
const CREATE_ATTEMPTS: usize = 5;

/// The `WHERE` clause, after `user_id = $1 AND version = $2`, selecting keys,
/// and the values for its `$3` and `$4`.
fn selection_filter<'a>(
    selection: KeySelection<'a>,
) -> (&'static str, Option<&'a str>, Option<&'a str>) {
    match selection {
        KeySelection::All => ("", None, None),
        KeySelection::Room(room_id) => (" AND room_id = $3", Some(room_id.as_str()), None),
        KeySelection::Session(room_id, session_id) => (
            " AND room_id = $3 AND session_id = $4",
            Some(room_id.as_str()),
            Some(session_id),
        ),
    }
}

type KeyRow = (String, String, i64, i64, bool, String);

fn key_from_row(
    (room_id, session_id, first_message_index, forwarded_count, is_verified, session_data): KeyRow,
) -> Result<BackedUpKey, StorageError> {
    let room_id = OwnedRoomId::try_from(room_id).map_err(|e| StorageError::Corrupt {
        table: "backup_keys",
        reason: e.to_string(),
    })?;
    Ok(BackedUpKey {
        room_id,
        session_id,
        rank: KeyRank {
            is_verified,
            first_message_index,
            forwarded_count,
        },
        session_data,
    })
}

fn count_from(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

/// Inside a write's transaction `$tx`: moves the version's etag on when its
/// keys changed, and reads the etag and count.
macro_rules! keys_state {
    ($tx:ident, $user_id:expr, $version:expr, $is_changed:expr) => {{
        let (etag,): (i64,) = sqlx::query_as(
            "UPDATE backup_versions SET etag = etag + $3 \
             WHERE user_id = $1 AND version = $2 RETURNING etag",
        )
        .bind($user_id.as_str())
        .bind($version.0)
        .bind(i64::from($is_changed))
        .fetch_one(&mut *$tx)
        .await?;
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2")
                .bind($user_id.as_str())
                .bind($version.0)
                .fetch_one(&mut *$tx)
                .await?;
        KeysState {
            etag,
            count: count_from(count),
        }
    }};
}

macro_rules! sql_key_backup_store {
    ($storage:ty) => {
        #[async_trait]
        impl KeyBackupStore for $storage {
            async fn backup_version_count(&self, user_id: &UserId) -> Result<u64, StorageError> {
                let (count,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM backup_versions WHERE user_id = $1")
                        .bind(user_id.as_str())
                        .fetch_one(&self.pool)
                        .await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn create_backup_version(
                &self,
                user_id: &UserId,
                algorithm: &str,
                auth_data: &str,
            ) -> Result<BackupVersion, StorageError> {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let created: Result<(i64,), sqlx::Error> = sqlx::query_as(
                        "INSERT INTO backup_versions \
                         (user_id, version, algorithm, auth_data, etag, is_deleted) \
                         SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, 0, $4 \
                         FROM backup_versions WHERE user_id = $1 \
                         RETURNING version",
                    )
                    .bind(user_id.as_str())
                    .bind(algorithm)
                    .bind(auth_data)
                    .bind(false)
                    .fetch_one(&self.pool)
                    .await;
                    match created {
                        Ok((version,)) => return Ok(BackupVersion(version)),
                        Err(sqlx::Error::Database(db))
                            if db.is_unique_violation() && attempt < CREATE_ATTEMPTS =>
                        {
                            continue;
                        }
                        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                            return Err(StorageError::Conflict("backup version"));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }

            async fn backup_version(
                &self,
                user_id: &UserId,
                version: Option<BackupVersion>,
            ) -> Result<Option<BackupInfo>, StorageError> {
                let row: Option<(i64, String, String, i64, i64)> = sqlx::query_as(
                    "SELECT v.version, v.algorithm, v.auth_data, v.etag, \
                     (SELECT COUNT(*) FROM backup_keys k \
                      WHERE k.user_id = v.user_id AND k.version = v.version) \
                     FROM backup_versions v \
                     WHERE v.user_id = $1 AND v.is_deleted = $2 \
                     AND v.version = COALESCE($3, v.version) \
                     ORDER BY v.version DESC LIMIT 1",
                )
                .bind(user_id.as_str())
                .bind(false)
                .bind(version.map(|version| version.0))
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(version, algorithm, auth_data, etag, count)| BackupInfo {
                    version: BackupVersion(version),
                    algorithm,
                    auth_data,
                    etag,
                    count: count_from(count),
                }))
            }

            async fn set_backup_auth_data(
                &self,
                user_id: &UserId,
                version: BackupVersion,
                auth_data: &str,
            ) -> Result<(), StorageError> {
                let done = sqlx::query(
                    "UPDATE backup_versions SET auth_data = $3 \
                     WHERE user_id = $1 AND version = $2 AND is_deleted = $4",
                )
                .bind(user_id.as_str())
                .bind(version.0)
                .bind(auth_data)
                .bind(false)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StorageError::NotFound("backup version"));
                }
                Ok(())
            }

            async fn delete_backup_version(
                &self,
                user_id: &UserId,
                version: BackupVersion,
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                // The row stays, emptied, so that the number is never reused.
                let done = sqlx::query(
                    "UPDATE backup_versions SET is_deleted = $3, auth_data = '{}' \
                     WHERE user_id = $1 AND version = $2 AND is_deleted = $4",
                )
                .bind(user_id.as_str())
                .bind(version.0)
                .bind(true)
                .bind(false)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StorageError::NotFound("backup version"));
                }
                sqlx::query("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2")
                    .bind(user_id.as_str())
                    .bind(version.0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn put_backup_keys(
                &self,
                user_id: &UserId,
                version: BackupVersion,
                keys: &[BackedUpKey],
            ) -> Result<KeysUpload, StorageError> {
                let mut tx = self.pool.begin().await?;
                let locked = sqlx::query(
                    "UPDATE backup_versions SET etag = etag \
                     WHERE user_id = $1 AND version = $2 AND is_deleted = $3",
                )
                .bind(user_id.as_str())
                .bind(version.0)
                .bind(false)
                .execute(&mut *tx)
                .await?;
                if locked.rows_affected() == 0 {
                    return Ok(KeysUpload::UnknownVersion);
                }
                let (latest,): (Option<i64>,) = sqlx::query_as(
                    "SELECT MAX(version) FROM backup_versions \
                     WHERE user_id = $1 AND is_deleted = $2",
                )
                .bind(user_id.as_str())
                .bind(false)
                .fetch_one(&mut *tx)
                .await?;
                if let Some(latest) = latest.filter(|latest| *latest != version.0) {
                    return Ok(KeysUpload::NotLatest(BackupVersion(latest)));
                }
                let mut stored = 0_u64;
                for key in keys {
                    let existing: Option<(bool, i64, i64)> = sqlx::query_as(
                        "SELECT is_verified, first_message_index, forwarded_count \
                         FROM backup_keys WHERE user_id = $1 AND version = $2 \
                         AND room_id = $3 AND session_id = $4",
                    )
                    .bind(user_id.as_str())
                    .bind(version.0)
                    .bind(key.room_id.as_str())
                    .bind(&key.session_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let is_kept = existing.is_some_and(
                        |(is_verified, first_message_index, forwarded_count)| {
                            !key.rank.is_better_than(&KeyRank {
                                is_verified,
                                first_message_index,
                                forwarded_count,
                            })
                        },
                    );
                    if is_kept {
                        continue;
                    }
                    sqlx::query(
                        "INSERT INTO backup_keys (user_id, version, room_id, session_id, \
                         first_message_index, forwarded_count, is_verified, session_data) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                         ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET \
                         first_message_index = $5, forwarded_count = $6, is_verified = $7, \
                         session_data = $8",
                    )
                    .bind(user_id.as_str())
                    .bind(version.0)
                    .bind(key.room_id.as_str())
                    .bind(&key.session_id)
                    .bind(key.rank.first_message_index)
                    .bind(key.rank.forwarded_count)
                    .bind(key.rank.is_verified)
                    .bind(&key.session_data)
                    .execute(&mut *tx)
                    .await?;
                    stored += 1;
                }
                let state = keys_state!(tx, user_id, version, stored > 0);
                tx.commit().await?;
                Ok(KeysUpload::Stored(state))
            }

            async fn backup_keys(
                &self,
                user_id: &UserId,
                version: BackupVersion,
                selection: KeySelection<'_>,
            ) -> Result<Option<Vec<BackedUpKey>>, StorageError> {
                let live: Option<(i64,)> = sqlx::query_as(
                    "SELECT version FROM backup_versions \
                     WHERE user_id = $1 AND version = $2 AND is_deleted = $3",
                )
                .bind(user_id.as_str())
                .bind(version.0)
                .bind(false)
                .fetch_optional(&self.pool)
                .await?;
                if live.is_none() {
                    return Ok(None);
                }
                let (filter, room_id, session_id) = selection_filter(selection);
                let sql = format!(
                    "SELECT room_id, session_id, first_message_index, forwarded_count, \
                     is_verified, session_data FROM backup_keys \
                     WHERE user_id = $1 AND version = $2{filter} ORDER BY room_id, session_id"
                );
                let mut query = sqlx::query_as::<_, KeyRow>(&sql)
                    .bind(user_id.as_str())
                    .bind(version.0);
                if let Some(room_id) = room_id {
                    query = query.bind(room_id);
                }
                if let Some(session_id) = session_id {
                    query = query.bind(session_id);
                }
                let rows = query.fetch_all(&self.pool).await?;
                rows.into_iter()
                    .map(key_from_row)
                    .collect::<Result<_, _>>()
                    .map(Some)
            }

            async fn delete_backup_keys(
                &self,
                user_id: &UserId,
                version: BackupVersion,
                selection: KeySelection<'_>,
            ) -> Result<KeysState, StorageError> {
                let mut tx = self.pool.begin().await?;
                let locked = sqlx::query(
                    "UPDATE backup_versions SET etag = etag \
                     WHERE user_id = $1 AND version = $2 AND is_deleted = $3",
                )
                .bind(user_id.as_str())
                .bind(version.0)
                .bind(false)
                .execute(&mut *tx)
                .await?;
                if locked.rows_affected() == 0 {
                    return Err(StorageError::NotFound("backup version"));
                }
                let (filter, room_id, session_id) = selection_filter(selection);
                let sql =
                    format!("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2{filter}");
                let mut query = sqlx::query(&sql).bind(user_id.as_str()).bind(version.0);
                if let Some(room_id) = room_id {
                    query = query.bind(room_id);
                }
                if let Some(session_id) = session_id {
                    query = query.bind(session_id);
                }
                let deleted = query.execute(&mut *tx).await?.rows_affected();
                let state = keys_state!(tx, user_id, version, deleted > 0);
                tx.commit().await?;
                Ok(state)
            }
        }

    };
}

sql_key_backup_store!(SqliteStorage);
sql_key_backup_store!(PostgresStorage);
