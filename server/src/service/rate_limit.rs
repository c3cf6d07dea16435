//! Token-bucket rate limits, keyed by client address or account.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::UserId;

use crate::config::{RateLimit, RateLimitConfig};

use super::ServiceError;

/// Past this many tracked keys, buckets that have refilled are dropped, so a
/// flood of distinct addresses cannot grow memory without bound.
const PRUNE_THRESHOLD: usize = 10_000;

/// A kind of write whose rate an account's budget bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Room events: `/send`, `/state`, `/redact`.
    Sends,
    /// `/createRoom`.
    RoomCreation,
    /// `/invite`.
    Invites,
    /// `/sendToDevice`.
    ToDevice,
    /// `/keys/claim`.
    KeyClaims,
    /// Media uploads and `/media/v1/create`.
    MediaUploads,
    /// Typing notifications.
    Typing,
}

/// Per-account budgets for each [`Budget`], from `[rate_limits]`.
#[derive(Debug)]
pub struct AccountBudgets {
    sends: RateLimiter,
    room_creation: RateLimiter,
    invites: RateLimiter,
    to_device: RateLimiter,
    key_claims: RateLimiter,
    media_uploads: RateLimiter,
    typing: RateLimiter,
}

impl AccountBudgets {
    /// The configured budgets; none when limits are switched off.
    pub fn new(config: &RateLimitConfig) -> Self {
        let limit = |limit: RateLimit| RateLimiter::new(config.enabled.then_some(limit));
        Self {
            sends: limit(config.sends),
            room_creation: limit(config.room_creation),
            invites: limit(config.invites),
            to_device: limit(config.to_device),
            key_claims: limit(config.key_claims),
            media_uploads: limit(config.media_uploads),
            typing: limit(config.typing),
        }
    }

    /// Takes one request of `budget` for `user_id`.
    ///
    /// # Errors
    /// [`ServiceError::LimitExceeded`] with the time until one is allowed.
    pub fn spend(&self, budget: Budget, user_id: &UserId) -> Result<(), ServiceError> {
        let limiter = match budget {
            Budget::Sends => &self.sends,
            Budget::RoomCreation => &self.room_creation,
            Budget::Invites => &self.invites,
            Budget::ToDevice => &self.to_device,
            Budget::KeyClaims => &self.key_claims,
            Budget::MediaUploads => &self.media_uploads,
            Budget::Typing => &self.typing,
        };
        limiter.check(user_id.as_str())
    }
}

/// One limit applied per key.
#[derive(Debug)]
pub struct RateLimiter {
    limit: Option<RateLimit>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter enforcing `limit`, or one that allows everything when `None`.
    pub fn new(limit: Option<RateLimit>) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket.
    ///
    /// # Errors
    /// [`ServiceError::LimitExceeded`] with the time until a request is allowed.
    pub fn check(&self, key: &str) -> Result<(), ServiceError> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let now = Instant::now();
        let capacity = f64::from(limit.burst);
        // A poisoned lock only means another request panicked mid-update; the map is still usable.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if buckets.len() > PRUNE_THRESHOLD {
            buckets.retain(|_, b| refill(*b, now, limit).tokens < capacity);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        *bucket = refill(*bucket, now, limit);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / limit.per_second;
            Err(ServiceError::LimitExceeded {
                retry_after: Duration::from_secs_f64(wait),
            })
        }
    }

    /// Whether `key`'s bucket has a request left, without taking it.
    pub fn has_room(&self, key: &str) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        let now = Instant::now();
        self.lock()
            .get(key)
            .is_none_or(|bucket| refill(*bucket, now, limit).tokens >= 1.0)
    }

    /// Whether `key` has used nothing of its bucket lately (its bucket is
    /// full again, or it never had one).
    pub fn is_untouched(&self, key: &str) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        let now = Instant::now();
        self.lock()
            .get(key)
            .is_none_or(|bucket| refill(*bucket, now, limit).tokens >= f64::from(limit.burst))
    }

    /// Takes one request from `key`'s bucket whatever is left, for counting
    /// what has already happened (a failed attempt).
    pub fn record(&self, key: &str) {
        let Some(limit) = self.limit else {
            return;
        };
        let now = Instant::now();
        let capacity = f64::from(limit.burst);
        let mut buckets = self.lock();
        if buckets.len() > PRUNE_THRESHOLD {
            buckets.retain(|_, b| refill(*b, now, limit).tokens < capacity);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let refilled = refill(*bucket, now, limit);
        *bucket = Bucket {
            tokens: (refilled.tokens - 1.0).max(0.0),
            updated: now,
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bucket>> {
        // A poisoned lock only means another request panicked mid-update; the map is still usable.
        self.buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

fn refill(bucket: Bucket, now: Instant, limit: RateLimit) -> Bucket {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    let tokens = (bucket.tokens + elapsed * limit.per_second).min(f64::from(limit.burst));
    Bucket {
        tokens,
        updated: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_a_wait() {
        let limiter = RateLimiter::new(Some(RateLimit {
            per_second: 0.5,
            burst: 2,
        }));
        limiter.check("a").unwrap();
        limiter.check("a").unwrap();
        let Err(ServiceError::LimitExceeded { retry_after }) = limiter.check("a") else {
            panic!("third request in the burst must be refused");
        };
        assert!(retry_after > Duration::from_millis(1500) && retry_after <= Duration::from_secs(2));
        // Other keys have their own bucket.
        limiter.check("b").unwrap();
    }

    #[test]
    fn recorded_failures_empty_the_bucket_without_refusing() {
        let limiter = RateLimiter::new(Some(RateLimit {
            per_second: 0.001,
            burst: 2,
        }));
        assert!(limiter.has_room("a") && limiter.is_untouched("a"));
        limiter.record("a");
        assert!(limiter.has_room("a") && !limiter.is_untouched("a"));
        limiter.record("a");
        limiter.record("a");
        assert!(!limiter.has_room("a"));
        assert!(limiter.is_untouched("b"));
    }

    #[test]
    fn disabled_allows_everything() {
        let limiter = RateLimiter::new(None);
        for _ in 0..100 {
            limiter.check("a").unwrap();
        }
    }
}
