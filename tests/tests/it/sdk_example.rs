//! The terminal example client (`client-sdk/examples/chat.rs`) driven as a
//! user would drive it: two processes register, create an E2E-only room,
//! invite, join, and chat; each line they print must say how the message
//! was protected, and trusting a device (by hand, or by comparing emoji
//! with `/verify`) must show in the next message.
//!
//! The example binary is built by `cargo test --workspace` (which builds
//! every example) next to this test binary.

use std::{path::PathBuf, process::Stdio, time::Duration};

use myelin_tests::{Backend, PASSWORD, TestServer, backend_tests};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

backend_tests!(
    two_example_clients_chat_end_to_end_encrypted,
    history_restored_from_the_backup_shows_as_it_did_on_the_first_device,
    a_new_device_recovers_identity_and_history_with_the_recovery_key,
    two_example_clients_verify_each_other_by_emoji
);

/// How long one expected line may take to appear.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// One running example client, read line by line.
struct ChatProcess {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl ChatProcess {
    /// Starts the example for `localpart`, registering it.
    fn register(server: &TestServer, localpart: &'static str, store: PathBuf) -> Self {
        Self::start(server, localpart, store, true)
    }

    /// Starts the example for `localpart`, registered before, as a new
    /// device (a new store).
    fn login(server: &TestServer, localpart: &'static str, store: PathBuf) -> Self {
        Self::start(server, localpart, store, false)
    }

    fn start(server: &TestServer, localpart: &'static str, store: PathBuf, register: bool) -> Self {
        let mut command = Command::new(example_binary());
        if register {
            command.env("MYELIN_REGISTER", "1");
        }
        let mut child = command
            .args([&server.base_url, localpart])
            .arg(store)
            .env("MYELIN_PASSWORD", PASSWORD)
            .env("MYELIN_PASSPHRASE", "example store passphrase")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the chat example");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            name: localpart,
            child,
            stdin,
            stdout,
        }
    }

    async fn type_line(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the example");
    }

