//! SAS verification between machines through the fake server: the full
//! flow, and what a server swapping keys or messages, a stale flow and a
//! concurrent start do to it.

use serde_json::{Value, json};

use super::{
    ALICE, BOB, CAROL, ROOM, alice_and_bob, body,
    cross_signing::bootstrap,
    device_id, event_id, room_id,
    server::{Client, FakeServer},
    user_id,
};
use crate::machine::{CancelCode, VerificationPhase, VerificationState, verification};

mod timing;

/// One sync of `client`: it reads its inbox and sends what it queued.
fn step(server: &mut FakeServer, client: &mut Client) {
    client.sync(server, vec![]);
}

/// Lets both sides talk until nothing is left in flight.
fn settle(server: &mut FakeServer, a: &mut Client, b: &mut Client) {
    for _ in 0..4 {
        step(server, a);
        step(server, b);
    }
}

fn phase(client: &Client, other: &str, txn: &str) -> VerificationPhase {
    client
        .machine
        .verification(user_id(other), txn)
        .unwrap()
        .phase
}

/// Alice asks Bob's phone and it accepts; returns the transaction id
/// with both sides ready.
fn ready(server: &mut FakeServer, alice: &mut Client, bob: &mut Client) -> String {
    let txn = alice
        .machine
        .request_verification(user_id(BOB), device_id("BOBPHONE"), alice.now_ms)
        .unwrap();
    settle(server, alice, bob);
    bob.machine
        .accept_verification_request(user_id(ALICE), &txn)
        .unwrap();
    settle(server, alice, bob);
    assert_eq!(phase(alice, BOB, &txn), VerificationPhase::Ready);
    txn
}

/// Alice asks Bob's phone, it accepts, Alice starts SAS; returns the
/// transaction id with Bob holding the start.
fn started(server: &mut FakeServer, alice: &mut Client, bob: &mut Client) -> String {
    let txn = alice
        .machine
        .request_verification(user_id(BOB), device_id("BOBPHONE"), alice.now_ms)
        .unwrap();
    step(server, alice);
    step(server, bob);
    assert_eq!(phase(bob, ALICE, &txn), VerificationPhase::Requested);
    bob.machine
        .accept_verification_request(user_id(ALICE), &txn)
        .unwrap();
    step(server, bob);
    step(server, alice);
    assert_eq!(phase(alice, BOB, &txn), VerificationPhase::Ready);
    alice
        .machine
        .start_sas(user_id(BOB), &txn, alice.now_ms)
        .unwrap();
    step(server, alice);
    step(server, bob);
    assert_eq!(phase(bob, ALICE, &txn), VerificationPhase::Started);
    txn
}

/// Replaces the `key` of the `m.key.verification.key` waiting in a
/// device's inbox with one the server made up.
fn swap_key_in_inbox(server: &mut FakeServer, user: &str, device: &str) {
    let inbox = server
        .inboxes
        .get_mut(&(user.to_owned(), device.to_owned()))
        .unwrap();
    let event = inbox
        .iter_mut()
        .find(|e| e["type"] == "m.key.verification.key")
        .expect("a key in transit");
    event["content"]["key"] = json!(vodozemac::sas::Sas::new().public_key().to_base64());
}

fn sas(client: &Client, other: &str, txn: &str) -> (Vec<&'static str>, [u16; 3]) {
    let view = client.machine.verification(user_id(other), txn).unwrap();
    let emoji = view
        .emoji
        .expect("emoji shown")
        .iter()
        .map(|e| e.name)
        .collect();
    (emoji, view.decimals.expect("decimals shown"))
}

#[test]
fn both_sides_see_the_same_sas_and_end_verified() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _bob2) = alice_and_bob(&mut server);
    bootstrap(&mut alice, &mut server);
    bootstrap(&mut bob, &mut server);
    settle(&mut server, &mut alice, &mut bob);
    assert!(
        !alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );

    let txn = started(&mut server, &mut alice, &mut bob);
    bob.machine.accept_sas(user_id(ALICE), &txn).unwrap();
    settle(&mut server, &mut alice, &mut bob);
    let (alice_emoji, alice_decimals) = sas(&alice, BOB, &txn);
    let (bob_emoji, bob_decimals) = sas(&bob, ALICE, &txn);
    assert_eq!(alice_emoji.len(), 7);
    assert_eq!(alice_emoji, bob_emoji);
    assert_eq!(alice_decimals, bob_decimals);
    assert!(alice_decimals.iter().all(|d| (1000..=9191).contains(d)));

    alice.machine.confirm_sas(user_id(BOB), &txn).unwrap();
    // Nothing is trusted on one side's confirmation alone.
    settle(&mut server, &mut alice, &mut bob);
    assert!(
        !bob.machine
            .is_device_verified(super::user_id(ALICE), super::device_id("ALICEDEV"))
    );
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Confirmed);
    bob.machine.confirm_sas(user_id(ALICE), &txn).unwrap();
    settle(&mut server, &mut alice, &mut bob);

    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Done);
    assert_eq!(phase(&bob, ALICE, &txn), VerificationPhase::Done);
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    assert!(
        bob.machine
            .is_device_verified(super::user_id(ALICE), super::device_id("ALICEDEV"))
    );
    // The master keys were MAC'd: each signed the other's identity.
    assert!(
        alice
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
    assert!(
        bob.machine
            .user_identity(super::user_id(ALICE))
            .unwrap()
            .is_verified
    );
}

