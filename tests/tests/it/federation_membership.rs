//! Rooms across servers: a user of one server joins a room another holds
//! (by room id and by alias), is invited from it, joins or rejects; and
//! the resident refuses joins that are not what they claim.

use myelin_crypto::{SigningKey, hash_and_sign_event};
use myelin_server::service::federation::auth::{SignedRequest, authorization_header};
use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode, header};
use ruma_ids::{CanonicalJsonObject, CanonicalJsonValue, RoomVersionId, ServerName};
use serde_json::{Value, json};

use crate::{
    rooms_support::{create_room, enc, invite, membership},
    sync_support::{initial_sync, state, timeline},
};

backend_tests!(
    a_remote_user_joins_by_room_id_and_by_alias,
    a_remote_user_is_invited_joins_and_rejects,
    the_resident_refuses_joins_that_are_not_what_they_claim,
    a_restricted_room_admits_members_of_its_allowed_room,
    a_remote_user_knocks,
    invites_from_another_server_are_bounded_per_user,
);

const VERSIONS: [&str; 2] = ["10", "12"];

async fn a_remote_user_joins_by_room_id_and_by_alias(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    for version in VERSIONS {
        let alias = format!("lobby{version}");
        let room_id = create_room(
            a,
            &alice.token,
            json!({
                "preset": "public_chat",
                "room_version": version,
                "name": "Lobby",
                "initial_state": [{
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": { "algorithm": "m.megolm.v1.aes-sha2" },
                }],
            }),
        )
        .await;
        // By room id, through A.
        let answer = b
            .request(
                Method::POST,
                b.v3(&format!(
                    "/join/{}?server_name={}",
                    enc(&room_id),
                    enc(&a.server_name)
                )),
                Some(&bob.token),
                Some(json!({})),
            )
            .await;
        assert_eq!(
            answer,
            (StatusCode::OK, json!({ "room_id": room_id })),
            "v{version}"
        );

        // Bob's server holds the room now, with its whole state.
        let synced = initial_sync(b, &bob.token, 10).await;
        let room_state = state_by_key(&synced, &room_id);
        assert_eq!(
            room_state["m.room.name/"]["content"]["name"], "Lobby",
            "v{version}"
        );
        assert_eq!(
            room_state["m.room.encryption/"]["content"]["algorithm"], "m.megolm.v1.aes-sha2",
            "v{version}"
        );
        assert_eq!(
            room_state[&format!("m.room.member/{}", alice.user_id)]["content"]["membership"],
            "join",
            "v{version}"
        );
        assert_eq!(
            room_state[&format!("m.room.member/{}", bob.user_id)]["content"]["membership"],
            "join",
            "v{version}: {synced}"
        );
        // Alice sees Bob's join on her server.
        let synced = initial_sync(a, &alice.token, 20).await;
        let joins: Vec<&Value> = timeline(&synced, "join", &room_id)
            .iter()
            .filter(|event| event["state_key"] == bob.user_id.as_str())
            .collect();
        assert_eq!(joins.len(), 1, "v{version}: {synced}");
        assert_eq!(joins[0]["content"]["membership"], "join");

        // By an alias of A, for a room B does not hold.
        let aliased = create_room(
            a,
            &alice.token,
            json!({ "preset": "public_chat", "room_version": version, "room_alias_name": alias }),
        )
        .await;
        let full_alias = format!("#{alias}:{}", a.server_name);
        let answer = b
            .request(
                Method::POST,
                b.v3(&format!("/join/{}", enc(&full_alias))),
                Some(&bob.token),
                Some(json!({})),
            )
            .await;
        assert_eq!(
            answer,
            (StatusCode::OK, json!({ "room_id": aliased })),
            "v{version}"
        );
        assert_eq!(
            member_on(a, &alice.token, &aliased, &bob.user_id).await,
            "join"
        );
        assert_eq!(
            member_on(b, &bob.token, &aliased, &alice.user_id).await,
            "join"
        );
    }
}

