//! [`RemoteKeyStore`] in SQL.

use async_trait::async_trait;
use ruma::{OwnedServerName, ServerName, serde::Base64};

use super::{PostgresStorage, SqliteStorage};
use crate::storage::{Millis, RemoteKey, RemoteKeyDocument, RemoteKeyStore, StorageError};

fn corrupt(reason: String) -> StorageError {
    StorageError::Corrupt {
        table: "remote_server_keys",
        reason,
    }
}

macro_rules! sql_remote_key_store {
    ($storage:ty) => {
        #[async_trait]
        impl RemoteKeyStore for $storage {
            async fn remote_keys(
                &self,
                server: &ServerName,
            ) -> Result<Vec<RemoteKey>, StorageError> {
                let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT key_id, public_key, valid_until_ts, expired_ts \
                     FROM remote_server_keys WHERE server_name = $1 ORDER BY key_id",
                )
                .bind(server.as_str())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(key_id, public_key, valid_until, expired)| {
                        let public_key = Base64::parse(&public_key)
                            .map_err(|e| corrupt(format!("public key of {key_id}: {e}")))?;
                        Ok(RemoteKey {
                            key_id,
                            public_key,
                            valid_until: Millis(valid_until),
                            is_expired: expired.is_some(),
                        })
                    })
                    .collect()
            }

            async fn store_remote_keys(
                &self,
                document: &RemoteKeyDocument,
                keys: &[RemoteKey],
            ) -> Result<(), StorageError> {
                let mut transaction = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO remote_key_documents \
                         (server_name, document, valid_until_ts, fetched_ts) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (server_name) DO UPDATE SET document = excluded.document, \
                         valid_until_ts = excluded.valid_until_ts, \
                         fetched_ts = excluded.fetched_ts",
                )
                .bind(document.server_name.as_str())
                .bind(&document.json)
                .bind(document.valid_until.0)
                .bind(document.fetched.0)
                .execute(&mut *transaction)
                .await?;
                for key in keys {
                    sqlx::query(
                        "INSERT INTO remote_server_keys \
                             (server_name, key_id, public_key, valid_until_ts, expired_ts) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (server_name, key_id) DO UPDATE SET \
                             public_key = excluded.public_key, \
                             valid_until_ts = excluded.valid_until_ts, \
                             expired_ts = excluded.expired_ts",
                    )
                    .bind(document.server_name.as_str())
                    .bind(&key.key_id)
                    .bind(key.public_key.encode())
                    .bind(key.valid_until.0)
                    .bind(key.is_expired.then_some(key.valid_until.0))
                    .execute(&mut *transaction)
                    .await?;
                }
                transaction.commit().await?;
                Ok(())
            }

            async fn remote_key_document(
                &self,
                server: &ServerName,
            ) -> Result<Option<RemoteKeyDocument>, StorageError> {
                let row: Option<(String, i64, i64)> = sqlx::query_as(
                    "SELECT document, valid_until_ts, fetched_ts \
                     FROM remote_key_documents WHERE server_name = $1",
                )
                .bind(server.as_str())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(json, valid_until, fetched)| RemoteKeyDocument {
                    server_name: OwnedServerName::from(server),
                    json,
                    valid_until: Millis(valid_until),
                    fetched: Millis(fetched),
                }))
            }
        }
    };
}

sql_remote_key_store!(SqliteStorage);
sql_remote_key_store!(PostgresStorage);
