//! [`AccountStore`] in SQL.

use async_trait::async_trait;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use super::{PostgresStorage, SqliteStorage, conflict_on_unique};
use crate::storage::{
    Account, AccountStore, Device, IssuedTokens, Millis, NewAccount, Profile, ProfileField,
    Session, StorageError, StoredToken, TokenHash,
};

/// `text` as a literal in a `LIKE` pattern with `\\` as the escape.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
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

/// Inserts a session's new tokens; `spent` is the refresh token they
/// were issued for, if any (revoked when the new access token is first used).
async fn insert_tokens<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    session: &Session,
    tokens: &IssuedTokens,
    spent: Option<&TokenHash>,
    now: Millis,
) -> Result<(), StorageError>
where
    DB: sqlx::Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q [u8]>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "INSERT INTO access_tokens \
         (token_hash, user_id, device_id, created_ts, expires_ts, spent_refresh) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&tokens.access.0[..])
    .bind(session.user_id.as_str())
    .bind(session.device_id.as_str())
    .bind(now.0)
    .bind(tokens.access_expires.map(|m| m.0))
    .bind(spent.map(|hash| &hash.0[..]))
    .execute(&mut **tx)
    .await
    .map_err(conflict_on_unique("access token"))?;
    if let Some(refresh) = &tokens.refresh {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&refresh.0[..])
        .bind(session.user_id.as_str())
        .bind(session.device_id.as_str())
        .bind(now.0)
        .execute(&mut **tx)
        .await
        .map_err(conflict_on_unique("refresh token"))?;
    }
    Ok(())
}

