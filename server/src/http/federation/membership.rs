//! Joins, leaves, knocks and invites from other servers:
//! `make_join`/`send_join`, `make_leave`/`send_leave`,
//! `make_knock`/`send_knock` and `invite` (v2).

use axum::{
    Json,
    extract::{Path, RawQuery, State},
};
use ruma::{CanonicalJsonObject, OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::Signed;
use crate::{
    http::{AppState, error::MatrixError},
    service::{
        federation::membership::{MembershipKind, SendJoinAnswer},
        rooms::pdu::Pdu,
    },
};

/// Room versions named in one `ver` list at most.
const MAX_VERSIONS: usize = 64;

/// `GET /v1/make_join/{roomId}/{userId}?ver=…`.
pub async fn create_join_event_template(
    state: State<AppState>,
    path: Path<(OwnedRoomId, OwnedUserId)>,
    query: RawQuery,
    signed: Signed<IgnoredAny>,
) -> Result<Json<Value>, MatrixError> {
    make(state, path, query, signed, MembershipKind::Join).await
}

/// `GET /v1/make_leave/{roomId}/{userId}`.
pub async fn create_leave_event_template(
    state: State<AppState>,
    path: Path<(OwnedRoomId, OwnedUserId)>,
    query: RawQuery,
    signed: Signed<IgnoredAny>,
) -> Result<Json<Value>, MatrixError> {
    make(state, path, query, signed, MembershipKind::Leave).await
}

/// `GET /v1/make_knock/{roomId}/{userId}?ver=…`.
pub async fn create_knock_event_template(
    state: State<AppState>,
    path: Path<(OwnedRoomId, OwnedUserId)>,
    query: RawQuery,
    signed: Signed<IgnoredAny>,
) -> Result<Json<Value>, MatrixError> {
    make(state, path, query, signed, MembershipKind::Knock).await
}

/// `PUT /v2/send_join/{roomId}/{eventId}`: the state before the join is
/// always whole (`omit_members` is not honoured: `members_omitted` is false).
pub async fn create_join_event(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    signed: Signed<CanonicalJsonObject>,
) -> Result<Json<Value>, MatrixError> {
    without_nul(&[room_id.as_str(), event_id.as_str()])?;
    let join = state
        .membership
        .send_membership(
            &signed.origin,
            &room_id,
            &event_id,
            MembershipKind::Join,
            signed.body,
        )
        .await?;
    let SendJoinAnswer {
        state: room_state,
        auth_chain,
        countersigned,
        servers_in_room,
    } = state.membership.send_join_answer(&join).await?;
    let mut answer = json!({
        "origin": state.federation.server_name(),
        "state": events_json(&room_state),
        "auth_chain": events_json(&auth_chain),
        "members_omitted": false,
        "servers_in_room": servers_in_room,
    });
    if let Some(event) = countersigned {
        answer["event"] = event_json(&event);
    }
    Ok(Json(answer))
}

/// `PUT /v2/send_leave/{roomId}/{eventId}`.
pub async fn create_leave_event(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    signed: Signed<CanonicalJsonObject>,
) -> Result<Json<Value>, MatrixError> {
    without_nul(&[room_id.as_str(), event_id.as_str()])?;
    state
        .membership
        .send_membership(
            &signed.origin,
            &room_id,
            &event_id,
            MembershipKind::Leave,
            signed.body,
        )
        .await?;
    Ok(Json(json!({})))
}

/// `PUT /v1/send_knock/{roomId}/{eventId}`: answers the stripped state
/// that describes the room to the knocker.
pub async fn create_knock_event(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    signed: Signed<CanonicalJsonObject>,
) -> Result<Json<Value>, MatrixError> {
    without_nul(&[room_id.as_str(), event_id.as_str()])?;
    let knock = state
        .membership
        .send_membership(
            &signed.origin,
            &room_id,
            &event_id,
            MembershipKind::Knock,
            signed.body,
        )
        .await?;
    let stripped = state.membership.knock_room_state(&knock).await?;
    Ok(Json(json!({ "knock_room_state": stripped })))
}

#[derive(Debug, Deserialize)]
pub struct InviteBody {
    room_version: String,
    event: CanonicalJsonObject,
    #[serde(default)]
    invite_room_state: Vec<Value>,
}

/// `PUT /v2/invite/{roomId}/{eventId}`: answers the invite with this
/// server's signature added.
pub async fn create_invite(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(OwnedRoomId, OwnedEventId)>,
    signed: Signed<InviteBody>,
) -> Result<Json<Value>, MatrixError> {
    without_nul(&[room_id.as_str(), event_id.as_str()])?;
    let body = signed.body;
    let event = state
        .membership
        .receive_invite(
            &signed.origin,
            &room_id,
            &event_id,
            &body.room_version,
            body.event,
            &body.invite_room_state,
        )
        .await?;
    Ok(Json(
        json!({ "event": Value::from(ruma::CanonicalJsonValue::Object(event)) }),
    ))
}

async fn make(
    State(state): State<AppState>,
    Path((room_id, user_id)): Path<(OwnedRoomId, OwnedUserId)>,
    RawQuery(query): RawQuery,
    signed: Signed<IgnoredAny>,
    kind: MembershipKind,
) -> Result<Json<Value>, MatrixError> {
    without_nul(&[room_id.as_str(), user_id.as_str()])?;
    let versions: Vec<String> = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.strip_prefix("ver="))
        .take(MAX_VERSIONS)
        .map(str::to_owned)
        .collect();
    let (version, template) = state
        .membership
        .make_membership(&signed.origin, &room_id, &user_id, kind, &versions)
        .await?;
    Ok(Json(json!({
        "room_version": version.to_string(),
        "event": Value::from(ruma::CanonicalJsonValue::Object(template)),
    })))
}

/// Refuses identifiers with NUL characters, which no database text
/// column (PostgreSQL's least of all) can hold.
fn without_nul(ids: &[&str]) -> Result<(), MatrixError> {
    if ids.iter().any(|id| id.contains('\0')) {
        return Err(MatrixError::invalid_param(
            "identifiers must not contain NUL characters",
        ));
    }
    Ok(())
}

fn events_json(pdus: &[Pdu]) -> Vec<Value> {
    pdus.iter().map(event_json).collect()
}

fn event_json(pdu: &Pdu) -> Value {
    Value::from(ruma::CanonicalJsonValue::Object(pdu.as_object().clone()))
}
