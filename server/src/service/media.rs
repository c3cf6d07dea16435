//! The blind media store: uploads, asynchronous uploads and authenticated
//! downloads ([Content repository], [MSC3916]).
//!
//! The server never looks inside an upload. End-to-end encrypted attachments
//! and key bundles arrive as ciphertext; anything else is served back with
//! headers that keep a browser from running it (see [`Download`]).
//!
//! - Bytes are files under `<data_dir>/media/`, named by their SHA-256
//!   (`media/ab/abcdef…`), so identical uploads share one file. An upload is
//!   streamed into `media/tmp/`, counted and hashed as it arrives, synced,
//!   then renamed into place: a reader never sees half a file, and an
//!   upload over `max_upload_bytes` is refused as soon as it crosses the limit
//!   and leaves nothing behind.
//! - Metadata (uploader, content type, file name, size, hash) is a database
//!   row per media id. Media ids are 32 random alphanumerics (190 bits).
//! - A media id made by `POST /create` can be uploaded to once, by its
//!   creator, within [`UNUSED_EXPIRY`]. Downloading it before then answers
//!   `M_NOT_YET_UPLOADED` at once (the spec's 504): the server does not hold
//!   the request open for `timeout_ms`.
//! - Media of other servers answers `M_NOT_FOUND` until federation exists.
//!
//! Not supported: thumbnails, URL previews, deleting media.
//!
//! [Content repository]: https://spec.matrix.org/v1.16/client-server-api/#content-repository
//! [MSC3916]: https://github.com/matrix-org/matrix-spec-proposals/pull/3916

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rand::{Rng, distributions::Alphanumeric};
use ruma::{OwnedMxcUri, OwnedServerName, ServerName, UserId};
use sha2::{Digest, Sha256};
use tokio::{fs, io::AsyncWriteExt};
use tracing::{debug, warn};

use super::ServiceError;
use crate::storage::{MediaContent, Millis, Storage, StorageError};

