//! Other users' (and our own) cross-signing identities: the master,
//! self-signing and user-signing keys a keys/query answer serves, checked,
//! pinned on first sight, and the trust they carry ([spec]). Our own private
//! keys and what they sign are in [`super::cross_signing`]; the trust model
//! is written down in `spec-notes/cross-signing.md`.
//!
//! Every answer's keys are checked: owned by the user, with their usage,
//! one ed25519 key named by itself, the self- and user-signing keys signed
//! by the master key. The first master key seen for a user is pinned (trust
//! on first use); a different one later raises
//! [`DeviceWarning::IdentityChanged`] and is not trusted until
//! [`OlmMachine::pin_identity`].
//!
//! A user's identity is verified when its master key is the pinned one and
//! either it is ours and this device trusts it (it made it), or our
//! (verified) user-signing key signed it. A device is then verified when
//! that user's self-signing key signed it (`DeviceTracker::is_verified`,
//! public as [`OlmMachine::is_device_verified`]).
//!
//! A user once verified whose master key then changes is in *verification
//! violation*: the machine remembers the master key they were verified with,
//! and, unless the application turned the policy off, refuses to share room
//! keys with or encrypt for a room they read
//! ([`MachineError::VerificationViolation`]) until the application
//! acknowledges the change ([`OlmMachine::acknowledge_identity_change`]) or
//! verifies the new identity.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#cross-signing

use std::collections::BTreeSet;

use myelin_crypto::{olm::Ed25519PublicKey, verify_json_signature};
use ruma::{DeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    DeviceWarning, MachineError, OlmMachine,
    cross_signing::{MASTER, SELF_SIGNING, USER_SIGNING},
    devices::{Device, DeviceTracker},
};

/// A user's cross-signing identity, as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdentity {
    /// The user.
    pub user_id: OwnedUserId,
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
    /// Whether the user was verified with another master key than the one
    /// served now, and the change was not acknowledged: sharing with them
    /// is refused while the policy is on (see the module docs).
    pub has_verification_violation: bool,
}

/// Whether encrypting for a user in verification violation is refused.
pub(super) const VIOLATION_POLICY_RECORD: &str = "verification_violation_policy";

/// Our own user, and the master key this device trusts as ours (the one it
/// generated).
#[derive(Debug)]
pub(super) struct OwnIdentity {
    pub(super) user_id: OwnedUserId,
    pub(super) trusted_master: Option<String>,
}

/// A user's cross-signing keys as the last keys/query served them, checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct UserIdentityRecord {
    /// The master key object as served, signatures included: our
    /// user-signing key's signature on it is checked again whenever our own
    /// identity changes.
    pub(super) master_key: Map<String, Value>,
    pub(super) master: String,
    pub(super) self_signing: Option<String>,
    pub(super) user_signing: Option<String>,
}

