//! [`KeyStore`] in SQL.

use async_trait::async_trait;
use myelin_crypto::SigningKey;
use ruma::{OwnedServerSigningKeyId, ServerSigningKeyId, serde::Base64};
use zeroize::Zeroizing;

use super::{PostgresStorage, SqliteStorage, conflict_on_unique};
use crate::storage::{KeyStore, Millis, StorageError, StoredSigningKey};

const TABLE: &str = "server_signing_keys";

/// A `server_signing_keys` row. The seed is zeroized when the row is dropped.
type Row = (String, String, Option<Zeroizing<String>>, i64, Option<i64>);

fn corrupt(reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        table: TABLE,
        reason: reason.into(),
    }
}

fn key_from_row(
    (key_id, public_key, seed, created, expired): Row,
) -> Result<StoredSigningKey, StorageError> {
    let key_id =
        OwnedServerSigningKeyId::try_from(key_id).map_err(|e| corrupt(format!("key id: {e}")))?;
    let public_key =
        Base64::parse(&public_key).map_err(|e| corrupt(format!("public key of {key_id}: {e}")))?;
    let signing_key = seed
        .map(|seed| {
            // `KeyError`'s messages never include the seed.
            let key = SigningKey::from_seed_base64(&seed, key_id.key_name().as_str())
                .map_err(|e| corrupt(format!("seed of {key_id}: {e}")))?;
            if key.public_key() != public_key {
                return Err(corrupt(format!(
                    "seed of {key_id} does not match its public key"
                )));
            }
            Ok(key)
        })
        .transpose()?;
    Ok(StoredSigningKey {
        key_id,
        public_key,
        created: Millis(created),
        expired: expired.map(Millis),
        signing_key,
    })
}

macro_rules! sql_key_store {
    ($storage:ty) => {
        #[async_trait]
        impl KeyStore for $storage {
            async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StorageError> {
                let rows: Vec<(String, String, Option<String>, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT key_id, public_key, seed, created_ts, expired_ts \
                         FROM server_signing_keys ORDER BY created_ts, key_id",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(key_id, public_key, seed, created, expired)| {
                        key_from_row((
                            key_id,
                            public_key,
                            seed.map(Zeroizing::new),
                            created,
                            expired,
                        ))
                    })
                    .collect()
            }

            async fn insert_signing_key(
                &self,
                key: &SigningKey,
                created: Millis,
            ) -> Result<(), StorageError> {
                let seed = key.to_seed_base64();
                sqlx::query(
                    "INSERT INTO server_signing_keys (key_id, public_key, seed, created_ts) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(key.key_id().as_str())
                .bind(key.public_key().encode())
                .bind(seed.as_str())
                .bind(created.0)
                .execute(&self.pool)
                .await
                .map_err(conflict_on_unique("signing key"))?;
                Ok(())
            }

            async fn expire_signing_key(
                &self,
                key_id: &ServerSigningKeyId,
                expired: Millis,
            ) -> Result<(), StorageError> {
                let done = sqlx::query(
                    "UPDATE server_signing_keys SET expired_ts = $2, seed = NULL \
                     WHERE key_id = $1 AND expired_ts IS NULL",
                )
                .bind(key_id.as_str())
                .bind(expired.0)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StorageError::NotFound("current signing key"));
                }
                Ok(())
            }
        }
    };
}

sql_key_store!(SqliteStorage);
sql_key_store!(PostgresStorage);
