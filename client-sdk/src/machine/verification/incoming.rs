//! Incoming to-device verification messages: requests, starts without a
//! request, and every later message routed to its flow and checked
//! against the step it is at (in-room events reach `receive_flow_event`
//! through `room`).

use ruma::{DeviceId, UserId};
use serde_json::{Value, json};

use super::{
    ACCEPT, CANCEL, CancelCode, DONE, Flow, FlowKey, KEY, MAC, READY, REQUEST, REQUEST_FUTURE_MS,
    REQUEST_TIMEOUT_MS, START, State, methods, qr,
    sas::{self, FlowIds, ReceivedStart},
};
use crate::machine::OlmMachine;

impl OlmMachine {
    /// A to-device `m.key.verification.*` event (in the clear, as every
    /// client sends them).
    pub(in crate::machine) fn receive_verification_event(&mut self, event: &Value, now_ms: u64) {
        self.verifications.observe(now_ms);
        let (Some(event_type), Some(sender), Some(content)) = (
            event.get("type").and_then(Value::as_str),
            event
                .get("sender")
                .and_then(Value::as_str)
                .and_then(|s| <&UserId>::try_from(s).ok()),
            event.get("content"),
        ) else {
            return;
        };
        let Some(transaction_id) = content.get("transaction_id").and_then(Value::as_str) else {
            return;
        };
        let key = (sender.to_owned(), transaction_id.to_owned());
        let known = self.verifications.flows.contains_key(&key);
        match event_type {
            REQUEST | START if !known && self.has_too_many_flows(sender) => {}
            REQUEST if !known => {
                let Some(timestamp) = content.get("timestamp").and_then(Value::as_u64) else {
                    return;
                };
                let ids = self.flow_ids(sender, None, transaction_id);
                self.receive_request(ids, content, timestamp, now_ms);
            }
            START if !known => self.receive_start_without_request(sender, content, now_ms),
            CANCEL if !known => {}
            _ if !known => {
                // A flow we never had (or lost in a restart): say so to the
                // device that sent it, when the message names it (to-device
                // events do not say which device sent them).
                let Some(device) = from_device(content) else {
                    return;
                };
                let ids = self.flow_ids(sender, Some(device), transaction_id);
                self.send_cancel(&ids, &CancelCode::UnknownTransaction);
            }
            _ => self.receive_flow_event(sender, transaction_id, event_type, content, now_ms),
        }
    }

    /// A request (to-device, or in a room) for the flow `ids` names, sent
    /// at `timestamp` (its `timestamp` field, or in a room the event's
    /// `origin_server_ts`); `ids.other_device` is filled from its
    /// `from_device`.
    pub(super) fn receive_request(
        &mut self,
        mut ids: FlowIds,
        content: &Value,
        timestamp: u64,
        now_ms: u64,
    ) {
        let Some(device) = from_device(content) else {
            return;
        };
        let sender = ids.other_user.clone();
        // Stale, from the future, or from a device we cannot check: ignored
        // as the spec says (and as matrix-js-sdk does).
        if now_ms.saturating_sub(timestamp) >= REQUEST_TIMEOUT_MS
            || timestamp.saturating_sub(now_ms) > REQUEST_FUTURE_MS
            || self.devices.device(&sender, device).is_none()
            || (sender == self.user_id && device == self.device_id)
        {
            return;
        }
        ids.other_device = Some(device.to_owned());
        if self.refuse_second_attempt(&ids) {
            return;
        }
        let their_methods = methods(content);
        if !their_methods.iter().any(|m| m == sas::SAS_V1) {
            self.send_cancel(&ids, &CancelCode::UnknownMethod);
            return;
        }
        let mut flow = Flow::new(ids, false, timestamp, now_ms);
        flow.their_methods = their_methods;
        self.verifications.open(flow);
    }

    /// The spec: "When the same device attempts to initiate multiple
    /// verification attempts, the recipient should cancel all attempts
    /// with that device." When `ids.other_device` already has an
    /// unfinished flow with us that it initiated, every unfinished flow
    /// with that device and the new attempt are cancelled with
    /// `m.unexpected_message`, and this returns true: neither side can
    /// tell which one the user meant.
    fn refuse_second_attempt(&mut self, ids: &FlowIds) -> bool {
        let with_device: Vec<(FlowKey, bool)> = self
            .verifications
            .flows
            .iter()
            .filter(|(_, flow)| {
                !flow.state.is_finished()
                    && flow.ids.other_user == ids.other_user
                    && flow.ids.other_device == ids.other_device
            })
            .map(|(key, flow)| (key.clone(), flow.we_requested))
            .collect();
        if !with_device.iter().any(|(_, we_requested)| !we_requested) {
            return false;
        }
        for ((user, transaction_id), _) in with_device {
            self.cancel_flow(&user, &transaction_id, CancelCode::UnexpectedMessage);
        }
        self.send_cancel(ids, &CancelCode::UnexpectedMessage);
        true
    }