#[test]
fn verifying_an_own_device_signs_it_with_the_self_signing_key() {
    let mut server = FakeServer::default();
    let (_alice, mut bob, mut bob2) = alice_and_bob(&mut server);
    bootstrap(&mut bob, &mut server);
    settle(&mut server, &mut bob, &mut bob2);
    let signers = |server: &FakeServer| {
        server.device_keys[BOB]["BOBLAPTOP"]["signatures"][BOB]
            .as_object()
            .unwrap()
            .len()
    };
    assert_eq!(signers(&server), 1, "only the device's own signature");
    assert!(
        !bob2
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );

    let txn = bob
        .machine
        .request_verification(user_id(BOB), device_id("BOBLAPTOP"), bob.now_ms)
        .unwrap();
    step(&mut server, &mut bob);
    step(&mut server, &mut bob2);
    bob2.machine
        .accept_verification_request(user_id(BOB), &txn)
        .unwrap();
    settle(&mut server, &mut bob, &mut bob2);
    bob2.machine
        .start_sas(user_id(BOB), &txn, bob2.now_ms)
        .unwrap();
    settle(&mut server, &mut bob, &mut bob2);
    bob.machine.accept_sas(user_id(BOB), &txn).unwrap();
    settle(&mut server, &mut bob, &mut bob2);
    assert_eq!(sas(&bob, BOB, &txn), sas(&bob2, BOB, &txn));
    bob.machine.confirm_sas(user_id(BOB), &txn).unwrap();
    bob2.machine.confirm_sas(user_id(BOB), &txn).unwrap();
    settle(&mut server, &mut bob, &mut bob2);

    assert_eq!(phase(&bob, BOB, &txn), VerificationPhase::Done);
    assert!(
        bob.machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBLAPTOP"))
    );
    assert!(
        bob2.machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    assert_eq!(signers(&server), 2, "signed by the self-signing key too");
    // The laptop, which holds no cross-signing keys, now trusts the master
    // key the phone MAC'd, and through it the devices it signs.
    assert!(
        bob2.machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
}

#[test]
fn a_server_swapping_the_accepters_key_breaks_the_commitment() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = started(&mut server, &mut alice, &mut bob);
    bob.machine.accept_sas(user_id(ALICE), &txn).unwrap();
    step(&mut server, &mut bob); // accept out
    step(&mut server, &mut alice); // Alice's key out
    step(&mut server, &mut bob); // Bob's key out
    swap_key_in_inbox(&mut server, ALICE, "ALICEDEV");
    step(&mut server, &mut alice);
    step(&mut server, &mut bob);

    assert_eq!(
        phase(&alice, BOB, &txn),
        VerificationPhase::Cancelled {
            code: CancelCode::MismatchedCommitment,
            by_us: true
        }
    );
    assert_eq!(
        phase(&bob, ALICE, &txn),
        VerificationPhase::Cancelled {
            code: CancelCode::MismatchedCommitment,
            by_us: false
        }
    );
    assert!(
        !alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    assert!(
        !bob.machine
            .is_device_verified(super::user_id(ALICE), super::device_id("ALICEDEV"))
    );
}

#[test]
fn a_server_swapping_the_starters_key_shows_different_sas_and_cannot_get_verified() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = started(&mut server, &mut alice, &mut bob);
    bob.machine.accept_sas(user_id(ALICE), &txn).unwrap();
    step(&mut server, &mut bob); // accept out
    step(&mut server, &mut alice); // Alice's key out
    swap_key_in_inbox(&mut server, BOB, "BOBPHONE");
    step(&mut server, &mut bob); // Bob takes the server's key, sends his
    step(&mut server, &mut alice);

    let (alice_emoji, alice_decimals) = sas(&alice, BOB, &txn);
    let (bob_emoji, bob_decimals) = sas(&bob, ALICE, &txn);
    assert_ne!(alice_emoji, bob_emoji);
    assert_ne!(alice_decimals, bob_decimals);

    // Careless users confirm anyway: the MACs do not verify.
    alice.machine.confirm_sas(user_id(BOB), &txn).unwrap();
    bob.machine.confirm_sas(user_id(ALICE), &txn).unwrap();
    settle(&mut server, &mut alice, &mut bob);
    let cancelled = |client: &Client, other: &str| match phase(client, other, &txn) {
        VerificationPhase::Cancelled { code, .. } => code,
        other => panic!("not cancelled: {other:?}"),
    };
    assert_eq!(cancelled(&alice, BOB), CancelCode::KeyMismatch);
    assert_eq!(cancelled(&bob, ALICE), CancelCode::KeyMismatch);
    assert!(
        !alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    assert!(
        !bob.machine
            .is_device_verified(super::user_id(ALICE), super::device_id("ALICEDEV"))
    );
}

#[test]
fn a_user_reporting_different_emoji_cancels_with_mismatched_sas() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = started(&mut server, &mut alice, &mut bob);
    bob.machine.accept_sas(user_id(ALICE), &txn).unwrap();
    settle(&mut server, &mut alice, &mut bob);
    bob.machine.sas_mismatch(user_id(ALICE), &txn).unwrap();
    settle(&mut server, &mut alice, &mut bob);
    assert_eq!(
        phase(&alice, BOB, &txn),
        VerificationPhase::Cancelled {
            code: CancelCode::MismatchedSas,
            by_us: false
        }
    );
    assert!(alice.machine.confirm_sas(user_id(BOB), &txn).is_err());
    assert!(
        !alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
}

#[test]
fn an_unexpected_message_cancels_the_flow() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = alice
        .machine
        .request_verification(user_id(BOB), device_id("BOBPHONE"), alice.now_ms)
        .unwrap();
    settle(&mut server, &mut alice, &mut bob);
    bob.machine
        .accept_verification_request(user_id(ALICE), &txn)
        .unwrap();
    settle(&mut server, &mut alice, &mut bob);
    // A key before any start or accept, as the server might inject.
    server
        .inboxes
        .entry((ALICE.to_owned(), "ALICEDEV".to_owned()))
        .or_default()
        .push(json!({
            "type": "m.key.verification.key",
            "sender": BOB,
            "content": {"transaction_id": txn, "key": vodozemac::sas::Sas::new().public_key().to_base64()},
        }));
    settle(&mut server, &mut alice, &mut bob);
    assert_eq!(
        phase(&alice, BOB, &txn),
        VerificationPhase::Cancelled {
            code: CancelCode::UnexpectedMessage,
            by_us: true
        }
    );
    assert_eq!(
        phase(&bob, ALICE, &txn),
        VerificationPhase::Cancelled {
            code: CancelCode::UnexpectedMessage,
            by_us: false
        }
    );
}

#[test]
fn a_message_for_an_unknown_flow_is_answered_with_unknown_transaction() {
    let mut server = FakeServer::default();
    let (mut alice, _bob, _) = alice_and_bob(&mut server);
    let inbox = (ALICE.to_owned(), "ALICEDEV".to_owned());
    server.inboxes.entry(inbox).or_default().push(json!({
        "type": "m.key.verification.ready",
        "sender": BOB,
        "content": {"transaction_id": "nope", "from_device": "BOBPHONE", "methods": ["m.sas.v1"]},
    }));
    step(&mut server, &mut alice);
    let to_bob: &Vec<Value> = &server.inboxes[&(BOB.to_owned(), "BOBPHONE".to_owned())];
    assert_eq!(to_bob.len(), 1, "{to_bob:?}");
    assert_eq!(to_bob[0]["type"], "m.key.verification.cancel");
    assert_eq!(to_bob[0]["content"]["code"], "m.unknown_transaction");
    assert_eq!(to_bob[0]["content"]["transaction_id"], "nope");
    assert!(alice.machine.verification(user_id(BOB), "nope").is_none());
}

#[test]
fn an_unanswered_request_and_a_stalled_sas_time_out() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = alice
        .machine
        .request_verification(user_id(BOB), device_id("BOBPHONE"), alice.now_ms)
        .unwrap();
    settle(&mut server, &mut alice, &mut bob);
    alice.now_ms += verification::REQUEST_TIMEOUT_MS - 1;
    step(&mut server, &mut alice);
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Requested);
    alice.now_ms += 1;
    settle(&mut server, &mut alice, &mut bob);
    let timeout = |by_us| VerificationPhase::Cancelled {
        code: CancelCode::Timeout,
        by_us,
    };
    assert_eq!(phase(&alice, BOB, &txn), timeout(true));
    assert_eq!(phase(&bob, ALICE, &txn), timeout(false));

    // A started flow has five minutes.
    bob.now_ms = alice.now_ms;
    let txn = started(&mut server, &mut alice, &mut bob);
    bob.machine.accept_sas(user_id(ALICE), &txn).unwrap();
    settle(&mut server, &mut alice, &mut bob);
    assert_eq!(phase(&bob, ALICE, &txn), VerificationPhase::ShowingSas);
    bob.now_ms += verification::SAS_TIMEOUT_MS;
    settle(&mut server, &mut alice, &mut bob);
    assert_eq!(phase(&bob, ALICE, &txn), timeout(true));
    assert_eq!(phase(&alice, BOB, &txn), timeout(false));
    assert!(alice.machine.confirm_sas(user_id(BOB), &txn).is_err());
}

