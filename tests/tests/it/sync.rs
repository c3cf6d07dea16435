//! `GET /sync` against the Client-Server API's "Syncing" and "Filtering"
//! sections: token semantics under concurrent senders, long-polling,
//! initial and incremental syncs, membership sections, filters and
//! transaction ids.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use myelin_tests::{Account, Backend, TestServer, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    rooms_support::{
        create_room, event_id, invite, join, membership, put_state, room_url, send, send_text,
    },
    sync_support::{
        bodies, chunk, ids, initial_sync, messages_ok, next_batch, section_rooms, state,
        state_keys, sync, sync_ok, sync_since, sync_since_limit, timeline,
    },
};

backend_tests!(
    concurrent_senders_are_seen_exactly_once_in_order,
    long_poll_wakes_when_a_room_event_arrives,
    long_poll_times_out_with_nothing_new,
    long_poll_ignores_rooms_the_user_is_not_in,
    long_poll_wakes_an_invitee,
    initial_sync_has_state_and_the_newest_events,
    incremental_sync_returns_only_what_is_new,
    full_state_returns_the_whole_state,
    membership_moves_rooms_between_sections,
    filter_types_apply_before_the_limit,
    filter_rooms_and_not_rooms,
    stored_filters_are_per_user,
    lazy_loading_sends_only_the_senders_members,
    bad_filters_and_tokens_are_refused,
    transaction_ids_reach_only_the_sending_device,
    filter_senders_and_not_senders,
    lazy_loading_incremental_sync_sends_new_senders_members,
    long_poll_wakes_a_kicked_user,
    knocks_appear_under_rooms_knock,
    long_polls_of_every_device_wake,
    state_filter_types,
    filtered_timelines_reach_past_many_skipped_events,
    a_room_joined_between_syncs_arrives_whole,
    unread_counts_start_after_the_latest_read_receipt,
);

/// A tiny deterministic generator, so a failing seed can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Sync token semantics (issue 4, item 6): with several users sending
/// concurrently into several rooms while a receiver loops incremental syncs,
/// every event reaches the receiver exactly once, and each sender's events
/// keep their send order within a room. Limited timelines are completed the
/// way the spec tells clients to: `/messages` backwards from `prev_batch` to
/// the previous `since`.
async fn concurrent_senders_are_seen_exactly_once_in_order(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let mut senders = Vec::new();
    for index in 0..4 {
        senders.push(server.register(&format!("sender{index}")).await);
    }
    // (seed, senders, rooms, messages per sender, timeline limit)
    let runs: [(u64, usize, usize, usize, u32); 4] = [
        (0x9e37_79b9, 4, 3, 50, 500),
        (0x2545_f491, 4, 3, 50, 3),
        (0x1234_5678, 2, 2, 40, 7),
        (0xdead_beef, 3, 3, 30, 1),
    ];
    for (iteration, (seed, sender_count, room_count, per_sender, limit)) in
        runs.into_iter().enumerate()
    {
        let receiver = server.register(&format!("receiver{iteration}")).await;
        let mut rooms = Vec::new();
        for _ in 0..room_count {
            let room =
                create_room(&server, &receiver.token, json!({ "preset": "public_chat", "power_level_content_override": { "state_default": 0 } })).await;
            for sender in &senders[..sender_count] {
                join(&server, &sender.token, &room).await;
            }
            rooms.push(room);
        }
        let filter = json!({ "room": { "timeline": { "limit": limit } } }).to_string();
        let first = sync_ok(&server, &receiver.token, &[("filter", &filter)]).await;
        let since = next_batch(&first);

        let mut tasks = tokio::task::JoinSet::new();
        let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for (index, sender) in senders[..sender_count].iter().cloned().enumerate() {
            let server = Arc::clone(&server);
            let rooms = rooms.clone();
            let finished = Arc::clone(&finished);
            let mut rng = XorShift(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            tasks.spawn(async move {
                let mut sent = Vec::new();
                for seq in 0..per_sender {
                    let room = &rooms[(rng.next() % rooms.len() as u64) as usize];
                    let body = format!("{index}:{seq}");
                    // Some are state events, which take the same path.
                    let id = if rng.next().is_multiple_of(8) {
                        let (status, answer) = put_state(
                            &server,
                            &sender.token,
                            room,
                            "m.room.topic",
                            "",
                            json!({ "topic": body }),
                        )
                        .await;
                        assert_eq!(status, StatusCode::OK, "{answer}");
                        event_id(&answer)
                    } else {
                        send_text(&server, &sender.token, room, &body).await
                    };
                    sent.push((room.clone(), id, body));
                }
                finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (index, sent)
            });
        }
        let expected_total = sender_count * per_sender;
        let senders_done = || finished.load(std::sync::atomic::Ordering::SeqCst) == sender_count;
        let received = receive_all(
            &server,
            &receiver,
            &rooms,
            since,
            &filter,
            expected_total,
            senders_done,
        )
        .await;
        let mut sent_by: HashMap<usize, Vec<(String, String, String)>> = HashMap::new();
        while let Some(done) = tasks.join_next().await {
            let (index, sent) = done.expect("sender task");
            sent_by.insert(index, sent);
        }

        let context = format!("run {iteration} (seed {seed:#x}, limit {limit})");
        let all_sent: HashSet<&String> = sent_by.values().flatten().map(|(_, id, _)| id).collect();
        assert_eq!(
            all_sent.len(),
            expected_total,
            "{context}: distinct event ids sent"
        );
        let mut all_received = HashSet::new();
        for (room, events) in received.iter() {
            for (id, _) in events {
                assert!(
                    all_received.insert(id.clone()),
                    "{context}: {id} received twice in {room}"
                );
            }
        }
        let missed: Vec<_> = all_sent
            .iter()
            .filter(|id| !all_received.contains(**id))
            .collect();
        assert!(missed.is_empty(), "{context}: missed {missed:?}");
        assert_eq!(
            all_received.len(),
            expected_total,
            "{context}: nothing extra"
        );
        for (index, sent) in &sent_by {
            for room in &rooms {
                let sent_here: Vec<&String> = sent
                    .iter()
                    .filter(|(r, _, _)| r == room)
                    .map(|(_, id, _)| id)
                    .collect();
                let prefix = format!("{index}:");
                let seen_here: Vec<&String> = received[room]
                    .iter()
                    .filter(|(_, body)| body.starts_with(&prefix))
                    .map(|(id, _)| id)
                    .collect();
                assert_eq!(
                    seen_here, sent_here,
                    "{context}: order of sender {index} in {room}"
                );
            }
        }
        // Nothing more arrives afterwards.
        let after = sync_ok(
            &server,
            &receiver.token,
            &[
                ("since", &received.token),
                ("timeout", "0"),
                ("filter", &filter),
            ],
        )
        .await;
        assert_eq!(
            section_rooms(&after, "join"),
            Vec::<String>::new(),
            "{context}: {after}"
        );
    }
}

/// What a receiver assembled per room: `(event id, body)` oldest first,
/// and the last `next_batch`.
struct Received {
    rooms: HashMap<String, Vec<(String, String)>>,
    token: String,
}

impl std::ops::Deref for Received {
    type Target = HashMap<String, Vec<(String, String)>>;
    fn deref(&self) -> &Self::Target {
        &self.rooms
    }
}

/// Loops short incremental syncs until `expected` events have arrived, or
/// the senders are done and a sync brings nothing new, filling limited
/// timelines from `/messages`.
async fn receive_all(
    server: &TestServer,
    receiver: &Account,
    rooms: &[String],
    mut since: String,
    filter: &str,
    expected: usize,
    senders_done: impl Fn() -> bool,
) -> Received {
    let started = Instant::now();
    let mut received: HashMap<String, Vec<(String, String)>> =
        rooms.iter().map(|r| (r.clone(), Vec::new())).collect();
    let mut count = 0;
    while count < expected {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "only {count} of {expected} events arrived"
        );
        // Whether every event was committed before this sync started.
        let last_round = senders_done();
        let count_before = count;
        let answer = sync_ok(
            server,
            &receiver.token,
            &[("since", &since), ("timeout", "300"), ("filter", filter)],
        )
        .await;
        for room in rooms {
            let update = &answer["rooms"]["join"][room];
            if update.is_null() {
                continue;
            }
            let mut events = Vec::new();
            if update["timeline"]["limited"] == true {
                let prev_batch = update["timeline"]["prev_batch"]
                    .as_str()
                    .unwrap_or_else(|| panic!("limited timeline without prev_batch: {update}"));
                events = gap(server, &receiver.token, room, prev_batch, &since).await;
            }
            events.extend(
                update["timeline"]["events"]
                    .as_array()
                    .expect("events")
                    .iter()
                    .cloned(),
            );
            for event in events {
                let label = match event["type"].as_str() {
                    Some("m.room.message") => &event["content"]["body"],
                    Some("m.room.topic") => &event["content"]["topic"],
                    _ => panic!("only messages and topics were sent: {event}"),
                };
                let id = event["event_id"].as_str().expect("event_id").to_owned();
                let body = label.as_str().expect("label").to_owned();
                received.get_mut(room).expect("room").push((id, body));
                count += 1;
            }
        }
        since = next_batch(&answer);
        if last_round && count == count_before {
            break;
        }
    }
    Received {
        rooms: received,
        token: since,
    }
}

