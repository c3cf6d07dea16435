//! `/presence/{userId}/status`.

use axum::{Json as Reply, extract::State};
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::empty_object;
use crate::http::{
    AppState,
    error::MatrixError,
    extract::{Authed, Json, Path},
};

#[derive(Debug, Deserialize)]
pub struct SetPresence {
    presence: String,
    status_msg: Option<String>,
}

/// `PUT /presence/{userId}/status`.
pub async fn set_presence(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(user_id): Path<OwnedUserId>,
    Json(body): Json<SetPresence>,
) -> Result<Reply<Value>, MatrixError> {
    state
        .presence
        .set(&session.user_id, &user_id, &body.presence, body.status_msg)
        .await?;
    Ok(empty_object())
}

/// `GET /presence/{userId}/status`.
pub async fn get_presence(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(user_id): Path<OwnedUserId>,
) -> Result<Reply<Value>, MatrixError> {
    let view = state.presence.get(&session.user_id, &user_id).await?;
    let mut answer = json!({
        "presence": view.presence,
        "currently_active": view.currently_active,
    });
    if let Some(ago) = view.last_active_ago {
        answer["last_active_ago"] = Value::from(ago);
    }
    if let Some(msg) = view.status_msg {
        answer["status_msg"] = Value::from(msg);
    }
    Ok(Reply(answer))
}
