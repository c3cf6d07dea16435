//! Olm: a device's long-term account and its pairwise sessions.
//!
//! Thin typed wrappers over vodozemac's `olm` module, so the rest of the
//! workspace never names vodozemac: an [`Account`] holds a device's identity
//! keys (ed25519 for signing, curve25519 for Olm), its one-time keys and its
//! fallback key; a [`Session`] is one double ratchet with another device,
//! created outbound from a claimed one-time (or fallback) key or inbound from
//! a pre-key message. See the spec's [`m.olm.v1.curve25519-aes-sha2`].
//!
//! Only session version 1 (`m.olm.v1`, truncated MACs) exists on the wire
//! today; that is the only configuration used here.
//!
//! [`m.olm.v1.curve25519-aes-sha2`]: https://spec.matrix.org/v1.16/client-server-api/#molmv1curve25519-aes-sha2

use std::fmt;

use serde_json::{Map, Value};
use vodozemac::olm::{self as vz, SessionConfig};
pub use vodozemac::{
    Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature,
    olm::{OlmMessage, PreKeyMessage},
};

use crate::{
    PickleError, PickleKey,
    device_signing::{self, DeviceSignatureError},
};

/// The algorithm name of Olm in `m.room.encrypted` content and device keys.
pub const OLM_ALGORITHM: &str = "m.olm.v1.curve25519-aes-sha2";

/// The key-id algorithm of uploaded one-time and fallback keys.
pub const SIGNED_CURVE25519: &str = "signed_curve25519";

/// A device's two public identity keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentityKeys {
    /// The fingerprint key: signs device keys, one-time keys and Megolm
    /// sessions.
    pub ed25519: Ed25519PublicKey,
    /// The Olm identity key: names the device in Olm and Megolm (`sender_key`).
    pub curve25519: Curve25519PublicKey,
}

/// Errors from creating or using an Olm session.
///
/// Variants carry vodozemac's reason as text; that text names public keys
/// and indices at most, never secrets or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OlmError {
    /// A session could not be created (a non-contributory key, a pre-key
    /// message for a one-time key this account no longer holds, a mismatched
    /// identity key).
    #[error("olm session could not be created: {reason}")]
    SessionCreation {
        /// vodozemac's description.
        reason: String,
    },

    /// A message did not decrypt with this session.
    #[error("olm message did not decrypt: {reason}")]
    Decryption {
        /// vodozemac's description.
        reason: String,
    },

    /// The session cannot encrypt (its sending chain is exhausted).
    #[error("olm session cannot encrypt: {reason}")]
    Encryption {
        /// vodozemac's description.
        reason: String,
    },
}

/// An account encrypted as MSC3814 dehydrated-device data (both fields
/// unpadded base64, as the `device_pickle` and `nonce` the server keeps).
#[derive(Clone, PartialEq, Eq)]
pub struct DehydratedAccount {
    /// The encrypted account.
    pub ciphertext: String,
    /// The nonce it was encrypted with.
    pub nonce: String,
}

impl fmt::Debug for DehydratedAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DehydratedAccount").finish_non_exhaustive()
    }
}

/// A dehydrated account could not be made or opened: a wrong key, damaged
/// data, or an account the format cannot carry. The text is vodozemac's,
/// which names no secret.
#[derive(Debug, thiserror::Error)]
#[error("dehydrated device: {0}")]
pub struct DehydrationError(String);

/// A device's Olm account.
///
/// `Debug` shows the public identity keys only.
pub struct Account(vz::Account);

impl Account {
    /// Creates an account with fresh identity keys and no one-time keys.
    pub fn new() -> Self {
        Self(vz::Account::new())
    }

    /// The account's public identity keys.
    pub fn identity_keys(&self) -> IdentityKeys {
        let keys = self.0.identity_keys();
        IdentityKeys {
            ed25519: keys.ed25519,
            curve25519: keys.curve25519,
        }
    }

    /// Signs raw bytes with the ed25519 identity key.
    pub fn sign(&self, message: &[u8]) -> Ed25519Signature {
        self.0.sign(message)
    }