macro_rules! sql_account_store {
    ($storage:ty) => {
        #[async_trait]
        impl AccountStore for $storage {
            async fn create_account(&self, account: &NewAccount) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO accounts (user_id, password_hash, is_admin, is_guest, created_ts) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(account.user_id.as_str())
                .bind(&account.password_hash)
                .bind(account.is_admin)
                .bind(account.is_guest)
                .bind(account.created.0)
                .execute(&self.pool)
                .await
                .map_err(conflict_on_unique("user id"))?;
                Ok(())
            }

            async fn account(&self, user_id: &UserId) -> Result<Option<Account>, StorageError> {
                let row: Option<(String, String, bool, bool, bool)> = sqlx::query_as(
                    "SELECT user_id, password_hash, is_admin, deactivated, is_guest \
                     FROM accounts WHERE user_id = $1",
                )
                .bind(user_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                row.map(|(user_id, password_hash, is_admin, deactivated, is_guest)| {
                    Ok(Account {
                        user_id: parse_user_id("accounts", user_id)?,
                        password_hash,
                        is_admin,
                        deactivated,
                        is_guest,
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
                tokens: &IssuedTokens,
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
                for table in ["access_tokens", "refresh_tokens"] {
                    sqlx::query(&format!(
                        "DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"
                    ))
                    .bind(session.user_id.as_str())
                    .bind(session.device_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
                insert_tokens(&mut tx, session, tokens, None, now).await?;
                tx.commit().await?;
                // The device's previous token is gone (and a device id
                // used again must not inherit cached key counts).
                self.cache.forget_devices();
                Ok(())
            }

            async fn refresh_session(
                &self,
                spent: &TokenHash,
                tokens: &IssuedTokens,
                now: Millis,
            ) -> Result<Option<Session>, StorageError> {
                let mut tx = self.pool.begin().await?;
                let row: Option<(String, String)> = sqlx::query_as(
                    "SELECT user_id, device_id FROM refresh_tokens WHERE token_hash = $1",
                )
                .bind(&spent.0[..])
                .fetch_optional(&mut *tx)
                .await?;
                let Some((user_id, device_id)) = row else {
                    return Ok(None);
                };
                // The device keeps one pair of tokens, and the spent refresh
                // token until that pair is first used: its older access
                // tokens (the spec lets them go at once), the pair of an
                // earlier try with this refresh token, and the refresh token
                // before it all go. Retried refreshes replace each other
                // instead of piling up rows.
                sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
                    .bind(&user_id)
                    .bind(&device_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "DELETE FROM refresh_tokens \
                     WHERE user_id = $1 AND device_id = $2 AND token_hash <> $3",
                )
                .bind(&user_id)
                .bind(&device_id)
                .bind(&spent.0[..])
                .execute(&mut *tx)
                .await?;
                // Guests are never given refresh tokens.
                let session = Session {
                    user_id: parse_user_id("refresh_tokens", user_id)?,
                    device_id: device_id.into(),
                    is_guest: false,
                };
                insert_tokens(&mut tx, &session, tokens, Some(spent), now).await?;
                tx.commit().await?;
                // The device's older access tokens are gone.
                self.cache.forget_devices();
                Ok(Some(session))
            }

            async fn session_for_token(
                &self,
                token: &TokenHash,
            ) -> Result<Option<StoredToken>, StorageError> {
                if let Some(stored) = self.cache.sessions().get(token) {
                    return Ok(Some(stored));
                }
                let epoch = self.cache.sessions().epoch();
                type Row = (Vec<u8>, String, String, Option<i64>, Option<Vec<u8>>, bool);
                let row: Option<Row> = sqlx::query_as(
                    "SELECT t.token_hash, t.user_id, t.device_id, t.expires_ts, t.spent_refresh, \
                     a.is_guest FROM access_tokens t JOIN accounts a ON a.user_id = t.user_id \
                     WHERE t.token_hash = $1",
                )
                .bind(&token.0[..])
                .fetch_optional(&self.pool)
                .await?;
                let Some((hash, user_id, device_id, expires, spent_refresh, is_guest)) = row else {
                    return Ok(None);
                };
                // The first use of a refreshed access token revokes the
                // refresh token spent for it (spec, `POST /refresh`).
                if let Some(spent) = spent_refresh {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query("DELETE FROM refresh_tokens WHERE token_hash = $1")
                        .bind(&spent)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "UPDATE access_tokens SET spent_refresh = NULL WHERE token_hash = $1",
                    )
                    .bind(&token.0[..])
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                }
                let hash = hash.try_into().map_err(|_| StorageError::Corrupt {
                    table: "access_tokens",
                    reason: "token hash is not 32 bytes".to_owned(),
                })?;
                let stored = StoredToken {
                    hash: TokenHash(hash),
                    session: Session {
                        user_id: parse_user_id("access_tokens", user_id)?,
                        device_id: device_id.into(),
                        is_guest,
                    },
                    expires: expires.map(Millis),
                };
                self.cache
                    .sessions()
                    .put(epoch, stored.hash.clone(), stored.clone());
                Ok(Some(stored))
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
                self.cache.forget_devices();
                Ok(())
            }

            async fn upgrade_guest(
                &self,
                user_id: &UserId,
                password_hash: &str,
            ) -> Result<bool, StorageError> {
                let mut tx = self.pool.begin().await?;
                let upgraded = sqlx::query(
                    "UPDATE accounts SET password_hash = $2, is_guest = FALSE \
                     WHERE user_id = $1 AND is_guest",
                )
                .bind(user_id.as_str())
                .bind(password_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if upgraded {
                    sqlx::query("DELETE FROM devices WHERE user_id = $1")
                        .bind(user_id.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                self.cache.forget_devices();
                Ok(upgraded)
            }

            async fn deactivate_account(
                &self,
                user_id: &UserId,
                erase: bool,
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                let statements = [
                    "UPDATE accounts SET deactivated = TRUE WHERE user_id = $1",
                    "DELETE FROM devices WHERE user_id = $1",
                    "DELETE FROM backup_keys WHERE user_id = $1",
                    // Deleted versions keep their rows, so numbers are not reused.
                    "UPDATE backup_versions SET is_deleted = TRUE WHERE user_id = $1",
                ];
                let erasure = [
                    "UPDATE accounts SET displayname = NULL, avatar_url = NULL WHERE user_id = $1",
                ];
                for statement in statements.iter().chain(erasure.iter().filter(|_| erase)) {
                    sqlx::query(statement)
                        .bind(user_id.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                self.cache.forget_devices();
                Ok(())
            }

            async fn delete_devices_except(
                &self,
                user_id: &UserId,
                keep: Option<&DeviceId>,
            ) -> Result<(), StorageError> {
                // `''` is never a device id, so `None` keeps nothing but
                // the dehydrated device: it has no session to end.
                sqlx::query(
                    "DELETE FROM devices WHERE user_id = $1 AND device_id <> $2 \
                     AND device_id NOT IN \
                     (SELECT device_id FROM dehydrated_devices WHERE user_id = $1)",
                )
                    .bind(user_id.as_str())
                    .bind(keep.map_or("", DeviceId::as_str))
                    .execute(&self.pool)
                    .await?;
                self.cache.forget_devices();
                Ok(())
            }

            async fn search_user_directory(
                &self,
                searcher: &UserId,
                term: &str,
                limit: u32,
                all_users: bool,
            ) -> Result<Vec<(OwnedUserId, Profile)>, StorageError> {
                // A user's current membership of a room is their latest row
                // in membership_history for it.
                let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
                    "SELECT a.user_id, a.displayname, a.avatar_url FROM accounts a \
                     WHERE NOT a.deactivated \
                     AND (LOWER(a.user_id) LIKE $2 ESCAPE '\\' \
                          OR LOWER(COALESCE(a.displayname, '')) LIKE $2 ESCAPE '\\') \
                     AND ($4 OR EXISTS (SELECT 1 FROM membership_history m \
                         WHERE m.user_id = a.user_id AND m.membership = 'join' \
                         AND m.stream_ordering = (SELECT MAX(l.stream_ordering) \
                             FROM membership_history l \
                             WHERE l.user_id = m.user_id AND l.room_id = m.room_id) \
                         AND (EXISTS (SELECT 1 FROM rooms r \
                                 WHERE r.room_id = m.room_id AND r.join_rule = 'public') \
                              OR EXISTS (SELECT 1 FROM membership_history s \
                                 WHERE s.user_id = $1 AND s.room_id = m.room_id \
                                 AND s.membership = 'join' \
                                 AND s.stream_ordering = (SELECT MAX(t.stream_ordering) \
                                     FROM membership_history t \
                                     WHERE t.user_id = $1 AND t.room_id = m.room_id))))) \
                     ORDER BY a.user_id LIMIT $3",
                )
                .bind(searcher.as_str())
                .bind(format!("%{}%", escape_like(term)))
                .bind(i64::from(limit))
                .bind(all_users)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(user_id, displayname, avatar_url)| {
                        let profile = Profile {
                            displayname,
                            avatar_url,
                        };
                        Ok((parse_user_id("accounts", user_id)?, profile))
                    })
                    .collect()
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
        }
    };
}

sql_account_store!(SqliteStorage);
sql_account_store!(PostgresStorage);
