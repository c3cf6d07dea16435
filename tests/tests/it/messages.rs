//! `GET /rooms/{roomId}/messages` pagination (client-server-api, "Getting
//! events for a room"): tokens from sync and from earlier pages, both
//! directions, `to` bounds, `limit` and `filter`.

use std::collections::HashSet;

use myelin_tests::{Backend, TestServer, assert_error, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    rooms_support::{create_room, event_id, join, put_state, send, send_text},
    sync_support::{
        bodies, chunk, get_event, ids, initial_sync, messages, messages_ok, next_batch, timeline,
    },
};

backend_tests!(
    pagination_walks_back_to_the_create_event_and_forward_again,
    to_tokens_bound_pages_in_both_directions,
    limit_filter_and_bad_parameters,
    own_transaction_ids_in_history,
    pagination_stops_where_visible_history_stops,
    lazy_loading_on_messages_sends_the_senders_members,
);

/// One backward page: the `from` it was asked with, its events (newest
/// first) and its `end`.
struct Page {
    from: String,
    events: Vec<Value>,
    end: Option<String>,
}

async fn pagination_walks_back_to_the_create_event_and_forward_again(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "name": "history" }),
    )
    .await;
    join(&server, &bob.token, &room).await;
    let mut sent = Vec::new();
    for index in 0..25 {
        if index == 12 {
            let (status, answer) = put_state(
                &server,
                &alice.token,
                &room,
                "m.room.topic",
                "",
                json!({ "topic": "middle" }),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
        let sender = if index % 3 == 0 { &bob } else { &alice };
        sent.push(send_text(&server, &sender.token, &room, &format!("m{index}")).await);
    }

    let synced = initial_sync(&server, &bob.token, 5).await;
    let live = timeline(&synced, "join", &room).clone();
    assert_eq!(ids(&live), sent[20..].to_vec());
    let prev_batch = synced["rooms"]["join"][&room]["timeline"]["prev_batch"]
        .as_str()
        .expect("prev_batch")
        .to_owned();

    // Backwards from prev_batch, four at a time, until there is no `end`.
    let mut pages: Vec<Page> = Vec::new();
    let mut from = prev_batch.clone();
    loop {
        assert!(pages.len() < 50, "pagination does not end");
        let answer = messages_ok(
            &server,
            &bob.token,
            &room,
            &[("dir", "b"), ("from", &from), ("limit", "4")],
        )
        .await;
        assert_eq!(
            answer["start"],
            from.as_str(),
            "start is the from token: {answer}"
        );
        let events = chunk(&answer).clone();
        assert!(events.len() <= 4, "{answer}");
        let end = answer["end"].as_str().map(str::to_owned);
        if end.is_some() {
            assert_eq!(
                events.len(),
                4,
                "a page with more to come is full: {answer}"
            );
        }
        pages.push(Page {
            from: from.clone(),
            events,
            end: end.clone(),
        });
        match end {
            Some(end) => from = end,
            None => break,
        }
    }
    let oldest = pages
        .iter()
        .rev()
        .flat_map(|p| p.events.last())
        .next()
        .expect("some history");
    assert_eq!(
        oldest["type"], "m.room.create",
        "the walk ends at the create event"
    );
    assert_eq!(oldest["room_id"], room.as_str());

    // History, oldest first: the pages reversed, then the sync timeline.
    let mut history: Vec<Value> = Vec::new();
    for page in pages.iter().rev() {
        history.extend(page.events.iter().rev().cloned());
    }
    history.extend(live.iter().cloned());
    let history_ids = ids(&history);
    let distinct: HashSet<&String> = history_ids.iter().collect();
    assert_eq!(
        distinct.len(),
        history_ids.len(),
        "no duplicates: {history_ids:?}"
    );
    let messages_seen: Vec<String> = history
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(messages_seen, sent, "every message, in order");
    assert!(
        history.iter().any(|e| e["type"] == "m.room.topic"),
        "the topic change"
    );
    assert!(
        history
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()),
        "bob's join"
    );

    // Forward from the start of the room, in pages of seven: the same history.
    let mut forward = Vec::new();
    let mut from: Option<String> = None;
    loop {
        assert!(
            forward.len() <= history.len(),
            "forward pagination does not end"
        );
        let mut params = vec![("dir", "f"), ("limit", "7")];
        if let Some(from) = &from {
            params.push(("from", from));
        }
        let answer = messages_ok(&server, &bob.token, &room, &params).await;
        let events = chunk(&answer).clone();
        forward.extend(events.iter().cloned());
        match answer["end"].as_str() {
            Some(end) if !events.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    assert_eq!(ids(&forward), history_ids, "forward from the start");

    // Each backward page comes back, oldest first, going forward from its
    // `end` up to its `from`.
    for (index, page) in pages.iter().enumerate() {
        let Some(end) = &page.end else { continue };
        let answer = messages_ok(
            &server,
            &bob.token,
            &room,
            &[
                ("dir", "f"),
                ("from", end),
                ("to", &page.from),
                ("limit", "100"),
            ],
        )
        .await;
        let mut expected = ids(&page.events);
        expected.reverse();
        assert_eq!(ids(chunk(&answer)), expected, "page {index} forwards");
    }

    // Forward from the final `end` walks to the newest event.
    let final_end = pages
        .iter()
        .rev()
        .find_map(|p| p.end.clone())
        .expect("an end token");
    let skipped = pages.last().expect("pages").events.len();
    let mut forward = Vec::new();
    let mut from = final_end;
    loop {
        let answer = messages_ok(
            &server,
            &bob.token,
            &room,
            &[("dir", "f"), ("from", &from), ("limit", "6")],
        )
        .await;
        assert_eq!(answer["start"], from.as_str());
        let events = chunk(&answer).clone();
        forward.extend(events.iter().cloned());
        match answer["end"].as_str() {
            Some(end) if !events.is_empty() => from = end.to_owned(),
            _ => break,
        }
    }
    assert_eq!(
        ids(&forward),
        history_ids[skipped..].to_vec(),
        "forward from the final end"
    );
    assert_eq!(
        forward.last().expect("newest")["event_id"],
        sent[24].as_str()
    );
}

async fn to_tokens_bound_pages_in_both_directions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    for index in 0..3 {
        send_text(&server, &alice.token, &room, &format!("a{index}")).await;
    }
    let t1 = next_batch(&initial_sync(&server, &alice.token, 1).await);
    let mut middle = Vec::new();
    for index in 0..5 {
        middle.push(send_text(&server, &alice.token, &room, &format!("b{index}")).await);
    }
    let t2 = next_batch(&initial_sync(&server, &alice.token, 1).await);
    send_text(&server, &alice.token, &room, "c0").await;

    let answer = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("from", &t2), ("to", &t1), ("limit", "100")],
    )
    .await;
    let mut newest_first = middle.clone();
    newest_first.reverse();
    assert_eq!(
        ids(chunk(&answer)),
        newest_first,
        "backwards between the tokens"
    );
    assert!(answer.get("end").is_none(), "nothing beyond `to`: {answer}");
    let answer = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "f"), ("from", &t1), ("to", &t2), ("limit", "100")],
    )
    .await;
    assert_eq!(ids(chunk(&answer)), middle, "forwards between the tokens");

    // A limit inside the bounds, continued with `end`.
    let answer = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "f"), ("from", &t1), ("to", &t2), ("limit", "2")],
    )
    .await;
    assert_eq!(ids(chunk(&answer)), middle[..2].to_vec());
    let end = answer["end"].as_str().expect("end").to_owned();
    let answer = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "f"), ("from", &end), ("to", &t2), ("limit", "2")],
    )
    .await;
    assert_eq!(ids(chunk(&answer)), middle[2..4].to_vec());
    let end = answer["end"].as_str().expect("end").to_owned();
    let answer = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "f"), ("from", &end), ("to", &t2), ("limit", "2")],
    )
    .await;
    assert_eq!(ids(chunk(&answer)), middle[4..].to_vec());

    // A sync's next_batch pages back through what the sync returned.
    let synced = initial_sync(&server, &alice.token, 4).await;
    let token = next_batch(&synced);
    let answer = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("from", &token), ("limit", "4")],
    )
    .await;
    let mut expected = ids(timeline(&synced, "join", &room));
    expected.reverse();
    assert_eq!(
        ids(chunk(&answer)),
        expected,
        "next_batch backwards = the timeline"
    );
    // And forward from it there is nothing yet.
    let answer = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "f"), ("from", &token)],
    )
    .await;
    assert_eq!(chunk(&answer), &Vec::<Value>::new(), "{answer}");
    assert!(answer.get("end").is_none(), "{answer}");
}