async fn a_remote_user_is_invited_joins_and_rejects(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    for version in VERSIONS {
        let private =
            json!({ "preset": "private_chat", "room_version": version, "name": "Secret" });
        let room_id = create_room(a, &alice.token, private.clone()).await;
        invite(a, &alice.token, &room_id, &bob.user_id).await;

        // Bob's sync shows the invite with the room's stripped state.
        let synced = initial_sync(b, &bob.token, 10).await;
        let invite_state = synced["rooms"]["invite"][&room_id]["invite_state"]["events"]
            .as_array()
            .unwrap_or_else(|| panic!("v{version}: no invite in {synced}"));
        assert!(
            invite_state
                .iter()
                .any(|event| event["type"] == "m.room.name" && event["content"]["name"] == "Secret"),
            "v{version}: {synced}"
        );
        assert!(
            invite_state
                .iter()
                .any(|event| event["type"] == "m.room.member"
                    && event["state_key"] == bob.user_id.as_str()
                    && event["content"]["membership"] == "invite"
                    && event["sender"] == alice.user_id.as_str()),
            "v{version}: {synced}"
        );

        // He joins through the inviting server, without naming it.
        let answer = membership(b, &bob.token, &room_id, "join", json!({})).await;
        assert_eq!(
            answer,
            (StatusCode::OK, json!({ "room_id": room_id })),
            "v{version}"
        );
        let synced = initial_sync(b, &bob.token, 10).await;
        assert_eq!(
            state_by_key(&synced, &room_id)[&format!("m.room.member/{}", bob.user_id)]["content"]["membership"],
            "join",
            "v{version}"
        );
        assert_eq!(
            member_on(a, &alice.token, &room_id, &bob.user_id).await,
            "join"
        );

        // Another invite, rejected: A sees the leave, B's sync no invite.
        let other = create_room(a, &alice.token, private).await;
        invite(a, &alice.token, &other, &bob.user_id).await;
        let answer = membership(b, &bob.token, &other, "leave", json!({})).await;
        assert_eq!(answer, (StatusCode::OK, json!({})), "v{version}");
        assert_eq!(
            member_on(a, &alice.token, &other, &bob.user_id).await,
            "leave"
        );
        let synced = initial_sync(b, &bob.token, 10).await;
        assert!(
            synced["rooms"]["invite"].get(&other).is_none(),
            "v{version}: {synced}"
        );
    }
}

async fn the_resident_refuses_joins_that_are_not_what_they_claim(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let b_key = signing_key(b).await;
    for version in VERSIONS {
        let public = create_room(
            a,
            &alice.token,
            json!({ "preset": "public_chat", "room_version": version }),
        )
        .await;
        let bob = format!("@bob{version}:{}", b.server_name);
        let template = make_join(a, b, &b_key, &public, &bob).await;
        assert_eq!(template.0, StatusCode::OK, "v{version}: {}", template.1);

        // A join of a user of another server than the one asking, signed
        // by that user's server (whose key B got hold of).
        let mallory = format!("@mallory:{}", a.server_name);
        let mut forged = template.1["event"].clone();
        forged["sender"] = json!(mallory);
        forged["state_key"] = json!(mallory);
        let (event_id, forged) = sign_event(a, &signing_key(a).await, version, forged);
        let answer = send_join(a, b, &b_key, &public, &event_id, &forged).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        // A join under another event id than the path's.
        let (_, join) = sign_event(b, &b_key, version, template.1["event"].clone());
        let answer = send_join(a, b, &b_key, &public, &event_id, &join).await;
        assert_eq!(
            answer.0,
            StatusCode::BAD_REQUEST,
            "v{version}: {}",
            answer.1
        );

        // Nothing of either is in the room.
        let synced = initial_sync(a, &alice.token, 20).await;
        assert!(
            timeline(&synced, "join", &public)
                .iter()
                .all(|event| event["content"]["membership"] != "join"
                    || event["sender"] == alice.user_id.as_str()),
            "v{version}: {synced}"
        );

        // A banned user gets no template.
        let answer = membership(a, &alice.token, &public, "ban", json!({ "user_id": bob })).await;
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
        let answer = make_join(a, b, &b_key, &public, &bob).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        // Nor does an uninvited user of an invite-only room.
        let private = create_room(
            a,
            &alice.token,
            json!({ "preset": "private_chat", "room_version": version }),
        )
        .await;
        let answer = make_join(a, b, &b_key, &private, &format!("@dave:{}", b.server_name)).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        // Nor a user of a server other than the one asking.
        let answer = make_join(a, b, &b_key, &private, &mallory).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        // A room id with a NUL character is refused, not a database error.
        let path = format!(
            "/_matrix/federation/v1/make_join/!a%00b:{}/{}?ver={version}",
            enc(&a.server_name),
            enc(&bob)
        );
        let answer = signed_request(a, b, &b_key, Method::GET, &path, None).await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);

        // A room version the joining server does not name.
        let path = format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=1",
            enc(&public),
            enc(&format!("@erin:{}", b.server_name))
        );
        let answer = signed_request(a, b, &b_key, Method::GET, &path, None).await;
        assert_error(
            &answer,
            StatusCode::BAD_REQUEST,
            "M_INCOMPATIBLE_ROOM_VERSION",
        );
    }
}

