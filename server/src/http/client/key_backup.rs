//! Server-side key backups: `/room_keys/version` and `/room_keys/keys`
//! ([spec]).
//!
//! `auth_data` and `session_data` pass through as raw JSON text: they are
//! checked to be objects, as the spec types them, and otherwise never parsed.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#server-side-key-backups

use std::collections::BTreeMap;

use axum::{Json as Reply, extract::State};
use ruma::{OwnedRoomId, UInt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};

use super::empty_object;
use crate::{
    http::{
        AppState,
        error::MatrixError,
        extract::{Authed, Json, Path, Query},
    },
    service::ServiceError,
    storage::{BackedUpKey, BackupInfo, KeyRank, KeySelection, KeysState},
};

/// The body of `POST /room_keys/version` and `PUT /room_keys/version/{version}`.
#[derive(Debug, Deserialize)]
pub struct VersionBody {
    algorithm: String,
    auth_data: Box<RawValue>,
    /// Only in updates, where it must match the path.
    version: Option<String>,
}

/// `?version=`, which every `/room_keys/keys` endpoint requires.
#[derive(Debug, Deserialize)]
pub struct VersionQuery {
    version: Option<String>,
}

/// One backed-up session on the wire (`KeyBackupData`).
#[derive(Debug, Deserialize)]
pub struct KeyBackupData {
    first_message_index: UInt,
    forwarded_count: UInt,
    is_verified: bool,
    session_data: Box<RawValue>,
}

/// The sessions of one room (`RoomKeyBackup`).
#[derive(Debug, Deserialize)]
pub struct RoomKeyBackup {
    sessions: BTreeMap<String, KeyBackupData>,
}

/// The body of `PUT /room_keys/keys`.
#[derive(Debug, Deserialize)]
pub struct KeysBody {
    rooms: BTreeMap<OwnedRoomId, RoomKeyBackup>,
}

/// `POST /room_keys/version`.
pub async fn create_backup_version(
    State(state): State<AppState>,
    Authed(session): Authed,
    Json(body): Json<VersionBody>,
) -> Result<Reply<Value>, MatrixError> {
    let auth_data = object_text(&body.auth_data, "auth_data")?;
    let version = state
        .key_backup
        .create_version(&session.user_id, &body.algorithm, &auth_data)
        .await?;
    Ok(Reply(json!({ "version": version.to_string() })))
}

/// `GET /room_keys/version`: the latest version.
pub async fn get_latest_backup_info(
    State(state): State<AppState>,
    Authed(session): Authed,
) -> Result<Reply<BackupInfoReply>, MatrixError> {
    let info = state.key_backup.latest_version(&session.user_id).await?;
    BackupInfoReply::new(info).map(Reply)
}

/// `GET /room_keys/version/{version}`.
pub async fn get_backup_info(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(version): Path<String>,
) -> Result<Reply<BackupInfoReply>, MatrixError> {
    let info = state.key_backup.version(&session.user_id, &version).await?;
    BackupInfoReply::new(info).map(Reply)
}

/// `PUT /room_keys/version/{version}`: replaces `auth_data`.
pub async fn update_backup_version(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(version): Path<String>,
    Json(body): Json<VersionBody>,
) -> Result<Reply<Value>, MatrixError> {
    let auth_data = object_text(&body.auth_data, "auth_data")?;
    state
        .key_backup
        .update_version(
            &session.user_id,
            &version,
            body.version.as_deref(),
            &body.algorithm,
            &auth_data,
        )
        .await?;
    Ok(empty_object())
}

/// `DELETE /room_keys/version/{version}`.
pub async fn delete_backup_version(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(version): Path<String>,
) -> Result<Reply<Value>, MatrixError> {
    state
        .key_backup
        .delete_version(&session.user_id, &version)
        .await?;
    Ok(empty_object())
}

/// `PUT /room_keys/keys`.
pub async fn add_backup_keys(
    State(state): State<AppState>,
    Authed(session): Authed,
    Query(query): Query<VersionQuery>,
    Json(body): Json<KeysBody>,
) -> Result<Reply<KeysReply>, MatrixError> {
    let mut keys = Vec::new();
    for (room_id, room) in body.rooms {
        push_room_keys(&mut keys, &room_id, room)?;
    }
    let version = required_version(query)?;
    let written = state
        .key_backup
        .put_keys(&session.user_id, &version, &keys)
        .await?;
    Ok(Reply(written.into()))
}

