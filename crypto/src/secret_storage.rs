//! Secret storage: `m.secret_storage.v1.aes-hmac-sha2`.
//!
//! A user keeps secrets (cross-signing private keys, the backup key) in
//! their account data, each encrypted under a [`SecretStorageKey`] that only
//! the user knows, as a [recovery key] or derived from a passphrase. For
//! every secret, HKDF-SHA-256 (salt: 32 zero bytes, info: the secret's
//! name) expands the key into an AES-256-CTR key and an HMAC-SHA-256 key;
//! the stored entry is `{iv, ciphertext, mac}`, the MAC over the ciphertext.
//! Binding the secret's name into the keys means an entry cannot be moved
//! to another name.
//!
//! The key's description (`m.secret_storage.key.<id>`) carries an `iv` and
//! `mac` from encrypting 32 zero bytes under the empty name, so a client can
//! tell a wrong key from a damaged entry before it decrypts anything.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#msecret_storagev1aes-hmac-sha2
//! [recovery key]: https://spec.matrix.org/v1.16/client-server-api/#recovery-key

use aes::Aes256;
use aes_gcm::aead::{OsRng, rand_core::RngCore};
use ctr::cipher::{KeyIvInit, StreamCipher};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};
use zeroize::Zeroizing;

use crate::{
    base64,
    recovery_key::{self, RecoveryKeyError},
};

/// The algorithm name in a key description's `algorithm` field.
pub const SECRET_STORAGE_ALGORITHM: &str = "m.secret_storage.v1.aes-hmac-sha2";
/// The passphrase algorithm in a key description's `passphrase.algorithm`.
pub const PASSPHRASE_ALGORITHM: &str = "m.pbkdf2";

/// AES-256-CTR with a 64-bit counter, as WebCrypto's `AES-CTR` (what
/// matrix-js-sdk uses); the IV's bit 63 is cleared so the counter cannot wrap.
type Aes256Ctr = ctr::Ctr64BE<Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// The PBKDF2 rounds a new passphrase key gets (matrix-js-sdk's choice).
const DEFAULT_ITERATIONS: u32 = 500_000;
/// Refuse descriptions asking for more rounds than this: a hostile or broken
/// description must not hang the client for hours.
const MAX_ITERATIONS: u32 = 10_000_000;
/// Length of the random salt of a new passphrase key, in characters.
const SALT_LENGTH: usize = 32;

/// Why a key could not be made, checked, or a secret read.
///
/// No variant carries key material or secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretStorageError {
    /// The recovery key was mistyped or is not a recovery key.
    #[error(transparent)]
    RecoveryKey(#[from] RecoveryKeyError),
    /// The key is not the one the description or entry was made with (or
    /// the entry was altered): the MAC does not match.
    #[error("wrong secret storage key")]
    WrongKey,
    /// An `iv`, `ciphertext` or `mac` is not base64 or has the wrong length.
    #[error("malformed secret storage entry")]
    Malformed,
    /// The passphrase parameters are unusable (zero or too many rounds,
    /// a bit length other than 256).
    #[error("unsupported passphrase parameters")]
    Passphrase,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Randomness,
}

/// The `passphrase` object of a key description: how to derive the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassphraseParams {
    /// The PBKDF2 salt, as stored (a string, used as its UTF-8 bytes).
    pub salt: String,
    /// The PBKDF2-SHA-512 rounds.
    pub iterations: u32,
}

impl PassphraseParams {
    /// Fresh parameters for a new key: a random alphanumeric salt and the
    /// default number of rounds.
    ///
    /// # Errors
    ///
    /// [`SecretStorageError::Randomness`].
    pub fn generate() -> Result<Self, SecretStorageError> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut random = [0u8; SALT_LENGTH];
        fill_random(&mut random)?;
        // 256 is a multiple of 64, not of 62: the slight bias is harmless
        // for a salt, which only has to be unique.
        let salt = random
            .iter()
            .map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]))
            .collect();
        Ok(Self {
            salt,
            iterations: DEFAULT_ITERATIONS,
        })
    }
}

