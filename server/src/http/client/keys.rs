//! End-to-end encryption keys: `/keys/upload`, `/keys/query`,
//! `/keys/claim`, `/keys/changes`, `/keys/device_signing/upload` and
//! `/keys/signatures/upload` ([spec]).
//!
//! Key objects pass through as raw JSON text: the service checks them and
//! stores the text, and they are served back as that text.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#end-to-end-encryption

use std::{collections::BTreeMap, time::Duration};

use axum::{Json as Reply, extract::State, response::Response};
use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};

use super::{
    auth_data::{self, AuthData},
    empty_object,
    events::json_response,
};
use crate::{
    http::{
        AppState,
        error::MatrixError,
        extract::{Authed, Json, Query},
    },
    service::{
        e2ee::{cross_signing::SigningKeysUpload, keys::KeysUpload},
        sync::SyncToken,
    },
};

/// The body of `POST /keys/upload`.
#[derive(Debug, Deserialize)]
pub struct UploadKeysBody {
    device_keys: Option<Box<RawValue>>,
    #[serde(default)]
    one_time_keys: BTreeMap<String, Box<RawValue>>,
    /// Clients from before fallback keys were stable use the MSC2732 name.
    #[serde(default, alias = "org.matrix.msc2732.fallback_keys")]
    fallback_keys: BTreeMap<String, Box<RawValue>>,
}

/// `POST /keys/upload`.
pub async fn upload_keys(
    State(state): State<AppState>,
    Authed(session): Authed,
    Json(body): Json<UploadKeysBody>,
) -> Result<Reply<Value>, MatrixError> {
    let texts = |keys: BTreeMap<String, Box<RawValue>>| {
        keys.into_iter()
            .map(|(key_id, json)| (key_id, json.get().to_owned()))
            .collect()
    };
    let upload = KeysUpload {
        device_keys: body.device_keys.map(|json| json.get().to_owned()),
        one_time_keys: texts(body.one_time_keys),
        fallback_keys: texts(body.fallback_keys),
    };
    let counts = state.e2ee_keys.upload(&session, upload).await?;
    Ok(Reply(json!({ "one_time_key_counts": counts })))
}

/// How long remote servers get when the client names no `timeout`.
const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a client may make remote servers wait.
const MAX_REMOTE_TIMEOUT: Duration = Duration::from_secs(60);

/// The body of `POST /keys/query`.
#[derive(Debug, Deserialize)]
pub struct QueryKeysBody {
    device_keys: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    /// Milliseconds remote servers get to answer.
    timeout: Option<u64>,
}

/// The client's `timeout`, capped, or the default.
fn remote_timeout(timeout: Option<u64>) -> Duration {
    timeout.map_or(DEFAULT_REMOTE_TIMEOUT, |ms| {
        Duration::from_millis(ms).min(MAX_REMOTE_TIMEOUT)
    })
}

/// The requested users of other servers, with what is asked of each.
fn remote_part<T: Clone>(
    state: &AppState,
    wanted: &BTreeMap<OwnedUserId, T>,
) -> BTreeMap<OwnedUserId, T> {
    let server_name = state.federation.server_name();
    wanted
        .iter()
        .filter(|(user_id, _)| user_id.server_name() != server_name)
        .map(|(user_id, what)| (user_id.clone(), what.clone()))
        .collect()
}

#[derive(Serialize)]
struct QueryKeysReply {
    device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Box<RawValue>>>,
    master_keys: BTreeMap<OwnedUserId, Box<RawValue>>,
    self_signing_keys: BTreeMap<OwnedUserId, Box<RawValue>>,
    user_signing_keys: BTreeMap<OwnedUserId, Box<RawValue>>,
    failures: BTreeMap<OwnedServerName, Value>,
}

/// `POST /keys/query`.
pub async fn get_keys(
    State(state): State<AppState>,
    Authed(session): Authed,
    Json(body): Json<QueryKeysBody>,
) -> Result<Response, MatrixError> {
    // The local part first: it also enforces the request's size limits.
    let remote = remote_part(&state, &body.device_keys);
    let mut keys = state
        .e2ee_keys
        .query(&session.user_id, body.device_keys)
        .await?;
    let (remote, failures) = state
        .federation
        .query_keys(remote, remote_timeout(body.timeout))
        .await;
    keys.device_keys.extend(remote.device_keys);
    keys.master_keys.extend(remote.master_keys);
    keys.self_signing_keys.extend(remote.self_signing_keys);
    let by_user = |keys: BTreeMap<OwnedUserId, String>| {
        keys.into_iter()
            .map(|(user_id, json)| Ok((user_id, raw(json)?)))
            .collect::<Result<BTreeMap<_, _>, MatrixError>>()
    };
    let mut device_keys = BTreeMap::new();
    for (user_id, devices) in keys.device_keys {
        let devices = devices
            .into_iter()
            .map(|(device_id, json)| Ok((device_id, raw(json)?)))
            .collect::<Result<_, MatrixError>>()?;
        device_keys.insert(user_id, devices);
    }
    json_response(&QueryKeysReply {
        device_keys,
        master_keys: by_user(keys.master_keys)?,
        self_signing_keys: by_user(keys.self_signing_keys)?,
        user_signing_keys: by_user(keys.user_signing_keys)?,
        failures,
    })
}

