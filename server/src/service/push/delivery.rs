//! Delivery to push gateways: one queue per pusher, drained by a task of
//! its own that posts each notification in turn, retrying failures with
//! exponential backoff. A full queue drops what comes (sends never wait on
//! a gateway), an idle queue's task ends, and a gateway that rejects the
//! pushkey removes the pusher.
//!
//! Events that may carry what only room members may read (any
//! `m.room.encrypted` event, and every event of an E2E-only room) are
//! pushed without content, type, sender or tweaks, whatever the pusher's
//! format: the gateway learns that something happened, not what
//! (spec-notes/push.md).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{OwnedUserId, UserId, events::TimelineEventType, push::Action};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::gateway::GatewayClient;
use crate::{service::rooms::pdu::Pdu, storage::Storage};

/// Notifications one pusher's queue holds; more are dropped.
const QUEUE_CAPACITY: usize = 64;
/// How long a pusher's task waits for work before it ends.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How failed posts are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The wait before the first retry; each next one doubles it.
    pub first_delay: Duration,
    /// Posts of one notification at most, the first included.
    pub attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_secs(1),
            attempts: 6,
        }
    }
}

/// One pusher: the user's, with this app id and pushkey.
type PusherKey = (OwnedUserId, String, String);

/// A notification ready for one pusher's gateway.
struct Job {
    url: String,
    body: Value,
}

/// The queues of every pusher with work.
#[derive(Debug)]
pub struct Delivery {
    storage: Arc<dyn Storage>,
    client: GatewayClient,
    retry: RetryPolicy,
    queues: Arc<Mutex<HashMap<PusherKey, mpsc::Sender<Job>>>>,
}

impl Delivery {
    /// Delivery through a client that reaches private addresses only when
    /// `allow_private`.
    pub fn new(storage: Arc<dyn Storage>, allow_private: bool, retry: RetryPolicy) -> Self {
        Self {
            storage,
            client: GatewayClient::new(allow_private),
            retry,
            queues: Arc::default(),
        }
    }

    /// Queues `event`, which notified `user_id` with `actions`, for each of
    /// their pushers. Failures are logged: a notification is best effort.
    pub async fn notify(
        &self,
        user_id: &UserId,
        event: &Pdu,
        actions: &[Action],
        is_e2e_only: bool,
    ) {
        let pushers = match self.storage.pushers_with_ts(user_id).await {
            Ok(pushers) if pushers.is_empty() => return,
            Ok(pushers) => pushers,
            Err(error) => {
                warn!(%user_id, %error, "pushers could not be read");
                return;
            }
        };
        let unread = match self.storage.unread_notification_total(user_id).await {
            Ok(unread) => unread,
            Err(error) => {
                warn!(%user_id, %error, "unread count could not be read");
                return;
            }
        };
        let is_private = is_e2e_only || *event.kind() == TimelineEventType::RoomEncrypted;
        for (pusher, created_ts) in pushers {
            let Ok(pusher) = serde_json::from_str::<Value>(&pusher) else {
                continue;
            };
            let (Some(app_id), Some(pushkey), Some(url)) = (
                pusher["app_id"].as_str(),
                pusher["pushkey"].as_str(),
                pusher["data"]["url"].as_str(),
            ) else {
                continue;
            };
            let device = Device {
                app_id,
                pushkey,
                pushkey_ts: created_ts / 1000,
                data: pusher["data"].as_object(),
            };
            let body = notification(event, actions, &device, unread, is_private);
            let key = (user_id.to_owned(), app_id.to_owned(), pushkey.to_owned());
            self.enqueue(
                key,
                Job {
                    url: url.to_owned(),
                    body,
                },
            );
        }
    }

    fn enqueue(&self, key: PusherKey, job: Job) {
        let mut queues = lock(&self.queues);
        let job = match queues.get(&key) {
            Some(queue) => match queue.try_send(job) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(user_id = %key.0, app_id = %key.1, "push queue full: notification dropped");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(job)) => job,
            },
            None => job,
        };
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        // A new channel has room for one.
        let _ = queue.try_send(job);
        queues.insert(key.clone(), queue);
        let worker = Worker {
            key,
            storage: self.storage.clone(),
            client: self.client.clone(),
            retry: self.retry,
            queues: self.queues.clone(),
        };
        tokio::spawn(worker.run(jobs));
    }
}

/// The task draining one pusher's queue.
struct Worker {
    key: PusherKey,
    storage: Arc<dyn Storage>,
    client: GatewayClient,
    retry: RetryPolicy,
    queues: Arc<Mutex<HashMap<PusherKey, mpsc::Sender<Job>>>>,
}

