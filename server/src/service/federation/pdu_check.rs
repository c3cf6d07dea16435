//! The first three [checks on receipt of a PDU], the ones that need no room
//! state: the event is well formed for its room version, every server that
//! must sign it did (with a key valid when the event says it was sent), and
//! its content hash matches — or else it goes on in its redacted form.
//!
//! Every PDU that arrives from another server passes here before the
//! authorization rules see it: events in transactions, the state and auth
//! chain of a join, fetched missing events, invites.
//!
//! [checks on receipt of a PDU]: https://spec.matrix.org/v1.16/server-server-api/#checks-performed-on-receipt-of-a-pdu

use myelin_crypto::{PublicKeyMap, PublicKeySet, required_signers, verify_event};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, ServerName};

use super::{KeyLookupError, RemoteKeys};
use crate::{
    service::rooms::{
        pdu::{Pdu, PduError},
        version::RoomVersion,
    },
    storage::{Millis, StorageError},
};

/// Key ids of one server tried per event; a real server signs with one.
const MAX_KEYS_PER_SIGNER: usize = 8;

/// A PDU from another server that passed the checks before authorization.
#[derive(Debug, Clone)]
pub struct CheckedPdu {
    /// The event, redacted when its content hash did not match.
    pub pdu: Pdu,
    /// Whether the content hash failed and the event was redacted.
    pub redacted: bool,
}

/// Why a PDU was refused before authorization.
#[derive(Debug, thiserror::Error)]
pub enum PduCheckError {
    /// Not an event of the room version: missing or mistyped fields, over
    /// the size limits, an event id that is not its hash.
    #[error("malformed event: {0}")]
    Malformed(#[from] PduError),
    /// A server that must sign it did not, or its signature does not
    /// verify with any key of that server valid at `origin_server_ts`.
    #[error("bad signature: {0}")]
    Signature(String),
    /// Storage failed while looking keys up.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Checks a PDU of `version` received from another server: its format, the
/// signatures the room version requires, and its content hash.
///
/// # Errors
/// [`PduCheckError`]: the event must be dropped (a storage failure aside).
pub async fn check_pdu(
    keys: &RemoteKeys,
    version: RoomVersion,
    object: CanonicalJsonObject,
) -> Result<CheckedPdu, PduCheckError> {
    let pdu = Pdu::from_object(version, object)?;
    let signers = required_signers(&version.id(), pdu.as_object())
        .map_err(|error| PduCheckError::Signature(error.to_string()))?;
    let sent_at = Millis(i64::try_from(u64::from(pdu.origin_server_ts().0)).unwrap_or(i64::MAX));
    let mut public_keys = PublicKeyMap::new();
    for signer in &signers {
        let set = signer_keys(keys, signer, pdu.as_object(), sent_at).await?;
        if set.is_empty() {
            return Err(PduCheckError::Signature(format!(
                "no key of {signer} valid at the event's origin_server_ts signs it"
            )));
        }
        public_keys.insert(signer.to_string(), set);
    }
    check_with_keys(pdu, &public_keys)
}

/// The signature and content hash checks of [`check_pdu`] on a well-formed
/// `pdu`, with the keys of the servers that must sign it already in hand.
///
/// # Errors
/// [`PduCheckError::Signature`] when a required signature is missing or
/// does not verify; [`PduCheckError::Malformed`] when the redacted form of
/// an event whose content hash failed is not a valid event.
pub fn check_with_keys(pdu: Pdu, public_keys: &PublicKeyMap) -> Result<CheckedPdu, PduCheckError> {
    let version = pdu.room_version();
    let verified = verify_event(public_keys, &version.id(), pdu.as_object())
        .map_err(|error| PduCheckError::Signature(error.to_string()))?;
    if verified.is_content_hash_valid() {
        return Ok(CheckedPdu {
            pdu,
            redacted: false,
        });
    }
    let rules = &version.rules().redaction;
    let redacted = ruma::canonical_json::redact(pdu.as_object().clone(), rules, None)
        .map_err(|error| PduCheckError::Signature(error.to_string()))?;
    Ok(CheckedPdu {
        pdu: Pdu::from_object(version, redacted)?,
        redacted: true,
    })
}

/// The keys of `signer` that the event names in its signatures and that
/// were valid at `at`.
async fn signer_keys(
    keys: &RemoteKeys,
    signer: &ServerName,
    event: &CanonicalJsonObject,
    at: Millis,
) -> Result<PublicKeySet, PduCheckError> {
    let named = match event.get("signatures") {
        Some(CanonicalJsonValue::Object(signatures)) => match signatures.get(signer.as_str()) {
            Some(CanonicalJsonValue::Object(by_key)) => by_key.keys().cloned().collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let mut set = PublicKeySet::new();
    for key_id in named
        .into_iter()
        .filter(|id: &String| id.starts_with("ed25519:"))
        .take(MAX_KEYS_PER_SIGNER)
    {
        match keys.verify_key(signer, &key_id, at).await {
            Ok(key) => {
                set.insert(key_id, key);
            }
            Err(KeyLookupError::NotFound { .. }) => {}
            Err(KeyLookupError::Storage(error)) => return Err(error.into()),
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests;
