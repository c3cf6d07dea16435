//! The SQL backends.
//!
//! The queries are written once, in the SQL that SQLite and PostgreSQL share
//! (`$n` placeholders, `ON CONFLICT`, `RETURNING`), and [`sql_storage!`]
//! instantiates them for each concrete sqlx driver. That keeps one body of
//! storage code without the `Any` driver's type erasure. Queries are checked
//! at run time, so building needs no live database.

use std::{path::Path, time::Duration};

use async_trait::async_trait;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use sqlx::{
    Pool, Postgres, Sqlite,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{
    Account, Device, Millis, NewAccount, Profile, ProfileField, Session, Storage, StorageError,
    StoredToken, TokenHash,
};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The embedded SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteStorage {
    pool: Pool<Sqlite>,
}

impl SqliteStorage {
    /// Opens (creating if needed) the database file and migrates it.
    ///
    /// The log runs in WAL mode with `synchronous=FULL`: a commit is on disk
    /// before the server acknowledges it, so `kill -9` or a power cut loses
    /// nothing acknowledged.
    ///
    /// # Errors
    /// When the file or its directory cannot be created, or migration fails.
    pub async fn open(path: &Path) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Self { pool })
    }
}

/// The PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PostgresStorage {
    pool: Pool<Postgres>,
}

impl PostgresStorage {
    /// Connects and migrates.
    ///
    /// # Errors
    /// When the server cannot be reached or migration fails.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        POSTGRES_MIGRATIONS.run(&pool).await?;
        Ok(Self { pool })
    }
}

/// Maps a uniqueness violation to [`StorageError::Conflict`].
fn conflict_on_unique(what: &'static str) -> impl FnOnce(sqlx::Error) -> StorageError {
    move |error| match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StorageError::Conflict(what),
        _ => StorageError::Backend(error),
    }
}

fn parse_user_id(table: &'static str, raw: String) -> Result<OwnedUserId, StorageError> {
    OwnedUserId::try_from(raw).map_err(|e| StorageError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

fn device_from_row((device_id, display_name): (String, Option<String>)) -> Device {
    Device {
        device_id: device_id.into(),
        display_name,
    }
}

fn update_profile_sql(field: ProfileField) -> &'static str {
    match field {
        ProfileField::Displayname => "UPDATE accounts SET displayname = $2 WHERE user_id = $1",
        ProfileField::AvatarUrl => "UPDATE accounts SET avatar_url = $2 WHERE user_id = $1",
    }
}

macro_rules! sql_storage {
    ($storage:ty) => {
        #[async_trait]
        impl Storage for $storage {
            async fn create_account(&self, account: &NewAccount) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO accounts (user_id, password_hash, is_admin, created_ts) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(account.user_id.as_str())
                .bind(&account.password_hash)
                .bind(account.is_admin)
                .bind(account.created.0)
                .execute(&self.pool)
                .await
                .map_err(conflict_on_unique("user id"))?;
                Ok(())
            }

            async fn account(&self, user_id: &UserId) -> Result<Option<Account>, StorageError> {
                let row: Option<(String, String, bool)> = sqlx::query_as(
                    "SELECT user_id, password_hash, is_admin FROM accounts WHERE user_id = $1",
                )
                .bind(user_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                row.map(|(user_id, password_hash, is_admin)| {
                    Ok(Account {
                        user_id: parse_user_id("accounts", user_id)?,
                        password_hash,
                        is_admin,
                    })
                })
                .transpose()
            }

            async fn set_password_hash(
                &self,
                user_id: &UserId,
                hash: &str,
            ) -> Result<(), StorageError> {
                let done = sqlx::query("UPDATE accounts SET password_hash = $2 WHERE user_id = $1")
                    .bind(user_id.as_str())
                    .bind(hash)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StorageError::NotFound("account"));
                }
                Ok(())
            }

            async fn open_session(
                &self,
                session: &Session,
                display_name: Option<&str>,
                token: &TokenHash,
                now: Millis,
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO devices (user_id, device_id, display_name, created_ts) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id) DO NOTHING",
                )
                .bind(session.user_id.as_str())
                .bind(session.device_id.as_str())
                .bind(display_name)
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
                    .bind(session.user_id.as_str())
                    .bind(session.device_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&token.0[..])
                .bind(session.user_id.as_str())
                .bind(session.device_id.as_str())
                .bind(now.0)
                .execute(&mut *tx)
                .await
                .map_err(conflict_on_unique("access token"))?;
                tx.commit().await?;
                Ok(())
            }

            async fn session_for_token(
                &self,
                token: &TokenHash,
            ) -> Result<Option<StoredToken>, StorageError> {
                let row: Option<(Vec<u8>, String, String)> = sqlx::query_as(
                    "SELECT token_hash, user_id, device_id FROM access_tokens \
                     WHERE token_hash = $1",
                )
                .bind(&token.0[..])
                .fetch_optional(&self.pool)
                .await?;
                row.map(|(hash, user_id, device_id)| {
                    let hash = hash.try_into().map_err(|_| StorageError::Corrupt {
                        table: "access_tokens",
                        reason: "token hash is not 32 bytes".to_owned(),
                    })?;
                    Ok(StoredToken {
                        hash: TokenHash(hash),
                        session: Session {
                            user_id: parse_user_id("access_tokens", user_id)?,
                            device_id: device_id.into(),
                        },
                    })
                })
                .transpose()
            }

            async fn devices(&self, user_id: &UserId) -> Result<Vec<Device>, StorageError> {
                let rows: Vec<(String, Option<String>)> = sqlx::query_as(
                    "SELECT device_id, display_name FROM devices WHERE user_id = $1 \
                     ORDER BY device_id",
                )
                .bind(user_id.as_str())
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(device_from_row).collect())
            }

            async fn device(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
            ) -> Result<Option<Device>, StorageError> {
                let row: Option<(String, Option<String>)> = sqlx::query_as(
                    "SELECT device_id, display_name FROM devices \
                     WHERE user_id = $1 AND device_id = $2",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(device_from_row))
            }

            async fn rename_device(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
                display_name: Option<&str>,
            ) -> Result<(), StorageError> {
                let done = sqlx::query(
                    "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(display_name)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StorageError::NotFound("device"));
                }
                Ok(())
            }

            async fn delete_devices(
                &self,
                user_id: &UserId,
                device_ids: &[OwnedDeviceId],
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                for device_id in device_ids {
                    sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
                        .bind(user_id.as_str())
                        .bind(device_id.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn delete_devices_except(
                &self,
                user_id: &UserId,
                keep: Option<&DeviceId>,
            ) -> Result<(), StorageError> {
                // `''` is never a device id, so `None` keeps nothing.
                sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id <> $2")
                    .bind(user_id.as_str())
                    .bind(keep.map_or("", DeviceId::as_str))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn profile(&self, user_id: &UserId) -> Result<Option<Profile>, StorageError> {
                let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
                    "SELECT displayname, avatar_url FROM accounts WHERE user_id = $1",
                )
                .bind(user_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(displayname, avatar_url)| Profile {
                    displayname,
                    avatar_url,
                }))
            }

            async fn set_profile_field(
                &self,
                user_id: &UserId,
                field: ProfileField,
                value: Option<&str>,
            ) -> Result<(), StorageError> {
                let done = sqlx::query(update_profile_sql(field))
                    .bind(user_id.as_str())
                    .bind(value)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StorageError::NotFound("account"));
                }
                Ok(())
            }

            async fn close(&self) {
                self.pool.close().await;
            }
        }
    };
}

sql_storage!(SqliteStorage);
sql_storage!(PostgresStorage);
