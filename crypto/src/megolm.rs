//! Megolm: the group ratchet that encrypts room messages.
//!
//! Thin typed wrappers over vodozemac's `megolm` module. The sender holds an
//! [`OutboundGroupSession`] and shares its [`SessionKey`] (the `session_key`
//! of an `m.room_key` to-device event) over Olm; each recipient builds an
//! [`InboundGroupSession`] from it. An inbound session can be exported at a
//! message index as an [`ExportedSessionKey`] (the `session_key` of an
//! `m.forwarded_room_key`, or a backup entry), which can decrypt that index
//! and every later one but nothing earlier. See the spec's
//! [`m.megolm.v1.aes-sha2`].
//!
//! [`m.megolm.v1.aes-sha2`]: https://spec.matrix.org/v1.16/client-server-api/#mmegolmv1aes-sha2

use std::fmt;

use vodozemac::megolm::{self as vz, SessionConfig};

use crate::{PickleError, PickleKey};

/// The algorithm name of Megolm in `m.room.encrypted` content and room keys.
pub const MEGOLM_ALGORITHM: &str = "m.megolm.v1.aes-sha2";

/// Errors from Megolm key decoding and decryption.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MegolmError {
    /// A session key or exported session key is not valid (bad base64, bad
    /// version, bad signature).
    #[error("invalid megolm session key: {reason}")]
    InvalidSessionKey {
        /// vodozemac's description.
        reason: String,
    },

    /// The ciphertext is not a Megolm message.
    #[error("malformed megolm message: {reason}")]
    MalformedMessage {
        /// vodozemac's description.
        reason: String,
    },

    /// The message was encrypted at an index before the first one this
    /// session knows: its key was never shared with us (we joined later, or
    /// got a forwarded key that starts later).
    #[error("message index {message_index} is before the first known index {first_known_index}")]
    UnknownMessageIndex {
        /// The first index this session can decrypt.
        first_known_index: u32,
        /// The message's index.
        message_index: u32,
    },

    /// The message's signature or MAC does not verify: it was not produced
    /// by this session's sender, or was altered.
    #[error("megolm message failed authentication: {reason}")]
    Authentication {
        /// vodozemac's description.
        reason: String,
    },
}

/// The secret that lets recipients decrypt a Megolm session from the index
/// it was taken at, as sent in `m.room_key` (signed by the session's key).
///
/// `Debug` is redacted.
pub struct SessionKey(vz::SessionKey);

impl SessionKey {
    /// Parses the base64 form sent in `m.room_key`.
    ///
    /// # Errors
    ///
    /// [`MegolmError::InvalidSessionKey`] if it does not decode or its
    /// signature does not verify.
    pub fn from_base64(key: &str) -> Result<Self, MegolmError> {
        vz::SessionKey::from_base64(key)
            .map(Self)
            .map_err(invalid_key)
    }

    /// The base64 form for `m.room_key`.
    pub fn to_base64(&self) -> String {
        self.0.to_base64()
    }
}

/// An unsigned export of an inbound session from some index on, as sent in
/// `m.forwarded_room_key` and stored in key backups.
///
/// `Debug` is redacted.
pub struct ExportedSessionKey(vz::ExportedSessionKey);

impl ExportedSessionKey {
    /// Parses the base64 form.
    ///
    /// # Errors
    ///
    /// [`MegolmError::InvalidSessionKey`] if it does not decode.
    pub fn from_base64(key: &str) -> Result<Self, MegolmError> {
        vz::ExportedSessionKey::from_base64(key)
            .map(Self)
            .map_err(invalid_key)
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        self.0.to_base64()
    }
}

/// The sending side of a Megolm session.
///
/// `Debug` shows the session id and message index only.
pub struct OutboundGroupSession(vz::GroupSession);

impl OutboundGroupSession {
    /// Starts a new session at index 0 with fresh keys.
    pub fn new() -> Self {
        Self(vz::GroupSession::new(SessionConfig::version_1()))
    }

    /// The session id (the public part of its signing key).
    pub fn session_id(&self) -> String {
        self.0.session_id()
    }

    /// The index the next message will be encrypted at, which is also the
    /// number of messages encrypted so far.
    pub fn message_index(&self) -> u32 {
        self.0.message_index()
    }

    /// The key for recipients, at the current index: whoever receives it can
    /// decrypt this and every later message, but none sent before.
    pub fn session_key(&self) -> SessionKey {
        SessionKey(self.0.session_key())
    }

