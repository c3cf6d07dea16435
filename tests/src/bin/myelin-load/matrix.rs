//! The handful of Client-Server API endpoints the load tool uses, standard
//! v3 only, so that any homeserver can be measured.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{Api, REQUEST_TIMEOUT, api_error, encode_query, encode_segment};

/// Every load-test account gets this password (long enough for any policy).
pub const PASSWORD: &str = "myelin-load-password-0123456789";

/// A logged-in account.
#[derive(Debug, Clone)]
pub struct Session {
    /// The full user id, e.g. `@load_ab12_send_3:localhost`.
    pub user_id: String,
    /// Its access token (never printed).
    pub token: String,
}

/// Registers `username` with the `m.login.dummy` user-interactive flow:
/// a first request to get the session, a second to complete the stage.
pub async fn register(api: &Api, username: &str) -> anyhow::Result<Session> {
    let mut body = json!({
        "username": username,
        "password": PASSWORD,
        "initial_device_display_name": "myelin-load",
    });
    let first = api
        .request(
            Method::POST,
            "/register",
            None,
            Some(&body),
            REQUEST_TIMEOUT,
        )
        .await?;
    let reply = match first.status {
        s if s.is_success() => first,
        StatusCode::UNAUTHORIZED => {
            let session = first.body.get("session").and_then(Value::as_str);
            if !offers_dummy_flow(&first.body) {
                bail!(
                    "POST /_matrix/client/v3/register offers no m.login.dummy-only flow (flows: {})",
                    first.body.get("flows").unwrap_or(&Value::Null)
                );
            }
            let mut auth = json!({"type": "m.login.dummy"});
            if let Some(session) = session {
                auth["session"] = json!(session);
            }
            body["auth"] = auth;
            let second = api
                .request(
                    Method::POST,
                    "/register",
                    None,
                    Some(&body),
                    REQUEST_TIMEOUT,
                )
                .await?;
            if !second.status.is_success() {
                return Err(api_error(Method::POST, "/register", &second).into());
            }
            second
        }
        _ => return Err(api_error(Method::POST, "/register", &first).into()),
    };
    session_from(&reply.body).context("POST /_matrix/client/v3/register")
}

/// Whether a 401 UIA body offers a flow made of `m.login.dummy` alone.
fn offers_dummy_flow(body: &Value) -> bool {
    body.get("flows")
        .and_then(Value::as_array)
        .is_some_and(|flows| {
            flows.iter().any(|flow| {
                flow.get("stages")
                    .and_then(Value::as_array)
                    .is_some_and(|stages| {
                        stages.len() == 1 && stages[0].as_str() == Some("m.login.dummy")
                    })
            })
        })
}

fn session_from(body: &Value) -> anyhow::Result<Session> {
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("the answer has no string {name:?}"))
    };
    Ok(Session {
        user_id: field("user_id")?,
        token: field("access_token")?,
    })
}

/// Creates a public room (so that others may join) and returns its id.
pub async fn create_room(api: &Api, session: &Session, name: &str) -> anyhow::Result<String> {
    let body = json!({"preset": "public_chat", "name": name});
    let answer = api
        .call(
            Method::POST,
            "/createRoom",
            Some(&session.token),
            Some(&body),
            REQUEST_TIMEOUT,
        )
        .await?;
    answer
        .get("room_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("POST /_matrix/client/v3/createRoom: the answer has no room_id")
}

/// Joins `room_id`.
pub async fn join(api: &Api, session: &Session, room_id: &str) -> anyhow::Result<()> {
    let path = format!("/rooms/{}/join", encode_segment(room_id));
    api.call(
        Method::POST,
        &path,
        Some(&session.token),
        Some(&json!({})),
        REQUEST_TIMEOUT,
    )
    .await?;
    Ok(())
}

/// Sends an `m.room.message` with `content`; returns the event id.
pub async fn send_message(
    api: &Api,
    session: &Session,
    room_id: &str,
    txn_id: &str,
    content: &Value,
) -> anyhow::Result<String> {
    let path = format!(
        "/rooms/{}/send/m.room.message/{}",
        encode_segment(room_id),
        encode_segment(txn_id)
    );
    let answer = api
        .call(
            Method::PUT,
            &path,
            Some(&session.token),
            Some(content),
            REQUEST_TIMEOUT,
        )
        .await?;
    answer
        .get("event_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("PUT /_matrix/client/v3/rooms/…/send: the answer has no event_id")
}

/// Uploads a filter; returns its id.
pub async fn upload_filter(api: &Api, session: &Session, filter: &Value) -> anyhow::Result<String> {
    let path = format!("/user/{}/filter", encode_segment(&session.user_id));
    let answer = api
        .call(
            Method::POST,
            &path,
            Some(&session.token),
            Some(filter),
            REQUEST_TIMEOUT,
        )
        .await?;
    answer
        .get("filter_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("POST /_matrix/client/v3/user/…/filter: the answer has no filter_id")
}

/// `GET /sync`; `filter` is a filter id or inline JSON; `timeout_ms` is the long-poll.
pub async fn sync(
    api: &Api,
    session: &Session,
    since: Option<&str>,
    filter: Option<&str>,
    timeout_ms: Option<u64>,
) -> anyhow::Result<Value> {
    let mut query = Vec::new();
    if let Some(since) = since {
        query.push(format!("since={}", encode_query(since)));
    }
    if let Some(filter) = filter {
        query.push(format!("filter={}", encode_query(filter)));
    }
    if let Some(timeout_ms) = timeout_ms {
        query.push(format!("timeout={timeout_ms}"));
    }
    let path = if query.is_empty() {
        "/sync".to_owned()
    } else {
        format!("/sync?{}", query.join("&"))
    };
    let timeout = REQUEST_TIMEOUT + Duration::from_millis(timeout_ms.unwrap_or(0));
    api.call(Method::GET, &path, Some(&session.token), None, timeout)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_flow_is_recognised() {
        let synapse = json!({
            "session": "abc",
            "flows": [{"stages": ["m.login.dummy"]}, {"stages": ["m.login.email.identity"]}],
            "params": {}
        });
        assert!(offers_dummy_flow(&synapse));
        let token_only = json!({"flows": [{"stages": ["m.login.registration_token"]}]});
        assert!(!offers_dummy_flow(&token_only));
        let dummy_after_token =
            json!({"flows": [{"stages": ["m.login.registration_token", "m.login.dummy"]}]});
        assert!(!offers_dummy_flow(&dummy_after_token));
        assert!(!offers_dummy_flow(&json!({"flows": "nonsense"})));
        assert!(!offers_dummy_flow(&Value::Null));
    }

    #[test]
    fn session_needs_user_id_and_token() {
        let ok = json!({"user_id": "@a:h", "access_token": "t", "device_id": "D"});
        let session = session_from(&ok).expect("complete answer");
        assert_eq!(session.user_id, "@a:h");
        assert!(session_from(&json!({"user_id": "@a:h"})).is_err());
        assert!(session_from(&json!({"user_id": 5, "access_token": "t"})).is_err());
    }
}
