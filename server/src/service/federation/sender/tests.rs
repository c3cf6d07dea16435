//! The sender against a fake destination that records transactions and
//! fails on demand, on SQLite and, when `MYELIN_TEST_DATABASE_URL` is set,
//! on PostgreSQL. Remote members join through the remote write path, with
//! events signed as `remote.example`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use ruma::{OwnedRoomId, OwnedServerName, ServerName, device_id, server_name};
use serde_json::{Value, json};
use tokio::{sync::Notify, time::Instant};

use super::{Backoff, FederationSender, TransactionSender};
use crate::{
    config::Config,
    service::{
        accounts::Accounts,
        e2ee::{DeviceLists, E2eeKeys, keys::KeysUpload},
        to_device::{ToDevice, ToDeviceLimits},
    },
    service::{
        committed::CommittedFeed,
        federation::FederationError,
        notifier::Notifier,
        room_events::{
            RemoteOutcome, RoomEvents,
            remote_tests::{backends, bob, bob_join, local, remote_message, tip},
        },
        rooms::{testing::user, version::RoomVersion},
        server_keys::ServerKeys,
        stream::Stream,
    },
    storage::{
        self, IssuedTokens, Millis, NewAccount, Receipt, Session, Storage, TokenHash,
        testing::TestDatabase,
    },
};

/// The wait after a first failure in these tests.
const INITIAL_BACKOFF: Duration = Duration::from_millis(20);

/// How long a test waits for a delivery before it fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// One attempt at a transaction.
#[derive(Debug, Clone)]
struct Attempt {
    destination: OwnedServerName,
    txn_id: String,
    body: Value,
    at: Instant,
    is_acknowledged: bool,
}

/// Destinations that record every attempt, and fail the next `failures`.
#[derive(Default)]
struct FakeDestinations {
    attempts: Mutex<Vec<Attempt>>,
    failures: AtomicU32,
    changed: Notify,
}

#[async_trait]
impl TransactionSender for FakeDestinations {
    async fn send_transaction(
        &self,
        destination: &ServerName,
        txn_id: &str,
        body: &Value,
    ) -> Result<(), FederationError> {
        let is_acknowledged = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err();
        self.attempts.lock().unwrap().push(Attempt {
            destination: destination.to_owned(),
            txn_id: txn_id.to_owned(),
            body: body.clone(),
            at: Instant::now(),
            is_acknowledged,
        });
        self.changed.notify_waiters();
        if is_acknowledged {
            Ok(())
        } else {
            Err(FederationError::Unreachable("down".to_owned()))
        }
    }
}

impl FakeDestinations {
    /// A destination that fails every attempt.
    fn down() -> Arc<Self> {
        let fake = Self::default();
        fake.failures.store(u32::MAX, Ordering::SeqCst);
        Arc::new(fake)
    }

    /// Waits until `done` holds for the attempts so far.
    async fn until(&self, what: &str, done: impl Fn(&[Attempt]) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let attempts = self.attempts.lock().unwrap().clone();
            if done(&attempts) {
                return;
            }
            assert!(
                tokio::time::timeout_at(deadline, changed).await.is_ok(),
                "timed out waiting for {what}; attempts: {:#?}",
                self.attempts.lock().unwrap()
            );
        }
    }

    /// The acknowledged transactions to `destination`, in order.
    fn acknowledged(&self, destination: &str) -> Vec<Value> {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.is_acknowledged && a.destination == destination)
            .map(|a| a.body.clone())
            .collect()
    }

    /// The message bodies `destination` acknowledged, in order.
    fn bodies(&self, destination: &str) -> Vec<String> {
        self.acknowledged(destination)
            .iter()
            .flat_map(|body| body["pdus"].as_array().cloned().unwrap_or_default())
            .filter_map(|pdu| pdu["content"]["body"].as_str().map(str::to_owned))
            .collect()
    }

    /// The EDUs of `edu_type` `destination` acknowledged, in order.
    fn edus(&self, destination: &str, edu_type: &str) -> Vec<Value> {
        self.acknowledged(destination)
            .iter()
            .flat_map(|body| body["edus"].as_array().cloned().unwrap_or_default())
            .filter(|edu| edu["edu_type"] == edu_type)
            .map(|edu| edu["content"].clone())
            .collect()
    }
}

/// `a.test`, its sender started, sending to `destinations`.
struct Server {
    storage: Arc<dyn Storage>,
    events: Arc<RoomEvents>,
    to_device: ToDevice,
    keys: E2eeKeys,
    device_lists: Arc<DeviceLists>,
    sender: FederationSender,
}