#[test]
fn a_request_older_than_ten_minutes_is_ignored() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = alice
        .machine
        .request_verification(user_id(BOB), device_id("BOBPHONE"), alice.now_ms)
        .unwrap();
    step(&mut server, &mut alice);
    bob.now_ms = alice.now_ms + verification::REQUEST_TIMEOUT_MS;
    step(&mut server, &mut bob);
    assert!(bob.machine.verification(user_id(ALICE), &txn).is_none());
}

#[test]
fn concurrent_starts_resolve_to_the_smaller_user_ids_start() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = ready(&mut server, &mut alice, &mut bob);
    // Both start before seeing the other's start.
    alice
        .machine
        .start_sas(user_id(BOB), &txn, alice.now_ms)
        .unwrap();
    bob.machine
        .start_sas(user_id(ALICE), &txn, bob.now_ms)
        .unwrap();
    let types = |server: &FakeServer, user: &str, device: &str| -> Vec<String> {
        server.inboxes[&(user.to_owned(), device.to_owned())]
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    };
    step(&mut server, &mut alice); // Alice's start out
    step(&mut server, &mut bob); // Bob's start was out already; he yields
    assert_eq!(
        types(&server, ALICE, "ALICEDEV"),
        ["m.key.verification.start", "m.key.verification.accept"],
        "Bob sent his start, then accepted Alice's"
    );
    step(&mut server, &mut alice);
    assert_eq!(
        types(&server, BOB, "BOBPHONE"),
        ["m.key.verification.key"],
        "Alice ignored Bob's start and never accepted it"
    );
    settle(&mut server, &mut alice, &mut bob);

    // "@alice" < "@bob": Alice's start stands, Bob accepted it, and both
    // show the same SAS without anyone accepting by hand.
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::ShowingSas);
    assert_eq!(phase(&bob, ALICE, &txn), VerificationPhase::ShowingSas);
    assert_eq!(sas(&alice, BOB, &txn), sas(&bob, ALICE, &txn));
    alice.machine.confirm_sas(user_id(BOB), &txn).unwrap();
    bob.machine.confirm_sas(user_id(ALICE), &txn).unwrap();
    settle(&mut server, &mut alice, &mut bob);
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    assert!(
        bob.machine
            .is_device_verified(super::user_id(ALICE), super::device_id("ALICEDEV"))
    );
}

#[test]
fn a_message_from_another_device_of_the_user_cancels_with_user_mismatch() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = alice
        .machine
        .request_verification(user_id(BOB), device_id("BOBPHONE"), alice.now_ms)
        .unwrap();
    settle(&mut server, &mut alice, &mut bob);
    bob.machine
        .accept_verification_request(user_id(ALICE), &txn)
        .unwrap();
    settle(&mut server, &mut alice, &mut bob);
    // Bob's laptop (or the server in its name) starts in the phone's flow.
    let mut start =
        serde_json::to_value(verification::test_start_content(BOB, "BOBLAPTOP", &txn)).unwrap();
    start["from_device"] = json!("BOBLAPTOP");
    server
        .inboxes
        .entry((ALICE.to_owned(), "ALICEDEV".to_owned()))
        .or_default()
        .push(json!({"type": "m.key.verification.start", "sender": BOB, "content": start}));
    step(&mut server, &mut alice);
    assert_eq!(
        phase(&alice, BOB, &txn),
        VerificationPhase::Cancelled {
            code: CancelCode::UserMismatch,
            by_us: true
        }
    );
}

