//! The server's signing key: `GET /_matrix/key/v2/server`, persistence across
//! restarts, and the `KeyStore` storage conformance cases.

use std::sync::Arc;

use myelin_server::{
    config::{DatabaseLocation, Secret},
    service::server_keys::{generate_signing_key, verify_key_document},
    storage::{self, Millis, Storage, StorageError},
};
use myelin_tests::{Backend, PostgresDatabase, TestServer, backend_tests};
use reqwest::{StatusCode, header};
use ruma_ids::{CanonicalJsonObject, CanonicalJsonValue};
use serde_json::Value;

backend_tests!(
    key_document_is_published_and_self_signed,
    deprecated_key_id_form_returns_the_same_keys,
    restarted_server_publishes_the_same_key,
    stored_signing_keys_round_trip,
    signing_key_ids_and_the_current_key_are_unique,
    expiring_a_key_erases_its_seed_and_keeps_its_public_key,
);

async fn key_document_is_published_and_self_signed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (document, json) = fetch_keys(&server, "/_matrix/key/v2/server").await;

    assert_eq!(json["server_name"], server.server_name.as_str());
    let (key_id, public_key) = current_key(&json);
    assert!(key_id.starts_with("ed25519:"), "{key_id}");
    assert!(!public_key.is_empty());
    let valid_until = json["valid_until_ts"].as_i64().expect("valid_until_ts");
    assert!(
        valid_until > Millis::now().0,
        "{valid_until} is in the past"
    );
    assert_eq!(json["old_verify_keys"], serde_json::json!({}));
    assert!(
        json["signatures"][&server.server_name][&key_id].is_string(),
        "no signature by {key_id}: {json}"
    );

    // The signature verifies (myelin_crypto::verify_json) against the key
    // the document itself publishes...
    verify_key_document(&document).expect("self-signed");
    // ...and only that key: claim another public key under the same id and
    // it fails.
    let other = generate_signing_key().unwrap();
    let mut swapped = document.clone();
    let verify_keys = CanonicalJsonValue::try_from(serde_json::json!({
        key_id.clone(): { "key": other.public_key().encode() }
    }))
    .unwrap();
    swapped.insert("verify_keys".to_owned(), verify_keys);
    assert!(verify_key_document(&swapped).is_err());

    server.stop().await.unwrap();
}

async fn deprecated_key_id_form_returns_the_same_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, plain) = fetch_keys(&server, "/_matrix/key/v2/server").await;
    let (key_id, _) = current_key(&plain);
    for path in [
        format!("/_matrix/key/v2/server/{key_id}"),
        "/_matrix/key/v2/server/ed25519:unknown".to_owned(),
    ] {
        let (document, json) = fetch_keys(&server, &path).await;
        assert_eq!(json["verify_keys"], plain["verify_keys"], "{path}");
        assert_eq!(json["server_name"], plain["server_name"], "{path}");
        verify_key_document(&document).expect("self-signed");
    }
    server.stop().await.unwrap();
}

async fn restarted_server_publishes_the_same_key(backend: Backend) {
    let data = PersistentData::new(backend).await;
    let first = data.start().await;
    let (_, before) = fetch_keys(&first, "/_matrix/key/v2/server").await;
    first.stop().await.unwrap();

    let second = data.start().await;
    let (document, after) = fetch_keys(&second, "/_matrix/key/v2/server").await;
    assert_eq!(current_key(&after), current_key(&before));
    assert_eq!(after["old_verify_keys"], serde_json::json!({}));
    verify_key_document(&document).expect("self-signed");
    second.stop().await.unwrap();
}

async fn stored_signing_keys_round_trip(backend: Backend) {
    let (store, _keep) = open(backend).await;
    assert!(store.signing_keys().await.unwrap().is_empty());
    let key = generate_signing_key().unwrap();
    store.insert_signing_key(&key, Millis(7)).await.unwrap();

    let stored = store.signing_keys().await.unwrap();
    assert_eq!(stored.len(), 1);
    let stored = &stored[0];
    assert_eq!(stored.key_id, key.key_id());
    assert_eq!(stored.public_key, key.public_key());
    assert_eq!(stored.created, Millis(7));
    assert_eq!(stored.expired, None);
    let loaded = stored
        .signing_key
        .as_ref()
        .expect("current key keeps its seed");
    assert_eq!(loaded.key_id(), key.key_id());
    assert_eq!(loaded.public_key(), key.public_key());
    assert_eq!(*loaded.to_seed_base64(), *key.to_seed_base64());
    let printed = format!("{stored:?}");
    assert!(
        !printed.contains(key.to_seed_base64().as_str()),
        "{printed}"
    );
}

