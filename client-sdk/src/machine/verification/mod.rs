//! Interactive verification by short authentication string (`m.sas.v1`)
//! or QR code, over to-device messages or in a room ([spec]); the
//! decisions are in `spec-notes/verification.md`. The in-room transport
//! (requests as room messages, events referencing them, an outbox the
//! application sends as room events) is in `room`, the QR payload and the
//! reciprocate step in `qr`.
//!
//! A flow is keyed by the other user and its transaction id and goes
//! request → ready → start → accept → key → mac → done, or ends in a
//! cancel with one of the spec's codes ([`CancelCode`]). The SAS exchange
//! itself is typestate in `sas`; this module routes events to it, keeps
//! the timeouts (the machine has no clock: `now_ms` comes in with every
//! sync and every call that starts something, and
//! [`OlmMachine::expire_verifications`] is its tick) and turns a success
//! into trust:
//!
//! - the other device becomes locally verified ([`LocalTrust::Verified`](super::LocalTrust::Verified));
//! - another user's master key, when MAC'd and the one we know, is signed
//!   with our user-signing key (if this device holds it);
//! - another device of ours is signed with our self-signing key (if this
//!   device holds it); and when this device does not trust a master key of
//!   ours yet and the other device MAC'd the one the server serves us, it
//!   trusts that one from now on (self-verification of a new device).
//!
//! Flows live in memory only: a restart drops them (the peer's next message
//! is answered with `m.unknown_transaction`), as matrix-sdk-crypto does.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#device-verification

mod emoji;
mod incoming;
mod qr;
mod room;
mod sas;
mod trust;

use std::collections::BTreeMap;

use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, UserId};
use serde_json::{Value, json};

use self::sas::{AwaitingKey, Confirmed, FlowIds, KeysExchanged, ReceivedStart, SentStart};
pub use self::{emoji::Emoji, qr::QrError, room::RoomVerificationMessage};
use super::{InFlight, OlmMachine, Request};

/// A flow must complete within ten minutes of its request (the spec's
/// "does not complete within 10 minutes"); an incoming request older than
/// this is ignored.
pub const REQUEST_TIMEOUT_MS: u64 = 10 * 60 * 1000;
/// A started SAS flow expires five minutes after its start.
pub const SAS_TIMEOUT_MS: u64 = 5 * 60 * 1000;
/// A transaction id unused for this long (nothing sent or received in its
/// flow) expires: an unfinished flow is cancelled with `m.timeout`, a
/// finished one, kept until then for the application to show how it
/// ended, is forgotten.
pub const IDLE_TIMEOUT_MS: u64 = 10 * 60 * 1000;
/// An incoming request more than this far in the future is ignored.
pub const REQUEST_FUTURE_MS: u64 = 5 * 60 * 1000;
/// Flows one user's devices may have with us at once, finished ones
/// included until they are forgotten; further requests and starts are
/// ignored, so a known device cannot grow the machine without bound.
pub const MAX_FLOWS_PER_USER: usize = 8;

const REQUEST: &str = "m.key.verification.request";
const READY: &str = "m.key.verification.ready";
const START: &str = "m.key.verification.start";
const ACCEPT: &str = "m.key.verification.accept";
const KEY: &str = "m.key.verification.key";
const MAC: &str = "m.key.verification.mac";
const DONE: &str = "m.key.verification.done";
const CANCEL: &str = "m.key.verification.cancel";

/// Why a verification was cancelled: the spec's codes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelCode {
    /// `m.user`: a user cancelled.
    User,
    /// `m.timeout`: the flow took too long.
    Timeout,
    /// `m.unknown_transaction`: no flow with this transaction id.
    UnknownTransaction,
    /// `m.unknown_method`: no method or algorithm in common.
    UnknownMethod,
    /// `m.unexpected_message`: a message out of order.
    UnexpectedMessage,
    /// `m.key_mismatch`: a MAC did not verify.
    KeyMismatch,
    /// `m.user_mismatch`: the message came from another user or device.
    UserMismatch,
    /// `m.invalid_message`: a malformed message.
    InvalidMessage,
    /// `m.accepted`: another of our devices took the request.
    Accepted,
    /// `m.mismatched_commitment`: the key is not the one committed to.
    MismatchedCommitment,
    /// `m.mismatched_sas`: the user says the emoji or numbers differ.
    MismatchedSas,
    /// A code the spec does not define.
    Other(String),
}

