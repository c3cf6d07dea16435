//! `GET /notifications`: the events that notified the user, by their push
//! rules, newest first (spec-notes/push.md).

use axum::{Json as Reply, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::events::ClientEvent;
use crate::{
    http::{
        AppState,
        error::MatrixError,
        extract::{Authed, Query},
    },
    service::{ServiceError, push::MAX_NOTIFICATIONS_PAGE},
    storage::StreamPosition,
};

/// A page when the client names no `limit`.
const DEFAULT_LIMIT: usize = 20;

#[derive(Debug, Deserialize)]
pub struct NotificationsQuery {
    from: Option<String>,
    limit: Option<usize>,
    only: Option<String>,
}

/// `GET /notifications`.
pub async fn get_notifications(
    State(state): State<AppState>,
    Authed(session): Authed,
    Query(query): Query<NotificationsQuery>,
) -> Result<Reply<Value>, MatrixError> {
    let from = match query.from.as_deref() {
        None => None,
        Some(token) => Some(StreamPosition(token.parse().map_err(|_| {
            ServiceError::InvalidParam("from is not a token this server gave".to_owned())
        })?)),
    };
    let limit = query
        .limit
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, MAX_NOTIFICATIONS_PAGE);
    let only_highlights = match query.only.as_deref() {
        None => false,
        Some("highlight") => true,
        Some(_) => {
            return Err(ServiceError::InvalidParam("only may be highlight".to_owned()).into());
        }
    };
    let page = state
        .push
        .notifications(&session.user_id, from, limit, only_highlights)
        .await?;
    let next_token = (page.len() >= limit)
        .then(|| page.last().map(|last| last.position.0.to_string()))
        .flatten();
    let mut notifications = Vec::with_capacity(page.len());
    for notification in page {
        // An event the user may no longer see (they left and it was
        // redacted, or it is gone) is left out, not an error.
        let event = match state
            .sync
            .event(
                &session.user_id,
                &notification.room_id,
                &notification.event_id,
            )
            .await
        {
            Ok(event) => event,
            Err(ServiceError::NotFound(_) | ServiceError::Forbidden(_)) => continue,
            Err(error) => return Err(error.into()),
        };
        let actions: Value = serde_json::from_str(&notification.actions).unwrap_or(json!([]));
        notifications.push(json!({
            "actions": actions,
            "event": ClientEvent::from(&event),
            "read": notification.is_read,
            "room_id": notification.room_id,
            "ts": notification.ts,
        }));
    }
    let mut body = json!({ "notifications": notifications });
    if let Some(next_token) = next_token {
        body["next_token"] = Value::from(next_token);
    }
    Ok(Reply(body))
}
