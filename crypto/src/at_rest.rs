//! Encryption at rest for client stores: a key derived from a passphrase
//! seals small records (access tokens, pickled sessions) with AES-256-GCM.
//!
//! Key schedule:
//!
//! ```text
//! master    = argon2id(passphrase, salt, memory, iterations, parallelism)   32 bytes
//! enc_key   = HKDF-SHA256(ikm = master, salt = none, info = "myelin.at_rest.v1.encryption")
//! verifier  = HKDF-SHA256(ikm = master, salt = none, info = "myelin.at_rest.v1.verifier")
//! ```
//!
//! The store keeps the [`KdfParams`] and the [`Verifier`] in the clear. On
//! opening, the caller derives the key again and compares verifiers in
//! constant time: a wrong passphrase is [`AtRestError::WrongPassphrase`]
//! before anything is decrypted or written, so it can never corrupt a store.
//! The verifier and the encryption key are independent HKDF outputs, so
//! knowing the verifier tells an attacker nothing about the encryption key;
//! guessing passphrases against it costs one argon2id run per guess.
//!
//! A sealed record is `version (1) || nonce (12) || ciphertext || tag (16)`,
//! with a fresh random nonce per record. The caller passes a *context* (for
//! example the record's namespace and key) that is authenticated as
//! associated data, so a sealed value moved to another record fails to open
//! instead of being accepted in the wrong place.

use aes_gcm::{
    Aes256Gcm, Key, KeyInit, Nonce,
    aead::{Aead, OsRng, Payload, rand_core::RngCore},
};
use argon2::{Algorithm, Argon2, Params, Version};
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::PickleKey;

/// The version byte that opens every sealed record.
const SEALED_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const ENCRYPTION_INFO: &[u8] = b"myelin.at_rest.v1.encryption";
const VERIFIER_INFO: &[u8] = b"myelin.at_rest.v1.verifier";
const PICKLE_SEAL_INFO: &[u8] = b"myelin.pickle.v1.seal";

/// What went wrong deriving a key, sealing or opening a record. No variant
/// carries key material, passphrases or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AtRestError {
    /// The passphrase does not derive the key the store was created with.
    #[error("wrong passphrase for this store")]
    WrongPassphrase,
    /// The stored key-derivation parameters are out of argon2's range.
    #[error("invalid key derivation parameters: {0}")]
    InvalidKdfParams(String),
    /// A stored verifier has the wrong length.
    #[error("stored passphrase verifier is {got} bytes, expected 32")]
    MalformedVerifier {
        /// Its length.
        got: usize,
    },
    /// A sealed record is shorter than a version byte, nonce and tag.
    #[error("sealed record is {got} bytes, shorter than the {min}-byte minimum")]
    TooShort {
        /// Its length.
        got: usize,
        /// The shortest possible sealed record.
        min: usize,
    },
    /// A sealed record starts with a version this code does not know.
    #[error("sealed record has unknown version {0}")]
    UnknownVersion(u8),
    /// Authentication failed: the record was altered, belongs to another
    /// context, or was sealed under another key.
    #[error("sealed record failed authentication (tampered, moved, or another key)")]
    Tampered,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Randomness,
}

/// The argon2id parameters and salt a store's key is derived with. Stored
/// in the clear next to the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdfParams {
    /// 16 random bytes, chosen once per store.
    pub salt: [u8; 16],
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Degree of parallelism.
    pub parallelism: u32,
}

impl KdfParams {
    /// Fresh parameters for a new store: a random salt and argon2id with
    /// 19 MiB, 2 passes, 1 lane (OWASP's recommended minimum).
    ///
    /// # Errors
    ///
    /// [`AtRestError::Randomness`] if the system's random number generator fails.
    pub fn generate() -> Result<Self, AtRestError> {
        let mut salt = [0; 16];
        OsRng
            .try_fill_bytes(&mut salt)
            .map_err(|_| AtRestError::Randomness)?;
        Ok(Self {
            salt,
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        })
    }
}

/// A value derived from the key that lets a store check a passphrase
/// without trying to decrypt anything. Not secret, but only meaningful next
/// to its [`KdfParams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier(pub [u8; 32]);

impl Verifier {
    /// Reads a stored verifier.
    ///
    /// # Errors
    ///
    /// [`AtRestError::MalformedVerifier`] unless `bytes` is 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, AtRestError> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| AtRestError::MalformedVerifier { got: bytes.len() })
    }
}

