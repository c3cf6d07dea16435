//! Access tokens: random bearer secrets, stored only as their SHA-256.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::storage::TokenHash;

/// Prefix that lets secret scanners recognise a leaked Myelin token.
const PREFIX: &str = "myl_";

/// An access token as handed to a client. Its `Debug` is redacted and its
/// memory is wiped on drop.
pub struct AccessToken(Zeroizing<String>);

impl AccessToken {
    /// A fresh token carrying 256 bits from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *bytes);
        Self(Zeroizing::new(format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(*bytes)
        )))
    }

    /// Wraps a token presented by a client.
    pub fn from_presented(token: &str) -> Self {
        Self(Zeroizing::new(token.to_owned()))
    }

    /// The token, to put in a response body.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The lookup key stored in place of the token.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

/// Compares two token hashes without leaking, through timing, where they differ.
pub fn hashes_match(a: &TokenHash, b: &TokenHash) -> bool {
    a.0.ct_eq(&b.0).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let a = AccessToken::generate();
        let b = AccessToken::generate();
        assert_ne!(a.expose(), b.expose());
        // 32 bytes in unpadded base64 are 43 characters.
        assert_eq!(a.expose().len(), PREFIX.len() + 43);
        assert!(hashes_match(
            &a.hash(),
            &AccessToken::from_presented(a.expose()).hash()
        ));
        assert!(!hashes_match(&a.hash(), &b.hash()));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = AccessToken::generate();
        assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
        assert!(!format!("{:?}", token.hash()).contains(&token.expose()[4..10]));
    }
}
