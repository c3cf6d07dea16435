//! [`UserDataStore`] in SQL.

use async_trait::async_trait;
use ruma::{OwnedUserId, RoomId, UserId};

use super::{PostgresStorage, SqliteStorage, cache::UnreadCount, rooms::parse_id};
use crate::storage::{
    AccountDataEntry, Millis, NewPusher, PresenceState, Receipt, StorageError, StreamPosition,
    UserDataStore,
};

/// Event types that count as unread messages.
const COUNTED_TYPES: [&str; 3] = ["m.room.message", "m.room.encrypted", "m.sticker"];

macro_rules! sql_user_data_store {
    ($storage:ty) => {
        #[async_trait]
        impl UserDataStore for $storage {
            async fn set_account_data(
                &self,
                user_id: &UserId,
                room_id: Option<&RoomId>,
                data_type: &str,
                content: &str,
                position: StreamPosition,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO account_data (user_id, room_id, data_type, content, stream_ordering) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, room_id, data_type) \
                     DO UPDATE SET content = $4, stream_ordering = $5",
                )
                .bind(user_id.as_str())
                .bind(room_id.map_or("", RoomId::as_str))
                .bind(data_type)
                .bind(content)
                .bind(position.0)
                .execute(&self.pool)
                .await?;
                self.cache.account_data().forget(&(
                    user_id.to_owned(),
                    room_id.map_or("", RoomId::as_str).to_owned(),
                    data_type.to_owned(),
                ));
                Ok(())
            }

            async fn account_data_count(&self, user_id: &UserId) -> Result<u64, StorageError> {
                let (count,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM account_data WHERE user_id = $1")
                        .bind(user_id.as_str())
                        .fetch_one(&self.pool)
                        .await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn account_data(
                &self,
                user_id: &UserId,
                room_id: Option<&RoomId>,
                data_type: &str,
            ) -> Result<Option<String>, StorageError> {
                let key = (
                    user_id.to_owned(),
                    room_id.map_or("", RoomId::as_str).to_owned(),
                    data_type.to_owned(),
                );
                if let Some(content) = self.cache.account_data().get(&key) {
                    return Ok(content);
                }
                let epoch = self.cache.account_data().epoch();
                let row: Option<(String,)> = sqlx::query_as(
                    "SELECT content FROM account_data \
                     WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
                )
                .bind(user_id.as_str())
                .bind(room_id.map_or("", RoomId::as_str))
                .bind(data_type)
                .fetch_optional(&self.pool)
                .await?;
                let content = row.map(|(content,)| content);
                self.cache.account_data().put(epoch, key, content.clone());
                Ok(content)
            }

            async fn account_data_changes(
                &self,
                user_id: &UserId,
                after: StreamPosition,
                upto: StreamPosition,
            ) -> Result<Vec<AccountDataEntry>, StorageError> {
                let rows: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT room_id, data_type, content FROM account_data \
                     WHERE user_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 \
                     ORDER BY stream_ordering",
                )
                .bind(user_id.as_str())
                .bind(after.0)
                .bind(upto.0)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(room_id, data_type, content)| {
                        let room_id = match room_id.as_str() {
                            "" => None,
                            id => Some(id.try_into().map_err(|e: ruma::IdParseError| StorageError::Corrupt {
                                table: "account_data",
                                reason: e.to_string(),
                            })?),
                        };
                        Ok(AccountDataEntry { room_id, data_type, content })
                    })
                    .collect()
            }

            async fn set_receipt(
                &self,
                receipt: &Receipt,
                position: StreamPosition,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO receipts \
                     (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_ordering) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (room_id, receipt_type, user_id, thread_id) \
                     DO UPDATE SET event_id = $5, ts = $6, stream_ordering = $7",
                )
                .bind(receipt.room_id.as_str())
                .bind(&receipt.receipt_type)
                .bind(&receipt.user_id)
                .bind(&receipt.thread_id)
                .bind(&receipt.event_id)
                .bind(receipt.ts)
                .bind(position.0)
                .execute(&self.pool)
                .await?;
                self.cache
                    .unread_counts()
                    .forget(&(receipt.room_id.clone(), receipt.user_id.clone()));
                Ok(())
            }

            async fn receipts_between(
                &self,
                room_id: &RoomId,
                after: StreamPosition,
                upto: StreamPosition,
            ) -> Result<Vec<Receipt>, StorageError> {
                let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
                    "SELECT receipt_type, user_id, thread_id, event_id, ts FROM receipts \
                     WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3",
                )
                .bind(room_id.as_str())
                .bind(after.0)
                .bind(upto.0)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(receipt_type, user_id, thread_id, event_id, ts)| Receipt {
                        room_id: room_id.to_owned(),
                        receipt_type,
                        user_id,
                        thread_id,
                        event_id,
                        ts,
                    })
                    .collect())
            }

            async fn count_unread(
                &self,
                room_id: &RoomId,
                user_id: &UserId,
                upto: StreamPosition,
            ) -> Result<u64, StorageError> {
                let key = (room_id.to_owned(), user_id.as_str().to_owned());
                let (cached, epoch) = {
                    let mut counts = self.cache.unread_counts();
                    (counts.get(&key), counts.epoch())
                };
                // A count up to an earlier position grows by the new
                // messages the window of recent events holds.
                let grown = cached.filter(|cached| cached.upto <= upto).and_then(|cached| {
                    let after = cached.upto.max(cached.read_upto);
                    let more = if after >= upto {
                        0
                    } else {
                        self.cache.recent().count_from_others(
                            room_id, user_id, &COUNTED_TYPES, after, upto,
                        )?
                    };
                    Some(UnreadCount { upto, count: cached.count + more, ..cached })
                });
                let unread = match grown {
                    Some(unread) => unread,
                    None => {
                        let sql = format!(
                            "SELECT r.read_upto, (SELECT COUNT(*) FROM events \
                                 WHERE room_id = $1 AND sender <> $2 AND stream_ordering <= $3 \
                                 AND event_type IN ('{}') AND stream_ordering > r.read_upto) \
                             FROM (SELECT COALESCE( \
                                 (SELECT stream_ordering FROM events WHERE event_id = \
                                     (SELECT event_id FROM receipts WHERE room_id = $1 AND user_id = $2 \
                                      AND thread_id = '' ORDER BY stream_ordering DESC LIMIT 1)), \
                                 0) AS read_upto) r",
                            COUNTED_TYPES.join("', '")
                        );
                        let (read_upto, count): (i64, i64) = sqlx::query_as(&sql)
                            .bind(room_id.as_str())
                            .bind(user_id.as_str())
                            .bind(upto.0)
                            .fetch_one(&self.pool)
                            .await?;
                        UnreadCount {
                            upto,
                            read_upto: StreamPosition(read_upto),
                            count: u64::try_from(count).unwrap_or(0),
                        }
                    }
                };
                self.cache.unread_counts().put(epoch, key, unread);
                Ok(unread.count)
            }

            async fn set_pusher(
                &self,
                pusher: NewPusher<'_>,
                append: bool,
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                if !append {
                    sqlx::query(
                        "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3",
                    )
                    .bind(pusher.app_id)
                    .bind(pusher.pushkey)
                    .bind(pusher.user_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO pushers (user_id, device_id, app_id, pushkey, pusher, created_ts) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (user_id, app_id, pushkey) \
                     DO UPDATE SET device_id = $2, pusher = $5",
                )
                .bind(pusher.user_id.as_str())
                .bind(pusher.device_id.as_str())
                .bind(pusher.app_id)
                .bind(pusher.pushkey)
                .bind(pusher.json)
                .bind(Millis::now().0)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn delete_pusher(
                &self,
                user_id: &UserId,
                app_id: &str,
                pushkey: &str,
            ) -> Result<(), StorageError> {
                sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
                    .bind(user_id.as_str())
                    .bind(app_id)
                    .bind(pushkey)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn pushers(&self, user_id: &UserId) -> Result<Vec<String>, StorageError> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT pusher FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey",
                )
                .bind(user_id.as_str())
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(json,)| json).collect())
            }

            async fn set_presence(
                &self,
                user_id: &UserId,
                state: &PresenceState,
                position: StreamPosition,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO presence \
                     (user_id, presence, status_msg, last_active_ts, stream_ordering) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (user_id) DO UPDATE SET presence = $2, status_msg = $3, \
                     last_active_ts = $4, stream_ordering = $5",
                )
                .bind(user_id.as_str())
                .bind(&state.presence)
                .bind(state.status_msg.as_deref())
                .bind(state.last_active_ts)
                .bind(position.0)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn presence(
                &self,
                user_id: &UserId,
            ) -> Result<Option<PresenceState>, StorageError> {
                let row: Option<(String, Option<String>, i64)> = sqlx::query_as(
                    "SELECT presence, status_msg, last_active_ts FROM presence WHERE user_id = $1",
                )
                .bind(user_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(presence, status_msg, last_active_ts)| PresenceState {
                    presence,
                    status_msg,
                    last_active_ts,
                }))
            }

            async fn presence_changes(
                &self,
                after: StreamPosition,
                upto: StreamPosition,
                limit: u32,
            ) -> Result<Vec<(OwnedUserId, PresenceState)>, StorageError> {
                let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
                    "SELECT user_id, presence, status_msg, last_active_ts FROM presence \
                     WHERE stream_ordering > $1 AND stream_ordering <= $2 \
                     ORDER BY stream_ordering DESC LIMIT $3",
                )
                .bind(after.0)
                .bind(upto.0)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(user_id, presence, status_msg, last_active_ts)| {
                        let user_id: OwnedUserId = parse_id("presence", user_id)?;
                        let state = PresenceState { presence, status_msg, last_active_ts };
                        Ok((user_id, state))
                    })
                    .collect()
            }
        }
    };
}

sql_user_data_store!(SqliteStorage);
sql_user_data_store!(PostgresStorage);
