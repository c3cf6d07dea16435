//! Password hashing with argon2id, on a small pool of dedicated threads.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::{Output, ParamsString, PasswordHash, SaltString, rand_core::OsRng},
};
use subtle::ConstantTimeEq;
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

/// argon2id at OWASP's 7 MiB, 5 passes, 1 lane: as strong as the crate's
/// 19 MiB, 2 passes default, at a third of the memory each worker keeps.
const MEMORY_KIB: u32 = 7 * 1024;
const PASSES: u32 = 5;
const OUTPUT_BYTES: usize = 32;

/// Most hashing threads, whatever the core count: each holds its working
/// memory while there is work, so this bounds what hashing can hold. One: a
/// second thread held another 7 MiB (the load tool's RSS after a run, median
/// of three: 42.7 MiB with two, 36.0 with one, when workers kept their memory
/// for good) and, on two busy cores, registered no faster (75 and 83
/// users/s); on idle cores two would hash up to twice as fast, which
/// registration bursts are not worth that memory for.
const MAX_WORKERS: usize = 1;

/// Capacity reserved for a worker's block memory, above glibc's largest
/// dynamic mmap threshold (32 MiB on 64-bit): an allocation that big is
/// always a mapping of its own, returned to the system the moment it is
/// freed. A 7 MiB buffer would instead end up in the thread's arena and stay
/// resident for good (glibc raises its mmap threshold to the size of a
/// freed mapping); only the pages argon2 touches are ever resident.
const BLOCK_RESERVE_BYTES: usize = 33 << 20;

/// One hashing thread's state: the parameters and, while there is work,
/// the block memory every hash reuses. The memory is freed whenever the
/// queue runs dry, so an idle server does not keep argon2's 7 MiB (a third
/// of its resident memory) between registrations, and a burst allocates it
/// once.
struct Worker {
    params: Params,
    blocks: Vec<Block>,
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// Hashes and verifies passwords on a few dedicated threads.
///
/// Argon2 is memory-hard by design: each hash touches `MEMORY_KIB` of RAM.
/// A small fixed pool, each worker with one reused buffer, bounds what
/// hashing can hold; excess work queues, up to a capacity past which it is
/// refused before it is queued.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Jobs queued or running.
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

/// What a refused caller is told to wait: about one hash per queued job
/// ahead of it is a guess, and clients back off further on a repeat.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One place in the queue, given back when the job is done or dropped.
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordHasher {
    /// Starts the worker threads (one per core, at most [`MAX_WORKERS`]);
    /// at most `capacity` jobs wait or run at once.
    ///
    /// # Errors
    /// [`ServiceError::Internal`] if a thread cannot be spawned.
    pub fn start(capacity: usize) -> Result<Self, ServiceError> {
        let params = Params::new(MEMORY_KIB, PASSES, 1, Some(OUTPUT_BYTES))
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
                    let mut worker = Worker {
                        blocks: Vec::new(),
                        params,
                    };
                    // The lock is held only while taking a job, never while hashing.
                    let next = |wait: bool| {
                        let queue = queue.lock().ok()?;
                        if wait {
                            queue.recv().ok()
                        } else {
                            queue.try_recv().ok()
                        }
                    };
                    loop {
                        let job = match next(false) {
                            Some(job) => job,
                            None => {
                                worker.blocks = Vec::new();
                                match next(true) {
                                    Some(job) => job,
                                    None => return,
                                }
                            }
                        };
                        job(&mut worker);
                    }
                })
                .map_err(|e| ServiceError::Internal(format!("password worker: {e}")))?;
        }
        Ok(Self {
            jobs,
            queued: Arc::new(AtomicUsize::new(0)),
            capacity,
        })
    }

    /// Hashes a password and returns the PHC string.
    ///
    /// # Errors
    /// [`ServiceError::Internal`] if the hasher fails.
    pub async fn hash(&self, password: &Password) -> Result<String, ServiceError> {
        let password = password.clone();
        self.run(move |worker| worker.hash(password.bytes())).await
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
        self.run(move |worker| {
            let is_real = stored.is_some();
            let stored = match stored {
                Some(stored) => stored,
                None => decoy_hash(worker)?,
            };
            Ok(worker.verify(password.bytes(), &stored)? && is_real)
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Worker) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        // Counted before anything is queued: a flood of logins is refused
        // at the door instead of queueing work and memory for each.
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(ServiceError::LimitExceeded {
                retry_after: RETRY_AFTER,
            });
        }
        let place = Place(self.queued.clone());
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |worker| {
            let result = work(worker);
            drop(place);
            let _ = reply.send(result);
        });
        self.jobs
            .send(job)
            .map_err(|_| ServiceError::Internal("password workers have stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| ServiceError::Internal("a password worker failed".to_owned()))?
    }
}

