//! [`PushStore`] in SQL.

use async_trait::async_trait;
use ruma::{RoomId, UserId};

use super::{PostgresStorage, SqliteStorage, rooms::parse_id};
use crate::storage::{
    NewPushAction, Notification, NotificationCounts, PushStore, StorageError, StreamPosition,
};

/// The position of the event the user `a.user_id` last read up to in room
/// `a.room_id` (their latest main-timeline receipt, public or private), 0
/// without one: actions after it are unread.
const READ_UPTO: &str = "COALESCE((SELECT e.stream_ordering FROM events e WHERE e.event_id = \
     (SELECT r.event_id FROM receipts r WHERE r.room_id = a.room_id AND r.user_id = a.user_id \
      AND r.thread_id = '' ORDER BY r.stream_ordering DESC LIMIT 1)), 0)";

macro_rules! sql_push_store {
    ($storage:ty) => {
        #[async_trait]
        impl PushStore for $storage {
            async fn add_push_actions(
                &self,
                actions: &[NewPushAction<'_>],
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                for action in actions {
                    sqlx::query(
                        "INSERT INTO event_push_actions (user_id, room_id, event_id, \
                         stream_ordering, actions, highlight, ts) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (user_id, event_id) DO NOTHING",
                    )
                    .bind(action.user_id.as_str())
                    .bind(action.room_id.as_str())
                    .bind(action.event_id.as_str())
                    .bind(action.position.0)
                    .bind(action.actions)
                    .bind(action.is_highlight)
                    .bind(action.ts)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn notification_counts(
                &self,
                room_id: &RoomId,
                user_id: &UserId,
                upto: StreamPosition,
            ) -> Result<NotificationCounts, StorageError> {
                let sql = format!(
                    "SELECT COUNT(*), COALESCE(SUM(CASE WHEN a.highlight THEN 1 ELSE 0 END), 0) \
                     FROM event_push_actions a WHERE a.user_id = $1 AND a.room_id = $2 \
                     AND a.stream_ordering <= $3 AND a.stream_ordering > {READ_UPTO}"
                );
                let (notifications, highlights): (i64, i64) = sqlx::query_as(&sql)
                    .bind(user_id.as_str())
                    .bind(room_id.as_str())
                    .bind(upto.0)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(NotificationCounts {
                    notifications: u64::try_from(notifications).unwrap_or(0),
                    highlights: u64::try_from(highlights).unwrap_or(0),
                })
            }

            async fn unread_notification_total(
                &self,
                user_id: &UserId,
            ) -> Result<u64, StorageError> {
                let sql = format!(
                    "SELECT COUNT(*) FROM event_push_actions a WHERE a.user_id = $1 \
                     AND a.stream_ordering > {READ_UPTO}"
                );
                let (total,): (i64,) = sqlx::query_as(&sql)
                    .bind(user_id.as_str())
                    .fetch_one(&self.pool)
                    .await?;
                Ok(u64::try_from(total).unwrap_or(0))
            }

            async fn notifications(
                &self,
                user_id: &UserId,
                before: Option<StreamPosition>,
                limit: usize,
                only_highlights: bool,
            ) -> Result<Vec<Notification>, StorageError> {
                let sql = format!(
                    "SELECT a.room_id, a.event_id, a.stream_ordering, a.actions, a.ts, \
                     CASE WHEN a.stream_ordering <= {READ_UPTO} THEN 1 ELSE 0 END \
                     FROM event_push_actions a WHERE a.user_id = $1 AND a.stream_ordering < $2 \
                     AND (a.highlight OR NOT $3) ORDER BY a.stream_ordering DESC LIMIT $4"
                );
                let rows: Vec<(String, String, i64, String, i64, i32)> = sqlx::query_as(&sql)
                    .bind(user_id.as_str())
                    .bind(before.map_or(i64::MAX, |position| position.0))
                    .bind(only_highlights)
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter()
                    .map(|(room_id, event_id, position, actions, ts, is_read)| {
                        Ok(Notification {
                            room_id: parse_id("event_push_actions", room_id)?,
                            event_id: parse_id("event_push_actions", event_id)?,
                            position: StreamPosition(position),
                            actions,
                            is_read: is_read == 1,
                            ts,
                        })
                    })
                    .collect()
            }

            async fn prune_push_actions(
                &self,
                read_before_ts: i64,
                keep_per_user: u32,
                batch: u32,
            ) -> Result<u64, StorageError> {
                let mut tx = self.pool.begin().await?;
                let read = format!(
                    "DELETE FROM event_push_actions WHERE (user_id, event_id) IN \
                     (SELECT a.user_id, a.event_id FROM event_push_actions a \
                      WHERE a.ts < $1 AND a.stream_ordering <= {READ_UPTO} LIMIT $2)"
                );
                let mut pruned = sqlx::query(&read)
                    .bind(read_before_ts)
                    .bind(i64::from(batch))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let left = batch.saturating_sub(u32::try_from(pruned).unwrap_or(batch));
                if left > 0 {
                    pruned += sqlx::query(
                        "DELETE FROM event_push_actions WHERE (user_id, event_id) IN \
                         (SELECT user_id, event_id FROM \
                          (SELECT user_id, event_id, ROW_NUMBER() OVER \
                           (PARTITION BY user_id ORDER BY stream_ordering DESC) AS newer \
                           FROM event_push_actions) ranked \
                          WHERE newer > $1 LIMIT $2)",
                    )
                    .bind(i64::from(keep_per_user))
                    .bind(i64::from(left))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok(pruned)
            }

            async fn pushers_with_ts(
                &self,
                user_id: &UserId,
            ) -> Result<Vec<(String, i64)>, StorageError> {
                Ok(sqlx::query_as(
                    "SELECT pusher, created_ts FROM pushers WHERE user_id = $1 \
                     ORDER BY created_ts, app_id, pushkey",
                )
                .bind(user_id.as_str())
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}

sql_push_store!(SqliteStorage);
sql_push_store!(PostgresStorage);
