//! Room aliases and the public room directory.

use axum::{Json as Reply, extract::State};
use ruma::{OwnedRoomAliasId, OwnedRoomId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::empty_object;
use crate::{
    http::{
        AppState,
        error::MatrixError,
        extract::{Authed, ClientIp, Json, Path, Query},
    },
    service::room_ops::PublicRoom,
};

/// Most rooms one directory page returns.
const MAX_PUBLIC_ROOMS_PAGE: usize = 500;

#[derive(Debug, Deserialize)]
pub struct AliasBody {
    room_id: OwnedRoomId,
}

/// `PUT /directory/room/{roomAlias}`.
pub async fn create_room_alias(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(alias): Path<OwnedRoomAliasId>,
    Json(body): Json<AliasBody>,
) -> Result<Reply<Value>, MatrixError> {
    state
        .rooms
        .create_alias(&session.user_id, &alias, &body.room_id)
        .await?;
    Ok(empty_object())
}

/// `GET /directory/room/{roomAlias}`.
pub async fn get_room_alias(
    State(state): State<AppState>,
    Path(alias): Path<OwnedRoomAliasId>,
) -> Result<Reply<Value>, MatrixError> {
    let room_id = state.rooms.resolve_alias(&alias).await?;
    Ok(Reply(
        json!({ "room_id": room_id, "servers": [alias.server_name()] }),
    ))
}

/// `DELETE /directory/room/{roomAlias}`.
pub async fn delete_room_alias(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(alias): Path<OwnedRoomAliasId>,
) -> Result<Reply<Value>, MatrixError> {
    state.rooms.delete_alias(&session.user_id, &alias).await?;
    Ok(empty_object())
}

/// `GET /rooms/{roomId}/aliases`.
pub async fn get_room_aliases(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
) -> Result<Reply<Value>, MatrixError> {
    let aliases = state.rooms.room_aliases(&session.user_id, &room_id).await?;
    Ok(Reply(json!({ "aliases": aliases })))
}

/// `GET /directory/list/room/{roomId}`.
pub async fn get_room_visibility(
    State(state): State<AppState>,
    Path(room_id): Path<OwnedRoomId>,
) -> Result<Reply<Value>, MatrixError> {
    let is_public = state.rooms.is_public(&room_id).await?;
    Ok(Reply(
        json!({ "visibility": if is_public { "public" } else { "private" } }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct VisibilityBody {
    /// The spec: "Defaults to 'public'".
    #[serde(default = "public")]
    visibility: String,
}

fn public() -> String {
    "public".to_owned()
}

/// `PUT /directory/list/room/{roomId}`.
pub async fn set_room_visibility(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    Json(body): Json<VisibilityBody>,
) -> Result<Reply<Value>, MatrixError> {
    let is_public = match body.visibility.as_str() {
        "public" => true,
        "private" => false,
        _ => {
            return Err(MatrixError::invalid_param(
                "visibility must be public or private",
            ));
        }
    };
    state
        .rooms
        .set_public(&session.user_id, &room_id, is_public)
        .await?;
    state.public_rooms.invalidate();
    Ok(empty_object())
}

#[derive(Debug, Default, Deserialize)]
pub struct PublicRoomsQuery {
    limit: Option<usize>,
    since: Option<String>,
    server: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PublicRoomsFilter {
    pub(crate) generic_search_term: Option<String>,
    /// Room types to list; `null` stands for rooms without a type.
    room_types: Option<Vec<Option<String>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PublicRoomsBody {
    limit: Option<usize>,
    since: Option<String>,
    server: Option<String>,
    #[serde(default)]
    filter: PublicRoomsFilter,
}

/// `GET /publicRooms`: this server's directory (no authentication needed).
pub async fn get_public_rooms(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    Query(query): Query<PublicRoomsQuery>,
) -> Result<Reply<Value>, MatrixError> {
    let filter = PublicRoomsFilter::default();
    list_public_rooms(
        &state,
        client,
        query.server,
        filter,
        query.limit,
        query.since,
    )
    .await
}

/// `POST /publicRooms`: with a search filter.
pub async fn get_public_rooms_filtered(
    State(state): State<AppState>,
    Authed(_): Authed,
    ClientIp(client): ClientIp,
    Query(query): Query<ServerQuery>,
    Json(body): Json<PublicRoomsBody>,
) -> Result<Reply<Value>, MatrixError> {
    let filter = body.filter;
    // The spec puts `server` in the query string here; older clients sent it
    // in the body.
    let server = query.server.or(body.server);
    list_public_rooms(&state, client, server, filter, body.limit, body.since).await
}

#[derive(Debug, Default, Deserialize)]
pub struct ServerQuery {
    server: Option<String>,
}

async fn list_public_rooms(
    state: &AppState,
    client: std::net::IpAddr,
    server: Option<String>,
    filter: PublicRoomsFilter,
    limit: Option<usize>,
    since: Option<String>,
) -> Result<Reply<Value>, MatrixError> {
    if let Some(server) = server
        && server != state.server_keys.server_name().as_str()
    {
        return Err(MatrixError::invalid_param(
            "only this server's directory is available",
        ));
    }
    let listed = state
        .public_rooms
        .list(client, filter.generic_search_term.as_deref())
        .await?;
    Ok(Reply(public_rooms_page(&listed, &filter, limit, since)?))
}

/// One page of a directory listing, `{chunk, total_room_count_estimate,
/// next_batch?, prev_batch?}`, for clients and other servers.
///
/// # Errors
/// `M_INVALID_PARAM` for a `since` token that is not one.
pub(crate) fn public_rooms_page(
    listed: &[PublicRoom],
    filter: &PublicRoomsFilter,
    limit: Option<usize>,
    since: Option<String>,
) -> Result<Value, MatrixError> {
    let rooms: Vec<&PublicRoom> = listed
        .iter()
        .filter(|room| {
            filter
                .room_types
                .as_ref()
                .is_none_or(|types| types.contains(&room.room_type))
        })
        .collect();
    let start: usize = match since {
        Some(token) => token
            .parse()
            .map_err(|_| MatrixError::invalid_param("invalid since token"))?,
        None => 0,
    };
    let limit = limit
        .unwrap_or(MAX_PUBLIC_ROOMS_PAGE)
        .clamp(1, MAX_PUBLIC_ROOMS_PAGE);
    let end = start.saturating_add(limit).min(rooms.len());
    let chunk: Vec<Value> = rooms
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(|room| public_room_json(room))
        .collect();
    let mut page = json!({ "chunk": chunk, "total_room_count_estimate": rooms.len() });
    if end < rooms.len() {
        page["next_batch"] = json!(end.to_string());
    }
    if start > 0 {
        page["prev_batch"] = json!(start.saturating_sub(limit).to_string());
    }
    Ok(page)
}

fn public_room_json(room: &PublicRoom) -> Value {
    let mut value = json!({
        "room_id": room.room_id,
        "num_joined_members": room.num_joined_members,
        "world_readable": room.world_readable,
        "guest_can_join": room.guest_can_join,
    });
    for (key, field) in [
        ("name", &room.name),
        ("topic", &room.topic),
        ("canonical_alias", &room.canonical_alias),
        ("avatar_url", &room.avatar_url),
        ("join_rule", &room.join_rule),
        ("room_type", &room.room_type),
    ] {
        if let Some(field) = field {
            value[key] = json!(field);
        }
    }
    value
}
