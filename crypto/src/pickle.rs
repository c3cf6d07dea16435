//! Encrypted pickles: how Olm and Megolm state is persisted.
//!
//! Every account and session type in [`crate::olm`] and [`crate::megolm`]
//! pickles to a string that is already encrypted and authenticated with a
//! [`PickleKey`] (vodozemac's pickle format: AES-256-CBC plus a truncated
//! HMAC-SHA-256, keys derived from the pickle key). A store therefore never
//! holds plaintext key material, and a tampered pickle fails to load instead
//! of loading altered state.

use std::fmt;

use zeroize::Zeroizing;

/// Length of a pickle key in bytes.
pub const PICKLE_KEY_LENGTH: usize = 32;

/// The 32-byte secret that encrypts pickles.
///
/// Its `Debug` prints `[redacted]`; it has no `Display`; it is zeroized on
/// drop. Where it comes from (a passphrase through argon2, the platform
/// keychain) is the store's decision, not this crate's.
#[derive(Clone)]
pub struct PickleKey(Zeroizing<[u8; PICKLE_KEY_LENGTH]>);

impl PickleKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; PICKLE_KEY_LENGTH]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; PICKLE_KEY_LENGTH] {
        &self.0
    }
}

impl fmt::Debug for PickleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PickleKey([redacted])")
    }
}

/// A pickle did not load: wrong key, tampering, truncation, or a pickle of
/// another type.
///
/// It carries no detail on purpose: which check failed says nothing useful to
/// a caller and something to an attacker probing a store.
#[derive(Debug, thiserror::Error)]
#[error("pickle could not be decrypted or decoded")]
pub struct PickleError;

impl From<vodozemac::PickleError> for PickleError {
    fn from(_: vodozemac::PickleError) -> Self {
        Self
    }
}

#[cfg(test)]
mod tests {
    use super::PickleKey;

    #[test]
    fn debug_is_redacted() {
        let key = PickleKey::from_bytes([7; 32]);
        assert_eq!(format!("{key:?}"), "PickleKey([redacted])");
    }
}
