//! Events from another server (`remote.example`) in rooms created here
//! (`a.test`), on SQLite and, when `MYELIN_TEST_DATABASE_URL` is set, on
//! PostgreSQL.

use std::{collections::HashMap, sync::Arc};

use futures_util::FutureExt;
use myelin_crypto::{NewPdu, SigningKey, V1EventIds, build_pdu};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, UInt,
    events::{StateEventType, TimelineEventType},
    server_name,
};
use serde_json::{Value, json};

use super::*;
use crate::{
    service::{
        committed::CommittedFeed,
        notifier::Notifier,
        room_events::{JoinedState, LocalEvent, RoomEvents},
        rooms::{
            auth::{AuthRule, auth_events_for},
            testing::{content, power_levels, user},
        },
        server_keys::ServerKeys,
        stream::Stream,
    },
    storage::{self, Storage, StreamPosition, testing::TestDatabase},
};

/// The other server's signing key.
fn remote_key() -> SigningKey {
    SigningKey::from_seed(&[9; 32], "remote").expect("a 32-byte seed is a valid key")
}

pub(crate) fn bob() -> OwnedUserId {
    user("@bob:remote.example")
}

fn carol() -> OwnedUserId {
    user("@carol:remote.example")
}

/// One server (`a.test`) on a fresh database.
struct Server {
    events: Arc<RoomEvents>,
    storage: Arc<dyn Storage>,
    notifier: Arc<Notifier>,
    database: Option<TestDatabase>,
}

impl Server {
    async fn start(postgres: bool) -> Self {
        let database = TestDatabase::create(postgres).await;
        let storage = storage::open(&database.location).await.unwrap();
        let keys = ServerKeys::load_or_generate(storage.clone(), server_name!("a.test").to_owned())
            .await
            .unwrap();
        let notifier = Arc::new(Notifier::default());
        let events = Arc::new(RoomEvents::new(
            storage.clone(),
            Arc::new(keys),
            notifier.clone(),
            Arc::new(Stream::new(StreamPosition(0))),
            16,
            CommittedFeed::new().0,
        ));
        Self {
            events,
            storage,
            notifier,
            database: Some(database),
        }
    }

    async fn stop(self) {
        if let Some(database) = self.database {
            database.remove().await;
        }
    }

    /// A room created by alice: public, bob (of `remote.example`) at
    /// power 50, `state_default` 50.
    async fn create_room(&self, version: RoomVersion) -> OwnedRoomId {
        let alice = user("alice");
        let mut create = json!({ "room_version": version.to_string() });
        if version.has_creator_field() {
            create["creator"] = json!(alice);
        }
        let room_id = (!version.is_room_id_derived_from_create_event())
            .then(|| OwnedRoomId::try_from("!room:a.test").unwrap());
        let room_id = self
            .events
            .create_room(
                version,
                room_id,
                local(&alice, "m.room.create", Some(""), create),
            )
            .await
            .unwrap();
        let setup = [
            (
                "m.room.member",
                Some(alice.as_str()),
                json!({ "membership": "join" }),
            ),
            (
                "m.room.power_levels",
                Some(""),
                power_levels(version, json!({ bob().as_str(): 50 })),
            ),
            (
                "m.room.join_rules",
                Some(""),
                json!({ "join_rule": "public" }),
            ),
        ];
        for (kind, state_key, body) in setup {
            self.send(&room_id, &alice, kind, state_key, body).await;
        }
        room_id
    }

    async fn send(
        &self,
        room_id: &OwnedRoomId,
        sender: &OwnedUserId,
        kind: &str,
        state_key: Option<&str>,
        body: Value,
    ) -> Pdu {
        let id = self
            .events
            .send(room_id, local(sender, kind, state_key, body))
            .await
            .unwrap_or_else(|e| panic!("local {kind}: {e}"));
        self.pdu(&id).await
    }

    /// Alice says something.
    async fn say(&self, room_id: &OwnedRoomId, body: &str) -> Pdu {
        let content = json!({ "msgtype": "m.text", "body": body });
        self.send(room_id, &user("alice"), "m.room.message", None, content)
            .await
    }

