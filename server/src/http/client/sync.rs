//! `GET /sync`, filters, and history: `/messages` and `/event`.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use axum::{Json as Reply, body::Bytes, extract::State, response::Response};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};

use super::events::{ClientEvent, StrippedEvent, json_response};
use crate::{
    http::{
        AppState,
        error::MatrixError,
        extract::{Authed, Path, Query, parse_json},
    },
    service::{
        ServiceError,
        presence::{PresenceView, SetPresence},
        rooms::pdu::Pdu,
        sync::{
            InviteUpdate, RoomUpdate, StreamToken, SyncRequest, SyncResponse, SyncToken,
            event_fields::EventFields,
            filter::{EventFilter, EventFormat, Filter},
            history::Direction,
        },
    },
    storage::{AccountDataEntry, Millis, PresenceState, ToDeviceMessage},
};

#[derive(Debug, Deserialize)]
pub struct SyncQuery {
    since: Option<String>,
    timeout: Option<u64>,
    #[serde(default)]
    full_state: bool,
    filter: Option<String>,
    #[serde(default)]
    set_presence: SetPresence,
}

/// `GET /sync`.
pub async fn sync_events(
    State(state): State<AppState>,
    Authed(session): Authed,
    Query(query): Query<SyncQuery>,
) -> Result<Response, MatrixError> {
    let filter = match query.filter.as_deref() {
        None => Filter::default(),
        Some(inline) if inline.trim_start().starts_with('{') => parse_json(inline.as_bytes())?,
        Some(id) => {
            let json = state
                .sync
                .filter_json(&session.user_id, id)
                .await
                .map_err(|_| MatrixError::invalid_param("unknown filter id"))?;
            parse_json(json.as_bytes())?
        }
    };
    state
        .presence
        .sync_presence(&session.user_id, query.set_presence)
        .await?;
    let format = filter.event_format;
    let fields = filter.event_fields.as_deref().and_then(EventFields::new);
    let request = SyncRequest {
        since: query.since.as_deref().map(SyncToken::parse).transpose()?,
        timeout: Duration::from_millis(query.timeout.unwrap_or(0)),
        full_state: query.full_state,
        filter,
        filter_key: query.filter.unwrap_or_default(),
    };
    let response = state
        .sync
        .sync(&session.user_id, &session.device_id, &request)
        .await?;
    json_response(&SyncBody::new(&response, format, fields.as_ref()))
}

#[derive(Serialize)]
struct SyncBody<'a> {
    next_batch: String,
    rooms: Rooms<'a>,
    account_data: RawEvents,
    presence: Value,
    to_device: RawEvents,
    device_lists: Value,
    device_one_time_keys_count: &'a BTreeMap<String, u64>,
    device_unused_fallback_key_types: &'a [String],
}

#[derive(Serialize)]
struct Rooms<'a> {
    join: BTreeMap<&'a OwnedRoomId, JoinedRoomBody<'a>>,
    invite: BTreeMap<&'a OwnedRoomId, Value>,
    leave: BTreeMap<&'a OwnedRoomId, RoomBody<'a>>,
    knock: BTreeMap<&'a OwnedRoomId, Value>,
}

#[derive(Serialize)]
struct RoomBody<'a> {
    state: Events<'a>,
    timeline: TimelineBody<'a>,
    account_data: RawEvents,
}

/// Events the server builds itself (account data, receipts, typing).
#[derive(Serialize)]
pub(super) struct RawEvents {
    pub(super) events: Vec<Box<RawValue>>,
}

/// `{"type": …, "content": …}` with the content spliced in verbatim.
fn raw_event(kind: &str, content: &str) -> Option<Box<RawValue>> {
    let kind = serde_json::to_string(kind).ok()?;
    RawValue::from_string(format!("{{\"content\":{content},\"type\":{kind}}}")).ok()
}

/// `{"sender": …, "type": …, "content": …}` per message, the content spliced
/// in as the sender sent it.
pub(super) fn to_device_events(messages: &[ToDeviceMessage]) -> RawEvents {
    let event = |message: &ToDeviceMessage| {
        let sender = serde_json::to_string(message.sender.as_str()).ok()?;
        let kind = serde_json::to_string(&message.event_type).ok()?;
        RawValue::from_string(format!(
            "{{\"content\":{},\"sender\":{sender},\"type\":{kind}}}",
            message.content
        ))
        .ok()
    };
    RawEvents {
        events: messages.iter().filter_map(event).collect(),
    }
}

fn account_data_events(entries: &[AccountDataEntry]) -> RawEvents {
    RawEvents {
        events: entries
            .iter()
            .filter_map(|e| raw_event(&e.data_type, &e.content))
            .collect(),
    }
}

