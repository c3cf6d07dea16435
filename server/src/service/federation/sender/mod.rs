//! The outbound half of federation transactions: local PDUs and EDUs
//! reach the servers that must hear of them, in
//! `PUT /_matrix/federation/v1/send/{txnId}` (spec-notes/federation-sender.md).
//!
//! PDUs are read from the events table after each destination's persisted
//! cursor, never copied into a queue; EDUs wait in a table until their
//! destination acknowledges them (typing notifications, worthless after a
//! restart, wait in memory). So nothing acknowledged to a local client is
//! lost when a destination is down, nor when this server restarts.
//!
//! - [`dispatch`]: looks through committed local events for the servers
//!   they concern, gives a destination met for the first time its cursor,
//!   and wakes the destinations' senders;
//! - [`destination`]: one task per destination, one transaction in flight,
//!   retried with exponential backoff;
//! - [`edus`]: the EDUs local actions produce.

mod destination;
mod dispatch;
pub mod edus;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use ruma::{OwnedServerName, ServerName, UserId};
use serde_json::Value;
use tokio::sync::Notify;
use tracing::warn;

use super::{FederationClient, FederationError};
use crate::{
    service::{ServiceError, stream::Stream},
    storage::{Millis, Storage, StorageError, StreamPosition},
};

/// Most PDUs in one transaction (the spec's limit).
pub const MAX_PDUS_PER_TRANSACTION: usize = 50;

/// Most EDUs in one transaction (the spec's limit).
pub const MAX_EDUS_PER_TRANSACTION: usize = 100;

/// Most EDUs kept for one destination. Past it an EDU is not queued: a
/// to-device send is refused for that destination's recipients (the
/// client learns it), a device-list update is dropped (the gap in its
/// `prev_id` chain makes the destination fetch the list again), and
/// typing and receipts are ephemeral enough to lose.
pub const MAX_EDUS_PER_DESTINATION: u64 = 10_000;

/// Most typing notifications held in memory for one destination; the
/// oldest goes first.
const MAX_EPHEMERAL_PER_DESTINATION: usize = 100;

/// Sends one transaction to a destination. The real one is
/// [`FederationClient`]; tests record transactions and fail on demand.
#[async_trait]
pub trait TransactionSender: Send + Sync {
    /// `PUT /_matrix/federation/v1/send/{txn_id}` with `body` on `destination`.
    ///
    /// # Errors
    /// Whatever kept the destination from acknowledging it.
    async fn send_transaction(
        &self,
        destination: &ServerName,
        txn_id: &str,
        body: &Value,
    ) -> Result<(), FederationError>;
}

#[async_trait]
impl TransactionSender for FederationClient {
    async fn send_transaction(
        &self,
        destination: &ServerName,
        txn_id: &str,
        body: &Value,
    ) -> Result<(), FederationError> {
        self.put(
            destination,
            &format!("/_matrix/federation/v1/send/{txn_id}"),
            body,
        )
        .await
        .map(drop)
    }
}

/// How long a failing destination waits before the same transaction is
/// sent again: `initial`, doubling after each failure, at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The wait after the first failure.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures` failures in a row (at least one).
    fn delay(self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.initial
            .saturating_mul(2_u32.saturating_pow(doublings))
            .min(self.max)
    }
}

/// Sends local PDUs and EDUs to the servers that must hear of them.
#[derive(Clone)]
pub struct FederationSender {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FederationSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationSender")
            .field("server_name", &self.shared.server_name)
            .finish_non_exhaustive()
    }
}

/// What the dispatcher and the destination tasks share.
struct Shared {
    storage: Arc<dyn Storage>,
    stream: Arc<Stream>,
    server_name: OwnedServerName,
    transport: Arc<dyn TransactionSender>,
    backoff: Backoff,
    /// Transaction ids start with the time the process started, so an id
    /// is never reused for other content after a restart.
    txn_prefix: i64,
    queues: Mutex<Queues>,
}

/// The running destination tasks, once [`FederationSender::start`]ed.
#[derive(Default)]
struct Queues {
    is_started: bool,
    by_destination: HashMap<OwnedServerName, Arc<Queue>>,
    /// The dispatcher's and the destination tasks', for [`FederationSender::stop`].
    tasks: Vec<tokio::task::AbortHandle>,
}

/// A destination task's inbox.
#[derive(Default)]
struct Queue {
    /// Woken when there may be something new to send.
    wake: Notify,
    /// Typing notifications, never persisted.
    ephemeral: Mutex<Vec<Value>>,
}

