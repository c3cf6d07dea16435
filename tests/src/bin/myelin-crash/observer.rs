//! The observer: one device that syncs every room and receives every
//! to-device message, recording each sync token it is handed and what it
//! had been delivered up to that token.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{
    api::Api,
    matrix::{self, Session},
    world::MARKER_FIELD,
};

/// Every room's whole timeline since the token, up to the server's cap;
/// nothing the harness does not read.
pub const FILTER: &str = r#"{"room":{"timeline":{"limit":500},"state":{"lazy_load_members":true},"ephemeral":{"not_types":["*"]},"account_data":{"not_types":["*"]}},"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]}}"#;
/// The observer's long-poll while the load runs.
const LONG_POLL_MS: u64 = 1000;
/// Pause after a failed sync (server gone or restarting).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A room event the observer was delivered.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Its event id.
    pub event_id: String,
    /// The sender's transaction id.
    pub marker: String,
}

/// A sync token and how much had been delivered when it was handed out.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The `next_batch` token.
    pub token: String,
    /// How many room events had been delivered up to and including it.
    pub delivered: usize,
}

/// The observer's record.
pub struct Observer {
    session: Session,
    /// Every marked room event delivered, in order.
    pub delivered: Vec<Delivered>,
    /// Every to-device marker delivered, in order.
    pub to_device: Vec<String>,
    /// Every token handed out, in order.
    pub checkpoints: Vec<Checkpoint>,
}

/// What one sync response held.
pub struct Batch {
    /// `next_batch`.
    pub next_batch: String,
    /// The marked room events, in timeline order.
    pub events: Vec<Delivered>,
    /// The to-device markers.
    pub to_device: Vec<String>,
}

impl Observer {
    /// An observer for `session` that has been delivered nothing yet.
    pub fn new(session: Session) -> Self {
        Self {
            session,
            delivered: Vec::new(),
            to_device: Vec::new(),
            checkpoints: Vec::new(),
        }
    }

    /// Long-polls until `stop` is set, retrying failed syncs.
    pub async fn follow(mut self, api: Api, stop: Arc<AtomicBool>) -> anyhow::Result<Self> {
        while !stop.load(Ordering::Relaxed) {
            if self.sync_once(&api, LONG_POLL_MS).await?.is_none() {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        Ok(self)
    }

    /// Syncs with `timeout=0` until a response delivers nothing.
    pub async fn catch_up(&mut self, api: &Api) -> anyhow::Result<()> {
        while self
            .sync_once(api, 0)
            .await?
            .context("the observer cannot sync after the restart")?
            > 0
        {}
        Ok(())
    }

    /// One sync from the last token: `None` if it failed, else how many
    /// room events and to-device messages it delivered.
    async fn sync_once(&mut self, api: &Api, timeout_ms: u64) -> anyhow::Result<Option<usize>> {
        let since = self.checkpoints.last().map(|c| c.token.as_str());
        let Ok(body) =
            matrix::sync(api, &self.session, since, Some(FILTER), Some(timeout_ms)).await
        else {
            return Ok(None);
        };
        let batch = read_batch(&body)?;
        let count = batch.events.len() + batch.to_device.len();
        self.delivered.extend(batch.events);
        self.to_device.extend(batch.to_device);
        self.checkpoints.push(Checkpoint {
            token: batch.next_batch,
            delivered: self.delivered.len(),
        });
        Ok(Some(count))
    }
}

/// The marked events and to-device messages of a sync response. A limited
/// timeline is an error: the harness must see every event.
pub fn read_batch(body: &Value) -> anyhow::Result<Batch> {
    let next_batch = body
        .get("next_batch")
        .and_then(Value::as_str)
        .context("a sync answer without next_batch")?
        .to_owned();
    let mut events = Vec::new();
    if let Some(rooms) = body.pointer("/rooms/join").and_then(Value::as_object) {
        for (room_id, room) in rooms {
            if room.pointer("/timeline/limited") == Some(&Value::Bool(true)) {
                bail!(
                    "the sync timeline of {room_id} is limited: more than the filter's limit arrived at once"
                );
            }
            let timeline = room.pointer("/timeline/events").and_then(Value::as_array);
            events.extend(timeline.into_iter().flatten().filter_map(marked_event));
        }
    }
    let to_device = body
        .pointer("/to_device/events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|event| event.pointer(&format!("/content/{MARKER_FIELD}")))
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    Ok(Batch {
        next_batch,
        events,
        to_device,
    })
}

/// A room event sent by the harness, with its marker.
pub fn marked_event(event: &Value) -> Option<Delivered> {
    Some(Delivered {
        event_id: event.get("event_id")?.as_str()?.to_owned(),
        marker: event
            .pointer(&format!("/content/{MARKER_FIELD}"))?
            .as_str()?
            .to_owned(),
    })
}
