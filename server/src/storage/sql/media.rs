//! [`MediaStore`] in SQL.

use async_trait::async_trait;
use ruma::UserId;

use super::{PostgresStorage, SqliteStorage, conflict_on_unique};
use crate::storage::{MediaContent, MediaRecord, MediaStore, MediaUsage, Millis, StorageError};

/// A `media` row: id, uploader, content type, file name, size, sha256, created.
type MediaRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
);

macro_rules! sql_media_store {
    ($storage:ty) => {
        #[async_trait]
        impl MediaStore for $storage {
            async fn insert_media(
                &self,
                media_id: &str,
                uploader: &UserId,
                content: Option<&MediaContent>,
                created: Millis,
            ) -> Result<(), StorageError> {
                sqlx::query(
                    "INSERT INTO media \
                     (media_id, uploader, content_type, filename, size, sha256, created_ts) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(media_id)
                .bind(uploader.as_str())
                .bind(content.and_then(|c| c.content_type.as_deref()))
                .bind(content.and_then(|c| c.filename.as_deref()))
                .bind(content.map(|c| size_column(c.size)))
                .bind(content.map(|c| c.sha256.as_str()))
                .bind(created.0)
                .execute(&self.pool)
                .await
                .map_err(conflict_on_unique("media id"))?;
                Ok(())
            }

            async fn complete_media(
                &self,
                media_id: &str,
                content: &MediaContent,
            ) -> Result<(), StorageError> {
                // `sha256 IS NULL` makes the first of two racing uploads the
                // only one that lands.
                let done = sqlx::query(
                    "UPDATE media SET content_type = $2, filename = $3, size = $4, sha256 = $5 \
                     WHERE media_id = $1 AND sha256 IS NULL",
                )
                .bind(media_id)
                .bind(content.content_type.as_deref())
                .bind(content.filename.as_deref())
                .bind(size_column(content.size))
                .bind(&content.sha256)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 1 {
                    return Ok(());
                }
                let exists: Option<(String,)> =
                    sqlx::query_as("SELECT media_id FROM media WHERE media_id = $1")
                        .bind(media_id)
                        .fetch_optional(&self.pool)
                        .await?;
                Err(match exists {
                    Some(_) => StorageError::Conflict("media already uploaded"),
                    None => StorageError::NotFound("media id"),
                })
            }

            async fn media(&self, media_id: &str) -> Result<Option<MediaRecord>, StorageError> {
                let row: Option<MediaRow> = sqlx::query_as(
                    "SELECT media_id, uploader, content_type, filename, size, sha256, created_ts \
                     FROM media WHERE media_id = $1",
                )
                .bind(media_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(media_record).transpose()
            }

            async fn media_usage(
                &self,
                uploader: &UserId,
                pending_since: Millis,
            ) -> Result<MediaUsage, StorageError> {
                let (bytes, pending, oldest): (i64, i64, Option<i64>) = sqlx::query_as(
                    "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT), \
                     COUNT(*) FILTER (WHERE size IS NULL AND created_ts >= $2), \
                     MIN(created_ts) FILTER (WHERE size IS NULL AND created_ts >= $2) \
                     FROM media WHERE uploader = $1",
                )
                .bind(uploader.as_str())
                .bind(pending_since.0)
                .fetch_one(&self.pool)
                .await?;
                Ok(MediaUsage {
                    bytes: u64::try_from(bytes).unwrap_or(0),
                    pending: u64::try_from(pending).unwrap_or(0),
                    oldest_pending: oldest.map(Millis),
                })
            }
        }
    };
}

sql_media_store!(SqliteStorage);
sql_media_store!(PostgresStorage);

/// Sizes are bounded by the upload limit, far below `i64::MAX`.
fn size_column(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

fn media_record(row: MediaRow) -> Result<MediaRecord, StorageError> {
    let (media_id, uploader, content_type, filename, size, sha256, created_ts) = row;
    let corrupt = |reason: String| StorageError::Corrupt {
        table: "media",
        reason,
    };
    let uploader = UserId::parse(&uploader).map_err(|e| corrupt(e.to_string()))?;
    let content = match (sha256, size) {
        (Some(sha256), Some(size)) => Some(MediaContent {
            content_type,
            filename,
            size: u64::try_from(size).map_err(|e| corrupt(e.to_string()))?,
            sha256,
        }),
        (None, None) => None,
        _ => return Err(corrupt("size and sha256 must be set together".to_owned())),
    };
    Ok(MediaRecord {
        media_id,
        uploader,
        content,
        created: Millis(created_ts),
    })
}
