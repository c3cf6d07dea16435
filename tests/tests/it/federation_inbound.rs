//! Federation received: transactions of PDUs and EDUs that server B sends
//! to server A (`PUT /send/{txnId}`), signed with B's real key, and the
//! reads of A's room DAG that B makes.

use myelin_tests::{Backend, TestServer, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    federation_fake_peer::FakePeer,
    federation_inbound_support::{Peer, RoomView, stored_event},
    rooms_support::{create_room, enc, put_state, send_text},
    sync_support::{initial_sync, next_batch, sync_ok, timeline},
};

backend_tests!(
    remote_events_reach_local_sync_once,
    pdus_failing_the_checks_get_error_entries,
    the_origin_must_be_the_signer_and_acls_are_applied,
    remote_edus_reach_local_sync,
    dag_reads_answer_servers_in_the_room,
    events_with_unknown_prev_events_wait_for_them,
    missing_events_are_fetched_from_the_origin,
);

/// Servers A and B, alice on A in a public room, and B speaking as itself.
struct Setup {
    servers: Vec<TestServer>,
    alice: myelin_tests::Account,
    room_id: String,
    peer: Peer,
}

impl Setup {
    async fn start(backend: Backend) -> Self {
        let servers = TestServer::start_federated(backend, 2).await;
        let alice = servers[0].register("alice").await;
        let room_id = create_room(
            &servers[0],
            &alice.token,
            json!({ "preset": "public_chat", "visibility": "public", "name": "Lobby" }),
        )
        .await;
        let peer = Peer::of(&servers[1]).await;
        Self {
            servers,
            alice,
            room_id,
            peer,
        }
    }

    fn a(&self) -> &TestServer {
        &self.servers[0]
    }

    async fn view(&self) -> RoomView {
        RoomView::read(self.a(), &self.alice.token, &self.room_id).await
    }

    /// bob@B's join, taken by A.
    async fn join_bob(&self) -> Value {
        let bob = self.peer.user("bob");
        let view = self.view().await;
        let (join_id, join) = self.peer.event(
            &view,
            &bob,
            "m.room.member",
            Some(bob.as_str()),
            json!({ "membership": "join" }),
            &[],
        );
        let answer = self.peer.send(self.a(), "join", &[&join], &[]).await;
        assert_eq!(
            answer,
            (StatusCode::OK, json!({ "pdus": { join_id.as_str(): {} } }))
        );
        join
    }
}

async fn remote_events_reach_local_sync_once(backend: Backend) {
    let setup = Setup::start(backend).await;
    let a = setup.a();
    let bob = setup.peer.user("bob");
    let since = next_batch(&initial_sync(a, &setup.alice.token, 10).await);

    let join = setup.join_bob().await;
    let view = setup.view().await;
    assert_eq!(view.tip, join, "the join is the room's newest event");
    let (message_id, message) = setup.peer.event(
        &view,
        &bob,
        "m.room.message",
        None,
        json!({ "msgtype": "m.text", "body": "hello from B" }),
        &[],
    );
    let first = setup.peer.send(a, "t1", &[&message], &[]).await;
    assert_eq!(
        first,
        (
            StatusCode::OK,
            json!({ "pdus": { message_id.as_str(): {} } })
        )
    );

    let synced = sync_ok(
        a,
        &setup.alice.token,
        &[("since", &since), ("timeout", "0")],
    )
    .await;
    let events = timeline(&synced, "join", &setup.room_id);
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["sender"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("m.room.member", bob.as_str()),
            ("m.room.message", bob.as_str())
        ]
    );

    // The same transaction again: the same answer, nothing stored twice
    // (a changed body under the same id is not even looked at).
    let again = setup.peer.send(a, "t1", &[], &[]).await;
    assert_eq!(again, first);
    let count = a
        .count_rows(&format!(
            "SELECT COUNT(*) FROM events WHERE event_id = '{message_id}'"
        ))
        .await;
    assert_eq!(count, 1);
    // A local message now follows B's.
    send_text(a, &setup.alice.token, &setup.room_id, "hi bob").await;
    let tip = setup.view().await.tip;
    assert_eq!(tip["prev_events"], json!([message_id]));
}

