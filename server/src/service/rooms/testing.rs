//! Helpers shared by the room tests: a signing key, users and PDU builders.

use myelin_crypto::{NewPdu, SignedPdu, SigningKey, build_pdu, parse_canonical_object};
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedRoomId, OwnedUserId, UInt,
    events::TimelineEventType, server_name,
};
use serde_json::Value as JsonValue;

use super::{pdu::Pdu, version::RoomVersion};

/// The test servers' signing key (a fixed seed: the tests are deterministic).
pub(crate) fn key() -> SigningKey {
    SigningKey::from_seed(&[7; 32], "test").expect("a 32-byte seed is a valid key")
}

/// A user id on `a.test`.
pub(crate) fn user(localpart: &str) -> OwnedUserId {
    OwnedUserId::try_from(format!("@{localpart}:a.test")).expect("valid test user id")
}

/// JSON content as canonical JSON.
pub(crate) fn content(value: JsonValue) -> CanonicalJsonObject {
    parse_canonical_object(&value.to_string()).expect("test content is canonical JSON")
}

/// A new PDU with the given header fields and no DAG links.
pub(crate) fn new_pdu(
    room_id: Option<OwnedRoomId>,
    sender: &OwnedUserId,
    kind: &str,
    state_key: Option<&str>,
    body: JsonValue,
) -> NewPdu {
    NewPdu {
        room_id,
        sender: sender.clone(),
        event_type: TimelineEventType::from(kind),
        state_key: state_key.map(str::to_owned),
        content: content(body),
        prev_events: Vec::new(),
        auth_events: Vec::new(),
        depth: UInt::MIN,
        origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::MIN),
        redacts: None,
    }
}

/// Signs `new` as `a.test` under `version`.
pub(crate) fn sign(version: RoomVersion, new: NewPdu) -> SignedPdu {
    build_pdu(new, server_name!("a.test"), &key(), &version.id()).expect("test PDU builds")
}

/// Signs `new` and wraps it as a [`Pdu`].
pub(crate) fn pdu(version: RoomVersion, new: NewPdu) -> Pdu {
    Pdu::from_signed(version, sign(version, new)).expect("test PDU is well formed")
}

/// The room id for a room whose create event will be `create` (only needed
/// before version 12, where it is not derived).
pub(crate) fn legacy_room_id() -> OwnedRoomId {
    OwnedRoomId::try_from("!room:a.test").expect("valid room id")
}

/// A create event for `version`, sent by `creator`.
pub(crate) fn create_event(version: RoomVersion, creator: &OwnedUserId) -> Pdu {
    let (room_id, body) = match version {
        RoomVersion::V10 => (
            Some(legacy_room_id()),
            serde_json::json!({ "creator": creator, "room_version": "10" }),
        ),
        RoomVersion::V11 => (
            Some(legacy_room_id()),
            serde_json::json!({ "room_version": "11" }),
        ),
        RoomVersion::V12 => (None, serde_json::json!({ "room_version": "12" })),
    };
    pdu(
        version,
        new_pdu(room_id, creator, "m.room.create", Some(""), body),
    )
}

/// `assert!(matches!(..))` that prints the value on failure.
macro_rules! assert_matches {
    ($value:expr, $pattern:pat $(if $guard:expr)? $(, $($message:tt)+)?) => {
        match $value {
            $pattern $(if $guard)? => {}
            ref other => panic!(
                "{:?} does not match `{}`{}",
                other,
                stringify!($pattern $(if $guard)?),
                { let _context = String::new(); $( let _context = format!(": {}", format_args!($($message)+)); )? _context },
            ),
        }
    };
}
pub(crate) use assert_matches;
