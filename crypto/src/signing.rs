//! Signing JSON objects and verifying their signatures.
//!
//! Implements [Signing JSON] from the spec appendix over ruma's
//! `ruma::signatures`: the signature covers the canonical JSON of the object
//! without its `signatures` and `unsigned` members, and is added under
//! `signatures.<entity>.<key id>`. This is what the server uses for its key
//! document (`GET /_matrix/key/v2/server`) and for any other signed JSON
//! that is not a PDU (PDUs go through [`crate::event`]).
//!
//! [Signing JSON]: https://spec.matrix.org/v1.16/appendices/#signing-json

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, ServerName,
    serde::Base64,
    signatures::{self, JsonError as RumaJsonError, VerificationError},
};

use crate::SigningKey;

/// Public keys by entity (server name), then by key id (`ed25519:abc`).
///
/// This is ruma's map, re-exported so callers need not name ruma's paths.
/// Its values are raw public keys that serialise as unpadded base64.
pub use ruma::signatures::PublicKeyMap;
/// The public keys of one entity, by key id.
pub use ruma::signatures::PublicKeySet;

/// Errors from signing JSON or verifying its signatures.
///
/// Variants name entities, key ids and JSON paths, never key material or the
/// signed content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The object has no `signatures` from this entity, or none with a key the
    /// caller supplied and an algorithm Myelin supports.
    #[error("no verifiable signature from `{entity}`")]
    MissingSignature {
        /// The server name whose signature was required.
        entity: String,
    },

    /// The caller supplied no public keys for an entity whose signature must
    /// be checked. Fetch its keys, then retry.
    #[error("no public keys known for `{entity}`")]
    UnknownEntity {
        /// The server name whose keys are missing.
        entity: String,
    },

    /// A signature did not verify. The object was altered, or was signed with
    /// a different key than the one supplied under this key id.
    #[error("signature does not verify")]
    Invalid(#[source] ruma::signatures::Ed25519VerificationError),

    /// A signature is not valid base64.
    #[error("signature at `{path}` is not valid base64")]
    SignatureNotBase64 {
        /// Dotted path of the signature, `signatures.<entity>.<key id>`.
        path: String,
    },

    /// A field the algorithm needs is missing or has the wrong type (for
    /// example `signatures` is not an object), or an identifier in the object
    /// does not parse.
    #[error("malformed object: {0}")]
    Malformed(String),
}

/// Signs `object` as `origin` with `key`, adding
/// `signatures.<origin>.<key id>` and keeping any signatures already there.
///
/// # Errors
///
/// [`SignatureError::Malformed`] if `signatures` or `signatures.<origin>`
/// exists and is not an object.
pub fn sign_json(
    origin: &ServerName,
    key: &SigningKey,
    object: &mut CanonicalJsonObject,
) -> Result<(), SignatureError> {
    signatures::sign_json(origin.as_str(), key.key_pair(), object).map_err(malformed)
}

/// Verifies every entity's signatures on `object` against `public_keys`.
///
/// For each entity in `object.signatures`, every signature whose key id is in
/// that entity's [`PublicKeySet`] is checked, and at least one must exist.
/// Signatures under key ids the caller did not supply are ignored.
///
/// # Errors
///
/// [`SignatureError::UnknownEntity`] if an entity that signed has no entry in
/// `public_keys`; [`SignatureError::MissingSignature`] if none of its
/// signatures can be checked; [`SignatureError::Invalid`] if one fails;
/// [`SignatureError::SignatureNotBase64`] or [`SignatureError::Malformed`] for
/// a malformed object (including one with no `signatures` at all).
pub fn verify_json(
    public_keys: &PublicKeyMap,
    object: &CanonicalJsonObject,
) -> Result<(), SignatureError> {
    signatures::verify_json(public_keys, object).map_err(SignatureError::from_ruma)
}

/// Verifies the one signature `signatures.<entity>.<key_id>` on `object`
/// against `public_key` (unpadded base64), ignoring every other signature.
///
/// This is the check for keys that users sign: device keys signed by their
/// own device key, cross-signing keys signed by the master key, one-time
/// keys signed by the device. The signer is a user, not a server, and the
/// object may carry signatures from others (cross-signing) that the caller
/// has no keys for and must not be made to fail on.
///
/// # Errors
///
/// [`SignatureError::MissingSignature`] when that signature is absent;
/// [`SignatureError::Malformed`] when `public_key` is not base64 or the
/// object's `signatures` is malformed; [`SignatureError::Invalid`] or
/// [`SignatureError::SignatureNotBase64`] for a bad signature.
pub fn verify_signature_by(
    object: &CanonicalJsonObject,
    entity: &str,
    key_id: &str,
    public_key: &str,
) -> Result<(), SignatureError> {
    let missing = || SignatureError::MissingSignature {
        entity: entity.to_owned(),
    };
    let signature = object
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|signatures| signatures.get(entity))
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|by_entity| by_entity.get(key_id))
        .ok_or_else(missing)?
        .clone();
    let public_key = Base64::parse(public_key)
        .map_err(|_| SignatureError::Malformed("public key is not base64".to_owned()))?;
    // Only the one signature stays, so that ruma checks exactly it.
    let mut only_this = object.clone();
    let mut by_entity = CanonicalJsonObject::new();
    by_entity.insert(key_id.to_owned(), signature);
    let mut signatures = CanonicalJsonObject::new();
    signatures.insert(entity.to_owned(), CanonicalJsonValue::Object(by_entity));
    only_this.insert(
        "signatures".to_owned(),
        CanonicalJsonValue::Object(signatures),
    );
    let mut keys = PublicKeyMap::new();
    keys.entry(entity.to_owned())
        .or_default()
        .insert(key_id.to_owned(), public_key);
    verify_json(&keys, &only_this)
}

impl SignatureError {
    /// Maps ruma's verification error, which spans JSON, identifier and
    /// signature failures, onto this family. Size errors never reach here for
    /// plain JSON; PDUs map them separately in [`crate::event`].
    pub(crate) fn from_ruma(error: VerificationError) -> Self {
        match error {
            VerificationError::NoSignaturesForEntity(entity)
            | VerificationError::NoSupportedSignatureForEntity(entity) => {
                Self::MissingSignature { entity }
            }
            VerificationError::NoPublicKeysForEntity(entity) => Self::UnknownEntity { entity },
            VerificationError::Ed25519(source) => Self::Invalid(source),
            VerificationError::InvalidBase64Signature { path, .. } => {
                Self::SignatureNotBase64 { path }
            }
            VerificationError::Json(error) => malformed(error),
            other => Self::Malformed(other.to_string()),
        }
    }
}

fn malformed(error: RumaJsonError) -> SignatureError {
    SignatureError::Malformed(error.to_string())
}

#[cfg(test)]
mod tests;