/// The events between `since` and `prev_batch`, oldest first, paginating
/// backwards with `to` as the spec describes for limited timelines.
async fn gap(
    server: &TestServer,
    token: &str,
    room: &str,
    prev_batch: &str,
    since: &str,
) -> Vec<Value> {
    let mut from = prev_batch.to_owned();
    let mut newest_first = Vec::new();
    loop {
        let page = messages_ok(
            server,
            token,
            room,
            &[("dir", "b"), ("from", &from), ("to", since), ("limit", "4")],
        )
        .await;
        assert_eq!(
            page["start"],
            from.as_str(),
            "start is the from token: {page}"
        );
        newest_first.extend(chunk(&page).iter().cloned());
        match page["end"].as_str() {
            Some(end) if !chunk(&page).is_empty() => from = end.to_owned(),
            _ => break,
        }
    }
    newest_first.reverse();
    newest_first
}

/// Starts a sync in the background, timing it from the moment it is sent.
pub(crate) fn spawn_sync(
    server: &Arc<TestServer>,
    token: &str,
    params: Vec<(&'static str, String)>,
) -> tokio::task::JoinHandle<(Duration, StatusCode, Value)> {
    let server = Arc::clone(server);
    let token = token.to_owned();
    tokio::spawn(async move {
        let started = Instant::now();
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, answer) = sync(&server, &token, &pairs).await;
        (started.elapsed(), status, answer)
    })
}

async fn long_poll_wakes_when_a_room_event_arrives(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    let mut since = next_batch(&sync_ok(&server, &bob.token, &[]).await);
    let mut wakeups = Vec::new();
    for round in 0..5 {
        let poll = spawn_sync(
            &server,
            &bob.token,
            vec![("since", since.clone()), ("timeout", "10000".to_owned())],
        );
        tokio::task::yield_now().await;
        let sent_at = Instant::now();
        let id = send_text(&server, &alice.token, &room, &format!("wake {round}")).await;
        let (elapsed, status, answer) = poll.await.expect("sync task");
        let after_send = sent_at.elapsed();
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert!(elapsed < Duration::from_secs(5), "woke after {elapsed:?}");
        assert_eq!(ids(timeline(&answer, "join", &room)), vec![id], "{answer}");
        wakeups.push((elapsed, after_send));
        since = next_batch(&answer);
    }
    eprintln!("long-poll wake-ups (sync elapsed, since send started): {wakeups:?}");
}

async fn long_poll_times_out_with_nothing_new(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    send_text(&server, &alice.token, &room, "before").await;
    let since = next_batch(&sync_ok(&server, &alice.token, &[]).await);
    let started = Instant::now();
    let answer = sync_ok(
        &server,
        &alice.token,
        &[("since", &since), ("timeout", "200")],
    )
    .await;
    let elapsed = started.elapsed();
    eprintln!("empty long-poll with timeout=200 returned after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(195),
        "returned after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "returned after {elapsed:?}"
    );
    assert_eq!(
        section_rooms(&answer, "join"),
        Vec::<String>::new(),
        "{answer}"
    );
    assert_eq!(
        section_rooms(&answer, "invite"),
        Vec::<String>::new(),
        "{answer}"
    );
    assert_eq!(
        section_rooms(&answer, "leave"),
        Vec::<String>::new(),
        "{answer}"
    );
    assert_eq!(next_batch(&answer), since, "nothing happened: {answer}");

    // timeout=0 (and no timeout) answers at once.
    let started = Instant::now();
    let answer = sync_ok(&server, &alice.token, &[("since", &since)]).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        section_rooms(&answer, "join"),
        Vec::<String>::new(),
        "{answer}"
    );
}

