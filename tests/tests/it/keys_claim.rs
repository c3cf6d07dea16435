//! `POST /keys/claim`: each one-time key is handed out once however many
//! claimers race, then the fallback key; the counts sync reports.

use std::{collections::BTreeSet, sync::Arc};

use myelin_tests::{Backend, TestServer, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    keys_support::{Device, claim_one, claimed_key, keys_call},
    sync_support::{sync_ok, sync_since},
};

backend_tests!(
    concurrent_claims_never_share_a_key,
    the_fallback_key_follows_exhaustion,
    sync_reports_counts_and_unused_fallback_keys,
);

/// Claimers racing for fewer keys than there are claims.
const KEYS: usize = 40;
const CLAIMS: usize = 64;

async fn concurrent_claims_never_share_a_key(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let alice = Device::new(&server.register("alice").await);
    let (fallback_id, fallback) = alice.one_time_key("fallback", true);
    let answer = alice
        .upload(
            &server,
            json!({
                "device_keys": alice.device_keys(),
                "one_time_keys": alice.one_time_keys("k", KEYS),
                "fallback_keys": { &fallback_id: fallback },
            }),
        )
        .await;
    assert_eq!(answer.1["one_time_key_counts"]["signed_curve25519"], KEYS);
    let mut claimers = Vec::new();
    for i in 0..4 {
        claimers.push(server.register(&format!("claimer{i}")).await.token);
    }

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLAIMS {
        let server = Arc::clone(&server);
        let token = claimers[i % claimers.len()].clone();
        let (user_id, device_id) = (
            alice.account.user_id.clone(),
            alice.account.device_id.clone(),
        );
        tasks.spawn(async move {
            let answer = claim_one(&server, &token, &user_id, &device_id).await;
            claimed_key(&answer, &user_id, &device_id)
        });
    }
    let mut one_time = Vec::new();
    let mut fallbacks = 0;
    while let Some(claimed) = tasks.join_next().await {
        let (key_id, key) = claimed
            .expect("claim task")
            .expect("every claim gets a key");
        if key_id == fallback_id {
            assert_eq!(key["fallback"], true);
            fallbacks += 1;
        } else {
            one_time.push(key_id);
        }
    }
    let distinct: BTreeSet<&String> = one_time.iter().collect();
    assert_eq!(
        distinct.len(),
        one_time.len(),
        "a key was handed out twice: {one_time:?}"
    );
    assert_eq!(one_time.len(), KEYS, "every one-time key was handed out");
    assert_eq!(fallbacks, CLAIMS - KEYS);
    let answer = alice.upload(&server, json!({})).await;
    assert_eq!(answer.1["one_time_key_counts"]["signed_curve25519"], 0);
}

async fn the_fallback_key_follows_exhaustion(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Device::new(&server.register("alice").await);
    let bob = server.register("bob").await;
    let (user_id, device_id) = (
        alice.account.user_id.clone(),
        alice.account.device_id.clone(),
    );

    // No keys at all: the device is left out of the answer.
    alice.publish(&server).await;
    let answer = claim_one(&server, &bob.token, &user_id, &device_id).await;
    assert_eq!(claimed_key(&answer, &user_id, &device_id), None, "{answer}");

    let (one_id, one) = alice.one_time_key("only", false);
    let (fallback_id, fallback) = alice.one_time_key("fb1", true);
    let answer = alice
        .upload(
            &server,
            json!({
                "one_time_keys": { &one_id: one.clone() },
                "fallback_keys": { &fallback_id: fallback.clone() },
            }),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    let claimed = |answer: Value| claimed_key(&answer, &user_id, &device_id).expect("a key");
    let first = claimed(claim_one(&server, &bob.token, &user_id, &device_id).await);
    assert_eq!(
        first,
        (one_id, one),
        "the one-time key comes first, as uploaded"
    );
    for _ in 0..2 {
        let next = claimed(claim_one(&server, &bob.token, &user_id, &device_id).await);
        assert_eq!(
            next,
            (fallback_id.clone(), fallback.clone()),
            "then the fallback key, again"
        );
    }
    assert_eq!(unused_fallback(&server, &alice).await, Vec::<String>::new());

    // Re-uploading the used key leaves it used; a new one is unused.
    let answer = alice
        .upload(
            &server,
            json!({ "fallback_keys": { &fallback_id: fallback } }),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(unused_fallback(&server, &alice).await, Vec::<String>::new());
    let (new_id, new) = alice.one_time_key("fb2", true);
    alice
        .upload(
            &server,
            json!({ "fallback_keys": { &new_id: new.clone() } }),
        )
        .await;
    assert_eq!(
        unused_fallback(&server, &alice).await,
        vec!["signed_curve25519"]
    );
    let next = claimed(claim_one(&server, &bob.token, &user_id, &device_id).await);
    assert_eq!(next, (new_id, new));

    // Remote users are failures, not errors.
    let body =
        json!({ "one_time_keys": { "@carol:elsewhere.example": { "D": "signed_curve25519" } } });
    let answer = keys_call(&server, &bob.token, "/claim", body).await;
    assert_eq!(answer.0, StatusCode::OK);
    assert!(
        answer.1["failures"]["elsewhere.example"].is_object(),
        "{}",
        answer.1
    );
}

async fn sync_reports_counts_and_unused_fallback_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = Device::new(&server.register("alice").await);
    let bob = server.register("bob").await;
    let initial = sync_ok(&server, &alice.account.token, &[]).await;
    assert_eq!(
        initial["device_one_time_keys_count"],
        json!({ "signed_curve25519": 0 })
    );
    assert_eq!(initial["device_unused_fallback_key_types"], json!([]));

    let (fallback_id, fallback) = alice.one_time_key("fb", true);
    alice
        .upload(
            &server,
            json!({
                "device_keys": alice.device_keys(),
                "one_time_keys": alice.one_time_keys("k", 3),
                "fallback_keys": { fallback_id: fallback },
            }),
        )
        .await;
    let since = initial["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let answer = sync_since(&server, &alice.account.token, &since).await;
    assert_eq!(answer["device_one_time_keys_count"]["signed_curve25519"], 3);
    assert_eq!(
        answer["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    claim_one(
        &server,
        &bob.token,
        &alice.account.user_id,
        &alice.account.device_id,
    )
    .await;
    let answer = sync_since(&server, &alice.account.token, &since).await;
    assert_eq!(answer["device_one_time_keys_count"]["signed_curve25519"], 2);

    // Another device of the same user has its own counts.
    let other = server.login("alice", None).await;
    let answer = sync_ok(&server, &other.token, &[]).await;
    assert_eq!(
        answer["device_one_time_keys_count"],
        json!({ "signed_curve25519": 0 })
    );
}

async fn unused_fallback(server: &TestServer, device: &Device) -> Vec<String> {
    let answer = sync_ok(server, &device.account.token, &[]).await;
    serde_json::from_value(answer["device_unused_fallback_key_types"].clone())
        .expect("a list of algorithms")
}
