//! `POST /keys/upload` and `POST /keys/claim`: device identity keys and the
//! one-time and fallback keys other devices claim to start Olm sessions.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use tracing::debug;

use super::{
    DeviceListUpdate, DeviceLists,
    validate::{check_device_keys, check_one_time_key},
};
use crate::{
    service::{ServiceError, accounts::Accounts},
    storage::{
        DeviceListChange, Millis, OneTimeKey, Session, Storage, StorageError, StreamPosition,
    },
};

/// Most one-time keys a device may hold unclaimed; clients keep about 50.
pub const MAX_ONE_TIME_KEYS: u64 = 10_000;
/// The algorithm clients claim; always reported in counts, as 0 when none
/// are left, so that clients know to upload.
const SIGNED_CURVE25519: &str = "signed_curve25519";

/// A `POST /keys/upload` body, each key as the JSON text uploaded.
#[derive(Debug, Default)]
pub struct KeysUpload {
    /// The device's `DeviceKeys` object.
    pub device_keys: Option<String>,
    /// New one-time keys by `<algorithm>:<key id>`.
    pub one_time_keys: Vec<(String, String)>,
    /// Replacement fallback keys by `<algorithm>:<key id>`.
    pub fallback_keys: Vec<(String, String)>,
}

/// What a claim handed out, and for whom it could not be done.
#[derive(Debug, Default)]
pub struct ClaimedKeys {
    /// Keys by user, then device.
    pub one_time_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKey>>,
}

/// The key service.
#[derive(Debug)]
pub struct E2eeKeys {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) device_lists: Arc<DeviceLists>,
    pub(super) accounts: Arc<Accounts>,
    /// Most users one key query may name.
    pub(super) max_query_users: usize,
    /// Most keys one claim may ask for.
    max_claims: usize,
}

impl E2eeKeys {
    /// Builds the service.
    pub fn new(
        storage: Arc<dyn Storage>,
        device_lists: Arc<DeviceLists>,
        accounts: Arc<Accounts>,
        max_query_users: usize,
        max_claims: usize,
    ) -> Self {
        Self {
            storage,
            device_lists,
            accounts,
            max_query_users,
            max_claims,
        }
    }

