//! SQLite's fast path for a batch of plain message events: the whole
//! transaction (begin, every event, its transaction id, each room's new
//! extremity, commit) as one multi-statement query, so one hand-off to
//! SQLite's connection thread instead of several per event.
//!
//! sqlx runs each SQLite connection on a thread of its own; every statement
//! is a round trip to that thread, and on a busy two-core machine the round
//! trips, not SQLite, were most of a lone send's commit time. PostgreSQL's
//! protocol allows no bound parameters in a multi-statement query, so this
//! is SQLite's alone; PostgreSQL takes the general path.
//!
//! Only batches of plain messages qualify (no state, membership, room
//! creation or redaction); the general path writes the rest. If any
//! statement fails (a retried transaction's uniqueness conflict, mostly),
//! the transaction is rolled back and the caller writes the batch again on
//! the general path, which finds and reports the failing event.

use sqlx::{Sqlite, pool::PoolConnection, query::Query, sqlite::SqliteArguments};

use crate::storage::{ChainOutcome, NewEvent, StorageError};

/// Most events written by one query: each binds up to fifteen values, well
/// below SQLite's limit on bound parameters.
const MAX_EVENTS: usize = 512;

/// Writes `chains` in one query if they qualify. `Ok(None)`: they did not
/// qualify or the write failed and was rolled back; nothing was written.
///
/// # Errors
/// Only when the rollback after a failure fails: the connection's state is
/// then unknown.
pub(super) async fn try_write(
    conn: &mut PoolConnection<Sqlite>,
    chains: &[Vec<NewEvent<'_>>],
) -> Result<Option<Vec<ChainOutcome>>, StorageError> {
    let events = chains.iter().map(Vec::len).sum::<usize>();
    if events == 0 || events > MAX_EVENTS || !chains.iter().flatten().all(is_plain_message) {
        return Ok(None);
    }
    let mut batch = Batch::default();
    for chain in chains {
        batch.chain(chain);
    }
    let sql = batch.sql();
    let mut query = sqlx::query(&sql);
    for value in batch.values {
        query = value.bind(query);
    }
    match query.execute(&mut **conn).await {
        Ok(_) => Ok(Some(ChainOutcome::all_written(chains))),
        Err(_) => {
            // The failing statement ended the query; its transaction is
            // still open unless BEGIN itself failed.
            if let Err(error) = sqlx::query("ROLLBACK").execute(&mut **conn).await {
                let no_transaction = matches!(&error, sqlx::Error::Database(db)
                    if db.message().contains("no transaction is active"));
                if !no_transaction {
                    return Err(error.into());
                }
            }
            Ok(None)
        }
    }
}

fn is_plain_message(event: &NewEvent<'_>) -> bool {
    event.state_key.is_none()
        && event.creates_room_version.is_none()
        && event.new_state_group.is_none()
        && event.membership.is_none()
        && event.redaction.is_none()
}

/// A value to bind, in order.
enum Value<'a> {
    Int(i64),
    Text(&'a str),
    OptionalText(Option<&'a str>),
}

impl<'a> Value<'a> {
    fn bind(
        self,
        query: Query<'a, Sqlite, SqliteArguments<'a>>,
    ) -> Query<'a, Sqlite, SqliteArguments<'a>> {
        match self {
            Value::Int(value) => query.bind(value),
            Value::Text(value) => query.bind(value),
            Value::OptionalText(value) => query.bind(value),
        }
    }
}

/// The rows of the three statements, as `($n, …)` tuples over `values`.
#[derive(Default)]
struct Batch<'a> {
    values: Vec<Value<'a>>,
    events: Vec<String>,
    transactions: Vec<String>,
    extremity_rooms: Vec<String>,
    extremities: Vec<String>,
}

impl<'a> Batch<'a> {
    /// Binds `value` and returns its parameter, `$n`.
    fn param(&mut self, value: Value<'a>) -> String {
        self.values.push(value);
        format!("${}", self.values.len())
    }

    fn chain(&mut self, chain: &[NewEvent<'a>]) {
        let mut last = None;
        for event in chain {
            let event_id = self.param(Value::Text(event.event_id.as_str()));
            let room_id = self.param(Value::Text(event.room_id.as_str()));
            let row = [
                self.param(Value::Int(event.position.0)),
                event_id.clone(),
                room_id.clone(),
                self.param(Value::Text(event.event_type)),
                self.param(Value::OptionalText(event.state_key)),
                self.param(Value::Text(event.sender.as_str())),
                self.param(Value::Int(event.depth)),
                self.param(Value::Int(event.state_group)),
                self.param(Value::Text(event.json)),
            ];
            self.events.push(format!("({})", row.join(", ")));
            if let Some(transaction) = &event.transaction {
                let row = [
                    self.param(Value::Text(transaction.user_id.as_str())),
                    self.param(Value::Text(transaction.device_id.as_str())),
                    self.param(Value::Text(transaction.key)),
                    self.param(Value::Text(transaction.txn_id)),
                    event_id,
                ];
                self.transactions.push(format!("({})", row.join(", ")));
            }
            last = Some((event, room_id));
        }
        if let Some((event, room_id)) = last {
            for extremity in event.forward_extremities {
                let extremity = self.param(Value::Text(extremity.as_str()));
                self.extremities.push(format!("({room_id}, {extremity})"));
            }
            self.extremity_rooms.push(room_id);
        }
    }

    fn sql(&self) -> String {
        let mut sql = format!(
            "BEGIN; INSERT INTO events (stream_ordering, event_id, room_id, event_type, \
             state_key, sender, depth, state_group, json) VALUES {};",
            self.events.join(", ")
        );
        if !self.transactions.is_empty() {
            sql.push_str(&format!(
                " INSERT INTO event_transactions (user_id, device_id, txn_key, txn_id, event_id) \
                 VALUES {};",
                self.transactions.join(", ")
            ));
        }
        sql.push_str(&format!(
            " DELETE FROM forward_extremities WHERE room_id IN ({});",
            self.extremity_rooms.join(", ")
        ));
        if !self.extremities.is_empty() {
            sql.push_str(&format!(
                " INSERT INTO forward_extremities (room_id, event_id) VALUES {};",
                self.extremities.join(", ")
            ));
        }
        sql.push_str(" COMMIT;");
        sql
    }
}