impl Server {
    async fn open(database: &TestDatabase, destinations: Arc<FakeDestinations>) -> Self {
        let storage = storage::open(&database.location).await.unwrap();
        alice_with_a_device(&*storage).await;
        let keys = ServerKeys::load_or_generate(storage.clone(), server_name!("a.test").to_owned())
            .await
            .unwrap();
        let stream = Arc::new(Stream::new(storage.max_stream_position().await.unwrap()));
        let notifier = Arc::new(Notifier::default());
        let events = Arc::new(RoomEvents::new(
            storage.clone(),
            Arc::new(keys),
            notifier.clone(),
            stream.clone(),
            16,
            CommittedFeed::new().0,
        ));
        let sender = FederationSender::new(
            storage.clone(),
            stream.clone(),
            server_name!("a.test").to_owned(),
            destinations,
            Backoff {
                initial: INITIAL_BACKOFF,
                max: INITIAL_BACKOFF * 8,
            },
        );
        sender.start().await.unwrap();
        let device_lists = Arc::new(DeviceLists::new(
            storage.clone(),
            stream.clone(),
            notifier.clone(),
            sender.clone(),
            1000,
        ));
        let accounts = Accounts::new(
            storage.clone(),
            server_name!("a.test").to_owned(),
            &Config::default(),
            device_lists.clone(),
        )
        .unwrap();
        let keys = E2eeKeys::new(
            storage.clone(),
            device_lists.clone(),
            Arc::new(accounts),
            100,
            100,
        );
        let to_device = ToDevice::new(
            storage.clone(),
            stream,
            notifier,
            sender.clone(),
            ToDeviceLimits {
                max_pending: 100,
                max_pending_per_sender: 100,
                max_message_bytes: 65_536,
            },
        );
        Self {
            storage,
            events,
            to_device,
            keys,
            device_lists,
            sender,
        }
    }

    /// Stops sending and closes the database, as a shutdown does.
    async fn stop(self) {
        self.sender.stop();
        self.storage.close().await;
    }

    /// A public room of alice's that bob of `remote.example` joined.
    async fn room_with_bob(&self) -> OwnedRoomId {
        let alice = user("alice");
        let version = RoomVersion::V10;
        let room_id = self
            .events
            .create_room(
                version,
                Some(OwnedRoomId::try_from(format!("!{}:a.test", rand::random::<u32>())).unwrap()),
                local(
                    &alice,
                    "m.room.create",
                    Some(""),
                    json!({ "room_version": "10", "creator": alice }),
                ),
            )
            .await
            .unwrap();
        self.send(
            &room_id,
            "m.room.member",
            Some(alice.as_str()),
            json!({ "membership": "join" }),
        )
        .await;
        self.send(
            &room_id,
            "m.room.join_rules",
            Some(""),
            json!({ "join_rule": "public" }),
        )
        .await;
        let state = self.events.current_state(&room_id).await.unwrap().unwrap();
        let outcome = self.events.append_remote(bob_join(&state)).await.unwrap();
        assert!(matches!(outcome, RemoteOutcome::Accepted), "{outcome:?}");
        room_id
    }

    /// An event of alice's.
    async fn send(&self, room_id: &OwnedRoomId, kind: &str, state_key: Option<&str>, body: Value) {
        self.events
            .send(room_id, local(&user("alice"), kind, state_key, body))
            .await
            .unwrap();
    }

