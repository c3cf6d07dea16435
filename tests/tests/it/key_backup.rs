//! Server-side key backups: versions, keys at the three levels, the spec's
//! replacement rules, stale versions, privacy and malformed bodies.

use myelin_tests::{Account, Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    versions_are_created_read_updated_and_deleted,
    data_is_stored_verbatim,
    keys_are_put_read_and_deleted_at_each_level,
    a_better_key_replaces_a_worse_one_and_not_the_reverse,
    stale_and_unknown_versions_are_refused,
    another_users_backup_is_invisible,
    malformed_requests_are_refused,
);

const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
const ROOM: &str = "!room:localhost";
const OTHER_ROOM: &str = "!other:localhost";

/// A test server with helpers for one user's backup calls.
struct Backups<'a> {
    server: &'a TestServer,
    user: Account,
}

impl<'a> Backups<'a> {
    async fn new(server: &'a TestServer, localpart: &str) -> Self {
        let user = server.register(localpart).await;
        Self { server, user }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.server
            .request(
                method,
                self.server.v3(&format!("/room_keys{path}")),
                Some(&self.user.token),
                body,
            )
            .await
    }

    async fn create(&self, auth_data: Value) -> String {
        let answer = self
            .call(
                Method::POST,
                "/version",
                Some(json!({ "algorithm": ALGORITHM, "auth_data": auth_data })),
            )
            .await;
        assert_eq!(answer.0, StatusCode::OK, "create: {}", answer.1);
        answer.1["version"]
            .as_str()
            .unwrap_or_else(|| panic!("no version in {}", answer.1))
            .to_owned()
    }

    /// `PUT` of one session, expecting success; returns `(count, etag)`.
    async fn put_session(&self, version: &str, session: &str, key: Value) -> (u64, String) {
        let answer = self
            .call(
                Method::PUT,
                &format!("/keys/{ROOM}/{session}?version={version}"),
                Some(key),
            )
            .await;
        counted(&answer)
    }

    async fn session(&self, version: &str, session: &str) -> Value {
        let answer = self
            .call(
                Method::GET,
                &format!("/keys/{ROOM}/{session}?version={version}"),
                None,
            )
            .await;
        assert_eq!(answer.0, StatusCode::OK, "get session: {}", answer.1);
        answer.1
    }
}

/// A key as clients back it up; `tag` makes its session data distinct.
fn key(is_verified: bool, first_message_index: u64, forwarded_count: u64, tag: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": { "ephemeral": tag, "ciphertext": "c", "mac": "m" },
    })
}

