//! Our cross-signing keys: bootstrap, and what they sign ([spec]). Other
//! users' identities and the trust they carry are in [`super::identities`];
//! the trust model is written down in `spec-notes/cross-signing.md`.
//!
//! - **Bootstrap** ([`OlmMachine::bootstrap_cross_signing`]) generates a
//!   master, a self-signing and a user-signing key, signs the last two with
//!   the master key and asks for `/keys/device_signing/upload` (the caller
//!   adds user-interactive auth when the server asks). Once the server
//!   accepts, the keys are ours: this device trusts that master key, and
//!   the next [`OlmMachine::outgoing_requests`] signs this device with the
//!   self-signing key (`/keys/signatures/upload`). The private keys are
//!   persisted sealed under the pickle key, never in the clear.
//! - **Verifying a user** ([`OlmMachine::verify_user`]) signs their master
//!   key with our user-signing key, after the application compared it out
//!   of band.
//! - **Vouching for our own devices** ([`OlmMachine::verify_own_device`])
//!   signs another of our devices with our self-signing key.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#cross-signing

use myelin_crypto::{PickleError, PickleKey, cross_signing::CrossSigningKey};
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::{
    InFlight, LoadError, MachineError, OlmMachine, OutgoingRequest, Request,
    identities::UserIdentityRecord,
};

pub(super) const RECORD: &str = "cross_signing";

pub(super) const MASTER: &str = "master";
pub(super) const SELF_SIGNING: &str = "self_signing";
pub(super) const USER_SIGNING: &str = "user_signing";

/// The secret storage names of our master, self-signing and user-signing
/// keys, in that order.
pub const SECRET_NAMES: [&str; 3] = [
    "m.cross_signing.master",
    "m.cross_signing.self_signing",
    "m.cross_signing.user_signing",
];

/// Why a cross-signing step could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrossSigningError {
    /// This device holds no cross-signing keys the server accepted (bootstrap
    /// first), or our published identity is no longer the one it holds.
    #[error("cross-signing is not set up on this device")]
    NotSetUp,
    /// No master key is known for the user: their keys have not been queried
    /// yet, or they never set up cross-signing.
    #[error("no cross-signing identity known for `{0}`")]
    UnknownIdentity(OwnedUserId),
    /// The user's master key changed since it was pinned; acknowledge the
    /// change ([`OlmMachine::pin_identity`]) before verifying the new one.
    #[error("the identity of `{0}` changed; acknowledge it first")]
    IdentityChanged(OwnedUserId),
    /// Our own identity is trusted through our keys, not by verifying it.
    #[error("cannot verify our own user")]
    OwnUser,
    /// The device is not one of ours that a keys/query showed us.
    #[error("no device `{0}` of ours is known")]
    UnknownDevice(OwnedDeviceId),
    /// Imported private keys are not base64 seeds, or not the public keys of
    /// our published identity.
    #[error("the cross-signing keys do not match our published identity")]
    KeysMismatch,
    /// The user's master key object cannot be signed (not canonical JSON).
    #[error("the master key of `{0}` cannot be signed")]
    Unsignable(OwnedUserId),
    /// The server refused signatures (`failures` of
    /// `/keys/signatures/upload`), as (user id, key id or device id) pairs
    /// named as the server named them.
    #[error("the server refused signatures: {0:?}")]
    SignaturesRefused(Vec<(String, String)>),
}

/// A signature upload in flight, and what to record when it lands.
#[derive(Debug, Clone)]
pub(crate) enum SignatureUpload {
    /// One of our devices' keys (this one's after a bootstrap), signed by
    /// our self-signing key.
    OwnDevice { device_id: OwnedDeviceId },
    /// Another user's master key, signed by our user-signing key.
    UserMaster {
        user_id: OwnedUserId,
        master_key: Map<String, Value>,
    },
}

/// Our private keys: the accepted ones, and a new set waiting for the
/// server. `Debug` shows public keys only.
#[derive(Debug, Default)]
pub(super) struct CrossSigningState {
    active: Option<PrivateKeys>,
    pending: Option<PrivateKeys>,
    /// Whether the server answered the upload of this device's signature by
    /// the active self-signing key (it is not sent again if refused).
    own_device_signature_sent: bool,
}

#[derive(Debug)]
struct PrivateKeys {
    master: CrossSigningKey,
    self_signing: CrossSigningKey,
    user_signing: CrossSigningKey,
}

