//! The room event model: a [`Pdu`] is one event of a room's DAG, parsed from
//! its canonical JSON and kept together with exactly those bytes.
//!
//! A `Pdu` is what the rest of the server passes around once an event has
//! crossed the edge: typed accessors for the fields the [authorization rules]
//! and [state resolution] read, and the original canonical JSON to store and
//! serve ("sign once, serialise once": a `Pdu` is never re-serialised from its
//! fields). Cloning is a reference-count increment.
//!
//! Construction checks the [event format] of the room version: every required
//! field is present with the right JSON type, identifiers parse, the
//! [size limits] hold, and the event id is the event's [reference hash] (in
//! room versions 1 and 2, the origin's choice in the PDU's `event_id`). It
//! does **not** verify signatures or the content hash: that is
//! [`myelin_crypto::verify_event`]'s job, and the caller must run it (and
//! redact the event if only the content hash fails) on every PDU received over
//! federation *before* it reaches [`super::auth`], as the spec's [checks on
//! receipt of a PDU] order them. Locally built events ([`Pdu::from_signed`])
//! are signed by this server and need no verification.
//!
//! [authorization rules]: https://spec.matrix.org/v1.16/server-server-api/#authorisation-rules
//! [state resolution]: https://spec.matrix.org/v1.16/rooms/v2/#state-resolution
//! [event format]: https://spec.matrix.org/v1.16/rooms/v11/#event-format
//! [size limits]: https://spec.matrix.org/v1.16/client-server-api/#size-limits
//! [reference hash]: https://spec.matrix.org/v1.16/server-server-api/#calculating-the-reference-hash-for-an-event
//! [checks on receipt of a PDU]: https://spec.matrix.org/v1.16/server-server-api/#checks-performed-on-receipt-of-a-pdu

use std::{fmt, sync::Arc};

use myelin_crypto::{
    EventError, JsonError, SignedPdu, parse_canonical_object, to_canonical_string,
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    events::{StateEventType, TimelineEventType},
    state_res,
};
use serde_json::value::RawValue as RawJsonValue;

use super::version::RoomVersion;

/// The largest PDU accepted, in bytes of canonical JSON including signatures.
///
/// The spec says a PDU ["must not be larger than 65536 bytes"][size limits];
/// ruma's hashing, signing and format checks all refuse anything over 65535
/// bytes, so that is the effective limit here too (one byte stricter than
/// Synapse, which accepts exactly 65536).
///
/// [size limits]: https://spec.matrix.org/v1.16/client-server-api/#size-limits
pub const MAX_PDU_BYTES: usize = 65_535;

/// The longest `sender`, `room_id`, `type`, `state_key` or event id accepted,
/// in bytes ([size limits](https://spec.matrix.org/v1.16/client-server-api/#size-limits)).
pub const MAX_ID_BYTES: usize = 255;

/// The most `prev_events` a PDU may cite ([v1 event format](https://spec.matrix.org/v1.16/rooms/v1/#event-format)).
pub const MAX_PREV_EVENTS: usize = 20;

/// The most `auth_events` a PDU may cite ([v1 event format](https://spec.matrix.org/v1.16/rooms/v1/#event-format)).
pub const MAX_AUTH_EVENTS: usize = 10;

