//! A fake federation peer: a TLS listener on loopback named
//! `localhost:PORT`, with its own signing key, that serves its key
//! document and canned answers to `/get_missing_events` and `/event`, and
//! records what it was asked. Servers reach it through their
//! `[federation] addresses`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use myelin_crypto::SigningKey;
use myelin_server::{config::Config, http::tls::TlsListener};
use ruma_ids::{OwnedServerName, ServerName};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{federation_inbound_support::Peer, federation_transport::key_document};

/// A fixed seed: the peer's identity need not be secret.
const SEED: &str = "bXllbGluLWZha2UtcGVlci1zaWduaW5nLWtleS0wMDE";

/// What the peer answers and what it was asked.
#[derive(Default)]
struct Canned {
    missing_events: Mutex<Vec<Value>>,
    events: Mutex<HashMap<String, Value>>,
    asked_missing: Mutex<Vec<Value>>,
}

/// A running fake peer.
pub struct FakePeer {
    /// Its server name, `localhost:PORT`.
    pub name: OwnedServerName,
    /// `127.0.0.1:PORT`.
    pub address: String,
    canned: Arc<Canned>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl FakePeer {
    /// Starts the peer on an ephemeral loopback port.
    pub async fn start() -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let name = ServerName::parse(format!("localhost:{port}")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tls = myelin_tests::self_signed_certificate(dir.path());
        let listener = TlsListener::new(tcp, &tls).unwrap();
        let canned = Arc::new(Canned::default());
        let key = signing_key();
        let document = key_document(
            name.as_str(),
            &key,
            myelin_server::storage::Millis::now().0 + 24 * 60 * 60 * 1000,
            &[],
        );
        let document = serde_json::to_value(document).unwrap();
        let app = Router::new()
            .route(
                "/_matrix/key/v2/server",
                get(move || async move { Json(document) }),
            )
            .route(
                "/_matrix/federation/v1/get_missing_events/{room_id}",
                post(missing_events),
            )
            .route("/_matrix/federation/v1/event/{event_id}", get(event))
            .with_state(canned.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self {
            name,
            address: format!("127.0.0.1:{port}"),
            canned,
            task,
            _dir: dir,
        }
    }

    /// Lets a test server reach the peer by name.
    pub fn add_to(&self, config: &mut Config) {
        config
            .federation
            .addresses
            .insert(self.name.to_string(), self.address.clone());
    }

    /// The peer's identity, to sign PDUs and requests as it.
    pub fn identity(&self) -> Peer {
        Peer::new(self.name.clone(), signing_key())
    }

    /// What `/get_missing_events` answers from now on.
    pub fn answer_missing_events(&self, events: Vec<Value>) {
        *self.canned.missing_events.lock().unwrap() = events;
    }

    /// Events `/event/{eventId}` serves.
    pub fn serve_event(&self, event_id: &str, pdu: Value) {
        self.canned
            .events
            .lock()
            .unwrap()
            .insert(event_id.to_owned(), pdu);
    }

    /// The bodies of the `/get_missing_events` requests received so far.
    pub fn missing_events_asked(&self) -> Vec<Value> {
        self.canned.asked_missing.lock().unwrap().clone()
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn signing_key() -> SigningKey {
    SigningKey::from_seed_base64(SEED, "fake").unwrap()
}

async fn missing_events(
    State(canned): State<Arc<Canned>>,
    Path(_room_id): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    canned.asked_missing.lock().unwrap().push(body);
    let events = canned.missing_events.lock().unwrap().clone();
    Json(json!({ "events": events }))
}

async fn event(
    State(canned): State<Arc<Canned>>,
    Path(event_id): Path<String>,
) -> impl IntoResponse {
    match canned.events.lock().unwrap().get(&event_id) {
        Some(pdu) => (
            StatusCode::OK,
            Json(json!({ "origin": "fake", "origin_server_ts": 0, "pdus": [pdu] })),
        ),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "errcode": "M_NOT_FOUND", "error": "no such event" })),
        ),
    }
}
