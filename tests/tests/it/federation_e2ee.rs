//! The first steps of end-to-end encryption across servers: a client's
//! `/keys/query`, `/keys/claim` and `/profile` of users of another server
//! are asked of that server; a server that does not answer is a failure,
//! not an error.

use std::time::{Duration, Instant};

use myelin_tests::{Backend, TestServer, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;

use crate::keys_support::{
    CrossSigning, Device, claim_one, claimed_key, keys_call, query, upload_signing_keys,
};

backend_tests!(
    clients_see_and_claim_keys_of_remote_users,
    clients_see_remote_profiles,
    an_unreachable_server_is_a_failure,
    a_slow_server_is_a_failure_after_the_timeout,
);

async fn clients_see_and_claim_keys_of_remote_users(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = Device::new(&b.register("bob").await);
    let (otk_id, otk) = bob.one_time_key("only", false);
    let answer = bob
        .upload(
            b,
            json!({ "device_keys": bob.device_keys(), "one_time_keys": { otk_id.clone(): otk } }),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let cross_signing = CrossSigning::new(&bob.account.user_id);
    let answer = upload_signing_keys(b, &bob.account.token, cross_signing.upload_body()).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let bob_id = bob.account.user_id.as_str();
    let bob_device = bob.account.device_id.as_str();

    // Alice on A sees Bob's device and cross-signing keys, as B serves them.
    let keys = query(a, &alice.token, &[bob_id, &alice.user_id]).await;
    assert_eq!(
        keys["device_keys"][bob_id],
        json!({ bob_device: bob.device_keys() }),
        "{keys}"
    );
    assert_eq!(keys["master_keys"][bob_id], cross_signing.master_key());
    assert_eq!(
        keys["self_signing_keys"][bob_id],
        cross_signing.self_signing_key()
    );
    assert!(keys["user_signing_keys"].get(bob_id).is_none(), "{keys}");
    assert_eq!(keys["failures"], json!({}), "{keys}");
    // A local user in the same request is answered as before.
    assert_eq!(keys["device_keys"][&alice.user_id], json!({}), "{keys}");

    // Only the devices asked for.
    let answer = keys_call(
        a,
        &alice.token,
        "/query",
        json!({ "device_keys": { bob_id: ["NOSUCHDEVICE"] } }),
    )
    .await;
    assert_eq!(answer.1["device_keys"][bob_id], json!({}), "{}", answer.1);

    // Alice claims Bob's one one-time key over federation; then there is none.
    let claimed = claim_one(a, &alice.token, bob_id, bob_device).await;
    assert_eq!(
        claimed_key(&claimed, bob_id, bob_device),
        Some((otk_id, otk)),
        "{claimed}"
    );
    assert_eq!(claimed["failures"], json!({}));
    let again = claim_one(a, &alice.token, bob_id, bob_device).await;
    assert_eq!(claimed_key(&again, bob_id, bob_device), None, "{again}");
    assert_eq!(
        b.count_rows("SELECT COUNT(*) FROM one_time_keys").await,
        0,
        "B handed the key out"
    );
}

async fn clients_see_remote_profiles(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let answer = b
        .request(
            Method::PUT,
            b.v3(&format!("/profile/{}/displayname", bob.user_id)),
            Some(&bob.token),
            Some(json!({ "displayname": "Bob on B" })),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    let get = |path: String| a.request(Method::GET, a.v3(&path), Some(&alice.token), None);
    let profile = get(format!("/profile/{}", bob.user_id)).await;
    assert_eq!(
        profile,
        (StatusCode::OK, json!({ "displayname": "Bob on B" }))
    );
    let name = get(format!("/profile/{}/displayname", bob.user_id)).await;
    assert_eq!(name, (StatusCode::OK, json!({ "displayname": "Bob on B" })));
    let avatar = get(format!("/profile/{}/avatar_url", bob.user_id)).await;
    assert_eq!(avatar, (StatusCode::OK, json!({})));
    // A user B does not know.
    let unknown = get(format!("/profile/{}", b.user_id("nobody"))).await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND, "{}", unknown.1);
    assert_eq!(unknown.1["errcode"], "M_NOT_FOUND");
}

async fn an_unreachable_server_is_a_failure(backend: Backend) {
    let mut servers = TestServer::start_federated(backend, 2).await;
    let b = servers.pop().expect("two servers");
    let a = servers.pop().expect("two servers");
    let alice = a.register("alice").await;
    let bob = Device::new(&b.register("bob").await);
    bob.publish(&b).await;
    let bob_id = bob.account.user_id.clone();
    let bob_device = bob.account.device_id.clone();
    let b_name = b.server_name.clone();
    b.stop().await.expect("B stops cleanly");

    let keys = query(&a, &alice.token, &[&bob_id, &alice.user_id]).await;
    assert!(keys["failures"][&b_name].is_object(), "{keys}");
    assert!(keys["device_keys"].get(&bob_id).is_none(), "{keys}");
    // The local part of the request is still answered.
    assert_eq!(keys["device_keys"][&alice.user_id], json!({}), "{keys}");

    let claimed = claim_one(&a, &alice.token, &bob_id, &bob_device).await;
    assert!(claimed["failures"][&b_name].is_object(), "{claimed}");
    assert_eq!(claimed_key(&claimed, &bob_id, &bob_device), None);

    let profile = a
        .request(
            Method::GET,
            a.v3(&format!("/profile/{bob_id}")),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(profile.0, StatusCode::NOT_FOUND, "{}", profile.1);
}

async fn a_slow_server_is_a_failure_after_the_timeout(backend: Backend) {
    // A "server" that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_name = format!("localhost:{}", silent.local_addr().expect("address").port());
    let address = silent.local_addr().expect("address").to_string();
    let accepting = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let servers = TestServer::start_federated_with(backend, 2, |_, config| {
        config
            .federation
            .addresses
            .insert(silent_name.clone(), address.clone());
    })
    .await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = Device::new(&b.register("bob").await);
    bob.publish(b).await;
    let bob_id = bob.account.user_id.as_str();
    let stuck = format!("@carol:{silent_name}");

    let started = Instant::now();
    let answer = keys_call(
        a,
        &alice.token,
        "/query",
        json!({ "device_keys": { &stuck: [], bob_id: [] }, "timeout": 1000 }),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        answer.1["failures"][&silent_name].is_object(),
        "{}",
        answer.1
    );
    // The server that answered in time is not held up by the other.
    assert_eq!(
        answer.1["device_keys"][bob_id],
        json!({ bob.account.device_id.as_str(): bob.device_keys() }),
        "{}",
        answer.1
    );
    accepting.abort();
}