    /// Reads output until a line satisfies `wanted`, and returns it.
    async fn expect(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(LINE_TIMEOUT, async {
            while let Some(line) = self.stdout.next_line().await.expect("read output") {
                if wanted(&line) {
                    return Some(line);
                }
                seen.push(line);
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("{} never printed {what}; it printed: {seen:#?}", self.name),
        }
    }

    /// Reads up to the line starting with `announcement`, and returns the
    /// recovery key printed on the next line.
    async fn recovery_key_after(&mut self, announcement: &str) -> String {
        self.expect(announcement, |l| l.starts_with(announcement))
            .await;
        self.expect("the recovery key", |l| l.starts_with("  "))
            .await
            .trim()
            .to_owned()
    }

    async fn quit(mut self) {
        self.type_line("/quit").await;
        let status = tokio::time::timeout(LINE_TIMEOUT, self.child.wait())
            .await
            .expect("the example quits")
            .expect("wait for the example");
        assert!(status.success(), "{} exited with {status}", self.name);
    }
}

/// `target/<profile>/examples/chat`, beside this test's `deps/` directory.
fn example_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("test binary path");
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile directory");
    let binary = profile_dir
        .join("examples")
        .join(format!("chat{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds the examples",
        binary.display()
    );
    binary
}

async fn two_example_clients_chat_end_to_end_encrypted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let stores = tempfile::tempdir().expect("store dir");
    let mut alice = ChatProcess::register(&server, "alice", stores.path().join("alice.db"));
    let mut bob = ChatProcess::register(&server, "bob", stores.path().join("bob.db"));
    alice
        .expect("its login", |l| l.starts_with("* logged in as @alice"))
        .await;
    bob.expect("its login", |l| l.starts_with("* logged in as @bob"))
        .await;
    let (alice_id, bob_id) = (server.user_id("alice"), server.user_id("bob"));

    alice.type_line("/create secrets").await;
    let created = alice
        .expect("the new room", |l| l.starts_with("* created !"))
        .await;
    assert!(created.ends_with("(E2eOnly)"), "{created}");
    let room_id = created
        .split_whitespace()
        .nth(2)
        .expect("room id")
        .to_owned();

    alice.type_line(&format!("/invite {bob_id}")).await;
    bob.expect("the invite", |l| {
        l.starts_with(&format!("* invited to {room_id}"))
    })
    .await;
    bob.type_line(&format!("/join {room_id}")).await;
    bob.expect("the join", |l| l == format!("* joined {room_id}"))
        .await;
    // Alice's client shares the room key with the members it knows of:
    // wait until her sync has seen Bob join.
    alice
        .expect("Bob's join", |l| {
            l == format!("[{room_id}] {bob_id} set m.room.member")
        })
        .await;

    alice.type_line("hello bob").await;
    let line = bob
        .expect("Alice's message", |l| l.contains("hello bob"))
        .await;
    assert!(
        line.contains(&alice_id) && line.contains("[e2e unverified, device "),
        "an unverified sender's message says so: {line}"
    );
    let alice_device = line
        .split("device ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(']'))
        .expect("the sending device")
        .to_owned();

    // Bob compares the fingerprint out of band and trusts the device.
    bob.type_line(&format!("/devices {alice_id}")).await;
    let device = bob
        .expect("Alice's device", |l| l.contains(&alice_device))
        .await;
    assert!(
        device.contains("fingerprint ") && device.ends_with("Unset"),
        "{device}"
    );
    bob.type_line(&format!("/trust {alice_id} {alice_device} verified"))
        .await;
    bob.expect("the trust change", |l| l.ends_with("is now Verified"))
        .await;
    alice.type_line("now you know it is me").await;
    let line = bob
        .expect("Alice's second message", |l| {
            l.contains("now you know it is me")
        })
        .await;
    assert!(line.contains("[e2e verified, device "), "{line}");

    bob.type_line("hi alice").await;
    let line = alice
        .expect("Bob's reply", |l| l.contains("hi alice"))
        .await;
    assert!(line.contains(&bob_id) && line.contains("[e2e "), "{line}");

    // History fetched with /messages is decrypted too, never shown as
    // plaintext.
    bob.type_line("/history").await;
    let line = bob.expect("the history", |l| l.contains("hello bob")).await;
    assert!(line.contains("[e2e verified"), "{line}");

    // The server only ever held ciphertext.
    for text in ["hello bob", "now you know it is me", "hi alice"] {
        let query = format!("SELECT COUNT(*) FROM events WHERE json LIKE '%{text}%'");
        assert_eq!(server.count_rows(&query).await, 0, "{text} stored in clear");
    }
    alice.quit().await;
    bob.quit().await;
}

/// Bob backs his keys up; his new device restores them and reads Alice's
/// old message, shown as his first device showed it: the backup is
/// authenticated (only Bob's devices could have written the key), so the
/// key is Alice's device's word, not "authenticity not guaranteed".
async fn history_restored_from_the_backup_shows_as_it_did_on_the_first_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    let stores = tempfile::tempdir().expect("store dir");
    let (mut alice, mut bob, room_id) = alice_and_bob_in_a_room(&server, stores.path()).await;
    alice.type_line("kept in the backup").await;
    let line = bob
        .expect("Alice's message", |l| l.contains("kept in the backup"))
        .await;
    assert!(line.contains("[e2e unverified, device "), "{line}");

    bob.type_line("/backup").await;
    let recovery_key = bob
        .recovery_key_after("* write down the recovery key")
        .await;
    bob.expect("the backup", |l| l == "* room keys are backed up")
        .await;

    let mut laptop = ChatProcess::login(&server, "bob", stores.path().join("laptop.db"));
    laptop
        .expect("its login", |l| l.starts_with("* logged in as @bob"))
        .await;
    laptop.type_line(&format!("/switch {room_id}")).await;
    // Its first sync shows the room (the old message, undecryptable), and
    // so who is in it: the restore can tell whose devices sent the keys.
    laptop
        .expect("the old message, undecryptable", |l| {
            l.contains("** unable to decrypt: ")
        })
        .await;
    laptop.type_line(&format!("/restore {recovery_key}")).await;
    laptop
        .expect("the restore", |l| l.starts_with("* restored 1 keys"))
        .await;
    laptop.type_line("/history").await;
    let line = laptop
        .expect("the old message", |l| l.contains("kept in the backup"))
        .await;
    assert!(line.contains("[e2e unverified, device "), "{line}");
    alice.quit().await;
    bob.quit().await;
    laptop.quit().await;
}

/// Bob keeps his keys in secret storage (`/recovery setup`), reads the
/// backup's key back with the recovery key, and rotates the recovery key;
/// a new device of his asks for the recovery key as it starts, refuses the
/// old one, and with the new one counts as verified, restores the backup
/// and shows Alice's earlier message.
async fn a_new_device_recovers_identity_and_history_with_the_recovery_key(backend: Backend) {
    let server = TestServer::start(backend).await;
    let stores = tempfile::tempdir().expect("store dir");
    let (mut alice, mut bob, _) = alice_and_bob_in_a_room(&server, stores.path()).await;
    alice.type_line("kept for recovery").await;
    bob.expect("Alice's message", |l| l.contains("kept for recovery"))
        .await;

    bob.type_line("/recovery setup").await;
    bob.expect("the cross-signing keys", |l| {
        l == "* cross-signing keys created; this device is signed"
    })
    .await;
    let first_key = bob
        .recovery_key_after("* write down the recovery key")
        .await;
    bob.type_line(&format!("/recovery show {first_key}")).await;
    let backup_key = bob
        .expect("the backup's key", |l| {
            l.starts_with("* the key backup's recovery key: ")
        })
        .await;
    bob.type_line(&format!("/recovery rotate {first_key}"))
        .await;
    let recovery_key = bob
        .recovery_key_after("* the old recovery key opens nothing now")
        .await;
    assert_ne!(recovery_key, first_key);
    bob.type_line(&format!("/recovery show {recovery_key}"))
        .await;
    bob.expect("the same backup key", |l| l == backup_key).await;

    let mut laptop = ChatProcess::login(&server, "bob", stores.path().join("laptop.db"));
    laptop
        .expect("the question", |l| {
            l.starts_with("* this account keeps its keys in secret storage")
        })
        .await;
    laptop.type_line(&first_key).await;
    laptop
        .expect("the old key refused", |l| l.starts_with("* error: "))
        .await;
    laptop.type_line(&recovery_key).await;
    laptop
        .expect("its verification", |l| {
            l == "* cross-signing keys unlocked; this device is verified"
        })
        .await;
    // The key may already have been fetched for the waiting message once
    // the device held the backup key; the restore then finds it in place.
    laptop
        .expect("the restore", |l| l.starts_with("* restored "))
        .await;
    let line = laptop
        .expect("the history", |l| l.contains("kept for recovery"))
        .await;
    assert!(line.contains("[e2e "), "{line}");
    alice.quit().await;
    bob.quit().await;
    laptop.quit().await;
}

/// Alice and Bob, registered, in an E2E-only room Alice created, each
/// having seen the other's membership; and the room id.
async fn alice_and_bob_in_a_room(
    server: &TestServer,
    stores: &std::path::Path,
) -> (ChatProcess, ChatProcess, String) {
    let mut alice = ChatProcess::register(server, "alice", stores.join("alice.db"));
    let mut bob = ChatProcess::register(server, "bob", stores.join("bob.db"));
    alice
        .expect("its login", |l| l.starts_with("* logged in as @alice"))
        .await;
    bob.expect("its login", |l| l.starts_with("* logged in as @bob"))
        .await;
    let bob_id = server.user_id("bob");
    alice.type_line("/create together").await;
    let created = alice
        .expect("the new room", |l| l.starts_with("* created !"))
        .await;
    let room_id = created
        .split_whitespace()
        .nth(2)
        .expect("room id")
        .to_owned();
    alice.type_line(&format!("/invite {bob_id}")).await;
    bob.expect("the invite", |l| {
        l.starts_with(&format!("* invited to {room_id}"))
    })
    .await;
    bob.type_line(&format!("/join {room_id}")).await;
    bob.expect("the join", |l| l == format!("* joined {room_id}"))
        .await;
    alice
        .expect("Bob's join", |l| {
            l == format!("[{room_id}] {bob_id} set m.room.member")
        })
        .await;
    (alice, bob, room_id)
}

/// The device a timeline line says a message came from.
fn sending_device(line: &str) -> String {
    line.split("device ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(']'))
        .expect("the sending device")
        .to_owned()
}

/// Bob asks Alice's device to verify; Alice accepts; both terminals show
/// the same emoji and numbers, both users say they match, and from then on
/// each shows the other's messages as from a verified device.
async fn two_example_clients_verify_each_other_by_emoji(backend: Backend) {
    let server = TestServer::start(backend).await;
    let stores = tempfile::tempdir().expect("store dir");
    let (mut alice, mut bob, _) = alice_and_bob_in_a_room(&server, stores.path()).await;
    let (alice_id, bob_id) = (server.user_id("alice"), server.user_id("bob"));

    alice.type_line("before verifying").await;
    let line = bob
        .expect("Alice's message", |l| l.contains("before verifying"))
        .await;
    assert!(line.contains("[e2e unverified, device "), "{line}");
    let alice_device = sending_device(&line);
    bob.type_line("me neither").await;
    let line = alice
        .expect("Bob's message", |l| l.contains("me neither"))
        .await;
    assert!(line.contains("[e2e unverified, device "), "{line}");
    let bob_device = sending_device(&line);

    // First Alice says the emoji differ: the flow is cancelled as a
    // mismatch on both sides, and nothing is verified.
    bob_asks_alice_to_compare_emoji(
        &mut alice,
        &mut bob,
        [&alice_id, &alice_device],
        [&bob_id, &bob_device],
    )
    .await;
    alice.type_line("n").await;
    bob.expect("the cancellation", |l| {
        l.starts_with(&format!(
            "* verification with {alice_id} {alice_device} cancelled by them"
        )) && l.ends_with("m.mismatched_sas")
    })
    .await;
    alice.type_line("still unverified").await;
    let line = bob
        .expect("Alice's message", |l| l.contains("still unverified"))
        .await;
    assert!(line.contains("[e2e unverified, device "), "{line}");

    // Then both say they match.
    bob_asks_alice_to_compare_emoji(
        &mut alice,
        &mut bob,
        [&alice_id, &alice_device],
        [&bob_id, &bob_device],
    )
    .await;
    alice.type_line("y").await;
    bob.type_line("y").await;
    alice
        .expect("the verification", |l| {
            l == format!("* verified {bob_id} {bob_device}")
        })
        .await;
    bob.expect("the verification", |l| {
        l == format!("* verified {alice_id} {alice_device}")
    })
    .await;

    alice.type_line("verified now").await;
    let line = bob
        .expect("Alice's message", |l| l.contains("verified now"))
        .await;
    assert!(
        line.contains(&format!("[e2e verified, device {alice_device}]")),
        "{line}"
    );
    bob.type_line("so are you").await;
    let line = alice
        .expect("Bob's message", |l| l.contains("so are you"))
        .await;
    assert!(
        line.contains(&format!("[e2e verified, device {bob_device}]")),
        "{line}"
    );
    alice.quit().await;
    bob.quit().await;
}

/// Bob asks Alice's device to verify, Alice accepts, and both terminals
/// show the same seven emoji and three numbers and ask whether they match.
async fn bob_asks_alice_to_compare_emoji(
    alice: &mut ChatProcess,
    bob: &mut ChatProcess,
    [alice_id, alice_device]: [&str; 2],
    [bob_id, bob_device]: [&str; 2],
) {
    bob.type_line(&format!("/verify {alice_id} {alice_device}"))
        .await;
    alice
        .expect("Bob's request", |l| {
            l.starts_with(&format!(
                "* verification request from {bob_id} {bob_device} "
            ))
        })
        .await;
    alice.type_line("/accept").await;
    let emoji = |l: &str| l.starts_with("* emoji with ");
    let numbers = |l: &str| l.starts_with("* numbers with ");
    let asked = |l: &str| l.ends_with("y/n");
    let alice_emoji = alice.expect("the emoji", emoji).await;
    let alice_numbers = alice.expect("the numbers", numbers).await;
    alice.expect("the question", asked).await;
    let bob_emoji = bob.expect("the emoji", emoji).await;
    let bob_numbers = bob.expect("the numbers", numbers).await;
    bob.expect("the question", asked).await;
    let listed = |line: &str| line.split_once(": ").expect("a list").1.to_owned();
    assert_eq!(listed(&alice_emoji), listed(&bob_emoji));
    assert_eq!(
        listed(&alice_emoji).split(" | ").count(),
        7,
        "{alice_emoji}"
    );
    assert_eq!(listed(&alice_numbers), listed(&bob_numbers));
    assert_eq!(
        listed(&alice_numbers).split(' ').count(),
        3,
        "{alice_numbers}"
    );
    assert!(
        alice_emoji.starts_with(&format!("* emoji with {bob_id} {bob_device}: ")),
        "{alice_emoji}"
    );
    assert!(
        bob_emoji.starts_with(&format!("* emoji with {alice_id} {alice_device}: ")),
        "{bob_emoji}"
    );
}