/// The key that seals and opens a store's secret records. Zeroized on drop;
/// its `Debug` prints nothing secret.
pub struct AtRestKey {
    cipher: Aes256Gcm,
    verifier: Verifier,
}

impl std::fmt::Debug for AtRestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtRestKey").finish_non_exhaustive()
    }
}

impl AtRestKey {
    /// Derives the key for `passphrase` under `params`. Use it for a new
    /// store, then keep `params` and [`AtRestKey::verifier`] with the data.
    ///
    /// # Errors
    ///
    /// [`AtRestError::InvalidKdfParams`] if argon2 refuses the parameters.
    pub fn derive(passphrase: &[u8], params: &KdfParams) -> Result<Self, AtRestError> {
        let argon_params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            Some(32),
        )
        .map_err(|error| AtRestError::InvalidKdfParams(error.to_string()))?;
        let mut master = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params)
            .hash_password_into(passphrase, &params.salt, master.as_mut())
            .map_err(|error| AtRestError::InvalidKdfParams(error.to_string()))?;
        Self::expand(master.as_ref(), ENCRYPTION_INFO)
    }

    /// A key for sealing small secrets under a [`PickleKey`] (a uniformly
    /// random 32-byte key, so no password hashing): the secrets that have no
    /// vodozemac pickle of their own, such as cross-signing keys. Its HKDF
    /// label differs from a passphrase-derived key's, so the two never
    /// coincide even for equal input bytes.
    pub(crate) fn for_pickles(key: &PickleKey) -> Result<Self, AtRestError> {
        Self::expand(key.as_bytes(), PICKLE_SEAL_INFO)
    }

    /// The cipher and verifier from 32 bytes of uniformly random key material.
    fn expand(master: &[u8], encryption_info: &[u8]) -> Result<Self, AtRestError> {
        let hkdf = Hkdf::<Sha256>::new(None, master);
        let mut encryption = Zeroizing::new([0u8; 32]);
        let mut verifier = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
        hkdf.expand(encryption_info, encryption.as_mut())
            .map_err(|_| AtRestError::InvalidKdfParams("hkdf output length".to_owned()))?;
        hkdf.expand(VERIFIER_INFO, &mut verifier)
            .map_err(|_| AtRestError::InvalidKdfParams("hkdf output length".to_owned()))?;
        Ok(Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(encryption.as_ref())),
            verifier: Verifier(verifier),
        })
    }

    /// Derives the key for `passphrase` and checks it against the verifier
    /// stored when the store was created.
    ///
    /// # Errors
    ///
    /// [`AtRestError::WrongPassphrase`] if the verifiers differ (compared in
    /// constant time); [`AtRestError::InvalidKdfParams`] as for [`AtRestKey::derive`].
    pub fn unlock(
        passphrase: &[u8],
        params: &KdfParams,
        stored: &Verifier,
    ) -> Result<Self, AtRestError> {
        let key = Self::derive(passphrase, params)?;
        if bool::from(key.verifier.0.ct_eq(&stored.0)) {
            Ok(key)
        } else {
            Err(AtRestError::WrongPassphrase)
        }
    }

    /// The verifier to store next to the [`KdfParams`].
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Encrypts `plaintext`, binding it to `context` (for example the
    /// record's name), with a fresh random nonce.
    ///
    /// # Errors
    ///
    /// [`AtRestError::Randomness`] if no nonce could be drawn.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AtRestError> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|_| AtRestError::Randomness)?;
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            // AES-GCM encryption fails only past 64 GiB of plaintext.
            .map_err(|_| AtRestError::Tampered)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(SEALED_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Decrypts a record sealed by [`AtRestKey::seal`] under the same
    /// `context`. The plaintext is zeroized when dropped.
    ///
    /// # Errors
    ///
    /// [`AtRestError::TooShort`] or [`AtRestError::UnknownVersion`] for a
    /// malformed record; [`AtRestError::Tampered`] if authentication fails.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, AtRestError> {
        let min = 1 + NONCE_LEN + TAG_LEN;
        if sealed.len() < min {
            return Err(AtRestError::TooShort {
                got: sealed.len(),
                min,
            });
        }
        let (version, rest) = sealed.split_at(1);
        if version[0] != SEALED_VERSION {
            return Err(AtRestError::UnknownVersion(version[0]));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| AtRestError::Tampered)
    }
}

#[cfg(test)]
mod tests {
    use super::{AtRestError, AtRestKey, KdfParams, Verifier};