async fn a_restricted_room_admits_members_of_its_allowed_room(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    for version in VERSIONS {
        let lobby = create_room(
            a,
            &alice.token,
            json!({ "preset": "public_chat", "room_version": version }),
        )
        .await;
        let restricted = create_room(
            a,
            &alice.token,
            json!({
                "preset": "private_chat",
                "room_version": version,
                "initial_state": [{
                    "type": "m.room.join_rules",
                    "state_key": "",
                    "content": {
                        "join_rule": "restricted",
                        "allow": [{ "type": "m.room_membership", "room_id": lobby }],
                    },
                }],
            }),
        )
        .await;
        let via = format!("?server_name={}", enc(&a.server_name));
        let join = |room: &str| {
            b.request(
                Method::POST,
                b.v3(&format!("/join/{}{via}", enc(room))),
                Some(&bob.token),
                Some(json!({})),
            )
        };
        // Not yet a member of the allowed room: refused.
        let answer = join(&restricted).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert_eq!(join(&lobby).await.0, StatusCode::OK, "v{version}");
        // Now A vouches for the join with its signature.
        let answer = join(&restricted).await;
        assert_eq!(
            answer,
            (StatusCode::OK, json!({ "room_id": restricted })),
            "v{version}"
        );
        let synced = initial_sync(a, &alice.token, 30).await;
        let bob_join = timeline(&synced, "join", &restricted)
            .iter()
            .find(|event| event["state_key"] == bob.user_id.as_str())
            .unwrap_or_else(|| panic!("v{version}: {synced}"))
            .clone();
        assert_eq!(
            bob_join["content"]["join_authorised_via_users_server"],
            alice.user_id.as_str(),
            "v{version}"
        );
        assert_eq!(
            member_on(b, &bob.token, &restricted, &bob.user_id).await,
            "join"
        );
    }
}

