//! [`E2eeKeyStore`] in SQL.
//!
//! A claim is a `DELETE … RETURNING` of one row: whichever claimer deletes
//! it gets it, and a row is deleted once, so no key is handed out twice on
//! either backend. On PostgreSQL a claimer whose chosen row was taken
//! meanwhile deletes nothing and tries the next key.

use async_trait::async_trait;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use super::{
    PostgresStorage, SqliteStorage, device_gone, device_lists::insert_device_list_changes,
    rooms::parse_id,
};
use crate::storage::{
    CrossSigningKey, CrossSigningKeyType, DeviceKeys, DeviceListChange, E2eeKeyStore, KeySignature,
    Millis, OneTimeKey, QueriedDevice, SignatureTarget, StorageError, StreamPosition,
    e2ee_keys::parse_key_type,
};

fn count_from(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

type SignatureRow = (String, String, String, String);

fn signature_from_row(
    user_id: &UserId,
    target: impl FnOnce(String) -> SignatureTarget,
    (target_key, signer_user_id, signer_key_id, signature): SignatureRow,
) -> Result<KeySignature, StorageError> {
    Ok(KeySignature {
        user_id: user_id.to_owned(),
        target: target(target_key),
        signer_user_id: parse_id::<OwnedUserId>("key signatures", signer_user_id)?,
        signer_key_id,
        signature,
    })
}

macro_rules! sql_e2ee_key_store {
    ($storage:ty) => {
        impl $storage {
            /// Takes the device's oldest one-time key of `algorithm`, or
            /// else marks its fallback key used (see
            /// [`E2eeKeyStore::claim_key`]).
            async fn take_key(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
                algorithm: &str,
            ) -> Result<Option<OneTimeKey>, StorageError> {
                loop {
                    let claimed: Option<(String, String, String)> = sqlx::query_as(
                        "DELETE FROM one_time_keys \
                         WHERE user_id = $1 AND device_id = $2 AND key_id = \
                         (SELECT key_id FROM one_time_keys \
                          WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
                          ORDER BY uploaded_ts, key_id LIMIT 1) \
                         RETURNING key_id, algorithm, json",
                    )
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .bind(algorithm)
                    .fetch_optional(&self.pool)
                    .await?;
                    if let Some((key_id, algorithm, json)) = claimed {
                        return Ok(Some(OneTimeKey {
                            key_id,
                            algorithm,
                            json,
                        }));
                    }
                    // Nothing deleted: either none is left, or (PostgreSQL)
                    // another claimer took the chosen key first. Each retry
                    // follows someone else's success, so this ends.
                    let (left,): (i64,) = sqlx::query_as(
                        "SELECT COUNT(*) FROM one_time_keys \
                         WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
                    )
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .bind(algorithm)
                    .fetch_one(&self.pool)
                    .await?;
                    if left == 0 {
                        break;
                    }
                }
                let fallback: Option<(String, String, String)> = sqlx::query_as(
                    "UPDATE fallback_keys SET is_used = $4 \
                     WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
                     RETURNING key_id, algorithm, json",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(algorithm)
                .bind(true)
                .fetch_optional(&self.pool)
                .await?;
                Ok(fallback.map(|(key_id, algorithm, json)| OneTimeKey {
                    key_id,
                    algorithm,
                    json,
                }))
            }
        }

        #[async_trait]
        impl E2eeKeyStore for $storage {
            async fn device_keys(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
            ) -> Result<Option<DeviceKeys>, StorageError> {
                let row: Option<(String, String, String)> = sqlx::query_as(
                    "SELECT ed25519_key, curve25519_key, json FROM device_keys \
                     WHERE user_id = $1 AND device_id = $2",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(ed25519_key, curve25519_key, json)| DeviceKeys {
                    ed25519_key,
                    curve25519_key,
                    json,
                }))
            }

            async fn set_device_keys(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
                keys: &DeviceKeys,
                position: StreamPosition,
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                // The update applies only when the identity keys are the
                // stored ones, so a racing upload of other keys cannot land.
                let written = sqlx::query(
                    "INSERT INTO device_keys \
                     (user_id, device_id, ed25519_key, curve25519_key, json) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (user_id, device_id) DO UPDATE SET json = excluded.json \
                     WHERE device_keys.ed25519_key = excluded.ed25519_key \
                     AND device_keys.curve25519_key = excluded.curve25519_key",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(&keys.ed25519_key)
                .bind(&keys.curve25519_key)
                .bind(&keys.json)
                .execute(&mut *tx)
                .await
                .map_err(device_gone)?;
                if written.rows_affected() == 0 {
                    return Err(StorageError::Conflict("device identity keys"));
                }
                insert_device_list_changes!(tx, [DeviceListChange::public(user_id)], position);
                tx.commit().await?;
                Ok(())
            }

            async fn add_one_time_keys(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
                keys: &[OneTimeKey],
                now: Millis,
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                for key in keys {
                    let inserted = sqlx::query(
                        "INSERT INTO one_time_keys \
                         (user_id, device_id, key_id, algorithm, json, uploaded_ts) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (user_id, device_id, key_id) DO NOTHING",
                    )
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .bind(&key.key_id)
                    .bind(&key.algorithm)
                    .bind(&key.json)
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(device_gone)?;
                    if inserted.rows_affected() == 1 {
                        continue;
                    }
                    let (stored,): (String,) = sqlx::query_as(
                        "SELECT json FROM one_time_keys \
                         WHERE user_id = $1 AND device_id = $2 AND key_id = $3",
                    )
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .bind(&key.key_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    if stored != key.json {
                        return Err(StorageError::Conflict("one-time key id"));
                    }
                }
                tx.commit().await?;
                self.cache.forget_device_keys(user_id, device_id);
                Ok(())
            }

            async fn set_fallback_keys(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
                keys: &[OneTimeKey],
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                for key in keys {
                    sqlx::query(
                        "INSERT INTO fallback_keys \
                         (user_id, device_id, algorithm, key_id, json, is_used) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET \
                         key_id = excluded.key_id, json = excluded.json, \
                         is_used = CASE WHEN fallback_keys.key_id = excluded.key_id \
                             AND fallback_keys.json = excluded.json \
                             THEN fallback_keys.is_used ELSE excluded.is_used END",
                    )
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .bind(&key.algorithm)
                    .bind(&key.key_id)
                    .bind(&key.json)
                    .bind(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(device_gone)?;
                }
                tx.commit().await?;
                self.cache.forget_device_keys(user_id, device_id);
                Ok(())
            }

            async fn one_time_key_counts(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
            ) -> Result<Vec<(String, u64)>, StorageError> {
                let key = (user_id.to_owned(), device_id.to_owned());
                if let Some(counts) = self.cache.one_time_key_counts().get(&key) {
                    return Ok(counts);
                }
                let epoch = self.cache.one_time_key_counts().epoch();
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT algorithm, COUNT(*) FROM one_time_keys \
                     WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm ORDER BY algorithm",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .fetch_all(&self.pool)
                .await?;
                let counts: Vec<(String, u64)> = rows
                    .into_iter()
                    .map(|(algorithm, count)| (algorithm, count_from(count)))
                    .collect();
                self.cache.one_time_key_counts().put(epoch, key, counts.clone());
                Ok(counts)
            }

            async fn unused_fallback_key_types(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
            ) -> Result<Vec<String>, StorageError> {
                let key = (user_id.to_owned(), device_id.to_owned());
                if let Some(types) = self.cache.unused_fallback_keys().get(&key) {
                    return Ok(types);
                }
                let epoch = self.cache.unused_fallback_keys().epoch();
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT algorithm FROM fallback_keys \
                     WHERE user_id = $1 AND device_id = $2 AND is_used = $3 ORDER BY algorithm",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(false)
                .fetch_all(&self.pool)
                .await?;
                let types: Vec<String> = rows.into_iter().map(|(algorithm,)| algorithm).collect();
                self.cache.unused_fallback_keys().put(epoch, key, types.clone());
                Ok(types)
            }

            async fn claim_key(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
                algorithm: &str,
            ) -> Result<Option<OneTimeKey>, StorageError> {
                let claimed = self.take_key(user_id, device_id, algorithm).await;
                self.cache.forget_device_keys(user_id, device_id);
                claimed
            }

            async fn devices_with_keys(
                &self,
                user_id: &UserId,
            ) -> Result<Vec<QueriedDevice>, StorageError> {
                let rows: Vec<(String, Option<String>, String)> = sqlx::query_as(
                    "SELECT k.device_id, d.display_name, k.json FROM device_keys k \
                     JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id \
                     WHERE k.user_id = $1 ORDER BY k.device_id",
                )
                .bind(user_id.as_str())
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(device_id, display_name, json)| QueriedDevice {
                        device_id: OwnedDeviceId::from(device_id),
                        display_name,
                        json,
                    })
                    .collect())
            }

            async fn cross_signing_keys(
                &self,
                user_id: &UserId,
            ) -> Result<Vec<CrossSigningKey>, StorageError> {
                let rows: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT key_type, public_key, json FROM cross_signing_keys \
                     WHERE user_id = $1 ORDER BY key_type",
                )
                .bind(user_id.as_str())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(key_type, public_key, json)| {
                        Ok(CrossSigningKey {
                            key_type: parse_key_type(&key_type)?,
                            public_key,
                            json,
                        })
                    })
                    .collect()
            }

            async fn set_cross_signing_keys(
                &self,
                user_id: &UserId,
                keys: &[CrossSigningKey],
                removed: &[CrossSigningKeyType],
                position: StreamPosition,
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                for key in keys {
                    sqlx::query(
                        "INSERT INTO cross_signing_keys (user_id, key_type, public_key, json) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, key_type) DO UPDATE SET \
                         public_key = excluded.public_key, json = excluded.json",
                    )
                    .bind(user_id.as_str())
                    .bind(key.key_type.usage())
                    .bind(&key.public_key)
                    .bind(&key.json)
                    .execute(&mut *tx)
                    .await?;
                }
                for key_type in removed {
                    sqlx::query("DELETE FROM cross_signing_keys WHERE user_id = $1 AND key_type = $2")
                        .bind(user_id.as_str())
                        .bind(key_type.usage())
                        .execute(&mut *tx)
                        .await?;
                }
                // Signatures on keys the user no longer has go with them.
                sqlx::query(
                    "DELETE FROM cross_signing_signatures WHERE user_id = $1 AND public_key NOT IN \
                     (SELECT public_key FROM cross_signing_keys WHERE user_id = $1)",
                )
                .bind(user_id.as_str())
                .execute(&mut *tx)
                .await?;
                insert_device_list_changes!(tx, [DeviceListChange::public(user_id)], position);
                tx.commit().await?;
                Ok(())
            }

            async fn key_signatures(
                &self,
                user_id: &UserId,
            ) -> Result<Vec<KeySignature>, StorageError> {
                let on_devices: Vec<SignatureRow> = sqlx::query_as(
                    "SELECT device_id, signer_user_id, signer_key_id, signature \
                     FROM device_key_signatures WHERE user_id = $1",
                )
                .bind(user_id.as_str())
                .fetch_all(&self.pool)
                .await?;
                let on_cross_signing_keys: Vec<SignatureRow> = sqlx::query_as(
                    "SELECT public_key, signer_user_id, signer_key_id, signature \
                     FROM cross_signing_signatures WHERE user_id = $1",
                )
                .bind(user_id.as_str())
                .fetch_all(&self.pool)
                .await?;
                let devices = on_devices.into_iter().map(|row| {
                    signature_from_row(user_id, |id| SignatureTarget::Device(id.into()), row)
                });
                let cross_signing = on_cross_signing_keys.into_iter().map(|row| {
                    signature_from_row(user_id, SignatureTarget::CrossSigningKey, row)
                });
                devices.chain(cross_signing).collect()
            }

            async fn add_key_signatures(
                &self,
                signatures: &[KeySignature],
                changes: &[DeviceListChange],
                position: StreamPosition,
            ) -> Result<(), StorageError> {
                let mut tx = self.pool.begin().await?;
                for signature in signatures {
                    let (sql, target) = match &signature.target {
                        SignatureTarget::Device(device_id) => (
                            "INSERT INTO device_key_signatures \
                             (user_id, device_id, signer_user_id, signer_key_id, signature) \
                             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM device_keys \
                             WHERE user_id = $1 AND device_id = $2) \
                             ON CONFLICT (user_id, device_id, signer_user_id, signer_key_id) \
                             DO UPDATE SET signature = excluded.signature",
                            device_id.as_str(),
                        ),
                        SignatureTarget::CrossSigningKey(public_key) => (
                            "INSERT INTO cross_signing_signatures \
                             (user_id, public_key, signer_user_id, signer_key_id, signature) \
                             VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (user_id, public_key, signer_user_id, signer_key_id) \
                             DO UPDATE SET signature = excluded.signature",
                            public_key.as_str(),
                        ),
                    };
                    sqlx::query(sql)
                        .bind(signature.user_id.as_str())
                        .bind(target)
                        .bind(signature.signer_user_id.as_str())
                        .bind(&signature.signer_key_id)
                        .bind(&signature.signature)
                        .execute(&mut *tx)
                        .await?;
                }
                insert_device_list_changes!(tx, changes, position);
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

sql_e2ee_key_store!(SqliteStorage);
sql_e2ee_key_store!(PostgresStorage);