    /// Small argon2 costs keep the tests fast; the schedule is the same.
    fn cheap_params(salt: u8) -> KdfParams {
        KdfParams {
            salt: [salt; 16],
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn seal_then_open_round_trips() {
        let key = AtRestKey::derive(b"passphrase", &cheap_params(1)).unwrap();
        let sealed = key.seal(b"session/access_token", b"syt_secret").unwrap();
        assert_eq!(sealed.len(), 1 + 12 + 10 + 16);
        assert!(!sealed.windows(10).any(|w| w == b"syt_secret"));
        let opened = key.open(b"session/access_token", &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"syt_secret");
    }

    #[test]
    fn derivation_is_deterministic_and_salted() {
        let a = AtRestKey::derive(b"pass", &cheap_params(1)).unwrap();
        let b = AtRestKey::derive(b"pass", &cheap_params(1)).unwrap();
        let other_salt = AtRestKey::derive(b"pass", &cheap_params(2)).unwrap();
        assert_eq!(a.verifier(), b.verifier());
        assert_ne!(a.verifier(), other_salt.verifier());
        let sealed = a.seal(b"ctx", b"data").unwrap();
        assert_eq!(b.open(b"ctx", &sealed).unwrap().as_slice(), b"data");
        assert_eq!(other_salt.open(b"ctx", &sealed), Err(AtRestError::Tampered));
    }

    #[test]
    fn nonces_are_fresh_per_record() {
        let key = AtRestKey::derive(b"pass", &cheap_params(1)).unwrap();
        let first = key.seal(b"ctx", b"same").unwrap();
        let second = key.seal(b"ctx", b"same").unwrap();
        assert_ne!(first[1..13], second[1..13]);
    }

    #[test]
    fn wrong_passphrase_is_a_typed_error() {
        let params = cheap_params(3);
        let key = AtRestKey::derive(b"right", &params).unwrap();
        let stored = key.verifier().clone();
        assert_eq!(
            AtRestKey::unlock(b"wrong", &params, &stored).unwrap_err(),
            AtRestError::WrongPassphrase
        );
        assert!(AtRestKey::unlock(b"right", &params, &stored).is_ok());
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let key = AtRestKey::derive(b"pass", &cheap_params(4)).unwrap();
        let sealed = key.seal(b"ctx", b"a secret token").unwrap();
        for index in 1..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x01;
            assert_eq!(
                key.open(b"ctx", &tampered),
                Err(AtRestError::Tampered),
                "flip at byte {index}"
            );
        }
        let mut bad_version = sealed.clone();
        bad_version[0] = 2;
        assert_eq!(
            key.open(b"ctx", &bad_version),
            Err(AtRestError::UnknownVersion(2))
        );
    }

    #[test]
    fn a_record_moved_to_another_context_fails() {
        let key = AtRestKey::derive(b"pass", &cheap_params(5)).unwrap();
        let sealed = key.seal(b"session/access_token", b"token").unwrap();
        assert_eq!(
            key.open(b"olm/session-1", &sealed),
            Err(AtRestError::Tampered)
        );
    }

    #[test]
    fn truncated_records_and_verifiers_are_rejected() {
        let key = AtRestKey::derive(b"pass", &cheap_params(6)).unwrap();
        let sealed = key.seal(b"ctx", b"").unwrap();
        assert_eq!(sealed.len(), 29);
        assert_eq!(
            key.open(b"ctx", &sealed[..28]),
            Err(AtRestError::TooShort { got: 28, min: 29 })
        );
        assert_eq!(key.open(b"ctx", &sealed).unwrap().as_slice(), b"");
        assert_eq!(
            Verifier::from_slice(&[0; 31]),
            Err(AtRestError::MalformedVerifier { got: 31 })
        );
    }

    #[test]
    fn out_of_range_params_are_an_error_not_a_panic() {
        let params = KdfParams {
            memory_kib: 1,
            ..cheap_params(7)
        };
        assert!(matches!(
            AtRestKey::derive(b"pass", &params),
            Err(AtRestError::InvalidKdfParams(_))
        ));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = AtRestKey::derive(b"pass", &cheap_params(8)).unwrap();
        assert_eq!(format!("{key:?}"), "AtRestKey { .. }");
    }

    #[test]
    fn generated_params_have_random_salts() {
        let a = KdfParams::generate().unwrap();
        let b = KdfParams::generate().unwrap();
        assert_ne!(a.salt, b.salt);
        assert_eq!(
            (a.memory_kib, a.iterations, a.parallelism),
            (19 * 1024, 2, 1)
        );
    }
}
