//! The server-wide stream: one counter orders every persisted thing a sync
//! can return (room events, account data, receipts), so a sync token is one
//! position and "what changed since" is a range query on each kind.
//!
//! Writers reserve positions, write, and release them; writes may commit
//! concurrently and in any order (the event writer commits many at once).
//! The published position is the highest one below which every reserved
//! position has been released: a reader that sees position `n` can read
//! everything at or below `n`, and nothing later appears below it.
//!
//! The stream also remembers the latest position of each [`Kind`] written
//! since the process started, so that a sync can skip the queries of kinds
//! with nothing new since its token (most incremental syncs wake for one
//! room event, and would otherwise ask the database about account data,
//! receipts and device lists every time).

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
};

use tokio::sync::watch;

use super::ServiceError;
use crate::storage::StreamPosition;

/// Hands out stream positions and publishes them in order.
#[derive(Debug)]
pub struct Stream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    positions: Mutex<Positions>,
    published: watch::Sender<i64>,
    /// The latest position written for each [`Kind`] (indexed by `Kind as
    /// usize`); at start, the last stored position, since what came before
    /// is unknown.
    latest: [AtomicI64; Kind::COUNT],
}

/// What a write puts on the stream, for readers that skip a kind with
/// nothing new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A room event that changes a membership.
    Membership,
    /// Global or per-room account data.
    AccountData,
    /// A read receipt.
    Receipt,
    /// A to-device message.
    ToDevice,
    /// A device list change (new keys, a new or deleted device, cross-signing).
    DeviceList,
    /// A user's presence.
    Presence,
}

impl Kind {
    const COUNT: usize = 6;
}

/// The reserved positions not yet released.
#[derive(Debug)]
struct Positions {
    /// The greatest position handed out.
    last: i64,
    /// Each reserved position, and whether it has been released.
    pending: BTreeMap<i64, bool>,
}

/// A reserved position. Releasing it (dropping it) says its write is over,
/// committed or failed; a failed write leaves a harmless gap. Dropping it
/// on every path (an error, a cancelled request) is what keeps publication moving.
#[derive(Debug)]
pub struct Reservation {
    inner: Arc<Inner>,
    position: StreamPosition,
}

impl Reservation {
    /// The reserved position.
    pub fn position(&self) -> StreamPosition {
        self.position
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.inner.release(self.position.0);
    }
}

impl Stream {
    /// Continues after `last`, the greatest position already stored.
    pub fn new(last: StreamPosition) -> Self {
        Self {
            inner: Arc::new(Inner {
                positions: Mutex::new(Positions {
                    last: last.0,
                    pending: BTreeMap::new(),
                }),
                published: watch::channel(last.0).0,
                latest: std::array::from_fn(|_| AtomicI64::new(last.0)),
            }),
        }
    }

    /// Records that `position` holds a write of `kind`. Call it before the
    /// position is released: a reader that sees it published must also see
    /// the mark, or it would skip what was written there.
    pub fn mark(&self, kind: Kind, position: StreamPosition) {
        self.inner.latest[kind as usize].fetch_max(position.0, Ordering::SeqCst);
    }

    /// Whether anything of `kind` may have been written after `since`.
    pub fn changed_since(&self, kind: Kind, since: StreamPosition) -> bool {
        self.inner.latest[kind as usize].load(Ordering::SeqCst) > since.0
    }

    /// The greatest published position.
    pub fn current(&self) -> StreamPosition {
        StreamPosition(*self.inner.published.borrow())
    }

    /// Reserves the next position. Reserve just before writing: every later
    /// position waits for this one to be released before it is published.
    pub fn reserve(&self) -> Reservation {
        let mut positions = self.inner.lock();
        positions.last += 1;
        let position = positions.last;
        positions.pending.insert(position, false);
        Reservation {
            inner: self.inner.clone(),
            position: StreamPosition(position),
        }
    }

    /// Waits until `position` is published, so a wake-up sent afterwards
    /// finds it readable.
    pub async fn published(&self, position: StreamPosition) {
        let mut published = self.inner.published.subscribe();
        // The sender lives in `self`, so waiting cannot fail.
        let _ = published
            .wait_for(|published| *published >= position.0)
            .await;
    }

    /// Runs `write`, a write of `kind`, at the next position, and returns
    /// once the position is published (a failed write publishes nothing of
    /// its own).
    ///
    /// # Errors
    /// What `write` fails with.
    pub async fn append<T, F, Fut>(&self, kind: Kind, write: F) -> Result<T, ServiceError>
    where
        F: FnOnce(StreamPosition) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let reservation = self.reserve();
        let position = reservation.position();
        let written = write(position).await;
        // Marked even if the write failed: a mark too many only costs a query.
        self.mark(kind, position);
        drop(reservation);
        let written = written?;
        self.published(position).await;
        Ok(written)
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Positions> {
        // A poisoned lock only means a panic elsewhere; the map is still whole.
        self.positions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Marks `position` released and publishes the longest released prefix.
    fn release(&self, position: i64) {
        let mut positions = self.lock();
        if let Some(released) = positions.pending.get_mut(&position) {
            *released = true;
        }
        let mut publish = None;
        while let Some(entry) = positions.pending.first_entry() {
            if !*entry.get() {
                break;
            }
            publish = Some(*entry.key());
            entry.remove();
        }
        // Published while the lock is held, so publications never go backwards.
        if let Some(publish) = publish {
            self.published.send_replace(publish);
        }
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
            .append(Kind::Receipt, |position| async move {
                assert_eq!(position, StreamPosition(8));
                // Readers must not see a position whose write is still running.
                Ok(stream.current())
            })
            .await
            .unwrap();
        assert_eq!(during, StreamPosition(7));
        assert_eq!(stream.current(), StreamPosition(8));

        let failed: Result<(), _> = stream
            .append(Kind::Receipt, |_| async {
                Err(ServiceError::Internal("disk full".into()))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(
            stream.current(),
            StreamPosition(9),
            "a failed write leaves a gap that is published"
        );

        let next = stream
            .append(Kind::Receipt, |position| async move { Ok(position) })
            .await
            .unwrap();
        assert_eq!(
            next,
            StreamPosition(10),
            "the failed write's position is not reused"
        );
    }

    #[test]
    fn a_position_released_early_waits_for_the_ones_before_it() {
        let stream = Stream::new(StreamPosition(0));
        let first = stream.reserve();
        let second = stream.reserve();
        let third = stream.reserve();
        drop(second);
        assert_eq!(
            stream.current(),
            StreamPosition(0),
            "position 1 is still being written"
        );
        drop(first);
        assert_eq!(stream.current(), StreamPosition(2));
        drop(third);
        assert_eq!(stream.current(), StreamPosition(3));
    }

    #[tokio::test]
    async fn waiting_for_publication_ends_when_the_earlier_writes_end() {
        let stream = Arc::new(Stream::new(StreamPosition(0)));
        let first = stream.reserve();
        let second = stream.reserve();
        let position = second.position();
        drop(second);
        let waiter = tokio::spawn({
            let stream = stream.clone();
            async move { stream.published(position).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "position 1 holds publication back");
        drop(first);
        waiter.await.unwrap();
        assert_eq!(stream.current(), StreamPosition(2));
    }
}