/// The record: the keys sealed under the pickle key, never in the clear.
#[derive(Serialize, Deserialize)]
pub(super) struct CrossSigningRecord {
    trusted_master: Option<String>,
    active: Option<PickledKeys>,
    pending: Option<PickledKeys>,
    own_device_signature_sent: bool,
}

#[derive(Serialize, Deserialize)]
struct PickledKeys {
    master: String,
    self_signing: String,
    user_signing: String,
}

impl OlmMachine {
    /// Starts cross-signing (or replaces our keys): generates a master, a
    /// self-signing and a user-signing key and returns the
    /// `/keys/device_signing/upload` request. The server may answer 401 for
    /// user-interactive auth: send the same body again with `auth` added,
    /// and report only the final answer. Until it is accepted, the keys we
    /// had (if any) stay in force.
    pub fn bootstrap_cross_signing(&mut self) -> OutgoingRequest {
        let keys = PrivateKeys::generate();
        let (master, self_signing, user_signing) = keys.public_objects(&self.user_id);
        let master_key = keys.master.public_key().to_base64();
        let body = json!({
            "master_key": master,
            "self_signing_key": self_signing,
            "user_signing_key": user_signing,
        });
        self.cross_signing.pending = Some(keys);
        self.save_cross_signing();
        self.issue(InFlight::SigningKeysUpload(master_key), |_| {
            Request::SigningKeysUpload { body }
        })
    }

    /// Tracks `user_id`'s devices and identity and has them queried again
    /// at the next [`OlmMachine::outgoing_requests`]: for a user we share
    /// no encrypted room with, or whose identity we have not seen yet.
    pub fn refresh_user_keys(&mut self, user_id: &UserId) {
        if !self.devices.track(user_id) {
            self.devices.mark_changed(user_id);
        }
        self.save_user_devices(user_id);
    }

    /// Whether this device holds cross-signing keys the server accepted.
    pub fn has_cross_signing_keys(&self) -> bool {
        self.cross_signing.active.is_some()
    }

