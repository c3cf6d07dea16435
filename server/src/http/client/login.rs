//! Logging in and out.

use axum::{Json as Reply, extract::State};
use ruma::OwnedDeviceId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    auth_data::{UserIdentifier, identified_user},
    empty_object,
};
use crate::{
    http::{
        AppState,
        error::MatrixError,
        extract::{Authed, ClientIp, Json},
    },
    service::{accounts::PasswordLogin, password::Password},
};

/// `GET /login`: the login types this server offers.
pub async fn get_login_types() -> Reply<Value> {
    Reply(json!({ "flows": [{ "type": "m.login.password" }] }))
}

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<UserIdentifier>,
    user: Option<String>,
    password: Option<String>,
    device_id: Option<OwnedDeviceId>,
    initial_device_display_name: Option<String>,
}

/// `POST /login`: a password login that opens a session on a new or reused device.
pub async fn login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    Json(body): Json<LoginRequest>,
) -> Result<Reply<Value>, MatrixError> {
    if body.kind != "m.login.password" {
        return Err(MatrixError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "only m.login.password is supported",
        ));
    }
    let login = PasswordLogin {
        user: identified_user(body.identifier, body.user)?,
        password: Password::new(
            body.password
                .ok_or_else(|| MatrixError::bad_json("password is required"))?,
        ),
        device_id: body.device_id,
        initial_device_display_name: body.initial_device_display_name,
    };
    let session = state.accounts.login(login, client).await?;
    Ok(Reply(json!({
        "user_id": session.user_id,
        "device_id": session.device_id,
        "access_token": session.access_token.expose(),
        "home_server": state.accounts.server_name(),
    })))
}

/// `POST /logout`: ends this session; its device is deleted.
pub async fn logout(
    State(state): State<AppState>,
    Authed(session): Authed,
) -> Result<Reply<Value>, MatrixError> {
    state.accounts.logout(&session).await?;
    Ok(empty_object())
}

/// `POST /logout/all`: ends every session of the user.
pub async fn logout_all(
    State(state): State<AppState>,
    Authed(session): Authed,
) -> Result<Reply<Value>, MatrixError> {
    state.accounts.logout_all(&session.user_id).await?;
    Ok(empty_object())
}