/// How long a media id made by `POST /create` waits for its upload.
pub const UNUSED_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// Content types served with their own type and `inline`: formats a browser
/// displays but never executes. Everything else (HTML, SVG, JavaScript, PDF,
/// XML…) is `application/octet-stream` and `attachment`.
const INLINE_TYPES: &[&str] = &[
    "text/plain",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Longest content type and file name kept, in bytes.
const MAX_LABEL_BYTES: usize = 255;

/// The media store.
#[derive(Debug)]
pub struct Media {
    storage: Arc<dyn Storage>,
    server_name: OwnedServerName,
    dir: PathBuf,
    max_upload_bytes: u64,
    quota: MediaQuota,
}

/// What one account may hold in the media store.
#[derive(Debug, Clone, Copy)]
pub struct MediaQuota {
    /// Bytes of uploads.
    pub bytes_per_user: u64,
    /// Media ids reserved and not yet uploaded to.
    pub pending_ids: u64,
}

/// A stored upload, ready to serve.
#[derive(Debug)]
pub struct Download {
    /// The blob, opened.
    pub file: fs::File,
    /// Its length in bytes.
    pub size: u64,
    /// The `Content-Type` to send: the uploaded one only for [`INLINE_TYPES`].
    pub content_type: &'static str,
    /// The `Content-Disposition` to send: `inline` only for [`INLINE_TYPES`],
    /// with the file name encoded per RFC 6266 / RFC 8187.
    pub content_disposition: String,
}

/// An upload being streamed to a temporary file. Dropped unfinished, it
/// deletes the file.
#[derive(Debug)]
pub struct StagedUpload {
    file: Option<fs::File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    limit: u64,
    /// The pending media id this upload fills (`PUT`), or none for a new one.
    target: Option<String>,
}

impl Media {
    /// Builds the service and prepares `<data_dir>/media/`, clearing
    /// temporary files a crash left behind.
    ///
    /// # Errors
    /// `Internal` when the directories cannot be created.
    pub fn new(
        storage: Arc<dyn Storage>,
        server_name: OwnedServerName,
        data_dir: &Path,
        max_upload_bytes: u64,
        quota: MediaQuota,
    ) -> Result<Self, ServiceError> {
        let dir = data_dir.join("media");
        let tmp = dir.join("tmp");
        let io = |e: std::io::Error| ServiceError::Internal(format!("media directory: {e}"));
        std::fs::create_dir_all(&tmp).map_err(io)?;
        for entry in std::fs::read_dir(&tmp).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if let Err(e) = std::fs::remove_file(&path) {
                warn!(path = %path.display(), error = %e, "cannot remove stale upload");
            }
        }
        Ok(Self {
            storage,
            server_name,
            dir,
            max_upload_bytes,
            quota,
        })
    }

    /// The largest upload accepted, in bytes (`m.upload.size`).
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// Reserves a media id for a later `PUT` by `uploader`, and says until when.
    ///
    /// # Errors
    /// `LimitExceeded` when the account holds as many reserved ids as it
    /// may (they free as they are uploaded to or expire); storage failures.
    pub async fn create(&self, uploader: &UserId) -> Result<(OwnedMxcUri, Millis), ServiceError> {
        let now = Millis::now();
        let expiry_ms = i64::try_from(UNUSED_EXPIRY.as_millis()).unwrap_or(i64::MAX);
        let usage = self
            .storage
            .media_usage(uploader, Millis(now.0.saturating_sub(expiry_ms)))
            .await?;
        if usage.pending >= self.quota.pending_ids {
            let frees = usage.oldest_pending.map_or(now, expiry);
            let wait = u64::try_from(frees.0.saturating_sub(now.0)).unwrap_or(0);
            return Err(ServiceError::LimitExceeded {
                retry_after: Duration::from_millis(wait),
            });
        }
        let media_id = new_media_id();
        self.storage
            .insert_media(&media_id, uploader, None, now)
            .await?;
        debug!(%media_id, "media id created");
        Ok((self.mxc(&media_id), expiry(now)))
    }

    /// Starts a new upload (`POST /upload`).
    ///
    /// # Errors
    /// `MediaTooLarge` when the declared length is over the limit.
    pub async fn begin_upload(
        &self,
        uploader: &UserId,
        declared_len: Option<u64>,
    ) -> Result<StagedUpload, ServiceError> {
        self.stage(uploader, declared_len, None).await
    }

    /// Starts the upload into a media id made by [`Self::create`]
    /// (`PUT /upload/{serverName}/{mediaId}`); checked before the body is read.
    ///
    /// # Errors
    /// `NotFound` for an unknown, expired or remote id; `Forbidden` when
    /// `caller` did not create it; `CannotOverwriteMedia` when it has content;
    /// `MediaTooLarge` when the declared length is over the limit.
    pub async fn begin_upload_to(
        &self,
        caller: &UserId,
        server_name: &ServerName,
        media_id: &str,
        declared_len: Option<u64>,
    ) -> Result<StagedUpload, ServiceError> {
        let record = self
            .local_record(server_name, media_id)
            .await?
            .ok_or_else(unknown_media)?;
        if record.uploader != caller {
            return Err(ServiceError::Forbidden(
                "only the creator of a media id may upload to it".to_owned(),
            ));
        }
        if record.content.is_some() {
            return Err(ServiceError::CannotOverwriteMedia);
        }
        if expiry(record.created) < Millis::now() {
            return Err(unknown_media());
        }
        self.stage(caller, declared_len, Some(record.media_id))
            .await
    }

    /// Stores a fully received upload: moves its blob into place (sharing an
    /// identical one) and records it, returning its `mxc://` URI.
    ///
    /// # Errors
    /// `InvalidParam` for an overlong content type or file name;
    /// `CannotOverwriteMedia` when a racing upload filled the id first.
    pub async fn finish_upload(
        &self,
        mut staged: StagedUpload,
        uploader: &UserId,
        content_type: Option<&str>,
        filename: Option<&str>,
    ) -> Result<OwnedMxcUri, ServiceError> {
        for (name, value) in [("Content-Type", content_type), ("filename", filename)] {
            if value.is_some_and(|v| v.len() > MAX_LABEL_BYTES) {
                return Err(ServiceError::InvalidParam(format!(
                    "{name} is longer than {MAX_LABEL_BYTES} bytes"
                )));
            }
            // Stored as text: PostgreSQL refuses NUL, so both backends do.
            if value.is_some_and(|v| v.contains('\0')) {
                return Err(ServiceError::InvalidParam(format!(
                    "{name} must not contain NUL"
                )));
            }
        }
        let sha256 = staged.commit(&self.dir).await?;
        let content = MediaContent {
            content_type: content_type.filter(|v| !v.is_empty()).map(str::to_owned),
            filename: filename.filter(|v| !v.is_empty()).map(str::to_owned),
            size: staged.size,
            sha256,
        };
        let media_id = match staged.target.take() {
            Some(media_id) => match self.storage.complete_media(&media_id, &content).await {
                Ok(()) => media_id,
                Err(StorageError::Conflict(_)) => {
                    return Err(ServiceError::CannotOverwriteMedia);
                }
                Err(StorageError::NotFound(_)) => return Err(unknown_media()),
                Err(e) => return Err(e.into()),
            },
            None => {
                let media_id = new_media_id();
                self.storage
                    .insert_media(&media_id, uploader, Some(&content), Millis::now())
                    .await?;
                media_id
            }
        };
        debug!(%media_id, size = content.size, "media uploaded");
        Ok(self.mxc(&media_id))
    }

    /// Opens an upload for download, with the headers that keep it inert.
    /// `filename` (from the URL) replaces the uploaded file name.
    ///
    /// # Errors
    /// `NotFound` for unknown, expired, or remote media; `NotYetUploaded`
    /// for a created id still waiting for its bytes.
    pub async fn download(
        &self,
        server_name: &ServerName,
        media_id: &str,
        filename: Option<&str>,
    ) -> Result<Download, ServiceError> {
        let record = self
            .local_record(server_name, media_id)
            .await?
            .ok_or_else(unknown_media)?;
        let Some(content) = record.content else {
            if expiry(record.created) < Millis::now() {
                return Err(unknown_media());
            }
            return Err(ServiceError::NotYetUploaded);
        };
        let path = blob_path(&self.dir, &content.sha256);
        let file = fs::File::open(&path)
            .await
            .map_err(|e| ServiceError::Internal(format!("media blob {}: {e}", content.sha256)))?;
        let (content_type, is_inline) = served_type(content.content_type.as_deref());
        let filename = filename.or(content.filename.as_deref());
        Ok(Download {
            file,
            size: content.size,
            content_type,
            content_disposition: disposition(is_inline, filename),
        })
    }

    /// The record of a media id of this server; `None` for any other server
    /// or a malformed id.
    async fn local_record(
        &self,
        server_name: &ServerName,
        media_id: &str,
    ) -> Result<Option<crate::storage::MediaRecord>, ServiceError> {
        if server_name != self.server_name || !is_valid_media_id(media_id) {
            return Ok(None);
        }
        Ok(self.storage.media(media_id).await?)
    }

    async fn stage(
        &self,
        uploader: &UserId,
        declared_len: Option<u64>,
        target: Option<String>,
    ) -> Result<StagedUpload, ServiceError> {
        if declared_len.is_some_and(|len| len > self.max_upload_bytes) {
            return Err(ServiceError::MediaTooLarge {
                limit: self.max_upload_bytes,
            });
        }
        // The account's quota caps this upload too. Two uploads at once
        // can each pass the check and overshoot by one upload each.
        let used = self
            .storage
            .media_usage(uploader, Millis::now())
            .await?
            .bytes;
        let left = self.quota.bytes_per_user.saturating_sub(used);
        if left == 0 || declared_len.is_some_and(|len| len > left) {
            return Err(ServiceError::TooLarge(format!(
                "this account has {left} bytes left of its {}-byte media quota",
                self.quota.bytes_per_user
            )));
        }
        let path = self
            .dir
            .join("tmp")
            .join(format!("{}.part", new_media_id()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| ServiceError::Internal(format!("temporary upload file: {e}")))?;
        Ok(StagedUpload {
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
            limit: self.max_upload_bytes.min(left),
            target,
        })
    }

    fn mxc(&self, media_id: &str) -> OwnedMxcUri {
        OwnedMxcUri::from(format!("mxc://{}/{media_id}", self.server_name))
    }
}

impl StagedUpload {
    /// Appends a chunk of the body.
    ///
    /// # Errors
    /// `MediaTooLarge` as soon as the upload crosses the limit (the temporary
    /// file goes when `self` is dropped); `Internal` when the disk fails.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), ServiceError> {
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        self.size = self.size.saturating_add(len);
        if self.size > self.limit {
            return Err(ServiceError::MediaTooLarge { limit: self.limit });
        }
        self.hasher.update(chunk);
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| ServiceError::Internal("upload already committed".to_owned()))?;
        file.write_all(chunk).await.map_err(write_failed)
    }

    /// Syncs the file and renames it to its hash, unless that blob exists;
    /// returns the hash.
    async fn commit(&mut self, dir: &Path) -> Result<String, ServiceError> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| ServiceError::Internal("upload already committed".to_owned()))?;
        file.flush().await.map_err(write_failed)?;
        file.sync_all().await.map_err(write_failed)?;
        drop(file);
        let sha256: String = self
            .hasher
            .clone()
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let target = blob_path(dir, &sha256);
        if fs::try_exists(&target).await.map_err(write_failed)? {
            // Identical bytes are stored already; the temporary file goes on drop.
            return Ok(sha256);
        }
        let shard = target
            .parent()
            .ok_or_else(|| ServiceError::Internal("blob path has no parent".to_owned()))?;
        fs::create_dir_all(shard).await.map_err(write_failed)?;
        fs::rename(&self.path, &target)
            .await
            .map_err(write_failed)?;
        // Make the rename itself durable before the row that points at it.
        if let Ok(shard_dir) = fs::File::open(shard).await {
            shard_dir.sync_all().await.map_err(write_failed)?;
        }
        Ok(sha256)
    }
}