/// `PUT /room_keys/keys/{roomId}`.
pub async fn add_backup_keys_for_room(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    Query(query): Query<VersionQuery>,
    Json(body): Json<RoomKeyBackup>,
) -> Result<Reply<KeysReply>, MatrixError> {
    let mut keys = Vec::new();
    push_room_keys(&mut keys, &room_id, body)?;
    let version = required_version(query)?;
    let written = state
        .key_backup
        .put_keys(&session.user_id, &version, &keys)
        .await?;
    Ok(Reply(written.into()))
}

/// `PUT /room_keys/keys/{roomId}/{sessionId}`.
pub async fn add_backup_keys_for_session(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((room_id, session_id)): Path<(OwnedRoomId, String)>,
    Query(query): Query<VersionQuery>,
    Json(body): Json<KeyBackupData>,
) -> Result<Reply<KeysReply>, MatrixError> {
    let key = backed_up_key(room_id, session_id, body)?;
    let version = required_version(query)?;
    let written = state
        .key_backup
        .put_keys(&session.user_id, &version, &[key])
        .await?;
    Ok(Reply(written.into()))
}

/// `GET /room_keys/keys`.
pub async fn get_backup_keys(
    State(state): State<AppState>,
    Authed(session): Authed,
    Query(query): Query<VersionQuery>,
) -> Result<Reply<AllKeysReply>, MatrixError> {
    let version = required_version(query)?;
    let keys = state
        .key_backup
        .keys(&session.user_id, &version, KeySelection::All)
        .await?;
    let mut rooms: BTreeMap<OwnedRoomId, RoomKeysReply> = BTreeMap::new();
    for key in keys {
        let room = rooms.entry(key.room_id.clone()).or_default();
        let (session_id, data) = KeyBackupDataReply::new(key)?;
        room.sessions.insert(session_id, data);
    }
    Ok(Reply(AllKeysReply { rooms }))
}

/// `GET /room_keys/keys/{roomId}`.
pub async fn get_backup_keys_for_room(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    Query(query): Query<VersionQuery>,
) -> Result<Reply<RoomKeysReply>, MatrixError> {
    let version = required_version(query)?;
    let keys = state
        .key_backup
        .keys(&session.user_id, &version, KeySelection::Room(&room_id))
        .await?;
    let sessions = keys
        .into_iter()
        .map(KeyBackupDataReply::new)
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    Ok(Reply(RoomKeysReply { sessions }))
}

/// `GET /room_keys/keys/{roomId}/{sessionId}`.
pub async fn get_backup_keys_for_session(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((room_id, session_id)): Path<(OwnedRoomId, String)>,
    Query(query): Query<VersionQuery>,
) -> Result<Reply<KeyBackupDataReply>, MatrixError> {
    let version = required_version(query)?;
    let keys = state
        .key_backup
        .keys(
            &session.user_id,
            &version,
            KeySelection::Session(&room_id, &session_id),
        )
        .await?;
    let key = keys
        .into_iter()
        .next()
        .ok_or_else(|| ServiceError::Internal("a found session yielded no key".to_owned()))?;
    KeyBackupDataReply::new(key).map(|(_, data)| Reply(data))
}

/// `DELETE /room_keys/keys`.
pub async fn delete_backup_keys(
    State(state): State<AppState>,
    Authed(session): Authed,
    Query(query): Query<VersionQuery>,
) -> Result<Reply<KeysReply>, MatrixError> {
    let version = required_version(query)?;
    let state = state
        .key_backup
        .delete_keys(&session.user_id, &version, KeySelection::All)
        .await?;
    Ok(Reply(state.into()))
}

/// `DELETE /room_keys/keys/{roomId}`.
pub async fn delete_backup_keys_for_room(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    Query(query): Query<VersionQuery>,
) -> Result<Reply<KeysReply>, MatrixError> {
    let version = required_version(query)?;
    let state = state
        .key_backup
        .delete_keys(&session.user_id, &version, KeySelection::Room(&room_id))
        .await?;
    Ok(Reply(state.into()))
}

