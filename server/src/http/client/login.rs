//! Logging in and out.

use axum::{Json as Reply, extract::State};
use ruma::OwnedDeviceId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

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
    service::{
        accounts::{NewSession, PasswordLogin},
        password::Password,
        tokens::AccessToken,
    },
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
    #[serde(default)]
    refresh_token: bool,
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
        refresh_token: body.refresh_token,
    };
    let session = state.accounts.login(login, client).await?;
    let mut reply = session_json(&session);
    reply.insert(
        "home_server".to_owned(),
        Value::from(state.accounts.server_name().as_str()),
    );
    Ok(Reply(Value::Object(reply)))
}

/// A new session as login and registration answer it: the ids, the access
/// token, and the refresh token with the access token's lifetime when the
/// client asked for one.
pub fn session_json(session: &NewSession) -> Map<String, Value> {
    let mut reply = Map::new();
    reply.insert("user_id".to_owned(), Value::from(session.user_id.as_str()));
    reply.insert(
        "device_id".to_owned(),
        Value::from(session.device_id.as_str()),
    );
    reply.insert(
        "access_token".to_owned(),
        Value::from(session.access_token.expose()),
    );
    if let Some(refresh) = &session.refresh {
        reply.insert(
            "refresh_token".to_owned(),
            Value::from(refresh.refresh_token.expose()),
        );
        let expires_in_ms = u64::try_from(refresh.expires_in.as_millis()).unwrap_or(u64::MAX);
        reply.insert("expires_in_ms".to_owned(), Value::from(expires_in_ms));
    }
    reply
}

#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// `POST /refresh`: a new access token (and refresh token) for a refresh token.
pub async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<Reply<Value>, MatrixError> {
    let presented = AccessToken::from_presented(&body.refresh_token);
    let session = state.accounts.refresh(&presented).await?;
    let mut reply = session_json(&session);
    reply.remove("user_id");
    reply.remove("device_id");
    Ok(Reply(Value::Object(reply)))
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
