//! The content repository: `/_matrix/media` (uploads) and
//! `/_matrix/client/v1/media` (authenticated downloads and config, MSC3916).
//!
//! Upload bodies are streamed to the media service chunk by chunk, so their
//! limit is `max_upload_bytes`, not the JSON endpoints' `max_request_body_bytes`.
//! Downloads are streamed from disk with headers that keep a browser from
//! treating an upload as a page or a script. Thumbnails are not served: their
//! routes fall through to `M_UNRECOGNIZED`.

use axum::{
    Json as Reply, Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use futures_util::StreamExt;
use ruma::OwnedServerName;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::{
    AppState,
    error::MatrixError,
    extract::{Authed, Path, Query},
};
use crate::service::media::StagedUpload;

/// Allows no scripts, plugins or frames even if a browser renders the file.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; \
     object-src 'self';";

/// Bytes read from disk per response chunk.
const READ_CHUNK: usize = 64 * 1024;

/// Routes under `/_matrix/media` and `/_matrix/client/v1/media`. Upload
/// routes take bodies up to `max_upload_bytes`, overriding the app's
/// default limit for JSON.
pub fn router(max_upload_bytes: u64) -> Router<AppState> {
    let upload_limit =
        DefaultBodyLimit::max(usize::try_from(max_upload_bytes).unwrap_or(usize::MAX));
    let uploads = Router::new()
        .route("/_matrix/media/v3/upload", post(create_content))
        .route(
            "/_matrix/media/v3/upload/{server_name}/{media_id}",
            put(create_content_async),
        )
        .layer(upload_limit);
    Router::new()
        .merge(uploads)
        .route("/_matrix/media/v1/create", post(create_mxc_uri))
        .route("/_matrix/client/v1/media/config", get(get_media_config))
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}",
            get(get_content),
        )
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}",
            get(get_content_as_filename),
        )
}

/// The `?filename=` of an upload.
#[derive(Debug, Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

/// `POST /_matrix/media/v3/upload`.
async fn create_content(
    State(state): State<AppState>,
    Authed(session): Authed,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Reply<Value>, MatrixError> {
    let staged = state
        .media
        .begin_upload(&session.user_id, content_length(&headers))
        .await?;
    let staged = receive(staged, body).await?;
    let uri = state
        .media
        .finish_upload(
            staged,
            &session.user_id,
            content_type(&headers),
            query.filename.as_deref(),
        )
        .await?;
    Ok(Reply(json!({ "content_uri": uri })))
}

/// `POST /_matrix/media/v1/create`.
async fn create_mxc_uri(
    State(state): State<AppState>,
    Authed(session): Authed,
) -> Result<Reply<Value>, MatrixError> {
    let (uri, expires) = state.media.create(&session.user_id).await?;
    Ok(Reply(
        json!({ "content_uri": uri, "unused_expires_at": expires.0 }),
    ))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`.
async fn create_content_async(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((server_name, media_id)): Path<(OwnedServerName, String)>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Reply<Value>, MatrixError> {
    let staged = state
        .media
        .begin_upload_to(
            &session.user_id,
            &server_name,
            &media_id,
            content_length(&headers),
        )
        .await?;
    let staged = receive(staged, body).await?;
    state
        .media
        .finish_upload(
            staged,
            &session.user_id,
            content_type(&headers),
            query.filename.as_deref(),
        )
        .await?;
    Ok(Reply(json!({})))
}

/// `GET /_matrix/client/v1/media/config`.
async fn get_media_config(State(state): State<AppState>, Authed(_): Authed) -> Reply<Value> {
    Reply(json!({ "m.upload.size": state.media.max_upload_bytes() }))
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`.
async fn get_content(
    State(state): State<AppState>,
    Authed(_): Authed,
    Path((server_name, media_id)): Path<(OwnedServerName, String)>,
) -> Result<Response, MatrixError> {
    download(&state, &server_name, &media_id, None).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`.
async fn get_content_as_filename(
    State(state): State<AppState>,
    Authed(_): Authed,
    Path((server_name, media_id, file_name)): Path<(OwnedServerName, String, String)>,
) -> Result<Response, MatrixError> {
    download(&state, &server_name, &media_id, Some(&file_name)).await
}

async fn download(
    state: &AppState,
    server_name: &OwnedServerName,
    media_id: &str,
    file_name: Option<&str>,
) -> Result<Response, MatrixError> {
    let download = state
        .media
        .download(server_name, media_id, file_name)
        .await?;
    let disposition = HeaderValue::from_str(&download.content_disposition)
        .map_err(|_| MatrixError::invalid_param("file name cannot be sent in a header"))?;
    let body = Body::from_stream(futures_util::stream::unfold(
        Some(download.file),
        |file| async move {
            let mut file = file?;
            let mut buffer = vec![0; READ_CHUNK];
            match file.read(&mut buffer).await {
                Ok(0) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    Some((Ok(Bytes::from(buffer)), Some(file)))
                }
                // Ends the stream after the error, which aborts the response.
                Err(e) => Some((Err(e), None)),
            }
        },
    ));
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(download.content_type),
        ),
        (header::CONTENT_LENGTH, HeaderValue::from(download.size)),
        (header::CONTENT_DISPOSITION, disposition),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("cross-origin"),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=86400, immutable"),
        ),
    ];
    Ok((headers, body).into_response())
}

/// Feeds the request body to the staged upload as it arrives.
async fn receive(mut staged: StagedUpload, body: Body) -> Result<StagedUpload, MatrixError> {
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            MatrixError::new(
                StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "could not read the upload",
            )
        })?;
        staged.write(&chunk).await?;
    }
    Ok(staged)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE)?.to_str().ok()
}
