//! Metadata of the blind media store. The bytes themselves are files on
//! disk, named by their SHA-256 (see [`crate::service::media`]); the
//! database only says which media id points at which blob, and who made it.

use async_trait::async_trait;
use ruma::{OwnedUserId, UserId};

use super::{Millis, StorageError};

/// What is known of uploaded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaContent {
    /// The `Content-Type` the uploader sent, verbatim.
    pub content_type: Option<String>,
    /// The file name the uploader gave.
    pub filename: Option<String>,
    /// Length in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the bytes: the blob's name on disk.
    pub sha256: String,
}

/// A media id as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRecord {
    /// The id, the last part of `mxc://<server_name>/<media_id>`.
    pub media_id: String,
    /// Who created it.
    pub uploader: OwnedUserId,
    /// The upload; `None` while a created id awaits its bytes.
    pub content: Option<MediaContent>,
    /// When the id was created.
    pub created: Millis,
}

/// What the media service persists.
#[async_trait]
pub trait MediaStore: Send + Sync {
    /// Records a media id, with its content when the bytes came with it
    /// (`POST /upload`), or pending (`POST /create`).
    ///
    /// # Errors
    /// `Conflict` when the id exists.
    async fn insert_media(
        &self,
        media_id: &str,
        uploader: &UserId,
        content: Option<&MediaContent>,
        created: Millis,
    ) -> Result<(), StorageError>;

    /// Attaches content to a pending media id, exactly once.
    ///
    /// # Errors
    /// `Conflict` when the id has content already; `NotFound` when it does not exist.
    async fn complete_media(
        &self,
        media_id: &str,
        content: &MediaContent,
    ) -> Result<(), StorageError>;

    /// One media id's record.
    async fn media(&self, media_id: &str) -> Result<Option<MediaRecord>, StorageError>;

    /// What an account holds: bytes uploaded, and media ids reserved at or
    /// after `pending_since` and not yet uploaded to.
    async fn media_usage(
        &self,
        uploader: &UserId,
        pending_since: Millis,
    ) -> Result<MediaUsage, StorageError>;
}

/// An account's share of the media store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaUsage {
    /// Bytes of its uploads.
    pub bytes: u64,
    /// Reserved ids still waiting for their bytes.
    pub pending: u64,
    /// When the oldest of those was reserved.
    pub oldest_pending: Option<Millis>,
}