impl CancelCode {
    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::User => "m.user",
            Self::Timeout => "m.timeout",
            Self::UnknownTransaction => "m.unknown_transaction",
            Self::UnknownMethod => "m.unknown_method",
            Self::UnexpectedMessage => "m.unexpected_message",
            Self::KeyMismatch => "m.key_mismatch",
            Self::UserMismatch => "m.user_mismatch",
            Self::InvalidMessage => "m.invalid_message",
            Self::Accepted => "m.accepted",
            Self::MismatchedCommitment => "m.mismatched_commitment",
            Self::MismatchedSas => "m.mismatched_sas",
            Self::Other(code) => code,
        }
    }

    /// Parses a wire value.
    pub fn from_wire(code: &str) -> Self {
        [
            Self::User,
            Self::Timeout,
            Self::UnknownTransaction,
            Self::UnknownMethod,
            Self::UnexpectedMessage,
            Self::KeyMismatch,
            Self::UserMismatch,
            Self::InvalidMessage,
            Self::Accepted,
            Self::MismatchedCommitment,
            Self::MismatchedSas,
        ]
        .into_iter()
        .find(|c| c.as_str() == code)
        .unwrap_or_else(|| Self::Other(code.to_owned()))
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::User => "The user cancelled the verification",
            Self::Timeout => "The verification timed out",
            Self::UnknownTransaction => "Unknown transaction",
            Self::UnknownMethod => "No common verification method",
            Self::UnexpectedMessage => "Unexpected message",
            Self::KeyMismatch => "A MAC did not match",
            Self::UserMismatch => "The message came from an unexpected user or device",
            Self::InvalidMessage => "Invalid message",
            Self::Accepted => "Another device accepted the request",
            Self::MismatchedCommitment => "The key does not match the commitment",
            Self::MismatchedSas => "The short authentication strings differ",
            Self::Other(_) => "Cancelled",
        }
    }
}

/// Where a verification stands, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerificationPhase {
    /// Requested, not yet ready.
    Requested,
    /// Both sides are ready; either may start SAS.
    Ready,
    /// SAS started, keys not yet exchanged ([`OlmMachine::accept_sas`]
    /// accepts an incoming start).
    Started,
    /// The short authentication string can be compared: confirm or report
    /// a mismatch.
    ShowingSas,
    /// The other device scanned our QR code: confirm
    /// ([`OlmMachine::confirm_qr_scanned`]) once it shows that the code
    /// matched, or cancel.
    TheyScannedQr,
    /// We confirmed (or scanned their QR code); waiting for the other side.
    Confirmed,
    /// Both MACs verified: the other device is verified.
    Done,
    /// Cancelled by us (`by_us`) or by them.
    Cancelled {
        /// The spec's code.
        code: CancelCode,
        /// Whether this device cancelled.
        by_us: bool,
    },
}

/// A verification as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The other user.
    pub user_id: OwnedUserId,
    /// The other device; `None` while a request to all our other devices
    /// ([`OlmMachine::request_own_verification`]), or one we sent in a
    /// room, waits for an answer.
    pub device_id: Option<OwnedDeviceId>,
    /// The transaction id naming the flow (for an in-room flow, the event
    /// id of its request).
    pub transaction_id: String,
    /// The room of an in-room flow; `None` over to-device messages.
    pub room_id: Option<OwnedRoomId>,
    /// Whether this device sent the request (or the first start).
    pub we_requested: bool,
    /// Where it stands.
    pub phase: VerificationPhase,
    /// The seven emoji, once keys are exchanged.
    pub emoji: Option<[Emoji; 7]>,
    /// The three numbers, once keys are exchanged.
    pub decimals: Option<[u16; 3]>,
}

