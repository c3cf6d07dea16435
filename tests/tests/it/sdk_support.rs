//! Helpers for the SDK tests: clients registered on a test server, syncing
//! until something arrives, and a loopback proxy that injects faults
//! (lost answers, 429s, 5xx, garbage) between the SDK and the server.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use myelin_sdk::{
    Changes, Client, CreateRoom, LoopControl, MemoryStore, Registration, RetryPolicy, Room,
    RoomEvent, RoomSecurity, Store, SyncSettings, SyncUpdate,
    ruma::{OwnedEventId, OwnedUserId, RoomId},
};
use myelin_tests::PASSWORD;
use tokio::{net::TcpListener, task::JoinHandle};

/// The passphrase of every test store.
pub const PASSPHRASE: &str = "test store passphrase";

/// Retries that keep tests quick: 4 attempts, 20 ms doubling.
pub fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: Some(4),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    }
}

/// Sync settings for tests: short long-polls, quick retries.
pub fn quick_sync() -> SyncSettings {
    SyncSettings {
        timeout: Duration::from_secs(5),
        // Room set-up events must not push the messages out of an initial sync.
        filter: Some(serde_json::json!({"room": {"timeline": {"limit": 50}}})),
        retry: quick_retry(),
    }
}

/// A client of `homeserver` on `store`, not logged in.
pub async fn client_on(homeserver: &str, store: Arc<dyn Store>) -> Client {
    Client::builder()
        .homeserver_url(homeserver)
        .store(store)
        .passphrase(PASSPHRASE)
        .request_retry(quick_retry())
        .build()
        .await
        .expect("build client")
}

/// Registers `localpart` on `homeserver` with a fresh in-memory store.
pub async fn registered(homeserver: &str, localpart: &str) -> Client {
    registered_on(homeserver, localpart, Arc::new(MemoryStore::new())).await
}

/// Registers `localpart` on `homeserver`, keeping the session in `store`.
pub async fn registered_on(homeserver: &str, localpart: &str, store: Arc<dyn Store>) -> Client {
    let client = client_on(homeserver, store).await;
    client
        .register(Registration {
            username: Some(localpart.to_owned()),
            password: PASSWORD.to_owned(),
            ..Registration::default()
        })
        .await
        .expect("register");
    client
}

/// Syncs `client` until `done` says an update is what the test waits for;
/// returns every update seen. Long-polls, so it waits on the server's
/// notifier, not on a clock; gives up after 20 s.
pub async fn sync_until(
    client: &Client,
    mut done: impl FnMut(&SyncUpdate) -> bool + Send,
) -> Vec<SyncUpdate> {
    let mut updates = Vec::new();
    let looped = client.sync(quick_sync(), |update: &SyncUpdate, _: &mut Changes| {
        updates.push(update.clone());
        if done(update) {
            LoopControl::Break
        } else {
            LoopControl::Continue
        }
    });
    tokio::time::timeout(Duration::from_secs(20), looped)
        .await
        .expect("the awaited update did not arrive within 20 s")
        .expect("sync");
    updates
}

/// Whether `update` has a message with `body` in `room_id`'s timeline.
pub fn has_message(update: &SyncUpdate, body: &str) -> bool {
    update
        .timeline_events()
        .any(|(_, event)| event.body() == Some(body))
}

/// What the proxy does to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward the request, then answer 502 with a non-JSON body, as if
    /// the answer was lost on the way back.
    LoseAnswer,
    /// Answer this status and raw body without forwarding.
    Answer(u16, String),
}

#[derive(Debug)]
struct Rule {
    method: Method,
    path_contains: String,
    fault: Fault,
    remaining: usize,
}

#[derive(Debug, Default)]
struct ProxyState {
    upstream: String,
    rules: Mutex<Vec<Rule>>,
    /// `METHOD path` of every request seen.
    seen: Mutex<Vec<String>>,
    well_known: Mutex<Option<String>>,
}

/// A loopback HTTP proxy in front of a homeserver that injects faults.
#[derive(Debug)]
pub struct FaultyProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultyProxy {
    /// Starts a proxy in front of `upstream`.
    pub async fn start(upstream: &str) -> Self {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            ..ProxyState::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let router = Router::new().fallback(forward).with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.ok();
        });
        Self { url, state, task }
    }

    /// Applies `fault` to the next `times` requests with `method` whose
    /// path contains `path_contains`.
    pub fn inject(&self, method: Method, path_contains: &str, fault: Fault, times: usize) {
        self.state.rules.lock().unwrap().push(Rule {
            method,
            path_contains: path_contains.to_owned(),
            fault,
            remaining: times,
        });
    }

    /// Serves `body` at `/.well-known/matrix/client`.
    pub fn serve_well_known(&self, body: String) {
        *self.state.well_known.lock().unwrap() = Some(body);
    }

    /// How many requests with `method` had a path containing `path_contains`.
    pub fn count(&self, method: &Method, path_contains: &str) -> usize {
        let prefix = format!("{method} ");
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.starts_with(&prefix) && line.contains(path_contains))
            .count()
    }
}

