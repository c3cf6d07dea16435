//! Device tracking: whose devices we know, and which keys they have.
//!
//! We track our own user and every member of every encrypted room we are
//! in. A tracked user's device list is *outdated* until a `/keys/query`
//! answers for them, and again whenever `device_lists.changed` names them;
//! `device_lists.left` stops tracking. A change that arrives while a query
//! for that user is in flight keeps the user outdated after the answer,
//! since the answer may predate the change.
//!
//! Every device in an answer must carry a valid self-signature by the
//! ed25519 key it lists, under the user and device id it is filed under. A
//! device we already know whose identity keys differ in a later answer is
//! *refused*: we keep the keys we had and raise
//! [`DeviceWarning::IdentityKeysChanged`]. A malicious server could otherwise
//! swap a device's keys for its own and read what we send that device. A
//! device that leaves its user's list is remembered (a tombstone with its
//! keys, in the user's record), so the same id coming back with other keys
//! is refused the same way: leaving a device out of one answer does not
//! make us forget its keys. The same keys are accepted back.
//!
//! The same answers carry each user's cross-signing keys; how they are
//! checked, pinned and trusted is in [`super::identities`]. A device's
//! signature by its owner's self-signing key is checked here, when its keys
//! arrive, and `DeviceTracker::is_verified` is the one place that says
//! whether a device is verified, by local decision or by cross-signing.

use std::collections::{BTreeMap, BTreeSet};

use myelin_crypto::{
    olm::{Curve25519PublicKey, Ed25519PublicKey},
    verify_json_signature,
};
use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    InFlight, OlmMachine, OutgoingRequest, Request,
    identities::{OwnIdentity, UserIdentityRecord, is_signed_by},
};

pub(super) const RECORD_KIND: &str = "devices";

/// What the local user decided about a device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalTrust {
    /// No decision: the device is unverified.
    #[default]
    Unset,
    /// Verified (out of band, or by a verification flow).
    Verified,
    /// Never share keys with it, never trust what it sends.
    Blacklisted,
}

/// Another device, as a verified `/keys/query` answer described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Its user.
    pub user_id: OwnedUserId,
    /// Its device id.
    pub device_id: OwnedDeviceId,
    /// Its ed25519 fingerprint key, unpadded base64.
    pub ed25519: String,
    /// Its curve25519 identity key, unpadded base64.
    pub curve25519: String,
    /// The local trust decision.
    pub trust: LocalTrust,
    /// The owner's self-signing key (unpadded base64) whose signature over
    /// these device keys verified at the last keys/query; `None` if the
    /// owner has not cross-signed the device. Whether that makes the device
    /// verified depends on the owner's identity:
    /// [`OlmMachine::is_device_verified`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_signing_key: Option<String>,
}

/// A problem with another device's keys, for the application to show.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceWarning {
    /// A known device came back with other identity keys; the new keys were
    /// refused and the old ones kept.
    IdentityKeysChanged {
        /// The device's user.
        user_id: OwnedUserId,
        /// The device.
        device_id: OwnedDeviceId,
    },
    /// A device's keys had a missing or invalid self-signature, or were
    /// filed under another user or device id; they were ignored.
    InvalidDeviceKeys {
        /// The user the keys were filed under.
        user_id: OwnedUserId,
        /// The device id they were filed under.
        device_id: OwnedDeviceId,
    },
    /// A room's `m.room.encryption` changed to something weaker or was
    /// replaced by another algorithm; the change was refused.
    EncryptionChangeRefused {
        /// The room.
        room_id: OwnedRoomId,
    },
    /// The user's master cross-signing key is not the one we pinned when we
    /// first saw them (or, for our own user, not the one this device
    /// trusts). The new identity and its devices are not verified until the
    /// application acknowledges the change
    /// ([`OlmMachine::pin_identity`]) and, for trust, verifies the user
    /// again.
    IdentityChanged {
        /// The user.
        user_id: OwnedUserId,
    },
    /// A user's cross-signing keys were malformed, or a self-signing or
    /// user-signing key was not signed by the master key; they were ignored.
    InvalidCrossSigningKeys {
        /// The user.
        user_id: OwnedUserId,
    },
}