/// Why a verification step could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerificationError {
    /// The device is not one a keys/query showed us.
    #[error("no device `{device_id}` known for `{user_id}`")]
    UnknownDevice {
        /// The user.
        user_id: OwnedUserId,
        /// The device.
        device_id: OwnedDeviceId,
    },
    /// No other device of ours is known to ask.
    #[error("no other device of ours is known")]
    NoOtherOwnDevice,
    /// No flow with this user and transaction id.
    #[error("no verification `{transaction_id}` with `{user_id}`")]
    UnknownFlow {
        /// The other user.
        user_id: OwnedUserId,
        /// The transaction id.
        transaction_id: String,
    },
    /// In-room verification is for another user; our own devices verify
    /// over to-device messages.
    #[error("in-room verification is with another user, not `{user_id}`")]
    NotAnotherUser {
        /// The user asked for.
        user_id: OwnedUserId,
    },
    /// A QR code could not be shown or was refused.
    #[error(transparent)]
    Qr(#[from] QrError),
    /// The flow is not at a step where this can be done.
    #[error("the verification is {phase:?}; cannot {action}")]
    WrongPhase {
        /// Where the flow is.
        phase: VerificationPhase,
        /// What was asked.
        action: &'static str,
    },
}

/// One flow.
pub(super) struct Flow {
    ids: FlowIds,
    /// The devices a request to all our other devices went to.
    broadcast_to: Vec<OwnedDeviceId>,
    /// The methods the other side offered (in its request or ready).
    their_methods: Vec<String>,
    /// The QR code we showed, if any.
    shown_qr: Option<qr::ShownQr>,
    /// The event ids of the room events an in-room flow took.
    room_events: Vec<String>,
    we_requested: bool,
    /// When the request was sent (its `timestamp`), or the start if there
    /// was no request.
    requested_ms: u64,
    started_ms: Option<u64>,
    /// When a message of the flow was last sent or received.
    last_activity_ms: u64,
    /// The start in force, for the commitment.
    start: Option<Value>,
    state: State,
}

enum State {
    Requested,
    Ready,
    SentStart(SentStart),
    ReceivedStart(ReceivedStart),
    AwaitingKey(AwaitingKey),
    KeysExchanged(KeysExchanged),
    Confirmed(Confirmed),
    /// Their MAC verified and our done sent; waiting for theirs.
    WaitingForDone,
    /// We scanned their QR code and sent the reciprocate start; waiting
    /// for their done (their user saw the match), then `trust` applies.
    QrScanned {
        trust: qr::QrTrust,
    },
    /// They scanned our QR code (their start carried our secret); waiting
    /// for our user to confirm that their device showed a match.
    QrReciprocated,
    Done,
    Cancelled {
        code: CancelCode,
        by_us: bool,
    },
    /// Between transitions only.
    Taken,
}

impl State {
    fn phase(&self) -> VerificationPhase {
        match self {
            Self::Requested => VerificationPhase::Requested,
            Self::Ready => VerificationPhase::Ready,
            Self::SentStart(_) | Self::ReceivedStart(_) | Self::AwaitingKey(_) => {
                VerificationPhase::Started
            }
            Self::KeysExchanged(_) => VerificationPhase::ShowingSas,
            Self::Confirmed(_) | Self::WaitingForDone | Self::QrScanned { .. } => {
                VerificationPhase::Confirmed
            }
            Self::QrReciprocated => VerificationPhase::TheyScannedQr,
            Self::Done => VerificationPhase::Done,
            Self::Cancelled { code, by_us } => VerificationPhase::Cancelled {
                code: code.clone(),
                by_us: *by_us,
            },
            Self::Taken => VerificationPhase::Cancelled {
                code: CancelCode::Other("internal".to_owned()),
                by_us: true,
            },
        }
    }

    fn is_finished(&self) -> bool {
        matches!(self, Self::Done | Self::Cancelled { .. })
    }
}

/// The other user and the transaction id.
type FlowKey = (OwnedUserId, String);

/// Every flow of the machine.
#[derive(Default)]
pub(super) struct Verifications {
    flows: BTreeMap<FlowKey, Flow>,
    /// The latest `now_ms` the machine was given: the time of messages we
    /// send from calls that carry none (the machine has no clock).
    now_ms: u64,
    /// Messages of in-room flows waiting for the application to send them
    /// as room events.
    room_outbox: Vec<RoomVerificationMessage>,
}