    /// Signs a JSON object as this device, per the spec's [Signing JSON]:
    /// the canonical JSON without `signatures` and `unsigned` is signed and
    /// the signature added under `signatures.<user_id>.ed25519:<device_id>`.
    ///
    /// # Errors
    ///
    /// [`DeviceSignatureError::Malformed`] if the object holds a value
    /// canonical JSON cannot carry (a float) or `signatures` is not an object.
    ///
    /// [Signing JSON]: https://spec.matrix.org/v1.16/appendices/#signing-json
    pub fn sign_json(
        &self,
        user_id: &str,
        device_id: &str,
        object: &mut Map<String, Value>,
    ) -> Result<(), DeviceSignatureError> {
        device_signing::sign_json_with(
            |bytes| self.sign(bytes),
            user_id,
            &format!("ed25519:{device_id}"),
            object,
        )
    }

    /// The most one-time keys worth keeping published: half of what the
    /// account can hold, so that keys claimed but not yet used in a pre-key
    /// message are not forgotten when new ones are generated.
    pub fn max_one_time_keys(&self) -> usize {
        self.0.max_number_of_one_time_keys()
    }

    /// Generates `count` new one-time keys. They stay unpublished until
    /// [`Account::mark_keys_as_published`].
    pub fn generate_one_time_keys(&mut self, count: usize) {
        // Keys pushed out of a full store are simply forgotten; callers cap
        // `count` with `max_one_time_keys`, so that does not happen here.
        let _ = self.0.generate_one_time_keys(count);
    }

    /// The one-time keys generated but not yet published, as
    /// (`signed_curve25519:<id>`, key), sorted by key id.
    pub fn unpublished_one_time_keys(&self) -> Vec<(String, Curve25519PublicKey)> {
        let mut keys: Vec<_> = self
            .0
            .one_time_keys()
            .into_iter()
            .map(|(id, key)| (key_id(id), key))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        keys
    }

    /// Generates a new fallback key, keeping the previous one usable for
    /// pre-key messages already in flight.
    pub fn generate_fallback_key(&mut self) {
        // The key that drops out is the one before the previous: by now every
        // message built on it has been delivered or is lost anyway.
        let _ = self.0.generate_fallback_key();
    }

    /// The fallback key generated but not yet published, if any.
    pub fn unpublished_fallback_key(&self) -> Option<(String, Curve25519PublicKey)> {
        self.0
            .fallback_key()
            .into_iter()
            .next()
            .map(|(id, key)| (key_id(id), key))
    }

    /// Marks every unpublished one-time and fallback key as published, after
    /// the server acknowledged the upload.
    pub fn mark_keys_as_published(&mut self) {
        self.0.mark_keys_as_published();
    }

    /// Creates an outbound session to the device with `identity_key`, from a
    /// one-time or fallback key claimed from the server (whose signature the
    /// caller has verified).
    ///
    /// # Errors
    ///
    /// [`OlmError::SessionCreation`] if a key is non-contributory (a
    /// low-order point a malicious server or device could hand out).
    pub fn create_outbound_session(
        &self,
        identity_key: Curve25519PublicKey,
        one_time_key: Curve25519PublicKey,
    ) -> Result<Session, OlmError> {
        self.0
            .create_outbound_session(SessionConfig::version_1(), identity_key, one_time_key)
            .map(Session)
            .map_err(|e| OlmError::SessionCreation {
                reason: e.to_string(),
            })
    }

    /// Creates an inbound session from a pre-key message sent by the device
    /// with `identity_key`, and returns it with the message's plaintext. The
    /// one-time key it used is removed, so the same message cannot create a
    /// second session.
    ///
    /// # Errors
    ///
    /// [`OlmError::SessionCreation`] if the message names another identity
    /// key, a one-time key this account does not hold, or does not decrypt.
    pub fn create_inbound_session(
        &mut self,
        identity_key: Curve25519PublicKey,
        message: &PreKeyMessage,
    ) -> Result<(Session, Vec<u8>), OlmError> {
        self.0
            .create_inbound_session(SessionConfig::version_1(), identity_key, message)
            .map(|result| (Session(result.session), result.plaintext))
            .map_err(|e| OlmError::SessionCreation {
                reason: e.to_string(),
            })
    }

