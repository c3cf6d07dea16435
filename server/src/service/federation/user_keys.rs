//! Other servers' users' keys, asked for on behalf of local clients
//! (`/keys/query` and `/keys/claim`): one request per server, all at once,
//! each within the client's timeout. A server that fails or is too slow is
//! named in `failures`; what the others answer is checked as uploads are —
//! only that server's users, only what was asked for, device and
//! self-signing keys that verify — and whatever fails a check is left out.

use std::{collections::BTreeMap, time::Duration};

use futures_util::future::join_all;
use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use super::{Federation, FederationError};
use crate::{
    service::e2ee::{
        keys::ClaimedKeys,
        query::QueriedKeys,
        validate::{check_cross_signing_key, check_device_keys, check_signed_by},
    },
    storage::{CrossSigningKeyType, OneTimeKey},
};

const QUERY_PATH: &str = "/_matrix/federation/v1/user/keys/query";
const CLAIM_PATH: &str = "/_matrix/federation/v1/user/keys/claim";

/// Servers that could not be asked, each with `{status, message}`.
pub type Failures = BTreeMap<OwnedServerName, Value>;

impl Federation {
    /// The keys of remote users' devices (all of a user's when the list is
    /// empty) and their master and self-signing keys.
    pub async fn query_keys(
        &self,
        wanted: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
        timeout: Duration,
    ) -> (QueriedKeys, Failures) {
        let (answers, failures) = self
            .ask_each_server(wanted, timeout, QUERY_PATH, "device_keys")
            .await;
        let mut keys = QueriedKeys::default();
        for (server, users, answer) in answers {
            for (user_id, devices) in users {
                add_user_keys(&mut keys, &server, &user_id, &devices, &answer);
            }
        }
        (keys, failures)
    }

    /// One key per remote device asked for, of the algorithm asked for.
    pub async fn claim_keys(
        &self,
        wanted: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
        timeout: Duration,
    ) -> (ClaimedKeys, Failures) {
        let (answers, failures) = self
            .ask_each_server(wanted, timeout, CLAIM_PATH, "one_time_keys")
            .await;
        let mut claimed = ClaimedKeys::default();
        for (_, users, answer) in answers {
            for (user_id, devices) in users {
                for (device_id, algorithm) in devices {
                    let key = answer
                        .pointer(&format!("/one_time_keys/{user_id}/{device_id}"))
                        .and_then(|keys| claimed_key(keys, &algorithm));
                    if let Some(key) = key {
                        claimed
                            .one_time_keys
                            .entry(user_id.clone())
                            .or_default()
                            .insert(device_id, key);
                    }
                }
            }
        }
        (claimed, failures)
    }

    /// Groups `wanted` by server and posts each server its part as
    /// `{field: users}` to `path`, all at once; the answers of those that
    /// answered in time, and the failures of the others.
    async fn ask_each_server<T: serde::Serialize>(
        &self,
        wanted: BTreeMap<OwnedUserId, T>,
        timeout: Duration,
        path: &str,
        field: &str,
    ) -> (
        Vec<(OwnedServerName, BTreeMap<OwnedUserId, T>, Value)>,
        Failures,
    ) {
        let mut by_server: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> = BTreeMap::new();
        for (user_id, what) in wanted {
            by_server
                .entry(user_id.server_name().to_owned())
                .or_default()
                .insert(user_id, what);
        }
        if !self.enabled {
            let failures = by_server
                .into_keys()
                .map(|server| {
                    let message = "this server does not federate";
                    (server, json!({ "status": 503, "message": message }))
                })
                .collect();
            return (Vec::new(), failures);
        }
        let asked = by_server.iter().map(|(server, users)| async move {
            let body = json!({ field: users });
            let request = self.client.post(server, path, &body);
            (server.clone(), tokio::time::timeout(timeout, request).await)
        });
        let outcomes = join_all(asked).await;
        let mut answers = Vec::new();
        let mut failures = Failures::new();
        for (server, outcome) in outcomes {
            let users = by_server.remove(&server).unwrap_or_default();
            match outcome {
                Ok(Ok(answer)) => answers.push((server, users, answer)),
                Ok(Err(error)) => {
                    tracing::info!(%server, %error, "remote key request failed");
                    failures.insert(server, failure(&error));
                }
                Err(_) => {
                    failures.insert(
                        server,
                        json!({ "status": 504, "message": "the server did not answer in time" }),
                    );
                }
            }
        }
        (answers, failures)
    }
}

/// The `failures` entry for a server that answered with an error or not at all.
fn failure(error: &FederationError) -> Value {
    let status = match error {
        FederationError::Remote { status, .. } => *status,
        _ => 503,
    };
    json!({ "status": status, "message": error.to_string() })
}

/// Adds what `answer` holds for `user_id` (a user of `server`) to `keys`,
/// leaving out every key object that fails the checks uploads pass.
fn add_user_keys(
    keys: &mut QueriedKeys,
    server: &OwnedServerName,
    user_id: &UserId,
    wanted_devices: &[OwnedDeviceId],
    answer: &Value,
) {
    if user_id.server_name() != server {
        return;
    }
    let served = |field: &str| answer.get(field).and_then(|f| f.get(user_id.as_str()));
    if let Some(Value::Object(devices)) = served("device_keys") {
        let mut checked = BTreeMap::new();
        for (device_id, device_keys) in devices {
            let device_id = OwnedDeviceId::from(device_id.as_str());
            if !wanted_devices.is_empty() && !wanted_devices.contains(&device_id) {
                continue;
            }
            let json = device_keys.to_string();
            if check_device_keys(&json, user_id, &device_id).is_ok() {
                checked.insert(device_id, json);
            }
        }
        keys.device_keys.insert(user_id.to_owned(), checked);
    }
    let Some(master) = served("master_keys").map(Value::to_string) else {
        return;
    };
    let Ok((master_key, _)) =
        check_cross_signing_key(&master, user_id, CrossSigningKeyType::Master)
    else {
        return;
    };
    keys.master_keys.insert(user_id.to_owned(), master);
    // The self-signing key counts only when the master key signed it.
    if let Some(self_signing) = served("self_signing_keys").map(Value::to_string) {
        let signed =
            check_cross_signing_key(&self_signing, user_id, CrossSigningKeyType::SelfSigning)
                .is_ok_and(|(_, object)| {
                    check_signed_by(&object, user_id, &master_key.public_key, "self_signing_key")
                        .is_ok()
                });
        if signed {
            keys.self_signing_keys
                .insert(user_id.to_owned(), self_signing);
        }
    }
}

/// The one key of `{key_id: key}` when its algorithm is the one asked for.
/// Its signature is the claiming client's to check: only the client holds
/// the device's verified identity key.
fn claimed_key(keys: &Value, algorithm: &str) -> Option<OneTimeKey> {
    let keys: &Map<String, Value> = keys.as_object()?;
    let (key_id, key) = keys.iter().next()?;
    let (key_algorithm, name) = key_id.split_once(':')?;
    if keys.len() != 1 || key_algorithm != algorithm || name.is_empty() {
        return None;
    }
    if !(key.is_object() || key.is_string()) {
        return None;
    }
    Some(OneTimeKey {
        key_id: key_id.clone(),
        algorithm: algorithm.to_owned(),
        json: key.to_string(),
    })
}
