//! Every stable room version, 1 to 12, through the Client-Server API: each
//! version's rooms are created, written (messages, state, memberships,
//! redactions) and read back (`/sync`, `/messages`, `/state`, `/event`), and
//! what the versions do differently is checked where a client can see it:
//! event id formats, the PDU layout under `event_format: federation`, the
//! create event's `creator`, redaction, knocking (from v7), restricted joins
//! (from v8) and string power levels (before v10). See
//! `spec-notes/room-versions.md`.

use myelin_tests::{Account, Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    rooms_support::{
        create_room, enc, event_id, join, membership, put_state, room_url, send_text, state_content,
    },
    sync_support::{chunk, get_event, ids, initial_sync, messages_ok, sync_ok, timeline},
};

backend_tests!(
    every_version_runs_the_room_lifecycle,
    event_ids_and_pdus_follow_the_version_format,
    redaction_keeps_what_each_version_keeps,
    knocking_is_refused_before_v7,
    restricted_joins_are_refused_before_v8,
    string_power_levels_are_accepted_only_before_v10,
    upgrades_turn_string_power_levels_into_integers,
);

/// Every stable room version, oldest first.
const VERSIONS: [&str; 12] = [
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
];

fn number(version: &str) -> u32 {
    version.parse().expect("stable versions are numbers")
}