impl FederationSender {
    /// The sender of `server_name`, sending through `transport`; nothing is
    /// sent before [`Self::start`], but EDUs queued meanwhile are kept.
    pub fn new(
        storage: Arc<dyn Storage>,
        stream: Arc<Stream>,
        server_name: OwnedServerName,
        transport: Arc<dyn TransactionSender>,
        backoff: Backoff,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                storage,
                stream,
                server_name,
                transport,
                backoff,
                txn_prefix: Millis::now().0,
                queues: Mutex::new(Queues::default()),
            }),
        }
    }

    /// Starts sending (on the current tokio runtime): a task per destination
    /// with work left from before, and the dispatcher that wakes them as
    /// local events commit.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn start(&self) -> Result<(), ServiceError> {
        let storage = &self.shared.storage;
        if storage.outbound_scan_position().await?.is_none() {
            // The very first start: sending begins with what commits after
            // it, and that is recorded before this returns, so a crash
            // cannot move the beginning past an event committed since.
            storage
                .record_outbound_scan(&[], self.shared.stream.current())
                .await?;
        }
        // Started before the dispatcher runs: the destinations it wakes
        // at once get their tasks.
        let mut queues = lock(&self.shared.queues);
        queues.is_started = true;
        let dispatcher = tokio::spawn(dispatch::run(self.shared.clone()));
        queues.tasks.push(dispatcher.abort_handle());
        Ok(())
    }

    /// Stops every task at once, as a crash would: what was not
    /// acknowledged is sent after the next start.
    pub fn stop(&self) {
        let mut queues = lock(&self.shared.queues);
        queues.is_started = false;
        queues.by_destination.clear();
        for task in queues.tasks.drain(..) {
            task.abort();
        }
    }

    /// This server's name.
    pub fn server_name(&self) -> &ServerName {
        &self.shared.server_name
    }

    /// Queues EDUs, each for its destination, until each destination
    /// acknowledges it; EDUs for this server itself are skipped. Returns
    /// the destinations that have [`MAX_EDUS_PER_DESTINATION`] waiting
    /// already, whose EDU was not queued.
    ///
    /// # Errors
    /// Storage failures (nothing is queued then).
    pub async fn queue_edus(
        &self,
        edus: Vec<(OwnedServerName, Value)>,
    ) -> Result<Vec<OwnedServerName>, ServiceError> {
        let edus: Vec<(OwnedServerName, String)> = edus
            .into_iter()
            .filter(|(destination, _)| *destination != self.shared.server_name)
            .map(|(destination, edu)| (destination, edu.to_string()))
            .collect();
        if edus.is_empty() {
            return Ok(Vec::new());
        }
        let full = self
            .shared
            .storage
            .queue_outbound_edus(&edus, MAX_EDUS_PER_DESTINATION)
            .await?;
        if !full.is_empty() {
            warn!(destinations = full.len(), "federation EDU queues full");
        }
        let woken: BTreeSet<&OwnedServerName> = edus
            .iter()
            .map(|(destination, _)| destination)
            .filter(|destination| !full.contains(destination))
            .collect();
        for destination in woken {
            self.shared.wake(destination);
        }
        Ok(full)
    }

    /// Holds an EDU in memory for each of `destinations` until it goes out
    /// (typing notifications, which a restart makes stale anyway).
    pub fn queue_ephemeral(&self, destinations: &BTreeSet<OwnedServerName>, edu: &Value) {
        for destination in destinations {
            if *destination == self.shared.server_name {
                continue;
            }
            let queue = self.shared.queue(destination);
            {
                let mut ephemeral = lock(&queue.ephemeral);
                if ephemeral.len() >= MAX_EPHEMERAL_PER_DESTINATION {
                    ephemeral.remove(0);
                }
                ephemeral.push(edu.clone());
            }
            queue.wake.notify_one();
        }
    }

    /// The servers other than this one among `users`'.
    pub fn other_servers<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
    ) -> BTreeSet<OwnedServerName> {
        users
            .into_iter()
            .map(UserId::server_name)
            .filter(|server| *server != self.shared.server_name)
            .map(ToOwned::to_owned)
            .collect()
    }
}

impl Shared {
    /// The queue of `destination`, its task started if need be.
    fn queue(self: &Arc<Self>, destination: &ServerName) -> Arc<Queue> {
        let mut queues = lock(&self.queues);
        if let Some(queue) = queues.by_destination.get(destination) {
            return queue.clone();
        }
        let queue = Arc::new(Queue::default());
        if queues.is_started {
            queues
                .by_destination
                .insert(destination.to_owned(), queue.clone());
            let task = tokio::spawn(destination::run(
                self.clone(),
                destination.to_owned(),
                queue.clone(),
            ));
            queues.tasks.push(task.abort_handle());
        }
        queue
    }

    /// Tells `destination`'s task there may be something to send.
    fn wake(self: &Arc<Self>, destination: &ServerName) {
        self.queue(destination).wake.notify_one();
    }

    /// The servers, other than this one, of the users joined to `room_id`
    /// as of `at`.
    async fn room_servers(
        &self,
        room_id: &ruma::RoomId,
        at: StreamPosition,
    ) -> Result<BTreeSet<OwnedServerName>, StorageError> {
        let members = self.storage.joined_members_at(room_id, at).await?;
        Ok(members
            .iter()
            .map(|user| user.server_name())
            .filter(|server| *server != self.server_name)
            .map(ToOwned::to_owned)
            .collect())
    }
}

impl Shared {
    /// The content of the room's `m.room.server_acl` as of the event at
    /// `at`, if it has one.
    async fn server_acl(
        &self,
        room_id: &ruma::RoomId,
        at: StreamPosition,
    ) -> Result<Option<Value>, StorageError> {
        let after = StreamPosition(at.0 + 1);
        let Some(group) = self.storage.state_group_before(room_id, after).await? else {
            return Ok(None);
        };
        let Some(event_id) = self
            .storage
            .state_group_entry(group, "m.room.server_acl", "")
            .await?
        else {
            return Ok(None);
        };
        let Some(event) = self.storage.event(&event_id).await? else {
            return Ok(None);
        };
        let json: Value = serde_json::from_str(&event.json).unwrap_or(Value::Null);
        Ok(json.get("content").cloned())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data is still whole.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
