//! The homeserver's ed25519 signing key.
//!
//! A [`SigningKey`] is a 32-byte ed25519 seed (the RFC 8032 private key) plus a
//! key version, which together give the key id `ed25519:<version>` that
//! appears in `signatures` objects and in `GET /_matrix/key/v2/server`
//! ([spec]). The seed is the only persisted form: it is what
//! [`SigningKey::from_seed`] reads and [`SigningKey::to_seed_base64`] writes.
//!
//! [spec]: https://spec.matrix.org/v1.16/server-server-api/#retrieving-server-keys

use std::fmt;

use ruma::{
    OwnedServerSigningKeyId, ServerSigningKeyId, ServerSigningKeyVersion, SigningKeyAlgorithm,
    SigningKeyId, serde::Base64, signatures::Ed25519KeyPair,
};
use zeroize::Zeroizing;

use crate::base64;

/// Length of an ed25519 seed in bytes.
pub const SEED_LENGTH: usize = 32;

/// Errors from loading or creating a [`SigningKey`].
///
/// No variant carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The seed is not valid base64.
    #[error("signing key seed is not valid base64")]
    SeedNotBase64,

    /// The seed has the wrong number of bytes.
    #[error("signing key seed must be {expected} bytes, got {found}")]
    SeedLength {
        /// The required length, [`SEED_LENGTH`].
        expected: usize,
        /// The length that was given.
        found: usize,
    },

    /// The key version is not a valid server signing key version
    /// (non-empty, alphanumeric or `_`).
    #[error("invalid signing key version {version:?}: must be non-empty, alphanumeric or `_`")]
    InvalidVersion {
        /// The rejected version.
        version: String,
    },

    /// The PKCS#8 document ruma generated does not have the layout
    /// [`SigningKey::generate`] expects (a ruma upgrade changed it).
    #[error("generated ed25519 key document has an unexpected layout")]
    UnexpectedGeneratedDocument,

    /// ruma rejected the key material.
    #[error("ed25519 key could not be loaded")]
    Ed25519(#[source] ruma::signatures::Ed25519KeyPairParseError),
}

/// A homeserver's ed25519 signing key with its key id.
///
/// Its `Debug` output shows the key id and public key and prints the seed as
/// `[redacted]`; it has no `Display`. The seed copy it keeps is zeroized on
/// drop.
pub struct SigningKey {
    key_id: OwnedServerSigningKeyId,
    key_pair: Ed25519KeyPair,
    seed: Zeroizing<[u8; SEED_LENGTH]>,
}

impl SigningKey {
    /// Loads a key from its 32-byte seed and version (the part after
    /// `ed25519:` in the key id).
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidVersion`] if `version` is not a valid key version.
    pub fn from_seed(seed: &[u8; SEED_LENGTH], version: &str) -> Result<Self, KeyError> {
        let version = <&ServerSigningKeyVersion>::try_from(version).map_err(|_| {
            KeyError::InvalidVersion {
                version: version.to_owned(),
            }
        })?;
        let key_id = SigningKeyId::from_parts(SigningKeyAlgorithm::Ed25519, version);

        // ruma loads ed25519 keys from PKCS#8 only; wrap the seed in the
        // fixed v1 (RFC 8410) envelope rather than pull in a DER encoder.
        let mut document = Zeroizing::new(Vec::with_capacity(PKCS8_V1_PREFIX.len() + SEED_LENGTH));
        document.extend_from_slice(&PKCS8_V1_PREFIX);
        document.extend_from_slice(seed);
        let key_pair =
            Ed25519KeyPair::from_der(&document, version.to_string()).map_err(KeyError::Ed25519)?;

        Ok(Self {
            key_id,
            key_pair,
            seed: Zeroizing::new(*seed),
        })
    }

    /// Loads a key from its seed in unpadded base64, as stored in Myelin's
    /// key file and as published in the spec's test vectors.
    ///
    /// # Errors
    ///
    /// [`KeyError::SeedNotBase64`] or [`KeyError::SeedLength`] for a malformed
    /// seed, [`KeyError::InvalidVersion`] for a malformed version.
    pub fn from_seed_base64(seed: &str, version: &str) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(base64::decode(seed).map_err(|_| KeyError::SeedNotBase64)?);
        let seed: &[u8; SEED_LENGTH] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| KeyError::SeedLength {
                    expected: SEED_LENGTH,
                    found: bytes.len(),
                })?;
        Self::from_seed(seed, version)
    }

    /// Generates a new key from the operating system's random number generator.
    ///
    /// This is the one function in the crate that reaches outside the process
    /// state, for entropy; everything else is deterministic.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidVersion`] if `version` is not a valid key version.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails (inside ruma).
    pub fn generate(version: &str) -> Result<Self, KeyError> {
        // Validate first so a bad version does not consume entropy for nothing.
        <&ServerSigningKeyVersion>::try_from(version).map_err(|_| KeyError::InvalidVersion {
            version: version.to_owned(),
        })?;
        let document = Ed25519KeyPair::generate();
        // ruma returns a PKCS#8 v2 document whose first bytes are the same
        // envelope as v1 up to the seed, which follows the `04 20` octet
        // string header at offset 16.
        let seed: &[u8; SEED_LENGTH] = document
            .get(PKCS8_SEED_HEADER_AT..PKCS8_V1_PREFIX.len())
            .filter(|header| *header == PKCS8_SEED_HEADER)
            .and_then(|_| document.get(PKCS8_V1_PREFIX.len()..PKCS8_V1_PREFIX.len() + SEED_LENGTH))
            .and_then(|slice| slice.try_into().ok())
            .ok_or(KeyError::UnexpectedGeneratedDocument)?;
        Self::from_seed(seed, version)
    }

    /// The key id, `ed25519:<version>`.
    pub fn key_id(&self) -> &ServerSigningKeyId {
        &self.key_id
    }

    /// The key version, the part of the key id after `ed25519:`.
    pub fn version(&self) -> &ServerSigningKeyVersion {
        self.key_id.key_name()
    }

    /// The public (verify) key, which serialises as unpadded base64.
    pub fn public_key(&self) -> Base64 {
        Base64::new(self.key_pair.public_key().to_vec())
    }

    /// The seed in unpadded base64, for persisting the key. Zeroized on drop.
    pub fn to_seed_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::encode(self.seed.as_slice()))
    }

    /// The ruma key pair, for the signing functions in this crate. Not public:
    /// callers sign canonical JSON through [`crate::sign_json`] and
    /// [`crate::hash_and_sign_event`], never raw bytes.
    pub(crate) fn key_pair(&self) -> &Ed25519KeyPair {
        &self.key_pair
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id.as_str())
            .field("public_key", &self.public_key().encode())
            .field("seed", &format_args!("[redacted]"))
            .finish()
    }
}

/// DER prefix of a PKCS#8 v1 ed25519 private key (RFC 8410 §7): SEQUENCE,
/// version 0, AlgorithmIdentifier id-Ed25519 (1.3.101.112), then an OCTET
/// STRING wrapping the 32-byte CurvePrivateKey OCTET STRING.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Where the two OCTET STRING headers before the seed start, in both PKCS#8 v1
/// and v2 ed25519 documents, and what they are.
const PKCS8_SEED_HEADER_AT: usize = 12;
const PKCS8_SEED_HEADER: [u8; 4] = [0x04, 0x22, 0x04, 0x20];

#[cfg(test)]
mod tests;