impl std::fmt::Debug for Verifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifications")
            .field("flows", &self.flows.len())
            .finish_non_exhaustive()
    }
}

impl OlmMachine {
    /// Asks `device_id` of `user_id` (another user's, or another of ours)
    /// to verify by SAS: sends `m.key.verification.request` (at the next
    /// [`OlmMachine::outgoing_requests`]) and returns the transaction id.
    ///
    /// # Errors
    ///
    /// [`VerificationError::UnknownDevice`] for a device not queried yet.
    pub fn request_verification(
        &mut self,
        user_id: &UserId,
        device_id: &DeviceId,
        now_ms: u64,
    ) -> Result<String, VerificationError> {
        if self.devices.device(user_id, device_id).is_none()
            || (user_id == self.user_id && device_id == self.device_id)
        {
            return Err(VerificationError::UnknownDevice {
                user_id: user_id.to_owned(),
                device_id: device_id.to_owned(),
            });
        }
        let transaction_id = new_transaction_id();
        let ids = self.flow_ids(user_id, Some(device_id), &transaction_id);
        let content = json!({
            "from_device": self.device_id,
            "methods": self.offered_methods(user_id),
            "timestamp": now_ms,
            "transaction_id": transaction_id,
        });
        self.verifications.observe(now_ms);
        self.verifications
            .open(Flow::new(ids.clone(), true, now_ms, now_ms));
        self.send_verification_event(&ids, REQUEST, content);
        Ok(transaction_id)
    }

    /// Asks every other device of ours to verify this one: the first to
    /// answer `ready` takes the flow and the others are told `m.accepted`.
    /// Returns the transaction id.
    ///
    /// # Errors
    ///
    /// [`VerificationError::NoOtherOwnDevice`] when no other device of
    /// ours is known.
    pub fn request_own_verification(&mut self, now_ms: u64) -> Result<String, VerificationError> {
        let own = self.user_id.clone();
        let targets: Vec<OwnedDeviceId> = self
            .devices
            .devices_of(&own)
            .map(|d| d.device_id.clone())
            .filter(|d| *d != self.device_id)
            .collect();
        if targets.is_empty() {
            return Err(VerificationError::NoOtherOwnDevice);
        }
        let transaction_id = new_transaction_id();
        let content = json!({
            "from_device": self.device_id,
            "methods": self.offered_methods(&own),
            "timestamp": now_ms,
            "transaction_id": transaction_id,
        });
        let messages: serde_json::Map<String, Value> = targets
            .iter()
            .map(|d| (d.to_string(), content.clone()))
            .collect();
        let body = json!({ "messages": { own.as_str(): messages } });
        let request = self.issue(InFlight::ToDevice, |txn_id| Request::ToDevice {
            event_type: REQUEST.to_owned(),
            txn_id: txn_id.to_owned(),
            body,
        });
        self.queued.push(request);
        self.verifications.observe(now_ms);
        let mut flow = Flow::new(
            self.flow_ids(&own, None, &transaction_id),
            true,
            now_ms,
            now_ms,
        );
        flow.broadcast_to = targets;
        self.verifications.open(flow);
        Ok(transaction_id)
    }

