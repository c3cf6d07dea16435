//! Password hashing with argon2id, off the async executor.

use std::sync::{Arc, OnceLock};

use argon2::{
    Argon2, PasswordHasher, PasswordVerifier,
    password_hash::{PasswordHash, SaltString, rand_core::OsRng},
};
use zeroize::Zeroizing;

use super::ServiceError;

/// A password as received from a client: redacted in `Debug`, wiped on drop.
#[derive(Clone)]
pub struct Password(Arc<Zeroizing<String>>);

impl Password {
    /// Wraps a password.
    pub fn new(password: String) -> Self {
        Self(Arc::new(Zeroizing::new(password)))
    }

    /// Its length in characters, for the password policy.
    pub fn char_count(&self) -> usize {
        self.0.chars().count()
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// Hashes a password with argon2id (the crate's defaults follow OWASP's
/// recommended 19 MiB, 2 passes) and returns the PHC string.
///
/// # Errors
/// [`ServiceError::Internal`] if the hasher fails.
pub async fn hash(password: &Password) -> Result<String, ServiceError> {
    let password = password.clone();
    blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| ServiceError::Internal(format!("argon2 hash: {e}")))
    })
    .await
}

/// Checks a password against a stored PHC string, in constant time.
///
/// With `None` (no such account) it checks against a throwaway hash, so that
/// the answer takes as long as for a real account and does not reveal which
/// user ids exist.
///
/// # Errors
/// [`ServiceError::Internal`] if the stored hash is unreadable.
pub async fn verify(password: &Password, stored: Option<String>) -> Result<bool, ServiceError> {
    let password = password.clone();
    blocking(move || {
        let is_real = stored.is_some();
        let stored = match stored {
            Some(stored) => stored,
            None => decoy_hash().to_owned(),
        };
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| ServiceError::Internal(format!("stored password hash: {e}")))?;
        let matches = Argon2::default()
            .verify_password(password.bytes(), &parsed)
            .is_ok();
        Ok(is_real && matches)
    })
    .await
}

fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"decoy password for unknown users", &salt)
            .map(|hash| hash.to_string())
            // The default parameters and a fresh salt always hash; a failure here is a broken build.
            .unwrap_or_default()
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServiceError::Internal(format!("password worker: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let password = Password::new("correct horse".to_owned());
        let stored = hash(&password).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify(&password, Some(stored.clone())).await.unwrap());
        assert!(
            !verify(&Password::new("wrong".to_owned()), Some(stored))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn unknown_account_never_verifies() {
        let password = Password::new("decoy password for unknown users".to_owned());
        assert!(!verify(&password, None).await.unwrap());
    }
}
