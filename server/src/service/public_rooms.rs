//! The public room directory as `/publicRooms` lists it, bounded for a
//! caller that needs no account: the full listing is computed at most once
//! per stream position (it reads every public room's state), and listings
//! are rate-limited per client address.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
};

use ruma::ServerName;

use super::{
    ServiceError,
    rate_limit::RateLimiter,
    room_ops::{PublicRoom, RoomOps},
    stream::Stream,
};
use crate::storage::StreamPosition;

/// The directory's listings.
#[derive(Debug)]
pub struct PublicRooms {
    rooms: Arc<RoomOps>,
    stream: Arc<Stream>,
    limiter: RateLimiter,
    /// The full listing and the stream position it was computed at.
    cached: Mutex<Option<(StreamPosition, Arc<Vec<PublicRoom>>)>>,
}

impl PublicRooms {
    /// Builds the service; `limiter` counts listings per client address.
    pub fn new(rooms: Arc<RoomOps>, stream: Arc<Stream>, limiter: RateLimiter) -> Self {
        Self {
            rooms,
            stream,
            limiter,
            cached: Mutex::new(None),
        }
    }

    /// The public rooms, biggest first, matching `search` if given.
    ///
    /// Every room event moves the stream, so a listing computed at the
    /// current position is current, bar directory changes, which call
    /// [`Self::invalidate`]. A search is not cached.
    ///
    /// # Errors
    /// `LimitExceeded` past the address's rate; storage failures.
    pub async fn list(
        &self,
        client: IpAddr,
        search: Option<&str>,
    ) -> Result<Arc<Vec<PublicRoom>>, ServiceError> {
        self.limiter.check(&format!("ip:{client}"))?;
        self.listing(search).await
    }

    /// [`Self::list`] for another server, rate-limited per server name.
    ///
    /// # Errors
    /// `LimitExceeded` past the server's rate; storage failures.
    pub async fn list_for_server(
        &self,
        origin: &ServerName,
        search: Option<&str>,
    ) -> Result<Arc<Vec<PublicRoom>>, ServiceError> {
        self.limiter.check(&format!("server:{origin}"))?;
        self.listing(search).await
    }

    async fn listing(&self, search: Option<&str>) -> Result<Arc<Vec<PublicRoom>>, ServiceError> {
        if let Some(search) = search.filter(|search| !search.is_empty()) {
            return Ok(Arc::new(self.rooms.public_rooms(Some(search)).await?));
        }
        let now = self.stream.current();
        if let Some((at, rooms)) = self.lock().as_ref()
            && *at == now
        {
            return Ok(Arc::clone(rooms));
        }
        let rooms = Arc::new(self.rooms.public_rooms(None).await?);
        *self.lock() = Some((now, Arc::clone(&rooms)));
        Ok(rooms)
    }

    /// Forgets the cached listing (a room was published or withdrawn).
    pub fn invalidate(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(StreamPosition, Arc<Vec<PublicRoom>>)>> {
        // A poisoned lock only means a panic elsewhere; the cache is rebuilt anyway.
        self.cached
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}