    /// Accepts an incoming request: sends `m.key.verification.ready`.
    ///
    /// # Errors
    ///
    /// [`VerificationError`]: no such flow, or not an incoming request.
    pub fn accept_verification_request(
        &mut self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> Result<(), VerificationError> {
        let flow = self.flow_mut(user_id, transaction_id)?;
        if flow.we_requested || !matches!(flow.state, State::Requested) {
            return Err(wrong_phase(flow, "accept the request"));
        }
        flow.state = State::Ready;
        let ids = flow.ids.clone();
        let content = json!({
            "from_device": ids.own_device,
            "methods": self.offered_methods(&ids.other_user),
        });
        self.send_verification_event(&ids, READY, content);
        Ok(())
    }

    /// Starts SAS on a ready flow: sends `m.key.verification.start`.
    ///
    /// # Errors
    ///
    /// [`VerificationError`]: no such flow, or not ready.
    pub fn start_sas(
        &mut self,
        user_id: &UserId,
        transaction_id: &str,
        now_ms: u64,
    ) -> Result<(), VerificationError> {
        self.verifications.observe(now_ms);
        let flow = self.flow_mut(user_id, transaction_id)?;
        if !matches!(flow.state, State::Ready) {
            return Err(wrong_phase(flow, "start SAS"));
        }
        let (state, start) = SentStart::new(&flow.ids);
        flow.state = State::SentStart(state);
        flow.start = Some(start.clone());
        flow.started_ms = Some(now_ms);
        let ids = flow.ids.clone();
        self.send_verification_event(&ids, START, start);
        Ok(())
    }

    /// Accepts the other side's SAS start: sends `m.key.verification.accept`
    /// with our commitment.
    ///
    /// # Errors
    ///
    /// [`VerificationError`]: no such flow, or no start to accept.
    pub fn accept_sas(
        &mut self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> Result<(), VerificationError> {
        let flow = self.flow_mut(user_id, transaction_id)?;
        if !matches!(flow.state, State::ReceivedStart(_)) {
            return Err(wrong_phase(flow, "accept SAS"));
        }
        let State::ReceivedStart(received) = std::mem::replace(&mut flow.state, State::Taken)
        else {
            return Err(wrong_phase(flow, "accept SAS"));
        };
        let (state, accept) = received.accept(&flow.ids);
        flow.state = State::AwaitingKey(state);
        let ids = flow.ids.clone();
        self.send_verification_event(&ids, ACCEPT, accept);
        Ok(())
    }

    /// The user compared the SAS and it matches: sends our MAC; the flow
    /// completes when theirs verifies.
    ///
    /// # Errors
    ///
    /// [`VerificationError`]: no such flow, or no SAS shown.
    pub fn confirm_sas(
        &mut self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> Result<(), VerificationError> {
        let own_keys = self.own_verification_keys();
        let flow = self.flow_mut(user_id, transaction_id)?;
        if !matches!(flow.state, State::KeysExchanged(_)) {
            return Err(wrong_phase(flow, "confirm the SAS"));
        }
        let State::KeysExchanged(exchanged) = std::mem::replace(&mut flow.state, State::Taken)
        else {
            return Err(wrong_phase(flow, "confirm the SAS"));
        };
        let (mut confirmed, mac) = exchanged.confirm(&flow.ids, &own_keys);
        let held = confirmed.take_held_mac();
        flow.state = State::Confirmed(confirmed);
        let ids = flow.ids.clone();
        self.send_verification_event(&ids, MAC, mac);
        if let Some(mac) = held {
            self.receive_mac(user_id, transaction_id, &mac);
        }
        Ok(())
    }

    /// The user says the SAS differs: cancels with `m.mismatched_sas`.
    ///
    /// # Errors
    ///
    /// [`VerificationError`]: no such flow, or no SAS shown.
    pub fn sas_mismatch(
        &mut self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> Result<(), VerificationError> {
        let flow = self.flow_mut(user_id, transaction_id)?;
        if !matches!(flow.state, State::KeysExchanged(_)) {
            return Err(wrong_phase(flow, "report a mismatch"));
        }
        self.cancel_flow(user_id, transaction_id, CancelCode::MismatchedSas);
        Ok(())
    }

    /// Cancels a flow (`m.user`).
    ///
    /// # Errors
    ///
    /// [`VerificationError`]: no such flow, or already finished.
    pub fn cancel_verification(
        &mut self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> Result<(), VerificationError> {
        let flow = self.flow_mut(user_id, transaction_id)?;
        if flow.state.is_finished() {
            return Err(wrong_phase(flow, "cancel"));
        }
        self.cancel_flow(user_id, transaction_id, CancelCode::User);
        Ok(())
    }

    /// One verification, if known.
    pub fn verification(&self, user_id: &UserId, transaction_id: &str) -> Option<Verification> {
        let flow = self
            .verifications
            .flows
            .get(&(user_id.to_owned(), transaction_id.to_owned()))?;
        Some(flow.view())
    }

    /// Every verification known, finished ones included.
    pub fn verifications(&self) -> Vec<Verification> {
        self.verifications.flows.values().map(Flow::view).collect()
    }

    /// The machine's tick: cancels with `m.timeout` every flow past a
    /// deadline ([`REQUEST_TIMEOUT_MS`] after its request,
    /// [`SAS_TIMEOUT_MS`] after its SAS start, [`IDLE_TIMEOUT_MS`] since
    /// its last message) and forgets finished flows idle for
    /// [`IDLE_TIMEOUT_MS`]. Each sync calls this with its `now_ms`; an
    /// application may call it between syncs.
    pub fn expire_verifications(&mut self, now_ms: u64) {
        self.verifications.observe(now_ms);
        let expired: Vec<FlowKey> = self
            .verifications
            .flows
            .iter()
            .filter(|(_, flow)| !flow.state.is_finished() && flow.is_expired(now_ms))
            .map(|(key, _)| key.clone())
            .collect();
        for (user, transaction_id) in expired {
            self.cancel_flow(&user, &transaction_id, CancelCode::Timeout);
        }
        self.verifications.flows.retain(|_, flow| {
            !flow.state.is_finished()
                || now_ms.saturating_sub(flow.last_activity_ms) < IDLE_TIMEOUT_MS
        });
    }

    /// Whether `sender`'s devices already have as many flows with us as
    /// [`MAX_FLOWS_PER_USER`].
    fn has_too_many_flows(&self, sender: &UserId) -> bool {
        self.verifications
            .flows
            .keys()
            .filter(|(user, _)| user == sender)
            .count()
            >= MAX_FLOWS_PER_USER
    }

    fn cancel_flow(&mut self, user_id: &UserId, transaction_id: &str, code: CancelCode) {
        let key = (user_id.to_owned(), transaction_id.to_owned());
        let Some(flow) = self.verifications.flows.get_mut(&key) else {
            return;
        };
        flow.state = State::Cancelled {
            code: code.clone(),
            by_us: true,
        };
        let ids = flow.ids.clone();
        // A room is one audience; a request to all our devices that none
        // took yet is cancelled at each of them.
        let targets = if ids.other_device.is_none() && ids.room_id.is_none() {
            flow.broadcast_to.iter().cloned().map(Some).collect()
        } else {
            vec![ids.other_device.clone()]
        };
        for device in targets {
            let to = FlowIds {
                other_device: device,
                ..ids.clone()
            };
            self.send_cancel(&to, &code);
        }
    }

    fn send_cancel(&mut self, ids: &FlowIds, code: &CancelCode) {
        let content = json!({
            "code": code.as_str(),
            "reason": code.reason(),
        });
        self.send_verification_event(ids, CANCEL, content);
    }

    /// Queues one verification message, named for its flow
    /// ([`FlowIds::tag`]): for an in-room flow, for the application to
    /// send as a room event ([`OlmMachine::take_room_verification_messages`]);
    /// otherwise as a to-device message to the flow's other device, in the
    /// clear as every client sends them (they carry public keys and MACs
    /// only).
    fn send_verification_event(&mut self, ids: &FlowIds, event_type: &str, content: Value) {
        self.verifications
            .touch(&ids.other_user, &ids.transaction_id);
        let content = ids.tag(content);
        if let Some(room_id) = &ids.room_id {
            self.verifications
                .room_outbox
                .push(RoomVerificationMessage {
                    room_id: room_id.clone(),
                    event_type: event_type.to_owned(),
                    content,
                });
            return;
        }
        let body =
            json!({ "messages": { ids.other_user.as_str(): { ids.other_device_str(): content } } });
        let request = self.issue(InFlight::ToDevice, |txn_id| Request::ToDevice {
            event_type: event_type.to_owned(),
            txn_id: txn_id.to_owned(),
            body,
        });
        self.queued.push(request);
    }

    fn flow_ids(
        &self,
        user_id: &UserId,
        device_id: Option<&DeviceId>,
        transaction_id: &str,
    ) -> FlowIds {
        FlowIds {
            own_user: self.user_id.clone(),
            own_device: self.device_id.clone(),
            other_user: user_id.to_owned(),
            other_device: device_id.map(ToOwned::to_owned),
            transaction_id: transaction_id.to_owned(),
            room_id: None,
        }
    }

    fn flow_mut(
        &mut self,
        user_id: &UserId,
        transaction_id: &str,
    ) -> Result<&mut Flow, VerificationError> {
        self.verifications
            .flows
            .get_mut(&(user_id.to_owned(), transaction_id.to_owned()))
            .ok_or_else(|| VerificationError::UnknownFlow {
                user_id: user_id.to_owned(),
                transaction_id: transaction_id.to_owned(),
            })
    }

    fn flow_by_key(&mut self, key: &FlowKey) -> Result<&mut Flow, CancelCode> {
        self.verifications
            .flows
            .get_mut(key)
            .ok_or(CancelCode::UnknownTransaction)
    }
}

impl Verifications {
    /// Moves the machine's idea of the time forward to `now_ms`.
    fn observe(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    fn open(&mut self, flow: Flow) {
        let key = (flow.ids.other_user.clone(), flow.ids.transaction_id.clone());
        self.flows.insert(key, flow);
    }

    /// Marks `(user, transaction_id)` as used now: a message of it was sent
    /// or received.
    fn touch(&mut self, user: &UserId, transaction_id: &str) {
        let now_ms = self.now_ms;
        if let Some(flow) = self
            .flows
            .get_mut(&(user.to_owned(), transaction_id.to_owned()))
        {
            flow.last_activity_ms = flow.last_activity_ms.max(now_ms);
        }
    }
}

impl Flow {
    /// A flow in `Requested` (or, for a start without request, the caller
    /// sets its state), requested at `requested_ms` and opened at `now_ms`.
    fn new(ids: FlowIds, we_requested: bool, requested_ms: u64, now_ms: u64) -> Self {
        Self {
            ids,
            broadcast_to: Vec::new(),
            their_methods: Vec::new(),
            shown_qr: None,
            room_events: Vec::new(),
            we_requested,
            requested_ms,
            started_ms: None,
            last_activity_ms: now_ms,
            start: None,
            state: State::Requested,
        }
    }

    fn view(&self) -> Verification {
        let (emoji, decimals) = match &self.state {
            State::KeysExchanged(exchanged) => (
                Some(emoji::emoji(exchanged.emoji())),
                Some(exchanged.decimals()),
            ),
            _ => (None, None),
        };
        Verification {
            user_id: self.ids.other_user.clone(),
            device_id: self.ids.other_device.clone(),
            transaction_id: self.ids.transaction_id.clone(),
            room_id: self.ids.room_id.clone(),
            we_requested: self.we_requested,
            phase: self.state.phase(),
            emoji,
            decimals,
        }
    }

    /// Whether the flow is past one of its deadlines: not complete
    /// [`REQUEST_TIMEOUT_MS`] after its request, SAS not done
    /// [`SAS_TIMEOUT_MS`] after its start, or idle for [`IDLE_TIMEOUT_MS`]
    /// (which bounds a request dated in the future too).
    fn is_expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.requested_ms) >= REQUEST_TIMEOUT_MS
            || now_ms.saturating_sub(self.last_activity_ms) >= IDLE_TIMEOUT_MS
            || self
                .started_ms
                .is_some_and(|started| now_ms.saturating_sub(started) >= SAS_TIMEOUT_MS)
    }
}

/// The `methods` of a request or ready.
fn methods(content: &Value) -> Vec<String> {
    content
        .get("methods")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn wrong_phase(flow: &Flow, action: &'static str) -> VerificationError {
    VerificationError::WrongPhase {
        phase: flow.state.phase(),
        action,
    }
}

fn new_transaction_id() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| char::from(rng.sample(rand::distributions::Alphanumeric)))
        .collect()
}

/// A start as `device_id` of `user_id` would send it, for tests that forge
/// one.
#[cfg(test)]
pub(crate) fn test_start_content(user_id: &str, device_id: &str, transaction_id: &str) -> Value {
    sas::start_content(&FlowIds {
        own_user: user_id.try_into().expect("a user id"),
        own_device: device_id.into(),
        other_user: user_id.try_into().expect("a user id"),
        other_device: None,
        transaction_id: transaction_id.to_owned(),
        room_id: None,
    })
}