async fn long_poll_ignores_rooms_the_user_is_not_in(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let alice = server.register("alice").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    let carol_room = create_room(&server, &carol.token, json!({})).await;
    let since = next_batch(&sync_ok(&server, &carol.token, &[]).await);
    let poll = spawn_sync(
        &server,
        &carol.token,
        vec![("since", since.clone()), ("timeout", "1000".to_owned())],
    );
    tokio::task::yield_now().await;
    for index in 0..5 {
        send_text(
            &server,
            &alice.token,
            &room,
            &format!("not for carol {index}"),
        )
        .await;
    }
    let (elapsed, status, answer) = poll.await.expect("sync task");
    eprintln!("long-poll of a non-member with timeout=1000 returned after {elapsed:?}");
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        elapsed >= Duration::from_millis(990),
        "returned after {elapsed:?}: {answer}"
    );
    assert_eq!(
        section_rooms(&answer, "join"),
        Vec::<String>::new(),
        "{answer}"
    );
    assert!(answer["rooms"]["join"][&room].is_null(), "{answer}");
    assert!(answer["rooms"]["join"][&carol_room].is_null(), "{answer}");
}

async fn long_poll_wakes_an_invitee(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;
    let since = next_batch(&sync_ok(&server, &bob.token, &[]).await);
    let poll = spawn_sync(
        &server,
        &bob.token,
        vec![("since", since), ("timeout", "30000".to_owned())],
    );
    tokio::task::yield_now().await;
    invite(&server, &alice.token, &room, &bob.user_id).await;
    let (elapsed, status, answer) = poll.await.expect("sync task");
    eprintln!("invitee long-poll woke after {elapsed:?}");
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(elapsed < Duration::from_secs(5), "woke after {elapsed:?}");
    assert_eq!(section_rooms(&answer, "invite"), vec![room], "{answer}");
}

async fn initial_sync_has_state_and_the_newest_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    let mut sent = Vec::new();
    for index in 0..30 {
        sent.push(send_text(&server, &alice.token, &room, &format!("m{index}")).await);
    }

    let answer = initial_sync(&server, &bob.token, 10).await;
    assert_eq!(
        section_rooms(&answer, "join"),
        vec![room.clone()],
        "{answer}"
    );
    let events = timeline(&answer, "join", &room);
    assert_eq!(
        ids(events),
        sent[20..].to_vec(),
        "the 10 newest, oldest first"
    );
    let update = &answer["rooms"]["join"][&room];
    assert_eq!(update["timeline"]["limited"], true, "{update}");
    for event in events {
        assert!(
            event.get("room_id").is_none(),
            "sync events carry no room_id: {event}"
        );
        assert_eq!(event["sender"], alice.user_id.as_str());
    }
    // The state is the state at the start of the timeline: here, all of it.
    let room_state = state(&answer, "join", &room);
    let (status, full) = server
        .request(
            Method::GET,
            room_url(&server, &room, "/state"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        state_keys(room_state),
        state_keys(full.as_array().expect("state"))
    );
    for key in [
        "m.room.create|".to_owned(),
        "m.room.power_levels|".to_owned(),
        "m.room.join_rules|".to_owned(),
        "m.room.history_visibility|".to_owned(),
        format!("m.room.member|{}", alice.user_id),
        format!("m.room.member|{}", bob.user_id),
    ] {
        assert!(
            state_keys(room_state).contains(&key),
            "{key} in {room_state:?}"
        );
    }
    // prev_batch leads to the event just before the timeline.
    let prev_batch = update["timeline"]["prev_batch"]
        .as_str()
        .expect("prev_batch");
    let page = messages_ok(
        &server,
        &bob.token,
        &room,
        &[("dir", "b"), ("from", prev_batch), ("limit", "1")],
    )
    .await;
    assert_eq!(ids(chunk(&page)), vec![sent[19].clone()], "{page}");

    // A room with fewer events than the limit: the whole history, not limited.
    let small = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &small).await;
    send_text(&server, &alice.token, &small, "only").await;
    let answer = initial_sync(&server, &bob.token, 50).await;
    let events = timeline(&answer, "join", &small);
    assert_eq!(events[0]["type"], "m.room.create", "{events:?}");
    assert_eq!(bodies(events), vec!["only"]);
    assert_eq!(events.last().expect("event")["content"]["body"], "only");
    assert_eq!(
        answer["rooms"]["join"][&small]["timeline"]["limited"],
        false
    );
    assert_eq!(
        state(&answer, "join", &small),
        &Vec::<Value>::new(),
        "state is all in the timeline"
    );
}

async fn incremental_sync_returns_only_what_is_new(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    let quiet = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    join(&server, &bob.token, &quiet).await;
    send_text(&server, &alice.token, &room, "old").await;
    let since = next_batch(&initial_sync(&server, &bob.token, 10).await);

    // Nothing new: no rooms.
    let answer = sync_since(&server, &bob.token, &since).await;
    assert_eq!(
        section_rooms(&answer, "join"),
        Vec::<String>::new(),
        "{answer}"
    );

    let n1 = send_text(&server, &alice.token, &room, "n1").await;
    let n2 = send_text(&server, &bob.token, &room, "n2").await;
    let answer = sync_since(&server, &bob.token, &since).await;
    assert_eq!(
        section_rooms(&answer, "join"),
        vec![room.clone()],
        "only the active room"
    );
    assert_eq!(ids(timeline(&answer, "join", &room)), vec![n1, n2]);
    assert_eq!(answer["rooms"]["join"][&room]["timeline"]["limited"], false);
    assert_eq!(state(&answer, "join", &room), &Vec::<Value>::new());
    let since = next_batch(&answer);

    // More than the limit: limited, the newest ones, and the state change
    // that fell in the gap arrives in `state`.
    for index in 0..5 {
        send_text(&server, &alice.token, &room, &format!("gap{index}")).await;
    }
    let (status, topic) = put_state(
        &server,
        &alice.token,
        &room,
        "m.room.topic",
        "",
        json!({ "topic": "in the gap" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{topic}");
    let topic_id = event_id(&topic);
    let mut newest = Vec::new();
    for index in 0..4 {
        newest.push(send_text(&server, &alice.token, &room, &format!("new{index}")).await);
    }
    let answer = sync_since_limit(&server, &bob.token, &since, 4).await;
    let update = &answer["rooms"]["join"][&room];
    assert_eq!(ids(timeline(&answer, "join", &room)), newest);
    assert_eq!(update["timeline"]["limited"], true, "{update}");
    assert_eq!(
        ids(state(&answer, "join", &room)),
        vec![topic_id],
        "{update}"
    );
    assert_eq!(section_rooms(&answer, "join"), vec![room.clone()]);
    // The gap is reachable from prev_batch down to since.
    let prev_batch = update["timeline"]["prev_batch"]
        .as_str()
        .expect("prev_batch");
    let page = messages_ok(
        &server,
        &bob.token,
        &room,
        &[
            ("dir", "b"),
            ("from", prev_batch),
            ("to", &since),
            ("limit", "50"),
        ],
    )
    .await;
    let mut gap = chunk(&page).clone();
    gap.reverse();
    let gap_types: Vec<&str> = gap
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(bodies(&gap), vec!["gap0", "gap1", "gap2", "gap3", "gap4"]);
    assert_eq!(
        gap_types.len(),
        6,
        "five messages and the topic: {gap_types:?}"
    );
    assert_eq!(gap_types[5], "m.room.topic");
}

async fn full_state_returns_the_whole_state(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "name": "full" }),
    )
    .await;
    let other = create_room(&server, &alice.token, json!({ "preset": "private_chat" })).await;
    send_text(&server, &alice.token, &room, "hello").await;
    let since = next_batch(&initial_sync(&server, &alice.token, 10).await);

    let answer = sync_ok(
        &server,
        &alice.token,
        &[("since", &since), ("full_state", "true"), ("timeout", "0")],
    )
    .await;
    assert_eq!(section_rooms(&answer, "join"), {
        let mut rooms = vec![room.clone(), other.clone()];
        rooms.sort();
        rooms
    });
    for room_id in [&room, &other] {
        let (_, full) = server
            .request(
                Method::GET,
                room_url(&server, room_id, "/state"),
                Some(&alice.token),
                None,
            )
            .await;
        assert_eq!(
            state_keys(state(&answer, "join", room_id)),
            state_keys(full.as_array().expect("state")),
            "full state of {room_id}"
        );
        assert_eq!(
            timeline(&answer, "join", room_id),
            &Vec::<Value>::new(),
            "nothing new"
        );
    }
    // full_state with a new event: the timeline stays incremental.
    let id = send_text(&server, &alice.token, &room, "new").await;
    let answer = sync_ok(
        &server,
        &alice.token,
        &[("since", &since), ("full_state", "true"), ("timeout", "0")],
    )
    .await;
    assert_eq!(ids(timeline(&answer, "join", &room)), vec![id]);
    assert!(state_keys(state(&answer, "join", &room)).contains(&"m.room.name|".to_owned()));
}