    /// Encrypts `plaintext` and advances the ratchet; returns the base64
    /// ciphertext for the `ciphertext` field of `m.room.encrypted`.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> String {
        self.0.encrypt(plaintext).to_base64()
    }

    /// The session as an encrypted pickle.
    pub fn pickle(&self, key: &PickleKey) -> String {
        self.0.pickle().encrypt(key.as_bytes())
    }

    /// Loads a session from [`OutboundGroupSession::pickle`]'s output.
    ///
    /// # Errors
    ///
    /// [`PickleError`] for a wrong key or a damaged pickle.
    pub fn from_pickle(pickle: &str, key: &PickleKey) -> Result<Self, PickleError> {
        let pickle = vz::GroupSessionPickle::from_encrypted(pickle, key.as_bytes())?;
        Ok(Self(vz::GroupSession::from_pickle(pickle)))
    }
}

impl Default for OutboundGroupSession {
    fn default() -> Self {
        Self::new()
    }
}

/// The receiving side of a Megolm session.
///
/// `Debug` shows the session id and first known index only.
pub struct InboundGroupSession(vz::InboundGroupSession);

impl InboundGroupSession {
    /// Builds a session from an `m.room_key`'s (signed) session key.
    pub fn new(key: &SessionKey) -> Self {
        Self(vz::InboundGroupSession::new(
            &key.0,
            SessionConfig::version_1(),
        ))
    }

    /// Builds a session from an exported (forwarded or backed-up) key.
    pub fn import(key: &ExportedSessionKey) -> Self {
        Self(vz::InboundGroupSession::import(
            &key.0,
            SessionConfig::version_1(),
        ))
    }

    /// The session id; it must equal the `session_id` the key arrived with,
    /// or the sender lied about which session it is.
    pub fn session_id(&self) -> String {
        self.0.session_id()
    }

    /// The first message index this session can decrypt.
    pub fn first_known_index(&self) -> u32 {
        self.0.first_known_index()
    }

    /// Decrypts the base64 `ciphertext` of an `m.room.encrypted` event and
    /// returns the plaintext with the message index it was encrypted at.
    ///
    /// Replay detection (the same index under a different event id) is the
    /// caller's job: this function decrypts any index it can reach.
    ///
    /// # Errors
    ///
    /// [`MegolmError::MalformedMessage`], [`MegolmError::UnknownMessageIndex`]
    /// or [`MegolmError::Authentication`].
    pub fn decrypt(&mut self, ciphertext: &str) -> Result<(Vec<u8>, u32), MegolmError> {
        let message = vz::MegolmMessage::from_base64(ciphertext).map_err(|e| {
            MegolmError::MalformedMessage {
                reason: e.to_string(),
            }
        })?;
        match self.0.decrypt(&message) {
            Ok(decrypted) => Ok((decrypted.plaintext, decrypted.message_index)),
            Err(vz::DecryptionError::UnknownMessageIndex(first, index)) => {
                Err(MegolmError::UnknownMessageIndex {
                    first_known_index: first,
                    message_index: index,
                })
            }
            Err(e) => Err(MegolmError::Authentication {
                reason: e.to_string(),
            }),
        }
    }

    /// Exports the session from `index` on, for forwarding; `None` if the
    /// session does not reach back that far.
    pub fn export_at(&mut self, index: u32) -> Option<ExportedSessionKey> {
        self.0.export_at(index).map(ExportedSessionKey)
    }

    /// Exports the session from its first known index on.
    pub fn export_at_first_known_index(&self) -> ExportedSessionKey {
        ExportedSessionKey(self.0.export_at_first_known_index())
    }

    /// The session as an encrypted pickle.
    pub fn pickle(&self, key: &PickleKey) -> String {
        self.0.pickle().encrypt(key.as_bytes())
    }

    /// Loads a session from [`InboundGroupSession::pickle`]'s output.
    ///
    /// # Errors
    ///
    /// [`PickleError`] for a wrong key or a damaged pickle.
    pub fn from_pickle(pickle: &str, key: &PickleKey) -> Result<Self, PickleError> {
        let pickle = vz::InboundGroupSessionPickle::from_encrypted(pickle, key.as_bytes())?;
        Ok(Self(vz::InboundGroupSession::from_pickle(pickle)))
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey([redacted])")
    }
}

impl fmt::Debug for ExportedSessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExportedSessionKey([redacted])")
    }
}

impl fmt::Debug for OutboundGroupSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundGroupSession")
            .field("session_id", &self.session_id())
            .field("message_index", &self.message_index())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for InboundGroupSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundGroupSession")
            .field("session_id", &self.session_id())
            .field("first_known_index", &self.first_known_index())
            .finish_non_exhaustive()
    }
}

fn invalid_key(error: vz::SessionKeyDecodeError) -> MegolmError {
    MegolmError::InvalidSessionKey {
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests;
