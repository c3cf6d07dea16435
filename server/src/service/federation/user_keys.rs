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

#[cfg(test)]
mod tests {
    use myelin_crypto::cross_signing::CrossSigningKey;
    use ruma::{ServerName, user_id};

    use super::*;

    /// A key object signed by `key` as `user_id`.
    fn signed(key: &CrossSigningKey, user_id: &str, object: Value) -> Value {
        let Value::Object(mut object) = object else {
            panic!("an object")
        };
        key.sign_json(user_id, &mut object).expect("sign");
        Value::Object(object)
    }

    /// Device keys of `device_id`, whose ed25519 key is `key`: the device
    /// is named after its public key, so the key id is `ed25519:<device>`.
    fn device_keys(key: &CrossSigningKey, user_id: &str) -> (String, Value) {
        let device_id = key.public_key().to_base64();
        let object = json!({
            "user_id": user_id,
            "device_id": device_id,
            "algorithms": ["m.megolm.v1.aes-sha2"],
            "keys": {
                format!("ed25519:{device_id}"): device_id,
                format!("curve25519:{device_id}"): CrossSigningKey::generate().public_key().to_base64(),
            },
        });
        (device_id, signed(key, user_id, object))
    }

    fn cross_signing_key(key: &CrossSigningKey, user_id: &str, usage: &str) -> Value {
        json!({
            "user_id": user_id,
            "usage": [usage],
            "keys": { key.key_id(): key.public_key().to_base64() },
        })
    }

    #[test]
    fn only_keys_that_verify_are_kept() {
        let server = ServerName::parse("b.example").expect("server name");
        let bob = user_id!("@bob:b.example");
        let (good_device, good) = device_keys(&CrossSigningKey::generate(), bob.as_str());
        let (forged_device, mut forged) = device_keys(&CrossSigningKey::generate(), bob.as_str());
        forged["algorithms"] = json!(["m.olm.v1.curve25519-aes-sha2"]);
        let master = CrossSigningKey::generate();
        let self_signing = CrossSigningKey::generate();
        let master_json = cross_signing_key(&master, bob.as_str(), "master");
        let answer = |self_signing_json: Value| {
            json!({
                "device_keys": { bob: { &good_device: good, &forged_device: forged } },
                "master_keys": { bob: master_json },
                "self_signing_keys": { bob: self_signing_json },
            })
        };
        let unsigned = cross_signing_key(&self_signing, bob.as_str(), "self_signing");
        let signed_by_master = signed(&master, bob.as_str(), unsigned.clone());

        let mut keys = QueriedKeys::default();
        add_user_keys(&mut keys, &server, bob, &[], &answer(signed_by_master));
        let devices = &keys.device_keys[bob];
        assert!(devices.contains_key(good_device.as_str()));
        assert!(!devices.contains_key(forged_device.as_str()), "forged kept");
        assert!(keys.master_keys.contains_key(bob));
        assert!(keys.self_signing_keys.contains_key(bob));

        // A self-signing key the master key did not sign is left out.
        let mut keys = QueriedKeys::default();
        add_user_keys(&mut keys, &server, bob, &[], &answer(unsigned));
        assert!(keys.master_keys.contains_key(bob));
        assert!(keys.self_signing_keys.is_empty());

        // A server answering for another server's user is not believed.
        let eve = user_id!("@eve:c.example");
        let (device, eve_keys) = device_keys(&CrossSigningKey::generate(), eve.as_str());
        let mut keys = QueriedKeys::default();
        let answer = json!({ "device_keys": { eve: { device: eve_keys } } });
        add_user_keys(&mut keys, &server, eve, &[], &answer);
        assert!(keys.device_keys.is_empty());
    }

    #[test]
    fn a_claimed_key_must_be_one_of_the_algorithm_asked_for() {
        let key = json!({ "signed_curve25519:AAA": { "key": "k" } });
        let claimed = claimed_key(&key, "signed_curve25519").expect("a key");
        assert_eq!(claimed.key_id, "signed_curve25519:AAA");
        assert!(claimed_key(&key, "curve25519").is_none());
        let two = json!({ "signed_curve25519:A": "a", "signed_curve25519:B": "b" });
        assert!(claimed_key(&two, "signed_curve25519").is_none());
        assert!(claimed_key(&json!({ "signed_curve25519:A": 1 }), "signed_curve25519").is_none());
    }
}