/// An encrypted secret (or a key check): three base64 strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedSecret {
    /// The 16-byte AES-CTR IV.
    pub iv: String,
    /// The AES-256-CTR ciphertext of the secret.
    pub ciphertext: String,
    /// HMAC-SHA-256 of the ciphertext.
    pub mac: String,
}

/// A 32-byte secret storage key. Zeroized on drop; `Debug` is redacted.
pub struct SecretStorageKey(Zeroizing<[u8; 32]>);

impl SecretStorageKey {
    /// A fresh random key.
    ///
    /// # Errors
    ///
    /// [`SecretStorageError::Randomness`].
    pub fn generate() -> Result<Self, SecretStorageError> {
        let mut key = Zeroizing::new([0; 32]);
        fill_random(key.as_mut_slice())?;
        Ok(Self(key))
    }

    /// The key a recovery key encodes (whitespace ignored).
    ///
    /// # Errors
    ///
    /// [`SecretStorageError::RecoveryKey`] naming what is wrong with it.
    pub fn from_recovery_key(recovery_key: &str) -> Result<Self, SecretStorageError> {
        Ok(Self(recovery_key::decode(recovery_key)?))
    }

    /// The key as a recovery key, to show the user once.
    pub fn to_recovery_key(&self) -> Zeroizing<String> {
        recovery_key::encode(&self.0)
    }

    /// The key PBKDF2-SHA-512 derives from `passphrase` with `params`.
    ///
    /// # Errors
    ///
    /// [`SecretStorageError::Passphrase`] for zero rounds or more than ten
    /// million.
    pub fn from_passphrase(
        passphrase: &str,
        params: &PassphraseParams,
    ) -> Result<Self, SecretStorageError> {
        if params.iterations == 0 || params.iterations > MAX_ITERATIONS {
            return Err(SecretStorageError::Passphrase);
        }
        let mut key = Zeroizing::new([0; 32]);
        pbkdf2::pbkdf2_hmac::<Sha512>(
            passphrase.as_bytes(),
            params.salt.as_bytes(),
            params.iterations,
            key.as_mut_slice(),
        );
        Ok(Self(key))
    }

    /// The `iv` and `mac` a key description carries: 32 zero bytes
    /// encrypted under the empty name.
    ///
    /// # Errors
    ///
    /// [`SecretStorageError::Randomness`].
    pub fn key_check(&self) -> Result<(String, String), SecretStorageError> {
        let check = self.encrypt("", &[0; 32])?;
        Ok((check.iv, check.mac))
    }

    /// Whether this is the key a description's `iv` and `mac` were made
    /// with.
    ///
    /// # Errors
    ///
    /// [`SecretStorageError::WrongKey`] if not, [`SecretStorageError::Malformed`]
    /// if `iv` or `mac` do not decode.
    pub fn check(&self, iv: &str, mac: &str) -> Result<(), SecretStorageError> {
        let iv = decode_iv(iv)?;
        let mac = base64::decode(mac).map_err(|_| SecretStorageError::Malformed)?;
        let keys = self.derive("")?;
        let mut ciphertext = [0u8; 32];
        keys.apply_keystream(&iv, &mut ciphertext);
        keys.verify_mac(&ciphertext, &mac)
    }

    /// Encrypts `secret` for storage under the name `name` (the account
    /// data event type, such as `m.cross_signing.master`), with a fresh IV.
    ///
    /// # Errors
    ///
    /// [`SecretStorageError::Randomness`].
    pub fn encrypt(
        &self,
        name: &str,
        secret: &[u8],
    ) -> Result<EncryptedSecret, SecretStorageError> {
        let mut iv = [0u8; 16];
        fill_random(&mut iv)?;
        iv[8] &= 0x7f;
        let keys = self.derive(name)?;
        let mut ciphertext = secret.to_vec();
        keys.apply_keystream(&iv, &mut ciphertext);
        let mac = keys.mac(&ciphertext).finalize().into_bytes();
        Ok(EncryptedSecret {
            iv: base64::encode(&iv),
            ciphertext: base64::encode(&ciphertext),
            mac: base64::encode(&mac),
        })
    }