/// One user's record: tracking state and devices.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct UserDevices {
    pub(super) user_id: OwnedUserId,
    pub(super) tracked: bool,
    pub(super) outdated: bool,
    pub(super) devices: BTreeMap<OwnedDeviceId, Device>,
    /// The cross-signing keys from the last keys/query that had them.
    #[serde(default)]
    pub(super) identity: Option<UserIdentityRecord>,
    /// The master key we accepted first (trust on first use), or that the
    /// application acknowledged since; a different one is not trusted.
    #[serde(default)]
    pub(super) pinned_master: Option<String>,
    /// The master key the user was last verified with, kept when that
    /// verification is lost to a new master key: a verification violation
    /// ([`OlmMachine::verification_violations`]) until the application
    /// acknowledges the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) verified_master: Option<String>,
    /// For our own user only: each other device's keys as served, without
    /// `signatures` and `unsigned`: the exact object our self-signing key
    /// signs to vouch for it ([`OlmMachine::verify_own_device`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) own_device_keys: BTreeMap<OwnedDeviceId, serde_json::Map<String, Value>>,
    /// Every device id the user ever had that is gone from their list,
    /// with the (ed25519, curve25519) keys it had: the same id with other
    /// keys is refused, however long it was away.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) removed_devices: BTreeMap<OwnedDeviceId, (String, String)>,
}

/// Device ids remembered per user once their device is gone. The server
/// can invent device ids (with keys of its own) in any number; past this
/// many, some are forgotten (the first in sort order).
const MAX_REMOVED_DEVICES: usize = 10_000;

#[derive(Debug)]
pub(super) struct DeviceTracker {
    pub(super) users: BTreeMap<OwnedUserId, UserDevices>,
    /// Our own user, and the master key this device trusts as ours.
    pub(super) own: OwnIdentity,
    /// Users whose current identity is verified (derived from `users` and
    /// `own`, refreshed whenever either changes: [`DeviceTracker::refresh_trust`]).
    pub(super) verified_users: BTreeSet<OwnedUserId>,
    /// curve25519 key -> (user, device), across every user.
    by_curve: BTreeMap<String, (OwnedUserId, OwnedDeviceId)>,
    querying: BTreeSet<OwnedUserId>,
    changed_while_querying: BTreeSet<OwnedUserId>,
}

impl UserDevices {
    /// A user we know nothing of yet: untracked, no devices.
    fn new(user_id: &UserId) -> Self {
        Self {
            user_id: user_id.to_owned(),
            tracked: false,
            outdated: false,
            devices: BTreeMap::new(),
            identity: None,
            pinned_master: None,
            verified_master: None,
            own_device_keys: BTreeMap::new(),
            removed_devices: BTreeMap::new(),
        }
    }
}

impl DeviceTracker {
    /// A tracker for `own_user_id`'s device, knowing nobody yet.
    pub(super) fn new(own_user_id: &UserId) -> Self {
        Self {
            users: BTreeMap::new(),
            own: OwnIdentity {
                user_id: own_user_id.to_owned(),
                trusted_master: None,
            },
            verified_users: BTreeSet::new(),
            by_curve: BTreeMap::new(),
            querying: BTreeSet::new(),
            changed_while_querying: BTreeSet::new(),
        }
    }

    pub(super) fn insert_user(&mut self, user: UserDevices) {
        for device in user.devices.values() {
            self.by_curve.insert(
                device.curve25519.clone(),
                (device.user_id.clone(), device.device_id.clone()),
            );
        }
        self.users.insert(user.user_id.clone(), user);
    }

    /// Starts tracking `user`; returns whether they were not tracked yet.
    pub(super) fn track(&mut self, user: &UserId) -> bool {
        let entry = self
            .users
            .entry(user.to_owned())
            .or_insert_with(|| UserDevices::new(user));
        if entry.tracked {
            return false;
        }
        entry.tracked = true;
        entry.outdated = true;
        true
    }

    pub(super) fn mark_changed(&mut self, user: &UserId) {
        if let Some(entry) = self.users.get_mut(user)
            && entry.tracked
        {
            entry.outdated = true;
            if self.querying.contains(user) {
                self.changed_while_querying.insert(user.to_owned());
            }
        }
    }