/// Why a PDU was refused before any authorization rule ran.
///
/// Messages name fields and identifiers, never content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PduError {
    /// The text is not JSON, not an object, or not canonical JSON (a float,
    /// an out-of-range integer).
    #[error("PDU is not canonical JSON")]
    Json(#[from] JsonError),

    /// The canonical JSON of the PDU is larger than [`MAX_PDU_BYTES`].
    #[error("PDU is {size} bytes, more than the {MAX_PDU_BYTES}-byte limit")]
    TooLarge {
        /// The size of the PDU's canonical JSON.
        size: usize,
    },

    /// A field the room version's event format requires is absent.
    #[error("PDU has no `{field}` field")]
    MissingField {
        /// The top-level field name.
        field: &'static str,
    },

    /// A field has the wrong JSON type, does not parse, or breaks a limit.
    #[error("PDU has an invalid `{field}` field: {reason}")]
    InvalidField {
        /// The top-level field name (`content` also for `content.redacts`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The PDU carries an `event_id` that is not its reference hash.
    #[error("PDU claims event id {claimed} but its reference hash gives {derived}")]
    EventIdMismatch {
        /// The id in the PDU's `event_id` field.
        claimed: String,
        /// The id derived from the PDU's reference hash.
        derived: OwnedEventId,
    },

    /// The reference hash could not be computed.
    #[error("could not derive the event id")]
    EventId(#[source] EventError),
}

/// One event of a room's DAG: its typed header fields and its canonical JSON.
///
/// Cheap to clone (an [`Arc`] inside). Implements ruma's
/// [`state_res::Event`], so it feeds [`super::auth`] and [`super::resolve`]
/// directly.
#[derive(Clone)]
pub struct Pdu(Arc<Inner>);

struct Inner {
    version: RoomVersion,
    event_id: OwnedEventId,
    room_id: OwnedRoomId,
    /// `false` only for a version 12 `m.room.create` event, whose room id is
    /// derived from its event id rather than written in the PDU.
    has_room_id_field: bool,
    sender: OwnedUserId,
    kind: TimelineEventType,
    state_key: Option<String>,
    content: Box<RawJsonValue>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    depth: UInt,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    redacts: Option<OwnedEventId>,
    object: CanonicalJsonObject,
    canonical_json: String,
}

impl Pdu {
    /// Parses a PDU of `version` from JSON text (as received over federation)
    /// and derives its event id.
    ///
    /// The text need not be canonical: what is kept and served is its
    /// canonical form, which is what the hashes and signatures cover.
    ///
    /// # Errors
    ///
    /// [`PduError::Json`] if the text is not a canonical-JSON-compatible
    /// object, and the errors of [`Pdu::from_object`].
    pub fn from_json(version: RoomVersion, json: &str) -> Result<Self, PduError> {
        Self::from_object(version, parse_canonical_object(json)?)
    }

    /// Checks a PDU of `version` already parsed to canonical JSON values and
    /// derives its event id (the reference hash; in room versions 1 and 2 the
    /// required `event_id` field, which the origin chose).
    ///
    /// If the object carries an `event_id` field (not part of the format since
    /// room version 3, but some servers send it), it must equal the derived id.
    /// A caller who fetched the event by id must still compare
    /// [`Pdu::event_id`] with the id it asked for.
    ///
    /// # Errors
    ///
    /// [`PduError::TooLarge`], [`PduError::MissingField`],
    /// [`PduError::InvalidField`], [`PduError::EventIdMismatch`], or
    /// [`PduError::EventId`] if ruma cannot hash the event.
    pub fn from_object(
        version: RoomVersion,
        object: CanonicalJsonObject,
    ) -> Result<Self, PduError> {
        let canonical_json = to_canonical_string(&object);
        check_size(&canonical_json)?;
        let fields = Fields::parse(version, &object)?;
        if version.has_origin_chosen_event_ids() {
            // Versions 1 and 2: the id is the origin's choice, written in the
            // PDU; nothing derives it.
            let event_id = OwnedEventId::try_from(required_id_string(&object, "event_id")?)
                .map_err(|error| invalid("event_id", error))?;
            return fields.into_pdu(version, event_id, object, canonical_json);
        }
        let event_id =
            myelin_crypto::event_id(&version.id(), &object).map_err(PduError::EventId)?;
        match object.get("event_id") {
            None => {}
            Some(CanonicalJsonValue::String(claimed)) if claimed == event_id.as_str() => {}
            Some(CanonicalJsonValue::String(claimed)) => {
                return Err(PduError::EventIdMismatch {
                    claimed: claimed.clone(),
                    derived: event_id,
                });
            }
            Some(_) => return Err(invalid("event_id", "not a string")),
        }
        fields.into_pdu(version, event_id, object, canonical_json)
    }

    /// Wraps a PDU this server built and signed with
    /// [`myelin_crypto::build_pdu`], keeping its event id and canonical JSON.
    ///
    /// `version` must be the version the PDU was built for.
    ///
    /// # Errors
    ///
    /// As for [`Pdu::from_object`], except that the event id is taken from
    /// `signed` rather than recomputed.
    pub fn from_signed(version: RoomVersion, signed: SignedPdu) -> Result<Self, PduError> {
        let (event_id, object, canonical_json) = signed.into_parts();
        check_size(&canonical_json)?;
        Fields::parse(version, &object)?.into_pdu(version, event_id, object, canonical_json)
    }

    /// Rebuilds a PDU this server stored after checking it, from the event id
    /// and canonical JSON it stored: the fields are parsed and checked again,
    /// but the reference hash is not recomputed.
    ///
    /// Only for bytes that came out of [`Pdu::canonical_json`] under this
    /// `event_id`: anything else must go through [`Pdu::from_json`].
    ///
    /// # Errors
    ///
    /// As for [`Pdu::from_json`], without [`PduError::EventIdMismatch`] and
    /// [`PduError::EventId`].
    pub fn from_storage(
        version: RoomVersion,
        event_id: OwnedEventId,
        canonical_json: String,
    ) -> Result<Self, PduError> {
        check_size(&canonical_json)?;
        let object = parse_canonical_object(&canonical_json)?;
        Fields::parse(version, &object)?.into_pdu(version, event_id, object, canonical_json)
    }

    /// The room version the PDU was checked against.
    pub fn room_version(&self) -> RoomVersion {
        self.0.version
    }

    /// The event id: `$` and the reference hash (`$opaque:server`, chosen by
    /// the origin, in room versions 1 and 2).
    pub fn event_id(&self) -> &EventId {
        &self.0.event_id
    }

    /// The room the event belongs to. For a version 12 `m.room.create` event,
    /// which has no `room_id` field, this is the room id derived from its
    /// event id.
    pub fn room_id(&self) -> &RoomId {
        &self.0.room_id
    }

    /// The user who sent the event.
    pub fn sender(&self) -> &UserId {
        &self.0.sender
    }

    /// The event type (`type`).
    pub fn kind(&self) -> &TimelineEventType {
        &self.0.kind
    }

    /// The state key, `Some` for state events (the empty string is a state
    /// key).
    pub fn state_key(&self) -> Option<&str> {
        self.0.state_key.as_deref()
    }

    /// Whether this is a state event.
    pub fn is_state(&self) -> bool {
        self.0.state_key.is_some()
    }

    /// The key of this event in a room state map, for state events.
    pub fn state_map_key(&self) -> Option<(StateEventType, String)> {
        let state_key = self.0.state_key.as_ref()?;
        Some((self.0.kind.to_string().into(), state_key.clone()))
    }

    /// The event content as canonical JSON. The server reads it only where
    /// the authorization rules or redaction need to; it is otherwise opaque.
    pub fn content(&self) -> &RawJsonValue {
        &self.0.content
    }

    /// The events this one follows in the DAG.
    pub fn prev_events(&self) -> &[OwnedEventId] {
        &self.0.prev_events
    }

    /// The events that authorise this one.
    pub fn auth_events(&self) -> &[OwnedEventId] {
        &self.0.auth_events
    }

    /// The event's depth in the DAG (as claimed by its origin).
    pub fn depth(&self) -> UInt {
        self.0.depth
    }

    /// The origin server's clock when the event was created.
    pub fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.0.origin_server_ts
    }

    /// For an `m.room.redaction` event, the event it redacts: the top-level
    /// `redacts` before room version 11, `content.redacts` from 11 on.
    pub fn redacts(&self) -> Option<&EventId> {
        self.0.redacts.as_deref()
    }

    /// The PDU as canonical JSON values (for signature checks and redaction).
    pub fn as_object(&self) -> &CanonicalJsonObject {
        &self.0.object
    }

    /// The PDU's canonical JSON: the exact bytes to store and serve.
    pub fn canonical_json(&self) -> &str {
        &self.0.canonical_json
    }
}

/// The header fields of a PDU, parsed before its event id is known (so that a
/// malformed PDU is reported as such rather than as a hashing failure).
struct Fields {
    kind: TimelineEventType,
    /// `None` only for a version 12 `m.room.create` event.
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    state_key: Option<String>,
    content: Box<RawJsonValue>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    depth: UInt,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    redacts: Option<OwnedEventId>,
}

impl Fields {
    fn parse(version: RoomVersion, object: &CanonicalJsonObject) -> Result<Self, PduError> {
        let kind = TimelineEventType::from(required_id_string(object, "type")?);
        let is_create = kind == TimelineEventType::RoomCreate;
        let derived_room_id = is_create && version.is_room_id_derived_from_create_event();

        let sender = OwnedUserId::try_from(required_id_string(object, "sender")?)
            .map_err(|error| invalid("sender", error))?;
        let room_id = match optional_id_string(object, "room_id")? {
            Some(_) if derived_room_id => {
                return Err(invalid(
                    "room_id",
                    format!("an m.room.create event in room version {version} has none"),
                ));
            }
            Some(room_id) => {
                Some(OwnedRoomId::try_from(room_id).map_err(|error| invalid("room_id", error))?)
            }
            None if derived_room_id => None,
            None => return Err(PduError::MissingField { field: "room_id" }),
        };
        let state_key = optional_id_string(object, "state_key")?.map(str::to_owned);

        let content = match object.get("content") {
            Some(value @ CanonicalJsonValue::Object(_)) => {
                serde_json::value::to_raw_value(value).map_err(|error| invalid("content", error))?
            }
            Some(_) => return Err(invalid("content", "not an object")),
            None => return Err(PduError::MissingField { field: "content" }),
        };

        let prev_events = event_id_list(version, object, "prev_events", MAX_PREV_EVENTS)?;
        let auth_events = event_id_list(version, object, "auth_events", MAX_AUTH_EVENTS)?;
        if let Some(room_id) = room_id
            .as_ref()
            .filter(|_| version.is_room_id_derived_from_create_event())
        {
            // Room version 12: the create event is implied by the room id and
            // must not be cited (rooms/v12 "Event format").
            let create_event_id = format!("${}", room_id.as_str().trim_start_matches('!'));
            if auth_events.iter().any(|id| id.as_str() == create_event_id) {
                return Err(invalid(
                    "auth_events",
                    format!("room version {version} forbids citing the m.room.create event"),
                ));
            }
        }

        let depth = required_uint(object, "depth")?;
        let origin_server_ts =
            MilliSecondsSinceUnixEpoch(required_uint(object, "origin_server_ts")?);

        for field in ["hashes", "signatures"] {
            match object.get(field) {
                Some(CanonicalJsonValue::Object(_)) => {}
                Some(_) => return Err(invalid(field, "not an object")),
                None => return Err(PduError::MissingField { field }),
            }
        }

        let redacts = if kind == TimelineEventType::RoomRedaction {
            redacts(version, object)?
        } else {
            None
        };

        Ok(Self {
            kind,
            room_id,
            sender,
            state_key,
            content,
            prev_events,
            auth_events,
            depth,
            origin_server_ts,
            redacts,
        })
    }

    fn into_pdu(
        self,
        version: RoomVersion,
        event_id: OwnedEventId,
        object: CanonicalJsonObject,
        canonical_json: String,
    ) -> Result<Pdu, PduError> {
        let has_room_id_field = self.room_id.is_some();
        let room_id = match self.room_id {
            Some(room_id) => room_id,
            None => {
                let hash = event_id.as_str().trim_start_matches('$');
                OwnedRoomId::try_from(format!("!{hash}"))
                    .map_err(|error| invalid("room_id", error))?
            }
        };
        Ok(Pdu(Arc::new(Inner {
            version,
            event_id,
            room_id,
            has_room_id_field,
            sender: self.sender,
            kind: self.kind,
            state_key: self.state_key,
            content: self.content,
            prev_events: self.prev_events,
            auth_events: self.auth_events,
            depth: self.depth,
            origin_server_ts: self.origin_server_ts,
            redacts: self.redacts,
            object,
            canonical_json,
        })))
    }
}

impl fmt::Debug for Pdu {
    // Identifiers only: content may be a message body or key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pdu")
            .field("event_id", &self.0.event_id)
            .field("room_id", &self.0.room_id)
            .field("sender", &self.0.sender)
            .field("kind", &self.0.kind)
            .field("state_key", &self.0.state_key)
            .field("depth", &self.0.depth)
            .finish_non_exhaustive()
    }
}

