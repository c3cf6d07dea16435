//! An independent check of what the server stored: every event in the
//! database is re-verified from its bytes alone (reference-hash event id, or
//! the PDU's own `event_id` in room versions 1 and 2; content hash; the
//! server's signature against its published key) and the DAG links are
//! checked (with the cited reference hashes in versions 1 and 2), after a
//! workload that exercises every room operation in each of the room versions
//! 1 to 12.

use std::collections::HashMap;

use myelin_crypto::{
    PublicKeyMap, Verified, event_id, parse_canonical_object, reference_hash, to_canonical_string,
    verify_event,
};
use myelin_tests::{Backend, TestServer, backend_tests};
use reqwest::{Method, StatusCode};
use ruma_ids::{CanonicalJsonValue, RoomVersionId, serde::Base64};
use serde_json::json;

backend_tests!(every_stored_event_verifies_independently);

/// One stored row: event id, room id, canonical JSON, redacted or not.
pub type Row = (String, String, String, Option<String>);

async fn every_stored_event_verifies_independently(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for version in VERSIONS {
        let (status, created) = server
            .request(
                Method::POST,
                server.v3("/createRoom"),
                Some(&alice.token),
                Some(json!({ "room_version": version, "name": "Checked", "topic": "all of it", "invite": [bob.user_id] })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        let room = created["room_id"].as_str().unwrap().to_owned();
        let room_url = |path: &str| server.v3(&format!("/rooms/{room}{path}"));
        assert_eq!(
            server
                .request(
                    Method::POST,
                    room_url("/join"),
                    Some(&bob.token),
                    Some(json!({}))
                )
                .await
                .0,
            StatusCode::OK
        );
        let (_, sent) = server
            .request(
                Method::PUT,
                room_url("/send/m.room.message/1"),
                Some(&bob.token),
                Some(json!({ "msgtype": "m.text", "body": "h\u{e9}llo \u{1F600} \"quoted\"" })),
            )
            .await;
        let message = sent["event_id"].as_str().unwrap().to_owned();
        server
            .request(
                Method::PUT,
                room_url("/send/org.example.custom/2"),
                Some(&alice.token),
                Some(json!({ "nested": { "b": [1, 2, { "z": null }], "a": true } })),
            )
            .await;
        // Version 3 ids are standard base64, which may hold `/`.
        let redact = room_url(&format!(
            "/redact/{}/3",
            crate::rooms_support::enc(&message)
        ));
        assert_eq!(
            server
                .request(
                    Method::PUT,
                    redact,
                    Some(&alice.token),
                    Some(json!({ "reason": "spam" }))
                )
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            server
                .request(
                    Method::POST,
                    room_url("/leave"),
                    Some(&bob.token),
                    Some(json!({}))
                )
                .await
                .0,
            StatusCode::OK
        );
    }

    let keys = published_keys(&server).await;
    let (rows, versions) = stored_rows(&server.database_url()).await;
    assert!(
        rows.len() >= 10 * VERSIONS.len(),
        "the workload stored {} events",
        rows.len()
    );
    let objects: HashMap<&str, (&str, ruma_ids::CanonicalJsonObject)> = rows
        .iter()
        .map(|(id, room, json, _)| {
            (
                id.as_str(),
                (
                    room.as_str(),
                    parse_canonical_object(json).expect("stored JSON parses"),
                ),
            )
        })
        .collect();

    let mut redacted = 0;
    for (stored_id, room_id, json, redacted_by) in &rows {
        let object = &objects[stored_id.as_str()].1;
        assert_eq!(
            &to_canonical_string(object),
            json,
            "{stored_id} is stored as canonical JSON"
        );
        let version = RoomVersionId::try_from(versions[room_id].as_str()).unwrap();
        let has_origin_chosen_ids = matches!(version, RoomVersionId::V1 | RoomVersionId::V2);
        if has_origin_chosen_ids {
            // Versions 1 and 2: the id is the server's choice, in the PDU.
            assert_eq!(
                object["event_id"],
                CanonicalJsonValue::String(stored_id.clone()),
                "the PDU carries its id"
            );
            assert!(stored_id.ends_with(&format!(":{}", server.server_name)));
        } else {
            assert_eq!(
                event_id(&version, object).unwrap().as_str(),
                stored_id,
                "event id is the reference hash"
            );
        }
        let verified = verify_event(&keys, &version, object).expect("signature verifies");
        match redacted_by {
            None => assert_eq!(verified, Verified::All, "{stored_id}: content hash"),
            Some(_) => {
                // A redacted event keeps its signature; its content hash no longer matches.
                assert_eq!(
                    verified,
                    Verified::SignaturesOnly,
                    "{stored_id} was redacted"
                );
                redacted += 1;
            }
        }
        let depth = integer(&object["depth"]);
        for field in ["prev_events", "auth_events"] {
            let CanonicalJsonValue::Array(ids) = &object[field] else {
                panic!("{field} is an array")
            };
            for entry in ids {
                let (id, hash) = citation(entry, has_origin_chosen_ids);
                let (cited_room, cited) = objects
                    .get(id.as_str())
                    .unwrap_or_else(|| panic!("{stored_id} cites unknown {id}"));
                if let Some(hash) = hash {
                    assert_eq!(
                        hash,
                        &reference_hash(&version, cited).unwrap(),
                        "{stored_id} cites {id} with its reference hash"
                    );
                }
                assert_eq!(
                    cited_room, room_id,
                    "{stored_id} cites {id} from another room"
                );
                if field == "prev_events" {
                    assert!(
                        integer(&cited["depth"]) < depth,
                        "depth grows along prev_events"
                    );
                }
            }
        }
    }
    assert_eq!(redacted, VERSIONS.len(), "one redacted message per room");
}

/// Every stable room version: each has its own event format, hashing and
/// redaction rules.
const VERSIONS: [&str; 12] = [
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
];

/// A `prev_events` or `auth_events` entry: an event id from room version 3,
/// `[id, {"sha256": reference hash}]` before.
fn citation(entry: &CanonicalJsonValue, is_pair: bool) -> (&String, Option<&String>) {
    match entry {
        CanonicalJsonValue::String(id) if !is_pair => (id, None),
        CanonicalJsonValue::Array(pair) if is_pair => match pair.as_slice() {
            [
                CanonicalJsonValue::String(id),
                CanonicalJsonValue::Object(hashes),
            ] => match hashes.get("sha256") {
                Some(CanonicalJsonValue::String(hash)) => (id, Some(hash)),
                other => panic!("citation hash is not a string: {other:?}"),
            },
            other => panic!("citation is not an [id, hashes] pair: {other:?}"),
        },
        other => panic!("unexpected citation {other:?}"),
    }
}

fn integer(value: &CanonicalJsonValue) -> i64 {
    match value {
        CanonicalJsonValue::Integer(i) => i64::from(*i),
        other => panic!("not an integer: {other:?}"),
    }
}

/// The server's keys as `/_matrix/key/v2/server` publishes them.
async fn published_keys(server: &TestServer) -> PublicKeyMap {
    let (status, document) = server
        .request(
            Method::GET,
            format!("{}/_matrix/key/v2/server", server.base_url),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let keys = document["verify_keys"]
        .as_object()
        .expect("verify_keys")
        .iter()
        .map(|(id, key)| {
            (
                id.clone(),
                Base64::parse(key["key"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    PublicKeyMap::from([(server.server_name.clone(), keys)])
}

/// Every event row and every room's version, read straight from the database.
pub async fn stored_rows(url: &str) -> (Vec<Row>, HashMap<String, String>) {
    const EVENTS: &str =
        "SELECT event_id, room_id, json, redacted_by FROM events ORDER BY stream_ordering";
    const ROOMS: &str = "SELECT room_id, room_version FROM rooms";
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let rows: Vec<Row> = sqlx::query_as(EVENTS).fetch_all(&pool).await.unwrap();
        let rooms: Vec<(String, String)> = sqlx::query_as(ROOMS).fetch_all(&pool).await.unwrap();
        (rows, rooms.into_iter().collect())
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let rows: Vec<Row> = sqlx::query_as(EVENTS).fetch_all(&pool).await.unwrap();
        let rooms: Vec<(String, String)> = sqlx::query_as(ROOMS).fetch_all(&pool).await.unwrap();
        (rows, rooms.into_iter().collect())
    }
}