/// The room's ephemeral events: one `m.receipt` and the `m.typing` list.
fn ephemeral_events(update: &RoomUpdate) -> RawEvents {
    let mut events = Vec::new();
    if !update.receipts.is_empty() {
        let mut content = serde_json::Map::new();
        for receipt in &update.receipts {
            let mut read = json!({ "ts": receipt.ts });
            if !receipt.thread_id.is_empty() {
                read["thread_id"] = json!(receipt.thread_id);
            }
            content
                .entry(receipt.event_id.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(|by_type| {
                    by_type
                        .entry(receipt.receipt_type.clone())
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                        .map(|by_user| by_user.insert(receipt.user_id.clone(), read))
                });
        }
        events.extend(raw_event("m.receipt", &Value::Object(content).to_string()));
    }
    if let Some(typers) = &update.typing {
        events.extend(raw_event(
            "m.typing",
            &json!({ "user_ids": typers }).to_string(),
        ));
    }
    RawEvents { events }
}

#[derive(Serialize)]
struct JoinedRoomBody<'a> {
    #[serde(flatten)]
    room: RoomBody<'a>,
    ephemeral: RawEvents,
    unread_notifications: Value,
    /// MSC2654's unread count under its unstable name (Synapse sends it
    /// when its experimental support is on): messages from others after
    /// the read receipt, whatever the push rules say.
    #[serde(rename = "org.matrix.msc2654.unread_count")]
    unread_count: u64,
    summary: Value,
}

#[derive(Serialize)]
struct Events<'a> {
    events: Vec<SyncEvent<'a>>,
}

#[derive(Serialize)]
struct TimelineBody<'a> {
    events: Vec<SyncEvent<'a>>,
    limited: bool,
    prev_batch: String,
}

/// A room event in the filter's `event_format`, with only its
/// `event_fields` when the filter names some.
#[derive(Serialize)]
#[serde(untagged)]
enum SyncEvent<'a> {
    Client(ClientEvent<'a>),
    Json(Value),
}

/// How the filter shapes the room events of a sync.
#[derive(Clone, Copy)]
struct Shape<'a> {
    format: EventFormat,
    fields: Option<&'a EventFields>,
}

impl<'a> SyncEvent<'a> {
    fn new(pdu: &'a Pdu, transaction_id: Option<&'a str>, shape: Shape<'_>) -> Self {
        let event = match shape.format {
            EventFormat::Client => Self::Client(ClientEvent::in_sync(pdu, transaction_id)),
            EventFormat::Federation => Self::Json(federation_event(pdu, transaction_id)),
        };
        match shape.fields {
            None => event,
            Some(fields) => match serde_json::to_value(&event) {
                Ok(whole) => Self::Json(fields.project(&whole)),
                // Only a stored event that no longer parses fails here; it
                // is served whole rather than dropped.
                Err(_) => event,
            },
        }
    }
}

/// The PDU as servers exchange it, with its `event_id` (which room
/// versions 3 and later leave out of the PDU) and, for its sender's
/// device, the transaction id, as Synapse's `federation` format has them.
fn federation_event(pdu: &Pdu, transaction_id: Option<&str>) -> Value {
    let mut object = serde_json::Map::new();
    for (key, value) in pdu.as_object() {
        object.insert(key.clone(), value.clone().into());
    }
    object.insert("event_id".to_owned(), json!(pdu.event_id()));
    if let Some(transaction_id) = transaction_id {
        let unsigned = object.entry("unsigned").or_insert_with(|| json!({}));
        if let Some(unsigned) = unsigned.as_object_mut() {
            unsigned.insert("transaction_id".to_owned(), json!(transaction_id));
        }
    }
    Value::Object(object)
}

