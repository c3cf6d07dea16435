//! [`OutboundStore`] in SQL.

use async_trait::async_trait;
use ruma::{OwnedServerName, ServerName, UserId};

use super::{PostgresStorage, SqliteStorage, rooms::parse_id};
use crate::storage::{OutboundEdu, OutboundStore, OutgoingEvent, StorageError, StreamPosition};

type OutgoingRow = (i64, String, String, String, Option<String>, String);

fn outgoing_event(
    (position, room_id, sender, event_type, state_key, json): OutgoingRow,
) -> Result<OutgoingEvent, StorageError> {
    Ok(OutgoingEvent {
        position: StreamPosition(position),
        room_id: parse_id("events", room_id)?,
        sender: parse_id("events", sender)?,
        event_type,
        state_key,
        json,
    })
}

macro_rules! sql_outbound_store {
    ($storage:ty) => {
        #[async_trait]
        impl OutboundStore for $storage {
            async fn outbound_destinations(
                &self,
            ) -> Result<Vec<(OwnedServerName, Option<StreamPosition>)>, StorageError> {
                let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
                    "SELECT destination, MAX(stream_ordering) FROM ( \
                         SELECT destination, stream_ordering FROM federation_outbound_cursors \
                         UNION ALL SELECT DISTINCT destination, CAST(NULL AS BIGINT) \
                         FROM federation_outbound_edus \
                     ) AS pending GROUP BY destination",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(name, cursor)| {
                        Ok((
                            parse_id("federation_outbound_cursors", name)?,
                            cursor.map(StreamPosition),
                        ))
                    })
                    .collect()
            }

            async fn outbound_cursor(
                &self,
                destination: &ServerName,
            ) -> Result<Option<StreamPosition>, StorageError> {
                let row: Option<(i64,)> = sqlx::query_as(
                    "SELECT stream_ordering FROM federation_outbound_cursors \
                     WHERE destination = $1",
                )
                .bind(destination.as_str())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(position,)| StreamPosition(position)))
            }

            async fn outbound_scan_position(
                &self,
            ) -> Result<Option<StreamPosition>, StorageError> {
                let row: Option<(i64,)> = sqlx::query_as(
                    "SELECT stream_ordering FROM federation_outbound_scan WHERE id = 0",
                )
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(position,)| StreamPosition(position)))
            }

            async fn record_outbound_scan(
                &self,
                new_destinations: &[(OwnedServerName, StreamPosition)],
                scanned: StreamPosition,
            ) -> Result<(), StorageError> {
                let mut transaction = self.pool.begin().await?;
                for (destination, cursor) in new_destinations {
                    sqlx::query(
                        "INSERT INTO federation_outbound_cursors (destination, stream_ordering) \
                         VALUES ($1, $2) ON CONFLICT (destination) DO NOTHING",
                    )
                    .bind(destination.as_str())
                    .bind(cursor.0)
                    .execute(&mut *transaction)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO federation_outbound_scan (id, stream_ordering) VALUES (0, $1) \
                     ON CONFLICT (id) DO UPDATE SET stream_ordering = excluded.stream_ordering",
                )
                .bind(scanned.0)
                .execute(&mut *transaction)
                .await?;
                transaction.commit().await?;
                Ok(())
            }

            async fn events_to_send(
                &self,
                server_name: &ServerName,
                after: StreamPosition,
                upto: StreamPosition,
                limit: u32,
            ) -> Result<Vec<OutgoingEvent>, StorageError> {
                let rows: Vec<OutgoingRow> = sqlx::query_as(
                    "SELECT stream_ordering, room_id, sender, event_type, state_key, json \
                     FROM events \
                     WHERE stream_ordering > $1 AND stream_ordering <= $2 \
                         AND (sender LIKE $3 OR event_type = 'm.room.member') \
                     ORDER BY stream_ordering LIMIT $4",
                )
                .bind(after.0)
                .bind(upto.0)
                .bind(format!("%:{server_name}"))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(outgoing_event).collect()
            }

            async fn queue_outbound_edus(
                &self,
                edus: &[(OwnedServerName, String)],
                max_per_destination: u64,
            ) -> Result<Vec<OwnedServerName>, StorageError> {
                let max = i64::try_from(max_per_destination).unwrap_or(i64::MAX);
                let mut transaction = self.pool.begin().await?;
                let mut full = Vec::new();
                for (destination, json) in edus {
                    let queued = sqlx::query(
                        "INSERT INTO federation_outbound_edus (destination, edu) \
                         SELECT $1, $2 WHERE (SELECT COUNT(*) FROM federation_outbound_edus \
                             WHERE destination = $1) < $3",
                    )
                    .bind(destination.as_str())
                    .bind(json)
                    .bind(max)
                    .execute(&mut *transaction)
                    .await?
                    .rows_affected();
                    if queued == 0 && !full.contains(destination) {
                        full.push(destination.clone());
                    }
                }
                transaction.commit().await?;
                Ok(full)
            }

            async fn outbound_edus(
                &self,
                destination: &ServerName,
                limit: u32,
            ) -> Result<Vec<OutboundEdu>, StorageError> {
                let rows: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT id, edu FROM federation_outbound_edus WHERE destination = $1 \
                     ORDER BY id LIMIT $2",
                )
                .bind(destination.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, json)| OutboundEdu { id, json })
                    .collect())
            }

            async fn device_list_change_before(
                &self,
                user_id: &UserId,
                position: StreamPosition,
            ) -> Result<Option<StreamPosition>, StorageError> {
                let (before,): (Option<i64>,) = sqlx::query_as(
                    "SELECT MAX(stream_ordering) FROM device_list_changes \
                     WHERE user_id = $1 AND viewer = '' AND stream_ordering < $2",
                )
                .bind(user_id.as_str())
                .bind(position.0)
                .fetch_one(&self.pool)
                .await?;
                Ok(before.map(StreamPosition))
            }

            async fn acknowledge_outbound(
                &self,
                destination: &ServerName,
                cursor: Option<StreamPosition>,
                edus_upto: Option<i64>,
            ) -> Result<(), StorageError> {
                let mut transaction = self.pool.begin().await?;
                if let Some(cursor) = cursor {
                    sqlx::query(
                        "INSERT INTO federation_outbound_cursors (destination, stream_ordering) \
                         VALUES ($1, $2) ON CONFLICT (destination) DO UPDATE \
                         SET stream_ordering = excluded.stream_ordering",
                    )
                    .bind(destination.as_str())
                    .bind(cursor.0)
                    .execute(&mut *transaction)
                    .await?;
                }
                if let Some(upto) = edus_upto {
                    sqlx::query(
                        "DELETE FROM federation_outbound_edus WHERE destination = $1 AND id <= $2",
                    )
                    .bind(destination.as_str())
                    .bind(upto)
                    .execute(&mut *transaction)
                    .await?;
                }
                transaction.commit().await?;
                Ok(())
            }
        }
    };
}

sql_outbound_store!(SqliteStorage);
sql_outbound_store!(PostgresStorage);