impl state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.0.event_id
    }

    /// The `room_id` field as written: `None` for a version 12 create event
    /// (ruma's create rules check that it is absent).
    fn room_id(&self) -> Option<&RoomId> {
        self.0.has_room_id_field.then_some(&*self.0.room_id)
    }

    fn sender(&self) -> &UserId {
        &self.0.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.0.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.0.kind
    }

    fn content(&self) -> &RawJsonValue {
        &self.0.content
    }

    fn state_key(&self) -> Option<&str> {
        self.0.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.0.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.0.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.0.redacts.as_ref()
    }

    /// Always `false`: the server stores no event that failed the checks on
    /// receipt, so a rejected event is one the fetch functions cannot find.
    fn rejected(&self) -> bool {
        false
    }
}

fn check_size(canonical_json: &str) -> Result<(), PduError> {
    if canonical_json.len() > MAX_PDU_BYTES {
        return Err(PduError::TooLarge {
            size: canonical_json.len(),
        });
    }
    Ok(())
}

fn invalid(field: &'static str, reason: impl fmt::Display) -> PduError {
    PduError::InvalidField {
        field,
        reason: reason.to_string(),
    }
}

fn optional_id_string<'a>(
    object: &'a CanonicalJsonObject,
    field: &'static str,
) -> Result<Option<&'a str>, PduError> {
    match object.get(field) {
        None => Ok(None),
        Some(CanonicalJsonValue::String(value)) if value.len() > MAX_ID_BYTES => Err(invalid(
            field,
            format!("{} bytes, more than {MAX_ID_BYTES}", value.len()),
        )),
        Some(CanonicalJsonValue::String(value)) => Ok(Some(value)),
        Some(_) => Err(invalid(field, "not a string")),
    }
}

