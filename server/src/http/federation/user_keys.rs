//! The end-to-end encryption endpoints of federation: other servers ask
//! for local users' device keys, claim their one-time keys, and resync
//! their device lists.

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use ruma::{OwnedDeviceId, OwnedUserId};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};

use super::Signed;
use crate::{
    http::{AppState, error::MatrixError, extract::Path},
    service::e2ee::query::QueriedKeys,
};

#[derive(Debug, Deserialize)]
pub struct QueryKeysBody {
    device_keys: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
}

/// `POST /user/keys/query`: `{device_keys, master_keys, self_signing_keys}`.
pub async fn get_keys(
    State(state): State<AppState>,
    signed: Signed<QueryKeysBody>,
) -> Result<Json<Value>, MatrixError> {
    let keys = state
        .e2ee_keys
        .query_for_server(signed.body.device_keys)
        .await?;
    let mut device_keys = Map::new();
    for (user_id, devices) in keys.device_keys {
        let devices = devices
            .into_iter()
            .map(|(device_id, json)| Ok((device_id.to_string(), raw(json)?)))
            .collect::<Result<Map<_, _>, MatrixError>>()?;
        device_keys.insert(user_id.to_string(), Value::Object(devices));
    }
    Ok(Json(json!({
        "device_keys": device_keys,
        "master_keys": by_user(keys.master_keys)?,
        "self_signing_keys": by_user(keys.self_signing_keys)?,
    })))
}

#[derive(Debug, Deserialize)]
pub struct ClaimKeysBody {
    one_time_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
}

/// `POST /user/keys/claim`: one key per device asked for, one-time or fallback.
pub async fn claim_keys(
    State(state): State<AppState>,
    signed: Signed<ClaimKeysBody>,
) -> Result<Json<Value>, MatrixError> {
    let claimed = state
        .e2ee_keys
        .claim_for_server(signed.body.one_time_keys)
        .await?;
    let mut one_time_keys = Map::new();
    for (user_id, devices) in claimed.one_time_keys {
        let mut by_device = Map::new();
        for (device_id, key) in devices {
            by_device.insert(device_id.to_string(), json!({ key.key_id: raw(key.json)? }));
        }
        one_time_keys.insert(user_id.to_string(), Value::Object(by_device));
    }
    Ok(Json(json!({ "one_time_keys": one_time_keys })))
}

/// `GET /user/devices/{userId}`: `{user_id, stream_id, devices, master_key?, self_signing_key?}`.
pub async fn get_devices(
    State(state): State<AppState>,
    Path(user_id): Path<OwnedUserId>,
    _signed: Signed<IgnoredAny>,
) -> Result<Json<Value>, MatrixError> {
    let (keys, position) = state.e2ee_keys.devices_for_server(&user_id).await?;
    let QueriedKeys {
        mut device_keys,
        mut master_keys,
        mut self_signing_keys,
        ..
    } = keys;
    let devices = device_keys
        .remove(&user_id)
        .unwrap_or_default()
        .into_iter()
        .map(|(device_id, json)| Ok(json!({ "device_id": device_id, "keys": raw(json)? })))
        .collect::<Result<Vec<_>, MatrixError>>()?;
    let mut answer = json!({
        "user_id": user_id,
        "stream_id": position.0,
        "devices": devices,
    });
    if let Some(master) = master_keys.remove(&user_id) {
        answer["master_key"] = raw(master)?;
    }
    if let Some(self_signing) = self_signing_keys.remove(&user_id) {
        answer["self_signing_key"] = raw(self_signing)?;
    }
    Ok(Json(answer))
}

fn by_user(keys: BTreeMap<OwnedUserId, String>) -> Result<Map<String, Value>, MatrixError> {
    keys.into_iter()
        .map(|(user_id, json)| Ok((user_id.to_string(), raw(json)?)))
        .collect()
}

/// A stored key object as JSON.
fn raw(json: String) -> Result<Value, MatrixError> {
    serde_json::from_str(&json).map_err(|e| {
        crate::service::ServiceError::Internal(format!("stored key JSON is invalid: {e}")).into()
    })
}
