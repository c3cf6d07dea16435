//! Hashing, signing and verifying PDUs, and deriving event and room ids.
//!
//! The algorithms are the spec's, run by ruma, under the rules of the room
//! version the caller names:
//!
//! - the [content hash] is SHA-256 over the canonical JSON of the event
//!   without `hashes`, `signatures` and `unsigned`, stored as `hashes.sha256`;
//! - the [signature] is ed25519 over the canonical JSON of the event
//!   *redacted* under the room version's rules, without `signatures` and
//!   `unsigned`, so that it survives redaction;
//! - the [reference hash] is SHA-256 over exactly the bytes that are signed;
//!   from room version 4 the event id is `$` followed by its unpadded URL-safe
//!   base64, and from room version 12 the room id is `!` followed by the
//!   create event's.
//!
//! A PDU here is the [`CanonicalJsonObject`] the server received or built: keep
//! it, never re-serialise a typed event and hope the bytes match.
//!
//! [content hash]: https://spec.matrix.org/v1.16/server-server-api/#calculating-the-content-hash-for-an-event
//! [signature]: https://spec.matrix.org/v1.16/server-server-api/#signing-events
//! [reference hash]: https://spec.matrix.org/v1.16/server-server-api/#calculating-the-reference-hash-for-an-event

use std::collections::BTreeSet;

use ruma::{
    CanonicalJsonObject, OwnedEventId, OwnedRoomId, OwnedServerName, RoomVersionId, ServerName,
    room_version_rules::{EventIdFormatVersion, RoomIdFormatVersion, RoomVersionRules},
    serde::{Base64, base64::Standard},
    signatures::{self, JsonError as RumaJsonError, VerificationError},
};

use crate::{PublicKeyMap, SignatureError, SigningKey};

/// Errors from hashing, signing or verifying a PDU.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// ruma knows no rules for this room version, so nothing can be hashed or
    /// signed under it.
    #[error("unsupported room version {0}")]
    UnsupportedRoomVersion(RoomVersionId),

    /// The room version's event ids are not reference hashes (versions 1 and
    /// 2 use `$random:server` ids chosen by the origin).
    #[error("event ids in room version {0} are not derived from the reference hash")]
    EventIdNotHashed(RoomVersionId),

    /// The room version's room ids are not derived from the create event
    /// (versions before 12 use `!random:server`).
    #[error("room ids in room version {0} are not derived from the create event")]
    RoomIdNotHashed(RoomVersionId),

    /// The canonical JSON of the event exceeds the spec's 65535-byte PDU limit.
    #[error("PDU is larger than 65535 bytes")]
    TooLarge,

    /// A field the algorithm needs is missing or has the wrong type.
    #[error("malformed PDU: {0}")]
    Malformed(String),

    /// The signatures on the event do not verify (see the inner error for
    /// which entity and why).
    #[error("PDU signature check failed")]
    Signature(#[from] SignatureError),
}

/// The outcome of [`verify_event`] when every required signature is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verified {
    /// Signatures and content hash are both valid.
    All,
    /// The signatures are valid but the content hash does not match (or is
    /// not valid base64): the spec requires the receiver to [redact] the
    /// event before it goes further.
    ///
    /// [redact]: https://spec.matrix.org/v1.16/server-server-api/#checks-performed-on-receipt-of-a-pdu
    SignaturesOnly,
}

impl Verified {
    /// Whether the content hash matched.
    pub fn is_content_hash_valid(self) -> bool {
        self == Self::All
    }
}

/// Computes the event's content hash, the value for `hashes.sha256`.
///
/// # Errors
///
/// [`EventError::TooLarge`] if the event exceeds the PDU size limit;
/// [`EventError::Malformed`] otherwise.
pub fn content_hash(pdu: &CanonicalJsonObject) -> Result<Base64<Standard, [u8; 32]>, EventError> {
    signatures::content_hash(pdu).map_err(EventError::from_ruma_json)
}

/// Adds the content hash to `pdu`, then signs it as `origin` with `key`
/// under `room_version`'s redaction rules.
///
/// This is how an origin server finishes a PDU it built: every other field
/// (`room_id`, `sender`, `type`, `content`, `prev_events`, `auth_events`,
/// `depth`, `origin_server_ts`, ...) must already be in place, since the hash
/// and signature cover them. Any existing `hashes.sha256` is replaced; other
/// signatures are kept.
///
/// # Errors
///
/// [`EventError::UnsupportedRoomVersion`], [`EventError::TooLarge`], or
/// [`EventError::Malformed`] if `hashes` or `signatures` is not an object.
pub fn hash_and_sign_event(
    origin: &ServerName,
    key: &SigningKey,
    room_version: &RoomVersionId,
    pdu: &mut CanonicalJsonObject,
) -> Result<(), EventError> {
    let rules = rules(room_version)?;
    signatures::hash_and_sign_event(origin.as_str(), key.key_pair(), pdu, &rules.redaction)
        .map_err(EventError::from_ruma_json)
}

/// Adds a signature from `origin` to a PDU that already has its content hash,
/// without touching the hash: for countersigning another server's event (an
/// invite, or a restricted join via this server).
///
/// # Errors
///
/// As for [`hash_and_sign_event`].
pub fn sign_event(
    origin: &ServerName,
    key: &SigningKey,
    room_version: &RoomVersionId,
    pdu: &mut CanonicalJsonObject,
) -> Result<(), EventError> {
    let rules = rules(room_version)?;
    signatures::sign_event(origin.as_str(), key.key_pair(), pdu, &rules.redaction)
        .map_err(EventError::from_ruma_json)
}

