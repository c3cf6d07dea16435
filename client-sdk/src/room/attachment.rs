//! Files in rooms: encrypted client-side in an encrypted room (the server
//! stores ciphertext and never sees the key), plain `url` otherwise; and
//! downloads that verify the ciphertext's hash before any plaintext is
//! handed back.

use myelin_crypto::attachment::{self, AttachmentDecryptor, EncryptedFile};
use reqwest::Method;
use ruma::OwnedEventId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Room;
use crate::{
    Client,
    error::{Error, Result},
    http::Request,
};

/// The content type of every encrypted upload: the server learns nothing
/// about the file from it.
const CIPHERTEXT_TYPE: &str = "application/octet-stream";

#[derive(Deserialize)]
struct Uploaded {
    content_uri: String,
}

impl Room {
    /// Uploads `data` and sends it as an `m.image` (for `image/*`) or
    /// `m.file` message named `file_name`.
    ///
    /// In an encrypted room the file is encrypted first (AES-256-CTR, see
    /// [`myelin_crypto::attachment`]); the ciphertext is uploaded as
    /// `application/octet-stream` without a name, and the event's `file`
    /// object, which holds the key, goes out inside the Megolm-encrypted
    /// event. In an unencrypted room the file is uploaded as is and the
    /// event carries its `url`.
    ///
    /// # Errors
    ///
    /// As [`Room::send`], plus the upload's Matrix and network errors.
    pub async fn send_attachment(
        &self,
        file_name: &str,
        content_type: &str,
        data: &[u8],
    ) -> Result<OwnedEventId> {
        let msgtype = if content_type.starts_with("image/") {
            "m.image"
        } else {
            "m.file"
        };
        let mut content = json!({
            "msgtype": msgtype,
            "body": file_name,
            "info": { "mimetype": content_type, "size": data.len() },
        });
        if self.is_encrypted().await? {
            let (ciphertext, keys) = attachment::encrypt(data).map_err(Error::Attachment)?;
            let url = self.client.upload_ciphertext(ciphertext).await?;
            content["file"] = EncryptedFile { url, keys }.to_json();
        } else {
            let request = Request::media_v3(Method::POST, &["upload"])
                .query("filename", file_name)
                .bytes(data.to_vec().into(), content_type);
            content["url"] = Value::String(self.client.upload(&request).await?);
        }
        self.send("m.room.message", content).await
    }
}

impl Client {
    /// Uploads encrypted bytes as `application/octet-stream`, unnamed, and
    /// returns their `mxc://` URI.
    pub(crate) async fn upload_ciphertext(&self, ciphertext: Vec<u8>) -> Result<String> {
        let request =
            Request::media_v3(Method::POST, &["upload"]).bytes(ciphertext.into(), CIPHERTEXT_TYPE);
        self.upload(&request).await
    }

    async fn upload(&self, request: &Request) -> Result<String> {
        // Retrying is safe: a repeated upload at worst leaves an unused copy.
        let uploaded: Uploaded = self
            .inner
            .http
            .send_with_retries(request, &self.inner.request_retry)
            .await?;
        Ok(uploaded.content_uri)
    }

    /// Downloads an `mxc://` URI's bytes (authenticated media).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a URI that is not `mxc://server/id`;
    /// Matrix and network errors.
    pub async fn download_media(&self, mxc: &str) -> Result<Vec<u8>> {
        let request = download_request(mxc)?;
        Ok(self.inner.http.send_for_bytes(&request).await?.to_vec())
    }

    /// Downloads an encrypted attachment chunk by chunk, decrypting each
    /// into `out` as it arrives, so a large file needs little memory.
    ///
    /// **What reaches `out` is unverified** until this returns `Ok`: the
    /// hash covers the whole ciphertext and is checked after the last
    /// chunk. On any error, discard everything written (write to a
    /// temporary file and move it into place only on success). Prefer
    /// [`Client::download_attachment`] for files that fit in memory: it
    /// never hands out unverified bytes. Returns the plaintext's length.
    ///
    /// # Errors
    ///
    /// As [`Client::download_attachment`], and [`Error::Write`] if `out`
    /// fails.
    pub async fn download_attachment_to<W>(&self, file: &Value, out: &mut W) -> Result<u64>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;

        let file = EncryptedFile::from_json(file).map_err(Error::Attachment)?;
        let request = download_request(&file.url)?;
        let mut response = self.inner.http.send_for_stream(&request).await?;
        let mut decryptor = AttachmentDecryptor::new(&file.keys);
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(Error::Network)? {
            let mut chunk = chunk.to_vec();
            decryptor.decrypt_chunk(&mut chunk);
            out.write_all(&chunk).await.map_err(Error::Write)?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(Error::Write)?;
        decryptor.finish().map_err(Error::Attachment)?;
        Ok(written)
    }

    /// Downloads an encrypted attachment (an event's `file` object), checks
    /// the ciphertext's SHA-256, and only then decrypts it.
    ///
    /// # Errors
    ///
    /// [`Error::Attachment`] for a `file` object that is not a valid `v2`
    /// one, or ciphertext that does not match its hash (a server or sender
    /// handing out other bytes); as [`Client::download_media`].
    pub async fn download_attachment(&self, file: &Value) -> Result<Vec<u8>> {
        let file = EncryptedFile::from_json(file).map_err(Error::Attachment)?;
        let ciphertext = self.download_media(&file.url).await?;
        attachment::decrypt(&ciphertext, &file.keys).map_err(Error::Attachment)
    }
}

/// `GET /_matrix/client/v1/media/download/{server}/{id}` for `mxc`.
fn download_request(mxc: &str) -> Result<Request> {
    let (server, media_id) = mxc
        .strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(server, id)| !server.is_empty() && !id.is_empty() && !id.contains('/'))
        .ok_or_else(|| Error::InvalidInput("not an mxc:// URI".to_owned()))?;
    Ok(Request::client_v1(
        Method::GET,
        &["media", "download", server, media_id],
    ))
}
