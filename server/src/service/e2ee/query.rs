//! `POST /keys/query`: the device keys and cross-signing keys of users,
//! with the signatures uploaded for them merged in.

use std::collections::BTreeMap;

use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde_json::{Map, Value};

use super::E2eeKeys;
use crate::{
    service::ServiceError,
    storage::{CrossSigningKeyType, KeySignature, SignatureTarget, StreamPosition},
};

/// Key objects as served, each JSON text.
#[derive(Debug, Default)]
pub struct QueriedKeys {
    /// Device keys by user, then device.
    pub device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    /// Master keys by user.
    pub master_keys: BTreeMap<OwnedUserId, String>,
    /// Self-signing keys by user.
    pub self_signing_keys: BTreeMap<OwnedUserId, String>,
    /// The requester's own user-signing key, if asked for and present.
    pub user_signing_keys: BTreeMap<OwnedUserId, String>,
}

impl E2eeKeys {
    /// The keys of the requested devices (all of a user's when the list is
    /// empty), and of each user's master and self-signing keys; the
    /// user-signing key only of the requester. A signature someone uploaded
    /// is shown only when the signer is the key's owner or the requester:
    /// who verified whom is nobody else's business.
    ///
    /// # Errors
    /// `InvalidParam` for more users than the server answers at once;
    /// storage failures; `Internal` for stored JSON that no longer parses.
    pub async fn query(
        &self,
        requester: &UserId,
        wanted: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<QueriedKeys, ServiceError> {
        self.query_as(Some(requester), wanted).await
    }

    /// `POST /_matrix/federation/v1/user/keys/query` from another server:
    /// the keys of local users only, with no user-signing key, only the
    /// owners' own signatures, and no device names (they are the owner's
    /// business).
    ///
    /// # Errors
    /// `InvalidParam` for a user of another server or too many users;
    /// storage failures.
    pub async fn query_for_server(
        &self,
        wanted: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<QueriedKeys, ServiceError> {
        self.check_all_local(wanted.keys())?;
        self.query_as(None, wanted).await
    }

    /// `GET /_matrix/federation/v1/user/devices/{userId}`: a local user's
    /// devices with their keys (no names), master and self-signing keys,
    /// and the user's last device-list change they are current as of: the
    /// `stream_id` the `prev_id` of the user's next `m.device_list_update`
    /// names (0 before any change).
    ///
    /// # Errors
    /// `InvalidParam` for a user of another server; storage failures.
    pub async fn devices_for_server(
        &self,
        user_id: &UserId,
    ) -> Result<(QueriedKeys, StreamPosition), ServiceError> {
        let now = self.device_lists.position();
        let position = self
            .storage
            .device_list_change_before(user_id, StreamPosition(now.0 + 1))
            .await?
            .unwrap_or(StreamPosition(0));
        let wanted = BTreeMap::from([(user_id.to_owned(), Vec::new())]);
        Ok((self.query_for_server(wanted).await?, position))
    }

    /// Refuses a request that names any user of another server.
    pub(super) fn check_all_local<'a>(
        &self,
        mut users: impl Iterator<Item = &'a OwnedUserId>,
    ) -> Result<(), ServiceError> {
        match users.find(|user_id| !self.is_local(user_id)) {
            Some(user_id) => Err(ServiceError::InvalidParam(format!(
                "{user_id} is not a user of this server"
            ))),
            None => Ok(()),
        }
    }

    /// [`Self::query`] for `requester`, or for another server when `None`.
    async fn query_as(
        &self,
        requester: Option<&UserId>,
        wanted: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<QueriedKeys, ServiceError> {
        // Each user costs a few reads and a share of the answer.
        if wanted.len() > self.max_query_users {
            return Err(ServiceError::InvalidParam(format!(
                "at most {} users per key query",
                self.max_query_users
            )));
        }
        let mut answer = QueriedKeys::default();
        for (user_id, devices) in wanted {
            // Other servers' users are asked over federation by the caller.
            if !self.is_local(&user_id) {
                continue;
            }
            let signatures: Vec<KeySignature> = self
                .storage
                .key_signatures(&user_id)
                .await?
                .into_iter()
                .filter(|s| s.signer_user_id == user_id || Some(&*s.signer_user_id) == requester)
                .collect();
            let mut served = BTreeMap::new();
            for device in self.storage.devices_with_keys(&user_id).await? {
                if !devices.is_empty() && !devices.contains(&device.device_id) {
                    continue;
                }
                let target = SignatureTarget::Device(device.device_id.clone());
                let unsigned = device
                    .display_name
                    .filter(|_| requester.is_some())
                    .map(|name| serde_json::json!({ "device_display_name": name }));
                let on_device = signatures_on(&signatures, &target);
                let json = served_json(&device.json, &on_device, unsigned)?;
                served.insert(device.device_id, json);
            }
            answer.device_keys.insert(user_id.clone(), served);
            for key in self.storage.cross_signing_keys(&user_id).await? {
                let target = SignatureTarget::CrossSigningKey(key.public_key.clone());
                let json = served_json(&key.json, &signatures_on(&signatures, &target), None)?;
                let map = match key.key_type {
                    CrossSigningKeyType::Master => &mut answer.master_keys,
                    CrossSigningKeyType::SelfSigning => &mut answer.self_signing_keys,
                    CrossSigningKeyType::UserSigning if Some(&*user_id) == requester => {
                        &mut answer.user_signing_keys
                    }
                    CrossSigningKeyType::UserSigning => continue,
                };
                map.insert(user_id.clone(), json);
            }
        }
        Ok(answer)
    }
}

fn signatures_on<'a>(
    signatures: &'a [KeySignature],
    target: &SignatureTarget,
) -> Vec<&'a KeySignature> {
    signatures.iter().filter(|s| s.target == *target).collect()
}

/// The stored key object as served: the uploaded text itself when there is
/// nothing to add; else the object with the uploaded signatures merged into
/// `signatures` and `unsigned` set by the server. Only the unsigned parts
/// change, so the owner's signatures still verify.
fn served_json(
    json: &str,
    signatures: &[&KeySignature],
    unsigned: Option<Value>,
) -> Result<String, ServiceError> {
    if signatures.is_empty() && unsigned.is_none() {
        return Ok(json.to_owned());
    }
    let mut object: Map<String, Value> = serde_json::from_str(json)
        .map_err(|e| ServiceError::Internal(format!("stored key JSON is invalid: {e}")))?;
    if !signatures.is_empty() {
        let all = object
            .entry("signatures")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(all) = all {
            for signature in signatures {
                if let Value::Object(by_key) = all
                    .entry(signature.signer_user_id.to_string())
                    .or_insert_with(|| Value::Object(Map::new()))
                {
                    by_key
                        .entry(signature.signer_key_id.clone())
                        .or_insert_with(|| Value::from(signature.signature.clone()));
                }
            }
        }
    }
    match unsigned {
        Some(unsigned) => object.insert("unsigned".to_owned(), unsigned),
        None => object.remove("unsigned"),
    };
    serde_json::to_string(&object)
        .map_err(|e| ServiceError::Internal(format!("cannot serialise key JSON: {e}")))
}
