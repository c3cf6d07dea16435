//! The storage conformance suite: the same assertions on every backend.

use std::sync::Arc;

use myelin_server::{
    config::DatabaseLocation,
    storage::{
        self, IssuedTokens, Millis, NewAccount, NewEvent, NewStateGroup, NewTransaction,
        ProfileField, Session, Storage, StorageError, StreamPosition, TokenHash,
    },
};
use myelin_tests::{Backend, PostgresDatabase, backend_tests};
use ruma_ids::{EventId, OwnedEventId, RoomId, device_id, owned_user_id, user_id};

backend_tests!(
    accounts_are_unique,
    sessions_resolve_and_reuse_devices,
    deleting_devices_revokes_their_tokens,
    profiles_and_renames_report_missing_rows,
    acknowledged_writes_survive_reopening,
    a_failing_event_fails_only_its_own_chain,
    a_lone_chain_keeps_the_events_before_its_failure,
    a_batch_of_messages_in_several_rooms_is_written_whole,
    latest_room_events_reads_each_rooms_newest,
    cached_reads_answer_as_the_database_does,
    transaction_ids_outlive_the_move_onto_event_rows,
    push_actions_are_pruned_when_read_and_old_or_past_the_cap,
);

/// A storage on a fresh database, with what keeps that database alive.
async fn open(backend: Backend) -> (Arc<dyn Storage>, Keep) {
    let (location, keep) = fresh_location(backend, "myelin.db").await;
    (storage::open(&location).await.unwrap(), keep)
}

/// A fresh database (SQLite: `file` in a new directory).
async fn fresh_location(backend: Backend, file: &str) -> (DatabaseLocation, Keep) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (
                DatabaseLocation::Sqlite(dir.path().join(file)),
                Keep::Dir(dir),
            )
        }
        Backend::Postgres(url) => {
            let database = PostgresDatabase::create(&url).await;
            let location = DatabaseLocation::Postgres(myelin_server::config::Secret::new(
                database.url.clone(),
            ));
            (location, Keep::Database(database))
        }
    }
}

#[allow(dead_code)]
enum Keep {
    Dir(tempfile::TempDir),
    Database(PostgresDatabase),
}

fn account(user_id: &str) -> NewAccount {
    NewAccount {
        user_id: user_id.try_into().unwrap(),
        password_hash: "$argon2id$placeholder".to_owned(),
        is_admin: false,
        is_guest: false,
        created: Millis(1),
    }
}

fn session(user: &str, device: &str) -> Session {
    Session {
        user_id: user.try_into().unwrap(),
        device_id: device.into(),
        is_guest: false,
    }
}

