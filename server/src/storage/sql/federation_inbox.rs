//! [`FederationInboxStore`] in SQL.

use async_trait::async_trait;
use ruma::ServerName;

use super::{PostgresStorage, SqliteStorage};
use crate::storage::{FederationInboxStore, Millis, StorageError};

macro_rules! sql_federation_inbox_store {
    ($storage:ty) => {
        #[async_trait]
        impl FederationInboxStore for $storage {
            async fn transaction_answer(
                &self,
                origin: &ServerName,
                txn_id: &str,
            ) -> Result<Option<String>, StorageError> {
                let row: Option<(String,)> = sqlx::query_as(
                    "SELECT answer FROM federation_transactions \
                     WHERE origin = $1 AND txn_id = $2",
                )
                .bind(origin.as_str())
                .bind(txn_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(answer,)| answer))
            }

            async fn store_transaction_answer(
                &self,
                origin: &ServerName,
                txn_id: &str,
                answer: &str,
                received: Millis,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO federation_transactions (origin, txn_id, answer, received_ts) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (origin, txn_id) DO NOTHING",
                )
                .bind(origin.as_str())
                .bind(txn_id)
                .bind(answer)
                .bind(received.0)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn prune_federation_inbox(&self, before: Millis) -> Result<(), StorageError> {
                let mut transaction = self.pool.begin().await?;
                sqlx::query("DELETE FROM federation_transactions WHERE received_ts < $1")
                    .bind(before.0)
                    .execute(&mut *transaction)
                    .await?;
                sqlx::query("DELETE FROM federation_to_device_messages WHERE received_ts < $1")
                    .bind(before.0)
                    .execute(&mut *transaction)
                    .await?;
                transaction.commit().await?;
                Ok(())
            }
        }
    };
}

sql_federation_inbox_store!(SqliteStorage);
sql_federation_inbox_store!(PostgresStorage);