#[test]
fn a_device_verified_by_sas_shows_as_verified_and_gets_only_verified_keys() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, mut bob2) = alice_and_bob(&mut server);
    let before = bob.send(&mut server, ROOM, "before");
    step(&mut server, &mut alice);
    assert_eq!(
        alice.decrypt(ROOM, &before).unwrap().verification,
        VerificationState::Unverified
    );

    let txn = started(&mut server, &mut alice, &mut bob);
    bob.machine.accept_sas(user_id(ALICE), &txn).unwrap();
    settle(&mut server, &mut alice, &mut bob);
    alice.machine.confirm_sas(user_id(BOB), &txn).unwrap();
    bob.machine.confirm_sas(user_id(ALICE), &txn).unwrap();
    settle(&mut server, &mut alice, &mut bob);
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Done);

    // Events from the verified phone now show as verified.
    let after = bob.send(&mut server, ROOM, "after");
    step(&mut server, &mut alice);
    assert_eq!(
        alice.decrypt(ROOM, &after).unwrap().verification,
        VerificationState::Verified
    );
    // Sharing to verified devices only reaches the phone, not the laptop.
    alice.machine.set_only_verified(super::room_id(ROOM), true);
    let secret = alice.send(&mut server, ROOM, "verified only");
    step(&mut server, &mut bob);
    step(&mut server, &mut bob2);
    assert_eq!(body(&bob.decrypt(ROOM, &secret).unwrap()), "verified only");
    assert!(bob2.decrypt(ROOM, &secret).is_err());
}

#[test]
fn a_request_to_all_our_devices_goes_to_the_first_that_answers() {
    let mut server = FakeServer::default();
    let (_alice, mut bob, mut bob2) = alice_and_bob(&mut server);
    let mut tablet = Client::new(&mut server, BOB, "BOBTABLET");
    tablet.sync(&mut server, vec![super::encrypted_room(&[ALICE, BOB])]);
    server.notify_change(BOB);
    settle(&mut server, &mut bob, &mut bob2);

    let txn = bob.machine.request_own_verification(bob.now_ms).unwrap();
    step(&mut server, &mut bob);
    step(&mut server, &mut bob2);
    step(&mut server, &mut tablet);
    assert_eq!(phase(&tablet, BOB, &txn), VerificationPhase::Requested);
    bob2.machine
        .accept_verification_request(user_id(BOB), &txn)
        .unwrap();
    settle(&mut server, &mut bob, &mut bob2);
    step(&mut server, &mut tablet);
    assert_eq!(
        phase(&tablet, BOB, &txn),
        VerificationPhase::Cancelled {
            code: CancelCode::Accepted,
            by_us: false
        }
    );
    let view = bob.machine.verification(user_id(BOB), &txn).unwrap();
    assert_eq!(
        (view.device_id.as_deref(), view.phase),
        (Some(device_id("BOBLAPTOP")), VerificationPhase::Ready)
    );

    bob.machine
        .start_sas(user_id(BOB), &txn, bob.now_ms)
        .unwrap();
    settle(&mut server, &mut bob, &mut bob2);
    bob2.machine.accept_sas(user_id(BOB), &txn).unwrap();
    settle(&mut server, &mut bob, &mut bob2);
    bob.machine.confirm_sas(user_id(BOB), &txn).unwrap();
    bob2.machine.confirm_sas(user_id(BOB), &txn).unwrap();
    settle(&mut server, &mut bob, &mut bob2);
    assert!(
        bob.machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBLAPTOP"))
    );
    assert!(
        !bob.machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBTABLET"))
    );
}

#[test]
fn a_request_without_sas_is_cancelled_with_unknown_method() {
    let mut server = FakeServer::default();
    let (_alice, mut bob, _) = alice_and_bob(&mut server);
    server
        .inboxes
        .entry((BOB.to_owned(), "BOBPHONE".to_owned()))
        .or_default()
        .push(json!({
            "type": "m.key.verification.request",
            "sender": ALICE,
            "content": {
                "from_device": "ALICEDEV",
                "methods": ["m.qr_code.show.v1"],
                "timestamp": bob.now_ms,
                "transaction_id": "qr-only",
            },
        }));
    step(&mut server, &mut bob);
    assert!(
        bob.machine
            .verification(user_id(ALICE), "qr-only")
            .is_none()
    );
    let to_alice = &server.inboxes[&(ALICE.to_owned(), "ALICEDEV".to_owned())];
    assert_eq!(to_alice.len(), 1, "{to_alice:?}");
    assert_eq!(to_alice[0]["content"]["code"], "m.unknown_method");
}

#[test]
fn a_device_flooding_requests_holds_only_a_few_flows_and_finished_ones_are_dropped() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    for _ in 0..3 * verification::MAX_FLOWS_PER_USER {
        bob.machine
            .request_verification(user_id(ALICE), device_id("ALICEDEV"), bob.now_ms)
            .unwrap();
    }
    settle(&mut server, &mut bob, &mut alice);
    let from_bob = |alice: &Client| {
        let flows: Vec<_> = alice
            .machine
            .verifications()
            .into_iter()
            .filter(|v| v.user_id == BOB)
            .collect();
        let open = flows
            .iter()
            .filter(|v| !matches!(v.phase, VerificationPhase::Cancelled { .. }))
            .count();
        (flows.len(), open)
    };
    // Each second attempt of the device cancelled the one before; past
    // the cap, the rest was ignored.
    assert_eq!(from_bob(&alice), (verification::MAX_FLOWS_PER_USER, 1));

    // The open one times out and stays visible for a while; the others,
    // idle as long, are forgotten; then it is too.
    alice.now_ms += verification::IDLE_TIMEOUT_MS;
    step(&mut server, &mut alice);
    assert_eq!(from_bob(&alice), (1, 0));
    alice.now_ms += verification::IDLE_TIMEOUT_MS;
    step(&mut server, &mut alice);
    assert_eq!(from_bob(&alice), (0, 0));
}

/// A room's timeline as the fake server holds it: every event in order,
/// and how far each device has read.
#[derive(Default)]
struct Timeline {
    events: Vec<Value>,
    read: std::collections::BTreeMap<String, usize>,
}