fn required_id_string<'a>(
    object: &'a CanonicalJsonObject,
    field: &'static str,
) -> Result<&'a str, PduError> {
    optional_id_string(object, field)?.ok_or(PduError::MissingField { field })
}

fn required_uint(object: &CanonicalJsonObject, field: &'static str) -> Result<UInt, PduError> {
    match object.get(field) {
        Some(CanonicalJsonValue::Integer(value)) => {
            UInt::try_from(i64::from(*value)).map_err(|_| invalid(field, "negative"))
        }
        Some(_) => Err(invalid(field, "not an integer")),
        None => Err(PduError::MissingField { field }),
    }
}

/// The ids of the events a PDU cites: plain ids from room version 3,
/// `[id, {"sha256": hash}]` pairs before. The hash stays in the canonical
/// JSON but is not checked here: the cited event is looked up by its id.
fn event_id_list(
    version: RoomVersion,
    object: &CanonicalJsonObject,
    field: &'static str,
    max: usize,
) -> Result<Vec<OwnedEventId>, PduError> {
    let items = match object.get(field) {
        Some(CanonicalJsonValue::Array(items)) => items,
        Some(_) => return Err(invalid(field, "not an array")),
        None => return Err(PduError::MissingField { field }),
    };
    if items.len() > max {
        return Err(invalid(
            field,
            format!("{} entries, more than {max}", items.len()),
        ));
    }
    let has_pairs = version.has_origin_chosen_event_ids();
    items
        .iter()
        .map(|item| {
            let id = if has_pairs {
                cited_id_of_pair(item).ok_or_else(|| {
                    invalid(field, r#"entry is not an [id, {"sha256": hash}] pair"#)
                })?
            } else {
                item
            };
            match id {
                CanonicalJsonValue::String(id) if id.len() <= MAX_ID_BYTES => {
                    OwnedEventId::try_from(id.as_str()).map_err(|error| invalid(field, error))
                }
                CanonicalJsonValue::String(_) => Err(invalid(field, "event id too long")),
                _ => Err(invalid(field, "entry is not a string")),
            }
        })
        .collect()
}

/// The id of a room version 1 or 2 citation, `[id, {"sha256": hash}]`.
fn cited_id_of_pair(item: &CanonicalJsonValue) -> Option<&CanonicalJsonValue> {
    let CanonicalJsonValue::Array(pair) = item else {
        return None;
    };
    match pair.as_slice() {
        [id, CanonicalJsonValue::Object(hashes)]
            if matches!(hashes.get("sha256"), Some(CanonicalJsonValue::String(_))) =>
        {
            Some(id)
        }
        _ => None,
    }
}

fn redacts(
    version: RoomVersion,
    object: &CanonicalJsonObject,
) -> Result<Option<OwnedEventId>, PduError> {
    let (field, value) = if version.rules().redaction.content_field_redacts {
        let content = match object.get("content") {
            Some(CanonicalJsonValue::Object(content)) => content,
            _ => return Ok(None),
        };
        ("content", content.get("redacts"))
    } else {
        ("redacts", object.get("redacts"))
    };
    match value {
        None => Ok(None),
        Some(CanonicalJsonValue::String(id)) => OwnedEventId::try_from(id.as_str())
            .map(Some)
            .map_err(|error| invalid(field, format!("redacts: {error}"))),
        Some(_) => Err(invalid(field, "redacts is not a string")),
    }
}

#[cfg(test)]
mod tests;
