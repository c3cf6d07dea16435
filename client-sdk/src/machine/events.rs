//! What decryption hands the application: a decrypted event, or a typed
//! reason why not.

use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};
use serde_json::Value;

/// How far the device that sent an event is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationState {
    /// Sent by one of our own device's sessions, or by a device the user
    /// verified.
    Verified,
    /// Sent by a known device nobody verified.
    Unverified,
    /// Sent by a device the user blacklisted.
    Blacklisted,
    /// The sending device is not (yet) in our device lists: its identity
    /// cannot be checked. A keys/query for its user is under way.
    UnknownDevice,
    /// The session's key did not come from its creator's own Olm session:
    /// it was forwarded by one of our devices, restored from the key
    /// backup, or received in a room key bundle. Whoever handed it on
    /// (for a backup, anyone who has its public key, the server included)
    /// could have written the event, so it is not shown as verified,
    /// however far the device named as sender is trusted (nor as from an
    /// unknown device: this says more). A blacklisted device stays
    /// [`VerificationState::Blacklisted`].
    AuthenticityNotGuaranteed,
}

/// A room event that decrypted and passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct DecryptedRoomEvent {
    /// The event id of the `m.room.encrypted` event.
    pub event_id: String,
    /// The room.
    pub room_id: OwnedRoomId,
    /// The sender (checked against the sending device's owner).
    pub sender: OwnedUserId,
    /// The sending device, when known.
    pub sender_device: Option<OwnedDeviceId>,
    /// The sending device's curve25519 key.
    pub sender_key: String,
    /// How far the sending device is trusted.
    pub verification: VerificationState,
    /// The decrypted event type.
    pub event_type: String,
    /// The decrypted content.
    pub content: Value,
    /// The Megolm message index (for diagnostics and replay checks).
    pub message_index: u32,
    /// Whether the session's key was handed on (forwarded by one of our own
    /// verified devices, restored from the key backup, or imported from a
    /// room key bundle) rather than received from its creator: the event is
    /// then vouched for by whoever handed it on, and `verification` is
    /// [`VerificationState::AuthenticityNotGuaranteed`] instead of
    /// `Verified` or `Unverified`.
    pub forwarded: bool,
    /// The user whose room key bundle (MSC4268 history sharing) gave us
    /// this session, if that is how it arrived. The event's sender is then
    /// only that user's word: show it as "history shared by" them.
    pub shared_by: Option<OwnedUserId>,
}

/// An event that could not be decrypted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnableToDecrypt {
    /// The event id.
    pub event_id: String,
    /// Why.
    pub cause: UtdCause,
}

/// Why an event did not decrypt.
///
/// [`UtdCause::is_expected`] separates what the protocol intends (the key
/// was never meant for us) from failures (a bug, a lost message, an attack).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UtdCause {
    /// We have no key for this session (yet). The event is kept and
    /// decrypted if the key arrives.
    MissingRoomKey,
    /// The sender told us it will not send the key (`m.room_key.withheld`
    /// inside Olm, from the session's own device, or a withheld entry of a
    /// room key bundle), with the spec's code (`m.unverified`,
    /// `m.blacklisted`…).
    Withheld {
        /// The withheld code.
        code: String,
    },
    /// We have no key for this session, and an `m.room_key.withheld` for it
    /// arrived in the clear. Nothing authenticates such a notice (the
    /// server writes a to-device event's `sender`), so the missing key is
    /// not taken as intended: the code is only the notice's word.
    WithheldUnconfirmed {
        /// The withheld code the notice gave.
        code: String,
    },
    /// Our key for this session starts after this message: it was sent
    /// before we joined or before our device existed.
    SentBeforeWeJoined,
    /// The same message index already decrypted under another event id: a
    /// replay by the server or another member.
    Replay,
    /// The event's sender is not the owner of the device (or session) that
    /// encrypted it, or the session's claimed signing key does not match
    /// that device: a forgery.
    SenderMismatch,
    /// The ciphertext did not authenticate with the session it names.
    Unauthentic,
    /// The plaintext names another room: an event copied across rooms.
    WrongRoom,
    /// The event is not a well-formed Megolm `m.room.encrypted` event.
    Malformed,
}

impl UtdCause {
    /// Whether this cause is one the protocol intends, as opposed to a
    /// failure worth reporting.
    pub fn is_expected(&self) -> bool {
        matches!(self, Self::Withheld { .. } | Self::SentBeforeWeJoined)
    }

    /// A stable name, for counters.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MissingRoomKey => "missing_room_key",
            Self::Withheld { .. } => "withheld",
            Self::WithheldUnconfirmed { .. } => "withheld_unconfirmed",
            Self::SentBeforeWeJoined => "sent_before_we_joined",
            Self::Replay => "replay",
            Self::SenderMismatch => "sender_mismatch",
            Self::Unauthentic => "unauthentic",
            Self::WrongRoom => "wrong_room",
            Self::Malformed => "malformed",
        }
    }
}

pub(super) fn event_id(event: &Value) -> Option<&str> {
    event.get("event_id").and_then(Value::as_str)
}