async fn membership_moves_rooms_between_sections(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "private_chat", "name": "secret" }),
    )
    .await;
    let since = next_batch(&sync_ok(&server, &bob.token, &[]).await);

    invite(&server, &alice.token, &room, &bob.user_id).await;
    let answer = sync_since(&server, &bob.token, &since).await;
    assert_eq!(
        section_rooms(&answer, "invite"),
        vec![room.clone()],
        "{answer}"
    );
    assert_eq!(section_rooms(&answer, "join"), Vec::<String>::new());
    let stripped = answer["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .expect("invite_state");
    let invite_event = stripped
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .unwrap_or_else(|| panic!("the invite itself in {stripped:?}"));
    assert_eq!(invite_event["content"]["membership"], "invite");
    assert_eq!(invite_event["sender"], alice.user_id.as_str());
    let keys = state_keys(stripped);
    for key in ["m.room.create|", "m.room.join_rules|", "m.room.name|"] {
        assert!(keys.contains(&key.to_owned()), "{key} in {keys:?}");
    }
    let name = stripped
        .iter()
        .find(|e| e["type"] == "m.room.name")
        .expect("name");
    assert_eq!(name["content"]["name"], "secret");
    let since = next_batch(&answer);
    // Reported once; an initial sync reports it again.
    let answer = sync_since(&server, &bob.token, &since).await;
    assert_eq!(
        section_rooms(&answer, "invite"),
        Vec::<String>::new(),
        "{answer}"
    );
    let initial = sync_ok(&server, &bob.token, &[]).await;
    assert_eq!(section_rooms(&initial, "invite"), vec![room.clone()]);

    join(&server, &bob.token, &room).await;
    let answer = sync_since(&server, &bob.token, &since).await;
    assert_eq!(
        section_rooms(&answer, "join"),
        vec![room.clone()],
        "{answer}"
    );
    assert_eq!(section_rooms(&answer, "invite"), Vec::<String>::new());
    let last = timeline(&answer, "join", &room)
        .last()
        .expect("join event")
        .clone();
    assert_eq!(last["type"], "m.room.member");
    assert_eq!(last["state_key"], bob.user_id.as_str());
    assert_eq!(last["content"]["membership"], "join");
    assert_eq!(
        crate::rooms_support::joined_rooms(&server, &bob.token).await,
        vec![room.clone()]
    );
    let since = next_batch(&answer);

    let before_leave = send_text(&server, &alice.token, &room, "before leave").await;
    let left = membership(&server, &bob.token, &room, "leave", json!({})).await;
    assert_eq!(left.0, StatusCode::OK, "{}", left.1);
    send_text(&server, &alice.token, &room, "after leave").await;
    let answer = sync_since(&server, &bob.token, &since).await;
    assert_eq!(
        section_rooms(&answer, "leave"),
        vec![room.clone()],
        "{answer}"
    );
    assert_eq!(
        section_rooms(&answer, "join"),
        Vec::<String>::new(),
        "{answer}"
    );
    let events = timeline(&answer, "leave", &room);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event_id"], before_leave.as_str());
    assert_eq!(events[1]["type"], "m.room.member");
    assert_eq!(events[1]["content"]["membership"], "leave");
    assert_eq!(events[1]["state_key"], bob.user_id.as_str());
    let since = next_batch(&answer);
    assert_eq!(
        crate::rooms_support::joined_rooms(&server, &bob.token).await,
        Vec::<String>::new()
    );
    // Once only, and later events in the room do not bring it back.
    send_text(&server, &alice.token, &room, "much later").await;
    let answer = sync_since(&server, &bob.token, &since).await;
    for section in ["join", "invite", "leave"] {
        assert_eq!(
            section_rooms(&answer, section),
            Vec::<String>::new(),
            "{section}: {answer}"
        );
    }
    // Initial syncs leave it out unless include_leave asks for it.
    let initial = sync_ok(&server, &bob.token, &[]).await;
    assert_eq!(
        section_rooms(&initial, "leave"),
        Vec::<String>::new(),
        "{initial}"
    );
    assert_eq!(
        section_rooms(&initial, "join"),
        Vec::<String>::new(),
        "{initial}"
    );
    let filter = json!({ "room": { "include_leave": true } }).to_string();
    let initial = sync_ok(&server, &bob.token, &[("filter", &filter)]).await;
    assert_eq!(
        section_rooms(&initial, "leave"),
        vec![room.clone()],
        "{initial}"
    );
    let last = timeline(&initial, "leave", &room)
        .last()
        .expect("leave")
        .clone();
    assert_eq!(
        last["content"]["membership"], "leave",
        "the timeline ends at the leave"
    );

    // A kick reaches the kicked user under leave.
    let carol = server.register("carol").await;
    invite(&server, &alice.token, &room, &carol.user_id).await;
    join(&server, &carol.token, &room).await;
    let since = next_batch(&sync_ok(&server, &carol.token, &[]).await);
    let kicked = membership(
        &server,
        &alice.token,
        &room,
        "kick",
        json!({ "user_id": carol.user_id, "reason": "bye" }),
    )
    .await;
    assert_eq!(kicked.0, StatusCode::OK, "{}", kicked.1);
    let answer = sync_since(&server, &carol.token, &since).await;
    assert_eq!(
        section_rooms(&answer, "leave"),
        vec![room.clone()],
        "{answer}"
    );
    let last = timeline(&answer, "leave", &room)
        .last()
        .expect("kick")
        .clone();
    assert_eq!(last["content"]["membership"], "leave");
    assert_eq!(last["sender"], alice.user_id.as_str());
    assert_eq!(last["state_key"], carol.user_id.as_str());
}