/// Verifies a PDU's signatures and content hash under `room_version`'s rules.
///
/// The servers whose signatures are required are those the spec names for the
/// room version: the sender's server, and where the version says so the event
/// id's server and the server of `join_authorised_via_users_server`.
/// `public_keys` must hold keys for each of them; keys are matched by key id,
/// and their validity period is the caller's business.
///
/// # Errors
///
/// [`EventError::Signature`] if a required signature is missing or invalid, or
/// keys for a required server are missing; [`EventError::UnsupportedRoomVersion`];
/// [`EventError::TooLarge`]; [`EventError::Malformed`] for a PDU without
/// `hashes.sha256`, `signatures` or a parseable `sender`.
pub fn verify_event(
    public_keys: &PublicKeyMap,
    room_version: &RoomVersionId,
    pdu: &CanonicalJsonObject,
) -> Result<Verified, EventError> {
    let rules = rules(room_version)?;
    match signatures::verify_event(public_keys, pdu, &rules) {
        Ok(signatures::Verified::All) => Ok(Verified::All),
        Ok(signatures::Verified::Signatures) => Ok(Verified::SignaturesOnly),
        Err(VerificationError::Json(error)) => Err(EventError::from_ruma_json(error)),
        Err(error @ VerificationError::ParseIdentifier { .. }) => {
            Err(EventError::Malformed(error.to_string()))
        }
        Err(error) => Err(EventError::Signature(SignatureError::from_ruma(error))),
    }
}

/// The servers whose signatures [`verify_event`] requires on `pdu`: the
/// sender's server, and where the room version says so the event id's server
/// and the server of `join_authorised_via_users_server`. A receiver fetches
/// the keys of exactly these servers (never of every server a PDU names in
/// its `signatures`, which the sender chooses).
///
/// # Errors
///
/// [`EventError::UnsupportedRoomVersion`]; [`EventError::Malformed`] when a
/// field naming a server is missing or does not parse.
pub fn required_signers(
    room_version: &RoomVersionId,
    pdu: &CanonicalJsonObject,
) -> Result<BTreeSet<OwnedServerName>, EventError> {
    let rules = rules(room_version)?;
    signatures::required_server_signatures_to_verify_event(pdu, &rules.signatures).map_err(
        |error| match error {
            VerificationError::Json(error) => EventError::from_ruma_json(error),
            other => EventError::Malformed(other.to_string()),
        },
    )
}

/// Computes the event's reference hash as unpadded base64, in the alphabet the
/// room version uses for event ids (standard up to version 3, URL-safe from 4).
///
/// The PDU must already carry its content hash.
///
/// # Errors
///
/// [`EventError::UnsupportedRoomVersion`], [`EventError::TooLarge`],
/// [`EventError::Malformed`].
pub fn reference_hash(
    room_version: &RoomVersionId,
    pdu: &CanonicalJsonObject,
) -> Result<String, EventError> {
    let rules = rules(room_version)?;
    signatures::reference_hash(pdu, &rules).map_err(EventError::from_ruma_json)
}

/// The event id of a PDU: `$` and its [`reference_hash`] (room version 3+).
///
/// # Errors
///
/// [`EventError::EventIdNotHashed`] for room versions 1 and 2, and the errors
/// of [`reference_hash`].
pub fn event_id(
    room_version: &RoomVersionId,
    pdu: &CanonicalJsonObject,
) -> Result<OwnedEventId, EventError> {
    let rules = rules(room_version)?;
    if rules.event_id_format == EventIdFormatVersion::V1 {
        return Err(EventError::EventIdNotHashed(room_version.clone()));
    }
    let hash = signatures::reference_hash(pdu, &rules).map_err(EventError::from_ruma_json)?;
    OwnedEventId::try_from(format!("${hash}"))
        .map_err(|error| EventError::Malformed(format!("derived event id: {error}")))
}

/// The room id a room version 12+ `m.room.create` PDU defines: `!` and the
/// create event's reference hash.
///
/// # Errors
///
/// [`EventError::RoomIdNotHashed`] for room versions before 12, and the errors
/// of [`reference_hash`].
pub fn room_id_from_create_event(
    room_version: &RoomVersionId,
    create_pdu: &CanonicalJsonObject,
) -> Result<OwnedRoomId, EventError> {
    let rules = rules(room_version)?;
    if rules.room_id_format == RoomIdFormatVersion::V1 {
        return Err(EventError::RoomIdNotHashed(room_version.clone()));
    }
    let hash =
        signatures::reference_hash(create_pdu, &rules).map_err(EventError::from_ruma_json)?;
    OwnedRoomId::try_from(format!("!{hash}"))
        .map_err(|error| EventError::Malformed(format!("derived room id: {error}")))
}

impl EventError {
    fn from_ruma_json(error: RumaJsonError) -> Self {
        match error {
            RumaJsonError::PduTooLarge => Self::TooLarge,
            other => Self::Malformed(other.to_string()),
        }
    }
}

fn rules(room_version: &RoomVersionId) -> Result<RoomVersionRules, EventError> {
    room_version
        .rules()
        .ok_or_else(|| EventError::UnsupportedRoomVersion(room_version.clone()))
}

#[cfg(test)]
pub(crate) mod tests;