impl<'a> SyncBody<'a> {
    fn new(
        response: &'a SyncResponse,
        format: EventFormat,
        fields: Option<&'a EventFields>,
    ) -> Self {
        let shape = Shape { format, fields };
        let room = |update: &'a RoomUpdate| RoomBody {
            state: Events {
                events: update
                    .state
                    .iter()
                    .map(|pdu| SyncEvent::new(pdu, None, shape))
                    .collect(),
            },
            timeline: TimelineBody {
                events: update
                    .timeline
                    .events
                    .iter()
                    .map(|pdu| {
                        let txn = response
                            .transaction_ids
                            .get(pdu.event_id())
                            .map(String::as_str);
                        SyncEvent::new(pdu, txn, shape)
                    })
                    .collect(),
                limited: update.timeline.limited,
                prev_batch: update.timeline.prev_batch.to_string(),
            },
            account_data: account_data_events(&update.account_data),
        };
        Self {
            next_batch: response.next_batch.to_string(),
            rooms: Rooms {
                join: response
                    .joined
                    .iter()
                    .map(|update| {
                        let body = JoinedRoomBody {
                            room: room(update),
                            ephemeral: ephemeral_events(update),
                            unread_notifications: json!({
                                "highlight_count": update.notifications.highlights,
                                "notification_count": update.notifications.notifications,
                            }),
                            unread_count: update.unread_count,
                            summary: update.summary.as_ref().map_or_else(
                                || json!({}),
                                |summary| {
                                    let mut body = json!({
                                        "m.joined_member_count": summary.joined_member_count,
                                        "m.invited_member_count": summary.invited_member_count,
                                    });
                                    if let Some(heroes) = &summary.heroes {
                                        body["m.heroes"] = json!(heroes);
                                    }
                                    body
                                },
                            ),
                        };
                        (&update.room_id, body)
                    })
                    .collect(),
                invite: response
                    .invited
                    .iter()
                    .map(|invite| {
                        let events = stripped_events(invite);
                        (
                            &invite.room_id,
                            json!({ "invite_state": { "events": events } }),
                        )
                    })
                    .collect(),
                leave: response
                    .left
                    .iter()
                    .map(|update| (&update.room_id, room(update)))
                    .collect(),
                knock: response
                    .knocked
                    .iter()
                    .map(|knock| {
                        let events = stripped_events(knock);
                        (
                            &knock.room_id,
                            json!({ "knock_state": { "events": events } }),
                        )
                    })
                    .collect(),
            },
            account_data: account_data_events(&response.account_data),
            presence: presence_events(&response.presence),
            to_device: to_device_events(&response.to_device),
            device_lists: json!({
                "changed": response.device_lists.changed,
                "left": response.device_lists.left,
            }),
            device_one_time_keys_count: &response.one_time_key_counts,
            device_unused_fallback_key_types: &response.unused_fallback_key_types,
        }
    }
}

/// `POST /user/{userId}/filter`: stores a filter verbatim.
pub async fn create_filter(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(user_id): Path<OwnedUserId>,
    body: Bytes,
) -> Result<Reply<Value>, MatrixError> {
    own_user(&session.user_id, &user_id)?;
    let filter: Value = parse_json(&body)?;
    if !filter.is_object() {
        return Err(MatrixError::bad_json("a filter is a JSON object"));
    }
    let filter_id = state
        .sync
        .create_filter(&user_id, &filter.to_string())
        .await
        .map_err(bad_filter)?;
    Ok(Reply(json!({ "filter_id": filter_id })))
}

/// `GET /user/{userId}/filter/{filterId}`.
pub async fn get_filter(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((user_id, filter_id)): Path<(OwnedUserId, String)>,
) -> Result<Response, MatrixError> {
    own_user(&session.user_id, &user_id)?;
    let json = state.sync.filter_json(&user_id, &filter_id).await?;
    let raw: Box<serde_json::value::RawValue> = serde_json::value::RawValue::from_string(json)
        .map_err(|e| MatrixError::from(ServiceError::Internal(e.to_string())))?;
    json_response(&raw)
}

fn own_user(caller: &OwnedUserId, target: &OwnedUserId) -> Result<(), MatrixError> {
    if caller == target {
        Ok(())
    } else {
        Err(ServiceError::Forbidden("you may only manage your own filters".to_owned()).into())
    }
}

fn bad_filter(error: ServiceError) -> MatrixError {
    match error {
        ServiceError::InvalidParam(message) => MatrixError::bad_json(message),
        other => other.into(),
    }
}

#[derive(Debug, Deserialize)]
pub struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: String,
    limit: Option<u32>,
    filter: Option<String>,
}

/// `GET /rooms/{roomId}/messages`.
pub async fn get_message_events(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path(room_id): Path<OwnedRoomId>,
    Query(query): Query<MessagesQuery>,
) -> Result<Response, MatrixError> {
    let direction = match query.dir.as_str() {
        "b" => Direction::Backward,
        "f" => Direction::Forward,
        _ => return Err(MatrixError::invalid_param("dir must be b or f")),
    };
    let filter: EventFilter = match query.filter.as_deref() {
        Some(json) => parse_json(json.as_bytes())?,
        None => EventFilter::default(),
    };
    let from = query.from.as_deref().map(StreamToken::parse).transpose()?;
    let to = query.to.as_deref().map(StreamToken::parse).transpose()?;
    let limit = query.limit.or(filter.limit).unwrap_or(10);
    let page = state
        .sync
        .messages(
            &session.user_id,
            &room_id,
            from,
            to,
            direction,
            limit,
            &filter,
        )
        .await?;
    let transaction_ids = state
        .sync
        .own_transaction_ids(&session.user_id, &session.device_id, &page.events)
        .await?;
    let chunk: Vec<HistoryEvent<'_>> = page
        .events
        .iter()
        .map(|pdu| HistoryEvent::new(pdu, &transaction_ids))
        .collect();
    let mut body = json!({ "chunk": chunk, "start": page.start.to_string() });
    if let Some(end) = page.end {
        body["end"] = json!(end.to_string());
    }
    if !page.state.is_empty() {
        let state: Vec<ClientEvent<'_>> = page.state.iter().map(ClientEvent::from).collect();
        body["state"] = json!(state);
    }
    json_response(&body)
}

