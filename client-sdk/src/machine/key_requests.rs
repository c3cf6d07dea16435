//! Asking our own other devices for room keys we lack, and answering them.
//!
//! When an event stays undecryptable for want of its key (not withheld),
//! we send one `m.room_key_request` per session to all our own devices
//! (`*`). A device answers with `m.forwarded_room_key` over Olm only if the
//! request comes from our own user, from a device it knows **and the user
//! verified**, and it holds the session; it forwards the session from its
//! first known index. We accept a forwarded key only for a session we
//! asked for, from our own verified device. Decrypted events then carry
//! `forwarded: true` and
//! [`VerificationState::AuthenticityNotGuaranteed`](super::VerificationState::AuthenticityNotGuaranteed).
//!
//! Requests to other users' devices are not sent: a key that the sender
//! did not share with us was, by the rules of `group`, not meant for us.

use myelin_crypto::megolm::{ExportedSessionKey, InboundGroupSession, MEGOLM_ALGORITHM};
use serde_json::{Value, json};

use super::{
    InFlight, OlmMachine, Request, SyncOutput,
    inbound::{InboundEntry, SessionKeyId},
    olm::DecryptedOlm,
};

pub(super) const RECORD: &str = "key_requests";

impl OlmMachine {
    /// Queues an `m.room_key_request` for `key_id` to our own devices, once.
    pub(super) fn request_room_key(&mut self, key_id: &SessionKeyId) {
        if !self.key_requests.insert(key_id.clone()) {
            return;
        }
        self.save_key_requests();
        let (user_id, device_id) = (self.user_id.clone(), self.device_id.clone());
        let request = self.issue(InFlight::ToDevice, |txn_id| Request::ToDevice {
            event_type: "m.room_key_request".to_owned(),
            txn_id: txn_id.to_owned(),
            body: json!({"messages": {user_id.as_str(): {"*": {
                "action": "request",
                "body": {
                    "algorithm": MEGOLM_ALGORITHM,
                    "room_id": key_id.room_id,
                    "sender_key": key_id.sender_key,
                    "session_id": key_id.session_id,
                },
                "request_id": txn_id,
                "requesting_device_id": device_id,
            }}}}),
        });
        self.queued.push(request);
    }

    /// Answers a request from one of our own verified devices with the
    /// session, if we have it.
    pub(super) fn receive_key_request(&mut self, event: &Value) {
        let Some(device) = self.requesting_own_verified_device(event) else {
            return;
        };
        let body = event.get("content").and_then(|c| c.get("body"));
        let Some(key_id) = SessionKeyId::from_json(body) else {
            return;
        };
        let Some((exported, claimed_ed25519)) = self
            .inbound
            .get(&key_id)
            .map(|e| (e.export().to_base64(), e.claimed_ed25519().to_owned()))
        else {
            return;
        };
        let forwarded = json!({
            "algorithm": MEGOLM_ALGORITHM,
            "room_id": key_id.room_id,
            "sender_key": key_id.sender_key,
            "session_id": key_id.session_id,
            "session_key": exported,
            "sender_claimed_ed25519_key": claimed_ed25519,
            "forwarding_curve25519_key_chain": [],
        });
        // Without an Olm session with that device the request is dropped
        // (the device asks again after a restart).
        self.queue_olm_to_device(&device, "m.forwarded_room_key", forwarded);
    }

    /// Accepts a forwarded key we asked for, from our own verified device.
    pub(super) fn receive_forwarded_room_key(
        &mut self,
        olm: &DecryptedOlm,
        output: &mut SyncOutput,
    ) {
        if !self.is_from_own_verified_device(olm) {
            return;
        }
        let field = |name: &str| olm.content.get(name).and_then(Value::as_str);
        let (Some(key_id), Some(session_key), Some(claimed)) = (
            SessionKeyId::from_json(Some(&olm.content)),
            field("session_key"),
            field("sender_claimed_ed25519_key"),
        ) else {
            return;
        };
        if field("algorithm") != Some(MEGOLM_ALGORITHM) || !self.key_requests.contains(&key_id) {
            return;
        }
        let Ok(key) = ExportedSessionKey::from_base64(session_key) else {
            return;
        };
        let entry = InboundEntry::new(
            key_id.clone(),
            InboundGroupSession::import(&key),
            None,
            claimed.to_owned(),
        );
        if self.accept_inbound(entry, output) {
            self.key_requests.remove(&key_id);
            self.save_key_requests();
        }
    }

    fn save_key_requests(&mut self) {
        let requests: Vec<SessionKeyId> = self.key_requests.iter().cloned().collect();
        self.put(RECORD.to_owned(), &requests);
    }
}
