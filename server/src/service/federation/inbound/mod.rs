//! What other servers send and ask: transactions of PDUs and EDUs received
//! (`PUT /send/{txnId}`), and the reads of a room's DAG they make
//! (`/event`, `/state`, `/state_ids`, `/event_auth`, `/backfill`,
//! `/get_missing_events`). See spec-notes/federation.md.
//!
//! - [`pdus`]: each PDU checked ([`check_pdu`](super::pdu_check::check_pdu))
//!   and handed to the room write path, missing prev and auth events fetched
//!   from the origin first;
//! - [`edus`]: typing, receipts, to-device messages and device-list changes;
//! - [`reads`]: the DAG reads, for servers with a user in the room.
//!
//! A transaction's answer is stored under `(origin, txnId)`, so a retried
//! one gets the same answer without being processed again; one origin's
//! transactions are processed one at a time.

mod edus;
mod pdus;
mod reads;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
};

use ruma::{OwnedServerName, RoomId, ServerName, events::StateEventType};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, warn};

pub use reads::{Backfill, MAX_BACKFILL, MissingEventsRequest, StateAt};

use super::{Clock, Federation};
use crate::{
    service::{
        ServiceError,
        account_data::AccountData,
        e2ee::device_lists::DeviceLists,
        room_events::{RoomEvents, RoomState},
        rooms::server_acl::is_server_allowed,
        to_device::ToDevice,
        typing::Typing,
    },
    storage::{Millis, Storage},
};

/// Most PDUs in one transaction (the spec's limit).
pub const MAX_PDUS: usize = 50;

/// Most EDUs in one transaction (the spec's limit).
pub const MAX_EDUS: usize = 100;

/// Longest transaction id accepted, in bytes.
const MAX_TXN_ID_BYTES: usize = 255;

/// How long a transaction's answer (and a to-device message id) is kept:
/// a sender retries within minutes, not days.
const KEEP_RECEIPTS_MS: i64 = 24 * 60 * 60 * 1000;

/// Least time between two prunings of stored answers.
const PRUNE_INTERVAL_MS: i64 = 60 * 1000;

/// A transaction as another server sends it.
#[derive(Debug, Deserialize)]
pub struct Transaction {
    /// The server that sent it; must be the one that signed the request.
    /// (`origin_server_ts` is not read: each PDU carries its own time.)
    pub origin: String,
    /// Up to [`MAX_PDUS`] PDUs, each checked on its own.
    #[serde(default)]
    pub pdus: Vec<Value>,
    /// Up to [`MAX_EDUS`] EDUs; malformed ones are skipped.
    #[serde(default)]
    pub edus: Vec<Value>,
}

/// The services the receiver hands events and EDUs to.
#[derive(Debug)]
pub struct InboundServices {
    /// The room write path.
    pub events: Arc<RoomEvents>,
    /// Keys of other servers and the outbound client.
    pub federation: Arc<Federation>,
    /// Typing notifications.
    pub typing: Arc<Typing>,
    /// Read receipts.
    pub account_data: Arc<AccountData>,
    /// To-device inboxes.
    pub to_device: Arc<ToDevice>,
    /// Device-list changes.
    pub device_lists: Arc<DeviceLists>,
}

/// The receiving side of federation.
pub struct Inbound {
    storage: Arc<dyn Storage>,
    services: InboundServices,
    clock: Clock,
    /// One lock per origin with a transaction in progress.
    origins: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
    last_prune: AtomicI64,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound").finish_non_exhaustive()
    }
}

impl Inbound {
    /// Builds the receiver.
    pub fn new(storage: Arc<dyn Storage>, services: InboundServices, clock: Clock) -> Self {
        Self {
            storage,
            services,
            clock,
            origins: Mutex::new(HashMap::new()),
            last_prune: AtomicI64::new(0),
        }
    }