    pub(super) fn untrack(&mut self, user: &UserId) {
        if let Some(entry) = self.users.get_mut(user) {
            entry.tracked = false;
            entry.outdated = false;
        }
    }

    pub(super) fn is_outdated(&self, user: &UserId) -> bool {
        self.users
            .get(user)
            .is_none_or(|u| !u.tracked || u.outdated)
    }

    /// Every tracked user.
    pub(super) fn tracked_users(&self) -> Vec<OwnedUserId> {
        self.users
            .values()
            .filter(|u| u.tracked)
            .map(|u| u.user_id.clone())
            .collect()
    }

    /// Outdated tracked users with no query in flight.
    pub(super) fn users_to_query(&self) -> Vec<OwnedUserId> {
        self.users
            .values()
            .filter(|u| u.tracked && u.outdated && !self.querying.contains(&u.user_id))
            .map(|u| u.user_id.clone())
            .collect()
    }

    pub(super) fn query_started(&mut self, users: &[OwnedUserId]) {
        self.querying.extend(users.iter().cloned());
    }

    pub(super) fn query_finished(&mut self, users: &[OwnedUserId]) {
        for user in users {
            self.querying.remove(user);
        }
    }

    pub(super) fn devices_of(&self, user: &UserId) -> impl Iterator<Item = &Device> {
        self.users
            .get(user)
            .into_iter()
            .flat_map(|u| u.devices.values())
    }

    pub(super) fn device(&self, user: &UserId, device_id: &DeviceId) -> Option<&Device> {
        self.users.get(user)?.devices.get(device_id)
    }

    pub(super) fn device_by_curve(&self, curve25519: &str) -> Option<&Device> {
        let (user, device) = self.by_curve.get(curve25519)?;
        self.device(user, device)
    }

    /// The keys a device of `user` had before it left their list, if it did.
    pub(super) fn removed_keys(
        &self,
        user: &UserId,
        device_id: &DeviceId,
    ) -> Option<&(String, String)> {
        self.users.get(user)?.removed_devices.get(device_id)
    }

    pub(super) fn user_record(&self, user: &UserId) -> Option<&UserDevices> {
        self.users.get(user)
    }

    /// Whether `device` is verified: the user verified it locally, or its
    /// owner's self-signing key signed it and the owner's identity is
    /// verified. A blacklisted device never is.
    pub(super) fn is_verified(&self, device: &Device) -> bool {
        match device.trust {
            LocalTrust::Verified => true,
            LocalTrust::Blacklisted => false,
            LocalTrust::Unset => self.is_cross_signed_by_verified_owner(device),
        }
    }
}

impl OlmMachine {
    /// The devices we know for `user`.
    pub fn devices(&self, user_id: &UserId) -> Vec<Device> {
        self.devices.devices_of(user_id).cloned().collect()
    }

    /// Whether a known device is verified: locally
    /// ([`OlmMachine::set_device_trust`]), or cross-signed by its owner
    /// whose identity is verified (our own, or one we signed with
    /// [`OlmMachine::verify_user`]). Blacklisted devices never are.
    pub fn is_device_verified(&self, user_id: &UserId, device_id: &DeviceId) -> bool {
        // This device is not in our device list: it is verified once our
        // self-signing key's signature on it was accepted.
        if user_id == self.user_id && device_id == self.device_id {
            return self.is_this_device_cross_signed();
        }
        self.devices
            .device(user_id, device_id)
            .is_some_and(|device| self.devices.is_verified(device))
    }

    /// Records the local trust decision for a device. Excluding a device
    /// that holds a current room key rotates that room's session at its
    /// next share (see `group`).
    ///
    /// Returns whether the device is known.
    pub fn set_device_trust(
        &mut self,
        user_id: &UserId,
        device_id: &DeviceId,
        trust: LocalTrust,
    ) -> bool {
        self.set_trust(user_id, device_id, trust)
    }

    /// [`OlmMachine::set_device_trust`] for ids the machine holds.
    pub(super) fn set_trust(
        &mut self,
        user_id: &UserId,
        device_id: &DeviceId,
        trust: LocalTrust,
    ) -> bool {
        let Some(user) = self.devices.users.get_mut(user_id) else {
            return false;
        };
        let Some(device) = user.devices.get_mut(device_id) else {
            return false;
        };
        device.trust = trust;
        self.save_user_devices(user_id);
        self.recheck_outbound(None);
        true
    }

