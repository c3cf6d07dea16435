//! The client's interactive verification (SAS, over to-device messages or
//! in a room). The machine runs the flows ([`crate::machine::verification`]);
//! incoming `m.key.verification.*` events reach it with each sync, to-device
//! ones and room timeline ones alike (decrypted first in an encrypted room).
//! Each call here takes one step, commits the machine's changes and then
//! sends what it queued, as everywhere else; messages of in-room flows go
//! out as room events through [`crate::Room::send`], so they are encrypted
//! in an encrypted room. See `spec-notes/verification.md`.

use ruma::{DeviceId, RoomId, UserId};
use serde_json::{Value, json};

use crate::{
    Client,
    encryption::now_ms,
    error::{Error, Result},
    events::RoomEvent,
    machine::{MachineError, OlmMachine, RoomVerificationMessage, Verification, VerificationError},
};

impl Client {
    /// Asks a device (another user's, or another of ours) to verify by SAS;
    /// returns the transaction id naming the flow. Follow it with
    /// [`Client::verification`] after each sync.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with [`VerificationError::UnknownDevice`] for a
    /// device not queried yet; network and store errors.
    pub async fn request_verification(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<String> {
        self.verification_step(|machine| machine.request_verification(user_id, device_id, now_ms()))
            .await
    }

    /// Asks every other device of ours to verify this one; the first to
    /// accept takes the flow. Returns the transaction id.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with [`VerificationError::UnknownDevice`] when no
    /// other device of ours is known; network and store errors.
    pub async fn request_own_verification(&self) -> Result<String> {
        self.verification_step(|machine| machine.request_own_verification(now_ms()))
            .await
    }

    /// Asks `user_id` (another user) to verify in `room_id`, a room shared
    /// with them: sends the `m.key.verification.request` room message
    /// (encrypted when the room is); any of their devices may answer.
    /// Returns the transaction id, which is the request's event id.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with [`VerificationError::NotAnotherUser`] for our
    /// own user (our devices verify with [`Client::request_verification`]);
    /// the errors of [`crate::Room::send`].
    pub async fn request_verification_in_room(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<String> {
        let content = self
            .with_machine(|machine| machine.room_verification_request(user_id))
            .await?
            .map_err(MachineError::from)?;
        let event_id = self.room(room_id).send("m.room.message", content).await?;
        self.verification_step(|machine| {
            machine.room_verification_request_sent(room_id, user_id, &event_id, now_ms())
        })
        .await?;
        Ok(event_id.to_string())
    }

    /// Accepts an incoming request (sends `ready`).
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`]; network and store
    /// errors.
    pub async fn accept_verification_request(
        &self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> Result<()> {
        self.verification_step(|machine| {
            machine.accept_verification_request(user_id, transaction_id)
        })
        .await
    }

    /// Starts SAS on a ready flow.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`]; network and store
    /// errors.
    pub async fn start_sas(&self, user_id: &UserId, transaction_id: &str) -> Result<()> {
        self.verification_step(|machine| machine.start_sas(user_id, transaction_id, now_ms()))
            .await
    }

    /// Accepts the other side's SAS start.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`]; network and store
    /// errors.
    pub async fn accept_sas(&self, user_id: &UserId, transaction_id: &str) -> Result<()> {
        self.verification_step(|machine| machine.accept_sas(user_id, transaction_id))
            .await
    }

    /// The user says the emoji (or numbers) match.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`]; network and store
    /// errors.
    pub async fn confirm_sas(&self, user_id: &UserId, transaction_id: &str) -> Result<()> {
        self.verification_step(|machine| machine.confirm_sas(user_id, transaction_id))
            .await
    }

    /// The user says the emoji (or numbers) differ: cancels with
    /// `m.mismatched_sas`.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`]; network and store
    /// errors.
    pub async fn sas_mismatch(&self, user_id: &UserId, transaction_id: &str) -> Result<()> {
        self.verification_step(|machine| machine.sas_mismatch(user_id, transaction_id))
            .await
    }

    /// Cancels a verification (`m.user`).
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`]; network and store
    /// errors.
    pub async fn cancel_verification(&self, user_id: &UserId, transaction_id: &str) -> Result<()> {
        self.verification_step(|machine| machine.cancel_verification(user_id, transaction_id))
            .await
    }

    /// The QR code to show another user in a ready flow (the bytes to
    /// render); see [`OlmMachine::generate_qr_code`].
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`] (no cross-signing
    /// keys, the other side cannot scan, not ready); store errors.
    pub async fn generate_qr_code(
        &self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> Result<Vec<u8>> {
        self.verification_step(|machine| machine.generate_qr_code(user_id, transaction_id))
            .await
    }

    /// The other device's QR code, as scanned: checked, then answered with
    /// the reciprocate start; see [`OlmMachine::scan_qr_code`].
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`] (a code that is not
    /// for this flow, or over keys we do not know, which cancels it);
    /// network and store errors.
    pub async fn scan_qr_code(
        &self,
        user_id: &UserId,
        transaction_id: &str,
        data: &[u8],
    ) -> Result<()> {
        self.verification_step(|machine| {
            machine.scan_qr_code(user_id, transaction_id, data, now_ms())
        })
        .await
    }

    /// The other device reported that our QR code matched: signs their
    /// master key and sends done.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] with a [`VerificationError`]; network and store
    /// errors.
    pub async fn confirm_qr_scanned(&self, user_id: &UserId, transaction_id: &str) -> Result<()> {
        self.verification_step(|machine| machine.confirm_qr_scanned(user_id, transaction_id))
            .await
    }

    /// One verification: its phase and, once keys are exchanged, the emoji
    /// and numbers to compare.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn verification(
        &self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> Result<Option<Verification>> {
        self.with_machine(|machine| machine.verification(user_id, transaction_id))
            .await
    }

    /// Every verification this session knows, finished ones included.
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] and store errors.
    pub async fn verifications(&self) -> Result<Vec<Verification>> {
        self.with_machine(|machine| machine.verifications()).await
    }

    /// Runs one machine step, then commits and sends what it queued
    /// (commit first: see `send_machine_requests`), in-room messages last.
    async fn verification_step<T>(
        &self,
        step: impl FnOnce(&mut OlmMachine) -> Result<T, VerificationError>,
    ) -> Result<T> {
        let mut slot = self.machine().await?;
        let machine = slot.as_mut().ok_or(Error::NotLoggedIn)?;
        let value = step(machine).map_err(MachineError::from)?;
        let requests = machine.outgoing_requests();
        self.send_machine_requests(machine, requests).await?;
        let messages = machine.take_room_verification_messages();
        // Sending into an encrypted room takes the machine's lock.
        drop(slot);
        self.send_room_verification_messages(messages).await?;
        Ok(value)
    }

    /// Sends in-room verification messages as room events, in order
    /// (encrypted when the room is). Call without the machine's lock.
    ///
    /// # Errors
    ///
    /// The first error of [`crate::Room::send`]; the messages after it are
    /// not sent (the flow then times out).
    pub(crate) async fn send_room_verification_messages(
        &self,
        messages: Vec<RoomVerificationMessage>,
    ) -> Result<()> {
        for message in messages {
            self.room(&message.room_id)
                .send(&message.event_type, message.content)
                .await?;
        }
        Ok(())
    }
}

/// Hands a timeline event of `room_id` to the machine's in-room flows when
/// it is a verification event: `event_type` and `content` are the clear
/// ones (the decrypted ones for an `m.room.encrypted` event).
pub(crate) fn route_room_verification_event(
    machine: &mut OlmMachine,
    room_id: &RoomId,
    event: &RoomEvent,
    event_type: &str,
    content: &Value,
) {
    let is_request = event_type == "m.room.message"
        && content.get("msgtype").and_then(Value::as_str) == Some("m.key.verification.request");
    if !is_request && !event_type.starts_with("m.key.verification.") {
        return;
    }
    let clear = json!({
        "type": event_type,
        "sender": event.sender,
        "event_id": event.event_id,
        "origin_server_ts": event.origin_server_ts,
        "content": content,
    });
    machine.receive_room_verification_event(room_id, &clear, now_ms());
}
