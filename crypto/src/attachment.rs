//! Encrypted attachments, as the spec's "Sending encrypted attachments" defines.
//!
//! A file is encrypted with AES-256-CTR under a fresh random key and a
//! 128-bit IV whose low 64 bits (the counter half) are zero; the SHA-256 of
//! the *ciphertext* travels in the event's `file` object next to the key (a
//! JWK) and the IV. The media server only ever sees ciphertext.
//!
//! Two ways to use it:
//!
//! - Whole buffers: [`encrypt`] and [`decrypt`]. [`decrypt`] checks the hash
//!   before it decrypts anything, so it never returns unverified plaintext.
//! - Streaming: [`AttachmentEncryptor`] and [`AttachmentDecryptor`] work
//!   chunk by chunk in place, so a large file needs little memory. CTR mode
//!   has no authentication of its own: **plaintext chunks handed out by
//!   [`AttachmentDecryptor::decrypt_chunk`] must not be trusted (shown,
//!   executed, parsed) until [`AttachmentDecryptor::finish`] returns `Ok`.**
//!   Write them to a temporary place and discard them if it fails.
//!
//! Counter arithmetic follows WebCrypto's `AES-CTR` with a 64-bit counter
//! (what matrix-js-sdk uses): only the low 64 bits of the IV count, and
//! wrap. Decryption accepts IVs whose counter half is not zero (older clients
//! sent fully random IVs); encryption always zeroes it.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#sending-encrypted-attachments

