//! [`DeviceListStore`] in SQL.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{PostgresStorage, SqliteStorage, rooms::parse_id};
use crate::storage::{DeviceListChange, DeviceListStore, StorageError, StreamPosition};

/// Inside a write's transaction `$tx`: records `$changes` at `$position`.
/// Shared with the key store, whose writes record their change in the same
/// transaction as the keys.
macro_rules! insert_device_list_changes {
    ($tx:ident, $changes:expr, $position:expr) => {
        for change in $changes {
            sqlx::query(
                "INSERT INTO device_list_changes (stream_ordering, user_id, viewer) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind($position.0)
            .bind(change.user_id.as_str())
            .bind(change.viewer.as_ref().map_or("", |viewer| viewer.as_str()))
            .execute(&mut *$tx)
            .await?;
        }
    };
}
pub(super) use insert_device_list_changes;

macro_rules! sql_device_list_store {
    ($storage:ty) => {
        #[async_trait]
        impl DeviceListStore for $storage {
            async fn record_device_list_changes(
                &self,
                changes: &[DeviceListChange],
                position: StreamPosition,
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                insert_device_list_changes!(tx, changes, position);
                tx.commit().await?;
                Ok(())
            }

            async fn device_list_changes(
                &self,
                viewer: &UserId,
                after: StreamPosition,
                upto: StreamPosition,
            ) -> Result<Vec<(OwnedUserId, bool)>, StorageError> {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT user_id, viewer FROM device_list_changes \
                     WHERE stream_ordering > $1 AND stream_ordering <= $2 \
                     AND (viewer = '' OR viewer = $3)",
                )
                .bind(after.0)
                .bind(upto.0)
                .bind(viewer.as_str())
                .fetch_all(&self.pool)
                .await?;
                // A user is private only when every change of theirs is.
                let mut users: BTreeMap<String, bool> = BTreeMap::new();
                for (user_id, row_viewer) in rows {
                    let is_private = !row_viewer.is_empty();
                    let entry = users.entry(user_id).or_insert(is_private);
                    *entry &= is_private;
                }
                users
                    .into_iter()
                    .map(|(user_id, is_private)| {
                        Ok((parse_id("device_list_changes", user_id)?, is_private))
                    })
                    .collect()
            }

            async fn joined_members_at(
                &self,
                room_id: &RoomId,
                at: StreamPosition,
            ) -> Result<Vec<OwnedUserId>, StorageError> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT h.user_id FROM membership_history h \
                     WHERE h.room_id = $1 AND h.stream_ordering <= $2 AND h.membership = 'join' \
                     AND h.stream_ordering = (SELECT MAX(l.stream_ordering) \
                         FROM membership_history l WHERE l.room_id = $1 \
                         AND l.user_id = h.user_id AND l.stream_ordering <= $2)",
                )
                .bind(room_id.as_str())
                .bind(at.0)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(user_id,)| parse_id("membership_history", user_id))
                    .collect()
            }

            async fn rooms_with_membership_changes(
                &self,
                after: StreamPosition,
                upto: StreamPosition,
            ) -> Result<Vec<OwnedRoomId>, StorageError> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT DISTINCT room_id FROM membership_history \
                     WHERE stream_ordering > $1 AND stream_ordering <= $2",
                )
                .bind(after.0)
                .bind(upto.0)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(room_id,)| parse_id("membership_history", room_id))
                    .collect()
            }
        }
    };
}

sql_device_list_store!(SqliteStorage);
sql_device_list_store!(PostgresStorage);