    /// Stores the calling device's keys and answers its one-time key counts.
    ///
    /// Device keys must be this device's, signed by its own ed25519 key, and
    /// must not change the identity keys it already published; identical
    /// keys are accepted again and change nothing. Every signed one-time or
    /// fallback key must be signed by the device.
    ///
    /// # Errors
    /// `InvalidParam` for any key that fails its checks (nothing is stored
    /// then, except device keys that passed before a later key failed).
    pub async fn upload(
        &self,
        session: &Session,
        upload: KeysUpload,
    ) -> Result<BTreeMap<String, u64>, ServiceError> {
        let (user_id, device_id) = (&session.user_id, &session.device_id);
        let new_device_keys = upload
            .device_keys
            .as_deref()
            .map(|json| check_device_keys(json, user_id, device_id))
            .transpose()?;
        let stored = self.storage.device_keys(user_id, device_id).await?;
        if let (Some(new), Some(stored)) = (&new_device_keys, &stored)
            && (new.ed25519_key != stored.ed25519_key
                || new.curve25519_key != stored.curve25519_key)
        {
            return Err(identity_changed());
        }
        let signing_key = new_device_keys
            .as_ref()
            .or(stored.as_ref())
            .map(|keys| keys.ed25519_key.clone());
        let check_all = |keys: &[(String, String)]| {
            keys.iter()
                .map(|(key_id, json)| {
                    check_one_time_key(key_id, json, user_id, device_id, signing_key.as_deref())
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let one_time_keys = check_all(&upload.one_time_keys)?;
        let fallback_keys = check_all(&upload.fallback_keys)?;

        if let Some(keys) = new_device_keys
            && stored.is_none_or(|stored| stored.json != keys.json)
        {
            let storage = &self.storage;
            let keys = &keys;
            let position = self
                .device_lists
                .publish(
                    &[DeviceListChange::public(user_id)],
                    |position| async move {
                        match storage
                            .set_device_keys(user_id, device_id, keys, position)
                            .await
                        {
                            Err(StorageError::Conflict(_)) => Err(identity_changed()),
                            other => other.map_err(device_gone),
                        }
                        .map(|()| position)
                    },
                )
                .await?;
            self.device_lists
                .federate_device(user_id, device_id, position, Some(&keys.json))
                .await?;
            debug!(%user_id, %device_id, "device keys stored");
        }
        if !one_time_keys.is_empty() {
            let held: u64 = self
                .storage
                .one_time_key_counts(user_id, device_id)
                .await?
                .iter()
                .map(|(_, count)| count)
                .sum();
            if held + one_time_keys.len() as u64 > MAX_ONE_TIME_KEYS {
                return Err(ServiceError::InvalidParam(format!(
                    "a device may hold at most {MAX_ONE_TIME_KEYS} one-time keys"
                )));
            }
            match self
                .storage
                .add_one_time_keys(user_id, device_id, &one_time_keys, Millis::now())
                .await
            {
                Err(StorageError::Conflict(_)) => {
                    return Err(ServiceError::InvalidParam(
                        "a one-time key with this id was uploaded before with another key"
                            .to_owned(),
                    ));
                }
                other => other.map_err(device_gone)?,
            }
        }
        if !fallback_keys.is_empty() {
            self.storage
                .set_fallback_keys(user_id, device_id, &fallback_keys)
                .await
                .map_err(device_gone)?;
        }
        one_time_key_counts(self.storage.as_ref(), user_id, device_id).await
    }

    /// Hands out one key per requested device: its oldest unclaimed one-time
    /// key of the algorithm, or its fallback key when none is left. Devices
    /// with neither are left out, as the spec says.
    ///
    /// # Errors
    /// `InvalidParam` past the configured number of keys per claim.
    pub async fn claim(
        &self,
        wanted: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    ) -> Result<ClaimedKeys, ServiceError> {
        let total: usize = wanted.values().map(BTreeMap::len).sum();
        if total > self.max_claims {
            return Err(ServiceError::InvalidParam(format!(
                "at most {} keys per claim",
                self.max_claims
            )));
        }
        let mut claimed = ClaimedKeys::default();
        for (user_id, devices) in wanted {
            // Other servers' users are asked over federation by the caller.
            if !self.is_local(&user_id) {
                continue;
            }
            let mut keys = BTreeMap::new();
            for (device_id, algorithm) in devices {
                if let Some(key) = self
                    .storage
                    .claim_key(&user_id, &device_id, &algorithm)
                    .await?
                {
                    keys.insert(device_id, key);
                }
            }
            claimed.one_time_keys.insert(user_id, keys);
        }
        Ok(claimed)
    }

    /// `POST /_matrix/federation/v1/user/keys/claim` from another server:
    /// [`Self::claim`] for local users only.
    ///
    /// # Errors
    /// `InvalidParam` for a user of another server, or past the limit.
    pub async fn claim_for_server(
        &self,
        wanted: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    ) -> Result<ClaimedKeys, ServiceError> {
        self.check_all_local(wanted.keys())?;
        self.claim(wanted).await
    }

    /// `GET /keys/changes`: what a sync from `from` to `to` would list in
    /// `device_lists` (with `to` no later than now).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn key_changes(
        &self,
        user_id: &UserId,
        from: StreamPosition,
        to: StreamPosition,
    ) -> Result<DeviceListUpdate, ServiceError> {
        let to = to.min(self.device_lists.position());
        self.device_lists.changes(user_id, from, to).await
    }

    pub(super) fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.accounts.server_name()
    }
}

/// A device's unclaimed one-time keys by algorithm, `signed_curve25519`
/// always present: what `/keys/upload` answers and sync reports.
///
/// # Errors
/// Storage failures.
pub async fn one_time_key_counts(
    storage: &dyn Storage,
    user_id: &UserId,
    device_id: &DeviceId,
) -> Result<BTreeMap<String, u64>, ServiceError> {
    let mut counts: BTreeMap<String, u64> = storage
        .one_time_key_counts(user_id, device_id)
        .await?
        .into_iter()
        .collect();
    counts.entry(SIGNED_CURVE25519.to_owned()).or_insert(0);
    Ok(counts)
}

/// A write for a device deleted meanwhile: the token that made the request
/// died with the device.
fn device_gone(error: StorageError) -> ServiceError {
    match error {
        StorageError::NotFound(_) => ServiceError::UnknownToken,
        other => other.into(),
    }
}

fn identity_changed() -> ServiceError {
    ServiceError::InvalidParam(
        "this device already published other identity keys; log in as a new device".to_owned(),
    )
}