async fn limit_filter_and_bad_parameters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    let mut sent = Vec::new();
    for index in 0..15 {
        sent.push(send_text(&server, &alice.token, &room, &format!("m{index}")).await);
    }
    let (status, answer) = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.topic",
        "",
        json!({ "topic": "t" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let topic = event_id(&answer);

    // No from: the newest events; the spec's default limit is 10.
    let answer = messages_ok(&server, &alice.token, &room, &[("dir", "b")]).await;
    assert_eq!(chunk(&answer).len(), 10, "{answer}");
    assert_eq!(chunk(&answer)[0]["event_id"], topic.as_str());
    assert!(answer["end"].is_string(), "{answer}");
    let answer = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("limit", "3")],
    )
    .await;
    assert_eq!(
        ids(chunk(&answer)),
        vec![topic.clone(), sent[14].clone(), sent[13].clone()]
    );
    // No from going forward: the oldest events.
    let answer = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "f"), ("limit", "1")],
    )
    .await;
    assert_eq!(chunk(&answer)[0]["type"], "m.room.create", "{answer}");

    // A filter on types.
    let filter = json!({ "types": ["m.room.message"] }).to_string();
    let answer = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("limit", "3"), ("filter", &filter)],
    )
    .await;
    for event in chunk(&answer) {
        assert_eq!(event["type"], "m.room.message", "{answer}");
    }
    let filter = json!({ "not_types": ["m.room.message"], "limit": 2 }).to_string();
    let answer = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("filter", &filter)],
    )
    .await;
    assert_eq!(ids(chunk(&answer)).first(), Some(&topic), "{answer}");
    assert!(
        chunk(&answer).iter().all(|e| e["type"] != "m.room.message"),
        "{answer}"
    );
    assert!(chunk(&answer).len() <= 2, "the filter's limit: {answer}");
    assert_eq!(bodies(chunk(&answer)), Vec::<String>::new());

    let answer = messages(&server, &alice.token, &room, &[("dir", "sideways")]).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let answer = messages(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("from", "garbage")],
    )
    .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let answer = messages(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("filter", "{\"types\":")],
    )
    .await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    let answer = messages(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("filter", "{\"limit\":\"x\"}")],
    )
    .await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    let answer = messages(&server, &alice.token, &room, &[]).await;
    assert_eq!(
        answer.0,
        StatusCode::BAD_REQUEST,
        "dir is required: {}",
        answer.1
    );

    // /event: an event of another room is not found through this one.
    let other = create_room(&server, &alice.token, json!({})).await;
    let answer = get_event(&server, &alice.token, &other, &sent[0]).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let answer = get_event(&server, &alice.token, &room, "$doesnotexist").await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // An unknown room answers like a room the user is not in.
    let unknown = format!("!nosuchroom:{}", server.server_name);
    let answer = messages(&server, &alice.token, &unknown, &[("dir", "b")]).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let answer = get_event(&server, &alice.token, &unknown, &sent[0]).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