/// `GET /rooms/{roomId}/event/{eventId}`.
pub async fn get_room_event(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
) -> Result<Response, MatrixError> {
    let pdu = state
        .sync
        .event(&session.user_id, &room_id, &event_id)
        .await?;
    let events = std::slice::from_ref(&pdu);
    let transaction_ids = state
        .sync
        .own_transaction_ids(&session.user_id, &session.device_id, events)
        .await?;
    json_response(&HistoryEvent::new(&pdu, &transaction_ids))
}

#[derive(Debug, Deserialize)]
pub struct ContextQuery {
    limit: Option<u32>,
    filter: Option<String>,
}

/// `GET /rooms/{roomId}/context/{eventId}`.
pub async fn get_event_context(
    State(state): State<AppState>,
    Authed(session): Authed,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    Query(query): Query<ContextQuery>,
) -> Result<Response, MatrixError> {
    let filter: EventFilter = match query.filter.as_deref() {
        Some(json) => parse_json(json.as_bytes())?,
        None => EventFilter::default(),
    };
    let context = state
        .sync
        .context(
            &session.user_id,
            &room_id,
            &event_id,
            query.limit.unwrap_or(10),
            &filter,
        )
        .await?;
    let shown: Vec<Pdu> = [&context.event]
        .into_iter()
        .chain(&context.before)
        .chain(&context.after)
        .cloned()
        .collect();
    let transaction_ids = state
        .sync
        .own_transaction_ids(&session.user_id, &session.device_id, &shown)
        .await?;
    let history = |events: &'_ [Pdu]| -> Vec<Value> {
        events
            .iter()
            .map(|pdu| json!(HistoryEvent::new(pdu, &transaction_ids)))
            .collect()
    };
    let state_events: Vec<ClientEvent<'_>> = context.state.iter().map(ClientEvent::from).collect();
    json_response(&json!({
        "event": HistoryEvent::new(&context.event, &transaction_ids),
        "events_before": history(&context.before),
        "events_after": history(&context.after),
        "start": context.start.to_string(),
        "end": context.end.to_string(),
        "state": state_events,
    }))
}

/// An event as history reads return it: the ClientEvent format, with the
/// transaction id when the reading device sent it.
#[derive(Serialize)]
struct HistoryEvent<'a> {
    #[serde(flatten)]
    event: ClientEvent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsigned: Option<HistoryUnsigned<'a>>,
}

#[derive(Serialize)]
struct HistoryUnsigned<'a> {
    transaction_id: &'a str,
}

impl<'a> HistoryEvent<'a> {
    fn new(pdu: &'a Pdu, transaction_ids: &'a HashMap<OwnedEventId, String>) -> Self {
        Self {
            // `ClientEvent::from` leaves its own `unsigned` out.
            event: ClientEvent::from(pdu),
            unsigned: transaction_ids
                .get(pdu.event_id())
                .map(|transaction_id| HistoryUnsigned { transaction_id }),
        }
    }
}

/// `m.presence` events for sync's `presence` section, read as of now.
fn presence_events(changes: &[(OwnedUserId, PresenceState)]) -> Value {
    let now = Millis::now().0;
    let events: Vec<Value> = changes
        .iter()
        .map(|(user_id, state)| {
            let view = PresenceView::of(state.clone(), now);
            let mut content = json!({
                "presence": view.presence,
                "currently_active": view.currently_active,
            });
            if let Some(ago) = view.last_active_ago {
                content["last_active_ago"] = Value::from(ago);
            }
            if let Some(msg) = view.status_msg {
                content["status_msg"] = Value::from(msg);
            }
            json!({ "type": "m.presence", "sender": user_id, "content": content })
        })
        .collect();
    json!({ "events": events })
}

/// An invite's or a knock's stripped state: what another server sent with
/// it (for a room held elsewhere), then the events this server holds.
fn stripped_events(update: &InviteUpdate) -> Vec<Value> {
    let mut events = update.remote_state.clone();
    events.extend(
        update
            .invite_state
            .iter()
            .map(|pdu| serde_json::to_value(StrippedEvent::from(pdu)).unwrap_or_default()),
    );
    events
}
