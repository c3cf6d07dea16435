//! The trust a verified SAS produces (see the module docs of
//! `verification` and `spec-notes/verification.md`): which keys we MAC for
//! the other side, which of theirs we accept a MAC over, and what a
//! success signs.

use std::collections::BTreeMap;

use ruma::{DeviceId, UserId};

use super::sas::FlowIds;
use crate::machine::{LocalTrust, OlmMachine};

impl OlmMachine {
    /// Raises trust after both MACs verified: see the module docs.
    pub(super) fn apply_verification(
        &mut self,
        ids: &FlowIds,
        verified: &[String],
        known: &BTreeMap<String, String>,
    ) {
        self.set_trust(&ids.other_user, ids.other_device_id(), LocalTrust::Verified);
        let master_verified = verified.iter().any(|id| {
            *id != format!("ed25519:{}", ids.other_device_str()) && known.contains_key(id)
        });
        if ids.other_user == self.user_id {
            if master_verified && self.devices.own.trusted_master.is_none() {
                // Our other device vouched, by MAC, for the master key the
                // server serves us: this device (which did not make it)
                // now trusts it, and with it every device it signs.
                let master = verified.iter().find_map(|id| {
                    let key = known.get(id)?;
                    (*id != format!("ed25519:{}", ids.other_device_str())).then(|| key.clone())
                });
                if let Some(master) = master {
                    self.trust_own_master(&master);
                }
            }
            self.sign_own_device(ids.other_device_id());
        } else if master_verified
            && self.has_cross_signing_keys()
            && let Ok(request) = self.verify_user(&ids.other_user)
        {
            self.queued.push(request);
        }
    }

    /// From now on this device trusts `master` as our master key, and
    /// with it every device it signs (when it trusts none yet).
    pub(super) fn trust_own_master(&mut self, master: &str) {
        if self.devices.own.trusted_master.is_some() {
            return;
        }
        self.devices.own.trusted_master = Some(master.to_owned());
        self.save_cross_signing();
        let own = self.user_id.clone();
        self.refresh_trust(&[own]);
    }

    /// Signs another device of ours with our self-signing key, when this
    /// device holds it.
    pub(super) fn sign_own_device(&mut self, device_id: &DeviceId) {
        if self.has_cross_signing_keys()
            && let Ok(request) = self.verify_own_device(device_id)
        {
            self.queued.push(request);
        }
    }

    /// The keys we MAC for the other side: our device key and, when this
    /// device trusts it, our master key.
    pub(super) fn own_verification_keys(&self) -> BTreeMap<String, String> {
        let mut keys = BTreeMap::from([(
            format!("ed25519:{}", self.device_id),
            self.account.identity_keys().ed25519.to_base64(),
        )]);
        if let Some(master) = &self.devices.own.trusted_master {
            keys.insert(format!("ed25519:{master}"), master.clone());
        }
        keys
    }

    /// The keys we would accept a MAC over: their device's ed25519 key and
    /// their current master key if it is the pinned one.
    pub(super) fn keys_known_for(
        &self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> BTreeMap<String, String> {
        let mut keys = BTreeMap::new();
        let Some(flow) = self
            .verifications
            .flows
            .get(&(user_id.to_owned(), transaction_id.to_owned()))
        else {
            return keys;
        };
        if let Some(device) = self.devices.device(user_id, flow.ids.other_device_id()) {
            keys.insert(
                format!("ed25519:{}", device.device_id),
                device.ed25519.clone(),
            );
        }
        if let Some(record) = self.devices.user_record(user_id)
            && let Some(identity) = &record.identity
            && record.pinned_master.as_deref() == Some(&identity.master)
        {
            keys.insert(
                format!("ed25519:{}", identity.master),
                identity.master.clone(),
            );
        }
        keys
    }
}
