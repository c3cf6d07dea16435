//! SQLite's fast path for a batch of plain message events: the whole
//! transaction (every event, its transaction id, each room's new
//! extremity) written with cached prepared statements on a connection of
//! its own, on the calling thread.
//!
//! sqlx runs each SQLite connection on a thread of its own and hands every
//! statement, and every statement's result, between that thread and the
//! async task. On a two-core virtual machine a hand-off to a thread that
//! had gone idle costs well over 100 µs: a lone message's commit took
//! 0.76 ms through sqlx against 0.35 ms for SQLite itself, and 0.50 ms
//! here (spec-notes/write-path.md). PostgreSQL takes the general path.
//!
//! Only batches of plain messages qualify (no state, membership, room
//! creation or redaction); the general path writes the rest. If any
//! statement fails (a retried transaction's uniqueness conflict, mostly),
//! the transaction is rolled back and the caller writes the batch again on
//! the general path, which finds and reports the failing event.

use std::{path::Path, sync::Mutex, time::Duration};

use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::SQLITE_CACHE_KIB;
use crate::storage::{ChainOutcome, NewEvent, StorageError};

/// The message writer's connection; `None` once closed.
#[derive(Debug)]
pub(super) struct MessageWriter(Mutex<Option<Connection>>);

impl MessageWriter {
    /// Opens a connection to the database at `path` (created and migrated
    /// already).
    ///
    /// # Errors
    /// When the connection cannot be opened or configured.
    pub(super) fn open(path: &Path) -> Result<Self, StorageError> {
        let connection = Connection::open(path)?;
        // Per-connection settings, as the sqlx pool sets them.
        connection.busy_timeout(Duration::from_secs(10))?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", true)?;
        connection.pragma_update(None, "cache_size", -i64::from(SQLITE_CACHE_KIB))?;
        connection.pragma_update(None, "temp_store", "memory")?;
        Ok(Self(Mutex::new(Some(connection))))
    }

    /// Writes `chains` in one transaction if they qualify. `Ok(None)`:
    /// they did not qualify or a statement failed and nothing was written.
    /// Blocks the calling thread for the commit (see [`blocking`]).
    ///
    /// # Errors
    /// When the commit itself failed (nothing was written then either).
    pub(super) fn try_write(
        &self,
        chains: &[Vec<NewEvent<'_>>],
    ) -> Result<Option<Vec<ChainOutcome>>, StorageError> {
        if chains.iter().all(Vec::is_empty) || !chains.iter().flatten().all(is_plain_message) {
            return Ok(None);
        }
        let written = blocking(|| {
            let mut connection = self.lock();
            let connection = connection
                .as_mut()
                .ok_or_else(|| StorageError::Io(std::io::Error::other("the storage is closed")))?;
            Ok::<_, StorageError>(write(connection, chains)?)
        })?;
        Ok(written.then(|| ChainOutcome::all_written(chains)))
    }

    /// Closes the connection.
    pub(super) fn close(&self) {
        self.lock().take();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        // A poisoned lock only means a panic elsewhere; a rolled-back
        // transaction leaves the connection usable.
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Runs `work`, which blocks, on the calling thread: on a multi-threaded
/// runtime the worker first hands its other tasks to another thread; a
/// current-thread runtime (as in tests) waits for it.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match Handle::try_current().map(|runtime| runtime.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

fn is_plain_message(event: &NewEvent<'_>) -> bool {
    event.state_key.is_none()
        && event.creates_room_version.is_none()
        && event.new_state_group.is_none()
        && event.membership.is_none()
        && event.redaction.is_none()
        && event.room_state.is_none()
}

/// `Ok(false)` when a statement failed and the transaction was rolled back.
fn write(
    connection: &mut Connection,
    chains: &[Vec<NewEvent<'_>>],
) -> Result<bool, rusqlite::Error> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if insert(&transaction, chains).is_err() {
        transaction.rollback()?;
        return Ok(false);
    }
    transaction.commit()?;
    Ok(true)
}

fn insert(
    transaction: &Transaction<'_>,
    chains: &[Vec<NewEvent<'_>>],
) -> Result<(), rusqlite::Error> {
    let mut insert_event = transaction.prepare_cached(
        "INSERT INTO events (stream_ordering, event_id, room_id, event_type, sender, depth, \
         state_group, json, txn_device_id, txn_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let mut insert_transaction = transaction.prepare_cached(
        "INSERT INTO event_transactions (user_id, device_id, txn_key, event_id) \
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut clear_extremities =
        transaction.prepare_cached("DELETE FROM forward_extremities WHERE room_id = ?1")?;
    let mut insert_extremity = transaction
        .prepare_cached("INSERT INTO forward_extremities (room_id, event_id) VALUES (?1, ?2)")?;
    for chain in chains {
        for event in chain {
            let transaction = event.transaction.as_ref();
            insert_event.execute(params![
                event.position.0,
                event.event_id.as_str(),
                event.room_id.as_str(),
                event.event_type,
                event.sender.as_str(),
                event.depth,
                event.state_group,
                event.json,
                transaction.map(|t| t.device_id.as_str()),
                transaction.map(|t| t.txn_id),
            ])?;
            if let Some(t) = transaction {
                insert_transaction.execute(params![
                    t.user_id.as_str(),
                    t.device_id.as_str(),
                    t.key,
                    event.event_id.as_str(),
                ])?;
            }
        }
        // The chain's last event leaves the room's extremities.
        if let Some(last) = chain.last() {
            clear_extremities.execute([last.room_id.as_str()])?;
            for event_id in last.forward_extremities {
                insert_extremity.execute([last.room_id.as_str(), event_id.as_str()])?;
            }
        }
    }
    Ok(())
}