/// `unsigned.transaction_id` belongs to the event "if the client being
/// given the event is the same one which sent it" (ClientEvent format):
/// history reads are no exception.
async fn own_transaction_ids_in_history(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let phone = server.login("alice", Some("PHONE")).await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    let answer = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        "txn-history",
        json!({ "msgtype": "m.text", "body": "hi" }),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let id = event_id(&answer.1);

    let page = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("limit", "1")],
    )
    .await;
    assert_eq!(chunk(&page)[0]["event_id"], id.as_str());
    assert_eq!(
        chunk(&page)[0]["unsigned"]["transaction_id"],
        "txn-history",
        "{page}"
    );
    let (status, event) = get_event(&server, &alice.token, &room, &id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        event["unsigned"]["transaction_id"], "txn-history",
        "{event}"
    );

    let page = messages_ok(
        &server,
        &phone.token,
        &room,
        &[("dir", "b"), ("limit", "1")],
    )
    .await;
    assert!(
        chunk(&page)[0]["unsigned"]["transaction_id"].is_null(),
        "{page}"
    );
    let (_, event) = get_event(&server, &phone.token, &room, &id).await;
    assert!(event["unsigned"]["transaction_id"].is_null(), "{event}");
}

/// `end` is "omitted ... because the user does not have permission to see
/// any more events", and `limit` counts what is returned: a later joiner
/// under `joined` gets one page, not empty pages back to the create event.
async fn pagination_stops_where_visible_history_stops(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    crate::sync_support::set_history_visibility(&server, &alice.token, &room, "joined").await;
    for index in 0..30 {
        send_text(&server, &alice.token, &room, &format!("before {index}")).await;
    }
    join(&server, &bob.token, &room).await;
    let mut after = Vec::new();
    for index in 0..12 {
        after.push(send_text(&server, &alice.token, &room, &format!("after {index}")).await);
    }
    let page = messages_ok(&server, &bob.token, &room, &[("dir", "b"), ("limit", "10")]).await;
    let mut expected = after[2..].to_vec();
    expected.reverse();
    assert_eq!(ids(chunk(&page)), expected, "ten visible events: {page}");
    // Further back: after 1, after 0, bob's join, then only what bob may
    // see from before it, which is the room's setup (sent under the
    // preset's `shared`) and the switch to `joined` (visible as its
    // previous setting allowed), never the messages sent under `joined`.
    let (_, alice_view) = messages(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("limit", "1000")],
    )
    .await;
    let before_join: Vec<Value> = chunk(&alice_view)
        .iter()
        .skip_while(|e| e["state_key"] != bob.user_id.as_str())
        .skip(1)
        .filter(|e| e["type"] != "m.room.message")
        .cloned()
        .collect();
    assert_eq!(before_join.last().expect("setup")["type"], "m.room.create");
    let mut expected = vec![after[1].clone(), after[0].clone()];
    let mut rest = Vec::new();
    let mut from = page["end"].as_str().expect("more to come").to_owned();
    let mut pages = 0;
    loop {
        let page = messages_ok(
            &server,
            &bob.token,
            &room,
            &[("dir", "b"), ("from", &from), ("limit", "10")],
        )
        .await;
        pages += 1;
        rest.extend(chunk(&page).iter().cloned());
        match page["end"].as_str() {
            Some(end) => {
                assert_eq!(
                    chunk(&page).len(),
                    10,
                    "only full pages have an end: {page}"
                );
                from = end.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(rest[2]["state_key"], bob.user_id.as_str(), "bob's join");
    expected.push(rest[2]["event_id"].as_str().expect("id").to_owned());
    expected.extend(ids(&before_join));
    assert_eq!(ids(&rest), expected);
    assert_eq!(pages, expected.len().div_ceil(10), "no empty pages");
    assert_eq!(bodies(&rest), ["after 1", "after 0"]);

    // A type filter counts toward the limit the same way.
    let filter = json!({ "types": ["m.room.member"] }).to_string();
    let page = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("limit", "2"), ("filter", &filter)],
    )
    .await;
    let members: Vec<&str> = chunk(&page)
        .iter()
        .map(|e| e["state_key"].as_str().expect("key"))
        .collect();
    assert_eq!(
        members,
        [bob.user_id.as_str(), alice.user_id.as_str()],
        "{page}"
    );
    let page = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "f"), ("limit", "2"), ("filter", &filter)],
    )
    .await;
    let members: Vec<&str> = chunk(&page)
        .iter()
        .map(|e| e["state_key"].as_str().expect("key"))
        .collect();
    assert_eq!(
        members,
        [alice.user_id.as_str(), bob.user_id.as_str()],
        "{page}"
    );
    assert!(page["end"].is_string(), "{page}");
}

/// With `lazy_load_members` in the filter, `state` holds "the membership
/// events for the senders of events in the chunk".
async fn lazy_loading_on_messages_sends_the_senders_members(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    join(&server, &carol.token, &room).await;
    for index in 0..3 {
        send_text(&server, &bob.token, &room, &format!("b{index}")).await;
    }
    let filter = json!({ "lazy_load_members": true }).to_string();
    let page = messages_ok(
        &server,
        &carol.token,
        &room,
        &[("dir", "b"), ("limit", "3"), ("filter", &filter)],
    )
    .await;
    let state = page["state"]
        .as_array()
        .unwrap_or_else(|| panic!("state in {page}"));
    let members: Vec<&str> = state
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "m.room.member", "{e}");
            e["state_key"].as_str().expect("state_key")
        })
        .collect();
    assert_eq!(members, [bob.user_id.as_str()], "{page}");
    assert_eq!(state[0]["content"]["membership"], "join");
    let page = messages_ok(
        &server,
        &carol.token,
        &room,
        &[("dir", "b"), ("limit", "3")],
    )
    .await;
    assert!(
        page.get("state").is_none_or(|s| s == &json!([])),
        "no lazy loading asked: {page}"
    );
}
