//! Creating rooms and changing membership.

use axum::{
    Json as Reply,
    extract::{RawQuery, State},
    http::StatusCode,
};
use ruma::{CanonicalJsonObject, OwnedRoomId, OwnedRoomOrAliasId, OwnedServerName, OwnedUserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::empty_object;
use crate::{
    http::{
        AppState,
        error::MatrixError,
        extract::{Authed, Json, Path},
    },
    service::{
        ServiceError,
        room_ops::{CreateRoom, InitialState, Preset},
    },
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::enum_variant_names, reason = "the spec's preset names")]
enum PresetJson {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Visibility {
    Public,
    Private,
}

#[derive(Debug, Deserialize)]
pub struct InitialStateJson {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: CanonicalJsonObject,
}

#[derive(Debug, Deserialize)]
pub struct CreateRoomRequest {
    preset: Option<PresetJson>,
    visibility: Option<Visibility>,
    room_version: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<OwnedUserId>,
    #[serde(default)]
    initial_state: Vec<InitialStateJson>,
    power_level_content_override: Option<CanonicalJsonObject>,
    creation_content: Option<CanonicalJsonObject>,
    #[serde(default)]
    is_direct: bool,
    room_alias_name: Option<String>,
}

/// `POST /createRoom`.
pub async fn create_room(
    State(state): State<AppState>,
    Authed(session): Authed,
    Json(body): Json<CreateRoomRequest>,
) -> Result<Reply<Value>, MatrixError> {
    let request = CreateRoom {
        preset: body.preset.map(|preset| match preset {
            PresetJson::PrivateChat => Preset::PrivateChat,
            PresetJson::TrustedPrivateChat => Preset::TrustedPrivateChat,
            PresetJson::PublicChat => Preset::PublicChat,
        }),
        is_public: matches!(body.visibility, Some(Visibility::Public)),
        room_version: body.room_version,
        name: body.name,
        topic: body.topic,
        invite: body.invite,
        initial_state: body
            .initial_state
            .into_iter()
            .map(|s| InitialState {
                event_type: s.kind,
                state_key: s.state_key,
                content: s.content,
            })
            .collect(),
        power_level_content_override: body.power_level_content_override,
        creation_content: body.creation_content,
        is_direct: body.is_direct,
        room_alias_name: body.room_alias_name,
    };
    let room_id = state
        .rooms
        .create_room(&session.user_id, request)
        .await
        .map_err(|error| match error {
            // Only an initial event can fail the rules here: the spec's
            // "initial state implied by the parameters ... is invalid".
            ServiceError::Forbidden(reason) => {
                MatrixError::new(StatusCode::BAD_REQUEST, "M_INVALID_ROOM_STATE", reason)
            }
            other => other.into(),
        })?;
    Ok(Reply(json!({ "room_id": room_id })))
}

/// `GET /joined_rooms`.
pub async fn get_joined_rooms(
    State(state): State<AppState>,
    Authed(session): Authed,
) -> Result<Reply<Value>, MatrixError> {
    let rooms = state.rooms.joined_rooms(&session.user_id).await?;
    Ok(Reply(json!({ "joined_rooms": rooms })))
}

#[derive(Debug, Default, Deserialize)]
pub struct ReasonBody {
    reason: Option<String>,
}

/// The body of a join: `reason`, and whatever else the client wants in its
/// member event (as Synapse keeps it).
fn join_content(body: &[u8]) -> Result<CanonicalJsonObject, MatrixError> {
    let content = optional_body::<CanonicalJsonObject>(body)?;
    if content
        .get("reason")
        .is_some_and(|reason| !matches!(reason, ruma::CanonicalJsonValue::String(_)))
    {
        return Err(MatrixError::bad_json("reason must be a string"));
    }
    Ok(content)
}

/// `POST /join/{roomIdOrAlias}?server_name=…&via=…`.
pub async fn join_room_by_id_or_alias(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(target): Path<OwnedRoomOrAliasId>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Result<Reply<Value>, MatrixError> {
    let content = join_content(&body)?;
    let via = via_servers(query.as_deref());
    let room_id = state
        .rooms
        .join(&session.user_id, &target, &via, content)
        .await?;
    Ok(Reply(json!({ "room_id": room_id })))
}

/// Servers to join a room through: each `server_name` and `via` query
/// parameter that is a server name (others are skipped), at most ten.
fn via_servers(query: Option<&str>) -> Vec<OwnedServerName> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| matches!(*key, "server_name" | "via"))
        .filter_map(|(_, value)| OwnedServerName::try_from(percent_decode(value)).ok())
        .take(10)
        .collect()
}

