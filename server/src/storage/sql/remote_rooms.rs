//! [`RemoteRoomStore`] in SQL.

use async_trait::async_trait;
use ruma::EventId;

use super::{PostgresStorage, SqliteStorage, conflict_on_unique, rooms::parse_id};
use crate::storage::{
    ImportedState, OutOfRoomMembership, RemoteRoomStore, StorageError, StoredOutOfRoomMembership,
};

macro_rules! sql_remote_room_store {
    ($storage:ty) => {
        #[async_trait]
        impl RemoteRoomStore for $storage {
            async fn store_imported_state(
                &self,
                state: &ImportedState<'_>,
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                for outlier in state.outliers {
                    sqlx::query(
                        "INSERT INTO outlier_events (event_id, room_id, depth, state_group, json) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
                    )
                    .bind(outlier.event_id.as_str())
                    .bind(state.room_id.as_str())
                    .bind(outlier.depth)
                    .bind(state.state_group)
                    .bind(outlier.json)
                    .execute(&mut *tx)
                    .await?;
                }
                Self::insert_state_group(&mut tx, state.state_group, state.room_id, state.group)
                    .await?;
                sqlx::query(
                    "INSERT INTO imported_rooms (room_id, state_group) VALUES ($1, $2) \
                     ON CONFLICT (room_id) DO UPDATE SET state_group = excluded.state_group",
                )
                .bind(state.room_id.as_str())
                .bind(state.state_group)
                .execute(&mut *tx)
                .await?;
                for (user_id, membership, event_id) in state.memberships {
                    Self::insert_membership(
                        &mut tx,
                        user_id,
                        state.room_id,
                        state.position,
                        membership,
                        event_id,
                    )
                    .await?;
                }
                tx.commit().await?;
                for (user_id, ..) in state.memberships {
                    self.cache.memberships().forget(&(*user_id).to_owned());
                }
                Ok(())
            }

            async fn store_out_of_room_membership(
                &self,
                membership: &OutOfRoomMembership<'_>,
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO out_of_room_memberships \
                     (event_id, room_id, user_id, room_version, json, stripped_state) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(membership.event_id.as_str())
                .bind(membership.room_id.as_str())
                .bind(membership.user_id.as_str())
                .bind(membership.room_version)
                .bind(membership.json)
                .bind(membership.stripped_state)
                .execute(&mut *tx)
                .await
                .map_err(conflict_on_unique("event id"))?;
                Self::insert_membership(
                    &mut tx,
                    membership.user_id,
                    membership.room_id,
                    membership.position,
                    membership.membership,
                    membership.event_id,
                )
                .await?;
                sqlx::query("DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2")
                    .bind(membership.user_id.as_str())
                    .bind(membership.room_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                self.cache
                    .memberships()
                    .forget(&membership.user_id.to_owned());
                Ok(())
            }

            async fn out_of_room_membership(
                &self,
                event_id: &EventId,
            ) -> Result<Option<StoredOutOfRoomMembership>, StorageError> {
                let row: Option<(String, String, String, String)> = sqlx::query_as(
                    "SELECT event_id, room_version, json, stripped_state \
                     FROM out_of_room_memberships WHERE event_id = $1",
                )
                .bind(event_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                row.map(|(event_id, room_version, json, stripped_state)| {
                    Ok(StoredOutOfRoomMembership {
                        event_id: parse_id("out_of_room_memberships", event_id)?,
                        room_version,
                        json,
                        stripped_state,
                    })
                })
                .transpose()
            }
        }
    };
}

sql_remote_room_store!(SqliteStorage);
sql_remote_room_store!(PostgresStorage);
