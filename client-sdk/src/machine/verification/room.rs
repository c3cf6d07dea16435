//! In-room verification ([spec]): the request is an `m.room.message` with
//! msgtype `m.key.verification.request` naming the user it is `to`; its
//! event id is the transaction id, and every later message is a room event
//! of its own type whose `m.relates_to` references the request
//! (`rel_type: m.reference`). The flow itself is the one of `mod.rs`;
//! this file is the transport: the request content, the outbox the
//! application sends as room events (encrypted when the room is), and the
//! routing of timeline events (decrypted or clear) to their flow.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#key-verification-framework

use ruma::{EventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use super::{
    CANCEL, CancelCode, Flow, READY, REQUEST, State, VerificationError, Verifications,
    incoming::from_device,
};
use crate::machine::OlmMachine;

/// The room event type that carries an in-room request.
const ROOM_MESSAGE: &str = "m.room.message";

/// A message of an in-room flow, for the application to send into its
/// room as an event of `event_type` (encrypted when the room is, as every
/// other event there).
#[derive(Debug, Clone, PartialEq)]
pub struct RoomVerificationMessage {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The event type (`m.key.verification.ready`, `.start`, ...).
    pub event_type: String,
    /// The content, with `m.relates_to` referencing the request.
    pub content: Value,
}

impl OlmMachine {
    /// The content of an in-room request to verify `user_id` (another
    /// user): send it as an `m.room.message` into a room shared with them
    /// (encrypted when the room is), then report its event id with
    /// [`OlmMachine::room_verification_request_sent`], which opens the flow.
    ///
    /// # Errors
    ///
    /// [`VerificationError::NotAnotherUser`] for our own user: our devices
    /// verify each other over to-device messages.
    pub fn room_verification_request(&self, user_id: &UserId) -> Result<Value, VerificationError> {
        if user_id == self.user_id {
            return Err(VerificationError::NotAnotherUser {
                user_id: user_id.to_owned(),
            });
        }
        Ok(json!({
            "msgtype": REQUEST,
            "body": format!(
                "{} is asking to verify your key, but your client does not support in-chat key verification.",
                self.user_id
            ),
            "from_device": self.device_id,
            "methods": self.offered_methods(user_id),
            "to": user_id,
        }))
    }

    /// Opens the flow of the in-room request to `user_id` that went out as
    /// `event_id` in `room_id`. Any device of theirs may answer it: the
    /// first `ready` picks the device.
    ///
    /// # Errors
    ///
    /// [`VerificationError::NotAnotherUser`] for our own user.
    pub fn room_verification_request_sent(
        &mut self,
        room_id: &RoomId,
        user_id: &UserId,
        event_id: &EventId,
        now_ms: u64,
    ) -> Result<(), VerificationError> {
        if user_id == self.user_id {
            return Err(VerificationError::NotAnotherUser {
                user_id: user_id.to_owned(),
            });
        }
        let mut ids = self.flow_ids(user_id, None, event_id.as_str());
        ids.room_id = Some(room_id.to_owned());
        self.verifications.observe(now_ms);
        self.verifications
            .open(Flow::new(ids, true, now_ms, now_ms));
        Ok(())
    }

    /// The messages of in-room flows to send now, as room events, in order.
    pub fn take_room_verification_messages(&mut self) -> Vec<RoomVerificationMessage> {
        std::mem::take(&mut self.verifications.room_outbox)
    }

    /// A timeline event of `room_id` (`type`, `sender`, `event_id`,
    /// `origin_server_ts`, `content`), in the clear or as decrypted:
    /// requests addressed to us open a flow, and events that reference one
    /// of our in-room flows in this room go to it. Everything else is left
    /// alone: other people's verifications share the room, and nothing is
    /// answered for a flow we do not have (the room is no place to tell
    /// third parties about it). Our own user's events are our echoes,
    /// but for another device's answer to a request made to us.
    pub fn receive_room_verification_event(
        &mut self,
        room_id: &RoomId,
        event: &Value,
        now_ms: u64,
    ) {
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
        self.verifications.observe(now_ms);
        if sender == self.user_id {
            self.receive_own_room_event(room_id, event_type, content);
            return;
        }
        if event_type == ROOM_MESSAGE {
            self.receive_room_request(room_id, sender, event, content, now_ms);
            return;
        }
        if !event_type.starts_with("m.key.verification.") {
            return;
        }
        let Some(transaction_id) = referenced_request(content) else {
            return;
        };
        let event_id = event.get("event_id").and_then(Value::as_str).unwrap_or("");
        if !self
            .verifications
            .take_new_room_event(sender, transaction_id, room_id, event_id)
        {
            return;
        }
        self.receive_flow_event(sender, transaction_id, event_type, content, now_ms);
    }

    /// An event of our own user: our echo, or another of our devices
    /// answering a request made to us. Its `ready` means that device took
    /// the request (the spec: our other devices "will know that the
    /// request has already been accepted, and that they should ignore
    /// it"), its `cancel` that it declined; either way the request still
    /// waiting here is dismissed. A flow this device already answered is
    /// left to the requester, who takes the first `ready` it sees.
    fn receive_own_room_event(&mut self, room_id: &RoomId, event_type: &str, content: &Value) {
        let code = match event_type {
            READY => CancelCode::Accepted,
            CANCEL => content
                .get("code")
                .and_then(Value::as_str)
                .map_or(CancelCode::User, CancelCode::from_wire),
            _ => return,
        };
        let Some(transaction_id) = referenced_request(content) else {
            return;
        };
        if from_device(content) == Some(&*self.device_id) {
            return;
        }
        let waiting = self.verifications.flows.values_mut().find(|flow| {
            flow.ids.transaction_id == transaction_id
                && flow.ids.room_id.as_deref() == Some(room_id)
                && !flow.we_requested
                && matches!(flow.state, State::Requested)
        });
        if let Some(flow) = waiting {
            flow.state = State::Cancelled { code, by_us: false };
            let user = flow.ids.other_user.clone();
            self.verifications.touch(&user, transaction_id);
        }
    }

    fn receive_room_request(
        &mut self,
        room_id: &RoomId,
        sender: &UserId,
        event: &Value,
        content: &Value,
        now_ms: u64,
    ) {
        let is_request = content.get("msgtype").and_then(Value::as_str) == Some(REQUEST);
        let to_us = content.get("to").and_then(Value::as_str) == Some(self.user_id.as_str());
        let (Some(event_id), Some(timestamp)) = (
            event.get("event_id").and_then(Value::as_str),
            event.get("origin_server_ts").and_then(Value::as_u64),
        ) else {
            return;
        };
        let known = self
            .verifications
            .flows
            .contains_key(&(sender.to_owned(), event_id.to_owned()));
        if !is_request || !to_us || known || self.has_too_many_flows(sender) {
            return;
        }
        let mut ids = self.flow_ids(sender, None, event_id);
        ids.room_id = Some(room_id.to_owned());
        self.receive_request(ids, content, timestamp, now_ms);
    }
}

/// The request event an in-room verification event references (`m.reference`).
fn referenced_request(content: &Value) -> Option<&str> {
    content
        .get("m.relates_to")
        .filter(|r| r.get("rel_type").and_then(Value::as_str) == Some("m.reference"))
        .and_then(|r| r.get("event_id"))
        .and_then(Value::as_str)
}

impl Verifications {
    /// Whether `(user, transaction_id)` is an unfinished in-room flow in
    /// `room_id` that has not yet seen `event_id`, which it now has. A
    /// timeline event can reach the client twice (a sync repeated after a
    /// failed save, the same event in a later batch); the second time it
    /// would be out of order, and cancel the flow. The list is short: every
    /// message a flow does not expect ends it.
    fn take_new_room_event(
        &mut self,
        user: &UserId,
        transaction_id: &str,
        room_id: &RoomId,
        event_id: &str,
    ) -> bool {
        let Some(flow) = self
            .flows
            .get_mut(&(user.to_owned(), transaction_id.to_owned()))
            .filter(|flow| flow.ids.room_id.as_deref() == Some(room_id))
        else {
            return false;
        };
        if flow.state.is_finished() || flow.room_events.iter().any(|seen| seen == event_id) {
            return false;
        }
        flow.room_events.push(event_id.to_owned());
        true
    }
}
