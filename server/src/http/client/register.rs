//! Account registration: `POST /register` and its helpers.

use axum::{Json as Reply, extract::State};
use ruma::OwnedDeviceId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    auth_data::{self, AuthData},
    login::session_json,
};
use crate::{
    http::{
        AppState,
        error::MatrixError,
        extract::{ClientIp, Json, Query},
    },
    service::{
        accounts::{Registered, Registration},
        password::Password,
        tokens::AccessToken,
    },
};

#[derive(Debug, Deserialize)]
pub struct RegisterQuery {
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RegisterRequest {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<OwnedDeviceId>,
    initial_device_display_name: Option<String>,
    inhibit_login: Option<bool>,
    refresh_token: Option<bool>,
    auth: Option<AuthData>,
    guest_access_token: Option<String>,
}

/// `POST /register`: creates an account after user-interactive auth.
pub async fn register(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    Query(query): Query<RegisterQuery>,
    Json(body): Json<RegisterRequest>,
) -> Result<Reply<Value>, MatrixError> {
    let home_server = state.accounts.server_name().to_string();
    match query.kind.as_deref() {
        None | Some("user") => {}
        Some("guest") => {
            let session = state
                .accounts
                .register_guest(body.initial_device_display_name.as_deref(), client)
                .await?;
            let mut reply = session_json(&session);
            reply.insert("home_server".to_owned(), Value::from(home_server));
            return Ok(Reply(Value::Object(reply)));
        }
        Some(_) => return Err(MatrixError::invalid_param("kind must be user or guest")),
    }
    let registration = Registration {
        username: body.username,
        password: body.password.map(Password::new),
        device_id: body.device_id,
        initial_device_display_name: body.initial_device_display_name,
        inhibit_login: body.inhibit_login,
        refresh_token: body.refresh_token,
        auth: auth_data::submission(body.auth)?,
        guest_access_token: body
            .guest_access_token
            .as_deref()
            .map(AccessToken::from_presented),
    };
    Ok(Reply(
        match state.accounts.register(registration, client).await? {
            Registered::LoggedIn(session) => {
                let mut reply = session_json(&session);
                reply.insert("home_server".to_owned(), Value::from(home_server));
                Value::Object(reply)
            }
            Registered::AccountOnly(user_id) => json!({
                "user_id": user_id,
                "home_server": home_server,
            }),
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct AvailabilityQuery {
    username: String,
}

/// `GET /register/available`: whether a username could be registered.
pub async fn check_registration_availability(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    Query(query): Query<AvailabilityQuery>,
) -> Result<Reply<Value>, MatrixError> {
    state
        .accounts
        .check_username_available(&query.username, client)
        .await?;
    Ok(Reply(json!({ "available": true })))
}

#[derive(Debug, Deserialize)]
pub struct TokenValidityQuery {
    token: String,
}

/// `GET /v1/register/m.login.registration_token/validity`.
pub async fn check_registration_token_validity(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    Query(query): Query<TokenValidityQuery>,
) -> Result<Reply<Value>, MatrixError> {
    let valid = state
        .accounts
        .check_registration_token_validity(&query.token, client)?;
    Ok(Reply(json!({ "valid": valid })))
}
