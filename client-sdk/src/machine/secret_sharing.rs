//! Secret sharing between a user's own devices ([spec]): a device that
//! lacks the cross-signing private keys or the backup key asks our other
//! devices (`m.secret.request`, in the clear, to `*`); a device answers
//! (`m.secret.send`, over Olm, to the asking device only) when the request
//! comes from our own user, from a device it knows **and the user
//! verified**, and it holds the secret. Without an Olm session with that
//! device it claims one first and answers once it has it.
//!
//! The asking device takes a secret only for a request it made, only from
//! our own verified device, and only if it is what our identity says: the
//! three cross-signing keys are imported together, checked against our
//! published identity ([`OlmMachine::import_cross_signing_keys`]); the
//! backup key is handed to the application as a recovery key, which
//! [`OlmMachine::restore_backup`] checks against the backup. Once a secret
//! arrived, the request is cancelled on our other devices.
//!
//! Requests and answers are kept in memory only: a restart in between
//! drops them, and the application asks again.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#sharing

use std::collections::BTreeMap;

use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::{
    BACKUP_SECRET, DeviceKey, InFlight, OlmMachine, Request, SyncOutput,
    backup::backup_recovery_key, cross_signing::SECRET_NAMES, devices::Device, olm::DecryptedOlm,
};

/// Answers waiting for an Olm session, per device; more are dropped.
const MAX_WAITING_PER_DEVICE: usize = 8;
/// Devices with answers waiting; requests from more are dropped.
const MAX_WAITING_DEVICES: usize = 32;

/// A secret another of our devices sent us, taken. `Debug` never shows
/// the key.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceivedSecret {
    /// The three cross-signing private keys, imported: this device now
    /// signs itself and verifies others as the first one did.
    CrossSigningKeys,
    /// The key backup's private key, as its recovery key, for
    /// [`OlmMachine::restore_backup`].
    BackupKey(Zeroizing<String>),
}

impl std::fmt::Debug for ReceivedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CrossSigningKeys => f.write_str("CrossSigningKeys"),
            Self::BackupKey(_) => f.write_str("BackupKey(..)"),
        }
    }
}

/// Secret requests we made and answers we owe.
#[derive(Default)]
pub(super) struct SecretSharing {
    /// Our requests: request id → secret name.
    requested: BTreeMap<String, &'static str>,
    /// Cross-signing keys received, until all three are here.
    cross_signing: BTreeMap<&'static str, Zeroizing<String>>,
    /// Requests of verified devices we hold no Olm session with yet:
    /// device → (request id, secret name).
    waiting: BTreeMap<DeviceKey, Vec<(String, &'static str)>>,
}

impl OlmMachine {
    /// Asks our other devices for the secrets this device lacks (the
    /// cross-signing private keys, the backup key); the answers arrive in
    /// later syncs as [`SyncOutput::secrets`]. Asking again replaces the
    /// requests not answered yet. Returns how many secrets were asked for.
    pub fn request_secrets(&mut self) -> usize {
        let mut names: Vec<&'static str> = Vec::new();
        if !self.has_cross_signing_keys() {
            names.extend(SECRET_NAMES);
        }
        if self.backup_secret().is_none() {
            names.push(BACKUP_SECRET);
        }
        // A new request replaces an unanswered one for the same secret.
        self.secret_sharing
            .requested
            .retain(|_, name| !names.contains(name));
        for name in &names {
            let request_id = self.send_secret_request(json!({"name": name, "action": "request"}));
            self.secret_sharing.requested.insert(request_id, name);
        }
        names.len()
    }

    /// Sends an `m.secret.request` of `content` (plus our device and a
    /// request id) to all our devices; returns the request id.
    fn send_secret_request(&mut self, mut content: Value) -> String {
        let (user_id, device_id) = (self.user_id.clone(), self.device_id.clone());
        content["requesting_device_id"] = json!(device_id);
        let mut id = String::new();
        let request = self.issue(InFlight::ToDevice, |txn_id| {
            id = content["request_id"]
                .as_str()
                .map_or_else(|| txn_id.to_owned(), str::to_owned);
            content["request_id"] = json!(id);
            Request::ToDevice {
                event_type: "m.secret.request".to_owned(),
                txn_id: txn_id.to_owned(),
                body: json!({"messages": {user_id.as_str(): {"*": content}}}),
            }
        });
        self.queued.push(request);
        id
    }