use aes::Aes256;
use aes_gcm::aead::{OsRng, rand_core::RngCore};
use ctr::cipher::{KeyIvInit, StreamCipher};
use ruma::serde::{
    Base64,
    base64::{Standard, UrlSafe},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// AES-256 in counter mode with a 64-bit big-endian counter, as WebCrypto's
/// `{name: "AES-CTR", length: 64}`.
type Aes256Ctr = ctr::Ctr64BE<Aes256>;

/// The only version of the attachment format this module writes or reads.
const VERSION: &str = "v2";

/// Why an attachment could not be encrypted, parsed or decrypted.
///
/// No variant carries key material or file content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Randomness,
    /// A field of the `file` object is missing or has the wrong JSON type.
    #[error("the encrypted file's `{0}` field is missing or malformed")]
    Malformed(&'static str),
    /// The `v` field names a version other than `v2`.
    #[error("unsupported encrypted attachment version")]
    UnsupportedVersion,
    /// The JWK's `kty`, `alg`, `key_ops` or `ext` is not what the spec requires.
    #[error("the encrypted file's key has an unsupported `{0}`")]
    UnsupportedKey(&'static str),
    /// A key, IV or hash decoded to the wrong number of bytes, or was not base64.
    #[error("the encrypted file's `{0}` has the wrong length or encoding")]
    BadLength(&'static str),
    /// The ciphertext's SHA-256 differs from the one in the event.
    #[error("the attachment's ciphertext does not match its hash")]
    HashMismatch,
}

/// The secrets and the hash that let a receiver verify and decrypt one file.
///
/// `Debug` is redacted: the key never reaches a log.
#[derive(Clone)]
pub struct AttachmentKeys {
    key: Zeroizing<[u8; 32]>,
    iv: [u8; 16],
    sha256: [u8; 32],
}

impl std::fmt::Debug for AttachmentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentKeys").finish_non_exhaustive()
    }
}

/// An event's `file` object: where the ciphertext is, and its [`AttachmentKeys`].
#[derive(Clone, Debug)]
pub struct EncryptedFile {
    /// The `mxc://` URI of the ciphertext.
    pub url: String,
    /// Key, IV and ciphertext hash.
    pub keys: AttachmentKeys,
}

impl EncryptedFile {
    /// The spec's `EncryptedFile` JSON object.
    pub fn to_json(&self) -> Value {
        let k = &self.keys;
        json!({
            "url": self.url,
            "key": {
                "kty": "oct",
                "key_ops": ["encrypt", "decrypt"],
                "alg": "A256CTR",
                "k": Base64::<UrlSafe, _>::new(&k.key[..]).encode(),
                "ext": true,
            },
            "iv": Base64::<Standard, _>::new(k.iv).encode(),
            "hashes": { "sha256": Base64::<Standard, _>::new(k.sha256).encode() },
            "v": VERSION,
        })
    }

    /// Parses and validates an `EncryptedFile` JSON object.
    ///
    /// # Errors
    ///
    /// A typed [`AttachmentError`] for a missing field, a version other than
    /// `v2`, a JWK that is not an extractable `oct`/`A256CTR` key allowing
    /// encrypt and decrypt, or a key, IV or hash of the wrong length.
    pub fn from_json(value: &Value) -> Result<Self, AttachmentError> {
        let field = |name: &'static str| value.get(name).ok_or(AttachmentError::Malformed(name));
        let string = |v: &Value, name: &'static str| {
            v.as_str()
                .map(str::to_owned)
                .ok_or(AttachmentError::Malformed(name))
        };

        if string(field("v")?, "v")? != VERSION {
            return Err(AttachmentError::UnsupportedVersion);
        }
        let url = string(field("url")?, "url")?;
        if !url.starts_with("mxc://") {
            return Err(AttachmentError::Malformed("url"));
        }

        let jwk = field("key")?;
        let jwk_field = |name: &'static str| jwk.get(name).ok_or(AttachmentError::Malformed(name));
        if string(jwk_field("kty")?, "kty")? != "oct" {
            return Err(AttachmentError::UnsupportedKey("kty"));
        }
        if string(jwk_field("alg")?, "alg")? != "A256CTR" {
            return Err(AttachmentError::UnsupportedKey("alg"));
        }
        let ops = jwk_field("key_ops")?
            .as_array()
            .ok_or(AttachmentError::Malformed("key_ops"))?;
        let allows = |op: &str| ops.iter().any(|o| o.as_str() == Some(op));
        if !allows("encrypt") || !allows("decrypt") {
            return Err(AttachmentError::UnsupportedKey("key_ops"));
        }
        if jwk_field("ext")?.as_bool() != Some(true) {
            return Err(AttachmentError::UnsupportedKey("ext"));
        }
        let key = decode::<UrlSafe, 32>(&string(jwk_field("k")?, "k")?, "k")?;
        let key = Zeroizing::new(key);

        let iv = decode::<Standard, 16>(&string(field("iv")?, "iv")?, "iv")?;
        let hashes = field("hashes")?;
        let sha256 = hashes
            .get("sha256")
            .ok_or(AttachmentError::Malformed("hashes.sha256"))?;
        let sha256 = decode::<Standard, 32>(&string(sha256, "hashes.sha256")?, "hashes.sha256")?;

        Ok(Self {
            url,
            keys: AttachmentKeys { key, iv, sha256 },
        })
    }
}

/// Decodes base64 in alphabet `C` into exactly `N` bytes.
fn decode<C: ruma::serde::base64::Base64Config, const N: usize>(
    text: &str,
    name: &'static str,
) -> Result<[u8; N], AttachmentError> {
    let bytes = Base64::<C>::parse(text)
        .map_err(|_| AttachmentError::BadLength(name))?
        .into_inner();
    let bytes = Zeroizing::new(bytes);
    <[u8; N]>::try_from(&bytes[..]).map_err(|_| AttachmentError::BadLength(name))
}

/// Encrypts a file chunk by chunk, hashing the ciphertext as it goes.
pub struct AttachmentEncryptor {
    key: Zeroizing<[u8; 32]>,
    iv: [u8; 16],
    cipher: Aes256Ctr,
    hasher: Sha256,
}