    /// Alice bans bob.
    async fn ban_bob(&self, room_id: &OwnedRoomId) -> Pdu {
        let content = json!({ "membership": "ban" });
        self.send(
            room_id,
            &user("alice"),
            "m.room.member",
            Some(bob().as_str()),
            content,
        )
        .await
    }

    async fn state(&self, room_id: &OwnedRoomId) -> RoomState {
        self.events.current_state(room_id).await.unwrap().unwrap()
    }

    async fn pdu(&self, event_id: &OwnedEventId) -> Pdu {
        let stored = self.storage.dag_event(event_id).await.unwrap().unwrap();
        let version = self.events.room_version(&stored.room_id).await.unwrap();
        dag_pdu(version, stored).unwrap()
    }

    /// The ids of the room's timeline, as sync and /messages read it.
    async fn timeline(&self, room_id: &OwnedRoomId) -> Vec<OwnedEventId> {
        self.storage
            .room_events(
                room_id,
                StreamPosition(0),
                StreamPosition(i64::MAX),
                1000,
                false,
            )
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_id)
            .collect()
    }

    async fn status(&self, event_id: &EventId) -> Option<EventStatus> {
        self.storage
            .dag_event(event_id)
            .await
            .unwrap()
            .map(|e| e.status)
    }

    async fn append(&self, pdu: &Pdu) -> RemoteOutcome {
        self.events.append_remote(pdu.clone()).await.unwrap()
    }
}

pub(crate) fn local(
    sender: &OwnedUserId,
    kind: &str,
    state_key: Option<&str>,
    body: Value,
) -> LocalEvent {
    LocalEvent {
        sender: sender.clone(),
        event_type: TimelineEventType::from(kind),
        state_key: state_key.map(str::to_owned),
        content: content(body),
        redacts: None,
        transaction: None,
    }
}

/// An event as `remote.example` builds it: on `prev`, citing the auth
/// events `state` holds, `ts_offset` milliseconds after the prev events.
fn remote_event(
    state: &RoomState,
    prev: &[&Pdu],
    sender: &OwnedUserId,
    kind: &str,
    state_key: Option<&str>,
    body: Value,
    ts_offset: u64,
) -> Pdu {
    let version = state.version;
    let depth = prev.iter().map(|p| u64::from(p.depth())).max().unwrap_or(0) + 1;
    let ts = prev
        .iter()
        .map(|p| u64::from(p.origin_server_ts().0))
        .max()
        .unwrap_or(0)
        + ts_offset;
    let mut new = NewPdu {
        room_id: Some(prev[0].room_id().to_owned()),
        sender: sender.clone(),
        event_type: TimelineEventType::from(kind),
        state_key: state_key.map(str::to_owned),
        content: content(body),
        prev_events: prev.iter().map(|p| p.event_id().to_owned()).collect(),
        auth_events: Vec::new(),
        depth: UInt::new(depth).unwrap(),
        origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::new(ts).unwrap()),
        redacts: None,
        v1_ids: None,
    };
    new.auth_events = auth_events_for(version, &new, |kind, key| {
        state.get(kind, key).map(|p| p.event_id().to_owned())
    })
    .unwrap();
    if version.has_origin_chosen_event_ids() {
        let mut reference_hashes = HashMap::new();
        let cited = prev.iter().copied().cloned().chain(
            new.auth_events
                .iter()
                .filter_map(|id| state.event_by_id(id).cloned()),
        );
        for pdu in cited {
            let hash = myelin_crypto::reference_hash(&version.id(), pdu.as_object()).unwrap();
            reference_hashes.insert(pdu.event_id().to_owned(), hash);
        }
        new.v1_ids = Some(V1EventIds {
            event_id: OwnedEventId::try_from(format!("${}:remote.example", rand::random::<u32>()))
                .unwrap(),
            reference_hashes,
        });
    }
    let signed = build_pdu(
        new,
        server_name!("remote.example"),
        &remote_key(),
        &version.id(),
    )
    .unwrap();
    Pdu::from_signed(version, signed).unwrap()
}