async fn accounts_are_unique(backend: Backend) {
    let (store, _keep) = open(backend).await;
    store.create_account(&account("@alice:x")).await.unwrap();
    assert!(matches!(
        store.create_account(&account("@alice:x")).await,
        Err(StorageError::Conflict(_))
    ));
    let stored = store
        .account(&owned_user_id!("@alice:x"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.password_hash, "$argon2id$placeholder");
    assert!(!stored.is_admin);
    assert!(
        store
            .account(&owned_user_id!("@bob:x"))
            .await
            .unwrap()
            .is_none()
    );
    store
        .set_password_hash(&owned_user_id!("@alice:x"), "$new")
        .await
        .unwrap();
    assert_eq!(
        store
            .account(&owned_user_id!("@alice:x"))
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$new"
    );
    assert!(matches!(
        store
            .set_password_hash(&owned_user_id!("@bob:x"), "$new")
            .await,
        Err(StorageError::NotFound(_))
    ));
}

/// An access token `[n; 32]` without a refresh token.
fn access_only(n: u8) -> IssuedTokens {
    IssuedTokens {
        access: TokenHash([n; 32]),
        access_expires: None,
        refresh: None,
    }
}

async fn sessions_resolve_and_reuse_devices(backend: Backend) {
    let (store, _keep) = open(backend).await;
    store.create_account(&account("@alice:x")).await.unwrap();
    let phone = session("@alice:x", "PHONE");
    store
        .open_session(&phone, Some("Phone"), &access_only(1), Millis(1))
        .await
        .unwrap();
    let found = store
        .session_for_token(&TokenHash([1; 32]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.session, phone);
    assert_eq!(found.hash, TokenHash([1; 32]));
    assert!(
        store
            .session_for_token(&TokenHash([2; 32]))
            .await
            .unwrap()
            .is_none()
    );

    // Reopening the device replaces its token and keeps its name.
    store
        .open_session(&phone, Some("ignored"), &access_only(3), Millis(2))
        .await
        .unwrap();
    assert!(
        store
            .session_for_token(&TokenHash([1; 32]))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .session_for_token(&TokenHash([3; 32]))
            .await
            .unwrap()
            .is_some()
    );
    let device = store
        .device(&owned_user_id!("@alice:x"), device_id!("PHONE"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(device.display_name.as_deref(), Some("Phone"));
}

async fn deleting_devices_revokes_their_tokens(backend: Backend) {
    let (store, _keep) = open(backend).await;
    let alice = owned_user_id!("@alice:x");
    store.create_account(&account("@alice:x")).await.unwrap();
    for (i, device) in ["A", "B", "C"].into_iter().enumerate() {
        let token = access_only(u8::try_from(i).unwrap());
        store
            .open_session(&session("@alice:x", device), None, &token, Millis(1))
            .await
            .unwrap();
    }
    store
        .delete_devices(&alice, &["A".into(), "NOPE".into()])
        .await
        .unwrap();
    assert!(
        store
            .session_for_token(&TokenHash([0; 32]))
            .await
            .unwrap()
            .is_none()
    );
    store
        .delete_devices_except(&alice, Some(device_id!("C")))
        .await
        .unwrap();
    assert!(
        store
            .session_for_token(&TokenHash([1; 32]))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .session_for_token(&TokenHash([2; 32]))
            .await
            .unwrap()
            .is_some()
    );
    let devices = store.devices(&alice).await.unwrap();
    assert_eq!(
        devices
            .iter()
            .map(|d| d.device_id.as_str())
            .collect::<Vec<_>>(),
        ["C"]
    );
    store.delete_devices_except(&alice, None).await.unwrap();
    assert!(store.devices(&alice).await.unwrap().is_empty());
}

async fn profiles_and_renames_report_missing_rows(backend: Backend) {
    let (store, _keep) = open(backend).await;
    let alice = owned_user_id!("@alice:x");
    store.create_account(&account("@alice:x")).await.unwrap();
    assert_eq!(
        store.profile(&alice).await.unwrap().unwrap(),
        Default::default()
    );
    store
        .set_profile_field(&alice, ProfileField::Displayname, Some("Alice"))
        .await
        .unwrap();
    store
        .set_profile_field(&alice, ProfileField::AvatarUrl, Some("mxc://x/y"))
        .await
        .unwrap();
    let profile = store.profile(&alice).await.unwrap().unwrap();
    assert_eq!(
        (
            profile.displayname.as_deref(),
            profile.avatar_url.as_deref()
        ),
        (Some("Alice"), Some("mxc://x/y"))
    );
    let bob = owned_user_id!("@bob:x");
    assert!(store.profile(&bob).await.unwrap().is_none());
    assert!(matches!(
        store
            .set_profile_field(&bob, ProfileField::Displayname, Some("B"))
            .await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        store
            .rename_device(&alice, device_id!("NONE"), Some("x"))
            .await,
        Err(StorageError::NotFound(_))
    ));
}

async fn acknowledged_writes_survive_reopening(backend: Backend) {
    // Reopen on the same location: migrations are idempotent and data persists.
    let (location, _keep) = fresh_location(backend, "nested/dir/myelin.db").await;
    let first = storage::open(&location).await.unwrap();
    first.create_account(&account("@alice:x")).await.unwrap();
    drop(first);
    let second = storage::open(&location).await.unwrap();
    assert!(
        second
            .account(&owned_user_id!("@alice:x"))
            .await
            .unwrap()
            .is_some()
    );
    second.close().await;
}

/// An event as the storage sees it; `creates` makes it a room's first.
fn new_event<'a>(
    position: i64,
    event_id: &'a EventId,
    room_id: &'a RoomId,
    creates: bool,
    extremities: &'a [OwnedEventId],
    group: &'a NewStateGroup,
) -> NewEvent<'a> {
    NewEvent {
        position: StreamPosition(position),
        event_id,
        room_id,
        creates_room_version: creates.then_some("11"),
        event_type: if creates {
            "m.room.create"
        } else {
            "m.room.message"
        },
        state_key: creates.then_some(""),
        sender: user_id!("@alice:x"),
        depth: position,
        json: "{}",
        // A create event starts the room's first state group, at its position.
        state_group: if creates { position } else { position - 1 },
        new_state_group: creates.then_some(group),
        forward_extremities: extremities,
        membership: None,
        join_rule: None,
        transaction: None,
        redaction: None,
        room_state: None,
    }
}

/// Group commit writes many rooms' events in one transaction: an event that
/// fails must undo only itself and skip only the events built on it.
async fn a_failing_event_fails_only_its_own_chain(backend: Backend) {
    let (store, _keep) = open(backend).await;
    let group = NewStateGroup {
        prev_group: None,
        chain_length: 0,
        entries: Vec::new(),
    };
    let ids: Vec<OwnedEventId> = ["$a1", "$a2", "$b2", "$c1", "$d1", "$d3"]
        .iter()
        .map(|id| OwnedEventId::try_from(*id).unwrap())
        .collect();
    let (a1, a2, b2, c1, d1, d3) = (&*ids[0], &*ids[1], &*ids[2], &*ids[3], &*ids[4], &*ids[5]);
    let (room_a, room_b, room_c, room_d) = (
        <&RoomId>::try_from("!a:x").unwrap(),
        <&RoomId>::try_from("!b:x").unwrap(),
        <&RoomId>::try_from("!c:x").unwrap(),
        <&RoomId>::try_from("!d:x").unwrap(),
    );
    let chains = vec![
        vec![
            new_event(1, a1, room_a, true, &ids[0..1], &group),
            new_event(2, a2, room_a, false, &ids[1..2], &group),
        ],
        // Room b's create event reuses an id: it fails, and b2 (built on it) is not tried.
        vec![
            new_event(3, a1, room_b, true, &ids[0..1], &group),
            new_event(4, b2, room_b, false, &ids[2..3], &group),
        ],
        vec![new_event(5, c1, room_c, true, &ids[3..4], &group)],
        // Room d's second event reuses an id: d1 is written, d3 is not tried,
        // and the room's extremity is d1.
        vec![
            new_event(6, d1, room_d, true, &ids[4..5], &group),
            new_event(7, a2, room_d, false, &ids[1..2], &group),
            new_event(8, d3, room_d, false, &ids[5..6], &group),
        ],
    ];
    let outcomes = store.append_event_chains(&chains).await.unwrap();
    let summary: Vec<(usize, bool)> = outcomes
        .iter()
        .map(|outcome| (outcome.written, outcome.error.is_some()))
        .collect();
    assert_eq!(summary, [(2, false), (0, true), (1, false), (1, true)]);
    assert!(matches!(outcomes[1].error, Some(StorageError::Conflict(_))));
    assert!(matches!(outcomes[3].error, Some(StorageError::Conflict(_))));
    for written in [a1, a2, c1, d1] {
        assert!(store.event(written).await.unwrap().is_some(), "{written}");
    }
    assert_eq!(
        store.event(a1).await.unwrap().unwrap().room_id,
        room_a,
        "the failed event did not overwrite the first"
    );
    assert!(store.event(b2).await.unwrap().is_none());
    assert!(
        store.room(room_b).await.unwrap().is_none(),
        "the failed create event's room insert was undone with it"
    );
    assert!(store.room(room_c).await.unwrap().is_some());
    assert!(store.event(d3).await.unwrap().is_none());
    assert_eq!(
        store
            .room_head(room_d)
            .await
            .unwrap()
            .unwrap()
            .forward_extremities,
        [d1.to_owned()]
    );
    assert_eq!(
        store.max_stream_position().await.unwrap(),
        StreamPosition(6)
    );
}

/// A batch of one chain is written without a savepoint; when an event of
/// it fails, the events before it are still committed, with the room's
/// extremity moved to the last of them.
async fn a_lone_chain_keeps_the_events_before_its_failure(backend: Backend) {
    let (store, _keep) = open(backend).await;
    let group = NewStateGroup {
        prev_group: None,
        chain_length: 0,
        entries: Vec::new(),
    };
    let ids: Vec<OwnedEventId> = ["$e1", "$e2", "$e4"]
        .iter()
        .map(|id| OwnedEventId::try_from(*id).unwrap())
        .collect();
    let room = <&RoomId>::try_from("!e:x").unwrap();
    store
        .append_event_chains(&[vec![new_event(1, &ids[0], room, true, &ids[0..1], &group)]])
        .await
        .unwrap();
    let chains = vec![vec![
        new_event(2, &ids[1], room, false, &ids[1..2], &group),
        // Reuses the create event's id: fails, and e4 after it is not tried.
        new_event(3, &ids[0], room, false, &ids[0..1], &group),
        new_event(4, &ids[2], room, false, &ids[2..3], &group),
    ]];
    let outcomes = store.append_event_chains(&chains).await.unwrap();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].written, 1);
    assert!(matches!(outcomes[0].error, Some(StorageError::Conflict(_))));
    assert!(store.event(&ids[1]).await.unwrap().is_some());
    assert!(store.event(&ids[2]).await.unwrap().is_none());
    assert_eq!(
        store
            .room_head(room)
            .await
            .unwrap()
            .unwrap()
            .forward_extremities,
        [ids[1].clone()]
    );
    assert_eq!(
        store.max_stream_position().await.unwrap(),
        StreamPosition(2)
    );
}