    pub(super) fn receive_start_without_request(
        &mut self,
        sender: &UserId,
        content: &Value,
        now_ms: u64,
    ) {
        let (Some(device), Some(transaction_id)) = (
            from_device(content),
            content.get("transaction_id").and_then(Value::as_str),
        ) else {
            return;
        };
        if self.devices.device(sender, device).is_none() {
            return;
        }
        let ids = self.flow_ids(sender, Some(device), transaction_id);
        if self.refuse_second_attempt(&ids) {
            return;
        }
        if let Err(code) = sas::check_start(content) {
            self.send_cancel(&ids, &code);
            return;
        }
        let mut flow = Flow::new(ids, false, now_ms, now_ms);
        flow.started_ms = Some(now_ms);
        flow.start = Some(content.clone());
        flow.state = State::ReceivedStart(ReceivedStart::new(content.clone()));
        self.verifications.open(flow);
    }

    pub(super) fn receive_flow_event(
        &mut self,
        sender: &UserId,
        transaction_id: &str,
        event_type: &str,
        content: &Value,
        now_ms: u64,
    ) {
        let key = (sender.to_owned(), transaction_id.to_owned());
        let Some(flow) = self.verifications.flows.get_mut(&key) else {
            return;
        };
        if flow.state.is_finished() {
            return;
        }
        if event_type == CANCEL {
            let code = content
                .get("code")
                .and_then(Value::as_str)
                .map_or(CancelCode::Other(String::new()), CancelCode::from_wire);
            flow.state = State::Cancelled { code, by_us: false };
            // One of our devices declined a request sent to all of them:
            // the spec has the others told `m.user`.
            let declined = std::mem::take(&mut flow.broadcast_to);
            let ids = flow.ids.clone();
            self.verifications.touch(sender, transaction_id);
            if ids.other_device.is_none() {
                for device in declined {
                    let to = FlowIds {
                        other_device: Some(device),
                        ..ids.clone()
                    };
                    self.send_cancel(&to, &CancelCode::User);
                }
            }
            return;
        }
        if flow.is_expired(now_ms) {
            self.cancel_flow(sender, transaction_id, CancelCode::Timeout);
            return;
        }
        self.verifications.touch(sender, transaction_id);
        let Some(flow) = self.verifications.flows.get_mut(&key) else {
            return;
        };
        if flow.ids.other_device.is_none() {
            // A request to all our devices, or one in a room (which every
            // device of the user sees): the first ready from one of them
            // picks it. Our other devices hear `m.accepted`; in a room,
            // everyone sees the ready. Nothing else is expected before.
            let in_room = flow.ids.room_id.is_some();
            let Some(device) = from_device(content).filter(|d| {
                event_type == READY
                    && if in_room {
                        self.devices.device(sender, d).is_some()
                    } else {
                        flow.broadcast_to.iter().any(|t| t == d)
                    }
            }) else {
                return;
            };
            flow.ids.other_device = Some(device.to_owned());
            let others: Vec<_> = std::mem::take(&mut flow.broadcast_to)
                .into_iter()
                .filter(|d| d != device)
                .collect();
            let ids = flow.ids.clone();
            for other in others {
                let to = FlowIds {
                    other_device: Some(other),
                    ..ids.clone()
                };
                self.send_cancel(&to, &CancelCode::Accepted);
            }
        }
        let Some(flow) = self.verifications.flows.get_mut(&key) else {
            return;
        };
        // Messages that name their device must come from the flow's.
        if let Some(device) = from_device(content)
            && flow.ids.other_device.as_deref() != Some(device)
        {
            self.cancel_flow(sender, transaction_id, CancelCode::UserMismatch);
            return;
        }
        let result = match event_type {
            READY => self.receive_ready(&key, content),
            START => self.receive_start(&key, content, now_ms),
            ACCEPT => self.receive_accept(&key, content),
            KEY => self.receive_key(&key, content),
            MAC => {
                self.receive_mac(sender, transaction_id, content);
                Ok(())
            }
            DONE => self.receive_done(&key),
            _ => Err(CancelCode::UnexpectedMessage),
        };
        if let Err(code) = result {
            self.cancel_flow(sender, transaction_id, code);
        }
    }

    pub(super) fn receive_ready(
        &mut self,
        key: &FlowKey,
        content: &Value,
    ) -> Result<(), CancelCode> {
        let flow = self.flow_by_key(key)?;
        if !(flow.we_requested && matches!(flow.state, State::Requested)) {
            return Err(CancelCode::UnexpectedMessage);
        }
        flow.their_methods = methods(content);
        flow.state = State::Ready;
        Ok(())
    }

