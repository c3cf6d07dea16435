//! When flows end without either user deciding: the spec's deadlines
//! (driven by the injected clock of the test clients, through
//! `expire_verifications` at each sync), a device attempting twice, starts
//! that cross, and requests another of our devices answered first.

use serde_json::{Value, json};

use super::{Sends, Timeline, phase, ready, settle, step};
use crate::machine::{
    CancelCode,
    VerificationPhase::{self, Cancelled},
    tests::{
        ALICE, BOB, alice_and_bob, device_id, event_id, room_id,
        server::{Client, FakeServer},
        user_id,
    },
    verification,
};

/// Puts a to-device event from `sender` into `user`/`device`'s inbox, as
/// a client (or the server) would have sent it.
fn deliver(server: &mut FakeServer, (user, device): (&str, &str), event: Value) {
    server
        .inboxes
        .entry((user.to_owned(), device.to_owned()))
        .or_default()
        .push(event);
}

/// A to-device request from Alice's device, dated `timestamp`.
fn request_from_alice(transaction_id: &str, timestamp: u64) -> Value {
    json!({
        "type": "m.key.verification.request",
        "sender": ALICE,
        "content": {
            "from_device": "ALICEDEV",
            "methods": ["m.sas.v1"],
            "timestamp": timestamp,
            "transaction_id": transaction_id,
        },
    })
}

/// The `code`s of the cancels waiting in a device's inbox.
fn cancels(server: &FakeServer, user: &str, device: &str) -> Vec<(String, String)> {
    server
        .inboxes
        .get(&(user.to_owned(), device.to_owned()))
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.key.verification.cancel")
        .map(|e| {
            (
                e["content"]["transaction_id"].as_str().unwrap().to_owned(),
                e["content"]["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn cancelled(code: CancelCode, by_us: bool) -> VerificationPhase {
    Cancelled { code, by_us }
}

/// Alice asks Bob in the room; returns the request's event id once each
/// of `bob`'s devices (taking the room's events in the clear) holds it.
fn requested_in_room(
    server: &mut FakeServer,
    timeline: &mut Timeline,
    alice: &mut Client,
    bob: [&mut Client; 2],
) -> String {
    let request = alice
        .machine
        .room_verification_request(user_id(BOB))
        .unwrap();
    let txn = timeline.post(server, alice, Sends::Encrypted, "m.room.message", &request);
    alice
        .machine
        .room_verification_request_sent(
            room_id(super::ROOM),
            user_id(BOB),
            event_id(&txn),
            alice.now_ms,
        )
        .unwrap();
    for device in bob {
        timeline.step(server, device, Sends::Clear);
        assert_eq!(phase(device, ALICE, &txn), VerificationPhase::Requested);
    }
    txn
}

#[test]
fn a_request_dated_more_than_five_minutes_ahead_is_ignored() {
    let mut server = FakeServer::default();
    let (_alice, mut bob, _) = alice_and_bob(&mut server);
    let now = bob.now_ms;
    deliver(
        &mut server,
        (BOB, "BOBPHONE"),
        request_from_alice("ahead", now + verification::REQUEST_FUTURE_MS + 1),
    );
    deliver(
        &mut server,
        (BOB, "BOBPHONE"),
        request_from_alice("just-in-time", now + verification::REQUEST_FUTURE_MS),
    );
    step(&mut server, &mut bob);
    assert!(bob.machine.verification(user_id(ALICE), "ahead").is_none());
    assert_eq!(
        phase(&bob, ALICE, "just-in-time"),
        VerificationPhase::Requested
    );
}

#[test]
fn an_idle_flow_times_out_though_its_request_is_dated_ahead() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    // Alice's clock runs four minutes ahead: the request's own deadline
    // would come fourteen minutes after Bob got it; ten idle minutes end
    // it first.
    let received = bob.now_ms;
    deliver(
        &mut server,
        (BOB, "BOBPHONE"),
        request_from_alice("skewed", received + 4 * 60 * 1000),
    );
    step(&mut server, &mut bob);
    bob.now_ms = received + verification::IDLE_TIMEOUT_MS - 1;
    step(&mut server, &mut bob);
    assert_eq!(phase(&bob, ALICE, "skewed"), VerificationPhase::Requested);
    bob.now_ms += 1;
    step(&mut server, &mut bob);
    assert_eq!(
        phase(&bob, ALICE, "skewed"),
        cancelled(CancelCode::Timeout, true)
    );
    assert_eq!(
        cancels(&server, ALICE, "ALICEDEV"),
        [("skewed".to_owned(), "m.timeout".to_owned())]
    );

    // The finished flow is forgotten once its transaction id has been idle
    // as long again; a late message for it is then for a flow Bob does not
    // have.
    bob.now_ms += verification::IDLE_TIMEOUT_MS - 1;
    step(&mut server, &mut bob);
    assert!(bob.machine.verification(user_id(ALICE), "skewed").is_some());
    bob.now_ms += 1;
    step(&mut server, &mut bob);
    assert!(bob.machine.verification(user_id(ALICE), "skewed").is_none());
    step(&mut server, &mut alice);
    deliver(
        &mut server,
        (BOB, "BOBPHONE"),
        json!({"type": "m.key.verification.ready", "sender": ALICE,
               "content": {"from_device": "ALICEDEV", "methods": ["m.sas.v1"],
                           "transaction_id": "skewed"}}),
    );
    step(&mut server, &mut bob);
    assert_eq!(
        cancels(&server, ALICE, "ALICEDEV"),
        [("skewed".to_owned(), "m.unknown_transaction".to_owned())]
    );
}

#[test]
fn each_message_of_a_flow_restarts_its_idle_clock_but_not_its_request_deadline() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = alice
        .machine
        .request_verification(user_id(BOB), device_id("BOBPHONE"), alice.now_ms)
        .unwrap();
    settle(&mut server, &mut alice, &mut bob);
    // Bob answers nine minutes later; the flow is active, yet it must
    // complete within ten minutes of the request.
    let nine_minutes = 9 * 60 * 1000;
    alice.now_ms += nine_minutes;
    bob.now_ms += nine_minutes;
    bob.machine
        .accept_verification_request(user_id(ALICE), &txn)
        .unwrap();
    settle(&mut server, &mut alice, &mut bob);
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Ready);
    alice.now_ms += 60 * 1000 - 1;
    step(&mut server, &mut alice);
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Ready);
    alice.now_ms += 1;
    settle(&mut server, &mut alice, &mut bob);
    assert_eq!(
        phase(&alice, BOB, &txn),
        cancelled(CancelCode::Timeout, true)
    );
    assert_eq!(
        phase(&bob, ALICE, &txn),
        cancelled(CancelCode::Timeout, false)
    );
}