fn with_transaction<'a>(mut event: NewEvent<'a>, key: &'a str) -> NewEvent<'a> {
    event.transaction = Some(NewTransaction {
        user_id: user_id!("@alice:x"),
        device_id: device_id!("PHONE"),
        key,
        txn_id: key,
    });
    event
}

/// Several rooms' chains of plain messages with transaction ids (SQLite
/// writes them in one query): every event, every transaction id, and each
/// room's extremity at its last event.
async fn a_batch_of_messages_in_several_rooms_is_written_whole(backend: Backend) {
    let (store, _keep) = open(backend).await;
    let group = NewStateGroup {
        prev_group: None,
        chain_length: 0,
        entries: Vec::new(),
    };
    let ids: Vec<OwnedEventId> = ["$f1", "$g1", "$f2", "$f3", "$g2"]
        .iter()
        .map(|id| OwnedEventId::try_from(*id).unwrap())
        .collect();
    let (room_f, room_g) = (
        <&RoomId>::try_from("!f:x").unwrap(),
        <&RoomId>::try_from("!g:x").unwrap(),
    );
    store
        .append_event_chains(&[
            vec![new_event(1, &ids[0], room_f, true, &ids[0..1], &group)],
            vec![new_event(2, &ids[1], room_g, true, &ids[1..2], &group)],
        ])
        .await
        .unwrap();
    let txn_keys = ["f2", "f3", "g2"];
    // Each room's messages follow the state its create event started.
    let message = |position, index: usize, room, state_group, key| {
        let mut event = with_transaction(
            new_event(
                position,
                &ids[index],
                room,
                false,
                &ids[index..=index],
                &group,
            ),
            key,
        );
        event.state_group = state_group;
        event
    };
    let chains = vec![
        vec![
            message(3, 2, room_f, 1, txn_keys[0]),
            message(5, 3, room_f, 1, txn_keys[1]),
        ],
        vec![message(4, 4, room_g, 2, txn_keys[2])],
    ];
    let outcomes = store.append_event_chains(&chains).await.unwrap();
    let summary: Vec<(usize, bool)> = outcomes
        .iter()
        .map(|outcome| (outcome.written, outcome.error.is_some()))
        .collect();
    assert_eq!(summary, [(2, false), (1, false)]);
    for (key, event_id) in txn_keys.iter().zip([&ids[2], &ids[3], &ids[4]]) {
        assert_eq!(
            store
                .transaction_event(user_id!("@alice:x"), device_id!("PHONE"), key)
                .await
                .unwrap()
                .as_ref(),
            Some(event_id),
            "{key}"
        );
    }
    // The sending device, and only it, sees each of its events' transaction ids.
    let mut shown = store
        .transaction_ids(user_id!("@alice:x"), device_id!("PHONE"), &ids)
        .await
        .unwrap();
    shown.sort();
    let expected: Vec<(OwnedEventId, String)> = [2, 3, 4]
        .into_iter()
        .zip(txn_keys)
        .map(|(index, key)| (ids[index].clone(), key.to_owned()))
        .collect();
    assert_eq!(shown, expected);
    for (user, device) in [("@alice:x", "LAPTOP"), ("@bob:x", "PHONE")] {
        let other = store
            .transaction_ids(user.try_into().unwrap(), device.into(), &ids)
            .await
            .unwrap();
        assert!(other.is_empty(), "{user} {device}: {other:?}");
    }
    assert_eq!(
        store
            .room_head(room_f)
            .await
            .unwrap()
            .unwrap()
            .forward_extremities,
        [ids[3].clone()]
    );
    assert_eq!(
        store
            .room_head(room_g)
            .await
            .unwrap()
            .unwrap()
            .forward_extremities,
        [ids[4].clone()]
    );
}

