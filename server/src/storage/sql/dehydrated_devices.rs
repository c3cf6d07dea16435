//! [`DehydratedDeviceStore`] in SQL.

use async_trait::async_trait;
use ruma::{DeviceId, OwnedDeviceId, UserId};

use super::{PostgresStorage, SqliteStorage, conflict_on_unique};
use crate::storage::{DehydratedDevice, DehydratedDeviceStore, Millis, StorageError};

macro_rules! sql_dehydrated_device_store {
    ($storage:ty) => {
        #[async_trait]
        impl DehydratedDeviceStore for $storage {
            async fn replace_dehydrated_device(
                &self,
                user_id: &UserId,
                device: &DehydratedDevice,
                display_name: Option<&str>,
                now: Millis,
            ) -> Result<Option<OwnedDeviceId>, StorageError> {
                let mut tx = self.pool.begin().await?;
                // Deleting the device row takes its keys, inbox and the
                // `dehydrated_devices` row with it (foreign keys cascade).
                let replaced: Option<(String,)> = sqlx::query_as(
                    "DELETE FROM devices WHERE user_id = $1 AND device_id = \
                     (SELECT device_id FROM dehydrated_devices WHERE user_id = $1) \
                     RETURNING device_id",
                )
                .bind(user_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO devices (user_id, device_id, display_name, created_ts) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(user_id.as_str())
                .bind(device.device_id.as_str())
                .bind(display_name)
                .bind(now.0)
                .execute(&mut *tx)
                .await
                .map_err(conflict_on_unique("device id"))?;
                sqlx::query(
                    "INSERT INTO dehydrated_devices (user_id, device_id, device_data) \
                     VALUES ($1, $2, $3)",
                )
                .bind(user_id.as_str())
                .bind(device.device_id.as_str())
                .bind(&device.device_data)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                // A device id used again must not inherit cached key counts.
                self.cache.forget_devices();
                Ok(replaced.map(|(device_id,)| device_id.into()))
            }

            async fn dehydrated_device(
                &self,
                user_id: &UserId,
            ) -> Result<Option<DehydratedDevice>, StorageError> {
                let row: Option<(String, String)> = sqlx::query_as(
                    "SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1",
                )
                .bind(user_id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(device_id, device_data)| DehydratedDevice {
                    device_id: device_id.into(),
                    device_data,
                }))
            }

            async fn delete_dehydrated_device(
                &self,
                user_id: &UserId,
                device_id: Option<&DeviceId>,
            ) -> Result<Option<OwnedDeviceId>, StorageError> {
                let deleted: Option<(String,)> = sqlx::query_as(
                    "DELETE FROM devices WHERE user_id = $1 AND device_id = \
                     (SELECT device_id FROM dehydrated_devices WHERE user_id = $1) \
                     AND ($2 IS NULL OR device_id = $2) RETURNING device_id",
                )
                .bind(user_id.as_str())
                .bind(device_id.map(DeviceId::as_str))
                .fetch_optional(&self.pool)
                .await?;
                if deleted.is_some() {
                    self.cache.forget_devices();
                }
                Ok(deleted.map(|(device_id,)| device_id.into()))
            }
        }
    };
}

sql_dehydrated_device_store!(SqliteStorage);
sql_dehydrated_device_store!(PostgresStorage);