    /// The cross-signing private keys this device holds (accepted by the
    /// server), as secret storage keeps them: each of [`SECRET_NAMES`] with
    /// its unpadded base64 seed.
    pub fn cross_signing_secrets(&self) -> Option<[(&'static str, Zeroizing<String>); 3]> {
        let keys = self.cross_signing.active.as_ref()?;
        let [master, self_signing, user_signing] = SECRET_NAMES;
        Some([
            (master, keys.master.to_base64_seed()),
            (self_signing, keys.self_signing.to_base64_seed()),
            (user_signing, keys.user_signing.to_base64_seed()),
        ])
    }

    /// Takes our cross-signing private keys (unpadded base64 seeds, as read
    /// from secret storage) on a device that did not make them. Each must be
    /// the public key of our identity as the last keys/query showed it, so
    /// query our own keys first ([`OlmMachine::refresh_user_keys`]). Like
    /// after a bootstrap, the next [`OlmMachine::outgoing_requests`] signs
    /// this device with the self-signing key.
    ///
    /// # Errors
    ///
    /// [`CrossSigningError::UnknownIdentity`] before our identity is known,
    /// [`CrossSigningError::KeysMismatch`] for keys that are not seeds or
    /// not our identity's.
    pub fn import_cross_signing_keys(
        &mut self,
        master: &str,
        self_signing: &str,
        user_signing: &str,
    ) -> Result<(), CrossSigningError> {
        let own = self.user_id.clone();
        let identity = self
            .devices
            .users
            .get(&own)
            .and_then(|record| record.identity.as_ref())
            .ok_or_else(|| CrossSigningError::UnknownIdentity(own.clone()))?;
        let parse =
            |seed| CrossSigningKey::from_base64_seed(seed).ok_or(CrossSigningError::KeysMismatch);
        let keys = PrivateKeys {
            master: parse(master)?,
            self_signing: parse(self_signing)?,
            user_signing: parse(user_signing)?,
        };
        let public = |key: &CrossSigningKey| Some(key.public_key().to_base64());
        if public(&keys.master).as_ref() != Some(&identity.master)
            || public(&keys.self_signing) != identity.self_signing
            || public(&keys.user_signing) != identity.user_signing
        {
            return Err(CrossSigningError::KeysMismatch);
        }
        let master = identity.master.clone();
        self.devices.own.trusted_master = Some(master.clone());
        if let Some(record) = self.devices.users.get_mut(&own) {
            record.pinned_master = Some(master);
        }
        self.cross_signing.active = Some(keys);
        self.cross_signing.own_device_signature_sent = false;
        self.save_cross_signing();
        self.save_user_devices(&own);
        self.refresh_trust(&[own]);
        Ok(())
    }

    /// Signs `user_id`'s current master key with our user-signing key and
    /// returns the `/keys/signatures/upload` request. Call it only after the
    /// application compared that key ([`OlmMachine::user_identity`]) out of
    /// band. The user counts as verified once the server accepts.
    ///
    /// # Errors
    ///
    /// [`CrossSigningError`]: not set up, our own user, no identity known,
    /// an unacknowledged identity change.
    pub fn verify_user(&mut self, user_id: &UserId) -> Result<OutgoingRequest, MachineError> {
        if user_id == self.user_id {
            return Err(CrossSigningError::OwnUser.into());
        }
        let keys = self
            .cross_signing
            .active
            .as_ref()
            .filter(|keys| {
                self.devices.own_user_signing_key()
                    == Some(keys.user_signing.public_key().to_base64())
            })
            .ok_or(CrossSigningError::NotSetUp)?;
        let record = self.devices.user_record(user_id);
        let Some((record, identity)) = record.and_then(|r| Some((r, r.identity.as_ref()?))) else {
            return Err(CrossSigningError::UnknownIdentity(user_id.to_owned()).into());
        };
        if record.pinned_master.as_deref() != Some(&identity.master) {
            return Err(CrossSigningError::IdentityChanged(user_id.to_owned()).into());
        }
        let mut master_key = identity.master_key.clone();
        master_key.remove("signatures");
        master_key.remove("unsigned");
        keys.user_signing
            .sign_json(self.user_id.as_str(), &mut master_key)
            .map_err(|_| CrossSigningError::Unsignable(user_id.to_owned()))?;
        let body = json!({ user_id.as_str(): { identity.master.clone(): master_key } });
        let upload = SignatureUpload::UserMaster {
            user_id: user_id.to_owned(),
            master_key,
        };
        Ok(self.issue(InFlight::Signatures(upload), |_| {
            Request::SignaturesUpload { body }
        }))
    }

    /// The server accepted the keys of [`OlmMachine::bootstrap_cross_signing`]
    /// whose master key is `master`: they become ours.
    pub(super) fn receive_signing_keys_upload(&mut self, master: &str) -> Result<(), &'static str> {
        // A later bootstrap replaced the pending keys: these are not them.
        let keys = self
            .cross_signing
            .pending
            .take_if(|keys| keys.master.public_key().to_base64() == master)
            .ok_or("the uploaded cross-signing keys are no longer pending")?;
        let (master_key, _, _) = keys.public_objects(&self.user_id);
        let master = keys.master.public_key().to_base64();
        let identity = UserIdentityRecord {
            master_key: master_key.as_object().cloned().unwrap_or_default(),
            master: master.clone(),
            self_signing: Some(keys.self_signing.public_key().to_base64()),
            user_signing: Some(keys.user_signing.public_key().to_base64()),
        };
        self.devices.own.trusted_master = Some(master.clone());
        if let Some(record) = self.devices.users.get_mut(&self.user_id) {
            record.pinned_master = Some(master);
            record.identity = Some(identity);
        }
        self.cross_signing.active = Some(keys);
        self.cross_signing.own_device_signature_sent = false;
        self.save_cross_signing();
        let own = self.user_id.clone();
        self.save_user_devices(&own);
        self.refresh_trust(&[own]);
        Ok(())
    }

    /// The signature of this device by our self-signing key, when it has
    /// not been sent yet (after a bootstrap, or a restart in between).
    pub(super) fn own_device_signature_request(&mut self) -> Option<OutgoingRequest> {
        let in_flight = self
            .in_flight
            .values()
            .any(|r| matches!(r, InFlight::Signatures(SignatureUpload::OwnDevice { device_id }) if *device_id == self.device_id));
        if in_flight
            || self.cross_signing.own_device_signature_sent
            || !self.meta.device_keys_published
        {
            return None;
        }
        let device_keys = self.device_keys().as_object().cloned()?;
        let device_id = self.device_id.clone();
        self.own_device_signature(&device_id, device_keys).ok()
    }

