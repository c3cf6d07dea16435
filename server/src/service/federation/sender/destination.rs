//! One destination's task: builds a transaction from the local events
//! after its cursor and the EDUs waiting for it, sends it until the
//! destination acknowledges it (the same transaction, with the same id,
//! after each failure, waiting longer each time), then moves the cursor
//! and deletes the EDUs, in one storage transaction.

use std::sync::Arc;

use ruma::{OwnedServerName, ServerName};
use serde_json::{Value, json};
use tracing::{debug, warn};

use super::{
    MAX_EDUS_PER_TRANSACTION, MAX_PDUS_PER_TRANSACTION, Queue, Shared,
    dispatch::{Concerned, PAGE, page_end},
    lock,
};
use crate::{
    service::federation::FederationError,
    storage::{Millis, StorageError, StreamPosition},
};

/// What one transaction carries, and what its acknowledgement settles.
struct Transaction {
    pdus: Vec<Value>,
    edus: Vec<Value>,
    /// The cursor once acknowledged: the last local event looked at.
    cursor: Option<StreamPosition>,
    /// The last persisted EDU it carries.
    edus_upto: Option<i64>,
}

impl Transaction {
    fn is_empty(&self) -> bool {
        self.pdus.is_empty() && self.edus.is_empty()
    }
}

/// Runs `destination`'s task until the process ends.
pub(super) async fn run(shared: Arc<Shared>, destination: OwnedServerName, queue: Arc<Queue>) {
    let mut sent = 0_u64;
    let mut cursor = None;
    loop {
        match next_transaction(&shared, &destination, &queue, &mut cursor).await {
            Ok(None) => queue.wake.notified().await,
            Ok(Some(transaction)) => {
                sent += 1;
                let txn_id = format!("{}-{sent}", shared.txn_prefix);
                deliver(&shared, &destination, &txn_id, &transaction).await;
                if let Err(error) = shared
                    .storage
                    .acknowledge_outbound(&destination, transaction.cursor, transaction.edus_upto)
                    .await
                {
                    // What was sent goes again; the destination drops
                    // events and to-device messages it has already.
                    warn!(%destination, %error, "cannot record a federation acknowledgement");
                    cursor = None;
                    tokio::time::sleep(shared.backoff.initial).await;
                    continue;
                }
                cursor = transaction.cursor;
            }
            Err(error) => {
                warn!(%destination, %error, "cannot read what to send");
                tokio::time::sleep(shared.backoff.initial).await;
            }
        }
    }
}

/// The next transaction for `destination`, `None` when there is nothing to
/// send. `cursor` is the task's copy of the stored cursor (`None`: read it).
async fn next_transaction(
    shared: &Shared,
    destination: &ServerName,
    queue: &Queue,
    cursor: &mut Option<StreamPosition>,
) -> Result<Option<Transaction>, StorageError> {
    if cursor.is_none() {
        *cursor = shared.storage.outbound_cursor(destination).await?;
    }
    let (pdus, scanned) = match *cursor {
        Some(after) => {
            let (pdus, scanned) = pdus_after(shared, destination, after).await?;
            (pdus, Some(scanned))
        }
        None => (Vec::new(), None),
    };
    let limit = u32::try_from(MAX_EDUS_PER_TRANSACTION).unwrap_or(u32::MAX);
    let stored = shared.storage.outbound_edus(destination, limit).await?;
    let edus_upto = stored.last().map(|edu| edu.id);
    let mut edus: Vec<Value> = stored
        .into_iter()
        .filter_map(|edu| serde_json::from_str(&edu.json).ok())
        .collect();
    {
        let mut ephemeral = lock(&queue.ephemeral);
        let room = MAX_EDUS_PER_TRANSACTION.saturating_sub(edus.len());
        let taken = room.min(ephemeral.len());
        edus.extend(ephemeral.drain(..taken));
    }
    let transaction = Transaction {
        pdus,
        edus,
        cursor: scanned,
        edus_upto,
    };
    if transaction.is_empty() {
        // Nothing here concerned the destination: remember how far that
        // goes, so it is not looked through again.
        if scanned > *cursor {
            shared
                .storage
                .acknowledge_outbound(destination, scanned, None)
                .await?;
            *cursor = scanned;
        }
        return Ok(None);
    }
    Ok(Some(transaction))
}

/// The local events after `after` that concern `destination`, at most a
/// transaction's worth, and the position looked up to.
async fn pdus_after(
    shared: &Shared,
    destination: &ServerName,
    after: StreamPosition,
) -> Result<(Vec<Value>, StreamPosition), StorageError> {
    let upto = shared.stream.current();
    let mut scanned = after;
    let mut pdus = Vec::new();
    let mut concerned = Concerned::default();
    while scanned < upto && pdus.len() < MAX_PDUS_PER_TRANSACTION {
        let events = shared
            .storage
            .events_to_send(&shared.server_name, scanned, upto, PAGE)
            .await?;
        scanned = page_end(&events, upto);
        for event in &events {
            if !concerned.see(shared, event)
                || !concerned
                    .servers(shared, event)
                    .await?
                    .contains(destination)
            {
                continue;
            }
            match serde_json::from_str(&event.json) {
                Ok(pdu) => pdus.push(pdu),
                Err(error) => warn!(%error, "a stored event is not JSON; not sent"),
            }
            if pdus.len() == MAX_PDUS_PER_TRANSACTION {
                scanned = event.position;
                break;
            }
        }
    }
    Ok((pdus, scanned))
}

/// Sends `transaction` until `destination` acknowledges it, or refuses it
/// for good.
async fn deliver(
    shared: &Shared,
    destination: &ServerName,
    txn_id: &str,
    transaction: &Transaction,
) {
    let body = json!({
        "origin": shared.server_name,
        "origin_server_ts": Millis::now().0,
        "pdus": transaction.pdus,
        "edus": transaction.edus,
    });
    let mut failures = 0_u32;
    loop {
        match shared
            .transport
            .send_transaction(destination, txn_id, &body)
            .await
        {
            Ok(()) => {
                debug!(%destination, txn_id, pdus = transaction.pdus.len(),
                    edus = transaction.edus.len(), "transaction sent");
                return;
            }
            Err(error) if is_refusal(&error) => {
                // Sending it again would be refused again, and hold back
                // everything after it.
                warn!(%destination, txn_id, %error, "transaction refused; dropped");
                return;
            }
            Err(error) => {
                failures += 1;
                let delay = shared.backoff.delay(failures);
                debug!(%destination, txn_id, %error, failures, ?delay, "transaction failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Whether the destination answered that it will never take this
/// transaction (a malformed request, or one it forbids), rather than that
/// it cannot now.
fn is_refusal(error: &FederationError) -> bool {
    match error {
        FederationError::Remote { status, .. } => matches!(status, 400 | 403 | 413),
        FederationError::InvalidRequest(_) => true,
        _ => false,
    }
}
