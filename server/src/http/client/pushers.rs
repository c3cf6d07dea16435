//! `/pushers`: the push gateways registered for the user's devices.

use axum::{Json as Reply, extract::State};
use serde_json::{Map, Value, json};

use super::empty_object;
use crate::http::{
    AppState,
    error::MatrixError,
    extract::{Authed, Json},
};

/// `GET /pushers`.
pub async fn get_pushers(
    State(state): State<AppState>,
    Authed(session): Authed,
) -> Result<Reply<Value>, MatrixError> {
    let pushers = state.pushers.list(&session.user_id).await?;
    Ok(Reply(json!({ "pushers": pushers })))
}

/// `POST /pushers/set`.
pub async fn set_pusher(
    State(state): State<AppState>,
    Authed(session): Authed,
    Json(body): Json<Map<String, Value>>,
) -> Result<Reply<Value>, MatrixError> {
    state.pushers.set(&session, &body).await?;
    Ok(empty_object())
}