/// How a device sends its in-room verification messages: encrypted, as
/// myelin-sdk does in an encrypted room, or in the clear, as matrix-js-sdk
/// does.
#[derive(Clone, Copy, PartialEq)]
enum Sends {
    Encrypted,
    Clear,
}

impl Timeline {
    /// Posts `event_type` + `content` from `client` into ROOM.
    fn post(
        &mut self,
        server: &mut FakeServer,
        client: &mut Client,
        how: Sends,
        event_type: &str,
        content: &Value,
    ) -> String {
        let mut event = if how == Sends::Encrypted {
            client.share(server, ROOM);
            let encrypted = client
                .machine
                .encrypt_room_event(super::room_id(ROOM), event_type, content, client.now_ms)
                .unwrap();
            client.save();
            server.room_event(ROOM, &client.user, encrypted)
        } else {
            let mut event = server.room_event(ROOM, &client.user, content.clone());
            event["type"] = json!(event_type);
            event
        };
        event["origin_server_ts"] = json!(client.now_ms);
        let event_id = event["event_id"].as_str().unwrap().to_owned();
        self.events.push(event);
        event_id
    }

    /// One round for `client`: a sync (to-device, keys), then the new
    /// timeline events, decrypted and routed as the SDK's sync does, then
    /// its queued in-room messages posted.
    fn step(&mut self, server: &mut FakeServer, client: &mut Client, how: Sends) {
        client.sync(server, vec![]);
        let reader = format!("{}|{}", client.user, client.device);
        let from = self.read.get(&reader).copied().unwrap_or(0);
        for event in self.events[from..].iter().cloned() {
            let clear = if event["type"] == "m.room.encrypted" {
                let Ok(decrypted) = client.decrypt(ROOM, &event) else {
                    continue;
                };
                json!({
                    "type": decrypted.event_type,
                    "sender": decrypted.sender,
                    "event_id": event["event_id"],
                    "origin_server_ts": event["origin_server_ts"],
                    "content": decrypted.content,
                })
            } else {
                event
            };
            client
                .machine
                .receive_room_verification_event(room_id(ROOM), &clear, client.now_ms);
        }
        self.read.insert(reader, self.events.len());
        for message in client.machine.take_room_verification_messages() {
            assert_eq!(message.room_id, ROOM);
            self.post(server, client, how, &message.event_type, &message.content);
        }
        client.send_outgoing(server);
    }

    /// Rounds for both until nothing is left in flight.
    fn settle(
        &mut self,
        server: &mut FakeServer,
        a: (&mut Client, Sends),
        b: (&mut Client, Sends),
    ) {
        for _ in 0..4 {
            self.step(server, a.0, a.1);
            self.step(server, b.0, b.1);
        }
    }
}

/// Alice asks Bob in ROOM; returns the transaction id (the request's event
/// id) once Bob's phone has accepted and Alice sees it ready.
fn in_room_ready(
    server: &mut FakeServer,
    timeline: &mut Timeline,
    alice: &mut Client,
    bob: &mut Client,
    bob_sends: Sends,
) -> String {
    let request = alice
        .machine
        .room_verification_request(user_id(BOB))
        .unwrap();
    let txn = timeline.post(server, alice, Sends::Encrypted, "m.room.message", &request);
    alice
        .machine
        .room_verification_request_sent(room_id(ROOM), user_id(BOB), event_id(&txn), alice.now_ms)
        .unwrap();
    timeline.step(server, bob, bob_sends);
    let view = bob.machine.verification(user_id(ALICE), &txn).unwrap();
    assert_eq!(
        (
            view.phase,
            view.room_id.as_deref(),
            view.device_id.as_deref()
        ),
        (
            VerificationPhase::Requested,
            Some(room_id(ROOM)),
            Some(device_id("ALICEDEV"))
        )
    );
    bob.machine
        .accept_verification_request(user_id(ALICE), &txn)
        .unwrap();
    timeline.step(server, bob, bob_sends);
    timeline.step(server, alice, Sends::Encrypted);
    let view = alice.machine.verification(user_id(BOB), &txn).unwrap();
    assert_eq!(
        (view.phase, view.device_id.as_deref()),
        (VerificationPhase::Ready, Some(device_id("BOBPHONE"))),
        "the phone's ready picked the device"
    );
    txn
}

#[test]
fn an_in_room_flow_runs_on_encrypted_room_events_and_verifies_both_sides() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let mut timeline = Timeline::default();
    let txn = in_room_ready(
        &mut server,
        &mut timeline,
        &mut alice,
        &mut bob,
        Sends::Encrypted,
    );
    alice
        .machine
        .start_sas(user_id(BOB), &txn, alice.now_ms)
        .unwrap();
    let both = |t: &mut Timeline, s: &mut FakeServer, a: &mut Client, b: &mut Client| {
        t.settle(s, (a, Sends::Encrypted), (b, Sends::Encrypted));
    };
    both(&mut timeline, &mut server, &mut alice, &mut bob);
    bob.machine.accept_sas(user_id(ALICE), &txn).unwrap();
    both(&mut timeline, &mut server, &mut alice, &mut bob);
    assert_eq!(sas(&alice, BOB, &txn), sas(&bob, ALICE, &txn));
    alice.machine.confirm_sas(user_id(BOB), &txn).unwrap();
    bob.machine.confirm_sas(user_id(ALICE), &txn).unwrap();
    both(&mut timeline, &mut server, &mut alice, &mut bob);

    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Done);
    assert_eq!(phase(&bob, ALICE, &txn), VerificationPhase::Done);
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    assert!(
        bob.machine
            .is_device_verified(super::user_id(ALICE), super::device_id("ALICEDEV"))
    );

    // Everything went through the room, encrypted, and nothing to-device.
    let to_device = |server: &FakeServer, user: &str, device: &str| {
        server
            .inboxes
            .get(&(user.to_owned(), device.to_owned()))
            .into_iter()
            .flatten()
            .filter(|e| {
                e["type"]
                    .as_str()
                    .unwrap()
                    .starts_with("m.key.verification.")
            })
            .count()
    };
    assert_eq!(to_device(&server, ALICE, "ALICEDEV"), 0);
    assert_eq!(to_device(&server, BOB, "BOBPHONE"), 0);
    assert!(
        timeline
            .events
            .iter()
            .all(|e| e["type"] == "m.room.encrypted")
    );
    let mut types = Vec::new();
    for event in &timeline.events[1..] {
        let reader = if event["sender"] == ALICE {
            &mut bob
        } else {
            &mut alice
        };
        let clear = reader.decrypt(ROOM, event).unwrap();
        assert_eq!(
            clear.content["m.relates_to"],
            json!({"rel_type": "m.reference", "event_id": txn})
        );
        assert!(clear.content.get("transaction_id").is_none());
        types.push(clear.event_type);
    }
    let types: Vec<&str> = types
        .iter()
        .map(|t| t.trim_start_matches("m.key.verification."))
        .collect();
    assert_eq!(
        types,
        [
            "ready", "start", "accept", "key", "key", "mac", "mac", "done", "done"
        ]
    );
}