/// Decodes `%XX` escapes (and `+` as a space) of a query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                i += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// `POST /knock/{roomIdOrAlias}?server_name=…&via=…`.
pub async fn knock_room(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(target): Path<OwnedRoomOrAliasId>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Result<Reply<Value>, MatrixError> {
    let body = optional_body::<ReasonBody>(&body)?;
    let via = via_servers(query.as_deref());
    let room_id = state
        .rooms
        .knock(&session.user_id, &target, &via, body.reason)
        .await?;
    Ok(Reply(json!({ "room_id": room_id })))
}

/// `POST /rooms/{roomId}/join`.
pub async fn join_room_by_id(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Result<Reply<Value>, MatrixError> {
    let content = join_content(&body)?;
    let via = via_servers(query.as_deref());
    let room_id = state
        .rooms
        .join(
            &session.user_id,
            <&ruma::RoomOrAliasId>::from(&*room_id),
            &via,
            content,
        )
        .await?;
    Ok(Reply(json!({ "room_id": room_id })))
}

/// `POST /rooms/{roomId}/leave`.
pub async fn leave_room(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    body: axum::body::Bytes,
) -> Result<Reply<Value>, MatrixError> {
    let body = optional_body::<ReasonBody>(&body)?;
    state
        .rooms
        .leave(&session.user_id, &room_id, body.reason)
        .await?;
    Ok(empty_object())
}

/// `POST /rooms/{roomId}/forget`.
pub async fn forget_room(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
) -> Result<Reply<Value>, MatrixError> {
    state.rooms.forget(&session.user_id, &room_id).await?;
    Ok(empty_object())
}

#[derive(Debug, Deserialize)]
pub struct TargetBody {
    user_id: OwnedUserId,
    reason: Option<String>,
}

/// `POST /rooms/{roomId}/invite`.
pub async fn invite_user(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    Json(body): Json<TargetBody>,
) -> Result<Reply<Value>, MatrixError> {
    state
        .rooms
        .invite(&session.user_id, &room_id, &body.user_id, body.reason)
        .await?;
    Ok(empty_object())
}

/// `POST /rooms/{roomId}/kick`.
pub async fn kick_user(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    Json(body): Json<TargetBody>,
) -> Result<Reply<Value>, MatrixError> {
    state
        .rooms
        .kick(&session.user_id, &room_id, &body.user_id, body.reason)
        .await?;
    Ok(empty_object())
}

/// `POST /rooms/{roomId}/ban`.
pub async fn ban_user(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    Json(body): Json<TargetBody>,
) -> Result<Reply<Value>, MatrixError> {
    state
        .rooms
        .ban(&session.user_id, &room_id, &body.user_id, body.reason)
        .await?;
    Ok(empty_object())
}

/// `POST /rooms/{roomId}/unban`.
pub async fn unban_user(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    Json(body): Json<TargetBody>,
) -> Result<Reply<Value>, MatrixError> {
    state
        .rooms
        .unban(&session.user_id, &room_id, &body.user_id, body.reason)
        .await?;
    Ok(empty_object())
}

/// Parses a body that may be empty.
fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, MatrixError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        crate::http::extract::parse_json(body)
    }
}

#[derive(Debug, Deserialize)]
pub struct UpgradeRoomRequest {
    new_version: String,
    #[serde(default)]
    additional_creators: Vec<OwnedUserId>,
}

/// `POST /rooms/{roomId}/upgrade`.
pub async fn upgrade_room(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    Json(body): Json<UpgradeRoomRequest>,
) -> Result<Reply<Value>, MatrixError> {
    let replacement = state
        .rooms
        .upgrade_room(
            &session.user_id,
            &room_id,
            &body.new_version,
            body.additional_creators,
        )
        .await?;
    Ok(Reply(json!({ "replacement_room": replacement })))
}