    /// Answers an `m.secret.request` from one of our own verified devices.
    pub(super) fn receive_secret_request(&mut self, event: &Value) {
        let Some(device) = self.requesting_own_verified_device(event) else {
            return;
        };
        let content = event.get("content");
        let field = |name: &str| content.and_then(|c| c.get(name)).and_then(Value::as_str);
        let (Some(name), Some(request_id)) = (
            field("name").and_then(known_secret),
            field("request_id").map(str::to_owned),
        ) else {
            return;
        };
        if self.has_olm_session(&device) {
            self.send_secret(&device, &request_id, name);
            return;
        }
        let key = (device.user_id.clone(), device.device_id.clone());
        let is_new = !self.secret_sharing.waiting.contains_key(&key);
        if is_new && self.secret_sharing.waiting.len() >= MAX_WAITING_DEVICES {
            return;
        }
        let waiting = self.secret_sharing.waiting.entry(key).or_default();
        if waiting.len() < MAX_WAITING_PER_DEVICE {
            waiting.push((request_id, name));
        }
    }

    /// Devices we owe answers and must claim an Olm session with first.
    pub(super) fn secret_devices_needing_claim(&self, now_ms: u64) -> Vec<DeviceKey> {
        let wanted = self
            .secret_sharing
            .waiting
            .keys()
            .filter(|device| !self.claim_failed_recently(device, now_ms))
            .cloned();
        self.not_being_claimed(wanted)
    }

    /// Sends the answers `device` waited for, now that we have a session.
    pub(super) fn answer_waiting_secret_requests(&mut self, device: &Device) {
        let key = (device.user_id.clone(), device.device_id.clone());
        for (request_id, name) in self.secret_sharing.waiting.remove(&key).unwrap_or_default() {
            self.send_secret(device, &request_id, name);
        }
    }

    /// Sends `name`, if we hold it, to `device` over Olm.
    fn send_secret(&mut self, device: &Device, request_id: &str, name: &'static str) {
        let Some(secret) = self.secret(name) else {
            return;
        };
        let content = json!({"request_id": request_id, "secret": secret.as_str()});
        self.queue_olm_to_device(device, "m.secret.send", content);
    }

    /// The secret `name` as secret storage keeps it, if we hold it.
    fn secret(&self, name: &str) -> Option<Zeroizing<String>> {
        if name == BACKUP_SECRET {
            return self.backup_secret();
        }
        self.cross_signing_secrets()?
            .into_iter()
            .find(|(secret_name, _)| *secret_name == name)
            .map(|(_, secret)| secret)
    }

    /// Takes an `m.secret.send` we asked for, from our own verified device.
    pub(super) fn receive_secret_send(&mut self, olm: &DecryptedOlm, output: &mut SyncOutput) {
        if !self.is_from_own_verified_device(olm) {
            return;
        }
        let field = |name: &str| olm.content.get(name).and_then(Value::as_str);
        let (Some(request_id), Some(secret)) = (field("request_id"), field("secret")) else {
            return;
        };
        let Some(name) = self.secret_sharing.requested.remove(request_id) else {
            return;
        };
        let secret = Zeroizing::new(secret.to_owned());
        self.send_secret_request(
            json!({"action": "request_cancellation", "request_id": request_id}),
        );
        if name == BACKUP_SECRET {
            if let Ok(recovery_key) = backup_recovery_key(&secret) {
                output.secrets.push(ReceivedSecret::BackupKey(recovery_key));
            }
            return;
        }
        self.secret_sharing.cross_signing.insert(name, secret);
        let [master, self_signing, user_signing] =
            SECRET_NAMES.map(|name| self.secret_sharing.cross_signing.get(name).cloned());
        if let (Some(master), Some(self_signing), Some(user_signing)) =
            (master, self_signing, user_signing)
        {
            self.secret_sharing.cross_signing.clear();
            match self.import_cross_signing_keys(&master, &self_signing, &user_signing) {
                Ok(()) => output.secrets.push(ReceivedSecret::CrossSigningKeys),
                Err(error) => tracing::warn!(%error, "shared cross-signing keys refused"),
            }
        }
    }
}

/// The secret names this device shares, as `'static` names.
fn known_secret(name: &str) -> Option<&'static str> {
    SECRET_NAMES
        .into_iter()
        .chain([BACKUP_SECRET])
        .find(|known| *known == name)
}