/// The batched timeline read of an initial sync answers, for each room,
/// what the per-room newest-first read would.
async fn latest_room_events_reads_each_rooms_newest(backend: Backend) {
    let (store, _keep) = open(backend).await;
    let group = NewStateGroup {
        prev_group: None,
        chain_length: 0,
        entries: Vec::new(),
    };
    let ids: Vec<OwnedEventId> = ["$a1", "$a2", "$b1", "$a3"]
        .iter()
        .map(|id| OwnedEventId::try_from(*id).unwrap())
        .collect();
    let (room_a, room_b, room_empty) = (
        <&RoomId>::try_from("!a:x").unwrap(),
        <&RoomId>::try_from("!b:x").unwrap(),
        <&RoomId>::try_from("!unknown:x").unwrap(),
    );
    let chains = vec![
        vec![
            new_event(1, &ids[0], room_a, true, &ids[0..1], &group),
            new_event(2, &ids[1], room_a, false, &ids[1..2], &group),
        ],
        vec![new_event(3, &ids[2], room_b, true, &ids[2..3], &group)],
        vec![new_event(4, &ids[3], room_a, false, &ids[3..4], &group)],
    ];
    store.append_event_chains(&chains).await.unwrap();
    let rooms = [room_a.to_owned(), room_b.to_owned(), room_empty.to_owned()];
    for (upto, limit) in [(4, 2), (4, 10), (2, 1), (0, 5)] {
        let mut batched: Vec<String> = store
            .latest_room_events(&rooms, StreamPosition(upto), limit)
            .await
            .unwrap()
            .into_iter()
            .map(|event| event.event_id.to_string())
            .collect();
        batched.sort();
        let mut one_by_one = Vec::new();
        for room in &rooms {
            for event in store
                .room_events(room, StreamPosition(0), StreamPosition(upto), limit, true)
                .await
                .unwrap()
            {
                one_by_one.push(event.event_id.to_string());
            }
        }
        one_by_one.sort();
        assert_eq!(batched, one_by_one, "upto {upto}, limit {limit}");
    }
    let newest: Vec<String> = store
        .latest_room_events(&rooms, StreamPosition(4), 1)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.event_id.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(newest, ["$a3", "$b1"]);
}