/// `DELETE /room_keys/keys/{roomId}/{sessionId}`.
pub async fn delete_backup_keys_for_session(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((room_id, session_id)): Path<(OwnedRoomId, String)>,
    Query(query): Query<VersionQuery>,
) -> Result<Reply<KeysReply>, MatrixError> {
    let version = required_version(query)?;
    let state = state
        .key_backup
        .delete_keys(
            &session.user_id,
            &version,
            KeySelection::Session(&room_id, &session_id),
        )
        .await?;
    Ok(Reply(state.into()))
}

/// A backup version on the wire, `auth_data` verbatim.
#[derive(Debug, Serialize)]
pub struct BackupInfoReply {
    algorithm: String,
    auth_data: Box<RawValue>,
    count: u64,
    etag: String,
    version: String,
}

impl BackupInfoReply {
    fn new(info: BackupInfo) -> Result<Self, MatrixError> {
        Ok(Self {
            auth_data: stored_json(info.auth_data)?,
            algorithm: info.algorithm,
            count: info.count,
            etag: info.etag.to_string(),
            version: info.version.to_string(),
        })
    }
}

/// Every backed-up session, by room. Built from typed structs, never
/// through `serde_json::Value`, which would re-serialise the raw JSON.
#[derive(Debug, Serialize)]
pub struct AllKeysReply {
    rooms: BTreeMap<OwnedRoomId, RoomKeysReply>,
}

/// The backed-up sessions of one room.
#[derive(Debug, Default, Serialize)]
pub struct RoomKeysReply {
    sessions: BTreeMap<String, KeyBackupDataReply>,
}

/// A backed-up session on the wire, `session_data` verbatim.
#[derive(Debug, Serialize)]
pub struct KeyBackupDataReply {
    first_message_index: i64,
    forwarded_count: i64,
    is_verified: bool,
    session_data: Box<RawValue>,
}

impl KeyBackupDataReply {
    /// The session id and the wire form of a stored key.
    fn new(key: BackedUpKey) -> Result<(String, Self), MatrixError> {
        let reply = Self {
            first_message_index: key.rank.first_message_index,
            forwarded_count: key.rank.forwarded_count,
            is_verified: key.rank.is_verified,
            session_data: stored_json(key.session_data)?,
        };
        Ok((key.session_id, reply))
    }
}

/// A backup's key count and etag after a write.
#[derive(Debug, Serialize)]
pub struct KeysReply {
    count: u64,
    etag: String,
}

impl From<KeysState> for KeysReply {
    fn from(state: KeysState) -> Self {
        Self {
            count: state.count,
            etag: state.etag.to_string(),
        }
    }
}

fn required_version(query: VersionQuery) -> Result<String, MatrixError> {
    query.version.ok_or_else(|| {
        ServiceError::MissingParam("the version parameter is required".to_owned()).into()
    })
}

fn push_room_keys(
    keys: &mut Vec<BackedUpKey>,
    room_id: &OwnedRoomId,
    room: RoomKeyBackup,
) -> Result<(), MatrixError> {
    for (session_id, data) in room.sessions {
        keys.push(backed_up_key(room_id.clone(), session_id, data)?);
    }
    Ok(())
}

fn backed_up_key(
    room_id: OwnedRoomId,
    session_id: String,
    data: KeyBackupData,
) -> Result<BackedUpKey, MatrixError> {
    Ok(BackedUpKey {
        room_id,
        session_id,
        rank: KeyRank {
            is_verified: data.is_verified,
            first_message_index: wire_int(data.first_message_index),
            forwarded_count: wire_int(data.forwarded_count),
        },
        session_data: object_text(&data.session_data, "session_data")?,
    })
}

/// A JSON integer as stored: `UInt` is at most 2^53 - 1, so it always fits.
fn wire_int(value: UInt) -> i64 {
    i64::try_from(u64::from(value)).unwrap_or(i64::MAX)
}

/// Raw JSON that the spec types as an object, as the text to store.
fn object_text(raw: &RawValue, field: &str) -> Result<String, MatrixError> {
    if !raw.get().starts_with('{') {
        return Err(MatrixError::bad_json(format!("{field} must be an object")));
    }
    Ok(raw.get().to_owned())
}

/// Stored JSON text, to send verbatim.
fn stored_json(text: String) -> Result<Box<RawValue>, MatrixError> {
    RawValue::from_string(text).map_err(|e| ServiceError::Internal(e.to_string()).into())
}
