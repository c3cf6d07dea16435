//! `POST /keys/upload` and `POST /keys/query`: device keys checked against
//! real ed25519 signatures, stored verbatim and served back; one-time key
//! checks; deleting a device deletes its keys; malformed bodies.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::keys_support::{
    Device, SigningKey, claim_one, claimed_key, keys_call, logout, query, signed_part,
};

backend_tests!(
    device_keys_round_trip_with_their_signature,
    device_keys_are_served_byte_for_byte,
    forged_or_altered_device_keys_are_refused,
    a_changed_identity_key_is_refused,
    another_devices_or_users_keys_are_refused,
    one_time_keys_must_be_signed_by_the_device,
    deleting_a_device_deletes_its_keys,
    malformed_key_requests_are_matrix_errors,
);

async fn device_keys_round_trip_with_their_signature(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Device::new(&server.register("alice").await);
    let bob = server.register("bob").await;
    let answer = alice
        .upload(
            &server,
            json!({
                "device_keys": alice.device_keys(),
                "one_time_keys": alice.one_time_keys("a", 5),
            }),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(answer.1["one_time_key_counts"]["signed_curve25519"], 5);

    // Name the device so the server adds unsigned.device_display_name.
    let (status, body) = server
        .request(
            Method::PUT,
            server.v3(&format!("/devices/{}", alice.account.device_id)),
            Some(&alice.account.token),
            Some(json!({ "display_name": "Alice's laptop" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let alice_id = alice.account.user_id.as_str();
    let answer = query(
        &server,
        &bob.token,
        &[alice_id, "@nobody:localhost", "@carol:elsewhere.example"],
    )
    .await;
    let served = &answer["device_keys"][alice_id][&alice.account.device_id];
    assert_eq!(
        signed_part(served),
        alice.unsigned_device_keys(),
        "{answer}"
    );
    assert_eq!(served["signatures"], alice.device_keys()["signatures"]);
    assert_eq!(served["unsigned"]["device_display_name"], "Alice's laptop");
    // The signature still verifies over what is served: re-signing the
    // served object with the same key gives the same signature.
    let resigned = alice.ed25519.sign(alice_id, &signed_part(served));
    assert_eq!(resigned["signatures"], served["signatures"]);
    // An unknown local user has no devices; a remote server is a failure.
    assert_eq!(answer["device_keys"]["@nobody:localhost"], json!({}));
    assert!(
        answer["failures"]["elsewhere.example"].is_object(),
        "{answer}"
    );
    assert!(
        answer["device_keys"]
            .get("@carol:elsewhere.example")
            .is_none()
    );

    // Asking for a named device, and for one that does not exist.
    let (status, named) = keys_call(
        &server,
        &bob.token,
        "/query",
        json!({ "device_keys": { alice_id: [alice.account.device_id, "NOSUCH"] } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let devices = named["device_keys"][alice_id].as_object().expect("devices");
    assert_eq!(
        devices.keys().collect::<Vec<_>>(),
        vec![&alice.account.device_id]
    );

    // Re-uploading identical keys is fine and changes nothing.
    let again = alice
        .upload(&server, json!({ "device_keys": alice.device_keys() }))
        .await;
    assert_eq!(again.0, StatusCode::OK, "{}", again.1);
    assert_eq!(again.1["one_time_key_counts"]["signed_curve25519"], 5);
}

async fn device_keys_are_served_byte_for_byte(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Device::new(&server.register("alice").await);
    let bob = server.register("bob").await;
    // Non-canonical key order and spacing, which a re-serialising server
    // would change.
    let keys = alice.device_keys();
    let text = format!(
        r#"{{ "keys" : {},  "user_id":{}, "signatures": {}, "device_id":{}, "algorithms":{} }}"#,
        keys["keys"], keys["user_id"], keys["signatures"], keys["device_id"], keys["algorithms"]
    );
    let body = format!(r#"{{"device_keys": {text}}}"#);
    let response = server
        .client
        .post(server.v3("/keys/upload"))
        .bearer_auth(&alice.account.token)
        .body(body)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), StatusCode::OK);

    let response = server
        .client
        .post(server.v3("/keys/query"))
        .bearer_auth(&bob.token)
        .json(&json!({ "device_keys": { &alice.account.user_id: [] } }))
        .send()
        .await
        .expect("query");
    let served = response.text().await.expect("body");
    assert!(
        served.contains(&text),
        "uploaded text not served verbatim: {served}"
    );
}

async fn forged_or_altered_device_keys_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Device::new(&server.register("alice").await);
    let user_id = alice.account.user_id.clone();

    // Signed by some other key under the device's key id.
    let impostor = SigningKey::named(&alice.account.device_id);
    let forged = impostor.sign(&user_id, &alice.unsigned_device_keys());
    let answer = alice
        .upload(&server, json!({ "device_keys": forged }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Signed correctly, then altered.
    let mut altered = alice.device_keys();
    altered["algorithms"] = json!(["m.olm.v1.curve25519-aes-sha2"]);
    let answer = alice
        .upload(&server, json!({ "device_keys": altered }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Not signed at all.
    let answer = alice
        .upload(
            &server,
            json!({ "device_keys": alice.unsigned_device_keys() }),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Nothing was stored.
    let answer = query(&server, &alice.account.token, &[&user_id]).await;
    assert_eq!(answer["device_keys"][&user_id], json!({}), "{answer}");
}

async fn a_changed_identity_key_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let account = server.register("alice").await;
    let first = Device::new(&account);
    first.publish(&server).await;

    // The same device id with a new ed25519 key (a thief, or a broken client).
    let replacement = Device::new(&account);
    let answer = replacement
        .upload(&server, json!({ "device_keys": replacement.device_keys() }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Only the curve25519 key changed, signed by the right key.
    let mut same_ed = first.unsigned_device_keys();
    same_ed["keys"][format!("curve25519:{}", account.device_id)] =
        json!(SigningKey::named("c").public);
    let signed = first.ed25519.sign(&account.user_id, &same_ed);
    let answer = first
        .upload(&server, json!({ "device_keys": signed }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    let answer = query(&server, &account.token, &[&account.user_id]).await;
    let served = &answer["device_keys"][&account.user_id][&account.device_id];
    assert_eq!(
        signed_part(served),
        first.unsigned_device_keys(),
        "{answer}"
    );
}

async fn another_devices_or_users_keys_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let other_device = server.login("alice", Some("OTHERDEVICE")).await;
    let bob = server.register("bob").await;

    // Alice's first session uploads keys made for her other device.
    let mut misdirected = Device::new(&other_device);
    misdirected.account.token = alice.token.clone();
    let answer = misdirected
        .upload(&server, json!({ "device_keys": misdirected.device_keys() }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Alice uploads keys claiming to be Bob's device.
    let mut as_bob = Device::new(&bob);
    as_bob.account.token = alice.token.clone();
    let answer = as_bob
        .upload(&server, json!({ "device_keys": as_bob.device_keys() }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    let answer = query(&server, &bob.token, &[&alice.user_id, &bob.user_id]).await;
    assert_eq!(answer["device_keys"][&alice.user_id], json!({}), "{answer}");
    assert_eq!(answer["device_keys"][&bob.user_id], json!({}), "{answer}");
}

async fn one_time_keys_must_be_signed_by_the_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Device::new(&server.register("alice").await);

    // Signed keys before any device keys: nothing to check them against.
    let (id, key) = alice.one_time_key("early", false);
    let answer = alice
        .upload(&server, json!({ "one_time_keys": { id: key } }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    alice.publish(&server).await;
    let user_id = alice.account.user_id.clone();
    let refused = [
        // signed_curve25519 must be a signed object.
        json!({ "signed_curve25519:s": SigningKey::named("k").public }),
        // Signed by another key.
        json!({ "signed_curve25519:o": SigningKey::named(&alice.account.device_id)
            .sign(&user_id, &json!({ "key": SigningKey::named("k").public })) }),
        // No algorithm in the id.
        json!({ "nocolon": alice.one_time_key("x", false).1 }),
        // Not 32 bytes of base64.
        json!({ "curve25519:short": "AAAA" }),
    ];
    for keys in refused {
        let answer = alice
            .upload(&server, json!({ "one_time_keys": keys.clone() }))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let answer = alice
            .upload(&server, json!({ "fallback_keys": keys }))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }

    // A plain curve25519 key is still allowed unsigned, as the spec says.
    let plain = json!({ "curve25519:plain": SigningKey::named("k").public });
    let answer = alice
        .upload(&server, json!({ "one_time_keys": plain }))
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(answer.1["one_time_key_counts"]["curve25519"], 1);
    assert_eq!(answer.1["one_time_key_counts"]["signed_curve25519"], 0);

    // The same id again: fine when identical, refused when different.
    let (id, key) = alice.one_time_key("dup", false);
    for expected in [StatusCode::OK, StatusCode::OK] {
        let answer = alice
            .upload(&server, json!({ "one_time_keys": { &id: key.clone() } }))
            .await;
        assert_eq!(answer.0, expected, "{}", answer.1);
    }
    let (_, other) = alice.one_time_key("dup", false);
    let answer = alice
        .upload(&server, json!({ "one_time_keys": { &id: other } }))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let answer = alice.upload(&server, json!({})).await;
    assert_eq!(answer.1["one_time_key_counts"]["signed_curve25519"], 1);
}

async fn deleting_a_device_deletes_its_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let phone = Device::new(&server.login("alice", Some("PHONE")).await);
    let (fallback_id, fallback) = phone.one_time_key("fb", true);
    let answer = phone
        .upload(
            &server,
            json!({
                "device_keys": phone.device_keys(),
                "one_time_keys": phone.one_time_keys("p", 3),
                "fallback_keys": { fallback_id: fallback },
            }),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    logout(&server, &phone.account.token).await;

    let answer = query(&server, &bob.token, &[&alice.user_id]).await;
    assert_eq!(answer["device_keys"][&alice.user_id], json!({}), "{answer}");
    let claimed = claim_one(&server, &bob.token, &alice.user_id, "PHONE").await;
    assert_eq!(
        claimed_key(&claimed, &alice.user_id, "PHONE"),
        None,
        "{claimed}"
    );

    // Logging in again as PHONE is a new device: new identity keys are fine.
    let reborn = Device::new(&server.login("alice", Some("PHONE")).await);
    reborn.publish(&server).await;
    let answer = reborn.upload(&server, json!({})).await;
    assert_eq!(
        answer.1["one_time_key_counts"],
        json!({ "signed_curve25519": 0 })
    );
}

async fn malformed_key_requests_are_matrix_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Device::new(&server.register("alice").await);
    let token = alice.account.token.clone();
    let raw = |path: &'static str, body: &'static str| {
        let server = &server;
        let token = token.clone();
        async move {
            let response = server
                .client
                .post(server.v3(path))
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .expect("request");
            let status = response.status();
            let json: Value = response.json().await.expect("JSON error");
            (status, json)
        }
    };
    for path in [
        "/keys/upload",
        "/keys/query",
        "/keys/claim",
        "/keys/device_signing/upload",
        "/keys/signatures/upload",
    ] {
        assert_error(
            &raw(path, "{not json").await,
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
        );
    }
    let bad_json = [
        ("/keys/upload", r#"{"one_time_keys": []}"#),
        ("/keys/query", r#"{}"#),
        ("/keys/query", r#"{"device_keys": {"not a user id": []}}"#),
        (
            "/keys/claim",
            r#"{"one_time_keys": {"@a:localhost": {"D": 5}}}"#,
        ),
        ("/keys/signatures/upload", r#"{"@a:localhost": []}"#),
        ("/keys/device_signing/upload", r#"[]"#),
        // Malformed key objects: the spec's shapes, wrong types.
        ("/keys/upload", r#"{"device_keys": "a string"}"#),
        ("/keys/upload", r#"{"device_keys": {"user_id": 5}}"#),
        (
            "/keys/upload",
            r#"{"device_keys": {"user_id": "@a:localhost", "device_id": "D", "algorithms": "x", "keys": {}}}"#,
        ),
        (
            "/keys/upload",
            r#"{"device_keys": {"user_id": "@a:localhost", "device_id": "D", "algorithms": ["x"], "keys": "nope"}}"#,
        ),
        (
            "/keys/upload",
            r#"{"one_time_keys": {"signed_curve25519:a": 1.5}}"#,
        ),
    ];
    for (path, body) in bad_json {
        assert_error(
            &raw(path, body).await,
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        );
    }
    let invalid = [(
        "/keys/device_signing/upload",
        r#"{"master_key": {"keys": {}}}"#,
    )];
    for (path, body) in invalid {
        assert_error(
            &raw(path, body).await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        );
    }
    let changes = |query: &str| server.v3(&format!("/keys/changes{query}"));
    for query in ["", "?from=s1_0", "?from=nonsense&to=s1_0"] {
        let answer = server
            .request(Method::GET, changes(query), Some(&token), None)
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    let answer = server
        .request(
            Method::POST,
            server.v3("/keys/upload"),
            None,
            Some(json!({})),
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}