/// What the storage serves from memory (the window of recent events, the
/// membership lists, unread counts grown from the window) is what the
/// database says: a second storage on the same database, which wrote
/// nothing and so answers every question from the database, is asked the
/// same questions over every range.
async fn cached_reads_answer_as_the_database_does(backend: Backend) {
    let (location, _keep) = fresh_location(backend, "myelin.db").await;
    let writer = storage::open(&location).await.unwrap();
    let reader = storage::open(&location).await.unwrap();
    let (alice, bob) = (user_id!("@alice:x"), user_id!("@bob:x"));
    let rooms = [
        <&RoomId>::try_from("!a:x").unwrap(),
        <&RoomId>::try_from("!b:x").unwrap(),
    ];
    const EVENTS: i64 = 24;
    let ids: Vec<OwnedEventId> = (1..=EVENTS)
        .map(|n| OwnedEventId::try_from(format!("$e{n}")).unwrap())
        .collect();
    let jsons: Vec<String> = (1..=EVENTS).map(|n| format!("{{\"n\":{n}}}")).collect();
    let group = NewStateGroup {
        prev_group: None,
        chain_length: 0,
        entries: Vec::new(),
    };
    // Position n is event n: the rooms' create events, then bob joins room
    // a and messages follow from both, some of another type; event 20
    // redacts event 8.
    let event = |n: i64| {
        let index = usize::try_from(n - 1).unwrap();
        let room = rooms[usize::from(n == 2 || (n > 3 && n % 3 == 0))];
        let mut event = new_event(n, &ids[index], room, n <= 2, &ids[index..=index], &group);
        event.json = &jsons[index];
        event.state_group = if n <= 2 {
            n
        } else {
            rooms.iter().position(|r| *r == room).unwrap() as i64 + 1
        };
        match n {
            3 => {
                event.event_type = "m.room.member";
                event.state_key = Some("@bob:x");
                event.sender = bob;
                event.membership = Some((bob, "join"));
            }
            20 => {
                event.event_type = "m.room.redaction";
                event.redaction = Some((&ids[7], "{\"redacted\":8}"));
            }
            _ if n % 4 == 0 => event.sender = bob,
            _ if n % 5 == 0 => event.event_type = "m.room.topic",
            _ => {}
        }
        event
    };
    let chain = |positions: &[i64]| positions.iter().map(|n| event(*n)).collect::<Vec<_>>();
    // Batches as group commit makes them: each room's chain in position
    // order, the chains of one batch interleaved.
    let batches: Vec<Vec<Vec<i64>>> = vec![
        vec![vec![1], vec![2]],
        vec![vec![3]],
        vec![vec![4, 5], vec![6]],
        vec![vec![9], vec![7, 8, 10]],
        (11..=EVENTS).map(|n| vec![n]).collect(),
    ];
    for batch in &batches {
        let chains: Vec<_> = batch.iter().map(|positions| chain(positions)).collect();
        let outcomes = writer.append_event_chains(&chains).await.unwrap();
        assert!(outcomes.iter().all(|o| o.error.is_none()));
    }
    // Bob read up to event 10 in room a; a receipt is not an event.
    writer
        .set_receipt(
            &storage::Receipt {
                room_id: rooms[0].to_owned(),
                receipt_type: "m.read".to_owned(),
                user_id: bob.to_string(),
                thread_id: String::new(),
                event_id: ids[9].to_string(),
                ts: 1,
            },
            StreamPosition(EVENTS + 1),
        )
        .await
        .unwrap();

    let summary = |events: Vec<storage::StoredEvent>| -> Vec<(i64, String, i64)> {
        events
            .into_iter()
            .map(|e| (e.position.0, e.json, e.state_group))
            .collect()
    };
    for upto in 0..=EVENTS {
        let upto_at = StreamPosition(upto);
        for room in rooms {
            // Growing upto, as syncs ask: the writer grows its cached count.
            for user in [alice, bob] {
                assert_eq!(
                    writer.count_unread(room, user, upto_at).await.unwrap(),
                    reader.count_unread(room, user, upto_at).await.unwrap(),
                    "unread of {user} in {room} up to {upto}"
                );
            }
            assert_eq!(
                writer.state_group_before(room, upto_at).await.unwrap(),
                reader.state_group_before(room, upto_at).await.unwrap(),
                "state group before {upto} in {room}"
            );
        }
        assert_eq!(
            writer
                .memberships_of(bob, Some(upto_at))
                .await
                .unwrap()
                .len(),
            reader
                .memberships_of(bob, Some(upto_at))
                .await
                .unwrap()
                .len(),
            "bob's memberships at {upto}"
        );
        for after in 0..=upto {
            let after_at = StreamPosition(after);
            let mut from_writer = writer.rooms_with_events(after_at, upto_at).await.unwrap();
            let mut from_reader = reader.rooms_with_events(after_at, upto_at).await.unwrap();
            from_writer.sort();
            from_reader.sort();
            assert_eq!(from_writer, from_reader, "rooms in ({after}, {upto}]");
            for room in rooms {
                for (limit, newest_first) in
                    [(1, true), (3, true), (100, true), (2, false), (100, false)]
                {
                    assert_eq!(
                        summary(
                            writer
                                .room_events(room, after_at, upto_at, limit, newest_first)
                                .await
                                .unwrap()
                        ),
                        summary(
                            reader
                                .room_events(room, after_at, upto_at, limit, newest_first)
                                .await
                                .unwrap()
                        ),
                        "{room} ({after}, {upto}] limit {limit} newest first {newest_first}"
                    );
                }
            }
        }
    }
    let redacted = writer.room_events(rooms[0], StreamPosition(7), StreamPosition(8), 1, true);
    assert_eq!(redacted.await.unwrap()[0].json, "{\"redacted\":8}");
    assert_eq!(
        writer.memberships_of(bob, None).await.unwrap()[0].event_id,
        ids[2]
    );
    writer.forget_room(bob, rooms[0]).await.unwrap();
    assert!(
        writer.memberships_of(bob, None).await.unwrap().is_empty(),
        "forgotten"
    );
}

