//! MSC3814 dehydrated devices, under
//! `/_matrix/client/unstable/org.matrix.msc3814.v1`: `PUT`, `GET` and
//! `DELETE /dehydrated_device`, and `POST /dehydrated_device/{deviceId}/events`.

use std::collections::BTreeMap;

use axum::{Json as Reply, extract::State, response::Response};
use ruma::OwnedDeviceId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};

use super::{events::json_response, sync::to_device_events};
use crate::{
    http::{
        AppState,
        error::MatrixError,
        extract::{Authed, Json, Path},
    },
    service::{dehydrated_devices::NewDehydratedDevice, e2ee::keys::KeysUpload},
};

/// The body of `PUT /dehydrated_device`.
#[derive(Debug, Deserialize)]
pub struct PutDehydratedDeviceBody {
    device_id: OwnedDeviceId,
    device_data: Box<RawValue>,
    device_keys: Box<RawValue>,
    #[serde(default)]
    one_time_keys: BTreeMap<String, Box<RawValue>>,
    #[serde(default)]
    fallback_keys: BTreeMap<String, Box<RawValue>>,
    initial_device_display_name: Option<String>,
}

/// `PUT /dehydrated_device`: creates the user's dehydrated device, replacing
/// the one they had.
pub async fn put_dehydrated_device(
    State(state): State<AppState>,
    Authed(session): Authed,
    Json(body): Json<PutDehydratedDeviceBody>,
) -> Result<Reply<Value>, MatrixError> {
    // Opaque to the server but for this: the MSC makes it an object.
    if !body.device_data.get().starts_with('{') {
        return Err(MatrixError::bad_json("device_data is not a JSON object"));
    }
    let texts = |keys: BTreeMap<String, Box<RawValue>>| {
        keys.into_iter()
            .map(|(key_id, json)| (key_id, json.get().to_owned()))
            .collect()
    };
    let device = NewDehydratedDevice {
        device_id: body.device_id,
        device_data: body.device_data.get().to_owned(),
        display_name: body.initial_device_display_name,
        keys: KeysUpload {
            device_keys: Some(body.device_keys.get().to_owned()),
            one_time_keys: texts(body.one_time_keys),
            fallback_keys: texts(body.fallback_keys),
        },
    };
    let device_id = state
        .dehydrated_devices
        .replace(&session.user_id, device)
        .await?;
    Ok(Reply(json!({ "device_id": device_id })))
}

#[derive(Serialize)]
struct DehydratedDeviceBody<'a> {
    device_id: &'a str,
    device_data: &'a RawValue,
}

/// `GET /dehydrated_device`: the user's dehydrated device and its data.
pub async fn get_dehydrated_device(
    State(state): State<AppState>,
    Authed(session): Authed,
) -> Result<Response, MatrixError> {
    let device = state.dehydrated_devices.get(&session.user_id).await?;
    // Stored as the JSON text the client sent, so it parses back.
    let data = RawValue::from_string(device.device_data)
        .map_err(|e| MatrixError::from(crate::service::ServiceError::Internal(e.to_string())))?;
    json_response(&DehydratedDeviceBody {
        device_id: device.device_id.as_str(),
        device_data: &data,
    })
}

/// `DELETE /dehydrated_device`.
pub async fn delete_dehydrated_device(
    State(state): State<AppState>,
    Authed(session): Authed,
) -> Result<Reply<Value>, MatrixError> {
    let device_id = state.dehydrated_devices.delete(&session.user_id).await?;
    Ok(Reply(json!({ "device_id": device_id })))
}

/// The body of `POST /dehydrated_device/{deviceId}/events`.
#[derive(Debug, Deserialize)]
pub struct GetEventsBody {
    next_batch: Option<String>,
}

#[derive(Serialize)]
struct EventsBody {
    events: Vec<Box<RawValue>>,
    next_batch: String,
}

/// `POST /dehydrated_device/{deviceId}/events`: a page of the device's
/// to-device messages; `next_batch` acknowledges the earlier pages.
pub async fn get_dehydrated_events(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(device_id): Path<OwnedDeviceId>,
    Json(body): Json<GetEventsBody>,
) -> Result<Response, MatrixError> {
    let page = state
        .dehydrated_devices
        .events(&session.user_id, &device_id, body.next_batch.as_deref())
        .await?;
    json_response(&EventsBody {
        events: to_device_events(&page.messages).events,
        next_batch: page.next_batch.0.to_string(),
    })
}
