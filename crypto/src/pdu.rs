//! Building a new PDU: from the fields its origin chooses to the signed
//! canonical JSON, its event id and the bytes to store.
//!
//! The layout follows the PDU format of the room version. From version 3
//! ([v3 PDU], [v11], [v12]) `prev_events` and `auth_events` are event ids and
//! there is no `event_id` field: the id is the reference hash. In versions 1
//! and 2 ([v1 PDU]) the origin chooses the id and writes it as `event_id`, and
//! every cited event is an `[id, {"sha256": reference hash}]` pair; the caller
//! supplies both ([`V1EventIds`]). `origin` is never written (Synapse has
//! stopped writing it and room version 11 no longer protects it).
//! Authorization is not this module's concern: callers choose `auth_events`,
//! `prev_events` and `depth`.
//!
//! [v1 PDU]: https://spec.matrix.org/v1.16/rooms/v1/#event-format
//! [v3 PDU]: https://spec.matrix.org/v1.16/rooms/v3/#event-format
//! [v11]: https://spec.matrix.org/v1.16/rooms/v11/#event-format
//! [v12]: https://spec.matrix.org/v1.16/rooms/v12/#event-format

use std::collections::HashMap;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomVersionId, ServerName, UInt,
    events::TimelineEventType,
    room_version_rules::{EventIdFormatVersion, RoomIdFormatVersion},
};

use crate::{EventError, SigningKey, event_id, hash_and_sign_event, to_canonical_string};

/// The fields of a new PDU that its origin server chooses.
#[derive(Clone, Debug)]
pub struct NewPdu {
    /// The room. `None` only for an `m.room.create` event in room version 12
    /// and later, whose room id is derived from its own event id.
    pub room_id: Option<OwnedRoomId>,
    /// The user the event is from.
    pub sender: OwnedUserId,
    /// The event type.
    pub event_type: TimelineEventType,
    /// `Some` for state events (the empty string is a valid state key).
    pub state_key: Option<String>,
    /// The event content, kept as canonical JSON so that what is hashed is
    /// exactly what the client sent.
    pub content: CanonicalJsonObject,
    /// The forward extremities this event follows.
    pub prev_events: Vec<OwnedEventId>,
    /// The events that authorise this one.
    pub auth_events: Vec<OwnedEventId>,
    /// One more than the greatest depth of `prev_events`.
    pub depth: UInt,
    /// The origin's clock when the event was created (passed in: this crate
    /// has no clock).
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    /// For `m.room.redaction`: the redacted event. Written at the top level
    /// before room version 11 and in `content.redacts` from version 11 on.
    pub redacts: Option<OwnedEventId>,
    /// Room versions 1 and 2 only: the id the origin chose and the reference
    /// hashes of the cited events. Must be `None` from version 3.
    pub v1_ids: Option<V1EventIds>,
}

/// What a PDU of room version 1 or 2 carries beyond the later format
/// ([v1 event format](https://spec.matrix.org/v1.16/rooms/v1/#event-format)).
#[derive(Clone, Debug)]
pub struct V1EventIds {
    /// The event's id, `$opaque:origin`, chosen by the origin server (unique
    /// by construction: nothing checks it against the content).
    pub event_id: OwnedEventId,
    /// The reference hash ([`crate::reference_hash`]) of every event in
    /// `prev_events` and `auth_events`, written beside its id.
    pub reference_hashes: HashMap<OwnedEventId, String>,
}

/// A PDU hashed and signed by its origin, with its id and canonical bytes
/// computed once.
#[derive(Clone, Debug)]
pub struct SignedPdu {
    event_id: OwnedEventId,
    pdu: CanonicalJsonObject,
    canonical_json: String,
}

impl SignedPdu {
    /// The event id (`$` and the reference hash, or the origin's choice in
    /// room versions 1 and 2).
    pub fn event_id(&self) -> &OwnedEventId {
        &self.event_id
    }

    /// The signed PDU as canonical JSON values.
    pub fn pdu(&self) -> &CanonicalJsonObject {
        &self.pdu
    }

    /// The signed PDU's canonical JSON: the bytes to store and serve.
    pub fn canonical_json(&self) -> &str {
        &self.canonical_json
    }

    /// Takes the parts: event id, PDU and canonical JSON.
    pub fn into_parts(self) -> (OwnedEventId, CanonicalJsonObject, String) {
        (self.event_id, self.pdu, self.canonical_json)
    }
}