/// Migration 11 moved each event's transaction id from `event_transactions`
/// onto the event's row: a database written before it still shows the
/// sending device its transaction ids, and a retried transaction still
/// finds its event.
async fn transaction_ids_outlive_the_move_onto_event_rows(backend: Backend) {
    let (location, _keep) = fresh_location(backend, "myelin.db").await;
    let (backend_dir, url) = match &location {
        DatabaseLocation::Sqlite(path) => {
            ("sqlite", format!("sqlite://{}?mode=rwc", path.display()))
        }
        DatabaseLocation::Postgres(url) => ("postgres", url.expose().to_owned()),
    };
    let mut before = sqlx::migrate::Migrator::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../server/migrations")
            .join(backend_dir),
    )
    .await
    .unwrap();
    before.migrations = before
        .migrations
        .iter()
        .filter(|migration| migration.version < 11)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let rows = "INSERT INTO rooms (room_id, room_version, created_ts) VALUES ('!r:x', '11', 1); \
        INSERT INTO events (stream_ordering, event_id, room_id, event_type, sender, depth, \
            state_group, json) \
        VALUES (1, '$sent', '!r:x', 'm.room.message', '@alice:x', 1, 1, '{}'), \
               (2, '$plain', '!r:x', 'm.room.message', '@alice:x', 2, 1, '{}'); \
        INSERT INTO event_transactions (user_id, device_id, txn_key, txn_id, event_id) \
        VALUES ('@alice:x', 'PHONE', 'send/!r:x/m.room.message/t1', 't1', '$sent');";
    {
        use sqlx::{Connection, Executor};
        // One code path for both backends would need sqlx's `any` driver.
        if backend_dir == "sqlite" {
            let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
            before.run(&mut connection).await.unwrap();
            connection.execute(rows).await.unwrap();
            connection.close().await.unwrap();
        } else {
            let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
            before.run(&mut connection).await.unwrap();
            connection.execute(rows).await.unwrap();
            connection.close().await.unwrap();
        }
    }
    let store = storage::open(&location).await.unwrap();
    let events: Vec<OwnedEventId> = ["$sent", "$plain"]
        .iter()
        .map(|id| OwnedEventId::try_from(*id).unwrap())
        .collect();
    assert_eq!(
        store
            .transaction_ids(user_id!("@alice:x"), device_id!("PHONE"), &events)
            .await
            .unwrap(),
        [(events[0].clone(), "t1".to_owned())]
    );
    assert_eq!(
        store
            .transaction_event(
                user_id!("@alice:x"),
                device_id!("PHONE"),
                "send/!r:x/m.room.message/t1"
            )
            .await
            .unwrap(),
        Some(events[0].clone())
    );
}

