//! Federation transport and identity: servers fetch each other's keys,
//! sign their requests and verify the requests they receive; the notary
//! endpoints; the key cache's validity rules; the SSRF guard on outgoing
//! requests; and the JSON errors of the federation listener.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use myelin_crypto::{PublicKeyMap, PublicKeySet, SigningKey, sign_json, verify_json};
use myelin_server::{
    config::TlsConfig,
    service::{
        federation::{
            Clock, FederationError, KeyFetcher, KeyLookupError, RemoteKeys,
            auth::{SignedRequest, authorization_header},
        },
        server_keys::ServerKeys,
    },
    storage::{Millis, Storage},
};
use myelin_tests::{Backend, TestServer, backend_tests};
use reqwest::{Method, StatusCode, header};
use ruma_ids::{CanonicalJsonObject, OwnedServerName, ServerName, serde::Base64};
use serde_json::{Value, json};

use crate::{
    keys_support::{CrossSigning, Device, upload_signing_keys},
    server_keys::open,
};

backend_tests!(
    servers_fetch_each_others_keys_and_verify_signed_requests,
    profiles_aliases_and_device_keys_are_served_to_other_servers,
    forged_or_misdirected_requests_are_unauthorized,
    every_federation_error_is_json,
    notary_answers_carry_the_origins_and_our_signature,
    outgoing_requests_to_loopback_need_an_allowed_range,
    expired_cached_keys_are_fetched_again_at_most_once_per_interval,
    old_keys_verify_only_what_they_signed_before_expiry,
    forged_key_documents_are_not_cached,
    notaries_are_asked_when_the_origin_is_down,
    peer_certificates_are_checked_unless_switched_off,
);

const QUERY_KEYS: &str = "/_matrix/federation/v1/user/keys/query";

async fn servers_fetch_each_others_keys_and_verify_signed_requests(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let (state_a, _storage) = myelin_server::open(&a.config).await.unwrap();
    let b_name = server_name(b);

    // A fetches B's key document from B's federation listener.
    let (b_key_id, b_public) = published_key(b).await;
    let key = state_a
        .federation
        .keys()
        .verify_key(&b_name, &b_key_id, Millis::now())
        .await
        .unwrap();
    assert_eq!(key.encode(), b_public);
    let stored = |server: &TestServer| {
        format!(
            "SELECT COUNT(*) FROM remote_server_keys WHERE server_name = '{}'",
            server.server_name
        )
    };
    assert_eq!(a.count_rows(&stored(b)).await, 1);
    // A key id B never published is no key.
    let unknown = state_a
        .federation
        .keys()
        .verify_key(&b_name, "ed25519:nope", Millis::now())
        .await;
    assert!(
        matches!(unknown, Err(KeyLookupError::NotFound { .. })),
        "{unknown:?}"
    );

    // A signed request from A: B fetches A's keys to verify it.
    assert_eq!(b.count_rows(&stored(a)).await, 0);
    let answer = state_a
        .federation
        .client()
        .post(&b_name, QUERY_KEYS, &json!({ "device_keys": {} }))
        .await
        .unwrap();
    assert_eq!(answer["device_keys"], json!({}));
    assert_eq!(b.count_rows(&stored(a)).await, 1);

    // Both listeners stop cleanly.
    for server in servers {
        server.stop().await.unwrap();
    }
}