    /// The account as MSC3814 dehydrated-device data, encrypted with
    /// `key` (ChaCha20-Poly1305, vodozemac's format): its identity, one-time
    /// and fallback keys, to be stored on the server while no device of the
    /// user is online. Only a fresh account (no Olm sessions) is meant for
    /// this, since the format keeps no sessions.
    ///
    /// # Errors
    ///
    /// [`DehydrationError`] if the account cannot be put in that format.
    pub fn to_dehydrated_device(
        &self,
        key: &[u8; 32],
    ) -> Result<DehydratedAccount, DehydrationError> {
        let result = self
            .0
            .to_dehydrated_device(key)
            .map_err(|e| DehydrationError(e.to_string()))?;
        Ok(DehydratedAccount {
            ciphertext: result.ciphertext,
            nonce: result.nonce,
        })
    }

    /// Loads an account from [`Account::to_dehydrated_device`]'s output.
    ///
    /// # Errors
    ///
    /// [`DehydrationError`] for a wrong key or damaged data.
    pub fn from_dehydrated_device(
        data: &DehydratedAccount,
        key: &[u8; 32],
    ) -> Result<Self, DehydrationError> {
        vz::Account::from_dehydrated_device(&data.ciphertext, &data.nonce, key)
            .map(Self)
            .map_err(|e| DehydrationError(e.to_string()))
    }

    /// The account as an encrypted pickle.
    pub fn pickle(&self, key: &PickleKey) -> String {
        self.0.pickle().encrypt(key.as_bytes())
    }

    /// Loads an account from [`Account::pickle`]'s output.
    ///
    /// # Errors
    ///
    /// [`PickleError`] for a wrong key or a damaged pickle.
    pub fn from_pickle(pickle: &str, key: &PickleKey) -> Result<Self, PickleError> {
        let pickle = vz::AccountPickle::from_encrypted(pickle, key.as_bytes())?;
        Ok(Self(vz::Account::from_pickle(pickle)))
    }
}

impl Default for Account {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("identity_keys", &self.identity_keys())
            .finish_non_exhaustive()
    }
}

/// One Olm session (a double ratchet) with another device.
///
/// `Debug` shows the session id only.
pub struct Session(vz::Session);

impl Session {
    /// The session id (derived from the keys that created it).
    pub fn session_id(&self) -> String {
        self.0.session_id()
    }

    /// Whether a message from the other side has been decrypted with this
    /// session. Until then, everything it encrypts is a pre-key message.
    pub fn has_received_message(&self) -> bool {
        self.0.has_received_message()
    }

    /// Whether `message` was built on this session, i.e. decrypting it here
    /// is the right choice rather than creating a new inbound session.
    pub fn matches(&self, message: &PreKeyMessage) -> bool {
        message.session_id() == self.session_id()
    }

    /// Encrypts `plaintext`.
    ///
    /// # Errors
    ///
    /// [`OlmError::Encryption`] if the sending chain is exhausted (after
    /// 2^32 messages without a reply).
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<OlmMessage, OlmError> {
        self.0.encrypt(plaintext).map_err(|e| OlmError::Encryption {
            reason: e.to_string(),
        })
    }

    /// Decrypts `message`. A failure leaves the session unchanged.
    ///
    /// # Errors
    ///
    /// [`OlmError::Decryption`] if the MAC does not verify, the message is
    /// malformed, or its message key was already used (a replay).
    pub fn decrypt(&mut self, message: &OlmMessage) -> Result<Vec<u8>, OlmError> {
        self.0.decrypt(message).map_err(|e| OlmError::Decryption {
            reason: e.to_string(),
        })
    }

    /// The session as an encrypted pickle.
    pub fn pickle(&self, key: &PickleKey) -> String {
        self.0.pickle().encrypt(key.as_bytes())
    }

    /// Loads a session from [`Session::pickle`]'s output.
    ///
    /// # Errors
    ///
    /// [`PickleError`] for a wrong key or a damaged pickle.
    pub fn from_pickle(pickle: &str, key: &PickleKey) -> Result<Self, PickleError> {
        let pickle = vz::SessionPickle::from_encrypted(pickle, key.as_bytes())?;
        Ok(Self(vz::Session::from_pickle(pickle)))
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.session_id())
            .finish_non_exhaustive()
    }
}

fn key_id(id: vodozemac::KeyId) -> String {
    format!("{SIGNED_CURVE25519}:{}", id.to_base64())
}

#[cfg(test)]
mod tests;