/// The `(count, etag)` of a successful keys write.
#[track_caller]
fn counted(answer: &(StatusCode, Value)) -> (u64, String) {
    assert_eq!(answer.0, StatusCode::OK, "keys write: {}", answer.1);
    let count = answer.1["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("no count in {}", answer.1));
    let etag = answer.1["etag"]
        .as_str()
        .unwrap_or_else(|| panic!("no etag in {}", answer.1))
        .to_owned();
    (count, etag)
}

async fn versions_are_created_read_updated_and_deleted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Backups::new(&server, "alice").await;

    let none = alice.call(Method::GET, "/version", None).await;
    assert_error(&none, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let first = alice.create(json!({ "public_key": "one" })).await;
    assert_eq!(first, "1");
    let (status, latest) = alice.call(Method::GET, "/version", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(latest["algorithm"], ALGORITHM);
    assert_eq!(latest["auth_data"], json!({ "public_key": "one" }));
    assert_eq!(latest["version"], "1");
    assert_eq!(latest["count"], 0);
    assert!(latest["etag"].is_string(), "etag in {latest}");

    let second = alice.create(json!({ "public_key": "two" })).await;
    assert_eq!(second, "2");
    let (_, latest) = alice.call(Method::GET, "/version", None).await;
    assert_eq!(latest["version"], "2");
    let (status, old) = alice.call(Method::GET, "/version/1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(old["auth_data"], json!({ "public_key": "one" }));

    // Only auth_data changes; the algorithm and version must stay.
    let update = |algorithm: &str, version: Option<&str>| {
        let mut body = json!({ "algorithm": algorithm, "auth_data": { "public_key": "new" } });
        if let Some(version) = version {
            body["version"] = json!(version);
        }
        alice.call(Method::PUT, "/version/2", Some(body))
    };
    let (status, answer) = update(ALGORITHM, Some("2")).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    let (_, updated) = alice.call(Method::GET, "/version/2", None).await;
    assert_eq!(updated["auth_data"], json!({ "public_key": "new" }));
    assert_eq!(updated["algorithm"], ALGORITHM);
    assert_error(
        &update("org.example.other", None).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &update(ALGORITHM, Some("1")).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let (_, unchanged) = alice.call(Method::GET, "/version/2", None).await;
    assert_eq!(unchanged["auth_data"], json!({ "public_key": "new" }));
    let missing = alice
        .call(
            Method::PUT,
            "/version/9",
            Some(json!({ "algorithm": ALGORITHM, "auth_data": {} })),
        )
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Deleting the latest makes the previous one latest again; a deleted
    // version is gone, and its number is never handed out again.
    let (status, answer) = alice.call(Method::DELETE, "/version/2", None).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    assert_error(
        &alice.call(Method::GET, "/version/2", None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.call(Method::DELETE, "/version/2", None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (_, latest) = alice.call(Method::GET, "/version", None).await;
    assert_eq!(latest["version"], "1");
    assert_eq!(alice.create(json!({})).await, "3");
    for unknown in ["/version/4", "/version/03", "/version/abc", "/version/-1"] {
        assert_error(
            &alice.call(Method::GET, unknown, None).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
    }
}

async fn data_is_stored_verbatim(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Backups::new(&server, "alice").await;
    // Unusual key order and spacing survive only if the text is kept as sent.
    let auth_data = r#"{"z": [1,  2], "a": {"signatures": {}}}"#;
    let session_data = r#"{"mac":"m",  "ephemeral": "e", "ciphertext": [ "c" ]}"#;
    let send = |method: Method, path: &str, body: String| {
        server
            .client
            .request(method, server.v3(&format!("/room_keys{path}")))
            .bearer_auth(&alice.user.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let created = send(
        Method::POST,
        "/version",
        format!(r#"{{"algorithm": "{ALGORITHM}", "auth_data": {auth_data}}}"#),
    )
    .await
    .expect("create");
    assert_eq!(created.status(), StatusCode::OK);
    let put = send(
        Method::PUT,
        &format!("/keys/{ROOM}/s1?version=1"),
        format!(
            r#"{{"first_message_index": 0, "forwarded_count": 0, "is_verified": true, "session_data": {session_data}}}"#
        ),
    )
    .await
    .expect("put");
    assert_eq!(put.status(), StatusCode::OK);

    let text = |path: String| {
        let request = server
            .client
            .get(server.v3(&path))
            .bearer_auth(&alice.user.token);
        async move {
            let response = request.send().await.expect("get");
            response.text().await.expect("body")
        }
    };
    let version = text("/room_keys/version/1".to_owned()).await;
    assert!(
        version.contains(&format!(r#""auth_data":{auth_data}"#)),
        "{version}"
    );
    for path in [
        format!("/room_keys/keys/{ROOM}/s1?version=1"),
        format!("/room_keys/keys/{ROOM}?version=1"),
        "/room_keys/keys?version=1".to_owned(),
    ] {
        let keys = text(path).await;
        assert!(
            keys.contains(&format!(r#""session_data":{session_data}"#)),
            "{keys}"
        );
    }
}

async fn keys_are_put_read_and_deleted_at_each_level(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Backups::new(&server, "alice").await;
    let version = alice.create(json!({})).await;
    let (_, info) = alice.call(Method::GET, "/version", None).await;
    let etag0 = info["etag"].as_str().expect("etag").to_owned();

    // One session.
    let (count, etag1) = alice
        .put_session(&version, "s1", key(false, 0, 0, "a"))
        .await;
    assert_eq!(count, 1);
    assert_ne!(etag1, etag0);
    assert_eq!(alice.session(&version, "s1").await, key(false, 0, 0, "a"));

    // One room: a new session and a better copy of s1.
    let room = json!({ "sessions": { "s1": key(true, 0, 0, "b"), "s2": key(false, 3, 1, "c") } });
    let answer = alice
        .call(
            Method::PUT,
            &format!("/keys/{ROOM}?version={version}"),
            Some(room),
        )
        .await;
    let (count, etag2) = counted(&answer);
    assert_eq!(count, 2);
    assert_ne!(etag2, etag1);

    // Everything: a second room.
    let all = json!({ "rooms": {
        OTHER_ROOM: { "sessions": { "s3": key(false, 0, 2, "d") } },
    } });
    let answer = alice
        .call(Method::PUT, &format!("/keys?version={version}"), Some(all))
        .await;
    let (count, etag3) = counted(&answer);
    assert_eq!(count, 3);
    assert_ne!(etag3, etag2);

    let (status, info) = alice.call(Method::GET, "/version", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (info["count"].clone(), info["etag"].clone()),
        (json!(3), json!(etag3))
    );

    let (status, everything) = alice
        .call(Method::GET, &format!("/keys?version={version}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        everything,
        json!({ "rooms": {
            ROOM: { "sessions": { "s1": key(true, 0, 0, "b"), "s2": key(false, 3, 1, "c") } },
            OTHER_ROOM: { "sessions": { "s3": key(false, 0, 2, "d") } },
        } })
    );
    let (status, room) = alice
        .call(
            Method::GET,
            &format!("/keys/{OTHER_ROOM}?version={version}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(room, json!({ "sessions": { "s3": key(false, 0, 2, "d") } }));
    let (status, empty) = alice
        .call(
            Method::GET,
            &format!("/keys/!empty:localhost?version={version}"),
            None,
        )
        .await;
    assert_eq!((status, empty), (StatusCode::OK, json!({ "sessions": {} })));
    assert_error(
        &alice
            .call(
                Method::GET,
                &format!("/keys/{ROOM}/nope?version={version}"),
                None,
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Deletes, narrowest first; deleting nothing leaves the etag alone.
    let answer = alice
        .call(
            Method::DELETE,
            &format!("/keys/{ROOM}/s1?version={version}"),
            None,
        )
        .await;
    let (count, etag4) = counted(&answer);
    assert_eq!(count, 2);
    assert_ne!(etag4, etag3);
    assert_error(
        &alice
            .call(
                Method::GET,
                &format!("/keys/{ROOM}/s1?version={version}"),
                None,
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let answer = alice
        .call(
            Method::DELETE,
            &format!("/keys/{ROOM}/s1?version={version}"),
            None,
        )
        .await;
    assert_eq!(counted(&answer), (2, etag4.clone()));
    let answer = alice
        .call(
            Method::DELETE,
            &format!("/keys/{ROOM}?version={version}"),
            None,
        )
        .await;
    let (count, etag5) = counted(&answer);
    assert_eq!(count, 1);
    assert_ne!(etag5, etag4);
    let answer = alice
        .call(Method::DELETE, &format!("/keys?version={version}"), None)
        .await;
    let (count, etag6) = counted(&answer);
    assert_eq!(count, 0);
    assert_ne!(etag6, etag5);
    let (_, everything) = alice
        .call(Method::GET, &format!("/keys?version={version}"), None)
        .await;
    assert_eq!(everything, json!({ "rooms": {} }));

    // Deleting a version takes its keys with it.
    alice
        .put_session(&version, "s9", key(false, 0, 0, "z"))
        .await;
    alice
        .call(Method::DELETE, &format!("/version/{version}"), None)
        .await;
    let next = alice.create(json!({})).await;
    let (_, info) = alice
        .call(Method::GET, &format!("/version/{next}"), None)
        .await;
    assert_eq!(info["count"], 0);
}

async fn a_better_key_replaces_a_worse_one_and_not_the_reverse(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Backups::new(&server, "alice").await;
    let version = alice.create(json!({})).await;

    // (stored, worse, better): the worse upload is dropped (etag unchanged),
    // the better one replaces the stored key (etag moves on).
    let cases = [
        // is_verified wins over any index or forwarding count.
        (
            key(false, 0, 0, "old"),
            key(false, 0, 0, "same"),
            key(true, 9, 9, "new"),
        ),
        (
            key(true, 5, 5, "old"),
            key(false, 0, 0, "worse"),
            key(true, 4, 9, "new"),
        ),
        // Then the lower first_message_index.
        (
            key(false, 5, 0, "old"),
            key(false, 6, 0, "worse"),
            key(false, 4, 7, "new"),
        ),
        // Then the lower forwarded_count.
        (
            key(true, 5, 3, "old"),
            key(true, 5, 4, "worse"),
            key(true, 5, 2, "new"),
        ),
    ];
    for (i, (stored, worse, better)) in cases.into_iter().enumerate() {
        let session = format!("case{i}");
        let (count, etag) = alice.put_session(&version, &session, stored.clone()).await;
        assert_eq!(count, u64::try_from(i + 1).expect("small"));

        let (_, kept_etag) = alice.put_session(&version, &session, worse).await;
        assert_eq!(kept_etag, etag, "case {i}: nothing changed");
        assert_eq!(alice.session(&version, &session).await, stored, "case {i}");

        let (count_after, new_etag) = alice.put_session(&version, &session, better.clone()).await;
        assert_eq!(count_after, count, "case {i}: still one copy per session");
        assert_ne!(new_etag, etag, "case {i}: the key changed");
        assert_eq!(alice.session(&version, &session).await, better, "case {i}");
    }

    // The same rules hold for keys uploaded in bulk.
    let bulk = json!({ "rooms": { ROOM: { "sessions": {
        "case0": key(false, 0, 0, "bulk-worse"),
        "case2": key(false, 3, 0, "bulk-better"),
    } } } });
    let answer = alice
        .call(Method::PUT, &format!("/keys?version={version}"), Some(bulk))
        .await;
    assert_eq!(counted(&answer).0, 4);
    assert_eq!(
        alice.session(&version, "case0").await,
        key(true, 9, 9, "new")
    );
    assert_eq!(
        alice.session(&version, "case2").await,
        key(false, 3, 0, "bulk-better")
    );
}

async fn stale_and_unknown_versions_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Backups::new(&server, "alice").await;

    // No backup at all.
    let answer = alice
        .call(
            Method::PUT,
            &format!("/keys/{ROOM}/s?version=1"),
            Some(key(false, 0, 0, "x")),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let old = alice.create(json!({})).await;
    alice.put_session(&old, "s", key(false, 0, 0, "x")).await;
    let current = alice.create(json!({})).await;

    let writes = [
        (
            format!("/keys?version={old}"),
            json!({ "rooms": { ROOM: { "sessions": { "t": key(false, 0, 0, "y") } } } }),
        ),
        (
            format!("/keys/{ROOM}?version={old}"),
            json!({ "sessions": { "t": key(false, 0, 0, "y") } }),
        ),
        (
            format!("/keys/{ROOM}/t?version={old}"),
            key(false, 0, 0, "y"),
        ),
    ];
    for (path, body) in &writes {
        let answer = alice.call(Method::PUT, path, Some(body.clone())).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION");
        assert_eq!(answer.1["current_version"], json!(current), "{path}");
        let unknown = path.replace(&format!("version={old}"), "version=77");
        let answer = alice.call(Method::PUT, &unknown, Some(body.clone())).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let missing = path.replace(&format!("?version={old}"), "");
        let answer = alice.call(Method::PUT, &missing, Some(body.clone())).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    }
    // The refused writes stored nothing, and the old version stays readable.
    let (status, keys) = alice
        .call(Method::GET, &format!("/keys?version={old}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keys,
        json!({ "rooms": { ROOM: { "sessions": { "s": key(false, 0, 0, "x") } } } })
    );

    for method in [Method::GET, Method::DELETE] {
        for path in [
            "/keys?version=77",
            "/keys/!r:localhost?version=77",
            "/keys/!r:localhost/s?version=77",
        ] {
            assert_error(
                &alice.call(method.clone(), path, None).await,
                StatusCode::NOT_FOUND,
                "M_NOT_FOUND",
            );
        }
    }

    // Once the newer version is deleted, the older one is current again,
    // and the deleted one takes no writes.
    alice
        .call(Method::DELETE, &format!("/version/{current}"), None)
        .await;
    let answer = alice
        .call(
            Method::PUT,
            &format!("/keys/{ROOM}/t?version={current}"),
            Some(key(false, 0, 0, "y")),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (count, _) = alice.put_session(&old, "t", key(false, 0, 0, "y")).await;
    assert_eq!(count, 2);
}

async fn another_users_backup_is_invisible(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Backups::new(&server, "alice").await;
    let bob = Backups::new(&server, "bob").await;
    let version = alice.create(json!({ "public_key": "alice" })).await;
    alice
        .put_session(&version, "s", key(true, 0, 0, "alice"))
        .await;

    assert_error(
        &bob.call(Method::GET, "/version", None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    for (method, path, body) in [
        (Method::GET, format!("/version/{version}"), None),
        (
            Method::PUT,
            format!("/version/{version}"),
            Some(json!({ "algorithm": ALGORITHM, "auth_data": {} })),
        ),
        (Method::DELETE, format!("/version/{version}"), None),
        (Method::GET, format!("/keys?version={version}"), None),
        (
            Method::GET,
            format!("/keys/{ROOM}/s?version={version}"),
            None,
        ),
        (
            Method::PUT,
            format!("/keys/{ROOM}/s?version={version}"),
            Some(key(true, 0, 0, "bob")),
        ),
        (Method::DELETE, format!("/keys?version={version}"), None),
    ] {
        let answer = bob.call(method.clone(), &path, body).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }

    // Bob's own first backup has the same number and none of Alice's keys.
    assert_eq!(bob.create(json!({ "public_key": "bob" })).await, version);
    let (_, keys) = bob
        .call(Method::GET, &format!("/keys?version={version}"), None)
        .await;
    assert_eq!(keys, json!({ "rooms": {} }));
    bob.call(Method::DELETE, &format!("/keys?version={version}"), None)
        .await;

    let (_, info) = alice.call(Method::GET, "/version", None).await;
    assert_eq!(info["auth_data"], json!({ "public_key": "alice" }));
    assert_eq!(info["count"], 1);
    assert_eq!(alice.session(&version, "s").await, key(true, 0, 0, "alice"));
}

async fn malformed_requests_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Backups::new(&server, "alice").await;
    let version = alice.create(json!({})).await;
    let raw = |method: Method, path: String, body: &'static str| {
        let request = server
            .client
            .request(method, server.v3(&format!("/room_keys{path}")))
            .bearer_auth(&alice.user.token)
            .body(body);
        async move {
            let response = request.send().await.expect("request");
            let status = response.status();
            (status, response.json::<Value>().await.expect("JSON answer"))
        }
    };
    let session_path = format!("/keys/{ROOM}/s?version={version}");
    for (method, path) in [
        (Method::POST, "/version".to_owned()),
        (Method::PUT, format!("/version/{version}")),
        (Method::PUT, format!("/keys?version={version}")),
        (Method::PUT, format!("/keys/{ROOM}?version={version}")),
        (Method::PUT, session_path.clone()),
    ] {
        let answer = raw(method.clone(), path.clone(), "{not json").await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_NOT_JSON");
        let answer = raw(method, path, "{}").await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }

    let bad_bodies = [
        (
            "/version".to_owned(),
            Method::POST,
            json!({ "algorithm": ALGORITHM, "auth_data": "text" }),
        ),
        (
            "/version".to_owned(),
            Method::POST,
            json!({ "algorithm": 5, "auth_data": {} }),
        ),
        (
            session_path.clone(),
            Method::PUT,
            json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": "text" }),
        ),
        (
            session_path.clone(),
            Method::PUT,
            json!({ "first_message_index": -1, "forwarded_count": 0, "is_verified": false, "session_data": {} }),
        ),
        (
            session_path.clone(),
            Method::PUT,
            json!({ "first_message_index": 0, "forwarded_count": 0, "session_data": {} }),
        ),
        (
            format!("/keys?version={version}"),
            Method::PUT,
            json!({ "rooms": { "not a room": { "sessions": {} } } }),
        ),
        (
            format!("/keys?version={version}"),
            Method::PUT,
            json!({ "rooms": { ROOM: { "sessions": { "s": { "is_verified": true } } } } }),
        ),
    ];
    for (path, method, body) in bad_bodies {
        let answer = alice.call(method, &path, Some(body.clone())).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
    // Nothing was stored by the refused requests.
    let (_, info) = alice.call(Method::GET, "/version", None).await;
    assert_eq!(
        (info["version"].clone(), info["count"].clone()),
        (json!(version), json!(0))
    );

    let answer = server
        .request(Method::GET, server.v3("/room_keys/version"), None, None)
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}