#[test]
fn a_second_attempt_from_the_same_device_cancels_both() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let first = ready(&mut server, &mut alice, &mut bob);
    let second = alice
        .machine
        .request_verification(user_id(BOB), device_id("BOBPHONE"), alice.now_ms)
        .unwrap();
    step(&mut server, &mut alice);
    step(&mut server, &mut bob);
    let unexpected = |by_us| cancelled(CancelCode::UnexpectedMessage, by_us);
    assert_eq!(phase(&bob, ALICE, &first), unexpected(true));
    assert!(
        bob.machine.verification(user_id(ALICE), &second).is_none(),
        "the second attempt opens nothing"
    );
    let mut told = cancels(&server, ALICE, "ALICEDEV");
    told.sort();
    let mut expected = vec![
        (first.clone(), "m.unexpected_message".to_owned()),
        (second.clone(), "m.unexpected_message".to_owned()),
    ];
    expected.sort();
    assert_eq!(told, expected);
    step(&mut server, &mut alice);
    assert_eq!(phase(&alice, BOB, &first), unexpected(false));
    assert_eq!(phase(&alice, BOB, &second), unexpected(false));

    // Once those ended, the device may ask again.
    let third = alice
        .machine
        .request_verification(user_id(BOB), device_id("BOBPHONE"), alice.now_ms)
        .unwrap();
    settle(&mut server, &mut alice, &mut bob);
    assert_eq!(phase(&bob, ALICE, &third), VerificationPhase::Requested);
}

#[test]
fn crossing_starts_with_different_methods_cancel_with_unexpected_message() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let txn = ready(&mut server, &mut alice, &mut bob);
    alice
        .machine
        .start_sas(user_id(BOB), &txn, alice.now_ms)
        .unwrap();
    // Bob's device started too, with a method of its own, before it saw
    // Alice's start.
    let mut start = verification::test_start_content(BOB, "BOBPHONE", &txn);
    start["method"] = json!("org.example.other.v1");
    deliver(
        &mut server,
        (ALICE, "ALICEDEV"),
        json!({"type": "m.key.verification.start", "sender": BOB, "content": start}),
    );
    step(&mut server, &mut alice);
    assert_eq!(
        phase(&alice, BOB, &txn),
        cancelled(CancelCode::UnexpectedMessage, true)
    );
}