#[test]
fn in_room_events_in_the_clear_are_taken_as_matrix_js_sdk_sends_them() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let mut timeline = Timeline::default();
    let txn = in_room_ready(
        &mut server,
        &mut timeline,
        &mut alice,
        &mut bob,
        Sends::Clear,
    );
    bob.machine
        .start_sas(user_id(ALICE), &txn, bob.now_ms)
        .unwrap();
    let both = |t: &mut Timeline, s: &mut FakeServer, a: &mut Client, b: &mut Client| {
        t.settle(s, (a, Sends::Encrypted), (b, Sends::Clear));
    };
    both(&mut timeline, &mut server, &mut alice, &mut bob);
    alice.machine.accept_sas(user_id(BOB), &txn).unwrap();
    both(&mut timeline, &mut server, &mut alice, &mut bob);
    assert_eq!(sas(&alice, BOB, &txn), sas(&bob, ALICE, &txn));
    alice.machine.confirm_sas(user_id(BOB), &txn).unwrap();
    bob.machine.confirm_sas(user_id(ALICE), &txn).unwrap();
    both(&mut timeline, &mut server, &mut alice, &mut bob);
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Done);
    assert_eq!(phase(&bob, ALICE, &txn), VerificationPhase::Done);
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    let clear_from_bob = timeline
        .events
        .iter()
        .filter(|e| e["sender"] == BOB && e["type"] != "m.room.encrypted")
        .count();
    assert_eq!(
        clear_from_bob, 5,
        "ready, start, key, mac, done in the clear"
    );
}

#[test]
fn room_events_outside_our_flow_or_room_are_ignored() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let mut timeline = Timeline::default();
    // A request addressed to Carol opens nothing for Bob, who shares the room.
    let mut to_carol = alice
        .machine
        .room_verification_request(user_id(BOB))
        .unwrap();
    to_carol["to"] = json!(CAROL);
    let carols = timeline.post(
        &mut server,
        &mut alice,
        Sends::Clear,
        "m.room.message",
        &to_carol,
    );
    timeline.step(&mut server, &mut bob, Sends::Clear);
    assert!(bob.machine.verification(user_id(ALICE), &carols).is_none());

    let txn = in_room_ready(
        &mut server,
        &mut timeline,
        &mut alice,
        &mut bob,
        Sends::Clear,
    );
    // A start for the flow, from Bob, but in another room: not the flow's.
    let start = timeline.events.len();
    let mut content = verification::test_start_content(BOB, "BOBPHONE", &txn);
    content.as_object_mut().unwrap().remove("transaction_id");
    content["m.relates_to"] = json!({"rel_type": "m.reference", "event_id": txn});
    let mut event = json!({
        "type": "m.key.verification.start", "sender": BOB, "event_id": "$elsewhere",
        "origin_server_ts": alice.now_ms, "content": content,
    });
    alice.machine.receive_room_verification_event(
        room_id("!other:example.org"),
        &event,
        alice.now_ms,
    );
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Ready);
    // Without the reference, or with another relation: nothing either.
    event["content"]["m.relates_to"]["rel_type"] = json!("m.thread");
    alice
        .machine
        .receive_room_verification_event(room_id(ROOM), &event, alice.now_ms);
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Ready);
    assert!(alice.machine.take_room_verification_messages().is_empty());
    assert_eq!(timeline.events.len(), start);
    // In the flow's room, the same start is the flow's.
    event["content"]["m.relates_to"]["rel_type"] = json!("m.reference");
    alice
        .machine
        .receive_room_verification_event(room_id(ROOM), &event, alice.now_ms);
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Started);
}

#[test]
fn in_room_verification_is_for_other_users() {
    let mut server = FakeServer::default();
    let (alice, _, _) = alice_and_bob(&mut server);
    assert_eq!(
        alice.machine.room_verification_request(user_id(ALICE)),
        Err(verification::VerificationError::NotAnotherUser {
            user_id: user_id(ALICE).to_owned()
        })
    );
}

/// Alice and Bob, both with cross-signing, and a to-device flow from
/// Alice to Bob's phone that both see ready; returns its transaction id.
fn cross_signed_and_ready(server: &mut FakeServer, alice: &mut Client, bob: &mut Client) -> String {
    bootstrap(alice, server);
    bootstrap(bob, server);
    settle(server, alice, bob);
    let txn = alice
        .machine
        .request_verification(user_id(BOB), device_id("BOBPHONE"), alice.now_ms)
        .unwrap();
    step(server, alice);
    let request = &server.inboxes[&(BOB.to_owned(), "BOBPHONE".to_owned())][0];
    assert_eq!(
        request["content"]["methods"],
        json!([
            "m.sas.v1",
            "m.qr_code.show.v1",
            "m.qr_code.scan.v1",
            "m.reciprocate.v1"
        ]),
        "with cross-signing keys, the QR methods are offered"
    );
    step(server, bob);
    bob.machine
        .accept_verification_request(user_id(ALICE), &txn)
        .unwrap();
    settle(server, alice, bob);
    assert_eq!(phase(alice, BOB, &txn), VerificationPhase::Ready);
    txn
}