async fn redact(server: &TestServer, token: &str, room: &str, target: &str) -> String {
    let txn = myelin_tests::random_suffix();
    let (status, answer) = server
        .request(
            Method::PUT,
            room_url(server, room, &format!("/redact/{}/{txn}", enc(target))),
            Some(token),
            Some(json!({ "reason": "test" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "redact: {answer}");
    event_id(&answer)
}

async fn act(server: &TestServer, actor: &Account, room: &str, action: &str, target: &Account) {
    let answer = membership(
        server,
        &actor.token,
        room,
        action,
        json!({ "user_id": target.user_id }),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{action}: {}", answer.1);
}

async fn event_json(server: &TestServer, token: &str, room: &str, id: &str) -> Value {
    let (status, event) = get_event(server, token, room, id).await;
    assert_eq!(status, StatusCode::OK, "/event/{id}: {event}");
    event
}

/// Create, message, state, join, kick, ban, unban, leave, redact, then read
/// everything back through the four read APIs, in each version.
async fn every_version_runs_the_room_lifecycle(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    for version in VERSIONS {
        let room = create_room(
            &server,
            &alice.token,
            json!({ "room_version": version, "preset": "public_chat" }),
        )
        .await;
        let create = state_content(&server, &alice.token, &room, "m.room.create", "").await;
        assert_eq!(create["room_version"], version, "v{version}: {create}");
        // `creator` names the creator before version 11; from 11 the sender does.
        if number(version) < 11 {
            assert_eq!(create["creator"], alice.user_id, "v{version}: {create}");
        } else {
            assert!(create.get("creator").is_none(), "v{version}: {create}");
        }

        join(&server, &bob.token, &room).await;
        let hello = send_text(&server, &bob.token, &room, "hello").await;
        let (status, answer) = put_state(
            &server,
            &alice.token,
            &room,
            "m.room.topic",
            "",
            json!({ "topic": "versions" }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "v{version}: {answer}");
        let topic = event_id(&answer);

        // Kick, rejoin (public room), ban and unban, leave.
        act(&server, &alice, &room, "kick", &bob).await;
        join(&server, &bob.token, &room).await;
        join(&server, &carol.token, &room).await;
        act(&server, &alice, &room, "ban", &carol).await;
        let refused = membership(&server, &carol.token, &room, "join", json!({})).await;
        assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        act(&server, &alice, &room, "unban", &carol).await;
        join(&server, &carol.token, &room).await;
        let answer = membership(&server, &carol.token, &room, "leave", json!({})).await;
        assert_eq!(answer.0, StatusCode::OK, "v{version}: {}", answer.1);

        let secret = send_text(&server, &alice.token, &room, "secret words").await;
        let redaction = redact(&server, &alice.token, &room, &secret).await;

        // /event: the message, the topic, and the redacted message.
        let event = event_json(&server, &alice.token, &room, &hello).await;
        assert_eq!(event["content"]["body"], "hello", "v{version}");
        assert_eq!(event["sender"], bob.user_id);
        let event = event_json(&server, &bob.token, &room, &topic).await;
        assert_eq!(event["content"], json!({ "topic": "versions" }));
        let event = event_json(&server, &alice.token, &room, &secret).await;
        assert_eq!(event["content"], json!({}), "v{version}: {event}");
        let event = event_json(&server, &alice.token, &room, &redaction).await;
        assert_eq!(event["redacts"], secret, "v{version}: {event}");

        // /state: the topic and every membership.
        assert_eq!(
            state_content(&server, &bob.token, &room, "m.room.topic", "").await,
            json!({ "topic": "versions" })
        );
        for (user, expected) in [(&bob, "join"), (&carol, "leave"), (&alice, "join")] {
            let member =
                state_content(&server, &alice.token, &room, "m.room.member", &user.user_id).await;
            assert_eq!(
                member["membership"], expected,
                "v{version} {}",
                user.user_id
            );
        }

        // /messages: newest first, the redaction, the redacted message, the
        // memberships, the topic and the first message.
        let page = messages_ok(
            &server,
            &alice.token,
            &room,
            &[("dir", "b"), ("limit", "30")],
        )
        .await;
        let listed = ids(chunk(&page));
        assert_eq!(listed[0], redaction, "v{version}");
        assert_eq!(listed[1], secret, "v{version}");
        let position = |id: &str| listed.iter().position(|listed| listed == id);
        assert!(
            position(&topic) > position(&redaction) && position(&hello) > position(&topic),
            "v{version}: {listed:?}"
        );
        assert!(
            !page.to_string().contains("secret words"),
            "v{version}: {page}"
        );

        // /sync: the room with the same newest events.
        let synced = initial_sync(&server, &bob.token, 2).await;
        assert_eq!(
            ids(timeline(&synced, "join", &room)),
            [secret.clone(), redaction.clone()],
            "v{version}"
        );
    }
}

/// Versions 1 and 2: `$opaque:server` ids carried in the PDU, citations as
/// `[id, {"sha256": hash}]`; version 3: standard base64 ids; version 4 on:
/// URL-safe base64 ids, citations as plain ids.
async fn event_ids_and_pdus_follow_the_version_format(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let federation =
        json!({ "event_format": "federation", "room": { "timeline": { "limit": 6 } } }).to_string();
    for version in VERSIONS {
        let room = create_room(&server, &alice.token, json!({ "room_version": version })).await;
        let mut sent = Vec::new();
        for body in ["a", "b", "c", "d", "e", "f"] {
            sent.push(send_text(&server, &alice.token, &room, body).await);
        }
        let synced = sync_ok(&server, &alice.token, &[("filter", &federation)]).await;
        let pdus = timeline(&synced, "join", &room);
        assert_eq!(pdus.len(), 6, "v{version}");
        for pdu in pdus {
            let id = pdu["event_id"].as_str().expect("event_id");
            let cited = pdu["prev_events"].as_array().expect("prev_events");
            assert_eq!(cited.len(), 1, "v{version}: {pdu}");
            match number(version) {
                1 | 2 => {
                    let (opaque, server_name) = id[1..].split_once(':').expect("$opaque:server");
                    assert_eq!(server_name, server.server_name, "v{version}: {id}");
                    assert!(
                        opaque.chars().all(|c| c.is_ascii_alphanumeric()),
                        "v{version}: {id}"
                    );
                    let hash = cited[0][1]["sha256"].as_str();
                    assert!(cited[0][0].is_string(), "v{version}: {pdu}");
                    assert_eq!(hash.map(str::len), Some(43), "v{version}: {pdu}");
                }
                n => {
                    assert!(cited[0].is_string(), "v{version}: {pdu}");
                    assert_eq!(id.len(), 44, "v{version}: {id}");
                    let alphabet_extra: &[char] = if n == 3 { &['+', '/'] } else { &['-', '_'] };
                    assert!(
                        id[1..]
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || alphabet_extra.contains(&c)),
                        "v{version}: {id} is not in the version's base64 alphabet"
                    );
                }
            }
        }
        // The ids a client gets are the ids the PDUs carry.
        let sent_ids: Vec<String> = pdus
            .iter()
            .map(|pdu| pdu["event_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(sent_ids, sent, "v{version}");
    }
}

/// The keys redaction keeps differ by version (rooms/v1 to v11
/// "Redactions"): `m.room.aliases` content until 5, join rules' `allow`
/// from 8, power levels' `invite` from 11, the whole create content from 11.
async fn redaction_keeps_what_each_version_keeps(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let t = &alice.token;
    for version in VERSIONS {
        let n = number(version);
        let room = create_room(&server, t, json!({ "room_version": version })).await;
        let cases = [
            (
                "m.room.join_rules",
                "",
                json!({ "join_rule": "invite", "allow": [], "extra": 1 }),
                if n >= 8 {
                    json!({ "join_rule": "invite", "allow": [] })
                } else {
                    json!({ "join_rule": "invite" })
                },
            ),
            (
                "m.room.aliases",
                server.server_name.as_str(),
                json!({ "aliases": ["#a:example.org"], "extra": 1 }),
                if n <= 5 {
                    json!({ "aliases": ["#a:example.org"] })
                } else {
                    json!({})
                },
            ),
        ];
        for (kind, state_key, content, kept) in cases {
            let (status, answer) = put_state(&server, t, &room, kind, state_key, content).await;
            assert_eq!(status, StatusCode::OK, "v{version} {kind}: {answer}");
            redact(&server, t, &room, &event_id(&answer)).await;
            assert_eq!(
                state_content(&server, t, &room, kind, state_key).await,
                kept,
                "v{version} {kind}"
            );
        }

        let levels = state_content(&server, t, &room, "m.room.power_levels", "").await;
        let (status, answer) =
            put_state(&server, t, &room, "m.room.power_levels", "", levels.clone()).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {answer}");
        redact(&server, t, &room, &event_id(&answer)).await;
        let redacted = state_content(&server, t, &room, "m.room.power_levels", "").await;
        assert_eq!(
            redacted.get("invite").is_some(),
            n >= 11,
            "v{version}: {redacted}"
        );
        assert_eq!(redacted["users"], levels["users"], "v{version}");

        // Last, as it leaves the room without its version in the content
        // before 11 (the server keeps the version outside the event).
        let (status, create) = server
            .request(
                Method::GET,
                room_url(&server, &room, "/state/m.room.create/?format=event"),
                Some(t),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let full = create["content"].clone();
        redact(&server, t, &room, create["event_id"].as_str().unwrap()).await;
        let expected = if n >= 11 {
            full
        } else {
            json!({ "creator": alice.user_id })
        };
        assert_eq!(
            state_content(&server, t, &room, "m.room.create", "").await,
            expected,
            "v{version}"
        );
        // The room still works.
        send_text(&server, t, &room, "still here").await;
    }
}

async fn knocking_is_refused_before_v7(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for version in VERSIONS {
        let room = create_room(
            &server,
            &alice.token,
            json!({
                "room_version": version,
                "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }],
            }),
        )
        .await;
        let answer = server
            .request(
                Method::POST,
                server.v3(&format!("/knock/{}", enc(&room))),
                Some(&bob.token),
                Some(json!({})),
            )
            .await;
        if number(version) < 7 {
            assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        } else {
            assert_eq!(answer.0, StatusCode::OK, "v{version}: {}", answer.1);
            let member =
                state_content(&server, &alice.token, &room, "m.room.member", &bob.user_id).await;
            assert_eq!(member["membership"], "knock", "v{version}");
        }
    }
}

async fn restricted_joins_are_refused_before_v8(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let space = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &space).await;
    for version in VERSIONS {
        let room = create_room(
            &server,
            &alice.token,
            json!({
                "room_version": version,
                "initial_state": [{
                    "type": "m.room.join_rules",
                    "content": {
                        "join_rule": "restricted",
                        "allow": [{ "type": "m.room_membership", "room_id": space }],
                    },
                }],
            }),
        )
        .await;
        let answer = membership(&server, &bob.token, &room, "join", json!({})).await;
        if number(version) < 8 {
            assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        } else {
            assert_eq!(answer.0, StatusCode::OK, "v{version}: {}", answer.1);
        }
    }
}

/// Before version 10 power levels may be strings holding integers, and
/// count as those integers; from 10 they must be integers.
async fn string_power_levels_are_accepted_only_before_v10(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for version in VERSIONS {
        let room = create_room(
            &server,
            &alice.token,
            json!({ "room_version": version, "preset": "public_chat" }),
        )
        .await;
        join(&server, &bob.token, &room).await;
        let mut levels =
            state_content(&server, &alice.token, &room, "m.room.power_levels", "").await;
        levels["events"]["m.room.topic"] = json!("20");
        levels["users"][&bob.user_id] = json!("10");
        let answer = put_state(
            &server,
            &alice.token,
            &room,
            "m.room.power_levels",
            "",
            levels,
        )
        .await;
        if number(version) >= 10 {
            assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
            continue;
        }
        assert_eq!(answer.0, StatusCode::OK, "v{version}: {}", answer.1);
        // bob ("10") is below the topic level ("20").
        let topic = put_state(
            &server,
            &bob.token,
            &room,
            "m.room.topic",
            "",
            json!({ "topic": "t" }),
        )
        .await;
        assert_error(&topic, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let mut levels =
            state_content(&server, &alice.token, &room, "m.room.power_levels", "").await;
        levels["users"][&bob.user_id] = json!("20");
        let answer = put_state(
            &server,
            &alice.token,
            &room,
            "m.room.power_levels",
            "",
            levels,
        )
        .await;
        assert_eq!(answer.0, StatusCode::OK, "v{version}: {}", answer.1);
        let topic = put_state(
            &server,
            &bob.token,
            &room,
            "m.room.topic",
            "",
            json!({ "topic": "t" }),
        )
        .await;
        assert_eq!(topic.0, StatusCode::OK, "v{version}: {}", topic.1);
    }
}

/// Upgrading a room whose power levels hold strings (allowed before 10) to
/// a version that takes integers only carries the levels over as integers,
/// and retiring the old room never lowers a level written as a string.
async fn upgrades_turn_string_power_levels_into_integers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for new_version in ["10", "12"] {
        let room = create_room(&server, &alice.token, json!({ "room_version": "9" })).await;
        let mut levels =
            state_content(&server, &alice.token, &room, "m.room.power_levels", "").await;
        levels["users"][&bob.user_id] = json!("40");
        levels["events"]["m.room.topic"] = json!(" 20 ");
        levels["events_default"] = json!("70");
        let answer = put_state(
            &server,
            &alice.token,
            &room,
            "m.room.power_levels",
            "",
            levels,
        )
        .await;
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);

        let (status, upgraded) = server
            .request(
                Method::POST,
                room_url(&server, &room, "/upgrade"),
                Some(&alice.token),
                Some(json!({ "new_version": new_version })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "to v{new_version}: {upgraded}");
        let new_room = upgraded["replacement_room"].as_str().unwrap();
        let carried =
            state_content(&server, &alice.token, new_room, "m.room.power_levels", "").await;
        assert_eq!(
            carried["users"][&bob.user_id], 40,
            "v{new_version}: {carried}"
        );
        assert_eq!(carried["events"]["m.room.topic"], 20, "{carried}");
        assert_eq!(carried["events_default"], 70, "{carried}");

        let retired = state_content(&server, &alice.token, &room, "m.room.power_levels", "").await;
        assert_eq!(retired["events_default"], 70, "not lowered: {retired}");
    }
}