/// The body of `POST /keys/claim`.
#[derive(Debug, Deserialize)]
pub struct ClaimKeysBody {
    one_time_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    /// Milliseconds remote servers get to answer.
    timeout: Option<u64>,
}

#[derive(Serialize)]
struct ClaimKeysReply {
    one_time_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<String, Box<RawValue>>>>,
    failures: BTreeMap<OwnedServerName, Value>,
}

/// `POST /keys/claim`.
pub async fn claim_keys(
    State(state): State<AppState>,
    Authed(_session): Authed,
    Json(body): Json<ClaimKeysBody>,
) -> Result<Response, MatrixError> {
    let remote = remote_part(&state, &body.one_time_keys);
    let mut claimed = state.e2ee_keys.claim(body.one_time_keys).await?;
    let (remote, failures) = state
        .federation
        .claim_keys(remote, remote_timeout(body.timeout))
        .await;
    claimed.one_time_keys.extend(remote.one_time_keys);
    let mut one_time_keys = BTreeMap::new();
    for (user_id, devices) in claimed.one_time_keys {
        let mut by_device = BTreeMap::new();
        for (device_id, key) in devices {
            by_device.insert(device_id, BTreeMap::from([(key.key_id, raw(key.json)?)]));
        }
        one_time_keys.insert(user_id, by_device);
    }
    json_response(&ClaimKeysReply {
        one_time_keys,
        failures,
    })
}

/// `?from=&to=` of `GET /keys/changes`: two sync tokens.
#[derive(Debug, Deserialize)]
pub struct KeyChangesQuery {
    from: String,
    to: String,
}

/// `GET /keys/changes`.
pub async fn get_key_changes(
    State(state): State<AppState>,
    Authed(session): Authed,
    Query(query): Query<KeyChangesQuery>,
) -> Result<Reply<Value>, MatrixError> {
    let from = SyncToken::parse(&query.from)?.position;
    let to = SyncToken::parse(&query.to)?.position;
    let changes = state
        .e2ee_keys
        .key_changes(&session.user_id, from, to)
        .await?;
    Ok(Reply(
        json!({ "changed": changes.changed, "left": changes.left }),
    ))
}

/// The body of `POST /keys/device_signing/upload`.
#[derive(Debug, Deserialize)]
pub struct UploadSigningKeysBody {
    master_key: Option<Box<RawValue>>,
    self_signing_key: Option<Box<RawValue>>,
    user_signing_key: Option<Box<RawValue>>,
    auth: Option<AuthData>,
}

/// `POST /keys/device_signing/upload`.
pub async fn upload_signing_keys(
    State(state): State<AppState>,
    Authed(session): Authed,
    Json(body): Json<UploadSigningKeysBody>,
) -> Result<Reply<Value>, MatrixError> {
    let text = |json: Option<Box<RawValue>>| json.map(|json| json.get().to_owned());
    let upload = SigningKeysUpload {
        master_key: text(body.master_key),
        self_signing_key: text(body.self_signing_key),
        user_signing_key: text(body.user_signing_key),
        auth: auth_data::submission(body.auth)?,
    };
    state
        .e2ee_keys
        .upload_signing_keys(&session.user_id, upload)
        .await?;
    Ok(empty_object())
}

/// `POST /keys/signatures/upload`: signed key objects by user, then key id.
pub async fn upload_signatures(
    State(state): State<AppState>,
    Authed(session): Authed,
    Json(body): Json<BTreeMap<OwnedUserId, BTreeMap<String, Box<RawValue>>>>,
) -> Result<Reply<Value>, MatrixError> {
    let signed = body
        .into_iter()
        .map(|(user_id, objects)| {
            let objects = objects
                .into_iter()
                .map(|(key_id, json)| (key_id, json.get().to_owned()))
                .collect();
            (user_id, objects)
        })
        .collect();
    let failures = state
        .e2ee_keys
        .upload_signatures(&session.user_id, signed)
        .await?;
    let failures: BTreeMap<_, BTreeMap<_, _>> = failures
        .into_iter()
        .map(|(user_id, by_key)| {
            let by_key = by_key
                .into_iter()
                .map(|(key_id, f)| (key_id, json!({ "errcode": f.errcode, "error": f.error })))
                .collect();
            (user_id, by_key)
        })
        .collect();
    Ok(Reply(json!({ "failures": failures })))
}

fn raw(json: String) -> Result<Box<RawValue>, MatrixError> {
    RawValue::from_string(json).map_err(|e| {
        MatrixError::from(crate::service::ServiceError::Internal(format!(
            "stored key JSON is invalid: {e}"
        )))
    })
}