impl Drop for StagedUpload {
    fn drop(&mut self) {
        // After a successful rename the path no longer exists: nothing to do.
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(path = %self.path.display(), error = %e, "cannot remove upload"),
        }
    }
}

/// The content type to serve and whether it may be shown inline.
fn served_type(uploaded: Option<&str>) -> (&'static str, bool) {
    let essence = uploaded
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase());
    match essence.and_then(|e| INLINE_TYPES.iter().find(|safe| **safe == e)) {
        Some(safe) => (safe, true),
        None => ("application/octet-stream", false),
    }
}

/// `inline` or `attachment`, with the file name: a plain quoted one when it
/// is harmless ASCII, otherwise RFC 8187's percent-encoded `filename*`.
fn disposition(is_inline: bool, filename: Option<&str>) -> String {
    let kind = if is_inline { "inline" } else { "attachment" };
    let Some(name) = filename.filter(|name| !name.is_empty()) else {
        return kind.to_owned();
    };
    let is_plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" !#$&+,-.^_`|~()[]{}@=".contains(&b));
    if is_plain {
        return format!("{kind}; filename=\"{name}\"");
    }
    let mut encoded = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{kind}; filename*=utf-8''{encoded}")
}

fn blob_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(sha256.get(..2).unwrap_or("00")).join(sha256)
}

