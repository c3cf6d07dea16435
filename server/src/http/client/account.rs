//! `/account`: who am I, changing the password, and deactivation.

use axum::{Json as Reply, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    auth_data::{self, AuthData},
    empty_object,
};
use crate::{
    http::{
        AppState,
        error::MatrixError,
        extract::{Authed, Json},
    },
    service::password::Password,
};

/// `GET /account/whoami`.
pub async fn whoami(Authed(session): Authed) -> Reply<Value> {
    Reply(json!({
        "user_id": session.user_id,
        "device_id": session.device_id,
        "is_guest": session.is_guest,
    }))
}

#[derive(Debug, Deserialize)]
pub struct ChangePasswordRequest {
    new_password: String,
    #[serde(default = "logout_devices_default")]
    logout_devices: bool,
    auth: Option<AuthData>,
}

fn logout_devices_default() -> bool {
    true
}

/// `POST /account/password`: needs the current password (UIA); by default
/// logs out every other device.
pub async fn change_password(
    State(state): State<AppState>,
    Authed(session): Authed,
    Json(body): Json<ChangePasswordRequest>,
) -> Result<Reply<Value>, MatrixError> {
    let new_password = Password::new(body.new_password);
    let auth = auth_data::submission(body.auth)?;
    state
        .accounts
        .change_password(&session, &new_password, body.logout_devices, auth)
        .await?;
    Ok(empty_object())
}

#[derive(Debug, Deserialize)]
pub struct DeactivateRequest {
    #[serde(default)]
    erase: bool,
    auth: Option<AuthData>,
}

/// `POST /account/deactivate`: needs the password (UIA); the account is
/// closed for good and leaves every room.
pub async fn deactivate(
    State(state): State<AppState>,
    Authed(session): Authed,
    Json(body): Json<DeactivateRequest>,
) -> Result<Reply<Value>, MatrixError> {
    let auth = auth_data::submission(body.auth)?;
    state
        .accounts
        .deactivate(&session, body.erase, auth)
        .await?;
    state.rooms.leave_every_room(&session.user_id).await?;
    // No identity server is bound, so there is nothing to unbind.
    Ok(Reply(json!({ "id_server_unbind_result": "no-support" })))
}