/// What became of one notification.
enum Outcome {
    Delivered,
    GaveUp,
    PusherRejected,
}

impl Worker {
    async fn run(self, mut jobs: mpsc::Receiver<Job>) {
        loop {
            let job = match tokio::time::timeout(IDLE_TIMEOUT, jobs.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(_idle) => {
                    // Under the lock no job can arrive unseen.
                    let mut queues = lock(&self.queues);
                    if jobs.is_empty() {
                        queues.remove(&self.key);
                        return;
                    }
                    continue;
                }
            };
            if let Outcome::PusherRejected = self.deliver(&job).await {
                lock(&self.queues).remove(&self.key);
                return;
            }
        }
    }

    async fn deliver(&self, job: &Job) -> Outcome {
        let (user_id, app_id, pushkey) = &self.key;
        let mut delay = self.retry.first_delay;
        for attempt in 1..=self.retry.attempts {
            match self.client.post(&job.url, &job.body).await {
                Ok(answer) => {
                    let rejected = answer["rejected"]
                        .as_array()
                        .is_some_and(|keys| keys.iter().any(|key| key == pushkey.as_str()));
                    if !rejected {
                        return Outcome::Delivered;
                    }
                    info!(%user_id, %app_id, "the gateway rejected a pushkey: pusher removed");
                    if let Err(error) = self.storage.delete_pusher(user_id, app_id, pushkey).await {
                        warn!(%user_id, %app_id, %error, "a rejected pusher could not be removed");
                    }
                    return Outcome::PusherRejected;
                }
                Err(error) if error.is_transient() && attempt < self.retry.attempts => {
                    debug!(%user_id, %app_id, %error, attempt, "push failed: retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(error) => {
                    warn!(%user_id, %app_id, %error, attempt, "push failed: notification dropped");
                    return Outcome::GaveUp;
                }
            }
        }
        Outcome::GaveUp
    }
}

/// A pusher as the gateway sees it in `devices`.
struct Device<'a> {
    app_id: &'a str,
    pushkey: &'a str,
    pushkey_ts: i64,
    data: Option<&'a Map<String, Value>>,
}

/// The Push Gateway API body for one pusher (`POST /_matrix/push/v1/notify`).
fn notification(
    event: &Pdu,
    actions: &[Action],
    device: &Device<'_>,
    unread: u64,
    is_private: bool,
) -> Value {
    let mut data = device.data.cloned().unwrap_or_default();
    // The URL is the server's business, not the gateway's.
    data.remove("url");
    let is_event_id_only = data.get("format").is_some_and(|f| f == "event_id_only");
    let mut pushed_device = json!({
        "app_id": device.app_id,
        "pushkey": device.pushkey,
        "pushkey_ts": device.pushkey_ts,
        "data": data,
    });
    let mut notification = json!({
        "event_id": event.event_id(),
        "room_id": event.room_id(),
        "counts": { "unread": unread },
    });
    if !is_private {
        pushed_device["tweaks"] = tweaks(actions);
        notification["prio"] = Value::from(priority(event, actions));
        if !is_event_id_only {
            notification["type"] = Value::from(event.kind().to_string());
            notification["sender"] = Value::from(event.sender().as_str());
            notification["content"] =
                serde_json::from_str(event.content().get()).unwrap_or(Value::Null);
        }
    }
    notification["devices"] = json!([pushed_device]);
    json!({ "notification": notification })
}

/// The `set_tweak` actions as the gateway's `tweaks` object.
fn tweaks(actions: &[Action]) -> Value {
    let mut tweaks = Map::new();
    for action in actions {
        let Ok(Value::Object(action)) = serde_json::to_value(action) else {
            continue;
        };
        if let Some(Value::String(name)) = action.get("set_tweak") {
            let value = action.get("value").cloned().unwrap_or(Value::Bool(true));
            tweaks.insert(name.clone(), value);
        }
    }
    Value::Object(tweaks)
}

/// `high` for what a person should see now (messages, calls, highlights),
/// `low` for the rest.
fn priority(event: &Pdu, actions: &[Action]) -> &'static str {
    let is_message = matches!(
        event.kind(),
        TimelineEventType::RoomMessage
            | TimelineEventType::RoomEncrypted
            | TimelineEventType::Sticker
            | TimelineEventType::CallInvite
    );
    if is_message || actions.iter().any(Action::is_highlight) {
        "high"
    } else {
        "low"
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the map is still whole.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