impl AttachmentEncryptor {
    /// A fresh random key and a random IV with a zero counter half.
    ///
    /// # Errors
    ///
    /// [`AttachmentError::Randomness`] if the system's random number generator fails.
    pub fn new() -> Result<Self, AttachmentError> {
        let mut key = Zeroizing::new([0u8; 32]);
        let mut iv = [0u8; 16];
        OsRng
            .try_fill_bytes(&mut key[..])
            .and_then(|()| OsRng.try_fill_bytes(&mut iv[..8]))
            .map_err(|_| AttachmentError::Randomness)?;
        Ok(Self::with_key_and_iv(key, iv))
    }

    fn with_key_and_iv(key: Zeroizing<[u8; 32]>, iv: [u8; 16]) -> Self {
        let cipher = Aes256Ctr::new(key.as_ref().into(), &iv.into());
        Self {
            key,
            iv,
            cipher,
            hasher: Sha256::new(),
        }
    }

    /// Encrypts the next chunk in place. Chunks may have any length.
    pub fn encrypt_chunk(&mut self, chunk: &mut [u8]) {
        self.cipher.apply_keystream(chunk);
        self.hasher.update(&*chunk);
    }

    /// The keys and hash for the event, once every chunk is encrypted.
    pub fn finish(self) -> AttachmentKeys {
        AttachmentKeys {
            key: self.key,
            iv: self.iv,
            sha256: self.hasher.finalize().into(),
        }
    }
}

/// Decrypts a file chunk by chunk and checks its hash at the end.
///
/// Plaintext from [`Self::decrypt_chunk`] is unverified until [`Self::finish`]
/// returns `Ok` (see the module documentation).
pub struct AttachmentDecryptor {
    expected: [u8; 32],
    cipher: Aes256Ctr,
    hasher: Sha256,
}

impl AttachmentDecryptor {
    /// A decryptor for the file these keys describe.
    pub fn new(keys: &AttachmentKeys) -> Self {
        Self {
            expected: keys.sha256,
            cipher: Aes256Ctr::new(keys.key.as_ref().into(), &keys.iv.into()),
            hasher: Sha256::new(),
        }
    }

    /// Hashes the next ciphertext chunk, then decrypts it in place.
    pub fn decrypt_chunk(&mut self, chunk: &mut [u8]) {
        self.hasher.update(&*chunk);
        self.cipher.apply_keystream(chunk);
    }

    /// Checks the hash of all the ciphertext seen, in constant time.
    ///
    /// # Errors
    ///
    /// [`AttachmentError::HashMismatch`] if the ciphertext was not the one
    /// the sender hashed; every plaintext chunk must then be discarded.
    pub fn finish(self) -> Result<(), AttachmentError> {
        let actual: [u8; 32] = self.hasher.finalize().into();
        if bool::from(actual.ct_eq(&self.expected)) {
            Ok(())
        } else {
            Err(AttachmentError::HashMismatch)
        }
    }
}

/// Encrypts a whole file: the ciphertext to upload and the keys for the event.
///
/// # Errors
///
/// [`AttachmentError::Randomness`] if the system's random number generator fails.
pub fn encrypt(plaintext: &[u8]) -> Result<(Vec<u8>, AttachmentKeys), AttachmentError> {
    let mut encryptor = AttachmentEncryptor::new()?;
    let mut data = plaintext.to_vec();
    encryptor.encrypt_chunk(&mut data);
    Ok((data, encryptor.finish()))
}

/// Verifies a whole downloaded file against its hash, then decrypts it.
///
/// # Errors
///
/// [`AttachmentError::HashMismatch`] if the ciphertext is not the one the
/// sender hashed; nothing is decrypted then.
pub fn decrypt(ciphertext: &[u8], keys: &AttachmentKeys) -> Result<Vec<u8>, AttachmentError> {
    let actual: [u8; 32] = Sha256::digest(ciphertext).into();
    if !bool::from(actual.ct_eq(&keys.sha256)) {
        return Err(AttachmentError::HashMismatch);
    }
    let mut data = ciphertext.to_vec();
    Aes256Ctr::new(keys.key.as_ref().into(), &keys.iv.into()).apply_keystream(&mut data);
    Ok(data)
}

#[cfg(test)]
mod tests;