async fn forward(
    State(state): State<Arc<ProxyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    state.seen.lock().unwrap().push(format!("{method} {path}"));
    if path == "/.well-known/matrix/client" {
        return match state.well_known.lock().unwrap().clone() {
            Some(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    let fault = {
        let mut rules = state.rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|rule| {
                rule.remaining > 0 && rule.method == method && path.contains(&rule.path_contains)
            })
            .map(|rule| {
                rule.remaining -= 1;
                rule.fault.clone()
            })
    };
    if let Some(Fault::Answer(status, body)) = &fault {
        let status = StatusCode::from_u16(*status).expect("status");
        return (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.clone(),
        )
            .into_response();
    }
    let target = format!(
        "{}{}",
        state.upstream,
        uri.path_and_query().map_or("/", |pq| pq.as_str())
    );
    let mut request = reqwest::Client::new().request(method, target).body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(value) = headers.get(&name) {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let status = answer.status();
    let bytes = answer.bytes().await.unwrap_or_default();
    if matches!(fault, Some(Fault::LoseAnswer)) {
        return (StatusCode::BAD_GATEWAY, "upstream answer lost").into_response();
    }
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// A plain (unencrypted) private room created by `client`, inviting `invite`.
pub async fn plain_room(client: &Client, invite: Vec<OwnedUserId>) -> Room {
    client
        .create_room(CreateRoom {
            invite,
            security: RoomSecurity::Plain,
            ..CreateRoom::default()
        })
        .await
        .expect("create room")
}

/// The first timeline event of `updates` that `matches`.
#[track_caller]
pub fn find_event(updates: &[SyncUpdate], matches: impl Fn(&RoomEvent) -> bool) -> RoomEvent {
    updates
        .iter()
        .flat_map(|update| update.timeline_events())
        .map(|(_, event)| event)
        .find(|event| matches(event))
        .expect("no such event in the updates")
        .clone()
}

/// The one event in `events` whose body is `body`.
#[track_caller]
pub fn single_with_body<'a>(events: &'a [RoomEvent], body: &str) -> &'a RoomEvent {
    let copies: Vec<_> = events.iter().filter(|e| e.body() == Some(body)).collect();
    assert_eq!(copies.len(), 1, "{body:?} is stored {} times", copies.len());
    copies[0]
}

/// `typist` types in the room and `reader`'s loop shows it; `reader` sends
/// a read receipt for `event_id` and `typist`'s loop shows it.
pub async fn typing_and_receipt_cross(
    typist: &Client,
    reader: &Client,
    room_id: &RoomId,
    event_id: &OwnedEventId,
) {
    let typist_id = typist.user_id().unwrap();
    let reader_id = reader.user_id().unwrap();
    typist
        .room(room_id)
        .typing(true, Duration::from_secs(10))
        .await
        .unwrap();
    sync_until(reader, |update| {
        update
            .joined
            .iter()
            .any(|r| r.typing().is_some_and(|users| users.contains(&typist_id)))
    })
    .await;
    reader.room(room_id).read_receipt(event_id).await.unwrap();
    sync_until(typist, |update| {
        update
            .joined
            .iter()
            .flat_map(|r| r.receipts())
            .any(|content| content[event_id.as_str()]["m.read"][reader_id.as_str()].is_object())
    })
    .await;
}

/// Pages `room` back from the newest event to `m.room.create`, `page`
/// events at a time; checks every event comes once. Newest first.
pub async fn history_to_creation(room: &Room, page: u32) -> Vec<RoomEvent> {
    let mut history = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let messages = room.messages(from.as_deref(), page).await.unwrap();
        assert!(messages.events.len() <= page as usize);
        let at_start = messages.events.is_empty() || messages.end.is_none();
        history.extend(messages.events);
        if at_start {
            break;
        }
        from = messages.end;
    }
    assert_eq!(
        history.last().map(|e| e.event_type.as_str()),
        Some("m.room.create")
    );
    let mut ids: Vec<_> = history.iter().map(|e| e.event_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), history.len(), "an event came twice");
    history
}
