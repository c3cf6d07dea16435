//! The server-wide stream: one counter orders every persisted thing a sync
//! can return (room events, account data, receipts), so a sync token is one
//! position and "what changed since" is a range query on each kind.
//!
//! Writers take the next position and commit under one lock, and the
//! position is published only after the commit: a reader that sees position
//! `n` can read everything at or below `n`, and nothing later appears below it.

use std::{
    future::Future,
    sync::atomic::{AtomicI64, Ordering},
};

use super::ServiceError;
use crate::storage::StreamPosition;

/// Hands out stream positions in commit order.
#[derive(Debug)]
pub struct Stream {
    last: tokio::sync::Mutex<StreamPosition>,
    committed: AtomicI64,
}

impl Stream {
    /// Continues after `last`, the greatest position already stored.
    pub fn new(last: StreamPosition) -> Self {
        Self {
            last: tokio::sync::Mutex::new(last),
            committed: AtomicI64::new(last.0),
        }
    }

    /// The greatest committed position.
    pub fn current(&self) -> StreamPosition {
        StreamPosition(self.committed.load(Ordering::Acquire))
    }

    /// Runs `write` with the next position; publishes the position only if
    /// the write succeeds (a failed write leaves a harmless gap).
    ///
    /// # Errors
    /// What `write` fails with.
    pub async fn append<T, F, Fut>(&self, write: F) -> Result<T, ServiceError>
    where
        F: FnOnce(StreamPosition) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let mut last = self.last.lock().await;
        let position = StreamPosition(last.0 + 1);
        // Taken even on failure: the storage may have half-seen it, and a gap costs nothing.
        *last = position;
        let written = write(position).await?;
        self.committed.store(position.0, Ordering::Release);
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn positions_are_published_only_after_the_write() {
        let stream = Stream::new(StreamPosition(7));
        let stream = &stream;
        let during = stream
            .append(|position| async move {
                assert_eq!(position, StreamPosition(8));
                // Readers must not see a position whose write is still running.
                Ok(stream.current())
            })
            .await
            .unwrap();
        assert_eq!(during, StreamPosition(7));
        assert_eq!(stream.current(), StreamPosition(8));

        let failed: Result<(), _> = stream
            .append(|_| async { Err(ServiceError::Internal("disk full".into())) })
            .await;
        assert!(failed.is_err());
        assert_eq!(
            stream.current(),
            StreamPosition(8),
            "a failed write publishes nothing"
        );

        let next = stream
            .append(|position| async move { Ok(position) })
            .await
            .unwrap();
        assert_eq!(
            next,
            StreamPosition(10),
            "the failed write's position is not reused"
        );
    }
}
