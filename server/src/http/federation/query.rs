//! `GET /_matrix/federation/v1/query/{profile,directory}`.

use axum::{Json, extract::State};
use ruma::{OwnedRoomAliasId, OwnedUserId};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};

use super::Signed;
use crate::http::{AppState, error::MatrixError, extract::Query};

#[derive(Debug, Deserialize)]
pub struct ProfileQuery {
    user_id: OwnedUserId,
    field: Option<String>,
}

/// A local user's display name and avatar, or the one `field` asked for.
pub async fn get_profile_information(
    State(state): State<AppState>,
    Query(query): Query<ProfileQuery>,
    _signed: Signed<IgnoredAny>,
) -> Result<Json<Value>, MatrixError> {
    let profile = state.profiles.lookup_for_server(&query.user_id).await?;
    let mut answer = Map::new();
    let wanted = |name: &str| query.field.as_deref().is_none_or(|field| field == name);
    if let Some(displayname) = profile.displayname.filter(|_| wanted("displayname")) {
        answer.insert("displayname".to_owned(), Value::from(displayname));
    }
    if let Some(avatar_url) = profile.avatar_url.filter(|_| wanted("avatar_url")) {
        answer.insert("avatar_url".to_owned(), Value::from(avatar_url));
    }
    Ok(Json(Value::Object(answer)))
}

#[derive(Debug, Deserialize)]
pub struct DirectoryQuery {
    room_alias: OwnedRoomAliasId,
}

/// The room a local alias points at, and this server as the one to join through.
pub async fn get_room_information(
    State(state): State<AppState>,
    Query(query): Query<DirectoryQuery>,
    _signed: Signed<IgnoredAny>,
) -> Result<Json<Value>, MatrixError> {
    let server_name = state.federation.server_name();
    if query.room_alias.server_name() != server_name {
        return Err(MatrixError::invalid_param(
            "the alias is not an alias of this server",
        ));
    }
    let room_id = state.rooms.resolve_alias(&query.room_alias).await?;
    Ok(Json(
        json!({ "room_id": room_id, "servers": [server_name] }),
    ))
}