    /// Alice says `body`.
    async fn say(&self, room_id: &OwnedRoomId, body: &str) {
        self.send(
            room_id,
            "m.room.message",
            None,
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await;
    }
}

/// Alice's account and device `ALICEDEVICE`, once.
async fn alice_with_a_device(storage: &dyn Storage) {
    if storage.account(&user("alice")).await.unwrap().is_some() {
        return;
    }
    let now = Millis::now();
    storage
        .create_account(&NewAccount {
            user_id: user("alice"),
            password_hash: String::new(),
            is_admin: false,
            is_guest: false,
            created: now,
        })
        .await
        .unwrap();
    let session = Session {
        user_id: user("alice"),
        device_id: device_id!("ALICEDEVICE").to_owned(),
        is_guest: false,
    };
    let tokens = IssuedTokens {
        access: TokenHash([7; 32]),
        access_expires: None,
        refresh: None,
    };
    storage
        .open_session(&session, None, &tokens, now)
        .await
        .unwrap();
}

// Several threads, as in the server: SQLite's message writer blocks its
// thread for a commit, which must not stall the sender's own writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_events_go_to_the_servers_of_the_room_only() {
    for postgres in backends() {
        let database = TestDatabase::create(postgres).await;
        let fake = Arc::new(FakeDestinations::default());
        let server = Server::open(&database, fake.clone()).await;
        let room_id = server.room_with_bob().await;
        server.say(&room_id, "hello bob").await;
        // A ban reaches its target's server, where nobody is joined.
        server
            .send(
                &room_id,
                "m.room.member",
                Some("@dave:third.example"),
                json!({ "membership": "ban" }),
            )
            .await;
        server.say(&room_id, "after the ban").await;
        fake.until("bob's server to get both messages", |_| {
            fake.bodies("remote.example").len() == 2
        })
        .await;
        assert_eq!(
            fake.bodies("remote.example"),
            ["hello bob", "after the ban"]
        );
        fake.until("the ban", |_| {
            !fake.acknowledged("third.example").is_empty()
        })
        .await;
        let to_third: Vec<Value> = fake
            .acknowledged("third.example")
            .iter()
            .flat_map(|body| body["pdus"].as_array().cloned().unwrap())
            .collect();
        assert_eq!(to_third.len(), 1, "only the ban: {to_third:?}");
        assert_eq!(to_third[0]["state_key"], "@dave:third.example");
        for body in fake.acknowledged("remote.example") {
            assert_eq!(body["origin"], "a.test");
            assert!(body["origin_server_ts"].is_u64());
            for pdu in body["pdus"].as_array().unwrap() {
                assert_eq!(pdu["sender"], "@alice:a.test", "only local events");
            }
        }
        let destinations: std::collections::BTreeSet<String> = fake
            .attempts
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.destination.to_string())
            .collect();
        assert_eq!(
            destinations.into_iter().collect::<Vec<_>>(),
            ["remote.example", "third.example"],
            "never this server, nor anyone else"
        );
        database.remove().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_the_rooms_acl_denies_get_nothing_more() {
    for postgres in backends() {
        let database = TestDatabase::create(postgres).await;
        let fake = Arc::new(FakeDestinations::default());
        let server = Server::open(&database, fake.clone()).await;
        let room_id = server.room_with_bob().await;
        server.say(&room_id, "before the acl").await;
        server
            .send(
                &room_id,
                "m.room.server_acl",
                Some(""),
                json!({ "allow": ["*"], "deny": ["remote.example"] }),
            )
            .await;
        server.say(&room_id, "while denied").await;
        // Lifted again: what follows reaches bob's server, in order, so the
        // message sent while it was denied was passed over, not delayed.
        server
            .send(
                &room_id,
                "m.room.server_acl",
                Some(""),
                json!({ "allow": ["*"] }),
            )
            .await;
        server.say(&room_id, "after the acl").await;
        fake.until("the message after the acl", |_| {
            fake.bodies("remote.example").len() >= 2
        })
        .await;
        assert_eq!(
            fake.bodies("remote.example"),
            ["before the acl", "after the acl"]
        );
        database.remove().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_users_own_events_are_not_sent_back() {
    for postgres in backends() {
        let database = TestDatabase::create(postgres).await;
        let fake = Arc::new(FakeDestinations::default());
        let server = Server::open(&database, fake.clone()).await;
        let room_id = server.room_with_bob().await;
        let state = server
            .events
            .current_state(&room_id)
            .await
            .unwrap()
            .unwrap();
        let message = remote_message(&state, &tip(&state), &bob(), "from bob");
        let outcome = server.events.append_remote(message).await.unwrap();
        assert!(matches!(outcome, RemoteOutcome::Accepted));
        server.say(&room_id, "from alice").await;
        fake.until("alice's message", |_| {
            !fake.bodies("remote.example").is_empty()
        })
        .await;
        assert_eq!(fake.bodies("remote.example"), ["from alice"]);
        // Nor is bob's join, the event that made his server a destination.
        let senders: Vec<Value> = fake
            .acknowledged("remote.example")
            .iter()
            .flat_map(|body| body["pdus"].as_array().cloned().unwrap())
            .map(|pdu| pdu["sender"].clone())
            .collect();
        assert_eq!(senders, ["@alice:a.test"]);
        database.remove().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_goes_in_transactions_of_at_most_50_pdus() {
    for postgres in backends() {
        let database = TestDatabase::create(postgres).await;
        let fake = FakeDestinations::down();
        let server = Server::open(&database, fake.clone()).await;
        let room_id = server.room_with_bob().await;
        for n in 0..120 {
            server.say(&room_id, &format!("m{n}")).await;
        }
        fake.failures.store(0, Ordering::SeqCst);
        fake.until("all 120 messages", |_| {
            fake.bodies("remote.example").len() >= 120
        })
        .await;
        let expected: Vec<String> = (0..120).map(|n| format!("m{n}")).collect();
        assert_eq!(
            fake.bodies("remote.example"),
            expected,
            "each once, in order"
        );
        let sizes: Vec<usize> = fake
            .acknowledged("remote.example")
            .iter()
            .map(|body| body["pdus"].as_array().unwrap().len())
            .collect();
        assert!(sizes.iter().all(|size| *size <= 50), "{sizes:?}");
        assert!(
            sizes.contains(&50),
            "the backlog fills transactions: {sizes:?}"
        );
        database.remove().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_gets_the_same_transaction_with_growing_delays() {
    for postgres in backends() {
        let database = TestDatabase::create(postgres).await;
        let fake = Arc::new(FakeDestinations::default());
        let server = Server::open(&database, fake.clone()).await;
        let room_id = server.room_with_bob().await;
        fake.failures.store(3, Ordering::SeqCst);
        server.say(&room_id, "first").await;
        fake.until("the first acknowledgement", |attempts| {
            attempts.iter().any(|a| a.is_acknowledged)
        })
        .await;
        server.say(&room_id, "second").await;
        server.say(&room_id, "third").await;
        fake.until("every message", |_| {
            fake.bodies("remote.example").len() == 3
        })
        .await;
        let attempts = fake.attempts.lock().unwrap().clone();
        let first: Vec<&Attempt> = attempts.iter().take(4).collect();
        assert!(first.iter().all(|a| a.txn_id == first[0].txn_id), "one id");
        assert!(first.iter().all(|a| a.body == first[0].body), "one content");
        assert_eq!(
            first.iter().map(|a| a.is_acknowledged).collect::<Vec<_>>(),
            [false, false, false, true]
        );
        for (n, pair) in first.windows(2).enumerate() {
            let waited = pair[1].at - pair[0].at;
            let minimum = INITIAL_BACKOFF * 2_u32.pow(u32::try_from(n).unwrap());
            assert!(waited >= minimum, "wait {n}: {waited:?} < {minimum:?}");
        }
        assert_eq!(fake.bodies("remote.example"), ["first", "second", "third"]);
        assert!(
            attempts[4..].iter().all(|a| a.txn_id != first[0].txn_id),
            "later transactions have other ids"
        );
        database.remove().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_down_destination_missed_goes_out_after_a_restart() {
    for postgres in backends() {
        let database = TestDatabase::create(postgres).await;
        let down = FakeDestinations::down();
        let server = Server::open(&database, down.clone()).await;
        let room_id = server.room_with_bob().await;
        server.say(&room_id, "while down").await;
        let mut messages = BTreeMap::new();
        messages.insert(
            bob(),
            BTreeMap::from([("BOBDEVICE".to_owned(), r#"{"secret":"s"}"#.to_owned())]),
        );
        let refused = server
            .to_device
            .send(
                &user("alice"),
                device_id!("ALICEDEVICE"),
                "m.room.encrypted",
                "txn1",
                messages,
            )
            .await
            .unwrap();
        assert!(refused.is_empty());
        down.until("an attempt", |attempts| !attempts.is_empty())
            .await;
        server.stop().await;

        let up = Arc::new(FakeDestinations::default());
        let restarted = Server::open(&database, up.clone()).await;
        up.until("the missed message and to-device", |_| {
            !up.bodies("remote.example").is_empty()
                && !up.edus("remote.example", "m.direct_to_device").is_empty()
        })
        .await;
        assert_eq!(up.bodies("remote.example"), ["while down"]);
        let to_device = up.edus("remote.example", "m.direct_to_device");
        let message_id = to_device[0]["message_id"].clone();
        assert!(message_id.is_string());
        assert_eq!(
            to_device,
            [json!({
                "sender": "@alice:a.test",
                "type": "m.room.encrypted",
                "message_id": message_id,
                "messages": { "@bob:remote.example": { "BOBDEVICE": { "secret": "s" } } },
            })]
        );
        // Acknowledged: the to-device message is not sent again.
        restarted.say(&room_id, "later").await;
        up.until("the next message", |_| {
            up.bodies("remote.example").len() == 2
        })
        .await;
        assert_eq!(up.edus("remote.example", "m.direct_to_device").len(), 1);
        database.remove().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_public_receipts_go_to_the_servers_of_the_room() {
    for postgres in backends() {
        let database = TestDatabase::create(postgres).await;
        let fake = Arc::new(FakeDestinations::default());
        let server = Server::open(&database, fake.clone()).await;
        let room_id = server.room_with_bob().await;
        let members = server.events.joined_members(&room_id).await.unwrap();
        let alice = user("alice");
        server.sender.typing(&room_id, &alice, true, &members);
        // A remote user's typing is never sent on.
        server.sender.typing(&room_id, &bob(), true, &members);
        let mut receipt = Receipt {
            room_id: room_id.clone(),
            receipt_type: "m.read.private".to_owned(),
            user_id: alice.to_string(),
            thread_id: String::new(),
            event_id: "$read:a.test".to_owned(),
            ts: 1234,
        };
        server
            .sender
            .read_receipt(&receipt, &members)
            .await
            .unwrap();
        receipt.receipt_type = "m.read".to_owned();
        server
            .sender
            .read_receipt(&receipt, &members)
            .await
            .unwrap();
        fake.until("typing and the receipt", |_| {
            !fake.edus("remote.example", "m.typing").is_empty()
                && !fake.edus("remote.example", "m.receipt").is_empty()
        })
        .await;
        assert_eq!(
            fake.edus("remote.example", "m.typing"),
            [json!({ "room_id": room_id, "user_id": alice, "typing": true })]
        );
        assert_eq!(
            fake.edus("remote.example", "m.receipt"),
            [json!({ room_id.as_str(): { "m.read": { "@alice:a.test": {
                "event_ids": ["$read:a.test"],
                "data": { "ts": 1234 },
            } } } })],
            "the public receipt only"
        );
        database.remove().await;
    }
}

/// `ALICEDEVICE`'s keys, signed by a fresh Olm account.
fn alice_device_keys() -> Value {
    let account = myelin_crypto::olm::Account::new();
    let identity = account.identity_keys();
    let mut keys = json!({
        "user_id": "@alice:a.test",
        "device_id": "ALICEDEVICE",
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            "ed25519:ALICEDEVICE": identity.ed25519.to_base64(),
            "curve25519:ALICEDEVICE": identity.curve25519.to_base64(),
        },
    });
    account
        .sign_json(
            "@alice:a.test",
            "ALICEDEVICE",
            keys.as_object_mut().unwrap(),
        )
        .unwrap();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_changes_go_to_the_servers_sharing_a_room_as_a_chain() {
    for postgres in backends() {
        let database = TestDatabase::create(postgres).await;
        let fake = Arc::new(FakeDestinations::default());
        let server = Server::open(&database, fake.clone()).await;
        server.room_with_bob().await;
        let session = Session {
            user_id: user("alice"),
            device_id: device_id!("ALICEDEVICE").to_owned(),
            is_guest: false,
        };
        let device_keys = alice_device_keys();
        let upload = KeysUpload {
            device_keys: Some(device_keys.to_string()),
            one_time_keys: Vec::new(),
            fallback_keys: Vec::new(),
        };
        server.keys.upload(&session, upload).await.unwrap();
        server
            .device_lists
            .devices_deleted(&user("alice"), &[device_id!("ALICEDEVICE").to_owned()])
            .await
            .unwrap();
        fake.until("both updates", |_| {
            fake.edus("remote.example", "m.device_list_update").len() == 2
        })
        .await;
        let updates = fake.edus("remote.example", "m.device_list_update");
        let added = &updates[0];
        assert_eq!(added["user_id"], "@alice:a.test");
        assert_eq!(added["device_id"], "ALICEDEVICE");
        assert_eq!(added["deleted"], false);
        assert_eq!(added["keys"], device_keys);
        let deleted = &updates[1];
        assert_eq!(deleted["deleted"], true);
        assert!(deleted.get("keys").is_none());
        assert!(deleted["stream_id"].as_i64() > added["stream_id"].as_i64());
        assert_eq!(
            deleted["prev_id"],
            json!([added["stream_id"]]),
            "each change names the one before"
        );
        // A server that fetches the list learns where the chain stands.
        let (_, stream_id) = server
            .keys
            .devices_for_server(&user("alice"))
            .await
            .unwrap();
        assert_eq!(Some(stream_id.0), deleted["stream_id"].as_i64());
        database.remove().await;
    }
}