    /// Whether the server accepted this device's signature by the
    /// self-signing key of the identity we hold the keys of.
    pub(super) fn is_this_device_cross_signed(&self) -> bool {
        self.cross_signing.own_device_signature_sent
            && self.cross_signing.active.as_ref().is_some_and(|keys| {
                self.devices.own_self_signing_key()
                    == Some(keys.self_signing.public_key().to_base64())
            })
    }

    /// Vouches for another of our devices: signs its keys with our
    /// self-signing key and returns the `/keys/signatures/upload` request.
    /// Once the server accepts, the device is verified for every user who
    /// verified us (and for our devices that trust our identity). Call it
    /// only for a device the user recognises as theirs.
    ///
    /// # Errors
    ///
    /// [`CrossSigningError::NotSetUp`] without our keys;
    /// [`CrossSigningError::UnknownDevice`] for a device not in our
    /// (queried, checked) device list.
    pub fn verify_own_device(
        &mut self,
        device_id: &DeviceId,
    ) -> Result<OutgoingRequest, MachineError> {
        let device_keys = self
            .devices
            .user_record(&self.user_id)
            .and_then(|r| r.own_device_keys.get(device_id))
            .cloned()
            .ok_or_else(|| CrossSigningError::UnknownDevice(device_id.to_owned()))?;
        self.own_device_signature(device_id, device_keys)
    }

    fn own_device_signature(
        &mut self,
        device_id: &DeviceId,
        mut device_keys: Map<String, Value>,
    ) -> Result<OutgoingRequest, MachineError> {
        self.sign_with_self_signing_key(&mut device_keys)?;
        let body = json!({ self.user_id.as_str(): { device_id.as_str(): device_keys } });
        let upload = SignatureUpload::OwnDevice {
            device_id: device_id.to_owned(),
        };
        Ok(self.issue(InFlight::Signatures(upload), |_| {
            Request::SignaturesUpload { body }
        }))
    }

    /// Adds our self-signing key's signature to the device keys of one of
    /// our devices.
    ///
    /// # Errors
    ///
    /// [`CrossSigningError::NotSetUp`] unless we hold the self-signing key
    /// the server publishes for us.
    pub(super) fn sign_with_self_signing_key(
        &self,
        device_keys: &mut Map<String, Value>,
    ) -> Result<(), CrossSigningError> {
        let keys = self
            .cross_signing
            .active
            .as_ref()
            .filter(|keys| {
                self.devices.own_self_signing_key()
                    == Some(keys.self_signing.public_key().to_base64())
            })
            .ok_or(CrossSigningError::NotSetUp)?;
        keys.self_signing
            .sign_json(self.user_id.as_str(), device_keys)
            .map_err(|_| CrossSigningError::Unsignable(self.user_id.clone()))
    }

    pub(super) fn receive_signatures_upload(
        &mut self,
        upload: SignatureUpload,
        response: &Value,
    ) -> Result<(), MachineError> {
        let refused: Vec<(String, String)> = response
            .get("failures")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .flat_map(|(user, keys)| {
                let keys = keys.as_object().into_iter().flat_map(|k| k.keys());
                keys.map(move |key| (user.clone(), key.clone()))
            })
            .collect();
        match upload {
            SignatureUpload::OwnDevice { device_id } if device_id == self.device_id => {
                self.cross_signing.own_device_signature_sent = true;
                self.save_cross_signing();
            }
            SignatureUpload::OwnDevice { device_id } if refused.is_empty() => {
                self.mark_own_device_signed(&device_id);
            }
            SignatureUpload::OwnDevice { .. } => {}
            SignatureUpload::UserMaster {
                user_id,
                master_key,
            } if refused.is_empty() => self.add_own_signature(&user_id, &master_key),
            SignatureUpload::UserMaster { .. } => {}
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(CrossSigningError::SignaturesRefused(refused).into())
        }
    }

    pub(super) fn load_cross_signing(
        &mut self,
        record: CrossSigningRecord,
    ) -> Result<(), LoadError> {
        let corrupt = |_| LoadError::Corrupt(RECORD.to_owned());
        let key = &self.pickle_key;
        self.cross_signing = CrossSigningState {
            active: record
                .active
                .map(|p| p.load(key))
                .transpose()
                .map_err(corrupt)?,
            pending: record
                .pending
                .map(|p| p.load(key))
                .transpose()
                .map_err(corrupt)?,
            own_device_signature_sent: record.own_device_signature_sent,
        };
        self.devices.own.trusted_master = record.trusted_master;
        Ok(())
    }

