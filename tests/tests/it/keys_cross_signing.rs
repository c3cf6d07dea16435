//! Cross-signing: `POST /keys/device_signing/upload` with user-interactive
//! auth and key checks, `POST /keys/signatures/upload` with failures, and
//! the signatures merged into `/keys/query`.

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    keys_support::{
        CrossSigning, Device, SigningKey, keys_call, password_auth, query, signed_part,
        upload_signing_keys,
    },
    rooms_support::{create_room, join},
    sync_support::{next_batch, sync_ok, sync_since},
};

backend_tests!(
    first_upload_is_free_and_replacing_needs_the_password,
    bad_cross_signing_keys_are_refused,
    signatures_are_checked_stored_and_shown_to_the_right_users,
);

async fn first_upload_is_free_and_replacing_needs_the_password(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let first = CrossSigning::new(&alice.user_id);

    // No master key yet: no UIA (MSC3967).
    let answer = upload_signing_keys(&server, &alice.token, first.upload_body()).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    // Exactly the stored keys again: no UIA either (a retried request).
    let answer = upload_signing_keys(&server, &alice.token, first.upload_body()).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    let seen_by_bob = query(&server, &bob.token, &[&alice.user_id]).await;
    assert_eq!(
        seen_by_bob["master_keys"][&alice.user_id],
        first.master_key()
    );
    assert_eq!(
        seen_by_bob["self_signing_keys"][&alice.user_id],
        first.self_signing_key()
    );
    assert!(
        seen_by_bob["user_signing_keys"]
            .get(&alice.user_id)
            .is_none(),
        "the user-signing key is only for its owner: {seen_by_bob}"
    );
    let own = query(&server, &alice.token, &[&alice.user_id]).await;
    assert_eq!(
        own["user_signing_keys"][&alice.user_id],
        first.user_signing_key()
    );

    // New keys: the password is required (a stolen token is not enough).
    let second = CrossSigning::new(&alice.user_id);
    let challenge = upload_signing_keys(&server, &alice.token, second.upload_body()).await;
    assert_eq!(challenge.0, StatusCode::UNAUTHORIZED, "{}", challenge.1);
    assert_eq!(
        challenge.1["flows"][0]["stages"],
        json!(["m.login.password"])
    );
    let session = challenge.1["session"].clone();

    let mut wrong = second.upload_body();
    wrong["auth"] = password_auth("alice", &session);
    wrong["auth"]["password"] = json!("not the password");
    let answer = upload_signing_keys(&server, &alice.token, wrong).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "M_FORBIDDEN");
    let unchanged = query(&server, &bob.token, &[&alice.user_id]).await;
    assert_eq!(unchanged["master_keys"][&alice.user_id], first.master_key());

    // A new master key alone, with the password: the old self-signing key
    // (signed by the old master key) goes.
    let body = json!({
        "master_key": second.master_key(),
        "auth": password_auth("alice", &session),
    });
    let answer = upload_signing_keys(&server, &alice.token, body).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let replaced = query(&server, &alice.token, &[&alice.user_id]).await;
    assert_eq!(replaced["master_keys"][&alice.user_id], second.master_key());
    assert!(
        replaced["self_signing_keys"].get(&alice.user_id).is_none(),
        "{replaced}"
    );
    assert!(
        replaced["user_signing_keys"].get(&alice.user_id).is_none(),
        "{replaced}"
    );
}

