//! `/profile/{userId}` and the user directory that searches profiles.

use axum::{Json as Reply, extract::State};
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::empty_object;
use crate::{
    http::{
        AppState,
        error::MatrixError,
        extract::{Authed, Json, MaybeAuthed, Path},
    },
    storage::{Profile, ProfileField},
};

fn profile_json(profile: Profile, fields: &[ProfileField]) -> Value {
    let mut object = Map::new();
    for field in fields {
        let (key, value) = match field {
            ProfileField::Displayname => ("displayname", &profile.displayname),
            ProfileField::AvatarUrl => ("avatar_url", &profile.avatar_url),
        };
        if let Some(value) = value {
            object.insert(key.to_owned(), Value::from(value.as_str()));
        }
    }
    Value::Object(object)
}

async fn get_fields(
    state: &AppState,
    viewer: MaybeAuthed,
    user_id: &OwnedUserId,
    fields: &[ProfileField],
) -> Result<Reply<Value>, MatrixError> {
    let viewer = viewer.0.as_ref().map(|session| &*session.user_id);
    let profile = if user_id.server_name() == state.federation.server_name() {
        state.profiles.lookup(viewer, user_id).await?
    } else {
        state.profiles.check_lookup(viewer, user_id).await?;
        state.federation.query_profile(user_id).await?
    };
    Ok(Reply(profile_json(profile, fields)))
}

/// `GET /profile/{userId}`.
pub async fn get_profile(
    State(state): State<AppState>,
    viewer: MaybeAuthed,
    Path(user_id): Path<OwnedUserId>,
) -> Result<Reply<Value>, MatrixError> {
    get_fields(
        &state,
        viewer,
        &user_id,
        &[ProfileField::Displayname, ProfileField::AvatarUrl],
    )
    .await
}

/// `GET /profile/{userId}/displayname`.
pub async fn get_display_name(
    State(state): State<AppState>,
    viewer: MaybeAuthed,
    Path(user_id): Path<OwnedUserId>,
) -> Result<Reply<Value>, MatrixError> {
    get_fields(&state, viewer, &user_id, &[ProfileField::Displayname]).await
}

/// `GET /profile/{userId}/avatar_url`.
pub async fn get_avatar_url(
    State(state): State<AppState>,
    viewer: MaybeAuthed,
    Path(user_id): Path<OwnedUserId>,
) -> Result<Reply<Value>, MatrixError> {
    get_fields(&state, viewer, &user_id, &[ProfileField::AvatarUrl]).await
}

#[derive(Debug, Deserialize)]
pub struct SetDisplayName {
    displayname: Option<String>,
}

/// `PUT /profile/{userId}/displayname`: the caller's own only.
pub async fn set_display_name(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(user_id): Path<OwnedUserId>,
    Json(body): Json<SetDisplayName>,
) -> Result<Reply<Value>, MatrixError> {
    let value = body.displayname.as_deref();
    state
        .rooms
        .set_profile_field(&session.user_id, &user_id, ProfileField::Displayname, value)
        .await?;
    Ok(empty_object())
}

#[derive(Debug, Deserialize)]
pub struct SetAvatarUrl {
    avatar_url: Option<String>,
}

/// `PUT /profile/{userId}/avatar_url`: the caller's own only.
pub async fn set_avatar_url(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(user_id): Path<OwnedUserId>,
    Json(body): Json<SetAvatarUrl>,
) -> Result<Reply<Value>, MatrixError> {
    let value = body.avatar_url.as_deref();
    state
        .rooms
        .set_profile_field(&session.user_id, &user_id, ProfileField::AvatarUrl, value)
        .await?;
    Ok(empty_object())
}

#[derive(Debug, Deserialize)]
pub struct UserDirectorySearch {
    search_term: String,
    limit: Option<u64>,
}

/// `POST /user_directory/search`.
pub async fn search_user_directory(
    State(state): State<AppState>,
    Authed(session): Authed,
    Json(body): Json<UserDirectorySearch>,
) -> Result<Reply<Value>, MatrixError> {
    let found = state
        .profiles
        .search_directory(&session.user_id, &body.search_term, body.limit)
        .await?;
    let results: Vec<Value> = found
        .results
        .into_iter()
        .map(|(user_id, profile)| {
            let mut entry = json!({ "user_id": user_id });
            if let Some(name) = profile.displayname {
                entry["display_name"] = Value::from(name);
            }
            if let Some(avatar) = profile.avatar_url {
                entry["avatar_url"] = Value::from(avatar);
            }
            entry
        })
        .collect();
    Ok(Reply(
        json!({ "results": results, "limited": found.limited }),
    ))
}