    pub(super) fn receive_start(
        &mut self,
        key: &FlowKey,
        content: &Value,
        now_ms: u64,
    ) -> Result<(), CancelCode> {
        if content.get("method").and_then(Value::as_str) == Some(qr::RECIPROCATE) {
            return self.receive_reciprocate(key, content, now_ms);
        }
        let flow = self.flow_by_key(key)?;
        match &flow.state {
            State::Ready => {}
            State::SentStart(ours) => {
                // Both sides started at once. The spec: with the same
                // method, the start of the user (then device) with the
                // lexicographically smaller id wins, the other is ignored;
                // with different methods, cancel.
                if ours.start().get("method") != content.get("method") {
                    return Err(CancelCode::UnexpectedMessage);
                }
                let we_win = (flow.ids.own_user.as_str(), flow.ids.own_device.as_str())
                    < (flow.ids.other_user.as_str(), flow.ids.other_device_str());
                if we_win {
                    return Ok(());
                }
                // Theirs wins: ours is dropped and theirs accepted, since
                // the user here already chose to verify.
                sas::check_start(content)?;
                flow.state = State::ReceivedStart(ReceivedStart::new(content.clone()));
                flow.start = Some(content.clone());
                let (user, transaction_id) = key.clone();
                self.accept_sas(&user, &transaction_id)
                    .map_err(|_| CancelCode::UnexpectedMessage)?;
                return Ok(());
            }
            _ => return Err(CancelCode::UnexpectedMessage),
        }
        sas::check_start(content)?;
        flow.state = State::ReceivedStart(ReceivedStart::new(content.clone()));
        flow.start = Some(content.clone());
        flow.started_ms = Some(now_ms);
        Ok(())
    }

    pub(super) fn receive_accept(
        &mut self,
        key: &FlowKey,
        content: &Value,
    ) -> Result<(), CancelCode> {
        let flow = self.flow_by_key(key)?;
        let State::SentStart(sent) = std::mem::replace(&mut flow.state, State::Taken) else {
            return Err(CancelCode::UnexpectedMessage);
        };
        let (state, key_content) = sent.receive_accept(&flow.ids, content)?;
        flow.state = State::AwaitingKey(state);
        let ids = flow.ids.clone();
        self.send_verification_event(&ids, KEY, key_content);
        Ok(())
    }

    pub(super) fn receive_key(&mut self, key: &FlowKey, content: &Value) -> Result<(), CancelCode> {
        let flow = self.flow_by_key(key)?;
        let State::AwaitingKey(awaiting) = std::mem::replace(&mut flow.state, State::Taken) else {
            return Err(CancelCode::UnexpectedMessage);
        };
        let start = flow.start.clone().unwrap_or_default();
        let (state, reply) = awaiting.receive_key(&flow.ids, &start, content)?;
        flow.state = State::KeysExchanged(state);
        let ids = flow.ids.clone();
        if let Some(reply) = reply {
            self.send_verification_event(&ids, KEY, reply);
        }
        Ok(())
    }

    /// Their MAC: held until the user confirms, then checked against the
    /// keys we know for them; success applies the trust and sends done.
    pub(super) fn receive_mac(&mut self, user_id: &UserId, transaction_id: &str, content: &Value) {
        let known = self.keys_known_for(user_id, transaction_id);
        let key = (user_id.to_owned(), transaction_id.to_owned());
        let Some(flow) = self.verifications.flows.get_mut(&key) else {
            return;
        };
        let verified = match &mut flow.state {
            State::KeysExchanged(exchanged) => {
                exchanged.hold_mac(content.clone());
                return;
            }
            State::Confirmed(confirmed) => confirmed.verify_mac(&flow.ids, content, &known),
            _ => Err(CancelCode::UnexpectedMessage),
        };
        let device_key_id = format!("ed25519:{}", flow.ids.other_device_str());
        match verified {
            Ok(keys) if keys.contains(&device_key_id) => {
                flow.state = State::WaitingForDone;
                let ids = flow.ids.clone();
                self.send_verification_event(&ids, DONE, json!({}));
                self.apply_verification(&ids, &keys, &known);
            }
            // Something verified, but not the device itself.
            Ok(_) => self.cancel_flow(user_id, transaction_id, CancelCode::KeyMismatch),
            Err(code) => self.cancel_flow(user_id, transaction_id, code),
        }
    }

    pub(super) fn receive_done(&mut self, key: &FlowKey) -> Result<(), CancelCode> {
        let flow = self.flow_by_key(key)?;
        match std::mem::replace(&mut flow.state, State::Taken) {
            State::WaitingForDone => flow.state = State::Done,
            State::QrScanned { trust } => {
                // Their user saw the match on their side: the code we
                // scanned was theirs, over the keys we checked.
                let ids = flow.ids.clone();
                if !self.apply_qr_trust(&ids, &trust) {
                    return Err(CancelCode::KeyMismatch);
                }
                self.flow_by_key(key)?.state = State::Done;
                self.send_verification_event(&ids, DONE, json!({}));
            }
            other => {
                flow.state = other;
                return Err(CancelCode::UnexpectedMessage);
            }
        }
        Ok(())
    }
}

/// The `from_device` a message names.
pub(super) fn from_device(content: &Value) -> Option<&DeviceId> {
    content
        .get("from_device")
        .and_then(Value::as_str)
        .map(<&DeviceId>::from)
}