/// Lays out `new` as a PDU of `room_version`, adds its content hash, signs it
/// as `origin` with `key` and derives its event id.
///
/// # Errors
///
/// [`EventError::UnsupportedRoomVersion`] for versions ruma has no rules for;
/// [`EventError::Malformed`] if `room_id` is missing when the version
/// requires it or present on a version 12+ create event, or if
/// [`NewPdu::v1_ids`] is missing (versions 1 and 2), present (later
/// versions) or lacks the hash of a cited event; [`EventError::TooLarge`]
/// past the PDU size limit.
pub fn build_pdu(
    new: NewPdu,
    origin: &ServerName,
    key: &SigningKey,
    room_version: &RoomVersionId,
) -> Result<SignedPdu, EventError> {
    let rules = room_version
        .rules()
        .ok_or_else(|| EventError::UnsupportedRoomVersion(room_version.clone()))?;
    let has_origin_chosen_ids = rules.event_id_format == EventIdFormatVersion::V1;
    match (&new.v1_ids, has_origin_chosen_ids) {
        (None, true) => {
            return Err(EventError::Malformed(format!(
                "room version {room_version} needs an event id chosen by the origin"
            )));
        }
        (Some(_), false) => {
            return Err(EventError::Malformed(format!(
                "event ids in room version {room_version} are reference hashes"
            )));
        }
        _ => {}
    }
    let is_hashed_room_create = rules.room_id_format == RoomIdFormatVersion::V2
        && new.event_type == TimelineEventType::RoomCreate;
    match (&new.room_id, is_hashed_room_create) {
        (None, false) => return Err(EventError::Malformed("missing field: `room_id`".to_owned())),
        (Some(_), true) => {
            return Err(EventError::Malformed(format!(
                "`room_id` must be absent from an m.room.create event in room version \
                 {room_version}"
            )));
        }
        _ => {}
    }

    let mut content = new.content;
    let mut pdu = CanonicalJsonObject::new();
    if let Some(redacts) = new.redacts {
        let redacts = CanonicalJsonValue::String(redacts.into());
        if rules.redaction.content_field_redacts {
            content.insert("redacts".to_owned(), redacts);
        } else {
            pdu.insert("redacts".to_owned(), redacts);
        }
    }
    if let Some(room_id) = new.room_id {
        pdu.insert(
            "room_id".to_owned(),
            CanonicalJsonValue::String(room_id.into()),
        );
    }
    if let Some(state_key) = new.state_key {
        pdu.insert(
            "state_key".to_owned(),
            CanonicalJsonValue::String(state_key),
        );
    }
    pdu.insert(
        "sender".to_owned(),
        CanonicalJsonValue::String(new.sender.into()),
    );
    pdu.insert(
        "type".to_owned(),
        CanonicalJsonValue::String(new.event_type.to_string()),
    );
    pdu.insert("content".to_owned(), CanonicalJsonValue::Object(content));
    let v1_ids = new.v1_ids.as_ref();
    pdu.insert(
        "prev_events".to_owned(),
        event_references(new.prev_events, v1_ids)?,
    );
    pdu.insert(
        "auth_events".to_owned(),
        event_references(new.auth_events, v1_ids)?,
    );
    if let Some(v1_ids) = v1_ids {
        pdu.insert(
            "event_id".to_owned(),
            CanonicalJsonValue::String(v1_ids.event_id.to_string()),
        );
    }
    pdu.insert(
        "depth".to_owned(),
        CanonicalJsonValue::Integer(new.depth.into()),
    );
    pdu.insert(
        "origin_server_ts".to_owned(),
        CanonicalJsonValue::Integer(new.origin_server_ts.get().into()),
    );

    hash_and_sign_event(origin, key, room_version, &mut pdu)?;
    let event_id = match new.v1_ids {
        Some(v1_ids) => v1_ids.event_id,
        None => event_id(room_version, &pdu)?,
    };
    let canonical_json = to_canonical_string(&pdu);
    Ok(SignedPdu {
        event_id,
        pdu,
        canonical_json,
    })
}

/// The cited events as the room version writes them: ids from version 3,
/// `[id, {"sha256": reference hash}]` pairs before.
fn event_references(
    ids: Vec<OwnedEventId>,
    v1_ids: Option<&V1EventIds>,
) -> Result<CanonicalJsonValue, EventError> {
    let references = ids
        .into_iter()
        .map(|id| {
            let Some(v1_ids) = v1_ids else {
                return Ok(CanonicalJsonValue::String(id.into()));
            };
            let hash = v1_ids.reference_hashes.get(&id).ok_or_else(|| {
                EventError::Malformed(format!("no reference hash for the cited event {id}"))
            })?;
            let mut hashes = CanonicalJsonObject::new();
            hashes.insert(
                "sha256".to_owned(),
                CanonicalJsonValue::String(hash.clone()),
            );
            Ok(CanonicalJsonValue::Array(vec![
                CanonicalJsonValue::String(id.into()),
                CanonicalJsonValue::Object(hashes),
            ]))
        })
        .collect::<Result<Vec<_>, EventError>>()?;
    Ok(CanonicalJsonValue::Array(references))
}

#[cfg(test)]
mod tests;