impl Worker {
    /// The block memory for the worker's parameters, allocated on first use
    /// after the queue ran dry (see [`BLOCK_RESERVE_BYTES`]).
    fn blocks(&mut self) -> &mut [Block] {
        let count = self.params.block_count();
        if self.blocks.len() < count {
            let reserve = count.max(BLOCK_RESERVE_BYTES / std::mem::size_of::<Block>());
            let mut blocks = Vec::with_capacity(reserve);
            blocks.resize(count, Block::new());
            self.blocks = blocks;
        }
        &mut self.blocks[..count]
    }

    fn hash(&mut self, password: &[u8]) -> Result<String, ServiceError> {
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(internal)?;
        let mut output = [0u8; OUTPUT_BYTES];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
            .hash_password_into_with_memory(password, salt_bytes, &mut output, self.blocks())
            .map_err(internal)?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(internal)?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&output).map_err(internal)?),
        };
        Ok(phc.to_string())
    }

    fn verify(&mut self, password: &[u8], stored: &str) -> Result<bool, ServiceError> {
        let parsed = PasswordHash::new(stored).map_err(internal)?;
        let algorithm = Algorithm::try_from(parsed.algorithm).map_err(internal)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(internal)?;
        let params = Params::try_from(&parsed).map_err(internal)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Err(ServiceError::Internal(
                "stored password hash lacks salt or hash".to_owned(),
            ));
        };
        let mut salt_bytes = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_bytes).map_err(internal)?;
        let mut output = vec![0u8; expected.len()];
        let argon2 = Argon2::new(algorithm, version.unwrap_or(Version::V0x13), params.clone());
        // Hashes made with more memory than the worker keeps (older
        // parameters) get a buffer of their own.
        match self.blocks().get_mut(..params.block_count()) {
            Some(blocks) => {
                argon2.hash_password_into_with_memory(password, salt, &mut output, blocks)
            }
            None => argon2.hash_password_into(password, salt, &mut output),
        }
        .map_err(internal)?;
        Ok(output.ct_eq(expected.as_bytes()).into())
    }
}

fn internal(error: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("argon2: {error}"))
}

fn decoy_hash(worker: &mut Worker) -> Result<String, ServiceError> {
    static DECOY: OnceLock<String> = OnceLock::new();
    if let Some(decoy) = DECOY.get() {
        return Ok(decoy.clone());
    }
    let decoy = worker.hash(b"decoy password for unknown users")?;
    Ok(DECOY.get_or_init(|| decoy).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = PasswordHasher::start(8).unwrap();
        let password = Password::new("correct horse".to_owned());
        let stored = hasher.hash(&password).await.unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"),
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
        let hasher = PasswordHasher::start(8).unwrap();
        let password = Password::new("correct horse".to_owned());
        let salt = SaltString::generate(&mut OsRng);
        let old =
            argon2::PasswordHasher::hash_password(&Argon2::default(), password.bytes(), &salt)
                .unwrap()
                .to_string();
        assert!(old.contains("m=19456"));
        assert!(hasher.verify(&password, Some(old)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_account_never_verifies() {
        let hasher = PasswordHasher::start(8).unwrap();
        let password = Password::new("decoy password for unknown users".to_owned());
        assert!(!hasher.verify(&password, None).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_before_queueing() {
        let hasher = PasswordHasher::start(1).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = hasher.clone();
        let first = tokio::spawn(async move {
            busy.run(move |_| {
                wait.recv().ok();
                Ok(())
            })
            .await
        });
        // The first job holds the one place until released.
        while hasher.queued.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        let refused = hasher.run(|_| Ok(())).await;
        assert!(matches!(refused, Err(ServiceError::LimitExceeded { .. })));
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        // The place is given back once the job is done.
        hasher.run(|_| Ok(())).await.unwrap();
        assert_eq!(hasher.queued.load(Ordering::Acquire), 0);
    }
}