/// The spec's `limit` is "the maximum number of events to return": the
/// events that pass the filter, so a type filter never starves the timeline.
async fn filter_types_apply_before_the_limit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    let mut messages = Vec::new();
    for index in 0..5 {
        messages.push(send_text(&server, &alice.token, &room, &format!("m{index}")).await);
    }
    let mut topics = Vec::new();
    for index in 0..4 {
        let (status, answer) = put_state(
            &server,
            &alice.token,
            &room,
            "m.room.topic",
            "",
            json!({ "topic": format!("t{index}") }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        topics.push(event_id(&answer));
    }
    let only_messages =
        json!({ "room": { "timeline": { "limit": 3, "types": ["m.room.message"] } } }).to_string();
    let answer = sync_ok(&server, &alice.token, &[("filter", &only_messages)]).await;
    assert_eq!(
        ids(timeline(&answer, "join", &room)),
        messages[2..].to_vec(),
        "{answer}"
    );
    assert_eq!(answer["rooms"]["join"][&room]["timeline"]["limited"], true);

    let wildcard =
        json!({ "room": { "timeline": { "limit": 2, "types": ["m.room.t*"] } } }).to_string();
    let answer = sync_ok(&server, &alice.token, &[("filter", &wildcard)]).await;
    assert_eq!(
        ids(timeline(&answer, "join", &room)),
        topics[2..].to_vec(),
        "{answer}"
    );

    let no_topics =
        json!({ "room": { "timeline": { "limit": 4, "not_types": ["m.room.topic"] } } })
            .to_string();
    let answer = sync_ok(&server, &alice.token, &[("filter", &no_topics)]).await;
    assert_eq!(
        ids(timeline(&answer, "join", &room)),
        messages[1..].to_vec(),
        "{answer}"
    );

    // The same on an incremental sync.
    let since = next_batch(&answer);
    let newer = send_text(&server, &alice.token, &room, "newer").await;
    for index in 4..7 {
        put_state(
            &server,
            &alice.token,
            &room,
            "m.room.topic",
            "",
            json!({ "topic": format!("t{index}") }),
        )
        .await;
    }
    let answer = sync_ok(
        &server,
        &alice.token,
        &[
            ("since", &since),
            ("timeout", "0"),
            ("filter", &only_messages),
        ],
    )
    .await;
    assert_eq!(
        ids(timeline(&answer, "join", &room)),
        vec![newer],
        "{answer}"
    );
}

async fn filter_rooms_and_not_rooms(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let a = create_room(&server, &alice.token, json!({})).await;
    let b = create_room(&server, &alice.token, json!({})).await;
    let only_a = json!({ "room": { "rooms": [a] } }).to_string();
    let answer = sync_ok(&server, &alice.token, &[("filter", &only_a)]).await;
    assert_eq!(section_rooms(&answer, "join"), vec![a.clone()]);
    let not_a = json!({ "room": { "not_rooms": [a] } }).to_string();
    let answer = sync_ok(&server, &alice.token, &[("filter", &not_a)]).await;
    assert_eq!(section_rooms(&answer, "join"), vec![b.clone()]);
    // not_rooms wins over rooms.
    let both = json!({ "room": { "rooms": [a, b], "not_rooms": [b] } }).to_string();
    let answer = sync_ok(&server, &alice.token, &[("filter", &both)]).await;
    assert_eq!(section_rooms(&answer, "join"), vec![a.clone()]);

    // Incremental: news in a filtered-out room neither shows nor answers early.
    let since = next_batch(&answer);
    send_text(&server, &alice.token, &b, "hidden").await;
    let started = Instant::now();
    let answer = sync_ok(
        &server,
        &alice.token,
        &[
            ("since", &since),
            ("timeout", "300"),
            ("filter", &not_a.replace(&a, &b)),
        ],
    )
    .await;
    assert_eq!(
        section_rooms(&answer, "join"),
        Vec::<String>::new(),
        "{answer}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(295),
        "{:?}",
        started.elapsed()
    );
    let answer = sync_ok(
        &server,
        &alice.token,
        &[("since", &since), ("timeout", "0"), ("filter", &only_a)],
    )
    .await;
    assert_eq!(
        section_rooms(&answer, "join"),
        Vec::<String>::new(),
        "{answer}"
    );
}

async fn stored_filters_are_per_user(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let a = create_room(&server, &alice.token, json!({})).await;
    let b = create_room(&server, &alice.token, json!({})).await;
    send_text(&server, &alice.token, &a, "one").await;
    let two = send_text(&server, &alice.token, &a, "two").await;
    let filter = json!({ "room": { "rooms": [a], "timeline": { "limit": 1 } } });
    let url = server.v3(&format!("/user/{}/filter", alice.user_id));
    let (status, created) = server
        .request(
            Method::POST,
            url.clone(),
            Some(&alice.token),
            Some(filter.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let filter_id = created["filter_id"].as_str().expect("filter_id").to_owned();
    let (status, stored) = server
        .request(
            Method::GET,
            format!("{url}/{filter_id}"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!((status, stored), (StatusCode::OK, filter));

    let answer = sync_ok(&server, &alice.token, &[("filter", &filter_id)]).await;
    assert_eq!(section_rooms(&answer, "join"), vec![a.clone()]);
    assert_eq!(ids(timeline(&answer, "join", &a)), vec![two]);
    assert!(answer["rooms"]["join"][&b].is_null());

    // Another user may neither read nor use it.
    let denied = server
        .request(
            Method::GET,
            format!("{url}/{filter_id}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_error(&denied, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let denied = server
        .request(Method::POST, url.clone(), Some(&bob.token), Some(json!({})))
        .await;
    assert_error(&denied, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let bob_sync = sync(&server, &bob.token, &[("filter", &filter_id)]).await;
    assert_ne!(
        bob_sync.0,
        StatusCode::OK,
        "bob has no filter {filter_id}: {}",
        bob_sync.1
    );
    let unknown = server
        .request(
            Method::GET,
            format!("{url}/999999"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

async fn lazy_loading_sends_only_the_senders_members(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    for user in [&bob, &carol, &dave] {
        join(&server, &user.token, &room).await;
    }
    for index in 0..5 {
        send_text(&server, &bob.token, &room, &format!("b{index}")).await;
    }
    let filter =
        json!({ "room": { "timeline": { "limit": 3 }, "state": { "lazy_load_members": true } } })
            .to_string();
    let answer = sync_ok(&server, &dave.token, &[("filter", &filter)]).await;
    let keys = state_keys(state(&answer, "join", &room));
    let members: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("m.room.member|"))
        .collect();
    assert!(
        members.contains(&&format!("m.room.member|{}", bob.user_id)),
        "{keys:?}"
    );
    assert!(
        !members.contains(&&format!("m.room.member|{}", alice.user_id)),
        "{keys:?}"
    );
    assert!(
        !members.contains(&&format!("m.room.member|{}", carol.user_id)),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"m.room.create|".to_owned()),
        "other state stays: {keys:?}"
    );
    assert!(
        keys.contains(&"m.room.power_levels|".to_owned()),
        "{keys:?}"
    );
    // Without lazy loading, everyone.
    let answer = initial_sync(&server, &dave.token, 3).await;
    let keys = state_keys(state(&answer, "join", &room));
    for user in [&alice, &bob, &carol, &dave] {
        assert!(
            keys.contains(&format!("m.room.member|{}", user.user_id)),
            "{keys:?}"
        );
    }
}

async fn bad_filters_and_tokens_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    create_room(&server, &alice.token, json!({})).await;
    let wrong_type = json!({ "room": { "timeline": { "limit": "ten" } } }).to_string();
    let answer = sync(&server, &alice.token, &[("filter", &wrong_type)]).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let answer = sync(&server, &alice.token, &[("filter", "{\"room\":")]).await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    assert!(
        ["M_NOT_JSON", "M_BAD_JSON", "M_INVALID_PARAM"]
            .contains(&answer.1["errcode"].as_str().unwrap_or("")),
        "{}",
        answer.1
    );
    let answer = sync(&server, &alice.token, &[("filter", "424242")]).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let url = server.v3(&format!("/user/{}/filter", alice.user_id));
    let answer = server
        .request(
            Method::POST,
            url.clone(),
            Some(&alice.token),
            Some(json!({ "room": { "timeline": { "limit": "ten" } } })),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let answer = server
        .request(Method::POST, url, Some(&alice.token), Some(json!([1])))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_BAD_JSON");

    let now = next_batch(&sync_ok(&server, &alice.token, &[]).await);
    for since in ["garbage", "s-1", "s", "12", "sx"] {
        let answer = sync(&server, &alice.token, &[("since", since)]).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    // Tokens are opaque, but this server's start with `s` and the position.
    let digits: String = now[1..].chars().take_while(char::is_ascii_digit).collect();
    let future = format!(
        "s{}{}",
        digits.parse::<i64>().expect("position") + 1000,
        &now[1 + digits.len()..]
    );
    let answer = sync(&server, &alice.token, &[("since", &future)]).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let answer = sync(
        &server,
        &alice.token,
        &[("since", &now), ("timeout", "soon")],
    )
    .await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    let unauthenticated = server
        .request(Method::GET, server.v3("/sync"), None, None)
        .await;
    assert_error(
        &unauthenticated,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
}

async fn transaction_ids_reach_only_the_sending_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let alice_phone = server.login("alice", Some("PHONE")).await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    let answer = send(
        &server,
        &alice.token,
        &room,
        "m.room.message",
        "txn-alice-1",
        json!({ "msgtype": "m.text", "body": "hi" }),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let id = event_id(&answer.1);
    let find = |answer: &Value| -> Value {
        timeline(answer, "join", &room)
            .iter()
            .find(|e| e["event_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} in {answer}"))
            .clone()
    };
    let own = find(&initial_sync(&server, &alice.token, 10).await);
    assert_eq!(own["unsigned"]["transaction_id"], "txn-alice-1", "{own}");
    let other_device = find(&initial_sync(&server, &alice_phone.token, 10).await);
    assert!(
        other_device["unsigned"]["transaction_id"].is_null(),
        "{other_device}"
    );
    let other_user = find(&initial_sync(&server, &bob.token, 10).await);
    assert!(
        other_user["unsigned"]["transaction_id"].is_null(),
        "{other_user}"
    );

    // Incremental syncs too, for an event the other device sends.
    let since = next_batch(&initial_sync(&server, &alice.token, 10).await);
    let answer = send(
        &server,
        &alice_phone.token,
        &room,
        "m.room.message",
        "txn-phone",
        json!({ "msgtype": "m.text", "body": "from the phone" }),
    )
    .await;
    let phone_event = event_id(&answer.1);
    let on_laptop = sync_since(&server, &alice.token, &since).await;
    let event = &timeline(&on_laptop, "join", &room)[0];
    assert_eq!(event["event_id"], phone_event.as_str());
    assert!(event["unsigned"]["transaction_id"].is_null(), "{event}");
    let on_phone = sync_since(&server, &alice_phone.token, &since).await;
    assert_eq!(
        timeline(&on_phone, "join", &room)[0]["unsigned"]["transaction_id"],
        "txn-phone"
    );
}

/// `senders` and `not_senders` are part of the spec's RoomEventFilter, for
/// sync timelines and `/messages` alike.
async fn filter_senders_and_not_senders(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    let mut from_alice = Vec::new();
    let mut from_bob = Vec::new();
    for index in 0..3 {
        from_alice.push(send_text(&server, &alice.token, &room, &format!("a{index}")).await);
        from_bob.push(send_text(&server, &bob.token, &room, &format!("b{index}")).await);
    }
    let only_bob =
        json!({ "room": { "timeline": { "limit": 3, "senders": [bob.user_id] } } }).to_string();
    let answer = sync_ok(&server, &alice.token, &[("filter", &only_bob)]).await;
    assert_eq!(ids(timeline(&answer, "join", &room)), from_bob, "{answer}");
    let not_bob = json!({ "room": { "timeline": { "limit": 3, "not_senders": [bob.user_id], "types": ["m.room.message"] } } }).to_string();
    let answer = sync_ok(&server, &alice.token, &[("filter", &not_bob)]).await;
    assert_eq!(
        ids(timeline(&answer, "join", &room)),
        from_alice,
        "{answer}"
    );

    let filter = json!({ "senders": [bob.user_id] }).to_string();
    let page = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("limit", "100"), ("filter", &filter)],
    )
    .await;
    assert!(
        chunk(&page)
            .iter()
            .all(|e| e["sender"] == bob.user_id.as_str()),
        "{page}"
    );
    assert_eq!(bodies(chunk(&page)), ["b2", "b1", "b0"]);
    let filter = json!({ "not_senders": [bob.user_id], "types": ["m.room.message"] }).to_string();
    let page = messages_ok(
        &server,
        &alice.token,
        &room,
        &[("dir", "b"), ("limit", "100"), ("filter", &filter)],
    )
    .await;
    assert_eq!(bodies(chunk(&page)), ["a2", "a1", "a0"]);
}

/// With lazy-loading, a timeline sender's membership must reach the client
/// in incremental syncs too, or it cannot show who wrote the message.
async fn lazy_loading_incremental_sync_sends_new_senders_members(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let dave = server.register("dave").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    join(&server, &dave.token, &room).await;
    send_text(&server, &dave.token, &room, "dave first").await;
    // A timeline of one, so bob's join is not in the first sync.
    let filter = json!({ "room": {
        "timeline": { "limit": 1 },
        "state": { "lazy_load_members": true },
    } })
    .to_string();
    let since = next_batch(&sync_ok(&server, &dave.token, &[("filter", &filter)]).await);
    send_text(&server, &bob.token, &room, "bob speaks").await;
    let answer = sync_ok(
        &server,
        &dave.token,
        &[("since", &since), ("timeout", "0"), ("filter", &filter)],
    )
    .await;
    assert_eq!(bodies(timeline(&answer, "join", &room)), ["bob speaks"]);
    let keys = state_keys(state(&answer, "join", &room));
    assert!(
        keys.contains(&format!("m.room.member|{}", bob.user_id)),
        "bob's membership: {answer}"
    );
    assert!(
        !keys.contains(&format!("m.room.member|{}", alice.user_id)),
        "{keys:?}"
    );
}

/// A kicked or banned user's long-poll wakes, and the room moves to leave.
async fn long_poll_wakes_a_kicked_user(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    let since = next_batch(&sync_ok(&server, &bob.token, &[]).await);
    let poll = spawn_sync(
        &server,
        &bob.token,
        vec![("since", since), ("timeout", "30000".to_owned())],
    );
    tokio::task::yield_now().await;
    let banned = membership(
        &server,
        &alice.token,
        &room,
        "ban",
        json!({ "user_id": bob.user_id }),
    )
    .await;
    assert_eq!(banned.0, StatusCode::OK, "{}", banned.1);
    let (elapsed, status, answer) = poll.await.expect("sync task");
    eprintln!("banned user's long-poll woke after {elapsed:?}");
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(elapsed < Duration::from_secs(5), "woke after {elapsed:?}");
    assert_eq!(
        section_rooms(&answer, "leave"),
        vec![room.clone()],
        "{answer}"
    );
    let last = timeline(&answer, "leave", &room)
        .last()
        .expect("ban")
        .clone();
    assert_eq!(last["content"]["membership"], "ban");
    assert_eq!(last["state_key"], bob.user_id.as_str());
}

/// "knock: The rooms that the user has knocked upon", with the stripped
/// state including the knock itself; an answer moves the room on.
async fn knocks_appear_under_rooms_knock(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "name": "door", "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }] }),
    )
    .await;
    let since = next_batch(&sync_ok(&server, &bob.token, &[]).await);
    let poll = spawn_sync(
        &server,
        &bob.token,
        vec![("since", since.clone()), ("timeout", "10000".to_owned())],
    );
    tokio::task::yield_now().await;
    let (status, knocked) = server
        .request(
            Method::POST,
            server.v3(&format!("/knock/{}", crate::rooms_support::enc(&room))),
            Some(&bob.token),
            Some(json!({ "reason": "let me in" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{knocked}");
    let (elapsed, status, answer) = poll.await.expect("sync task");
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(elapsed < Duration::from_secs(5), "woke after {elapsed:?}");
    assert_eq!(
        section_rooms(&answer, "knock"),
        vec![room.clone()],
        "{answer}"
    );
    assert_eq!(section_rooms(&answer, "join"), Vec::<String>::new());
    let stripped = answer["rooms"]["knock"][&room]["knock_state"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("knock_state in {answer}"));
    let knock = stripped
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .unwrap_or_else(|| panic!("the knock in {stripped:?}"));
    assert_eq!(knock["content"]["membership"], "knock");
    assert!(
        state_keys(stripped).contains(&"m.room.name|".to_owned()),
        "{stripped:?}"
    );
    let since = next_batch(&answer);
    let answer = sync_since(&server, &bob.token, &since).await;
    assert_eq!(
        section_rooms(&answer, "knock"),
        Vec::<String>::new(),
        "once: {answer}"
    );
    let initial = sync_ok(&server, &bob.token, &[]).await;
    assert_eq!(
        section_rooms(&initial, "knock"),
        vec![room.clone()],
        "{initial}"
    );

    // Alice answers with an invite: the room moves to invite.
    invite(&server, &alice.token, &room, &bob.user_id).await;
    let answer = sync_since(&server, &bob.token, &since).await;
    assert_eq!(
        section_rooms(&answer, "invite"),
        vec![room.clone()],
        "{answer}"
    );
    assert_eq!(
        section_rooms(&answer, "knock"),
        Vec::<String>::new(),
        "{answer}"
    );
}

/// Two devices of one user long-poll at once: one event wakes both. An
/// initial sync and a full_state sync answer at once whatever the timeout.
async fn long_polls_of_every_device_wake(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let alice = server.register("alice").await;
    let phone = server.login("alice", Some("PHONE")).await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &bob.token, json!({ "preset": "public_chat" })).await;
    join(&server, &alice.token, &room).await;
    let since = next_batch(&sync_ok(&server, &alice.token, &[]).await);
    let laptop_poll = spawn_sync(
        &server,
        &alice.token,
        vec![("since", since.clone()), ("timeout", "10000".to_owned())],
    );
    let phone_poll = spawn_sync(
        &server,
        &phone.token,
        vec![("since", since.clone()), ("timeout", "10000".to_owned())],
    );
    tokio::task::yield_now().await;
    let id = send_text(&server, &bob.token, &room, "to both").await;
    for poll in [laptop_poll, phone_poll] {
        let (elapsed, status, answer) = poll.await.expect("sync task");
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert!(elapsed < Duration::from_secs(5), "woke after {elapsed:?}");
        assert_eq!(ids(timeline(&answer, "join", &room)), vec![id.clone()]);
    }

    let loner = server.register("loner").await;
    let started = Instant::now();
    let answer = sync_ok(&server, &loner.token, &[("timeout", "10000")]).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "initial sync waited {:?}",
        started.elapsed()
    );
    assert_eq!(section_rooms(&answer, "join"), Vec::<String>::new());
    let since = next_batch(&sync_ok(&server, &alice.token, &[]).await);
    let started = Instant::now();
    let answer = sync_ok(
        &server,
        &alice.token,
        &[
            ("since", &since),
            ("timeout", "10000"),
            ("full_state", "true"),
        ],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "full_state sync waited {:?}",
        started.elapsed()
    );
    assert_eq!(section_rooms(&answer, "join"), vec![room.clone()]);
}

/// `room.state.types` and `not_types` narrow the state section.
async fn state_filter_types(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "name": "n" }),
    )
    .await;
    for index in 0..5 {
        send_text(&server, &alice.token, &room, &format!("m{index}")).await;
    }
    let filter = json!({ "room": { "timeline": { "limit": 2 }, "state": { "types": ["m.room.create", "m.room.name"] } } }).to_string();
    let answer = sync_ok(&server, &alice.token, &[("filter", &filter)]).await;
    assert_eq!(
        state_keys(state(&answer, "join", &room)),
        ["m.room.create|", "m.room.name|"]
    );
    let filter = json!({ "room": { "timeline": { "limit": 2 }, "state": { "not_types": ["m.room.member", "m.room.power_levels"] } } }).to_string();
    let answer = sync_ok(&server, &alice.token, &[("filter", &filter)]).await;
    let keys = state_keys(state(&answer, "join", &room));
    assert!(
        keys.iter()
            .all(|k| !k.starts_with("m.room.member|") && k != "m.room.power_levels|"),
        "{keys:?}"
    );
    assert!(keys.contains(&"m.room.join_rules|".to_owned()), "{keys:?}");
}

/// A filtered timeline reaches past more skipped events than one read
/// returns.
async fn filtered_timelines_reach_past_many_skipped_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    let since = next_batch(&sync_ok(&server, &alice.token, &[]).await);
    let mut messages = Vec::new();
    for index in 0..3 {
        messages.push(send_text(&server, &alice.token, &room, &format!("m{index}")).await);
    }
    let mut last_topic = String::new();
    for index in 0..70 {
        let (status, answer) = put_state(
            &server,
            &alice.token,
            &room,
            "m.room.topic",
            "",
            json!({ "topic": format!("t{index}") }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        last_topic = event_id(&answer);
    }
    let filter =
        json!({ "room": { "timeline": { "limit": 2, "types": ["m.room.message"] } } }).to_string();
    let answer = sync_ok(
        &server,
        &alice.token,
        &[("since", &since), ("timeout", "0"), ("filter", &filter)],
    )
    .await;
    assert_eq!(
        ids(timeline(&answer, "join", &room)),
        messages[1..].to_vec(),
        "{answer}"
    );
    assert_eq!(answer["rooms"]["join"][&room]["timeline"]["limited"], true);
    let filter =
        json!({ "room": { "timeline": { "limit": 5, "types": ["m.room.message"] } } }).to_string();
    let answer = sync_ok(
        &server,
        &alice.token,
        &[("since", &since), ("timeout", "0"), ("filter", &filter)],
    )
    .await;
    assert_eq!(ids(timeline(&answer, "join", &room)), messages, "{answer}");
    assert_eq!(answer["rooms"]["join"][&room]["timeline"]["limited"], false);
    // Everything passes a not_types on messages: the newest topics.
    let filter = json!({ "room": { "timeline": { "limit": 1, "not_types": ["m.room.message"] } } })
        .to_string();
    let answer = sync_ok(
        &server,
        &alice.token,
        &[("since", &since), ("timeout", "0"), ("filter", &filter)],
    )
    .await;
    assert_eq!(ids(timeline(&answer, "join", &room)), vec![last_topic]);
}

/// A room joined between two syncs arrives like an initial sync of it:
/// the newest events, and the state at their start, together covering
/// the whole current state.
async fn a_room_joined_between_syncs_arrives_whole(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice.token,
        json!({ "preset": "public_chat", "name": "busy" }),
    )
    .await;
    for index in 0..20 {
        send_text(&server, &alice.token, &room, &format!("m{index}")).await;
    }
    let since = next_batch(&sync_ok(&server, &bob.token, &[]).await);
    join(&server, &bob.token, &room).await;
    let id = send_text(&server, &alice.token, &room, "welcome").await;
    let answer = sync_since_limit(&server, &bob.token, &since, 5).await;
    assert_eq!(
        section_rooms(&answer, "join"),
        vec![room.clone()],
        "{answer}"
    );
    let events = timeline(&answer, "join", &room);
    assert_eq!(events.len(), 5, "{events:?}");
    assert_eq!(events[4]["event_id"], id.as_str());
    assert_eq!(events[3]["state_key"], bob.user_id.as_str(), "bob's join");
    assert_eq!(answer["rooms"]["join"][&room]["timeline"]["limited"], true);
    let mut covered = state_keys(state(&answer, "join", &room));
    covered.extend(state_keys(
        &events
            .iter()
            .filter(|e| e.get("state_key").is_some())
            .cloned()
            .collect::<Vec<_>>(),
    ));
    covered.sort();
    covered.dedup();
    let (_, full) = server
        .request(
            Method::GET,
            room_url(&server, &room, "/state"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(
        covered,
        state_keys(full.as_array().expect("state")),
        "{answer}"
    );
    for key in ["m.room.create|", "m.room.name|", "m.room.power_levels|"] {
        assert!(
            state_keys(state(&answer, "join", &room)).contains(&key.to_owned()),
            "{key}"
        );
    }
}

/// The MSC2654 unread count counts others' messages after the event the
/// user's latest read receipt (public or private) points at (push rule
/// counts are tested in `push.rs`).
async fn unread_counts_start_after_the_latest_read_receipt(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice.token, json!({ "preset": "public_chat" })).await;
    join(&server, &bob.token, &room).await;
    let mut sent = Vec::new();
    for body in ["one", "two", "three"] {
        sent.push(send_text(&server, &bob.token, &room, body).await);
    }
    send_text(&server, &alice.token, &room, "her own, never unread").await;
    let unread =
        |answer: Value| answer["rooms"]["join"][&room]["org.matrix.msc2654.unread_count"].clone();
    assert_eq!(
        unread(initial_sync(&server, &alice.token, 10).await),
        json!(3)
    );
    for (receipt_type, event, expected) in
        [("m.read", &sent[1], 1), ("m.read.private", &sent[2], 0)]
    {
        let (status, answer) = server
            .request(
                Method::POST,
                room_url(
                    &server,
                    &room,
                    &format!(
                        "/receipt/{receipt_type}/{}",
                        crate::rooms_support::enc(event)
                    ),
                ),
                Some(&alice.token),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(
            unread(initial_sync(&server, &alice.token, 10).await),
            json!(expected),
            "after a {receipt_type} receipt"
        );
    }
}