#[test]
fn a_qr_code_scanned_by_the_other_user_verifies_both_identities() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = cross_signed_and_ready(&mut server, &mut alice, &mut bob);

    let code = bob.machine.generate_qr_code(user_id(ALICE), &txn).unwrap();
    assert_eq!(&code[..8], b"MATRIX\x02\x00", "mode 0: another user");
    alice
        .machine
        .scan_qr_code(user_id(BOB), &txn, &code, alice.now_ms)
        .unwrap();
    settle(&mut server, &mut alice, &mut bob);
    assert_eq!(phase(&bob, ALICE, &txn), VerificationPhase::TheyScannedQr);
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Confirmed);
    // Nothing is trusted before Bob's user confirms the scan.
    assert!(
        !alice
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
    assert!(
        !bob.machine
            .user_identity(super::user_id(ALICE))
            .unwrap()
            .is_verified
    );

    bob.machine
        .confirm_qr_scanned(user_id(ALICE), &txn)
        .unwrap();
    settle(&mut server, &mut alice, &mut bob);
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Done);
    assert_eq!(phase(&bob, ALICE, &txn), VerificationPhase::Done);
    assert!(
        alice
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
    assert!(
        bob.machine
            .user_identity(super::user_id(ALICE))
            .unwrap()
            .is_verified
    );
    // The devices their owners cross-signed are verified through them.
    assert!(
        alice
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    assert!(
        bob.machine
            .is_device_verified(super::user_id(ALICE), super::device_id("ALICEDEV"))
    );
}

#[test]
fn a_qr_code_over_a_key_we_do_not_know_is_refused_and_cancels() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = cross_signed_and_ready(&mut server, &mut alice, &mut bob);
    let mut code = bob.machine.generate_qr_code(user_id(ALICE), &txn).unwrap();
    // key2, the master key Bob believes Alice has, is one a server made up
    // for her: bytes 10 + txn length + 32 onwards.
    let key2 = 10 + txn.len() + 32;
    let fake = vodozemac::Ed25519SecretKey::new().public_key();
    code[key2..key2 + 32].copy_from_slice(fake.as_bytes());
    assert_eq!(
        alice
            .machine
            .scan_qr_code(user_id(BOB), &txn, &code, alice.now_ms),
        Err(verification::VerificationError::Qr(
            verification::QrError::KeyMismatch
        ))
    );
    settle(&mut server, &mut alice, &mut bob);
    assert_eq!(
        phase(&bob, ALICE, &txn),
        VerificationPhase::Cancelled {
            code: CancelCode::KeyMismatch,
            by_us: false
        }
    );
    assert!(
        !alice
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
}

#[test]
fn a_reciprocate_without_the_codes_secret_verifies_nothing() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = cross_signed_and_ready(&mut server, &mut alice, &mut bob);
    bob.machine.generate_qr_code(user_id(ALICE), &txn).unwrap();
    // Alice's device never saw the code; a start with a guessed secret.
    server
        .inboxes
        .entry((BOB.to_owned(), "BOBPHONE".to_owned()))
        .or_default()
        .push(json!({
            "type": "m.key.verification.start",
            "sender": ALICE,
            "content": {
                "transaction_id": txn, "from_device": "ALICEDEV",
                "method": "m.reciprocate.v1", "secret": vodozemac::base64_encode([7u8; 16]),
            },
        }));
    step(&mut server, &mut bob);
    assert_eq!(
        phase(&bob, ALICE, &txn),
        VerificationPhase::Cancelled {
            code: CancelCode::KeyMismatch,
            by_us: true
        }
    );
    assert!(
        bob.machine
            .confirm_qr_scanned(user_id(ALICE), &txn)
            .is_err()
    );
    assert!(
        !bob.machine
            .user_identity(super::user_id(ALICE))
            .unwrap()
            .is_verified
    );
}

#[test]
fn a_qr_code_verification_runs_in_a_room_too() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    bootstrap(&mut alice, &mut server);
    bootstrap(&mut bob, &mut server);
    settle(&mut server, &mut alice, &mut bob);
    let mut timeline = Timeline::default();
    let txn = in_room_ready(
        &mut server,
        &mut timeline,
        &mut alice,
        &mut bob,
        Sends::Clear,
    );

    let code = bob.machine.generate_qr_code(user_id(ALICE), &txn).unwrap();
    alice
        .machine
        .scan_qr_code(user_id(BOB), &txn, &code, alice.now_ms)
        .unwrap();
    let both = |t: &mut Timeline, s: &mut FakeServer, a: &mut Client, b: &mut Client| {
        t.settle(s, (a, Sends::Encrypted), (b, Sends::Clear));
    };
    both(&mut timeline, &mut server, &mut alice, &mut bob);
    assert_eq!(phase(&bob, ALICE, &txn), VerificationPhase::TheyScannedQr);
    bob.machine
        .confirm_qr_scanned(user_id(ALICE), &txn)
        .unwrap();
    both(&mut timeline, &mut server, &mut alice, &mut bob);
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Done);
    assert_eq!(phase(&bob, ALICE, &txn), VerificationPhase::Done);
    assert!(
        alice
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
    assert!(
        bob.machine
            .user_identity(super::user_id(ALICE))
            .unwrap()
            .is_verified
    );
    // The reciprocate start went into the room, referencing the request.
    let start = timeline
        .events
        .iter()
        .filter(|e| e["sender"] == ALICE)
        .find_map(|e| {
            let clear = bob.decrypt(ROOM, e).ok()?;
            (clear.event_type == "m.key.verification.start").then_some(clear.content)
        })
        .expect("a start in the room");
    assert_eq!(start["method"], "m.reciprocate.v1");
    assert_eq!(start["m.relates_to"]["event_id"], txn.as_str());
}

