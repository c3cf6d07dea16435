//! Helpers for the tests of federation received: a server's identity to
//! sign requests and PDUs as it, and a view of a room on the server that
//! receives them.

use std::collections::BTreeMap;

use myelin_crypto::{NewPdu, SigningKey, build_pdu};
use myelin_server::service::{
    federation::auth::{SignedRequest, authorization_header},
    rooms::{auth::auth_events_for, version::RoomVersion},
};
use myelin_tests::TestServer;
use reqwest::{Method, StatusCode, header};
use ruma_ids::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedServerName, OwnedUserId, RoomVersionId, ServerName, UInt, events::TimelineEventType,
};
use serde_json::{Value, json};

/// A server as a test speaks for it: its name and its real signing key.
pub struct Peer {
    /// Its server name.
    pub name: OwnedServerName,
    key: SigningKey,
}

impl Peer {
    /// Speaks for `name` with `key`.
    pub fn new(name: OwnedServerName, key: SigningKey) -> Self {
        Self { name, key }
    }

    /// Speaks for `server` with the key it publishes.
    pub async fn of(server: &TestServer) -> Self {
        let (key_id, seed) = server.signing_key_seed().await;
        let key =
            SigningKey::from_seed_base64(&seed, key_id.strip_prefix("ed25519:").unwrap()).unwrap();
        Self {
            name: ServerName::parse(&server.server_name).unwrap(),
            key,
        }
    }

    /// `@localpart:<this server>`.
    pub fn user(&self, localpart: &str) -> OwnedUserId {
        OwnedUserId::try_from(format!("@{localpart}:{}", self.name)).unwrap()
    }

    /// A request to `to`'s federation listener, signed as this server.
    pub async fn request(
        &self,
        to: &TestServer,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let content: Option<CanonicalJsonObject> = body
            .as_ref()
            .map(|body| serde_json::from_value(body.clone()).unwrap());
        let authorization = authorization_header(
            &self.key,
            &self.name,
            &ServerName::parse(&to.server_name).unwrap(),
            &SignedRequest {
                method: method.as_str(),
                uri: path,
                content: content.as_ref(),
            },
        )
        .unwrap();
        let url = format!("{}{path}", to.federation_url.as_ref().unwrap());
        let mut request = to
            .federation_client()
            .request(method, url)
            .header(header::AUTHORIZATION, authorization);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{status} answer is not JSON: {text:?}"));
        (status, json)
    }

    /// `PUT /send/{txn_id}` to `to` with these PDUs and EDUs.
    pub async fn send(
        &self,
        to: &TestServer,
        txn_id: &str,
        pdus: &[&Value],
        edus: &[Value],
    ) -> (StatusCode, Value) {
        let body = json!({
            "origin": self.name,
            "origin_server_ts": 1_700_000_000_000_u64,
            "pdus": pdus,
            "edus": edus,
        });
        self.request(
            to,
            Method::PUT,
            &format!("/_matrix/federation/v1/send/{txn_id}"),
            Some(body),
        )
        .await
    }

    /// An event of `view`'s room built and signed by this server, on
    /// `prev` (the room's tip when empty), with the auth events the
    /// room's current state gives.
    pub fn event(
        &self,
        view: &RoomView,
        sender: &OwnedUserId,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        prev: &[&Value],
    ) -> (OwnedEventId, Value) {
        let prev: Vec<&Value> = if prev.is_empty() {
            vec![&view.tip]
        } else {
            prev.to_vec()
        };
        let depth = prev
            .iter()
            .map(|p| p["depth"].as_u64().unwrap())
            .max()
            .unwrap()
            + 1;
        let CanonicalJsonValue::Object(content) = CanonicalJsonValue::try_from(content).unwrap()
        else {
            panic!("content must be an object");
        };
        let mut new = NewPdu {
            room_id: Some(view.room_id.clone()),
            sender: sender.clone(),
            event_type: TimelineEventType::from(kind),
            state_key: state_key.map(str::to_owned),
            content,
            prev_events: prev.iter().map(|p| event_id_of(view, p)).collect(),
            auth_events: Vec::new(),
            depth: UInt::new(depth).unwrap(),
            origin_server_ts: MilliSecondsSinceUnixEpoch::now(),
            redacts: None,
            v1_ids: None,
        };
        new.auth_events = auth_events_for(view.version, &new, |kind, key| {
            view.state.get(&(kind.to_string(), key.to_owned())).cloned()
        })
        .unwrap();
        let signed = build_pdu(new, &self.name, &self.key, &view.version.id()).unwrap();
        let (event_id, pdu, _) = signed.into_parts();
        (event_id, serde_json::to_value(pdu).unwrap())
    }
}

/// A room as the receiving server stores it: its current state (type and
/// state key to event id, read by a member) and its newest event.
pub struct RoomView {
    /// The room.
    pub room_id: OwnedRoomId,
    /// Its version.
    pub version: RoomVersion,
    /// `(type, state_key)` → event id.
    pub state: BTreeMap<(String, String), OwnedEventId>,
    /// The newest event's PDU.
    pub tip: Value,
}

impl RoomView {
    /// The room as `server` holds it now, its state read by `token`'s user.
    pub async fn read(server: &TestServer, token: &str, room_id: &str) -> Self {
        let (status, events) = server
            .request(
                Method::GET,
                crate::rooms_support::room_url(server, room_id, "/state"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{events}");
        let mut state = BTreeMap::new();
        let mut version = None;
        for event in events.as_array().unwrap() {
            let key = (
                event["type"].as_str().unwrap().to_owned(),
                event["state_key"].as_str().unwrap().to_owned(),
            );
            if key.0 == "m.room.create" {
                let id = event["content"]["room_version"].as_str().unwrap_or("1");
                version =
                    Some(RoomVersion::try_from(&RoomVersionId::try_from(id).unwrap()).unwrap());
            }
            state.insert(
                key,
                OwnedEventId::try_from(event["event_id"].as_str().unwrap()).unwrap(),
            );
        }
        let tip = stored_json(
            server,
            "SELECT json FROM events WHERE room_id = $1 ORDER BY stream_ordering DESC LIMIT 1",
            room_id,
        )
        .await
        .expect("the room has events");
        Self {
            room_id: OwnedRoomId::try_from(room_id).unwrap(),
            version: version.expect("a create event"),
            state,
            tip,
        }
    }
}

impl RoomView {
    /// The newest event's id.
    pub fn tip_id(&self) -> OwnedEventId {
        event_id_of(self, &self.tip)
    }
}

/// The PDU `server` stores under `event_id` in its timeline, if any.
pub async fn stored_event(server: &TestServer, event_id: &str) -> Option<Value> {
    stored_json(
        server,
        "SELECT json FROM events WHERE event_id = $1",
        event_id,
    )
    .await
}

async fn stored_json(server: &TestServer, query: &str, bind: &str) -> Option<Value> {
    let url = server.database_url();
    let row: Option<(String,)> = if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query_as(query)
            .bind(bind)
            .fetch_optional(&pool)
            .await
            .unwrap()
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query_as(query)
            .bind(bind)
            .fetch_optional(&pool)
            .await
            .unwrap()
    };
    row.map(|(json,)| serde_json::from_str(&json).unwrap())
}

/// The event id of a PDU of `view`'s room.
fn event_id_of(view: &RoomView, pdu: &Value) -> OwnedEventId {
    let object: CanonicalJsonObject = serde_json::from_value(pdu.clone()).unwrap();
    myelin_crypto::event_id(&view.version.id(), &object).unwrap()
}