    pub(super) fn query_request(&mut self, users: Vec<OwnedUserId>) -> Option<OutgoingRequest> {
        if users.is_empty() {
            return None;
        }
        self.devices.query_started(&users);
        let device_keys: serde_json::Map<String, Value> =
            users.iter().map(|u| (u.to_string(), json!([]))).collect();
        let body = json!({"device_keys": device_keys, "timeout": 10_000});
        Some(self.issue(InFlight::Query(users), |_| Request::KeysQuery { body }))
    }

    pub(super) fn receive_query_response(
        &mut self,
        users: &[OwnedUserId],
        response: &Value,
    ) -> Result<(), &'static str> {
        let all_keys = response
            .get("device_keys")
            .and_then(Value::as_object)
            .ok_or("missing device_keys")?;
        // Our own identity first: whether others are verified depends on it.
        let (own, others): (Vec<&OwnedUserId>, Vec<&OwnedUserId>) =
            users.iter().partition(|u| **u == self.user_id);
        let now_ms = self.meta.last_now_ms;
        for user_id in own.into_iter().chain(others) {
            let Some(keys) = all_keys.get(user_id.as_str()).and_then(Value::as_object) else {
                // A failure for this user: it stays outdated, and its
                // server is not asked again for a while.
                self.query_backoff.failed([user_id], now_ms);
                continue;
            };
            self.query_backoff.answered(user_id);
            let self_signing_key = self.receive_user_identity(user_id, response);
            self.receive_user_devices(user_id, keys, self_signing_key.as_deref());
            let changed = self.devices.changed_while_querying.remove(user_id);
            if let Some(user) = self.devices.users.get_mut(user_id) {
                user.outdated = changed;
            }
            self.save_user_devices(user_id);
        }
        self.refresh_trust(users);
        Ok(())
    }

    /// Stores `user_id`'s devices from a keys/query answer. `self_signing_key`
    /// is the owner's checked self-signing key from the same answer.
    fn receive_user_devices(
        &mut self,
        user_id: &UserId,
        keys: &serde_json::Map<String, Value>,
        self_signing_key: Option<&str>,
    ) {
        let mut seen = BTreeSet::new();
        for (device_id, object) in keys {
            let device_id = <&DeviceId>::from(device_id.as_str());
            seen.insert(device_id.to_owned());
            let Some(mut parsed) = parse_device_keys(user_id, device_id, object) else {
                self.warnings.push(DeviceWarning::InvalidDeviceKeys {
                    user_id: user_id.to_owned(),
                    device_id: device_id.to_owned(),
                });
                continue;
            };
            if user_id == self.user_id && device_id == self.device_id {
                let ours = self.account.identity_keys();
                if parsed.ed25519 != ours.ed25519.to_base64()
                    || parsed.curve25519 != ours.curve25519.to_base64()
                {
                    self.warnings.push(DeviceWarning::IdentityKeysChanged {
                        user_id: user_id.to_owned(),
                        device_id: device_id.to_owned(),
                    });
                } else {
                    self.keep_served_signatures(object);
                }
                continue;
            }
            parsed.self_signing_key = self_signing_key
                .filter(|key| {
                    object
                        .as_object()
                        .is_some_and(|o| is_signed_by(o, user_id, key))
                })
                .map(ToOwned::to_owned);
            let served_keys = (parsed.ed25519.clone(), parsed.curve25519.clone());
            match self.devices.device(user_id, device_id) {
                Some(known)
                    if known.ed25519 != parsed.ed25519 || known.curve25519 != parsed.curve25519 =>
                {
                    self.warnings.push(DeviceWarning::IdentityKeysChanged {
                        user_id: user_id.to_owned(),
                        device_id: device_id.to_owned(),
                    });
                }
                Some(_) => {
                    // Same keys: only the owner's signature may have come or
                    // gone; a device that lost it may have to lose the
                    // rooms' current keys too.
                    let lost_signature = self
                        .devices
                        .users
                        .get_mut(user_id)
                        .and_then(|u| u.devices.get_mut(device_id))
                        .is_some_and(|known| {
                            let old = std::mem::replace(
                                &mut known.self_signing_key,
                                parsed.self_signing_key,
                            );
                            old.is_some() && known.self_signing_key.is_none()
                        });
                    if lost_signature {
                        self.recheck_outbound(None);
                    }
                }
                None if self
                    .devices
                    .removed_keys(user_id, device_id)
                    .is_some_and(|keys| keys != &served_keys) =>
                {
                    // A device id we saw, back with other keys: a server
                    // that left it out of one answer to forget its keys.
                    self.warnings.push(DeviceWarning::IdentityKeysChanged {
                        user_id: user_id.to_owned(),
                        device_id: device_id.to_owned(),
                    });
                    continue;
                }
                None => {
                    if self.devices.by_curve.contains_key(&parsed.curve25519) {
                        // Another device already uses this identity key: a
                        // server replaying keys under a second name.
                        self.warnings.push(DeviceWarning::InvalidDeviceKeys {
                            user_id: user_id.to_owned(),
                            device_id: device_id.to_owned(),
                        });
                        continue;
                    }
                    self.devices.by_curve.insert(
                        parsed.curve25519.clone(),
                        (user_id.to_owned(), device_id.to_owned()),
                    );
                    if let Some(user) = self.devices.users.get_mut(user_id) {
                        user.removed_devices.remove(device_id);
                        user.devices.insert(device_id.to_owned(), parsed);
                    }
                }
            }
            if user_id == self.user_id
                && self
                    .devices
                    .device(user_id, device_id)
                    .is_some_and(|d| (d.ed25519.clone(), d.curve25519.clone()) == served_keys)
                && let Some(object) = object.as_object()
            {
                self.devices.keep_own_device_keys(device_id, object);
            }
        }
        // Devices the server no longer lists were deleted: forget them, so
        // that group sessions shared with them rotate at the next share.
        let removed: Vec<Device> = self
            .devices
            .devices_of(user_id)
            .filter(|d| !seen.contains(&d.device_id))
            .cloned()
            .collect();
        if !removed.is_empty() {
            self.recheck_outbound(None);
        }
        for device in removed {
            self.devices.by_curve.remove(&device.curve25519);
            if let Some(user) = self.devices.users.get_mut(user_id) {
                user.devices.remove(&device.device_id);
                user.own_device_keys.remove(&device.device_id);
                user.removed_devices.insert(
                    device.device_id.to_owned(),
                    (device.ed25519.clone(), device.curve25519.clone()),
                );
                while user.removed_devices.len() > MAX_REMOVED_DEVICES {
                    user.removed_devices.pop_first();
                }
            }
        }
    }

    pub(super) fn save_user_devices(&mut self, user_id: &UserId) {
        if let Some(record) = self.devices.user_record(user_id).cloned() {
            self.put(format!("{RECORD_KIND}/{user_id}"), &record);
        }
    }
}

/// Checks one device's keys from a `/keys/query` answer: ids match where it
/// is filed, both keys parse, and the self-signature verifies.
pub(super) fn parse_device_keys(
    user_id: &UserId,
    device_id: &DeviceId,
    object: &Value,
) -> Option<Device> {
    let map = object.as_object()?;
    if map.get("user_id")?.as_str()? != user_id.as_str()
        || map.get("device_id")?.as_str()? != device_id.as_str()
    {
        return None;
    }
    let keys = map.get("keys")?;
    let ed25519 = keys.get(format!("ed25519:{device_id}"))?.as_str()?;
    let curve25519 = keys.get(format!("curve25519:{device_id}"))?.as_str()?;
    let signing_key = Ed25519PublicKey::from_base64(ed25519).ok()?;
    Curve25519PublicKey::from_base64(curve25519).ok()?;
    verify_json_signature(
        &signing_key,
        user_id.as_str(),
        &format!("ed25519:{device_id}"),
        map,
    )
    .ok()?;
    Some(Device {
        user_id: user_id.to_owned(),
        device_id: device_id.to_owned(),
        ed25519: ed25519.to_owned(),
        curve25519: curve25519.to_owned(),
        trust: LocalTrust::Unset,
        self_signing_key: None,
    })
}