    /// Processes a transaction from `origin` (who signed the request) and
    /// returns its answer, `{pdus: {event_id: {} | {error}}}`; a transaction
    /// id seen before from the same origin gets the stored answer.
    ///
    /// # Errors
    /// `Forbidden` when the body names another origin; `InvalidParam` for a
    /// bad transaction id or more PDUs or EDUs than the spec allows;
    /// storage failures.
    pub async fn receive_transaction(
        &self,
        origin: &ServerName,
        txn_id: &str,
        transaction: Transaction,
    ) -> Result<Value, ServiceError> {
        if transaction.origin != origin.as_str() {
            return Err(ServiceError::Forbidden(
                "the transaction's origin is not the server that signed the request".to_owned(),
            ));
        }
        if txn_id.is_empty() || txn_id.len() > MAX_TXN_ID_BYTES || txn_id.contains('\0') {
            return Err(ServiceError::InvalidParam(format!(
                "the transaction id must be 1 to {MAX_TXN_ID_BYTES} bytes without NUL"
            )));
        }
        if transaction.pdus.len() > MAX_PDUS || transaction.edus.len() > MAX_EDUS {
            return Err(ServiceError::InvalidParam(format!(
                "a transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
            )));
        }
        let lock = self.origin_lock(origin);
        let answer = {
            let _one_at_a_time = lock.lock().await;
            self.process_once(origin, txn_id, transaction).await
        };
        drop(lock);
        self.release_origin_lock(origin);
        answer
    }

    async fn process_once(
        &self,
        origin: &ServerName,
        txn_id: &str,
        transaction: Transaction,
    ) -> Result<Value, ServiceError> {
        if let Some(answer) = self.storage.transaction_answer(origin, txn_id).await? {
            debug!(%origin, "transaction retried; answered as before");
            return serde_json::from_str(&answer).map_err(|e| {
                ServiceError::Internal(format!("stored transaction answer is invalid: {e}"))
            });
        }
        let mut budget = pdus::FetchBudget::default();
        let mut results = BTreeMap::new();
        for pdu in transaction.pdus {
            if let Some((event_id, outcome)) = self.receive_pdu(origin, pdu, &mut budget).await {
                let entry = match outcome {
                    Ok(()) => json!({}),
                    Err(error) => json!({ "error": error }),
                };
                results.insert(event_id.to_string(), entry);
            }
        }
        for edu in transaction.edus {
            self.receive_edu(origin, edu).await;
        }
        let answer = json!({ "pdus": results });
        let now = (self.clock)();
        self.storage
            .store_transaction_answer(origin, txn_id, &answer.to_string(), now)
            .await?;
        self.prune(now).await;
        Ok(answer)
    }

    /// Forgets answers and to-device message ids older than a day, at most
    /// once a minute.
    async fn prune(&self, now: Millis) {
        let last = self.last_prune.load(Ordering::Acquire);
        if now.0 - last < PRUNE_INTERVAL_MS
            || self
                .last_prune
                .compare_exchange(last, now.0, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        if let Err(error) = self
            .storage
            .prune_federation_inbox(Millis(now.0 - KEEP_RECEIPTS_MS))
            .await
        {
            warn!(%error, "pruning received transactions failed");
        }
    }

    fn origin_lock(&self, origin: &ServerName) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.origins)
            .entry(origin.to_owned())
            .or_default()
            .clone()
    }

    /// Drops the origin's lock when nobody else holds or waits for it, so
    /// the map holds only origins with a transaction in progress.
    fn release_origin_lock(&self, origin: &ServerName) {
        let mut origins = lock(&self.origins);
        if origins
            .get(origin)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            origins.remove(origin);
        }
    }
}

/// Whether the room's server ACL (if any) lets `server` take part.
pub fn acl_allows(state: &RoomState, server: &ServerName) -> bool {
    let Some(acl) = state.get(&StateEventType::RoomServerAcl, "") else {
        return true;
    };
    let content: Value = serde_json::from_str(acl.content().get()).unwrap_or(Value::Null);
    is_server_allowed(&content, server)
}

impl Inbound {
    /// Whether the room is known here and `check` holds of its current state.
    async fn room_allows(
        &self,
        room_id: &RoomId,
        check: impl FnOnce(&RoomState) -> bool,
    ) -> Result<bool, ServiceError> {
        Ok(self.services.events.read_state(room_id, check).await? == Some(true))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; what it guards is still whole.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
