//! [`ToDeviceStore`] in SQL.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use super::{PostgresStorage, SqliteStorage, device_gone, rooms::parse_id};
use crate::storage::{
    Queued, SendId, StorageError, StreamPosition, ToDeviceMessage, ToDeviceSend, ToDeviceStore,
    UserMessages,
};

/// The devices of a user that get a message, each with its content: every
/// existing device for `*`, named ones overriding it; unknown devices are
/// skipped, as the spec asks.
fn resolve_recipients<'a>(
    existing: &[String],
    messages: &'a UserMessages,
) -> BTreeMap<OwnedDeviceId, &'a str> {
    let mut recipients = BTreeMap::new();
    for device_id in existing {
        let device_id = OwnedDeviceId::from(device_id.as_str());
        let content = messages
            .by_device
            .get(&device_id)
            .or(messages.all_devices.as_ref());
        if let Some(content) = content {
            recipients.insert(device_id, content.as_str());
        }
    }
    recipients
}

macro_rules! sql_to_device_store {
    ($storage:ty) => {
        #[async_trait]
        impl ToDeviceStore for $storage {
            async fn queue_to_device(
                &self,
                send: &ToDeviceSend<'_>,
            ) -> Result<Queued, StorageError> {
                let mut tx = self.pool.begin().await?;
                let queued = 'queue: {
                    let fresh = match send.send_id {
                        SendId::Device { device_id, txn_id } => {
                            sqlx::query(
                                "INSERT INTO to_device_transactions (user_id, device_id, txn_id) \
                                 VALUES ($1, $2, $3) \
                                 ON CONFLICT (user_id, device_id, txn_id) DO NOTHING",
                            )
                            .bind(send.sender.as_str())
                            .bind(device_id.as_str())
                            .bind(txn_id)
                            .execute(&mut *tx)
                            .await?
                        }
                        SendId::Federation {
                            origin,
                            message_id,
                            received,
                        } => {
                            sqlx::query(
                                "INSERT INTO federation_to_device_messages \
                                 (origin, message_id, received_ts) VALUES ($1, $2, $3) \
                                 ON CONFLICT (origin, message_id) DO NOTHING",
                            )
                            .bind(origin.as_str())
                            .bind(message_id)
                            .bind(received.0)
                            .execute(&mut *tx)
                            .await?
                        }
                    };
                    if fresh.rows_affected() == 0 {
                        break 'queue Queued::Duplicate;
                    }
                    let mut delivered = Vec::new();
                    let mut refused = Vec::new();
                    for (user_id, messages) in send.messages {
                        let existing: Vec<(String,)> =
                            sqlx::query_as("SELECT device_id FROM devices WHERE user_id = $1")
                                .bind(user_id.as_str())
                                .fetch_all(&mut *tx)
                                .await?;
                        let existing: Vec<String> = existing.into_iter().map(|(id,)| id).collect();
                        let recipients = resolve_recipients(&existing, messages);
                        if recipients.is_empty() {
                            continue;
                        }
                        // Per device: everything waiting, and what of it
                        // this sender sent.
                        let pending: Vec<(String, i64, i64)> = sqlx::query_as(
                            "SELECT device_id, COUNT(*), COUNT(*) FILTER (WHERE sender = $2) \
                             FROM to_device_inbox WHERE user_id = $1 GROUP BY device_id",
                        )
                        .bind(user_id.as_str())
                        .bind(send.sender.as_str())
                        .fetch_all(&mut *tx)
                        .await?;
                        let pending: HashMap<String, (i64, i64)> = pending
                            .into_iter()
                            .map(|(device, all, from_sender)| (device, (all, from_sender)))
                            .collect();
                        for (device_id, content) in recipients {
                            let (all, from_sender) =
                                pending.get(device_id.as_str()).copied().unwrap_or((0, 0));
                            let count = |n: i64| u64::try_from(n).unwrap_or(0);
                            if count(all) >= send.max_pending
                                || count(from_sender) >= send.max_pending_per_sender
                            {
                                refused.push((user_id.clone(), device_id));
                                continue;
                            }
                            sqlx::query(
                                "INSERT INTO to_device_inbox \
                                 (user_id, device_id, stream_ordering, sender, event_type, \
                                 content) \
                                 VALUES ($1, $2, $3, $4, $5, $6)",
                            )
                            .bind(user_id.as_str())
                            .bind(device_id.as_str())
                            .bind(send.position.0)
                            .bind(send.sender.as_str())
                            .bind(send.event_type)
                            .bind(content)
                            .execute(&mut *tx)
                            .await
                            .map_err(device_gone)?;
                            delivered.push((user_id.clone(), device_id));
                        }
                    }
                    if delivered.is_empty() && !refused.is_empty() {
                        break 'queue Queued::InboxFull(refused);
                    }
                    Queued::Delivered { delivered, refused }
                };
                if !matches!(queued, Queued::Delivered { .. }) {
                    // Nothing stored: undo the transaction id, so the send may be retried.
                    tx.rollback().await?;
                    tx = self.pool.begin().await?;
                }
                // Even a send that stored nothing took a position the stream
                // publishes and a sync may hand out as its token; it must
                // survive a restart like any other.
                sqlx::query(
                    "INSERT INTO to_device_stream (id, position) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET position = $1",
                )
                .bind(send.position.0)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(queued)
            }

            async fn to_device_messages(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
                after: StreamPosition,
                upto: StreamPosition,
                limit: u32,
            ) -> Result<Vec<ToDeviceMessage>, StorageError> {
                let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
                    "SELECT stream_ordering, sender, event_type, content FROM to_device_inbox \
                     WHERE user_id = $1 AND device_id = $2 \
                     AND stream_ordering > $3 AND stream_ordering <= $4 \
                     ORDER BY stream_ordering LIMIT $5",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(after.0)
                .bind(upto.0)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(position, sender, event_type, content)| {
                        Ok(ToDeviceMessage {
                            position: StreamPosition(position),
                            sender: parse_id::<OwnedUserId>("to_device_inbox", sender)?,
                            event_type,
                            content,
                        })
                    })
                    .collect()
            }

            async fn acknowledge_to_device(
                &self,
                user_id: &UserId,
                device_id: &DeviceId,
                upto: StreamPosition,
            ) -> Result<(), StorageError> {
                // Every sync acknowledges, and almost always nothing: look
                // first, because on SQLite even a DELETE that matches no row
                // takes the one write lock that every sender needs.
                let acknowledged: Option<(i64,)> = sqlx::query_as(
                    "SELECT stream_ordering FROM to_device_inbox \
                     WHERE user_id = $1 AND device_id = $2 AND stream_ordering <= $3 LIMIT 1",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(upto.0)
                .fetch_optional(&self.pool)
                .await?;
                if acknowledged.is_none() {
                    return Ok(());
                }
                sqlx::query(
                    "DELETE FROM to_device_inbox \
                     WHERE user_id = $1 AND device_id = $2 AND stream_ordering <= $3",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(upto.0)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }
    };
}

sql_to_device_store!(SqliteStorage);
sql_to_device_store!(PostgresStorage);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_devices_win_over_all_and_unknown_ones_are_skipped() {
        let messages = UserMessages {
            all_devices: Some("{\"to\":\"all\"}".to_owned()),
            by_device: [
                (OwnedDeviceId::from("B"), "{\"to\":\"B\"}".to_owned()),
                (OwnedDeviceId::from("GONE"), "{}".to_owned()),
            ]
            .into(),
        };
        let existing = ["A".to_owned(), "B".to_owned()];
        let recipients = resolve_recipients(&existing, &messages);
        assert_eq!(
            recipients.into_iter().collect::<Vec<_>>(),
            vec![
                (OwnedDeviceId::from("A"), "{\"to\":\"all\"}"),
                (OwnedDeviceId::from("B"), "{\"to\":\"B\"}"),
            ]
        );
        let only_named = UserMessages {
            all_devices: None,
            by_device: messages.by_device.clone(),
        };
        assert_eq!(resolve_recipients(&existing, &only_named).len(), 1);
    }
}