    pub(super) fn save_cross_signing(&mut self) {
        let key = &self.pickle_key;
        let record = CrossSigningRecord {
            trusted_master: self.devices.own.trusted_master.clone(),
            active: self.cross_signing.active.as_ref().map(|k| k.pickle(key)),
            pending: self.cross_signing.pending.as_ref().map(|k| k.pickle(key)),
            own_device_signature_sent: self.cross_signing.own_device_signature_sent,
        };
        self.put(RECORD.to_owned(), &record);
    }

    /// Records our accepted signature on one of our other devices, so it is
    /// verified before the next keys/query shows it.
    fn mark_own_device_signed(&mut self, device_id: &DeviceId) {
        let own = self.user_id.clone();
        let self_signing_key = self.devices.own_self_signing_key();
        if let Some(device) = self
            .devices
            .users
            .get_mut(&own)
            .and_then(|r| r.devices.get_mut(device_id))
        {
            device.self_signing_key = self_signing_key;
        }
        self.save_user_devices(&own);
    }

    /// Records our accepted signature on `user_id`'s master key, so the user
    /// is verified before the next keys/query shows it.
    fn add_own_signature(&mut self, user_id: &UserId, signed: &Map<String, Value>) {
        let Some(signature) = signed
            .get("signatures")
            .and_then(|s| s.get(self.user_id.as_str()))
        else {
            return;
        };
        let Some(identity) = self
            .devices
            .users
            .get_mut(user_id)
            .and_then(|r| r.identity.as_mut())
        else {
            return;
        };
        let ours = identity
            .master_key
            .entry("signatures")
            .or_insert_with(|| json!({}));
        if let (Some(ours), Some(signature)) = (ours.as_object_mut(), signature.as_object()) {
            let by_us = ours
                .entry(self.user_id.to_string())
                .or_insert_with(|| json!({}));
            if let Some(by_us) = by_us.as_object_mut() {
                by_us.extend(signature.clone());
            }
        }
        self.save_user_devices(user_id);
        self.refresh_trust(&[user_id.to_owned()]);
    }
}

impl PrivateKeys {
    fn generate() -> Self {
        Self {
            master: CrossSigningKey::generate(),
            self_signing: CrossSigningKey::generate(),
            user_signing: CrossSigningKey::generate(),
        }
    }

    /// The three public key objects to upload, the self- and user-signing
    /// keys signed by the master key.
    fn public_objects(&self, user_id: &UserId) -> (Value, Value, Value) {
        let object = |key: &CrossSigningKey, usage: &str| {
            let public_key = key.public_key().to_base64();
            json!({
                "user_id": user_id,
                "usage": [usage],
                "keys": { key.key_id(): public_key },
            })
        };
        let signed = |key: &CrossSigningKey, usage: &str| {
            let mut value = object(key, usage);
            if let Some(map) = value.as_object_mut() {
                // Strings and arrays only: canonicalization cannot fail.
                let _ = self.master.sign_json(user_id.as_str(), map);
            }
            value
        };
        (
            object(&self.master, MASTER),
            signed(&self.self_signing, SELF_SIGNING),
            signed(&self.user_signing, USER_SIGNING),
        )
    }

    fn pickle(&self, key: &PickleKey) -> PickledKeys {
        // Sealing fails only if the system's random generator does; an
        // empty pickle then fails loudly at load rather than here.
        let seal = |k: &CrossSigningKey, role| k.pickle(key, role).unwrap_or_default();
        PickledKeys {
            master: seal(&self.master, MASTER),
            self_signing: seal(&self.self_signing, SELF_SIGNING),
            user_signing: seal(&self.user_signing, USER_SIGNING),
        }
    }
}

impl PickledKeys {
    fn load(self, key: &PickleKey) -> Result<PrivateKeys, PickleError> {
        Ok(PrivateKeys {
            master: CrossSigningKey::from_pickle(&self.master, key, MASTER)?,
            self_signing: CrossSigningKey::from_pickle(&self.self_signing, key, SELF_SIGNING)?,
            user_signing: CrossSigningKey::from_pickle(&self.user_signing, key, USER_SIGNING)?,
        })
    }
}