async fn signing_key_ids_and_the_current_key_are_unique(backend: Backend) {
    let (store, _keep) = open(backend).await;
    let key = generate_signing_key().unwrap();
    store.insert_signing_key(&key, Millis(1)).await.unwrap();
    assert!(matches!(
        store.insert_signing_key(&key, Millis(2)).await,
        Err(StorageError::Conflict(_))
    ));
    // A second current key is refused too: servers sharing a database that
    // start together must end up with one key.
    let other = generate_signing_key().unwrap();
    assert!(matches!(
        store.insert_signing_key(&other, Millis(2)).await,
        Err(StorageError::Conflict(_))
    ));
    store
        .expire_signing_key(key.key_id(), Millis(3))
        .await
        .unwrap();
    store.insert_signing_key(&other, Millis(4)).await.unwrap();
    // An expired key's id stays taken.
    assert!(matches!(
        store.insert_signing_key(&key, Millis(5)).await,
        Err(StorageError::Conflict(_))
    ));
    let ids: Vec<_> = store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|stored| stored.key_id)
        .collect();
    assert_eq!(ids, [key.key_id().to_owned(), other.key_id().to_owned()]);
}

async fn expiring_a_key_erases_its_seed_and_keeps_its_public_key(backend: Backend) {
    let (store, _keep) = open(backend).await;
    let key = generate_signing_key().unwrap();
    assert!(matches!(
        store.expire_signing_key(key.key_id(), Millis(2)).await,
        Err(StorageError::NotFound(_))
    ));
    store.insert_signing_key(&key, Millis(1)).await.unwrap();
    store
        .expire_signing_key(key.key_id(), Millis(2))
        .await
        .unwrap();
    // Only the current key can expire; an expired key keeps its first expiry.
    assert!(matches!(
        store.expire_signing_key(key.key_id(), Millis(9)).await,
        Err(StorageError::NotFound(_))
    ));

    let stored = store.signing_keys().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].key_id, key.key_id());
    assert_eq!(stored[0].public_key, key.public_key());
    assert_eq!(stored[0].created, Millis(1));
    assert_eq!(stored[0].expired, Some(Millis(2)));
    assert!(stored[0].signing_key.is_none(), "the seed is erased");
}

/// `GET base_url + path`: asserts a 200 JSON answer and returns it parsed
/// both as canonical JSON (for signature checks) and as plain JSON.
async fn fetch_keys(server: &TestServer, path: &str) -> (CanonicalJsonObject, Value) {
    let response = server
        .client
        .get(format!("{}{path}", server.base_url))
        .send()
        .await
        .expect("request reaches the server");
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let json: Value = response.json().await.expect("JSON body");
    let CanonicalJsonValue::Object(document) =
        CanonicalJsonValue::try_from(json.clone()).expect("canonical JSON")
    else {
        panic!("not an object: {json}");
    };
    (document, json)
}

/// The one `verify_keys` entry: its key id and public key.
fn current_key(json: &Value) -> (String, String) {
    let verify_keys = json["verify_keys"].as_object().expect("verify_keys");
    assert_eq!(verify_keys.len(), 1, "{json}");
    let (key_id, entry) = verify_keys.iter().next().unwrap();
    let key = entry["key"].as_str().expect("key string").to_owned();
    (key_id.clone(), key)
}

/// A data directory and database that outlive the servers started on them,
/// so a test can restart a server on the same data.
pub(crate) struct PersistentData {
    dir: tempfile::TempDir,
    database: Option<PostgresDatabase>,
}

impl PersistentData {
    pub(crate) async fn new(backend: Backend) -> Self {
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres(url) => Some(PostgresDatabase::create(&url).await),
        };
        Self {
            dir: tempfile::tempdir().unwrap(),
            database,
        }
    }

    /// A server on this data. `Backend::Sqlite` only tells the harness not to
    /// create a database of its own; `database_url` picks PostgreSQL.
    pub(crate) async fn start(&self) -> TestServer {
        let data_dir = self.dir.path().to_owned();
        let database_url = self.database.as_ref().map(|db| Secret::new(db.url.clone()));
        TestServer::start_with(Backend::Sqlite, move |config| {
            config.data_dir = data_dir;
            config.database_url = database_url;
        })
        .await
    }
}

/// A storage on a fresh database, with what keeps that database alive.
pub(crate) async fn open(backend: Backend) -> (Arc<dyn Storage>, PersistentData) {
    let data = PersistentData::new(backend).await;
    let location = match &data.database {
        None => DatabaseLocation::Sqlite(data.dir.path().join("myelin.db")),
        Some(database) => DatabaseLocation::Postgres(Secret::new(database.url.clone())),
    };
    (storage::open(&location).await.unwrap(), data)
}
