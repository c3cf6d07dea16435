//! `/devices` and `/delete_devices`.

use axum::{Json as Reply, extract::State};
use ruma::OwnedDeviceId;
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
        extract::{Authed, Json, Path},
    },
    storage::Device,
};

fn device_json(device: Device) -> Value {
    json!({ "device_id": device.device_id, "display_name": device.display_name })
}

/// `GET /devices`: all of the caller's devices.
pub async fn get_devices(
    State(state): State<AppState>,
    Authed(session): Authed,
) -> Result<Reply<Value>, MatrixError> {
    let devices = state.devices.list(&session.user_id).await?;
    Ok(Reply(
        json!({ "devices": devices.into_iter().map(device_json).collect::<Vec<_>>() }),
    ))
}

/// `GET /devices/{deviceId}`.
pub async fn get_device(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(device_id): Path<OwnedDeviceId>,
) -> Result<Reply<Value>, MatrixError> {
    let device = state.devices.get(&session.user_id, &device_id).await?;
    Ok(Reply(device_json(device)))
}

#[derive(Debug, Deserialize)]
pub struct UpdateDeviceRequest {
    display_name: Option<String>,
}

/// `PUT /devices/{deviceId}`: renames a device.
pub async fn update_device(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(device_id): Path<OwnedDeviceId>,
    Json(body): Json<UpdateDeviceRequest>,
) -> Result<Reply<Value>, MatrixError> {
    state
        .devices
        .rename(&session.user_id, &device_id, body.display_name.as_deref())
        .await?;
    Ok(empty_object())
}

#[derive(Debug, Deserialize)]
pub struct DeleteDeviceRequest {
    auth: Option<AuthData>,
}

/// `DELETE /devices/{deviceId}`: needs the password (UIA). A body is optional.
pub async fn delete_device(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(device_id): Path<OwnedDeviceId>,
    body: axum::body::Bytes,
) -> Result<Reply<Value>, MatrixError> {
    let auth = if body.is_empty() {
        None
    } else {
        crate::http::extract::parse_json::<DeleteDeviceRequest>(&body)?.auth
    };
    let auth = auth_data::submission(auth)?;
    state
        .devices
        .delete(&session.user_id, vec![device_id], auth)
        .await?;
    Ok(empty_object())
}

#[derive(Debug, Deserialize)]
pub struct DeleteDevicesRequest {
    devices: Vec<OwnedDeviceId>,
    auth: Option<AuthData>,
}

/// `POST /delete_devices`: deletes several devices at once (UIA).
pub async fn delete_devices(
    State(state): State<AppState>,
    Authed(session): Authed,
    Json(body): Json<DeleteDevicesRequest>,
) -> Result<Reply<Value>, MatrixError> {
    let auth = auth_data::submission(body.auth)?;
    state
        .devices
        .delete(&session.user_id, body.devices, auth)
        .await?;
    Ok(empty_object())
}