async fn profiles_aliases_and_device_keys_are_served_to_other_servers(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let (state_a, _storage) = myelin_server::open(&a.config).await.unwrap();
    let client = state_a.federation.client();
    let b_name = server_name(b);

    let alice = b.register("alice").await;
    let answer = b
        .request(
            Method::PUT,
            b.v3(&format!("/profile/{}/displayname", alice.user_id)),
            Some(&alice.token),
            Some(json!({ "displayname": "Alice" })),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    // The profile, through a percent-encoded query that is signed as sent.
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        encode(&alice.user_id)
    );
    let profile = client.get(&b_name, &path).await.unwrap();
    assert_eq!(profile, json!({ "displayname": "Alice" }));
    let only_avatar = client
        .get(&b_name, &format!("{path}&field=avatar_url"))
        .await
        .unwrap();
    assert_eq!(only_avatar, json!({}));
    // Remote errors keep their status and code: an unknown user on B, and
    // a user of A asked of B.
    let unknown = client
        .get(
            &b_name,
            &format!(
                "/_matrix/federation/v1/query/profile?user_id={}",
                encode(&b.user_id("nobody"))
            ),
        )
        .await;
    assert_remote(unknown, 404, "M_NOT_FOUND");
    let not_local = client
        .get(
            &b_name,
            &format!(
                "/_matrix/federation/v1/query/profile?user_id={}",
                encode(&a.user_id("alice"))
            ),
        )
        .await;
    assert_remote(not_local, 400, "M_INVALID_PARAM");

    // A local alias resolves; one of another server is refused.
    let answer = b
        .request(
            Method::POST,
            b.v3("/createRoom"),
            Some(&alice.token),
            Some(json!({ "room_alias_name": "lobby" })),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let room_id = answer.1["room_id"].clone();
    let alias = format!("#lobby:{}", b.server_name);
    let directory = client
        .get(
            &b_name,
            &format!(
                "/_matrix/federation/v1/query/directory?room_alias={}",
                encode(&alias)
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        directory,
        json!({ "room_id": room_id, "servers": [b.server_name] })
    );
    let missing = client
        .get(
            &b_name,
            &format!(
                "/_matrix/federation/v1/query/directory?room_alias={}",
                encode(&format!("#nothing:{}", b.server_name))
            ),
        )
        .await;
    assert_remote(missing, 404, "M_NOT_FOUND");

    // Device keys, cross-signing keys (never the user-signing key) and a
    // one-time key.
    let device = Device::new(&alice);
    let (otk_id, otk) = device.one_time_key("one", false);
    let answer = device
        .upload(
            b,
            json!({ "device_keys": device.device_keys(), "one_time_keys": { otk_id.clone(): otk } }),
        )
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let cross_signing = CrossSigning::new(&alice.user_id);
    let answer = upload_signing_keys(b, &alice.token, cross_signing.upload_body()).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    let keys = client
        .post(
            &b_name,
            QUERY_KEYS,
            &json!({ "device_keys": { alice.user_id.clone(): [] } }),
        )
        .await
        .unwrap();
    assert_eq!(
        keys["device_keys"][&alice.user_id][&alice.device_id],
        device.device_keys(),
        "{keys}"
    );
    assert_eq!(
        keys["master_keys"][&alice.user_id],
        cross_signing.master_key()
    );
    assert_eq!(
        keys["self_signing_keys"][&alice.user_id],
        cross_signing.self_signing_key()
    );
    assert!(keys.get("user_signing_keys").is_none(), "{keys}");

    let devices = client
        .get(
            &b_name,
            &format!(
                "/_matrix/federation/v1/user/devices/{}",
                encode(&alice.user_id)
            ),
        )
        .await
        .unwrap();
    assert_eq!(devices["user_id"], alice.user_id.as_str());
    assert!(devices["stream_id"].is_i64(), "{devices}");
    assert_eq!(
        devices["devices"],
        json!([{ "device_id": alice.device_id, "keys": device.device_keys() }])
    );
    assert_eq!(devices["master_key"], cross_signing.master_key());
    assert!(devices.get("user_signing_key").is_none(), "{devices}");

    let claim = json!({ "one_time_keys": { alice.user_id.clone(): { alice.device_id.clone(): "signed_curve25519" } } });
    let claimed = client
        .post(&b_name, "/_matrix/federation/v1/user/keys/claim", &claim)
        .await
        .unwrap();
    assert_eq!(
        claimed["one_time_keys"][&alice.user_id][&alice.device_id][&otk_id],
        otk
    );

    // Users of other servers are refused.
    let foreign = client
        .post(
            &b_name,
            QUERY_KEYS,
            &json!({ "device_keys": { a.user_id("alice"): [] } }),
        )
        .await;
    assert_remote(foreign, 400, "M_INVALID_PARAM");
    let foreign = client
        .get(
            &b_name,
            &format!(
                "/_matrix/federation/v1/user/devices/{}",
                encode(&a.user_id("alice"))
            ),
        )
        .await;
    assert_remote(foreign, 400, "M_INVALID_PARAM");
}

async fn forged_or_misdirected_requests_are_unauthorized(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let a_key = signing_key(a).await;
    let body = json!({ "device_keys": {} });
    let sign =
        |key: &SigningKey, destination: &str, method: &str, uri: &str, body: Option<&Value>| {
            let content: Option<CanonicalJsonObject> =
                body.map(|body| serde_json::from_value(body.clone()).unwrap());
            authorization_header(
                key,
                &ServerName::parse(&a.server_name).unwrap(),
                &ServerName::parse(destination).unwrap(),
                &SignedRequest {
                    method,
                    uri,
                    content: content.as_ref(),
                },
            )
            .unwrap()
        };

    // Correctly signed: accepted (so each refusal below is the change it makes).
    let good = sign(&a_key, &b.server_name, "POST", QUERY_KEYS, Some(&body));
    let answer = federation_request(b, Method::POST, QUERY_KEYS, Some(&body), &[&good]).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    // Lenient parsing: unquoted values, no destination.
    let loose = good
        .replace('"', "")
        .replace(&format!("destination={},", b.server_name), "");
    assert!(!loose.contains("destination"), "{loose}");
    let answer = federation_request(b, Method::POST, QUERY_KEYS, Some(&body), &[&loose]).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

    let forger = SigningKey::from_seed_base64(
        &SigningKey::generate("x").unwrap().to_seed_base64(),
        a_key.key_id().key_name().as_str(),
    )
    .unwrap();
    let other_key_id = good.replace(a_key.key_id().as_str(), "ed25519:unknown");
    let misdirected = sign(&a_key, "elsewhere.example", "POST", QUERY_KEYS, Some(&body));
    let cases: [(&str, Vec<&str>, Value); 5] = [
        ("no header", vec![], body.clone()),
        ("forged signature", vec![], body.clone()),
        ("unknown key id", vec![&other_key_id], body.clone()),
        ("wrong destination", vec![&misdirected], body.clone()),
        (
            "body altered after signing",
            vec![&good],
            json!({ "device_keys": { b.user_id("x"): [] } }),
        ),
    ];
    let forged = sign(&forger, &b.server_name, "POST", QUERY_KEYS, Some(&body));
    for (case, headers, sent) in cases {
        let headers = if case == "forged signature" {
            vec![forged.as_str()]
        } else {
            headers
        };
        let answer = federation_request(b, Method::POST, QUERY_KEYS, Some(&sent), &headers).await;
        assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{case}: {}", answer.1);
        assert_eq!(answer.1["errcode"], "M_UNAUTHORIZED", "{case}");
        assert_eq!(answer.2.as_deref(), Some("application/json"), "{case}");
    }
    // The signature binds the query string too.
    let profile = |user: &str| {
        format!(
            "/_matrix/federation/v1/query/profile?user_id={}",
            encode(&b.user_id(user))
        )
    };
    b.register("alice").await;
    let signed_for_alice = sign(&a_key, &b.server_name, "GET", &profile("alice"), None);
    let answer = federation_request(
        b,
        Method::GET,
        &profile("alice"),
        None,
        &[&signed_for_alice],
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let answer =
        federation_request(b, Method::GET, &profile("bob"), None, &[&signed_for_alice]).await;
    assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{}", answer.1);
}

async fn every_federation_error_is_json(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let version =
        federation_request(b, Method::GET, "/_matrix/federation/v1/version", None, &[]).await;
    assert_eq!(version.0, StatusCode::OK);
    assert_eq!(version.1["server"]["name"], "Myelin");
    assert_eq!(version.2.as_deref(), Some("application/json"));

    let a_key = signing_key(a).await;
    let not_json = authorization_header(
        &a_key,
        &ServerName::parse(&a.server_name).unwrap(),
        &ServerName::parse(&b.server_name).unwrap(),
        &SignedRequest {
            method: "POST",
            uri: QUERY_KEYS,
            content: None,
        },
    )
    .unwrap();
    let url = format!("{}{QUERY_KEYS}", b.federation_url.as_ref().unwrap());
    let response = b
        .federation_client()
        .post(url)
        .header(header::AUTHORIZATION, not_json)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let not_json = read(response).await;

    let cases = [
        (
            federation_request(b, Method::GET, "/_matrix/federation/v1/nothing", None, &[]).await,
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
        ),
        (
            federation_request(
                b,
                Method::DELETE,
                "/_matrix/federation/v1/version",
                None,
                &[],
            )
            .await,
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
        ),
        (
            federation_request(
                b,
                Method::GET,
                "/_matrix/federation/v1/user/devices/x",
                None,
                &[],
            )
            .await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            federation_request(b, Method::POST, QUERY_KEYS, Some(&json!({})), &[]).await,
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
        ),
        (not_json, StatusCode::BAD_REQUEST, "M_NOT_JSON"),
    ];
    for (answer, status, errcode) in cases {
        assert_eq!(answer.0, status, "{}", answer.1);
        assert_eq!(answer.1["errcode"], errcode, "{}", answer.1);
        assert!(answer.1["error"].is_string(), "{}", answer.1);
        assert_eq!(
            answer.2.as_deref(),
            Some("application/json"),
            "{}",
            answer.1
        );
    }
}

async fn notary_answers_carry_the_origins_and_our_signature(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let (a_key_id, a_public) = published_key(a).await;
    let (b_key_id, b_public) = published_key(b).await;
    let keys = PublicKeyMap::from([
        (
            a.server_name.clone(),
            PublicKeySet::from([(a_key_id, Base64::parse(&a_public).unwrap())]),
        ),
        (
            b.server_name.clone(),
            PublicKeySet::from([(b_key_id, Base64::parse(&b_public).unwrap())]),
        ),
    ]);

    // B relays A's document, fetched from A, with both signatures.
    let path = format!("/_matrix/key/v2/query/{}", a.server_name);
    let answer = federation_request(b, Method::GET, &path, None, &[]).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let documents = answer.1["server_keys"].as_array().unwrap();
    assert_eq!(documents.len(), 1, "{}", answer.1);
    let document: CanonicalJsonObject = serde_json::from_value(documents[0].clone()).unwrap();
    assert_eq!(documents[0]["server_name"], a.server_name.as_str());
    let signers: Vec<&String> = documents[0]["signatures"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(signers.len(), 2, "{signers:?}");
    verify_json(&keys, &document).unwrap();

    // The batch form, asking for B itself and A with a minimum validity.
    let far = Millis::now().0 + 3_600_000;
    let body = json!({ "server_keys": {
        a.server_name.clone(): { "ed25519:whatever": { "minimum_valid_until_ts": far } },
        b.server_name.clone(): {},
    } });
    let answer =
        federation_request(b, Method::POST, "/_matrix/key/v2/query", Some(&body), &[]).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let documents = answer.1["server_keys"].as_array().unwrap();
    assert_eq!(documents.len(), 2, "{}", answer.1);
    for document in documents {
        assert!(
            document["valid_until_ts"].as_i64().unwrap() >= far,
            "{document}"
        );
        let document: CanonicalJsonObject = serde_json::from_value(document.clone()).unwrap();
        verify_json(&keys, &document).unwrap();
        assert!(
            document_signed_by(&document, &b.server_name),
            "not signed by the notary"
        );
    }
    // One query names at most 100 servers.
    let servers: serde_json::Map<String, Value> = (0..101)
        .map(|i| (format!("s{i}.invalid"), json!({})))
        .collect();
    let answer = federation_request(
        b,
        Method::POST,
        "/_matrix/key/v2/query",
        Some(&json!({ "server_keys": servers })),
        &[],
    )
    .await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    assert_eq!(answer.1["errcode"], "M_INVALID_PARAM");

    // A server nobody can reach: no document, not an error.
    let answer = federation_request(
        b,
        Method::GET,
        "/_matrix/key/v2/query/unreachable.invalid",
        None,
        &[],
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(answer.1["server_keys"], json!([]));
}

async fn outgoing_requests_to_loopback_need_an_allowed_range(backend: Backend) {
    let servers = TestServer::start_federated_with(backend, 2, |i, config| {
        if i == 0 {
            config.federation.allowed_ip_ranges.clear();
        }
    })
    .await;
    let (a, b) = (&servers[0], &servers[1]);
    let (state_a, _storage_a) = myelin_server::open(&a.config).await.unwrap();
    let (state_b, _storage_b) = myelin_server::open(&b.config).await.unwrap();
    let version = "/_matrix/federation/v1/version";
    let refused = state_a
        .federation
        .client()
        .get(&server_name(b), version)
        .await;
    assert!(
        matches!(refused, Err(FederationError::Refused(_))),
        "{refused:?}"
    );
    let allowed = state_b
        .federation
        .client()
        .get(&server_name(a), version)
        .await
        .unwrap();
    assert_eq!(allowed["server"]["name"], "Myelin");
}

async fn peer_certificates_are_checked_unless_switched_off(backend: Backend) {
    // A test CA, and certificates for `localhost` issued by it.
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let issued: Vec<TlsConfig> = (0..2)
        .map(|i| {
            let key = rcgen::KeyPair::generate().unwrap();
            let certificate = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            let tls = TlsConfig {
                certificate: dir.path().join(format!("cert{i}.pem")),
                private_key: dir.path().join(format!("key{i}.pem")),
            };
            std::fs::write(&tls.certificate, certificate.pem()).unwrap();
            std::fs::write(&tls.private_key, key.serialize_pem()).unwrap();
            tls
        })
        .collect();
    // 0 trusts the CA; 0 and 1 have CA-issued certificates; 2 keeps its
    // self-signed one. Every server checks certificates.
    let servers = TestServer::start_federated_with(backend, 3, |i, config| {
        config.federation.verify_certificates = true;
        if let Some(tls) = issued.get(i) {
            config.federation.tls = Some(tls.clone());
        }
        if i == 0 {
            config.federation.extra_ca_file = Some(ca_file.clone());
        }
    })
    .await;
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);
    let (state_a, _storage_a) = myelin_server::open(&a.config).await.unwrap();
    let (state_b, _storage_b) = myelin_server::open(&b.config).await.unwrap();
    let version = "/_matrix/federation/v1/version";

    let trusted = state_a
        .federation
        .client()
        .get(&server_name(b), version)
        .await;
    assert_eq!(trusted.unwrap()["server"]["name"], "Myelin");
    for refused in [
        // B does not trust the test CA.
        state_b
            .federation
            .client()
            .get(&server_name(a), version)
            .await,
        // C's self-signed certificate is trusted by nobody.
        state_a
            .federation
            .client()
            .get(&server_name(c), version)
            .await,
    ] {
        assert!(
            matches!(&refused, Err(FederationError::Unreachable(reason)) if reason.contains("TLS")),
            "{refused:?}"
        );
    }
}

async fn expired_cached_keys_are_fetched_again_at_most_once_per_interval(backend: Backend) {
    let (storage, _data) = open(backend).await;
    let origin = FakeOrigins::default();
    let clock = TestClock::at(1_700_000_000_000);
    let keys = remote_keys(&storage, &origin, &clock).await;
    let key = SigningKey::generate("one").unwrap();
    let key_id = key.key_id().as_str();
    let start = clock.now();

    origin.serve(key_document(REMOTE, &key, start + 60_000, &[]));
    let found = keys
        .verify_key(remote(), key_id, Millis(start))
        .await
        .unwrap();
    assert_eq!(found, key.public_key());
    assert_eq!(origin.fetches(), 1);
    keys.verify_key(remote(), key_id, Millis(start))
        .await
        .unwrap();
    assert_eq!(origin.fetches(), 1, "served from the cache");
    // Another service on the same storage needs no fetch either.
    let restarted = remote_keys(&storage, &origin, &clock).await;
    restarted
        .verify_key(remote(), key_id, Millis(start))
        .await
        .unwrap();
    assert_eq!(origin.fetches(), 1, "served from storage");

    // Past its validity the key is fetched again; the new document's
    // validity is capped at now + 7 days.
    clock.advance(120_000);
    let now = clock.now();
    origin.serve(key_document(REMOTE, &key, now + 30 * DAY, &[]));
    keys.verify_key(remote(), key_id, Millis(now))
        .await
        .unwrap();
    assert_eq!(origin.fetches(), 2);
    let stored = storage.remote_keys(remote()).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].valid_until, Millis(now + 7 * DAY));

    // An unknown key id right after a fetch: no new fetch (rate limit).
    let unknown = keys.verify_key(remote(), "ed25519:new", Millis(now)).await;
    assert!(
        matches!(unknown, Err(KeyLookupError::NotFound { .. })),
        "{unknown:?}"
    );
    assert_eq!(origin.fetches(), 2);
    // After the interval it is asked for again, and found once published.
    clock.advance(31_000);
    let rotated = SigningKey::generate("new").unwrap();
    origin.serve(key_document(REMOTE, &rotated, clock.now() + DAY, &[]));
    let found = keys
        .verify_key(remote(), "ed25519:new", Millis(clock.now()))
        .await
        .unwrap();
    assert_eq!(found, rotated.public_key());
    assert_eq!(origin.fetches(), 3);

    // An origin that is down: an expired key stays unusable.
    clock.advance(8 * DAY);
    origin.go_down();
    let expired = keys.verify_key(remote(), key_id, Millis(clock.now())).await;
    assert!(
        matches!(expired, Err(KeyLookupError::NotFound { .. })),
        "{expired:?}"
    );
    assert_eq!(origin.fetches(), 4);
}

async fn old_keys_verify_only_what_they_signed_before_expiry(backend: Backend) {
    let (storage, _data) = open(backend).await;
    let origin = FakeOrigins::default();
    let clock = TestClock::at(1_700_000_000_000);
    let keys = remote_keys(&storage, &origin, &clock).await;
    let now = clock.now();
    let old = SigningKey::generate("old").unwrap();
    let current = SigningKey::generate("cur").unwrap();
    let expired_at = now - 10_000;
    origin.serve(key_document(
        REMOTE,
        &current,
        now + DAY,
        &[(old.key_id().as_str(), old.public_key(), expired_at)],
    ));

    let found = keys
        .verify_key(remote(), old.key_id().as_str(), Millis(expired_at - 5_000))
        .await
        .unwrap();
    assert_eq!(found, old.public_key());
    for too_late in [expired_at + 1, now] {
        let refused = keys
            .verify_key(remote(), old.key_id().as_str(), Millis(too_late))
            .await;
        assert!(
            matches!(refused, Err(KeyLookupError::NotFound { .. })),
            "{refused:?}"
        );
    }
    let found = keys
        .verify_key(remote(), current.key_id().as_str(), Millis(now))
        .await
        .unwrap();
    assert_eq!(found, current.public_key());
    // The current key does not vouch for times past its validity.
    let refused = keys
        .verify_key(remote(), current.key_id().as_str(), Millis(now + 2 * DAY))
        .await;
    assert!(
        matches!(refused, Err(KeyLookupError::NotFound { .. })),
        "{refused:?}"
    );
}

async fn forged_key_documents_are_not_cached(backend: Backend) {
    let (storage, _data) = open(backend).await;
    let origin = FakeOrigins::default();
    let clock = TestClock::at(1_700_000_000_000);
    let keys = remote_keys(&storage, &origin, &clock).await;
    let now = clock.now();
    let key = SigningKey::generate("one").unwrap();

    // Signed by another key than the one it publishes under that id.
    let mut forged = key_document(REMOTE, &key, now + DAY, &[]);
    let impostor =
        SigningKey::from_seed_base64(&SigningKey::generate("x").unwrap().to_seed_base64(), "one")
            .unwrap();
    forged.remove("signatures");
    sign_json(remote(), &impostor, &mut forged).unwrap();
    origin.serve(forged);
    let refused = keys.verify_key(remote(), "ed25519:one", Millis(now)).await;
    assert!(
        matches!(refused, Err(KeyLookupError::NotFound { .. })),
        "{refused:?}"
    );

    // Another server's genuine document, served for this one.
    let other = ServerName::parse("other.example").unwrap();
    origin.serve_as(
        remote(),
        key_document("other.example", &key, now + DAY, &[]),
    );
    clock.advance(60_000);
    let refused = keys
        .verify_key(remote(), "ed25519:one", Millis(clock.now()))
        .await;
    assert!(
        matches!(refused, Err(KeyLookupError::NotFound { .. })),
        "{refused:?}"
    );
    assert_eq!(origin.fetches(), 2);
    assert!(storage.remote_keys(remote()).await.unwrap().is_empty());
    assert!(storage.remote_keys(&other).await.unwrap().is_empty());
    assert!(
        storage
            .remote_key_document(remote())
            .await
            .unwrap()
            .is_none()
    );
}

async fn notaries_are_asked_when_the_origin_is_down(backend: Backend) {
    let (storage, _data) = open(backend).await;
    let origin = FakeOrigins::default();
    let clock = TestClock::at(1_700_000_000_000);
    let notary = ServerName::parse("notary.example").unwrap();
    let keys = remote_keys_with_notaries(&storage, &origin, &clock, vec![notary]).await;
    let now = clock.now();
    let key = SigningKey::generate("one").unwrap();

    // What a notary relays must carry the origin's own valid signature.
    let mut forged = key_document(REMOTE, &key, now + DAY, &[]);
    forged.remove("signatures");
    let impostor =
        SigningKey::from_seed_base64(&SigningKey::generate("x").unwrap().to_seed_base64(), "one")
            .unwrap();
    sign_json(remote(), &impostor, &mut forged).unwrap();
    origin.relay(vec![forged.clone()]);
    let refused = keys.verify_key(remote(), "ed25519:one", Millis(now)).await;
    assert!(
        matches!(refused, Err(KeyLookupError::NotFound { .. })),
        "{refused:?}"
    );

    // The genuine document among forged ones is found.
    clock.advance(60_000);
    origin.relay(vec![forged, key_document(REMOTE, &key, now + DAY, &[])]);
    let found = keys
        .verify_key(remote(), "ed25519:one", Millis(clock.now()))
        .await
        .unwrap();
    assert_eq!(found, key.public_key());
    // The origin was tried first each time.
    assert_eq!(origin.fetches(), 2);
}

// ---- helpers ----

const REMOTE: &str = "remote.example";
const DAY: i64 = 24 * 3_600_000;

fn remote() -> &'static ServerName {
    <&ServerName>::try_from(REMOTE).unwrap()
}

fn server_name(server: &TestServer) -> OwnedServerName {
    ServerName::parse(&server.server_name).unwrap()
}

/// Percent-encodes what a query or path segment cannot carry plainly.
fn encode(text: &str) -> String {
    text.replace('%', "%25")
        .replace('@', "%40")
        .replace(':', "%3A")
        .replace('#', "%23")
}

#[track_caller]
fn assert_remote(result: Result<Value, FederationError>, status: u16, errcode: &str) {
    match result {
        Err(FederationError::Remote {
            status: got,
            errcode: Some(code),
            ..
        }) => {
            assert_eq!((got, code.as_str()), (status, errcode));
        }
        other => panic!("expected a remote {status} {errcode}, got {other:?}"),
    }
}

/// The id and public key of a server's current key, from its listener.
async fn published_key(server: &TestServer) -> (String, String) {
    let answer = federation_request(server, Method::GET, "/_matrix/key/v2/server", None, &[]).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let (key_id, key) = answer.1["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    (key_id.clone(), key["key"].as_str().unwrap().to_owned())
}

/// The server's signing key, read from its database.
async fn signing_key(server: &TestServer) -> SigningKey {
    let (key_id, seed) = server.signing_key_seed().await;
    SigningKey::from_seed_base64(&seed, key_id.strip_prefix("ed25519:").unwrap()).unwrap()
}

fn document_signed_by(document: &CanonicalJsonObject, server: &str) -> bool {
    document
        .get("signatures")
        .and_then(|s| s.as_object())
        .is_some_and(|s| s.contains_key(server))
}

/// A raw request to a server's federation listener with the given
/// `Authorization` headers: the status, the JSON answer and its content type.
async fn federation_request(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<&Value>,
    authorizations: &[&str],
) -> (StatusCode, Value, Option<String>) {
    let url = format!("{}{path}", server.federation_url.as_ref().unwrap());
    let mut request = server.federation_client().request(method, url);
    for authorization in authorizations {
        request = request.header(header::AUTHORIZATION, *authorization);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    read(request.send().await.unwrap()).await
}

async fn read(response: reqwest::Response) -> (StatusCode, Value, Option<String>) {
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{status} answer is not JSON: {text:?}"));
    (status, json, content_type)
}

/// A signed key document for `server`: `key` current until `valid_until`,
/// and old keys `(id, public key, expired_ts)`.
pub(crate) fn key_document(
    server: &str,
    key: &SigningKey,
    valid_until: i64,
    old: &[(&str, Base64, i64)],
) -> CanonicalJsonObject {
    let old: serde_json::Map<String, Value> = old
        .iter()
        .map(|(id, public, expired)| {
            (
                (*id).to_owned(),
                json!({ "key": public.encode(), "expired_ts": expired }),
            )
        })
        .collect();
    let mut document: CanonicalJsonObject = serde_json::from_value(json!({
        "server_name": server,
        "verify_keys": { key.key_id().as_str(): { "key": key.public_key().encode() } },
        "old_verify_keys": old,
        "valid_until_ts": valid_until,
    }))
    .unwrap();
    sign_json(&ServerName::parse(server).unwrap(), key, &mut document).unwrap();
    document
}

/// A clock the test moves by hand.
#[derive(Clone)]
struct TestClock(Arc<AtomicI64>);

impl TestClock {
    fn at(millis: i64) -> Self {
        Self(Arc::new(AtomicI64::new(millis)))
    }

    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    fn advance(&self, millis: i64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }

    fn clock(&self) -> Clock {
        let now = self.0.clone();
        Arc::new(move || Millis(now.load(Ordering::SeqCst)))
    }
}

/// Origins that serve whatever document the test sets, counting fetches,
/// and a notary that relays whatever the test gives it.
#[derive(Clone, Default)]
struct FakeOrigins {
    documents: Arc<Mutex<HashMap<String, CanonicalJsonObject>>>,
    relayed: Arc<Mutex<Vec<CanonicalJsonObject>>>,
    fetches: Arc<AtomicUsize>,
}

impl FakeOrigins {
    fn serve(&self, document: CanonicalJsonObject) {
        let server = match document.get("server_name") {
            Some(ruma_ids::CanonicalJsonValue::String(name)) => name.clone(),
            _ => panic!("no server_name"),
        };
        self.documents.lock().unwrap().insert(server, document);
    }

    fn serve_as(&self, server: &ServerName, document: CanonicalJsonObject) {
        self.documents
            .lock()
            .unwrap()
            .insert(server.to_string(), document);
    }

    fn relay(&self, documents: Vec<CanonicalJsonObject>) {
        *self.relayed.lock().unwrap() = documents;
    }

    fn go_down(&self) {
        self.documents.lock().unwrap().clear();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeyFetcher for FakeOrigins {
    async fn server_keys(
        &self,
        server: &ServerName,
    ) -> Result<CanonicalJsonObject, FederationError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.documents
            .lock()
            .unwrap()
            .get(server.as_str())
            .cloned()
            .ok_or_else(|| FederationError::Unreachable("down".to_owned()))
    }

    async fn notary_keys(
        &self,
        _notary: &ServerName,
        _server: &ServerName,
    ) -> Result<Vec<CanonicalJsonObject>, FederationError> {
        Ok(self.relayed.lock().unwrap().clone())
    }
}

async fn remote_keys(
    storage: &Arc<dyn Storage>,
    origins: &FakeOrigins,
    clock: &TestClock,
) -> RemoteKeys {
    remote_keys_with_notaries(storage, origins, clock, Vec::new()).await
}

async fn remote_keys_with_notaries(
    storage: &Arc<dyn Storage>,
    origins: &FakeOrigins,
    clock: &TestClock,
    notaries: Vec<OwnedServerName>,
) -> RemoteKeys {
    let own =
        ServerKeys::load_or_generate(storage.clone(), ServerName::parse("us.example").unwrap())
            .await
            .unwrap();
    RemoteKeys::new(
        storage.clone(),
        Arc::new(origins.clone()),
        Arc::new(own),
        notaries,
        clock.clock(),
    )
}