/// Bob's phone (cross-signing keys, trusts the master key) and his laptop
/// (trusts no master key yet) with a to-device flow both see ready;
/// returns its transaction id.
fn own_devices_ready(server: &mut FakeServer, phone: &mut Client, laptop: &mut Client) -> String {
    bootstrap(phone, server);
    settle(server, phone, laptop);
    assert!(
        !laptop
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
    let txn = laptop
        .machine
        .request_verification(user_id(BOB), device_id("BOBPHONE"), laptop.now_ms)
        .unwrap();
    settle(server, laptop, phone);
    phone
        .machine
        .accept_verification_request(user_id(BOB), &txn)
        .unwrap();
    settle(server, laptop, phone);
    assert_eq!(phase(laptop, BOB, &txn), VerificationPhase::Ready);
    txn
}

fn laptop_signers(server: &FakeServer) -> usize {
    server.device_keys[BOB]["BOBLAPTOP"]["signatures"][BOB]
        .as_object()
        .unwrap()
        .len()
}

#[test]
fn a_qr_code_shown_by_the_device_that_trusts_the_master_key_verifies_the_new_one() {
    let mut server = FakeServer::default();
    let (_alice, mut phone, mut laptop) = alice_and_bob(&mut server);
    let txn = own_devices_ready(&mut server, &mut phone, &mut laptop);

    let code = phone.machine.generate_qr_code(user_id(BOB), &txn).unwrap();
    assert_eq!(
        code[7], 0x01,
        "mode 1: shown by a device that trusts the master key"
    );
    laptop
        .machine
        .scan_qr_code(user_id(BOB), &txn, &code, laptop.now_ms)
        .unwrap();
    settle(&mut server, &mut laptop, &mut phone);
    assert_eq!(phase(&phone, BOB, &txn), VerificationPhase::TheyScannedQr);
    phone
        .machine
        .confirm_qr_scanned(user_id(BOB), &txn)
        .unwrap();
    settle(&mut server, &mut laptop, &mut phone);

    assert_eq!(phase(&phone, BOB, &txn), VerificationPhase::Done);
    assert_eq!(phase(&laptop, BOB, &txn), VerificationPhase::Done);
    assert_eq!(laptop_signers(&server), 2, "the phone signed the laptop");
    assert!(
        laptop
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
    assert!(
        laptop
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBPHONE"))
    );
    assert!(
        phone
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBLAPTOP"))
    );
}

#[test]
fn a_qr_code_shown_by_the_new_device_is_checked_and_signed_by_the_trusted_one() {
    let mut server = FakeServer::default();
    let (_alice, mut phone, mut laptop) = alice_and_bob(&mut server);
    let txn = own_devices_ready(&mut server, &mut phone, &mut laptop);

    let code = laptop.machine.generate_qr_code(user_id(BOB), &txn).unwrap();
    assert_eq!(
        code[7], 0x02,
        "mode 2: shown by a device that trusts no master key"
    );
    phone
        .machine
        .scan_qr_code(user_id(BOB), &txn, &code, phone.now_ms)
        .unwrap();
    settle(&mut server, &mut laptop, &mut phone);
    assert_eq!(phase(&laptop, BOB, &txn), VerificationPhase::TheyScannedQr);
    assert!(
        !laptop
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
    laptop
        .machine
        .confirm_qr_scanned(user_id(BOB), &txn)
        .unwrap();
    settle(&mut server, &mut laptop, &mut phone);

    assert_eq!(phase(&phone, BOB, &txn), VerificationPhase::Done);
    assert_eq!(phase(&laptop, BOB, &txn), VerificationPhase::Done);
    assert_eq!(laptop_signers(&server), 2, "the phone signed the laptop");
    assert!(
        laptop
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
    assert!(
        phone
            .machine
            .is_device_verified(super::user_id(BOB), super::device_id("BOBLAPTOP"))
    );
}

#[test]
fn a_new_device_shown_a_servers_master_key_is_caught_by_the_trusted_one() {
    let mut server = FakeServer::default();
    let (_alice, mut phone, mut laptop) = alice_and_bob(&mut server);
    let txn = own_devices_ready(&mut server, &mut phone, &mut laptop);
    let mut code = laptop.machine.generate_qr_code(user_id(BOB), &txn).unwrap();
    // key2, the master key the laptop believes in, replaced by one the
    // server made up.
    let key2 = 10 + txn.len() + 32;
    let fake = vodozemac::Ed25519SecretKey::new().public_key();
    code[key2..key2 + 32].copy_from_slice(fake.as_bytes());
    assert_eq!(
        phone
            .machine
            .scan_qr_code(user_id(BOB), &txn, &code, phone.now_ms),
        Err(verification::VerificationError::Qr(
            verification::QrError::KeyMismatch
        ))
    );
    settle(&mut server, &mut laptop, &mut phone);
    assert_eq!(
        phase(&laptop, BOB, &txn),
        VerificationPhase::Cancelled {
            code: CancelCode::KeyMismatch,
            by_us: false
        }
    );
    assert_eq!(laptop_signers(&server), 1);
    assert!(
        !laptop
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
}

#[test]
fn a_code_whose_mode_does_not_fit_the_flow_is_refused() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = cross_signed_and_ready(&mut server, &mut alice, &mut bob);
    let mut code = bob.machine.generate_qr_code(user_id(ALICE), &txn).unwrap();
    code[7] = 0x02;
    assert_eq!(
        alice
            .machine
            .scan_qr_code(user_id(BOB), &txn, &code, alice.now_ms),
        Err(verification::VerificationError::Qr(
            verification::QrError::WrongMode(0x02)
        ))
    );
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Ready);
}

#[test]
fn a_room_event_delivered_twice_is_taken_once() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let mut timeline = Timeline::default();
    let txn = in_room_ready(
        &mut server,
        &mut timeline,
        &mut alice,
        &mut bob,
        Sends::Clear,
    );
    bob.machine
        .start_sas(user_id(ALICE), &txn, bob.now_ms)
        .unwrap();
    timeline.step(&mut server, &mut bob, Sends::Clear);
    timeline.step(&mut server, &mut alice, Sends::Encrypted);
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Started);
    // The same start again, as a repeated sync would hand it over: without
    // its event id remembered it would be out of order and cancel.
    let start = timeline.events.last().unwrap().clone();
    assert_eq!(start["type"], "m.key.verification.start");
    alice
        .machine
        .receive_room_verification_event(room_id(ROOM), &start, alice.now_ms);
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Started);
    assert!(alice.machine.take_room_verification_messages().is_empty());
}