    /// Decrypts the secret stored under `name`, after checking its MAC.
    ///
    /// # Errors
    ///
    /// [`SecretStorageError::Malformed`] if a field does not decode,
    /// [`SecretStorageError::WrongKey`] if the MAC does not match (another
    /// key, another name, or an altered entry).
    pub fn decrypt(
        &self,
        name: &str,
        secret: &EncryptedSecret,
    ) -> Result<Zeroizing<Vec<u8>>, SecretStorageError> {
        let iv = decode_iv(&secret.iv)?;
        let ciphertext =
            base64::decode(&secret.ciphertext).map_err(|_| SecretStorageError::Malformed)?;
        let mac = base64::decode(&secret.mac).map_err(|_| SecretStorageError::Malformed)?;
        let keys = self.derive(name)?;
        keys.verify_mac(&ciphertext, &mac)?;
        let mut plaintext = Zeroizing::new(ciphertext);
        keys.apply_keystream(&iv, &mut plaintext);
        Ok(plaintext)
    }

    /// The AES and HMAC keys for one secret name.
    ///
    /// Neither step can fail (64 bytes is far below HKDF-SHA-256's output
    /// limit, HMAC takes keys of any length); an error is reported as
    /// [`SecretStorageError::Malformed`] rather than a panic.
    fn derive(&self, name: &str) -> Result<SecretKeys, SecretStorageError> {
        let hkdf = Hkdf::<Sha256>::new(Some(&[0; 32]), self.0.as_slice());
        let mut okm = Zeroizing::new([0u8; 64]);
        hkdf.expand(name.as_bytes(), okm.as_mut_slice())
            .map_err(|_| SecretStorageError::Malformed)?;
        let mut aes = Zeroizing::new([0u8; 32]);
        aes.copy_from_slice(&okm[..32]);
        let mac = <HmacSha256 as Mac>::new_from_slice(&okm[32..])
            .map_err(|_| SecretStorageError::Malformed)?;
        Ok(SecretKeys { aes, mac })
    }
}

impl std::fmt::Debug for SecretStorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretStorageKey([redacted])")
    }
}

/// The per-name keys HKDF expands a [`SecretStorageKey`] into.
struct SecretKeys {
    aes: Zeroizing<[u8; 32]>,
    /// Keyed, not yet fed; cloned for each use.
    mac: HmacSha256,
}

impl SecretKeys {
    fn apply_keystream(&self, iv: &[u8; 16], data: &mut [u8]) {
        Aes256Ctr::new(self.aes.as_ref().into(), iv.into()).apply_keystream(data);
    }

    fn mac(&self, ciphertext: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(ciphertext);
        mac
    }

    /// Constant-time comparison (`Mac::verify_slice`).
    fn verify_mac(&self, ciphertext: &[u8], expected: &[u8]) -> Result<(), SecretStorageError> {
        self.mac(ciphertext)
            .verify_slice(expected)
            .map_err(|_| SecretStorageError::WrongKey)
    }
}

fn decode_iv(iv: &str) -> Result<[u8; 16], SecretStorageError> {
    base64::decode(iv)
        .ok()
        .and_then(|bytes| <[u8; 16]>::try_from(bytes.as_slice()).ok())
        .ok_or(SecretStorageError::Malformed)
}

fn fill_random(bytes: &mut [u8]) -> Result<(), SecretStorageError> {
    OsRng
        .try_fill_bytes(bytes)
        .map_err(|_| SecretStorageError::Randomness)
}

#[cfg(test)]
mod tests;
