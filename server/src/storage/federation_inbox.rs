//! What the federation receiver keeps: the answers of transactions
//! received, so a retried transaction is answered without being processed
//! again (the to-device message ids received go with the to-device store).

use async_trait::async_trait;
use ruma::ServerName;

use super::{Millis, StorageError};

/// What the federation receiver persists.
#[async_trait]
pub trait FederationInboxStore: Send + Sync {
    /// The stored answer (JSON text) of `origin`'s transaction `txn_id`.
    async fn transaction_answer(
        &self,
        origin: &ServerName,
        txn_id: &str,
    ) -> Result<Option<String>, StorageError>;

    /// Stores the answer of a processed transaction (a second answer for
    /// the same id leaves the first).
    async fn store_transaction_answer(
        &self,
        origin: &ServerName,
        txn_id: &str,
        answer: &str,
        received: Millis,
    ) -> Result<(), StorageError>;

    /// Forgets transaction answers and to-device message ids received
    /// before `before`.
    async fn prune_federation_inbox(&self, before: Millis) -> Result<(), StorageError>;
}
