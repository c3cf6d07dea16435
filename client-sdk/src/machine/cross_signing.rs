//! Cross-signing: our own master, self-signing and user-signing keys, other
//! users' identities from `/keys/query`, and which devices they make
//! verified ([spec]). The trust model is written down in
//! `spec-notes/cross-signing.md`.
//!
//! - **Bootstrap** ([`OlmMachine::bootstrap_cross_signing`]) generates the
//!   three keys, signs the self-signing and user-signing keys with the master
//!   key and asks for `/keys/device_signing/upload` (the caller adds
//!   user-interactive auth when the server asks). Once the server accepts,
//!   the keys are ours: this device trusts that master key, and the next
//!   [`OlmMachine::outgoing_requests`] signs this device with the
//!   self-signing key (`/keys/signatures/upload`). The private keys are
//!   persisted sealed under the pickle key, never in the clear.
//! - **Identities.** Every keys/query answer's master and self-signing keys
//!   (and our own user-signing key) are checked: owned by the user, with
//!   their usage, one ed25519 key named by itself, the self- and
//!   user-signing keys signed by the master key. The first master key seen
//!   for a user is pinned (trust on first use); a different one later raises
//!   [`DeviceWarning::IdentityChanged`] and is not trusted until
//!   [`OlmMachine::pin_identity`].
//! - **Verifying a user** ([`OlmMachine::verify_user`]) signs their master
//!   key with our user-signing key, after the application compared it out
//!   of band.
//!
//! A user's identity is verified when its master key is the pinned one and
//! either it is ours and this device trusts it, or our (verified)
//! user-signing key signed it. A device is then verified when that user's
//! self-signing key signed it (`DeviceTracker::is_verified`, public as
//! [`OlmMachine::is_device_verified`]).
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#cross-signing

use std::collections::BTreeSet;

use myelin_crypto::{
    PickleError, PickleKey, cross_signing::CrossSigningKey, olm::Ed25519PublicKey,
    verify_json_signature,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    DeviceWarning, InFlight, LoadError, MachineError, OlmMachine, OutgoingRequest, Request,
    devices::{Device, DeviceTracker},
};

pub(super) const RECORD: &str = "cross_signing";

const MASTER: &str = "master";
const SELF_SIGNING: &str = "self_signing";
const USER_SIGNING: &str = "user_signing";

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
    UnknownIdentity(String),
    /// The user's master key changed since it was pinned; acknowledge the
    /// change ([`OlmMachine::pin_identity`]) before verifying the new one.
    #[error("the identity of `{0}` changed; acknowledge it first")]
    IdentityChanged(String),
    /// Our own identity is trusted through our keys, not by verifying it.
    #[error("cannot verify our own user")]
    OwnUser,
    /// The device is not one of ours that a keys/query showed us.
    #[error("no device `{0}` of ours is known")]
    UnknownDevice(String),
    /// The user's master key object cannot be signed (not canonical JSON).
    #[error("the master key of `{0}` cannot be signed")]
    Unsignable(String),
    /// The server refused signatures (`failures` of
    /// `/keys/signatures/upload`), named `<user>/<key id or device id>`.
    #[error("the server refused signatures: {0:?}")]
    SignaturesRefused(Vec<String>),
}

/// A user's cross-signing identity, as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdentity {
    /// The user.
    pub user_id: String,
    /// The master key (unpadded base64): what an out-of-band comparison
    /// checks.
    pub master_key: String,
    /// The self-signing key, if one signed by the master key was served.
    pub self_signing_key: Option<String>,
    /// Whether the identity is verified (see the module docs).
    pub is_verified: bool,
    /// Whether the master key differs from the pinned one: the change has
    /// not been acknowledged.
    pub has_changed: bool,
}

/// Our own user, and the master key this device trusts as ours (the one it
/// generated).
#[derive(Debug, Default)]
pub(super) struct OwnIdentity {
    pub(super) user_id: String,
    pub(super) trusted_master: Option<String>,
}