async fn pdus_failing_the_checks_get_error_entries(backend: Backend) {
    let setup = Setup::start(backend).await;
    let a = setup.a();
    let bob = setup.peer.user("bob");
    setup.join_bob().await;
    let view = setup.view().await;

    let (good_id, good) = setup
        .peer
        .event(&view, &bob, "m.room.message", None, text("good"), &[]);
    let (forged_id, mut forged) = setup.peer.event(
        &view,
        &bob,
        "m.room.message",
        None,
        text("forged"),
        &[&good],
    );
    forge_signatures(&mut forged);
    let (changed_id, mut changed) = setup.peer.event(
        &view,
        &bob,
        "m.room.message",
        None,
        text("original"),
        &[&good],
    );
    // Content changed after hashing and signing: the content hash fails,
    // and A keeps the redacted form (same event id).
    changed["content"]["body"] = json!("changed");
    // A's own user's event signed by B alone.
    let alice = myelin_tests_user(&setup.alice.user_id);
    let (impersonated_id, impersonated) = setup.peer.event(
        &view,
        &alice,
        "m.room.message",
        None,
        text("not alice"),
        &[&good],
    );
    let mut unknown_room = good.clone();
    unknown_room["room_id"] = json!("!nowhere:example.org");
    let not_an_event = json!("just a string");

    let (status, answer) = setup
        .peer
        .send(
            a,
            "mixed",
            &[
                &good,
                &forged,
                &changed,
                &impersonated,
                &unknown_room,
                &not_an_event,
            ],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let pdus = answer["pdus"].as_object().unwrap();
    assert_eq!(pdus[good_id.as_str()], json!({}));
    assert_eq!(pdus[changed_id.as_str()], json!({}));
    for refused in [&forged_id, &impersonated_id] {
        assert!(
            pdus[refused.as_str()]["error"].is_string(),
            "{refused} refused: {answer}"
        );
    }
    assert_eq!(
        pdus.len(),
        5,
        "one entry each but for the non-object: {answer}"
    );
    let unknown = pdus
        .iter()
        .find(|(id, _)| {
            ![&good_id, &forged_id, &changed_id, &impersonated_id]
                .iter()
                .any(|k| k.as_str() == *id)
        })
        .unwrap();
    assert_eq!(unknown.1["error"], json!("unknown room"));

    assert!(stored_event(a, good_id.as_str()).await.is_some());
    for refused in [&forged_id, &impersonated_id] {
        assert!(stored_event(a, refused.as_str()).await.is_none());
    }
    let stored = stored_event(a, changed_id.as_str()).await.unwrap();
    assert_eq!(stored["content"], json!({}), "stored redacted");
}

async fn the_origin_must_be_the_signer_and_acls_are_applied(backend: Backend) {
    let setup = Setup::start(backend).await;
    let a = setup.a();
    let bob = setup.peer.user("bob");
    setup.join_bob().await;

    let lying = json!({
        "origin": "someone.else.example",
        "origin_server_ts": 1,
        "pdus": [],
        "edus": [],
    });
    let (status, answer) = setup
        .peer
        .request(
            a,
            Method::PUT,
            "/_matrix/federation/v1/send/lie",
            Some(lying),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["errcode"], "M_FORBIDDEN");
    let too_many: Vec<Value> = (0..51).map(|i| json!({ "n": i })).collect();
    let refs: Vec<&Value> = too_many.iter().collect();
    let (status, _) = setup.peer.send(a, "big", &refs, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Both test servers are `localhost` without their ports: the ACL
    // denies B (A's own events are not checked against it).
    let (status, answer) = put_state(
        a,
        &setup.alice.token,
        &setup.room_id,
        "m.room.server_acl",
        "",
        json!({ "allow": ["*"], "deny": ["localhost"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let view = setup.view().await;
    let (message_id, message) = setup.peer.event(
        &view,
        &bob,
        "m.room.message",
        None,
        json!({ "msgtype": "m.text", "body": "denied" }),
        &[],
    );
    let typing = json!({
        "edu_type": "m.typing",
        "content": { "room_id": setup.room_id, "user_id": bob, "typing": true },
    });
    let since = next_batch(&initial_sync(a, &setup.alice.token, 1).await);
    let (status, answer) = setup.peer.send(a, "acl", &[&message], &[typing]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        answer["pdus"][message_id.as_str()]["error"].is_string(),
        "{answer}"
    );
    assert!(stored_event(a, message_id.as_str()).await.is_none());
    let synced = sync_ok(
        a,
        &setup.alice.token,
        &[("since", &since), ("timeout", "0")],
    )
    .await;
    assert!(
        synced["rooms"]["join"][&setup.room_id]["ephemeral"]["events"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "no typing from a denied server: {synced}"
    );
    // B may no longer read the room either.
    let (status, _) = setup
        .peer
        .request(
            a,
            Method::GET,
            &format!(
                "/_matrix/federation/v1/event/{}",
                enc(view.tip_id().as_str())
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn remote_edus_reach_local_sync(backend: Backend) {
    let setup = Setup::start(backend).await;
    let a = setup.a();
    let bob = setup.peer.user("bob");
    setup.join_bob().await;
    let since = next_batch(&initial_sync(a, &setup.alice.token, 1).await);
    let read_up_to = setup.view().await.tip_id();

    let to_device = json!({
        "edu_type": "m.direct_to_device",
        "content": {
            "sender": bob,
            "type": "m.room_key_request",
            "message_id": "m1",
            "messages": { setup.alice.user_id.clone(): { setup.alice.device_id.clone(): { "n": 1 } } },
        },
    });
    let typing = json!({
        "edu_type": "m.typing",
        "content": { "room_id": setup.room_id, "user_id": bob, "typing": true },
    });
    let receipt = json!({
        "edu_type": "m.receipt",
        "content": { setup.room_id.clone(): { "m.read": { bob.as_str(): {
            "event_ids": [read_up_to], "data": { "ts": 1 },
        } } } },
    });
    let keys = json!({
        "edu_type": "m.device_list_update",
        "content": { "user_id": bob, "device_id": "BOBPHONE", "stream_id": 1, "prev_id": [], "deleted": false },
    });
    // EDUs naming a user of another server than the origin (alice, of
    // A, joined): ignored.
    let foreign_typing = json!({
        "edu_type": "m.typing",
        "content": { "room_id": setup.room_id, "user_id": setup.alice.user_id, "typing": true },
    });
    let foreign_receipt = json!({
        "edu_type": "m.receipt",
        "content": { setup.room_id.clone(): { "m.read": { setup.alice.user_id.clone(): {
            "event_ids": [read_up_to], "data": { "ts": 1 },
        } } } },
    });
    let foreign_to_device = json!({
        "edu_type": "m.direct_to_device",
        "content": {
            "sender": setup.alice.user_id,
            "type": "m.room_key_request",
            "message_id": "m2",
            "messages": { setup.alice.user_id.clone(): { "*": { "n": 2 } } },
        },
    });
    let (status, _) = setup
        .peer
        .send(
            a,
            "edus1",
            &[],
            &[
                to_device.clone(),
                typing,
                receipt,
                keys,
                foreign_typing,
                foreign_receipt,
                foreign_to_device,
                json!({ "nonsense": 1 }),
                json!({ "edu_type": "m.typing", "content": { "room_id": 3 } }),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The same message id in a later transaction is not delivered again.
    let (status, _) = setup.peer.send(a, "edus2", &[], &[to_device]).await;
    assert_eq!(status, StatusCode::OK);

    let synced = sync_ok(
        a,
        &setup.alice.token,
        &[("since", &since), ("timeout", "0")],
    )
    .await;
    let to_device = synced["to_device"]["events"].as_array().unwrap();
    assert_eq!(
        to_device,
        &vec![json!({ "sender": bob, "type": "m.room_key_request", "content": { "n": 1 } })]
    );
    let ephemeral = synced["rooms"]["join"][&setup.room_id]["ephemeral"]["events"]
        .as_array()
        .unwrap();
    let typing = ephemeral.iter().find(|e| e["type"] == "m.typing").unwrap();
    assert_eq!(typing["content"]["user_ids"], json!([bob]));
    let receipt = ephemeral.iter().find(|e| e["type"] == "m.receipt").unwrap();
    let readers = receipt["content"][read_up_to.as_str()]["m.read"]
        .as_object()
        .unwrap();
    assert_eq!(
        readers.keys().collect::<Vec<_>>(),
        [bob.as_str()],
        "{receipt}"
    );
    let changed = synced["device_lists"]["changed"].as_array().unwrap();
    assert!(changed.contains(&json!(bob)), "{synced}");
}

async fn dag_reads_answer_servers_in_the_room(backend: Backend) {
    let setup = Setup::start(backend).await;
    let a = setup.a();
    let peer = &setup.peer;
    let get = |path: String| async move { peer.request(a, Method::GET, &path, None).await };
    let tip = setup.view().await.tip_id();
    let room = enc(&setup.room_id);

    // B has nobody in the room: refused, as for a room that does not exist.
    for path in [
        format!("/_matrix/federation/v1/event/{}", enc(tip.as_str())),
        format!(
            "/_matrix/federation/v1/state_ids/{room}?event_id={}",
            enc(tip.as_str())
        ),
        format!(
            "/_matrix/federation/v1/backfill/{room}?v={}&limit=5",
            enc(tip.as_str())
        ),
        format!(
            "/_matrix/federation/v1/state_ids/{}?event_id={}",
            enc("!nowhere:example.org"),
            enc(tip.as_str())
        ),
    ] {
        let (status, answer) = get(path.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {answer}");
    }

    let join = setup.join_bob().await;
    let view = setup.view().await;
    let join_id = view.tip_id();
    let bob = setup.peer.user("bob");
    let (status, answer) = get(format!(
        "/_matrix/federation/v1/event/{}",
        enc(join_id.as_str())
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["pdus"], json!([join]));
    assert_eq!(answer["origin"], json!(a.server_name));
    let (status, _) = get(format!("/_matrix/federation/v1/event/{}", enc("$unknown"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The state before bob's join: everything but it, and its auth chain.
    let (status, answer) = get(format!(
        "/_matrix/federation/v1/state_ids/{room}?event_id={}",
        enc(join_id.as_str())
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut state_ids: Vec<String> = serde_json::from_value(answer["pdu_ids"].clone()).unwrap();
    state_ids.sort();
    let mut expected: Vec<String> = view
        .state
        .iter()
        .filter(|((_, key), _)| key != bob.as_str())
        .map(|(_, id)| id.to_string())
        .collect();
    expected.sort();
    assert_eq!(state_ids, expected);
    let auth_chain: Vec<String> = serde_json::from_value(answer["auth_chain_ids"].clone()).unwrap();
    let create_id = view.state[&("m.room.create".to_owned(), String::new())].to_string();
    // Alice's join authorises the power levels (from room version 12 the
    // create event is implied, not cited).
    let alice_join =
        view.state[&("m.room.member".to_owned(), setup.alice.user_id.clone())].to_string();
    assert!(auth_chain.contains(&alice_join), "{answer}");
    let (status, full) = get(format!(
        "/_matrix/federation/v1/state/{room}?event_id={}",
        enc(join_id.as_str())
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(full["pdus"].as_array().unwrap().len(), expected.len());
    let (status, answer) = get(format!(
        "/_matrix/federation/v1/event_auth/{room}/{}",
        enc(join_id.as_str())
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!answer["auth_chain"].as_array().unwrap().is_empty());

    // Backfill from the join: it and what precedes it, newest first.
    let (status, answer) = get(format!(
        "/_matrix/federation/v1/backfill/{room}?v={}&limit=3",
        enc(join_id.as_str())
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let pdus = answer["pdus"].as_array().unwrap();
    assert_eq!(pdus.len(), 3);
    assert_eq!(pdus[0], join);
    let depths: Vec<u64> = pdus.iter().map(|p| p["depth"].as_u64().unwrap()).collect();
    assert!(depths.windows(2).all(|w| w[0] > w[1]), "{depths:?}");

    // get_missing_events: between the create event and the join, oldest first.
    let (status, answer) = setup
        .peer
        .request(
            a,
            Method::POST,
            &format!("/_matrix/federation/v1/get_missing_events/{room}"),
            Some(json!({
                "earliest_events": [create_id],
                "latest_events": [join_id],
                "limit": 100,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let events = answer["events"].as_array().unwrap();
    // Everything after the create event and before the join, the
    // 20-event cap aside.
    let before_join = join["depth"].as_u64().unwrap() - 2;
    assert_eq!(events.len() as u64, before_join.min(20));
    let depths: Vec<u64> = events
        .iter()
        .map(|p| p["depth"].as_u64().unwrap())
        .collect();
    assert!(depths.windows(2).all(|w| w[0] < w[1]), "{depths:?}");
    assert_eq!(depths.first(), Some(&2));

    // The public room directory.
    let (status, answer) = get("/_matrix/federation/v1/publicRooms?limit=5".to_owned()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["chunk"][0]["room_id"], json!(setup.room_id));
    assert_eq!(answer["chunk"][0]["name"], json!("Lobby"));
}

async fn events_with_unknown_prev_events_wait_for_them(backend: Backend) {
    let setup = Setup::start(backend).await;
    let a = setup.a();
    let bob = setup.peer.user("bob");
    setup.join_bob().await;
    let view = setup.view().await;
    let (first_id, first) = setup
        .peer
        .event(&view, &bob, "m.room.message", None, text("one"), &[]);
    let (second_id, second) =
        setup
            .peer
            .event(&view, &bob, "m.room.message", None, text("two"), &[&first]);

    // A asks B for the missing event; B (which holds no such room) cannot
    // give it, so the event is not taken.
    let (status, answer) = setup.peer.send(a, "gap", &[&second], &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        answer["pdus"][second_id.as_str()]["error"].is_string(),
        "{answer}"
    );
    assert!(stored_event(a, second_id.as_str()).await.is_none());

    let (_, answer) = setup.peer.send(a, "fill", &[&first], &[]).await;
    assert_eq!(answer["pdus"][first_id.as_str()], json!({}));
    let (_, answer) = setup.peer.send(a, "gap-again", &[&second], &[]).await;
    assert_eq!(answer["pdus"][second_id.as_str()], json!({}));
    assert!(stored_event(a, second_id.as_str()).await.is_some());
}

async fn missing_events_are_fetched_from_the_origin(backend: Backend) {
    let fake = FakePeer::start().await;
    let servers =
        TestServer::start_federated_with(backend, 1, |_, config| fake.add_to(config)).await;
    let a = &servers[0];
    let alice = a.register("alice").await;
    let room_id = create_room(a, &alice.token, json!({ "preset": "public_chat" })).await;
    let peer = fake.identity();
    let bob = peer.user("bob");
    let view = RoomView::read(a, &alice.token, &room_id).await;
    let (join_id, join) = peer.event(
        &view,
        &bob,
        "m.room.member",
        Some(bob.as_str()),
        json!({ "membership": "join" }),
        &[],
    );
    let (_, answer) = peer.send(a, "join", &[&join], &[]).await;
    assert_eq!(answer, json!({ "pdus": { join_id.as_str(): {} } }));

    let view = RoomView::read(a, &alice.token, &room_id).await;
    let (one_id, one) = peer.event(&view, &bob, "m.room.message", None, text("one"), &[]);
    let (two_id, two) = peer.event(&view, &bob, "m.room.message", None, text("two"), &[&one]);
    let (three_id, three) = peer.event(&view, &bob, "m.room.message", None, text("three"), &[&two]);
    // Newest first: A must order them itself.
    fake.answer_missing_events(vec![two, one]);
    let (_, answer) = peer.send(a, "gap", &[&three], &[]).await;
    assert_eq!(answer, json!({ "pdus": { three_id.as_str(): {} } }));
    for id in [&one_id, &two_id, &three_id] {
        assert!(stored_event(a, id.as_str()).await.is_some(), "{id} stored");
    }
    assert_eq!(
        fake.missing_events_asked(),
        [json!({
            "earliest_events": [join_id],
            "latest_events": [three_id],
            "limit": 10,
            "min_depth": 0,
        })]
    );
    let synced = initial_sync(a, &alice.token, 10).await;
    let bodies: Vec<&str> = timeline(&synced, "join", &room_id)
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["one", "two", "three"]);

    // What the origin gives must pass the checks: a forged event is not
    // taken, and neither is the event that needs it.
    let view = RoomView::read(a, &alice.token, &room_id).await;
    let (forged_id, mut forged) =
        peer.event(&view, &bob, "m.room.message", None, text("forged"), &[]);
    let (after_id, after) = peer.event(
        &view,
        &bob,
        "m.room.message",
        None,
        text("after"),
        &[&forged],
    );
    forge_signatures(&mut forged);
    fake.answer_missing_events(vec![forged]);
    let (_, answer) = peer.send(a, "forged-gap", &[&after], &[]).await;
    assert!(
        answer["pdus"][after_id.as_str()]["error"].is_string(),
        "{answer}"
    );
    for id in [&forged_id, &after_id] {
        assert!(stored_event(a, id.as_str()).await.is_none());
    }

    // A missing auth event is fetched with `/event`: bob's new name, on
    // its own fork, authorises a message that follows the room's tip.
    let mut view = RoomView::read(a, &alice.token, &room_id).await;
    let (renamed_id, renamed) = peer.event(
        &view,
        &bob,
        "m.room.member",
        Some(bob.as_str()),
        json!({ "membership": "join", "displayname": "Bob" }),
        &[],
    );
    fake.serve_event(renamed_id.as_str(), renamed);
    view.state.insert(
        ("m.room.member".to_owned(), bob.to_string()),
        renamed_id.clone(),
    );
    let (named_id, named) = peer.event(&view, &bob, "m.room.message", None, text("named"), &[]);
    let (_, answer) = peer.send(a, "auth-gap", &[&named], &[]).await;
    assert_eq!(answer, json!({ "pdus": { named_id.as_str(): {} } }));
    assert!(stored_event(a, renamed_id.as_str()).await.is_some());
    assert_eq!(
        fake.missing_events_asked().len(),
        2,
        "prev events were all known"
    );
}

/// Replaces every signature of `pdu` with one that does not verify; its
/// event id (the reference hash, which leaves signatures out) stays.
fn forge_signatures(pdu: &mut Value) {
    for by_key in pdu["signatures"].as_object_mut().unwrap().values_mut() {
        for signature in by_key.as_object_mut().unwrap().values_mut() {
            *signature = json!("AAAA".repeat(21) + "AA");
        }
    }
}

/// A text message's content.
fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

fn myelin_tests_user(user_id: &str) -> ruma_ids::OwnedUserId {
    ruma_ids::OwnedUserId::try_from(user_id).unwrap()
}