/// Pruning keeps every unread row and every recent one, and each user's
/// newest rows up to the cap; it drops read rows evaluated before the
/// cut-off and the rows past the cap.
async fn push_actions_are_pruned_when_read_and_old_or_past_the_cap(backend: Backend) {
    let (store, _keep) = open(backend).await;
    let group = NewStateGroup {
        prev_group: None,
        chain_length: 0,
        entries: Vec::new(),
    };
    let ids: Vec<OwnedEventId> = (1..=6)
        .map(|n| OwnedEventId::try_from(format!("$e{n}")).unwrap())
        .collect();
    let room = <&RoomId>::try_from("!r:x").unwrap();
    let chain: Vec<NewEvent<'_>> = (1..=6)
        .map(|n| {
            let index = usize::try_from(n - 1).unwrap();
            new_event(n, &ids[index], room, n == 1, &ids[index..=index], &group)
        })
        .collect();
    store.append_event_chains(&[chain]).await.unwrap();
    let (bob, carol) = (user_id!("@bob:x"), user_id!("@carol:x"));
    // Events 2 to 6 notified bob and carol; event n was evaluated at n * 100.
    let rows: Vec<storage::NewPushAction<'_>> = [bob, carol]
        .into_iter()
        .flat_map(|user| {
            ids[1..]
                .iter()
                .zip(2..)
                .map(move |(event_id, n)| storage::NewPushAction {
                    user_id: user,
                    room_id: room,
                    event_id,
                    position: StreamPosition(n),
                    actions: "[\"notify\"]",
                    is_highlight: false,
                    ts: n * 100,
                })
        })
        .collect();
    store.add_push_actions(&rows).await.unwrap();
    // Bob read up to event 4; carol read nothing.
    store
        .set_receipt(
            &storage::Receipt {
                room_id: room.to_owned(),
                receipt_type: "m.read".to_owned(),
                user_id: bob.to_string(),
                thread_id: String::new(),
                event_id: ids[3].to_string(),
                ts: 1,
            },
            StreamPosition(7),
        )
        .await
        .unwrap();
    let left = |user| {
        let store = store.clone();
        async move {
            let mut ids: Vec<String> = store
                .notifications(user, None, 100, false)
                .await
                .unwrap()
                .into_iter()
                .map(|n| n.event_id.to_string())
                .collect();
            ids.reverse();
            ids
        }
    };

    // Read rows evaluated before 350 go (bob's events 2 and 3); bob's
    // event 4, read but newer, and all of carol's, unread, stay.
    assert_eq!(store.prune_push_actions(350, 100, 1000).await.unwrap(), 2);
    assert_eq!(left(bob).await, ["$e4", "$e5", "$e6"]);
    assert_eq!(left(carol).await, ["$e2", "$e3", "$e4", "$e5", "$e6"]);
    assert_eq!(store.prune_push_actions(350, 100, 1000).await.unwrap(), 0);

    // A cap of two keeps each user's two newest, unread or not, and a
    // batch stops the statement short.
    assert_eq!(store.prune_push_actions(0, 2, 2).await.unwrap(), 2);
    assert_eq!(store.prune_push_actions(0, 2, 1000).await.unwrap(), 2);
    assert_eq!(left(bob).await, ["$e5", "$e6"]);
    assert_eq!(left(carol).await, ["$e5", "$e6"]);
    let counts = store
        .notification_counts(room, carol, StreamPosition(7))
        .await
        .unwrap();
    assert_eq!(counts.notifications, 2);
}