async fn a_remote_user_knocks(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let b_key = signing_key(b).await;
    for version in VERSIONS {
        let room_id = create_room(
            a,
            &alice.token,
            json!({
                "preset": "private_chat",
                "room_version": version,
                "name": "Knock here",
                "initial_state": [{
                    "type": "m.room.join_rules",
                    "state_key": "",
                    "content": { "join_rule": "knock" },
                }],
            }),
        )
        .await;
        let bob = format!("@bob:{}", b.server_name);
        let path = format!(
            "/_matrix/federation/v1/make_knock/{}/{}?ver={version}",
            enc(&room_id),
            enc(&bob)
        );
        let template = signed_request(a, b, &b_key, Method::GET, &path, None).await;
        assert_eq!(template.0, StatusCode::OK, "v{version}: {}", template.1);
        assert_eq!(template.1["event"]["content"]["membership"], "knock");
        let (event_id, knock) = sign_event(b, &b_key, version, template.1["event"].clone());
        let path = format!(
            "/_matrix/federation/v1/send_knock/{}/{}",
            enc(&room_id),
            enc(&event_id)
        );
        let answer = signed_request(a, b, &b_key, Method::PUT, &path, Some(&knock)).await;
        assert_eq!(answer.0, StatusCode::OK, "v{version}: {}", answer.1);
        let stripped = answer.1["knock_room_state"].as_array().unwrap();
        assert!(
            stripped
                .iter()
                .any(|event| event["type"] == "m.room.name"
                    && event["content"]["name"] == "Knock here"),
            "v{version}: {}",
            answer.1
        );
        assert_eq!(member_on(a, &alice.token, &room_id, &bob).await, "knock");

        // A user of B knocks through the client API: B asks A.
        let carol = b.register(&format!("carol{version}")).await;
        let answer = b
            .request(
                Method::POST,
                b.v3(&format!(
                    "/knock/{}?via={}",
                    enc(&room_id),
                    enc(&a.server_name)
                )),
                Some(&carol.token),
                Some(json!({ "reason": "let me in" })),
            )
            .await;
        assert_eq!(
            answer,
            (StatusCode::OK, json!({ "room_id": room_id })),
            "v{version}"
        );
        assert_eq!(
            member_on(a, &alice.token, &room_id, &carol.user_id).await,
            "knock"
        );
        let synced = initial_sync(b, &carol.token, 10).await;
        let knock_state = synced["rooms"]["knock"][&room_id]["knock_state"]["events"]
            .as_array()
            .unwrap_or_else(|| panic!("v{version}: no knock in {synced}"));
        assert!(
            knock_state
                .iter()
                .any(|event| event["type"] == "m.room.name"
                    && event["content"]["name"] == "Knock here"),
            "v{version}: {synced}"
        );

        // She withdraws it: a leave through A.
        let answer = membership(b, &carol.token, &room_id, "leave", json!({})).await;
        assert_eq!(answer, (StatusCode::OK, json!({})), "v{version}");
        assert_eq!(
            member_on(a, &alice.token, &room_id, &carol.user_id).await,
            "leave"
        );
        let synced = initial_sync(b, &carol.token, 10).await;
        assert!(
            synced["rooms"]["knock"].get(&room_id).is_none(),
            "v{version}: {synced}"
        );

        // A knock with the join's template is not a knock.
        let path = format!(
            "/_matrix/federation/v1/send_knock/{}/{}",
            enc(&room_id),
            enc(&event_id)
        );
        let mut join = template.1["event"].clone();
        join["content"]["membership"] = json!("join");
        let (join_id, join) = sign_event(b, &b_key, version, join);
        let path = path.replace(&enc(&event_id), &enc(&join_id));
        let answer = signed_request(a, b, &b_key, Method::PUT, &path, Some(&join)).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
}

async fn invites_from_another_server_are_bounded_per_user(backend: Backend) {
    let servers = TestServer::start_federated(backend, 2).await;
    let (a, b) = (&servers[0], &servers[1]);
    let bob = b.register("bob").await;
    let a_key = signing_key(a).await;
    let alice = a.user_id("alice");
    let invite = |i: usize| {
        let event = json!({
            "room_id": format!("!room{i}:{}", a.server_name),
            "sender": alice,
            "type": "m.room.member",
            "state_key": bob.user_id,
            "content": { "membership": "invite" },
            "prev_events": [],
            "auth_events": [],
            "depth": 1,
            "origin_server_ts": 1_700_000_000_000_u64 + i as u64,
        });
        sign_event(a, &a_key, "10", event)
    };
    for i in 0..100 {
        let answer = send_invite(a, b, &a_key, invite(i)).await;
        assert_eq!(answer.0, StatusCode::OK, "invite {i}: {}", answer.1);
    }
    let answer = send_invite(a, b, &a_key, invite(100)).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let synced = initial_sync(b, &bob.token, 1).await;
    assert_eq!(
        synced["rooms"]["invite"]
            .as_object()
            .map(serde_json::Map::len),
        Some(100)
    );
}

/// `PUT /v2/invite` of `(event_id, event)` to `invitee_server`, signed as `origin`.
async fn send_invite(
    origin: &TestServer,
    invitee_server: &TestServer,
    key: &SigningKey,
    (event_id, event): (String, Value),
) -> (StatusCode, Value) {
    let path = format!(
        "/_matrix/federation/v2/invite/{}/{}",
        enc(event["room_id"].as_str().unwrap()),
        enc(&event_id)
    );
    let body = json!({ "room_version": "10", "event": event, "invite_room_state": [] });
    signed_request(invitee_server, origin, key, Method::PUT, &path, Some(&body)).await
}

/// The room's state in an initial sync, by `type/state_key`, from its
/// state and timeline sections.
fn state_by_key(synced: &Value, room_id: &str) -> std::collections::BTreeMap<String, Value> {
    state(synced, "join", room_id)
        .iter()
        .chain(timeline(synced, "join", room_id))
        .filter(|event| event["state_key"].is_string())
        .map(|event| {
            (
                format!(
                    "{}/{}",
                    event["type"].as_str().unwrap(),
                    event["state_key"].as_str().unwrap()
                ),
                event.clone(),
            )
        })
        .collect()
}

/// A user's membership in a room, as a member of it on `server` reads it.
async fn member_on(server: &TestServer, token: &str, room_id: &str, user_id: &str) -> String {
    let (status, answer) = server
        .request(
            Method::GET,
            server.v3(&format!(
                "/rooms/{}/state/m.room.member/{}",
                enc(room_id),
                enc(user_id)
            )),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["membership"].as_str().unwrap_or_default().to_owned()
}

/// The server's signing key, read from its database.
async fn signing_key(server: &TestServer) -> SigningKey {
    let (key_id, seed) = server.signing_key_seed().await;
    SigningKey::from_seed_base64(&seed, key_id.strip_prefix("ed25519:").unwrap()).unwrap()
}

/// Hashes and signs an event as `server`; returns its id and JSON.
fn sign_event(
    server: &TestServer,
    key: &SigningKey,
    version: &str,
    event: Value,
) -> (String, Value) {
    let version = RoomVersionId::try_from(version).unwrap();
    let CanonicalJsonValue::Object(mut object) = CanonicalJsonValue::try_from(event).unwrap()
    else {
        panic!("an event is an object");
    };
    let origin = ServerName::parse(&server.server_name).unwrap();
    hash_and_sign_event(&origin, key, &version, &mut object).unwrap();
    let event_id = myelin_crypto::event_id(&version, &object).unwrap();
    (
        event_id.to_string(),
        Value::from(CanonicalJsonValue::Object(object)),
    )
}

async fn make_join(
    resident: &TestServer,
    origin: &TestServer,
    key: &SigningKey,
    room_id: &str,
    user_id: &str,
) -> (StatusCode, Value) {
    let path = format!(
        "/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11&ver=12",
        enc(room_id),
        enc(user_id)
    );
    signed_request(resident, origin, key, Method::GET, &path, None).await
}

async fn send_join(
    resident: &TestServer,
    origin: &TestServer,
    key: &SigningKey,
    room_id: &str,
    event_id: &str,
    event: &Value,
) -> (StatusCode, Value) {
    let path = format!(
        "/_matrix/federation/v2/send_join/{}/{}",
        enc(room_id),
        enc(event_id)
    );
    signed_request(resident, origin, key, Method::PUT, &path, Some(event)).await
}

/// A request to `resident`'s federation listener signed as `origin`.
async fn signed_request(
    resident: &TestServer,
    origin: &TestServer,
    key: &SigningKey,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let content: Option<CanonicalJsonObject> = body.map(|body| {
        let CanonicalJsonValue::Object(object) =
            CanonicalJsonValue::try_from(body.clone()).unwrap()
        else {
            panic!("a body is an object");
        };
        object
    });
    let authorization = authorization_header(
        key,
        &ServerName::parse(&origin.server_name).unwrap(),
        &ServerName::parse(&resident.server_name).unwrap(),
        &SignedRequest {
            method: method.as_str(),
            uri: path,
            content: content.as_ref(),
        },
    )
    .unwrap();
    let url = format!("{}{path}", resident.federation_url.as_ref().unwrap());
    let mut request = resident
        .federation_client()
        .request(method, url)
        .header(header::AUTHORIZATION, authorization);
    if let Some(content) = &content {
        request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(myelin_crypto::to_canonical_string(content));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}")),
    )
}
