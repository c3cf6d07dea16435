//! Password hashing with argon2id, on a small pool of dedicated threads.

use std::sync::{Arc, OnceLock};

use argon2::{
    Argon2, PasswordHasher as _, PasswordVerifier,
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

/// argon2id at OWASP's 12 MiB, 3 passes, 1 lane: as strong as the crate's
/// 19 MiB, 2 passes default, with a smaller resident cost per worker.
const MEMORY_KIB: u32 = 12 * 1024;
const PASSES: u32 = 3;

/// Most hashing threads, whatever the core count: each keeps its working
/// memory, so this bounds what hashing can hold.
const MAX_WORKERS: usize = 2;

type Job = Box<dyn FnOnce(&Argon2<'static>) + Send>;

/// Hashes and verifies passwords on a few dedicated threads.
///
/// Argon2 is memory-hard by design: each hash touches `MEMORY_KIB` of RAM.
/// Run on tokio's blocking pool, every one of up to 512 threads would keep
/// its own allocator arena of that size, so a burst of logins could grow the
/// server by gigabytes. A small fixed pool bounds it; excess work queues.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl PasswordHasher {
    /// Starts the worker threads (one per core, at most [`MAX_WORKERS`]).
    ///
    /// # Errors
    /// [`ServiceError::Internal`] if a thread cannot be spawned.
    pub fn start() -> Result<Self, ServiceError> {
        let params = argon2::Params::new(MEMORY_KIB, PASSES, 1, None)
            .map_err(|e| ServiceError::Internal(format!("argon2 parameters: {e}")))?;
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for index in 0..workers {
            let queue = queue.clone();
            let params = params.clone();
            std::thread::Builder::new()
                .name(format!("password-{index}"))
                .spawn(move || {
                    let argon2 =
                        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
                    loop {
                        // The lock is held only while taking a job, never while hashing.
                        let job = queue
                            .lock()
                            .map_err(|_| ())
                            .and_then(|q| q.recv().map_err(|_| ()));
                        match job {
                            Ok(job) => job(&argon2),
                            Err(()) => return,
                        }
                    }
                })
                .map_err(|e| ServiceError::Internal(format!("password worker: {e}")))?;
        }
        Ok(Self { jobs })
    }

    /// Hashes a password and returns the PHC string.
    ///
    /// # Errors
    /// [`ServiceError::Internal`] if the hasher fails.
    pub async fn hash(&self, password: &Password) -> Result<String, ServiceError> {
        let password = password.clone();
        self.run(move |argon2| {
            let salt = SaltString::generate(&mut OsRng);
            argon2
                .hash_password(password.bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| ServiceError::Internal(format!("argon2 hash: {e}")))
        })
        .await
    }

    /// Checks a password against a stored PHC string (whatever parameters it
    /// was made with), in constant time.
    ///
    /// With `None` (no such account) it checks against a decoy hash made with
    /// the same parameters, so that the answer takes as long as for a real
    /// account and does not reveal which user ids exist.
    ///
    /// # Errors
    /// [`ServiceError::Internal`] if the stored hash is unreadable.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<String>,
    ) -> Result<bool, ServiceError> {
        let password = password.clone();
        self.run(move |argon2| {
            let is_real = stored.is_some();
            let stored = match stored {
                Some(stored) => stored,
                None => decoy_hash(argon2).to_owned(),
            };
            let parsed = PasswordHash::new(&stored)
                .map_err(|e| ServiceError::Internal(format!("stored password hash: {e}")))?;
            let matches = argon2.verify_password(password.bytes(), &parsed).is_ok();
            Ok(is_real && matches)
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |argon2| {
            let _ = reply.send(work(argon2));
        });
        self.jobs
            .send(job)
            .map_err(|_| ServiceError::Internal("password workers have stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| ServiceError::Internal("a password worker failed".to_owned()))?
    }
}

fn decoy_hash(argon2: &Argon2<'_>) -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        argon2
            .hash_password(b"decoy password for unknown users", &salt)
            .map(|hash| hash.to_string())
            // Valid parameters and a fresh salt always hash; a failure here is a broken build.
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = PasswordHasher::start().unwrap();
        let password = Password::new("correct horse".to_owned());
        let stored = hasher.hash(&password).await.unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=12288,t=3,p=1$"),
            "{stored}"
        );
        assert!(
            hasher
                .verify(&password, Some(stored.clone()))
                .await
                .unwrap()
        );
        let wrong = Password::new("wrong".to_owned());
        assert!(!hasher.verify(&wrong, Some(stored)).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_made_with_other_parameters_still_verify() {
        let hasher = PasswordHasher::start().unwrap();
        let password = Password::new("correct horse".to_owned());
        let salt = SaltString::generate(&mut OsRng);
        let old = Argon2::default()
            .hash_password(password.bytes(), &salt)
            .unwrap()
            .to_string();
        assert!(old.contains("m=19456"));
        assert!(hasher.verify(&password, Some(old)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_account_never_verifies() {
        let hasher = PasswordHasher::start().unwrap();
        let password = Password::new("decoy password for unknown users".to_owned());
        assert!(!hasher.verify(&password, None).await.unwrap());
    }
}