async fn bad_cross_signing_keys_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let keys = CrossSigning::new(&alice.user_id);
    let upload = |body: Value| upload_signing_keys(&server, &alice.token, body);

    // Self- or user-signing keys before any master key.
    let answer = upload(json!({ "self_signing_key": keys.self_signing_key() })).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Not signed by the master key: unsigned, or signed by another key.
    let unsigned_ssk = keys.key_object(&keys.self_signing, "self_signing");
    let impostor = SigningKey::self_named();
    let wrongly_signed = impostor.sign(&alice.user_id, &unsigned_ssk);
    for ssk in [unsigned_ssk.clone(), wrongly_signed] {
        let body = json!({ "master_key": keys.master_key(), "self_signing_key": ssk });
        assert_error(
            &upload(body).await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_SIGNATURE",
        );
    }
    let unsigned_usk = keys.key_object(&keys.user_signing, "user_signing");
    let body = json!({ "master_key": keys.master_key(), "user_signing_key": unsigned_usk });
    assert_error(
        &upload(body).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_SIGNATURE",
    );

    // Wrong usage, someone else's user id, a key id that does not name the key.
    let mut wrong_usage = keys.master_key();
    wrong_usage["usage"] = json!(["self_signing"]);
    let mut someone_else = keys.master_key();
    someone_else["user_id"] = json!("@bob:localhost");
    let mut misnamed = keys.master_key();
    misnamed["keys"] = json!({ "ed25519:other": keys.master.public });
    let mut two_keys = keys.master_key();
    two_keys["keys"][format!("ed25519:{}", keys.self_signing.public)] =
        json!(keys.self_signing.public);
    for master in [wrong_usage, someone_else, misnamed, two_keys] {
        let answer = upload(json!({ "master_key": master })).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    assert_error(
        &upload(json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );

    // Nothing was stored.
    let answer = query(&server, &alice.token, &[&alice.user_id]).await;
    assert_eq!(answer["master_keys"], json!({}), "{answer}");
}

async fn signatures_are_checked_stored_and_shown_to_the_right_users(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Device::new(&server.register("alice").await);
    let bob_account = server.register("bob").await;
    let carol = server.register("carol").await;
    let a = alice.account.user_id.clone();
    let b = bob_account.user_id.clone();
    alice.publish(&server).await;
    let alice_keys = CrossSigning::new(&a);
    let bob_keys = CrossSigning::new(&b);
    for (token, keys) in [
        (&alice.account.token, &alice_keys),
        (&bob_account.token, &bob_keys),
    ] {
        let answer = upload_signing_keys(&server, token, keys.upload_body()).await;
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    }
    // Bob and carol share a room; alice shares one with bob.
    let room = create_room(
        &server,
        &bob_account.token,
        json!({ "preset": "public_chat" }),
    )
    .await;
    join(&server, &carol.token, &room).await;
    join(&server, &alice.account.token, &room).await;
    let alice_since = next_batch(&sync_ok(&server, &alice.account.token, &[]).await);
    let bob_since = next_batch(&sync_ok(&server, &bob_account.token, &[]).await);
    let carol_since = next_batch(&sync_ok(&server, &carol.token, &[]).await);

    let device_id = alice.account.device_id.clone();
    let ssk_id = format!("ed25519:{}", alice_keys.self_signing.public);
    let device_signed = alice_keys.self_signing.sign(&a, &alice.device_keys());
    let master_by_device = alice.ed25519.sign(&a, &alice_keys.master_key());
    let bob_master_signed = alice_keys.user_signing.sign(&a, &bob_keys.master_key());
    let forged_device =
        SigningKey::named(&alice_keys.self_signing.public).sign(&a, &alice.device_keys());
    let mut altered = alice_keys.self_signing.sign(&a, &alice.device_keys());
    altered["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    let body = json!({
        a.clone(): {
            device_id.clone(): device_signed,
            alice_keys.master.public.clone(): master_by_device,
            "NOSUCHKEY": alice.device_keys(),
        },
        b.clone(): {
            bob_keys.master.public.clone(): bob_master_signed,
        },
    });
    let answer = keys_call(&server, &alice.account.token, "/signatures/upload", body).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(
        answer.1["failures"][&a]["NOSUCHKEY"]["errcode"], "M_NOT_FOUND",
        "{}",
        answer.1
    );
    assert_eq!(
        answer.1["failures"].as_object().map(|f| f.len()),
        Some(1),
        "{}",
        answer.1
    );

    // Forged and altered signed objects are reported and not stored.
    for (object, errcode) in [
        (forged_device, "M_INVALID_SIGNATURE"),
        (altered, "M_INVALID_PARAM"),
    ] {
        let body = json!({ a.clone(): { device_id.clone(): object } });
        let answer = keys_call(&server, &alice.account.token, "/signatures/upload", body).await;
        assert_eq!(answer.0, StatusCode::OK);
        assert_eq!(
            answer.1["failures"][&a][&device_id]["errcode"], errcode,
            "{}",
            answer.1
        );
    }
    // Bob may not sign alice's device, nor with a key he does not have.
    let body = json!({ a.clone(): { device_id.clone(): bob_keys.self_signing.sign(&b, &alice.device_keys()) } });
    let answer = keys_call(&server, &bob_account.token, "/signatures/upload", body).await;
    assert!(
        answer.1["failures"][&a][&device_id].is_object(),
        "{}",
        answer.1
    );

    // Merged into /keys/query: the self-signing signature on the device and
    // the device's on the master key, for everyone.
    let seen_by_carol = query(&server, &carol.token, &[&a, &b]).await;
    let device = &seen_by_carol["device_keys"][&a][&device_id];
    assert_eq!(signed_part(device), alice.unsigned_device_keys());
    assert_eq!(
        device["signatures"][&a][&ssk_id],
        alice_keys
            .self_signing
            .sign(&a, &alice.unsigned_device_keys())["signatures"][&a][&ssk_id]
    );
    assert!(device["signatures"][&a][format!("ed25519:{device_id}")].is_string());
    let master = &seen_by_carol["master_keys"][&a];
    assert!(
        master["signatures"][&a][format!("ed25519:{device_id}")].is_string(),
        "{master}"
    );
    // Alice's signature of bob's master key is hers alone: not for carol,
    // nor for bob.
    let usk_id = format!("ed25519:{}", alice_keys.user_signing.public);
    assert!(
        seen_by_carol["master_keys"][&b]["signatures"]
            .get(&a)
            .is_none(),
        "{seen_by_carol}"
    );
    let seen_by_bob = query(&server, &bob_account.token, &[&b]).await;
    assert!(
        seen_by_bob["master_keys"][&b]["signatures"]
            .get(&a)
            .is_none(),
        "{seen_by_bob}"
    );
    let seen_by_alice = query(&server, &alice.account.token, &[&b]).await;
    assert!(
        seen_by_alice["master_keys"][&b]["signatures"][&a][&usk_id].is_string(),
        "{seen_by_alice}"
    );

    // Device lists: alice's own signatures are news to her room mates;
    // her signature of bob's key is news to her alone.
    let changed = |answer: &Value| answer["device_lists"]["changed"].clone();
    let bob_news = sync_since(&server, &bob_account.token, &bob_since).await;
    assert_eq!(changed(&bob_news), json!([a]), "{bob_news}");
    let carol_news = sync_since(&server, &carol.token, &carol_since).await;
    assert_eq!(changed(&carol_news), json!([a]), "{carol_news}");
    let alice_news = sync_since(&server, &alice.account.token, &alice_since).await;
    assert_eq!(changed(&alice_news), json!([a, b]), "{alice_news}");
}
