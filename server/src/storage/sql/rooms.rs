//! [`RoomStore`] in SQL.

use async_trait::async_trait;
use ruma::{DeviceId, EventId, OwnedEventId, OwnedRoomId, RoomAliasId, RoomId, UserId};

use super::{PostgresStorage, SqliteStorage, conflict_on_unique, recent::RecentEvent};
use crate::storage::{
    ChainOutcome, DagEvent, EventStatus, Membership, NewEvent, NewStateGroup, RoomHead, RoomRecord,
    RoomStore, StateEntry, StorageError, StoredEvent, StreamPosition, WithheldEvent,
};

type EventRow = (i64, String, String, String, i64);

/// Rooms read in one statement by `latest_room_events` (each binds one parameter).
const ROOMS_PER_QUERY: usize = 100;

fn stored_event(
    (position, event_id, room_id, json, state_group): EventRow,
) -> Result<StoredEvent, StorageError> {
    Ok(StoredEvent {
        position: StreamPosition(position),
        event_id: parse_id("events", event_id)?,
        room_id: parse_id("events", room_id)?,
        json,
        state_group,
    })
}

pub(super) fn parse_id<T: TryFrom<String>>(
    table: &'static str,
    raw: String,
) -> Result<T, StorageError>
where
    T::Error: std::fmt::Display,
{
    T::try_from(raw).map_err(|e| StorageError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

macro_rules! sql_room_store {
    ($storage:ty, $db:ty) => {
        impl $storage {
            /// A state group's full state, following its delta chain (later
            /// deltas win), from the cache when it is there.
            async fn full_state_group(
                &self,
                state_group: i64,
            ) -> Result<std::sync::Arc<Vec<StateEntry>>, StorageError> {
                if let Some(entries) = self.cache.group(state_group) {
                    return Ok(entries);
                }
                // The group and its delta chain in one query, oldest first.
                let rows: Vec<(i64, Option<i64>, Option<String>, Option<String>, Option<String>)> =
                    sqlx::query_as(
                        "WITH RECURSIVE chain (state_group, prev_group, depth) AS ( \
                             SELECT state_group, prev_group, 0 FROM state_groups \
                             WHERE state_group = $1 \
                             UNION ALL \
                             SELECT g.state_group, g.prev_group, c.depth + 1 FROM state_groups g \
                             JOIN chain c ON g.state_group = c.prev_group) \
                         SELECT c.state_group, c.prev_group, e.event_type, e.state_key, e.event_id \
                         FROM chain c \
                         LEFT JOIN state_group_entries e ON e.state_group = c.state_group \
                         ORDER BY c.depth DESC",
                    )
                    .bind(state_group)
                    .fetch_all(&self.pool)
                    .await?;
                let chain_is_whole = rows.first().is_some_and(|(_, prev, ..)| prev.is_none())
                    && rows.last().is_some_and(|(group, ..)| *group == state_group);
                if !chain_is_whole {
                    return Err(StorageError::Corrupt {
                        table: "state_groups",
                        reason: format!("state group {state_group} or one before it is missing"),
                    });
                }
                let mut state = std::collections::HashMap::new();
                for (_, _, event_type, state_key, event_id) in rows {
                    if let (Some(event_type), Some(state_key), Some(event_id)) =
                        (event_type, state_key, event_id)
                    {
                        state.insert((event_type, state_key), event_id);
                    }
                }
                let entries: Vec<StateEntry> = state
                    .into_iter()
                    .map(|((event_type, state_key), event_id)| {
                        Ok(StateEntry {
                            event_type,
                            state_key,
                            event_id: parse_id("state_group_entries", event_id)?,
                        })
                    })
                    .collect::<Result<_, StorageError>>()?;
                let entries = std::sync::Arc::new(entries);
                self.cache.put_group(state_group, entries.clone());
                Ok(entries)
            }

            /// Writes a chain's events (each built on the one before) and
            /// the room's forward extremities, once, as the last event leaves
            /// them. Stops at the first event that fails and says which, with
            /// what it wrote so far left for the caller to undo.
            async fn insert_chain(
                conn: &mut <$db as sqlx::Database>::Connection,
                chain: &[NewEvent<'_>],
            ) -> Result<Option<(usize, StorageError)>, StorageError> {
                for (index, event) in chain.iter().enumerate() {
                    if let Err(error) = Self::insert_event(&mut *conn, event).await {
                        return Ok(Some((index, error)));
                    }
                }
                if let Some(last) = chain.last() {
                    Self::set_forward_extremities(&mut *conn, last).await?;
                }
                Ok(None)
            }

            /// Writes a chain inside one savepoint of the caller's
            /// transaction. An event that fails (a uniqueness
            /// conflict, which is rare: a retried transaction) undoes the
            /// savepoint, and the events before it are written again
            /// without it; the events after it are not tried.
            async fn append_chain(
                conn: &mut <$db as sqlx::Database>::Connection,
                chain: &[NewEvent<'_>],
            ) -> Result<ChainOutcome, StorageError> {
                let mut outcome = ChainOutcome {
                    written: chain.len(),
                    error: None,
                };
                while outcome.written > 0 {
                    let mut savepoint = sqlx::Connection::begin(&mut *conn).await?;
                    match Self::insert_chain(&mut savepoint, &chain[..outcome.written]).await? {
                        None => {
                            savepoint.commit().await?;
                            break;
                        }
                        Some((index, error)) => {
                            savepoint.rollback().await?;
                            outcome.written = index;
                            outcome.error = Some(error);
                        }
                    }
                }
                Ok(outcome)
            }

            /// Replaces the room's forward extremities with those `event`
            /// leaves: a local event follows every extremity and leaves
            /// itself alone, which is one update of the room's one row.
            async fn set_forward_extremities(
                conn: &mut <$db as sqlx::Database>::Connection,
                event: &NewEvent<'_>,
            ) -> Result<(), StorageError> {
                if let [extremity] = event.forward_extremities {
                    let replaced = sqlx::query(
                        "UPDATE forward_extremities SET event_id = $2 WHERE room_id = $1 \
                         AND (SELECT COUNT(*) FROM forward_extremities WHERE room_id = $1) = 1",
                    )
                    .bind(event.room_id.as_str())
                    .bind(extremity.as_str())
                    .execute(&mut *conn)
                    .await?;
                    if replaced.rows_affected() == 1 {
                        return Ok(());
                    }
                }
                sqlx::query("DELETE FROM forward_extremities WHERE room_id = $1")
                    .bind(event.room_id.as_str())
                    .execute(&mut *conn)
                    .await?;
                for extremity in event.forward_extremities {
                    sqlx::query("INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)")
                        .bind(event.room_id.as_str())
                        .bind(extremity.as_str())
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            }

            /// Writes one event and what changes with it (but not the
            /// forward extremities), inside the caller's transaction.
            async fn insert_event(
                conn: &mut <$db as sqlx::Database>::Connection,
                event: &NewEvent<'_>,
            ) -> Result<(), StorageError> {
                if let Some(version) = event.creates_room_version {
                    sqlx::query(
                        "INSERT INTO rooms (room_id, room_version, is_public, created_ts) \
                         VALUES ($1, $2, FALSE, $3)",
                    )
                    .bind(event.room_id.as_str())
                    .bind(version)
                    .bind(crate::storage::Millis::now().0)
                    .execute(&mut *conn)
                    .await
                    .map_err(conflict_on_unique("room id"))?;
                }
                if let Some(group) = &event.new_state_group {
                    Self::insert_state_group(&mut *conn, event.state_group, event.room_id, group).await?;
                }
                if let Some((id, group)) = event.room_state {
                    Self::insert_state_group(&mut *conn, id, event.room_id, group).await?;
                }
                sqlx::query(
                    "INSERT INTO events (stream_ordering, event_id, room_id, event_type, state_key, \
                     sender, depth, state_group, json, txn_device_id, txn_id, room_state_group) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(event.position.0)
                .bind(event.event_id.as_str())
                .bind(event.room_id.as_str())
                .bind(event.event_type)
                .bind(event.state_key)
                .bind(event.sender.as_str())
                .bind(event.depth)
                .bind(event.state_group)
                .bind(event.json)
                .bind(event.transaction.as_ref().map(|t| t.device_id.as_str()))
                .bind(event.transaction.as_ref().map(|t| t.txn_id))
                .bind(event.room_state.map(|(id, _)| id))
                .execute(&mut *conn)
                .await
                .map_err(conflict_on_unique("event id"))?;
                if let Some((user_id, membership)) = event.membership {
                    Self::insert_membership(
                        &mut *conn,
                        user_id,
                        event.room_id,
                        event.position,
                        membership,
                        event.event_id,
                    )
                    .await?;
                    sqlx::query("DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2")
                        .bind(user_id.as_str())
                        .bind(event.room_id.as_str())
                        .execute(&mut *conn)
                        .await?;
                }
                if let Some(join_rule) = event.join_rule {
                    sqlx::query("UPDATE rooms SET join_rule = $2 WHERE room_id = $1")
                        .bind(event.room_id.as_str())
                        .bind(join_rule)
                        .execute(&mut *conn)
                        .await?;
                }
                if let Some(transaction) = &event.transaction {
                    sqlx::query(
                        "INSERT INTO event_transactions (user_id, device_id, txn_key, event_id) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(transaction.user_id.as_str())
                    .bind(transaction.device_id.as_str())
                    .bind(transaction.key)
                    .bind(event.event_id.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(conflict_on_unique("transaction id"))?;
                }
                if let Some((target, redacted_json)) = event.redaction {
                    sqlx::query("UPDATE events SET json = $2, redacted_by = $3 WHERE event_id = $1")
                        .bind(target.as_str())
                        .bind(redacted_json)
                        .bind(event.event_id.as_str())
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            }

            /// Records a membership change at `position`, inside the
            /// caller's transaction.
            pub(super) async fn insert_membership(
                conn: &mut <$db as sqlx::Database>::Connection,
                user_id: &UserId,
                room_id: &RoomId,
                position: StreamPosition,
                membership: &str,
                event_id: &EventId,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO membership_history \
                     (user_id, room_id, stream_ordering, membership, event_id) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(user_id.as_str())
                .bind(room_id.as_str())
                .bind(position.0)
                .bind(membership)
                .bind(event_id.as_str())
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// Writes one state group (a delta or a snapshot) inside the
            /// caller's transaction.
            pub(super) async fn insert_state_group(
                conn: &mut <$db as sqlx::Database>::Connection,
                state_group: i64,
                room_id: &RoomId,
                group: &NewStateGroup,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO state_groups (state_group, room_id, prev_group, chain_length) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(state_group)
                .bind(room_id.as_str())
                .bind(group.prev_group)
                .bind(group.chain_length)
                .execute(&mut *conn)
                .await?;
                for entry in &group.entries {
                    sqlx::query(
                        "INSERT INTO state_group_entries \
                         (state_group, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(state_group)
                    .bind(&entry.event_type)
                    .bind(&entry.state_key)
                    .bind(entry.event_id.as_str())
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            }

            /// Updates the read cache for an event that was committed
            /// (before its position is published).
            fn cache_committed(&self, event: &NewEvent<'_>) {
                if let Some((target, redacted_json)) = event.redaction {
                    self.cache.redact(target, redacted_json);
                    self.cache.recent().redact(target, redacted_json);
                }
                if let Some((user_id, _)) = event.membership {
                    self.cache.memberships().forget(&user_id.to_owned());
                }
                let stored = StoredEvent {
                    position: event.position,
                    event_id: event.event_id.to_owned(),
                    room_id: event.room_id.to_owned(),
                    json: event.json.to_owned(),
                    // What clients read: the room's state after it.
                    state_group: event.room_state.map_or(event.state_group, |(id, _)| id),
                };
                self.cache.recent().record(RecentEvent {
                    event: stored.clone(),
                    event_type: event.event_type.to_owned(),
                    sender: event.sender.to_owned(),
                });
                self.cache.put_event(stored);
            }

            /// The user's memberships as `memberships_of(user, None)`
            /// answers, cached until one of them changes.
            async fn latest_memberships(
                &self,
                user_id: &UserId,
            ) -> Result<std::sync::Arc<Vec<Membership>>, StorageError> {
                let key = user_id.to_owned();
                if let Some(memberships) = self.cache.memberships().get(&key) {
                    return Ok(memberships);
                }
                let epoch = self.cache.memberships().epoch();
                let memberships = std::sync::Arc::new(Self::query_memberships(&self.pool, user_id, None).await?);
                self.cache.memberships().put(epoch, key, memberships.clone());
                Ok(memberships)
            }

            async fn query_memberships(
                pool: &sqlx::Pool<$db>,
                user_id: &UserId,
                at: Option<StreamPosition>,
            ) -> Result<Vec<Membership>, StorageError> {
                let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
                    "SELECT h.room_id, h.membership, h.event_id, h.stream_ordering \
                     FROM membership_history h \
                     WHERE h.user_id = $1 AND h.stream_ordering <= $2 \
                     AND h.stream_ordering = (SELECT MAX(l.stream_ordering) FROM membership_history l \
                         WHERE l.user_id = $1 AND l.room_id = h.room_id AND l.stream_ordering <= $2) \
                     AND NOT EXISTS (SELECT 1 FROM forgotten_rooms f \
                         WHERE f.user_id = $1 AND f.room_id = h.room_id) \
                     ORDER BY h.room_id",
                )
                .bind(user_id.as_str())
                .bind(at.map_or(i64::MAX, |at| at.0))
                .fetch_all(pool)
                .await?;
                rows.into_iter()
                    .map(|(room_id, membership, event_id, position)| {
                        Ok(Membership {
                            room_id: parse_id("membership_history", room_id)?,
                            membership,
                            event_id: parse_id("membership_history", event_id)?,
                            position: StreamPosition(position),
                        })
                    })
                    .collect()
            }
        }

        #[async_trait]
        impl RoomStore for $storage {
            async fn append_event_chains(
                &self,
                chains: &[Vec<NewEvent<'_>>],
            ) -> Result<Vec<ChainOutcome>, StorageError> {
                let outcomes = if let Some(outcomes) = self.write_plain_messages(chains).await? {
                    outcomes
                } else {
                    let mut conn = self.pool.acquire().await?;
                    // Optimistic: every chain without savepoints. A failing
                    // event (rare) undoes the whole transaction, and the
                    // batch is written again with a savepoint per chain.
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    let mut clean = true;
                    for chain in chains {
                        if Self::insert_chain(&mut tx, chain).await?.is_some() {
                            clean = false;
                            break;
                        }
                    }
                    if clean {
                        tx.commit().await?;
                        ChainOutcome::all_written(chains)
                    } else {
                        tx.rollback().await?;
                        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                        let mut outcomes = Vec::with_capacity(chains.len());
                        for chain in chains {
                            outcomes.push(Self::append_chain(&mut tx, chain).await?);
                        }
                        tx.commit().await?;
                        outcomes
                    }
                };
                for (chain, outcome) in chains.iter().zip(&outcomes) {
                    for event in &chain[..outcome.written] {
                        self.cache_committed(event);
                    }
                }
                Ok(outcomes)
            }

            async fn withhold_event(&self, event: &WithheldEvent<'_>) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                if let Some(group) = event.new_state_group {
                    Self::insert_state_group(&mut tx, event.state_group, event.room_id, group).await?;
                }
                let accepted: Option<(i64,)> =
                    sqlx::query_as("SELECT stream_ordering FROM events WHERE event_id = $1")
                        .bind(event.event_id.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                if accepted.is_some() {
                    return Err(StorageError::Conflict("event id"));
                }
                sqlx::query(
                    "INSERT INTO withheld_events \
                     (event_id, room_id, rejected, depth, state_group, json) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(event.event_id.as_str())
                .bind(event.room_id.as_str())
                .bind(event.is_rejected)
                .bind(event.depth)
                .bind(event.state_group)
                .bind(event.json)
                .execute(&mut *tx)
                .await
                .map_err(conflict_on_unique("event id"))?;
                tx.commit().await?;
                Ok(())
            }

            async fn dag_event(&self, event_id: &EventId) -> Result<Option<DagEvent>, StorageError> {
                // Not `event`: that answers with the room's state after an
                // event, this with the state after the event itself.
                let accepted: Option<(String, i64, String)> = sqlx::query_as(
                    "SELECT room_id, state_group, json FROM events WHERE event_id = $1",
                )
                .bind(event_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                if let Some((room_id, state_group, json)) = accepted {
                    return Ok(Some(DagEvent {
                        event_id: event_id.to_owned(),
                        room_id: parse_id("events", room_id)?,
                        json,
                        state_group,
                        status: EventStatus::Accepted,
                    }));
                }
                let row: Option<(String, bool, i64, String)> = sqlx::query_as(
                    "SELECT room_id, rejected, state_group, json FROM withheld_events \
                     WHERE event_id = $1",
                )
                .bind(event_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                if let Some((room_id, rejected, state_group, json)) = row {
                    return Ok(Some(DagEvent {
                        event_id: event_id.to_owned(),
                        room_id: parse_id("withheld_events", room_id)?,
                        json,
                        state_group,
                        status: if rejected { EventStatus::Rejected } else { EventStatus::SoftFailed },
                    }));
                }
                let outlier: Option<(String, i64, String)> = sqlx::query_as(
                    "SELECT room_id, state_group, json FROM outlier_events WHERE event_id = $1",
                )
                .bind(event_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                outlier
                    .map(|(room_id, state_group, json)| {
                        Ok(DagEvent {
                            event_id: event_id.to_owned(),
                            room_id: parse_id("outlier_events", room_id)?,
                            json,
                            state_group,
                            status: EventStatus::Outlier,
                        })
                    })
                    .transpose()
            }

            async fn room(&self, room_id: &RoomId) -> Result<Option<RoomRecord>, StorageError> {
                let row: Option<(String, bool)> =
                    sqlx::query_as("SELECT room_version, is_public FROM rooms WHERE room_id = $1")
                        .bind(room_id.as_str())
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|(room_version, is_public)| RoomRecord {
                    room_id: room_id.to_owned(),
                    room_version,
                    is_public,
                }))
            }

            async fn event(&self, event_id: &EventId) -> Result<Option<StoredEvent>, StorageError> {
                if let Some(event) = self.cache.event(event_id) {
                    return Ok(Some(event));
                }
                let row: Option<EventRow> = sqlx::query_as(
                    "SELECT stream_ordering, event_id, room_id, json, COALESCE(room_state_group, state_group) FROM events \
                     WHERE event_id = $1",
                )
                .bind(event_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                let event = row.map(stored_event).transpose()?;
                if let Some(event) = &event {
                    self.cache.put_event(event.clone());
                }
                Ok(event)
            }

            async fn state_group_entries(
                &self,
                state_group: i64,
            ) -> Result<Vec<StateEntry>, StorageError> {
                Ok(self.full_state_group(state_group).await?.as_ref().clone())
            }

            async fn room_head(&self, room_id: &RoomId) -> Result<Option<RoomHead>, StorageError> {
                let latest: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT COALESCE(room_state_group, state_group), \
                     (SELECT MAX(depth) FROM events WHERE room_id = $1) \
                     FROM events WHERE room_id = $1 ORDER BY stream_ordering DESC LIMIT 1",
                )
                .bind(room_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                let Some((state_group, depth)) = latest else { return Ok(None) };
                let (chain_length,): (i32,) = sqlx::query_as(
                    "SELECT chain_length FROM state_groups WHERE state_group = $1",
                )
                .bind(state_group)
                .fetch_one(&self.pool)
                .await?;
                let extremities: Vec<(String,)> = sqlx::query_as(
                    "SELECT event_id FROM forward_extremities WHERE room_id = $1 ORDER BY event_id",
                )
                .bind(room_id.as_str())
                .fetch_all(&self.pool)
                .await?;
                let forward_extremities = extremities
                    .into_iter()
                    .map(|(id,)| parse_id::<OwnedEventId>("forward_extremities", id))
                    .collect::<Result<_, _>>()?;
                Ok(Some(RoomHead { forward_extremities, depth, state_group, chain_length }))
            }

            async fn max_stream_position(&self) -> Result<StreamPosition, StorageError> {
                let (max,): (Option<i64>,) =
                    sqlx::query_as(
                        "SELECT MAX(m) FROM (SELECT MAX(stream_ordering) AS m FROM events \
                         UNION ALL SELECT MAX(stream_ordering) FROM account_data \
                         UNION ALL SELECT MAX(stream_ordering) FROM receipts \
                         UNION ALL SELECT MAX(stream_ordering) FROM device_list_changes \
                         UNION ALL SELECT MAX(stream_ordering) FROM presence \
                         UNION ALL SELECT MAX(position) FROM to_device_stream \
                         UNION ALL SELECT MAX(state_group) FROM state_groups) AS positions",
                    )
                        .fetch_one(&self.pool)
                        .await?;
                Ok(StreamPosition(max.unwrap_or(0)))
            }

            async fn transaction_event(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
                txn_key: &str,
            ) -> Result<Option<OwnedEventId>, StorageError> {
                let row: Option<(String,)> = sqlx::query_as(
                    "SELECT event_id FROM event_transactions \
                     WHERE user_id = $1 AND device_id = $2 AND txn_key = $3",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(txn_key)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|(id,)| parse_id("event_transactions", id)).transpose()
            }

            async fn memberships_of(
                &self,
                user_id: &UserId,
                at: Option<StreamPosition>,
            ) -> Result<Vec<Membership>, StorageError> {
                let latest = self.latest_memberships(user_id).await?;
                // The latest memberships are those as of `at` unless one
                // of them is newer (a change after `at` replaced one).
                if at.is_none_or(|at| latest.iter().all(|m| m.position <= at)) {
                    return Ok(latest.as_ref().clone());
                }
                Self::query_memberships(&self.pool, user_id, at).await
            }

            async fn forget_room(&self, user_id: &UserId, room_id: &RoomId) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) \
                     ON CONFLICT (user_id, room_id) DO NOTHING",
                )
                .bind(user_id.as_str())
                .bind(room_id.as_str())
                .execute(&self.pool)
                .await?;
                self.cache.memberships().forget(&user_id.to_owned());
                Ok(())
            }

            async fn room_events(
                &self,
                room_id: &RoomId,
                after: StreamPosition,
                upto: StreamPosition,
                limit: u32,
                newest_first: bool,
            ) -> Result<Vec<StoredEvent>, StorageError> {
                if let Some(events) = self.cache.recent().room_events(room_id, after, upto, limit, newest_first) {
                    return Ok(events);
                }
                let sql = if newest_first {
                    "SELECT stream_ordering, event_id, room_id, json, COALESCE(room_state_group, state_group) FROM events \
                     WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 \
                     ORDER BY stream_ordering DESC LIMIT $4"
                } else {
                    "SELECT stream_ordering, event_id, room_id, json, COALESCE(room_state_group, state_group) FROM events \
                     WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 \
                     ORDER BY stream_ordering ASC LIMIT $4"
                };
                let rows: Vec<EventRow> = sqlx::query_as(sql)
                    .bind(room_id.as_str())
                    .bind(after.0)
                    .bind(upto.0)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(stored_event).collect()
            }

            async fn latest_room_events(
                &self,
                room_ids: &[OwnedRoomId],
                upto: StreamPosition,
                limit: u32,
            ) -> Result<Vec<StoredEvent>, StorageError> {
                let mut events = Vec::new();
                for rooms in room_ids.chunks(ROOMS_PER_QUERY) {
                    // One indexed "newest first, limit" read per room, glued
                    // into one statement: one round trip for all of them.
                    let sql = (0..rooms.len())
                        .map(|i| {
                            format!(
                                "SELECT * FROM (SELECT stream_ordering, event_id, room_id, json, \
                                 COALESCE(room_state_group, state_group) FROM events WHERE room_id = ${} AND stream_ordering <= $1 \
                                 ORDER BY stream_ordering DESC LIMIT $2) AS room{i}",
                                i + 3
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" UNION ALL ");
                    let mut query = sqlx::query_as::<_, EventRow>(&sql)
                        .bind(upto.0)
                        .bind(i64::from(limit));
                    for room_id in rooms {
                        query = query.bind(room_id.as_str());
                    }
                    for row in query.fetch_all(&self.pool).await? {
                        events.push(stored_event(row)?);
                    }
                }
                Ok(events)
            }

            async fn rooms_with_events(
                &self,
                after: StreamPosition,
                upto: StreamPosition,
            ) -> Result<Vec<OwnedRoomId>, StorageError> {
                if let Some(rooms) = self.cache.recent().rooms_with_events(after, upto) {
                    return Ok(rooms);
                }
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT DISTINCT room_id FROM events \
                     WHERE stream_ordering > $1 AND stream_ordering <= $2",
                )
                .bind(after.0)
                .bind(upto.0)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(|(id,)| parse_id("events", id)).collect()
            }

            async fn state_events_between(
                &self,
                room_id: &RoomId,
                after: StreamPosition,
                before: StreamPosition,
            ) -> Result<Vec<StoredEvent>, StorageError> {
                let rows: Vec<EventRow> = sqlx::query_as(
                    "SELECT stream_ordering, event_id, room_id, json, COALESCE(room_state_group, state_group) FROM events \
                     WHERE room_id = $1 AND state_key IS NOT NULL \
                     AND stream_ordering > $2 AND stream_ordering < $3 ORDER BY stream_ordering",
                )
                .bind(room_id.as_str())
                .bind(after.0)
                .bind(before.0)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(stored_event).collect()
            }

            async fn state_group_before(
                &self,
                room_id: &RoomId,
                position: StreamPosition,
            ) -> Result<Option<i64>, StorageError> {
                if let Some(group) = self.cache.recent().state_group_before(room_id, position) {
                    return Ok(Some(group));
                }
                // Before a room's first event: nothing, or for a room
                // joined over federation the state before that join.
                let (group,): (Option<i64>,) = sqlx::query_as(
                    "SELECT COALESCE( \
                         (SELECT COALESCE(room_state_group, state_group) FROM events \
                          WHERE room_id = $1 AND stream_ordering < $2 \
                          ORDER BY stream_ordering DESC LIMIT 1), \
                         (SELECT state_group FROM imported_rooms WHERE room_id = $1))",
                )
                .bind(room_id.as_str())
                .bind(position.0)
                .fetch_one(&self.pool)
                .await?;
                Ok(group)
            }

            async fn state_group_entry(
                &self,
                state_group: i64,
                event_type: &str,
                state_key: &str,
            ) -> Result<Option<OwnedEventId>, StorageError> {
                let entries = self.full_state_group(state_group).await?;
                Ok(entries
                    .iter()
                    .find(|entry| entry.event_type == event_type && entry.state_key == state_key)
                    .map(|entry| entry.event_id.clone()))
            }

            async fn transaction_ids(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
                event_ids: &[OwnedEventId],
            ) -> Result<Vec<(OwnedEventId, String)>, StorageError> {
                let mut found = Vec::new();
                for event_id in event_ids {
                    let row: Option<(String,)> = sqlx::query_as(
                        "SELECT txn_id FROM events \
                         WHERE event_id = $1 AND sender = $2 AND txn_device_id = $3 \
                         AND txn_id IS NOT NULL",
                    )
                    .bind(event_id.as_str())
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                    if let Some((txn_id,)) = row {
                        found.push((event_id.clone(), txn_id));
                    }
                }
                Ok(found)
            }

            async fn create_filter(&self, user_id: &UserId, json: &str) -> Result<i64, StorageError> {
                // One statement: a read-then-write transaction can fail on
                // SQLite with "database is locked" when two run at once.
                let (filter_id,): (i64,) = sqlx::query_as(
                    "INSERT INTO sync_filters (user_id, filter_id, json) \
                     SELECT $1, COALESCE(MAX(filter_id), 0) + 1, $2 FROM sync_filters WHERE user_id = $1 \
                     RETURNING filter_id",
                )
                .bind(user_id.as_str())
                .bind(json)
                .fetch_one(&self.pool)
                .await
                .map_err(conflict_on_unique("filter id"))?;
                Ok(filter_id)
            }

            async fn filter_id_for(
                &self,
                user_id: &UserId,
                json: &str,
            ) -> Result<Option<i64>, StorageError> {
                let row: Option<(i64,)> = sqlx::query_as(
                    "SELECT filter_id FROM sync_filters WHERE user_id = $1 AND json = $2 \
                     ORDER BY filter_id LIMIT 1",
                )
                .bind(user_id.as_str())
                .bind(json)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(id,)| id))
            }

            async fn filter_count(&self, user_id: &UserId) -> Result<u64, StorageError> {
                let (count,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM sync_filters WHERE user_id = $1")
                        .bind(user_id.as_str())
                        .fetch_one(&self.pool)
                        .await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn filter(&self, user_id: &UserId, filter_id: i64) -> Result<Option<String>, StorageError> {
                if let Some(json) = self.cache.filter(user_id, filter_id) {
                    return Ok(Some(json));
                }
                let row: Option<(String,)> = sqlx::query_as(
                    "SELECT json FROM sync_filters WHERE user_id = $1 AND filter_id = $2",
                )
                .bind(user_id.as_str())
                .bind(filter_id)
                .fetch_optional(&self.pool)
                .await?;
                if let Some((json,)) = &row {
                    self.cache.put_filter(user_id, filter_id, json.clone());
                }
                Ok(row.map(|(json,)| json))
            }

            async fn create_alias(
                &self,
                alias: &RoomAliasId,
                room_id: &RoomId,
                creator: &UserId,
            ) -> Result<(), StorageError> {
                sqlx::query("INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)")
                    .bind(alias.as_str())
                    .bind(room_id.as_str())
                    .bind(creator.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(conflict_on_unique("alias"))?;
                Ok(())
            }

            async fn alias(
                &self,
                alias: &RoomAliasId,
            ) -> Result<Option<(OwnedRoomId, String)>, StorageError> {
                let row: Option<(String, String)> =
                    sqlx::query_as("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
                        .bind(alias.as_str())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(|(room_id, creator)| Ok((parse_id("room_aliases", room_id)?, creator)))
                    .transpose()
            }

            async fn delete_alias(&self, alias: &RoomAliasId) -> Result<(), StorageError> {
                let done = sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
                    .bind(alias.as_str())
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StorageError::NotFound("alias"));
                }
                Ok(())
            }

            async fn room_aliases(&self, room_id: &RoomId) -> Result<Vec<String>, StorageError> {
                let rows: Vec<(String,)> =
                    sqlx::query_as("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
                        .bind(room_id.as_str())
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|(alias,)| alias).collect())
            }

            async fn set_room_public(&self, room_id: &RoomId, is_public: bool) -> Result<(), StorageError> {
                let done = sqlx::query("UPDATE rooms SET is_public = $2 WHERE room_id = $1")
                    .bind(room_id.as_str())
                    .bind(is_public)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StorageError::NotFound("room"));
                }
                Ok(())
            }

            async fn public_rooms(&self) -> Result<Vec<OwnedRoomId>, StorageError> {
                let rows: Vec<(String,)> =
                    sqlx::query_as("SELECT room_id FROM rooms WHERE is_public ORDER BY room_id")
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(|(id,)| parse_id("rooms", id)).collect()
            }
        }
    };
}

sql_room_store!(SqliteStorage, sqlx::Sqlite);
sql_room_store!(PostgresStorage, sqlx::Postgres);

impl SqliteStorage {
    /// A batch of plain messages on the message writer's connection (see
    /// [`super::message_batch`]); `None` when it takes the general path.
    async fn write_plain_messages(
        &self,
        chains: &[Vec<NewEvent<'_>>],
    ) -> Result<Option<Vec<ChainOutcome>>, StorageError> {
        self.messages.try_write(chains)
    }
}

impl PostgresStorage {
    /// PostgreSQL's batches all take the general path: its driver has no
    /// thread hand-offs to save.
    async fn write_plain_messages(
        &self,
        _chains: &[Vec<NewEvent<'_>>],
    ) -> Result<Option<Vec<ChainOutcome>>, StorageError> {
        Ok(None)
    }
}