impl OlmMachine {
    /// Accepts `user_id`'s current master key as the one to expect from now
    /// on (after [`DeviceWarning::IdentityChanged`]). This does not make it
    /// verified: verify the user again for that. Returns whether an identity
    /// is known.
    pub fn pin_identity(&mut self, user_id: &UserId) -> bool {
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
    pub fn user_identity(&self, user_id: &UserId) -> Option<UserIdentity> {
        let record = self.devices.user_record(user_id)?;
        let identity = record.identity.as_ref()?;
        Some(UserIdentity {
            user_id: user_id.to_owned(),
            master_key: identity.master.clone(),
            self_signing_key: identity.self_signing.clone(),
            is_verified: self.devices.verified_users.contains(user_id),
            has_changed: record.pinned_master.as_deref() != Some(&identity.master),
            has_verification_violation: self.devices.has_verification_violation(user_id),
        })
    }

    /// Accepts that `user_id`, once verified, now has another identity: pins
    /// their current master key ([`OlmMachine::pin_identity`]) and forgets
    /// that they were verified, which lifts the verification violation, so
    /// room keys go to their devices again. The new identity is not
    /// verified by this; verify the user again for that. Returns whether
    /// the user is known.
    pub fn acknowledge_identity_change(&mut self, user_id: &UserId) -> bool {
        let Some(record) = self.devices.users.get_mut(user_id) else {
            return false;
        };
        if let Some(identity) = &record.identity {
            record.pinned_master = Some(identity.master.clone());
        }
        record.verified_master = None;
        self.save_user_devices(user_id);
        self.refresh_trust(&[user_id.to_owned()]);
        true
    }

    /// Users in verification violation: verified once, showing another
    /// master key now, not acknowledged. Each is refused room keys while
    /// [`OlmMachine::set_verification_violations_block_sending`] is on.
    pub fn verification_violations(&self) -> Vec<OwnedUserId> {
        self.devices
            .users
            .keys()
            .filter(|user| self.devices.has_verification_violation(user))
            .cloned()
            .collect()
    }

    /// Whether a verification violation of a room's reader refuses sharing
    /// and encrypting in that room (on unless turned off; persisted).
    pub fn set_verification_violations_block_sending(&mut self, blocks: bool) {
        self.violations_block_sending = blocks;
        self.put(VIOLATION_POLICY_RECORD.to_owned(), &blocks);
    }

    /// Whether verification violations refuse sharing and encrypting.
    pub fn verification_violations_block_sending(&self) -> bool {
        self.violations_block_sending
    }

    /// Refuses to encrypt for `users` while the policy is on and any of
    /// them is in verification violation, naming them all.
    pub(super) fn check_verification_violations(
        &self,
        users: &[OwnedUserId],
    ) -> Result<(), MachineError> {
        if !self.violations_block_sending {
            return Ok(());
        }
        let user_ids: Vec<OwnedUserId> = users
            .iter()
            .filter(|user| self.devices.has_verification_violation(user))
            .cloned()
            .collect();
        if user_ids.is_empty() {
            Ok(())
        } else {
            Err(MachineError::VerificationViolation { user_ids })
        }
    }

    /// Checks and stores `user_id`'s cross-signing keys from a keys/query
    /// answer; returns their checked self-signing key, for their devices.
    pub(super) fn receive_user_identity(
        &mut self,
        user_id: &UserId,
        response: &Value,
    ) -> Option<String> {
        let key_object = |field: &str| {
            response
                .get(field)
                .and_then(|keys| keys.get(user_id.as_str()))
        };
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

    /// Recomputes which users are verified after `users`' identities (or
    /// ours, which decides everyone's) changed; a device that stops being
    /// verified must not keep a room's current key (`group`).
    pub(super) fn refresh_trust(&mut self, users: &[OwnedUserId]) {
        let all = users.contains(&self.user_id);
        if self.devices.refresh_trust(users, all) {
            self.recheck_outbound(None);
        }
        for user in self.devices.remember_verified_masters() {
            self.save_user_devices(&user);
        }
    }
}

impl DeviceTracker {
    /// Recomputes `verified_users` for `users`, or for everyone when `all`;
    /// returns whether someone stopped being verified.
    pub(super) fn refresh_trust(&mut self, users: &[OwnedUserId], all: bool) -> bool {
        let targets: BTreeSet<OwnedUserId> = if all {
            self.users.keys().cloned().collect()
        } else {
            users.iter().cloned().collect()
        };
        // Our own identity first: everyone else's depends on it.
        let (own, others): (Vec<OwnedUserId>, Vec<OwnedUserId>) = targets
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

    /// Records, for every verified user, the master key they are verified
    /// with; returns the users whose record changed.
    pub(super) fn remember_verified_masters(&mut self) -> Vec<OwnedUserId> {
        let mut changed = Vec::new();
        for user in &self.verified_users {
            let Some(record) = self.users.get_mut(user) else {
                continue;
            };
            let master = record.identity.as_ref().map(|i| i.master.clone());
            if master.is_some() && record.verified_master != master {
                record.verified_master = master;
                changed.push(user.clone());
            }
        }
        changed
    }

    /// Whether `user` was verified with a master key other than the one
    /// served now (or none is served now) and no one acknowledged it.
    pub(super) fn has_verification_violation(&self, user: &UserId) -> bool {
        self.users.get(user).is_some_and(|record| {
            record.verified_master.as_ref().is_some_and(|verified| {
                record.identity.as_ref().map(|i| &i.master) != Some(verified)
            })
        })
    }

    /// Keeps one of our other devices' keys as served, to sign later.
    pub(super) fn keep_own_device_keys(
        &mut self,
        device_id: &DeviceId,
        object: &Map<String, Value>,
    ) {
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

    fn is_identity_verified(&self, user: &UserId) -> bool {
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
pub(super) fn is_signed_by(
    object: &Map<String, Value>,
    user_id: &UserId,
    public_key: &str,
) -> bool {
    Ed25519PublicKey::from_base64(public_key).is_ok_and(|key| {
        verify_json_signature(
            &key,
            user_id.as_str(),
            &format!("ed25519:{public_key}"),
            object,
        )
        .is_ok()
    })
}

/// Checks a user's cross-signing keys from a keys/query answer. `None` when
/// the master key is malformed; otherwise the identity, with `false` when a
/// self- or user-signing key was present but malformed or not signed by the
/// master key (it is left out).
fn parse_identity(
    user_id: &UserId,
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
fn parse_key(user_id: &UserId, usage: &str, object: &Map<String, Value>) -> Option<String> {
    if object.get("user_id")?.as_str()? != user_id.as_str() {
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