/// A user's cross-signing keys as the last keys/query served them, checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct UserIdentityRecord {
    /// The master key object as served, signatures included: our
    /// user-signing key's signature on it is checked again whenever our own
    /// identity changes.
    master_key: Map<String, Value>,
    master: String,
    self_signing: Option<String>,
    user_signing: Option<String>,
}

/// A signature upload in flight, and what to record when it lands.
#[derive(Debug, Clone)]
pub(crate) enum SignatureUpload {
    /// One of our devices' keys (this one's after a bootstrap), signed by
    /// our self-signing key.
    OwnDevice { device_id: String },
    /// Another user's master key, signed by our user-signing key.
    UserMaster {
        user_id: String,
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
    pub fn refresh_user_keys(&mut self, user_id: &str) {
        if !self.devices.track(user_id) {
            self.devices.mark_changed(user_id);
        }
        self.save_user_devices(user_id);
    }

    /// Whether this device holds cross-signing keys the server accepted.
    pub fn has_cross_signing_keys(&self) -> bool {
        self.cross_signing.active.is_some()
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
    pub fn verify_user(&mut self, user_id: &str) -> Result<OutgoingRequest, MachineError> {
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
            .sign_json(&self.user_id, &mut master_key)
            .map_err(|_| CrossSigningError::Unsignable(user_id.to_owned()))?;
        let body = json!({ user_id: { identity.master.clone(): master_key } });
        let upload = SignatureUpload::UserMaster {
            user_id: user_id.to_owned(),
            master_key,
        };
        Ok(self.issue(InFlight::Signatures(upload), |_| {
            Request::SignaturesUpload { body }
        }))
    }

    /// Accepts `user_id`'s current master key as the one to expect from now
    /// on (after [`DeviceWarning::IdentityChanged`]). This does not make it
    /// verified: verify the user again for that. Returns whether an identity
    /// is known.
    pub fn pin_identity(&mut self, user_id: &str) -> bool {
        let Some(record) = self.devices.users.get_mut(user_id) else {
            return false;
        };
        let Some(identity) = &record.identity else {
            return false;
        };
        record.pinned_master = Some(identity.master.clone());
        self.save_user_devices(user_id);
        self.refresh_trust(&[user_id.to_owned()]);
        true
    }

    /// `user_id`'s cross-signing identity, if the server served one.
    pub fn user_identity(&self, user_id: &str) -> Option<UserIdentity> {
        let record = self.devices.user_record(user_id)?;
        let identity = record.identity.as_ref()?;
        Some(UserIdentity {
            user_id: user_id.to_owned(),
            master_key: identity.master.clone(),
            self_signing_key: identity.self_signing.clone(),
            is_verified: self.devices.verified_users.contains(user_id),
            has_changed: record.pinned_master.as_deref() != Some(&identity.master),
        })
    }

    /// Checks and stores `user_id`'s cross-signing keys from a keys/query
    /// answer; returns their checked self-signing key, for their devices.
    pub(super) fn receive_user_identity(
        &mut self,
        user_id: &str,
        response: &Value,
    ) -> Option<String> {
        let key_object = |field: &str| response.get(field).and_then(|keys| keys.get(user_id));
        let identity = match key_object("master_keys") {
            None => None,
            Some(object) => {
                let identity = parse_identity(
                    user_id,
                    object,
                    key_object("self_signing_keys"),
                    key_object("user_signing_keys"),
                );
                if identity.as_ref().is_none_or(|(_, complete)| !complete) {
                    self.warnings.push(DeviceWarning::InvalidCrossSigningKeys {
                        user_id: user_id.to_owned(),
                    });
                }
                identity.map(|(identity, _)| identity)
            }
        };
        let record = self.devices.users.get_mut(user_id)?;
        if let Some(new) = &identity {
            let previous = record.identity.as_ref().map(|i| i.master.as_str());
            match record.pinned_master.as_deref() {
                None => record.pinned_master = Some(new.master.clone()),
                Some(pinned) if pinned != new.master && previous != Some(&new.master) => {
                    self.warnings.push(DeviceWarning::IdentityChanged {
                        user_id: user_id.to_owned(),
                    });
                }
                Some(_) => {}
            }
        }
        // A server can withhold keys (the identity is then unknown, so
        // unverified) but not forge them; the pin is kept either way.
        record.identity = identity;
        record.identity.as_ref()?.self_signing.clone()
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
    pub fn verify_own_device(&mut self, device_id: &str) -> Result<OutgoingRequest, MachineError> {
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
        device_id: &str,
        mut device_keys: Map<String, Value>,
    ) -> Result<OutgoingRequest, MachineError> {
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
            .sign_json(&self.user_id, &mut device_keys)
            .map_err(|_| CrossSigningError::Unsignable(self.user_id.clone()))?;
        let body = json!({ self.user_id.clone(): { device_id: device_keys } });
        let upload = SignatureUpload::OwnDevice {
            device_id: device_id.to_owned(),
        };
        Ok(self.issue(InFlight::Signatures(upload), |_| {
            Request::SignaturesUpload { body }
        }))
    }

    pub(super) fn receive_signatures_upload(
        &mut self,
        upload: SignatureUpload,
        response: &Value,
    ) -> Result<(), MachineError> {
        let refused: Vec<String> = response
            .get("failures")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .flat_map(|(user, keys)| {
                let keys = keys.as_object().into_iter().flat_map(|k| k.keys());
                keys.map(move |key| format!("{user}/{key}"))
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

    /// Recomputes which users are verified after `users`' identities (or
    /// ours, which decides everyone's) changed; a device that stops being
    /// verified must not keep a room's current key (`group`).
    pub(super) fn refresh_trust(&mut self, users: &[String]) {
        let all = users.contains(&self.user_id);
        if self.devices.refresh_trust(users, all) {
            self.recheck_outbound(None);
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

    fn save_cross_signing(&mut self) {
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
    fn mark_own_device_signed(&mut self, device_id: &str) {
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
    fn add_own_signature(&mut self, user_id: &str, signed: &Map<String, Value>) {
        let Some(signature) = signed.get("signatures").and_then(|s| s.get(&self.user_id)) else {
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
                .entry(self.user_id.clone())
                .or_insert_with(|| json!({}));
            if let Some(by_us) = by_us.as_object_mut() {
                by_us.extend(signature.clone());
            }
        }
        self.save_user_devices(user_id);
        self.refresh_trust(&[user_id.to_owned()]);
    }
}

impl DeviceTracker {
    /// Recomputes `verified_users` for `users`, or for everyone when `all`;
    /// returns whether someone stopped being verified.
    pub(super) fn refresh_trust(&mut self, users: &[String], all: bool) -> bool {
        let targets: BTreeSet<String> = if all {
            self.users.keys().cloned().collect()
        } else {
            users.iter().cloned().collect()
        };
        // Our own identity first: everyone else's depends on it.
        let (own, others): (Vec<String>, Vec<String>) = targets
            .into_iter()
            .partition(|user| *user == self.own.user_id);
        let mut lost = false;
        for user in own.into_iter().chain(others) {
            if self.is_identity_verified(&user) {
                self.verified_users.insert(user);
            } else {
                lost |= self.verified_users.remove(&user);
            }
        }
        lost
    }

    /// Keeps one of our other devices' keys as served, to sign later.
    pub(super) fn keep_own_device_keys(&mut self, device_id: &str, object: &Map<String, Value>) {
        let mut object = object.clone();
        object.remove("signatures");
        object.remove("unsigned");
        if let Some(record) = self.users.get_mut(&self.own.user_id) {
            record.own_device_keys.insert(device_id.to_owned(), object);
        }
    }

    /// Our user-signing key, when our own identity is verified.
    pub(super) fn own_user_signing_key(&self) -> Option<String> {
        self.own_verified_identity()?.user_signing.clone()
    }

    /// Our self-signing key, when our own identity is verified.
    pub(super) fn own_self_signing_key(&self) -> Option<String> {
        self.own_verified_identity()?.self_signing.clone()
    }

    fn own_verified_identity(&self) -> Option<&UserIdentityRecord> {
        if !self.verified_users.contains(&self.own.user_id) {
            return None;
        }
        self.users.get(&self.own.user_id)?.identity.as_ref()
    }

    /// Whether the device's owner signed it with the self-signing key of
    /// their current, verified identity.
    pub(super) fn is_cross_signed_by_verified_owner(&self, device: &Device) -> bool {
        self.verified_users.contains(&device.user_id)
            && device.self_signing_key.is_some()
            && self
                .users
                .get(&device.user_id)
                .and_then(|r| r.identity.as_ref())
                .is_some_and(|identity| identity.self_signing == device.self_signing_key)
    }

    fn is_identity_verified(&self, user: &str) -> bool {
        let Some(record) = self.users.get(user) else {
            return false;
        };
        let Some(identity) = &record.identity else {
            return false;
        };
        if record.pinned_master.as_deref() != Some(&identity.master) {
            return false;
        }
        if user == self.own.user_id {
            return self.own.trusted_master.as_deref() == Some(&identity.master);
        }
        self.own_user_signing_key()
            .is_some_and(|usk| is_signed_by(&identity.master_key, &self.own.user_id, &usk))
    }
}

/// Whether `object` carries a valid signature by `user_id`'s ed25519 key
/// `public_key` (unpadded base64), under the key id `ed25519:<public_key>`.
pub(super) fn is_signed_by(object: &Map<String, Value>, user_id: &str, public_key: &str) -> bool {
    Ed25519PublicKey::from_base64(public_key).is_ok_and(|key| {
        verify_json_signature(&key, user_id, &format!("ed25519:{public_key}"), object).is_ok()
    })
}

/// Checks a user's cross-signing keys from a keys/query answer. `None` when
/// the master key is malformed; otherwise the identity, with `false` when a
/// self- or user-signing key was present but malformed or not signed by the
/// master key (it is left out).
fn parse_identity(
    user_id: &str,
    master: &Value,
    self_signing: Option<&Value>,
    user_signing: Option<&Value>,
) -> Option<(UserIdentityRecord, bool)> {
    let master_key = master.as_object()?;
    let master = parse_key(user_id, MASTER, master_key)?;
    let mut complete = true;
    let mut signed_subkey = |object: Option<&Value>, usage: &str| {
        let object = object?;
        let checked = object
            .as_object()
            .filter(|o| is_signed_by(o, user_id, &master))
            .and_then(|o| parse_key(user_id, usage, o));
        complete &= checked.is_some();
        checked
    };
    let self_signing = signed_subkey(self_signing, SELF_SIGNING);
    let user_signing = signed_subkey(user_signing, USER_SIGNING);
    let identity = UserIdentityRecord {
        master_key: master_key.clone(),
        master,
        self_signing,
        user_signing,
    };
    Some((identity, complete))
}

/// A cross-signing key object's public key, if it is `user_id`'s, lists
/// `usage`, and holds exactly one ed25519 key whose id names it.
fn parse_key(user_id: &str, usage: &str, object: &Map<String, Value>) -> Option<String> {
    if object.get("user_id")?.as_str()? != user_id {
        return None;
    }
    let usages = object.get("usage")?.as_array()?;
    if !usages.iter().any(|u| u.as_str() == Some(usage)) {
        return None;
    }
    let keys = object.get("keys")?.as_object()?;
    let [(key_id, public_key)] = keys.iter().collect::<Vec<_>>()[..] else {
        return None;
    };
    let public_key = public_key.as_str()?;
    Ed25519PublicKey::from_base64(public_key).ok()?;
    (*key_id == format!("ed25519:{public_key}")).then(|| public_key.to_owned())
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
    fn public_objects(&self, user_id: &str) -> (Value, Value, Value) {
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
                let _ = self.master.sign_json(user_id, map);
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