/// A message of `sender`'s on `prev`, as `remote.example` builds it.
pub(crate) fn remote_message(
    state: &RoomState,
    prev: &Pdu,
    sender: &OwnedUserId,
    body: &str,
) -> Pdu {
    remote_event(
        state,
        &[prev],
        sender,
        "m.room.message",
        None,
        json!({ "msgtype": "m.text", "body": body }),
        1,
    )
}

/// The tip of the room (its one forward extremity).
pub(crate) fn tip(state: &RoomState) -> Pdu {
    assert_eq!(state.extremities().len(), 1, "the room is a line");
    state.extremities()[0].clone()
}

/// Bob's join, as `remote.example` builds it on the tip of `state`.
pub(crate) fn bob_join(state: &RoomState) -> Pdu {
    remote_event(
        state,
        &[&tip(state)],
        &bob(),
        "m.room.member",
        Some(bob().as_str()),
        json!({ "membership": "join" }),
        1,
    )
}

/// Bob of `remote.example` joins; returns his join.
async fn bob_joins(server: &Server, room_id: &OwnedRoomId) -> Pdu {
    let join = bob_join(&server.state(room_id).await);
    assert_matches!(server.append(&join).await, RemoteOutcome::Accepted);
    join
}

pub(crate) fn backends() -> Vec<bool> {
    let postgres = std::env::var("MYELIN_TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty());
    if postgres {
        vec![false, true]
    } else {
        vec![false]
    }
}

use crate::service::rooms::testing::assert_matches;

#[tokio::test]
async fn a_remote_message_on_the_tip_is_served_and_wakes_local_syncs() {
    for postgres in backends() {
        let server = Server::start(postgres).await;
        let room_id = server.create_room(RoomVersion::V12).await;
        let join = bob_joins(&server, &room_id).await;
        let mut listener = server.notifier.listen(&user("alice"));
        let state = server.state(&room_id).await;
        let message = remote_message(&state, &join, &bob(), "hello");
        assert_matches!(server.append(&message).await, RemoteOutcome::Accepted);
        assert!(
            listener.woken().now_or_never().is_some(),
            "alice's long-poll wakes"
        );
        let timeline = server.timeline(&room_id).await;
        assert_eq!(timeline.last(), Some(&message.event_id().to_owned()));
        assert_eq!(
            server.state(&room_id).await.membership_of(bob().as_str()),
            Some("join")
        );
        // The next local event follows it.
        let reply = server.say(&room_id, "hi").await;
        assert_eq!(reply.prev_events(), [message.event_id().to_owned()]);
        // The same event again is stored once.
        assert_matches!(
            server.append(&message).await,
            RemoteOutcome::AlreadyStored(EventStatus::Accepted)
        );
        let timeline = server.timeline(&room_id).await;
        let copies = timeline
            .iter()
            .filter(|id| **id == message.event_id())
            .count();
        assert_eq!(copies, 1);
        server.stop().await;
    }
}

#[tokio::test]
async fn events_the_rules_forbid_are_rejected_and_never_served() {
    for postgres in backends() {
        let server = Server::start(postgres).await;
        let room_id = server.create_room(RoomVersion::V12).await;
        let join = bob_joins(&server, &room_id).await;
        let joined = server.state(&room_id).await;

        // Carol never joined: her own auth events forbid her message.
        let stranger = remote_message(&joined, &join, &carol(), "let me in");
        assert_matches!(
            server.append(&stranger).await,
            RemoteOutcome::Rejected(Rejection::AuthEvents(_))
        );

        // Bob is banned; a message citing the ban as its prev event (but
        // his join among its auth events) fails against the state before it.
        let ban = server.ban_bob(&room_id).await;
        let after_ban = remote_message(&joined, &ban, &bob(), "still here");
        assert_matches!(
            server.append(&after_ban).await,
            RemoteOutcome::Rejected(Rejection::StateBefore(ref e)) if *e.rule() == AuthRule::SenderMembership
        );

        for rejected in [&stranger, &after_ban] {
            assert!(
                server
                    .storage
                    .event(rejected.event_id())
                    .await
                    .unwrap()
                    .is_none()
            );
            assert_eq!(
                server.status(rejected.event_id()).await,
                Some(EventStatus::Rejected)
            );
            assert!(
                !server
                    .timeline(&room_id)
                    .await
                    .contains(&rejected.event_id().to_owned())
            );
            assert_matches!(
                server.append(rejected).await,
                RemoteOutcome::AlreadyStored(EventStatus::Rejected)
            );
        }
        // Carol's join sent by bob is rejected; her message citing it
        // among its auth events is rejected too.
        let forged_join = remote_event(
            &joined,
            &[&join],
            &bob(),
            "m.room.member",
            Some(carol().as_str()),
            json!({ "membership": "join" }),
            1,
        );
        assert_matches!(
            server.append(&forged_join).await,
            RemoteOutcome::Rejected(Rejection::AuthEvents(_))
        );
        let mut as_carol_sees_it = joined.clone();
        as_carol_sees_it.advance(&forged_join, None, 0);
        let cites_rejected = remote_message(&as_carol_sees_it, &join, &carol(), "trust me");
        assert!(
            cites_rejected
                .auth_events()
                .contains(&forged_join.event_id().to_owned())
        );
        assert_matches!(
            server.append(&cites_rejected).await,
            RemoteOutcome::Rejected(Rejection::AuthEvents(_))
        );
        assert_eq!(
            server.state(&room_id).await.membership_of(carol().as_str()),
            None
        );
        assert_eq!(server.state(&room_id).await.extremities().len(), 1);
        assert_eq!(
            tip(&server.state(&room_id).await).event_id(),
            ban.event_id()
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn an_event_the_current_state_forbids_is_soft_failed() {
    for postgres in backends() {
        let server = Server::start(postgres).await;
        let room_id = server.create_room(RoomVersion::V12).await;
        let join = bob_joins(&server, &room_id).await;
        let joined = server.state(&room_id).await;
        // Bob is banned here while his server, not yet aware, sends on.
        let ban = server.ban_bob(&room_id).await;
        let mut listener = server.notifier.listen(&user("alice"));
        let message = remote_message(&joined, &join, &bob(), "unaware");
        assert_matches!(
            server.append(&message).await,
            RemoteOutcome::SoftFailed(ref e) if *e.rule() == AuthRule::SenderMembership
        );
        assert_eq!(
            server.status(message.event_id()).await,
            Some(EventStatus::SoftFailed)
        );
        assert!(
            server
                .storage
                .event(message.event_id())
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            !server
                .timeline(&room_id)
                .await
                .contains(&message.event_id().to_owned())
        );
        assert!(listener.woken().now_or_never().is_none(), "nobody is woken");
        let state = server.state(&room_id).await;
        assert_eq!(tip(&state).event_id(), ban.event_id(), "not an extremity");
        let next = server.say(&room_id, "x").await;
        assert_eq!(next.prev_events(), [ban.event_id().to_owned()]);
        // A later event of bob's server on the soft-failed one is judged
        // on the state after it (bob joined) and soft-fails too.
        let soft_state = {
            let mut s = joined.clone();
            s.advance(&message, None, 0);
            s
        };
        let follow_up = remote_message(&soft_state, &message, &bob(), "");
        assert_matches!(
            server.append(&follow_up).await,
            RemoteOutcome::SoftFailed(_)
        );
        assert_matches!(
            server.append(&message).await,
            RemoteOutcome::AlreadyStored(EventStatus::SoftFailed)
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn missing_prev_events_are_named() {
    for postgres in backends() {
        let server = Server::start(postgres).await;
        let room_id = server.create_room(RoomVersion::V12).await;
        let join = bob_joins(&server, &room_id).await;
        let state = server.state(&room_id).await;
        // An event of bob's server that this one has not seen...
        let unseen = remote_message(&state, &join, &bob(), "");
        // ...and one on top of it.
        let next = remote_message(&state, &unseen, &bob(), "");
        let missing = server.events.append_remote(next.clone()).await;
        assert_matches!(
            missing,
            Err(RemoteEventError::MissingEvents { ref prev_events, ref auth_events })
                if *prev_events == [unseen.event_id().to_owned()] && auth_events.is_empty()
        );
        assert_eq!(
            server.status(next.event_id()).await,
            None,
            "nothing is stored"
        );
        // Once the missing event arrives, the later one is taken.
        assert_matches!(server.append(&unseen).await, RemoteOutcome::Accepted);
        assert_matches!(server.append(&next).await, RemoteOutcome::Accepted);
        let timeline = server.timeline(&room_id).await;
        assert_eq!(
            &timeline[timeline.len() - 2..],
            [unseen.event_id().to_owned(), next.event_id().to_owned()]
        );
        server.stop().await;
    }
}

/// Another server that learns the room from `origin`: the create event
/// written as it is, then every other event of the room through the
/// remote path, in `origin`'s order.
async fn follow(origin: &Server, room_id: &OwnedRoomId, postgres: bool) -> Server {
    let server = Server::start(postgres).await;
    let version = origin.events.room_version(room_id).await.unwrap();
    let mut events = Vec::new();
    for event_id in origin.timeline(room_id).await {
        events.push(origin.pdu(&event_id).await);
    }
    let create = events.remove(0);
    {
        let slot = server.events.slot(room_id);
        let mut guard = slot.state.lock().await;
        let mut state = RoomState::empty(version);
        let reservation = server.events.stream.reserve();
        let mut pending =
            PendingEvent::advance(&mut state, create, None, reservation.position()).unwrap();
        pending.creates_room_version = Some(version.id().to_string());
        let written = server.events.writer.write(vec![pending]).await.unwrap();
        assert_eq!(written.written, 1);
        drop(reservation);
        *guard = Some(state);
    }
    for pdu in events {
        assert_matches!(server.append(&pdu).await, RemoteOutcome::Accepted);
    }
    server
}

/// Two topics set at once on two servers: the remote one, on a longer
/// fork and later, wins under every state resolution algorithm; both
/// servers (the one that saw its own topic first, and one that saw the
/// remote topic first) end with the same state, and the next local event
/// cites both forks.
async fn conflicting_topics_resolve_alike(version: RoomVersion) {
    for postgres in backends() {
        let here = Server::start(postgres).await;
        let room_id = here.create_room(version).await;
        let join = bob_joins(&here, &room_id).await;
        let fork_point = here.state(&room_id).await;
        let observer = follow(&here, &room_id, postgres).await;

        let local_topic = here
            .send(
                &room_id,
                &user("alice"),
                "m.room.topic",
                Some(""),
                json!({ "topic": "local" }),
            )
            .await;
        // Bob's fork is longer (deeper) and later than alice's topic.
        let bob_message = remote_event(
            &fork_point,
            &[&join],
            &bob(),
            "m.room.message",
            None,
            json!({}),
            3_600_000,
        );
        let remote_topic = remote_event(
            &fork_point,
            &[&bob_message],
            &bob(),
            "m.room.topic",
            Some(""),
            json!({ "topic": "remote" }),
            1,
        );
        for pdu in [&bob_message, &remote_topic] {
            assert_matches!(here.append(pdu).await, RemoteOutcome::Accepted);
        }
        // The observer sees bob's fork first, then alice's topic.
        for pdu in [&bob_message, &remote_topic, &local_topic] {
            assert_matches!(observer.append(pdu).await, RemoteOutcome::Accepted);
        }

        let topic = |state: &RoomState| {
            state
                .get(&StateEventType::RoomTopic, "")
                .map(|p| p.event_id().to_owned())
        };
        let resolved = here.state(&room_id).await;
        let observed = observer.state(&room_id).await;
        assert_eq!(
            topic(&resolved),
            Some(remote_topic.event_id().to_owned()),
            "{version}"
        );
        assert_eq!(
            resolved.state_map(),
            observed.state_map(),
            "{version}: both orders agree"
        );
        let mut tips: Vec<_> = resolved
            .extremities()
            .iter()
            .map(|p| p.event_id().to_owned())
            .collect();
        tips.sort();
        let mut expected = vec![
            local_topic.event_id().to_owned(),
            remote_topic.event_id().to_owned(),
        ];
        expected.sort();
        assert_eq!(tips, expected, "{version}: both forks are extremities");

        // The resolved state is what storage holds as the room's state.
        let reloaded = Server {
            events: Arc::new(RoomEvents::new(
                here.storage.clone(),
                here.events.keys.clone(),
                here.notifier.clone(),
                Arc::new(Stream::new(
                    here.storage.max_stream_position().await.unwrap(),
                )),
                16,
                CommittedFeed::new().0,
            )),
            storage: here.storage.clone(),
            notifier: here.notifier.clone(),
            database: None,
        };
        assert_eq!(
            reloaded.state(&room_id).await.state_map(),
            resolved.state_map()
        );

        // The next local event joins the forks, on the resolved state.
        let merge = here.say(&room_id, "merge").await;
        let mut cited = merge.prev_events().to_vec();
        cited.sort();
        assert_eq!(cited, expected, "{version}");
        let state = here.state(&room_id).await;
        assert_eq!(tip(&state).event_id(), merge.event_id());
        assert_eq!(topic(&state), Some(remote_topic.event_id().to_owned()));
        assert_matches!(observer.append(&merge).await, RemoteOutcome::Accepted);
        assert_eq!(
            observer.state(&room_id).await.state_map(),
            state.state_map()
        );
        observer.stop().await;
        here.stop().await;
    }
}

#[tokio::test]
async fn forks_resolve_alike_in_room_version_1() {
    conflicting_topics_resolve_alike(RoomVersion::V1).await;
}

#[tokio::test]
async fn forks_resolve_alike_in_room_version_10() {
    conflicting_topics_resolve_alike(RoomVersion::V10).await;
}

#[tokio::test]
async fn forks_resolve_alike_in_room_version_12() {
    conflicting_topics_resolve_alike(RoomVersion::V12).await;
}

/// A ban here against the banned moderator's state change on his own
/// server's fork: the change is allowed by the state before it, not by the
/// current state, so it is soft-failed and never joins the state.
#[tokio::test]
async fn a_banned_moderators_concurrent_state_change_is_soft_failed() {
    for postgres in backends() {
        let server = Server::start(postgres).await;
        let room_id = server.create_room(RoomVersion::V12).await;
        let join = bob_joins(&server, &room_id).await;
        let fork_point = server.state(&room_id).await;
        server.ban_bob(&room_id).await;
        // Bob (power 50) renames the room on his fork.
        let change = remote_event(
            &fork_point,
            &[&join],
            &bob(),
            "m.room.name",
            Some(""),
            json!({ "name": "bob's" }),
            1,
        );
        // Allowed before it, not now that bob is banned: soft-failed.
        assert_matches!(server.append(&change).await, RemoteOutcome::SoftFailed(_));
        let state = server.state(&room_id).await;
        assert_eq!(state.membership_of(bob().as_str()), Some("ban"));
        assert!(
            state.get(&StateEventType::RoomName, "").is_none(),
            "the name is not set"
        );
        assert_eq!(tip(&state).prev_events(), [join.event_id().to_owned()]);
        server.stop().await;
    }
}

#[tokio::test]
async fn remote_events_breaking_the_e2e_only_policy_are_withheld() {
    for postgres in backends() {
        let server = Server::start(postgres).await;
        let room_id = server.create_room(RoomVersion::V12).await;
        let alice = user("alice");
        let megolm = json!({ "algorithm": "m.megolm.v1.aes-sha2" });
        server
            .send(&room_id, &alice, "m.room.encryption", Some(""), megolm)
            .await;
        let policy = json!({ "e2e_required": true });
        server
            .send(&room_id, &alice, "org.myelin.room.policy", Some(""), policy)
            .await;
        let join = bob_joins(&server, &room_id).await;

        // Plaintext from bob's server is kept out of the room here.
        let state = server.state(&room_id).await;
        let plaintext = remote_message(&state, &join, &bob(), "in the clear");
        assert_matches!(
            server.append(&plaintext).await,
            RemoteOutcome::PolicyWithheld(_)
        );
        assert!(
            !server
                .timeline(&room_id)
                .await
                .contains(&plaintext.event_id().to_owned())
        );
        assert_eq!(
            server.state(&room_id).await.extremities()[0].event_id(),
            join.event_id()
        );

        // So is a weaker encryption setting, which bob's power level allows.
        let downgrade = remote_event(
            &state,
            &[&join],
            &bob(),
            "m.room.encryption",
            Some(""),
            json!({ "algorithm": "m.olm.v1.curve25519-aes-sha2" }),
            2,
        );
        assert_matches!(
            server.append(&downgrade).await,
            RemoteOutcome::PolicyWithheld(_)
        );
        let encryption = server
            .state(&room_id)
            .await
            .get(&StateEventType::RoomEncryption, "")
            .map(|pdu| pdu.content().get().to_owned());
        assert_eq!(
            encryption.as_deref(),
            Some(r#"{"algorithm":"m.megolm.v1.aes-sha2"}"#)
        );

        // Ciphertext is taken.
        let ciphertext = remote_event(
            &state,
            &[&join],
            &bob(),
            "m.room.encrypted",
            None,
            json!({ "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "sender_key": "k", "session_id": "s", "device_id": "D" }),
            3,
        );
        assert_matches!(server.append(&ciphertext).await, RemoteOutcome::Accepted);
        assert_eq!(
            server.timeline(&room_id).await.last(),
            Some(&ciphertext.event_id().to_owned())
        );
        server.stop().await;
    }
}

/// A room joined through another server: the state and auth chain the
/// resident answers with are outliers (found by id, never in the
/// timeline), the join is the first timeline event, the state before it
/// is the room's state before its first event, a restart loads the state
/// from the outliers, and the room's next events are taken on the join.
#[tokio::test]
async fn a_room_imported_from_a_join_takes_the_next_events() {
    for postgres in backends() {
        for version in [RoomVersion::V10, RoomVersion::V12] {
            let resident = Server::start(postgres).await;
            let room_id = resident.create_room(version).await;
            resident.say(&room_id, "before bob").await;
            let join = bob_joins(&resident, &room_id).await;
            let (state, auth_chain) = resident
                .events
                .state_before_membership(&join)
                .await
                .unwrap();
            assert!(
                state
                    .iter()
                    .all(|pdu| pdu.state_key() != Some(bob().as_str())),
                "the state before bob's first join has no member event of his"
            );

            let joiner = Server::start(postgres).await;
            joiner
                .events
                .import_joined_room(JoinedState {
                    state,
                    auth_chain,
                    join: join.clone(),
                })
                .await
                .unwrap();
            assert_eq!(
                joiner.timeline(&room_id).await,
                [join.event_id().to_owned()]
            );
            let resident_state = resident.state(&room_id).await;
            let create = resident_state.get(&StateEventType::RoomCreate, "").unwrap();
            assert_eq!(
                joiner.status(create.event_id()).await,
                Some(EventStatus::Outlier)
            );
            assert!(
                joiner
                    .storage
                    .state_group_before(&room_id, StreamPosition(1))
                    .await
                    .unwrap()
                    .is_some(),
                "the state before the join is the room's state before its first event"
            );

            // A restart loads the state from the outliers.
            let keys = ServerKeys::load_or_generate(
                joiner.storage.clone(),
                server_name!("a.test").to_owned(),
            )
            .await
            .unwrap();
            let reopened = RoomEvents::new(
                joiner.storage.clone(),
                Arc::new(keys),
                Arc::new(Notifier::default()),
                Arc::new(Stream::new(
                    joiner.storage.max_stream_position().await.unwrap(),
                )),
                16,
                CommittedFeed::new().0,
            );
            let state = reopened.current_state(&room_id).await.unwrap().unwrap();
            assert_eq!(state.membership_of(bob().as_str()), Some("join"));
            assert_eq!(state.membership_of(user("alice").as_str()), Some("join"));
            assert_eq!(state.len(), resident_state.len());

            // The room's next event, on the join, is taken.
            let message = remote_message(&state, &join, &bob(), "after the join");
            assert_matches!(
                reopened.append_remote(message.clone()).await.unwrap(),
                RemoteOutcome::Accepted
            );
            assert_eq!(
                joiner.timeline(&room_id).await,
                [join.event_id().to_owned(), message.event_id().to_owned()]
            );
            resident.stop().await;
            joiner.stop().await;
        }
    }
}