fn new_media_id() -> String {
    rand::thread_rng()
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// The ids this server makes, and what the spec allows in one:
/// `[A-Za-z0-9_-]+`.
fn is_valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty()
        && media_id.len() <= MAX_LABEL_BYTES
        && media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn expiry(created: Millis) -> Millis {
    let ms = i64::try_from(UNUSED_EXPIRY.as_millis()).unwrap_or(i64::MAX);
    Millis(created.0.saturating_add(ms))
}

fn unknown_media() -> ServiceError {
    ServiceError::NotFound("media not found".to_owned())
}

fn write_failed(e: std::io::Error) -> ServiceError {
    ServiceError::Internal(format!("writing media: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_content_is_never_inline() {
        for uploaded in [
            Some("text/html"),
            Some("image/svg+xml"),
            Some("application/javascript"),
            Some("text/html; charset=utf-8"),
            Some("application/pdf"),
            None,
        ] {
            assert_eq!(
                served_type(uploaded),
                ("application/octet-stream", false),
                "{uploaded:?}"
            );
        }
        assert_eq!(served_type(Some("Image/PNG")), ("image/png", true));
        assert_eq!(
            served_type(Some("text/plain; charset=utf-8")),
            ("text/plain", true)
        );
    }

    #[test]
    fn file_names_are_encoded() {
        assert_eq!(disposition(false, None), "attachment");
        assert_eq!(
            disposition(true, Some("cat.png")),
            "inline; filename=\"cat.png\""
        );
        assert_eq!(
            disposition(false, Some("a\"b\r\n.html")),
            "attachment; filename*=utf-8''a%22b%0D%0A.html"
        );
        assert_eq!(
            disposition(false, Some("été 🌞.txt")),
            "attachment; filename*=utf-8''%C3%A9t%C3%A9%20%F0%9F%8C%9E.txt"
        );
    }

    #[test]
    fn media_ids_are_long_and_url_safe() {
        let id = new_media_id();
        assert_eq!(id.len(), 32);
        assert!(is_valid_media_id(&id));
        assert!(!is_valid_media_id("../etc"));
        assert!(!is_valid_media_id(""));
    }
}