#[test]
fn a_request_to_all_our_devices_declined_on_one_is_withdrawn_from_the_others() {
    let mut server = FakeServer::default();
    let (_alice, mut bob, mut laptop) = alice_and_bob(&mut server);
    let mut tablet = Client::new(&mut server, BOB, "BOBTABLET");
    tablet.sync(
        &mut server,
        vec![super::super::encrypted_room(&[ALICE, BOB])],
    );
    server.notify_change(BOB);
    settle(&mut server, &mut bob, &mut laptop);

    let txn = bob.machine.request_own_verification(bob.now_ms).unwrap();
    step(&mut server, &mut bob);
    step(&mut server, &mut laptop);
    step(&mut server, &mut tablet);
    assert_eq!(phase(&laptop, BOB, &txn), VerificationPhase::Requested);
    tablet
        .machine
        .cancel_verification(user_id(BOB), &txn)
        .unwrap();
    step(&mut server, &mut tablet);
    step(&mut server, &mut bob);
    assert_eq!(phase(&bob, BOB, &txn), cancelled(CancelCode::User, false));
    step(&mut server, &mut laptop);
    assert_eq!(
        phase(&laptop, BOB, &txn),
        cancelled(CancelCode::User, false)
    );
}

#[test]
fn a_request_another_of_our_devices_took_in_the_room_is_dismissed() {
    let mut server = FakeServer::default();
    let (mut alice, mut phone, mut laptop) = alice_and_bob(&mut server);
    let mut timeline = Timeline::default();
    let txn = requested_in_room(
        &mut server,
        &mut timeline,
        &mut alice,
        [&mut phone, &mut laptop],
    );

    phone
        .machine
        .accept_verification_request(user_id(ALICE), &txn)
        .unwrap();
    timeline.step(&mut server, &mut phone, Sends::Encrypted);
    // The phone's own echo leaves its flow as it was.
    timeline.step(&mut server, &mut phone, Sends::Encrypted);
    assert_eq!(phase(&phone, ALICE, &txn), VerificationPhase::Ready);
    timeline.step(&mut server, &mut laptop, Sends::Clear);
    assert_eq!(
        phase(&laptop, ALICE, &txn),
        cancelled(CancelCode::Accepted, false)
    );
    assert!(
        laptop.machine.take_room_verification_messages().is_empty(),
        "nothing is said in the room about it"
    );
    timeline.step(&mut server, &mut alice, Sends::Encrypted);
    assert_eq!(phase(&alice, BOB, &txn), VerificationPhase::Ready);
}

#[test]
fn a_request_another_of_our_devices_declined_in_the_room_is_dismissed() {
    let mut server = FakeServer::default();
    let (mut alice, mut phone, mut laptop) = alice_and_bob(&mut server);
    let mut timeline = Timeline::default();
    let txn = requested_in_room(
        &mut server,
        &mut timeline,
        &mut alice,
        [&mut phone, &mut laptop],
    );
    phone
        .machine
        .cancel_verification(user_id(ALICE), &txn)
        .unwrap();
    timeline.step(&mut server, &mut phone, Sends::Clear);
    timeline.step(&mut server, &mut laptop, Sends::Clear);
    assert_eq!(
        phase(&laptop, ALICE, &txn),
        cancelled(CancelCode::User, false)
    );
}

#[test]
fn a_to_device_request_another_of_our_devices_took_is_dismissed_when_told() {
    let mut server = FakeServer::default();
    let (_alice, mut phone, mut laptop) = alice_and_bob(&mut server);
    // Alice's client asks all of Bob's devices at once, as the spec allows.
    let now = phone.now_ms;
    for device in ["BOBPHONE", "BOBLAPTOP"] {
        deliver(
            &mut server,
            (BOB, device),
            request_from_alice("to-all", now),
        );
    }
    step(&mut server, &mut phone);
    step(&mut server, &mut laptop);
    laptop
        .machine
        .accept_verification_request(user_id(ALICE), "to-all")
        .unwrap();
    step(&mut server, &mut laptop);
    // Alice tells Bob's other device that the laptop took it.
    deliver(
        &mut server,
        (BOB, "BOBPHONE"),
        json!({"type": "m.key.verification.cancel", "sender": ALICE,
               "content": {"code": "m.accepted", "reason": "Accepted elsewhere",
                           "transaction_id": "to-all"}}),
    );
    step(&mut server, &mut phone);
    assert_eq!(
        phase(&phone, ALICE, "to-all"),
        cancelled(CancelCode::Accepted, false)
    );
    assert_eq!(phase(&laptop, ALICE, "to-all"), VerificationPhase::Ready);
    assert!(
        cancels(&server, ALICE, "ALICEDEV").is_empty(),
        "the phone answers nothing"
    );
}
