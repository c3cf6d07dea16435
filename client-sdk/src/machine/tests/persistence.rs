//! What a crash between saving and sending must not lose.

use super::{
    BOB, ROOM, alice_and_bob, body, room_id,
    server::{Client, FakeServer},
};
use crate::machine::{Changes, CryptoStore, Request, UtdCause};

fn is_olm_to_device(request: &Request) -> bool {
    matches!(request, Request::ToDevice { event_type, .. } if event_type == "m.room.encrypted")
}

/// Shares the room key like [`Client::share`], but keeps (does not send)
/// the `m.room_key` batch; everything built is saved.
fn share_but_keep_room_keys(client: &mut Client, server: &mut FakeServer) -> usize {
    let mut kept = 0;
    for _ in 0..10 {
        let requests = client
            .machine
            .share_room_key(super::room_id(ROOM), client.now_ms)
            .unwrap();
        client.save();
        if requests.is_empty() {
            return kept;
        }
        for request in requests {
            if is_olm_to_device(&request.request) {
                kept += 1;
            } else {
                client.answer(server, &request);
            }
        }
        client.save();
    }
    panic!("sharing did not settle");
}

#[test]
fn room_keys_saved_but_not_sent_before_a_crash_are_sent_after_the_restart() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, mut bob2) = alice_and_bob(&mut server);
    // The batch is built and its Olm steps saved; the process dies before
    // the request leaves.
    assert_eq!(share_but_keep_room_keys(&mut alice, &mut server), 1);
    alice.reload();
    let event = alice.send(&mut server, ROOM, "sent after the restart");
    alice.send_outgoing(&mut server);
    for device in [&mut bob, &mut bob2] {
        device.sync(&mut server, vec![]);
        let decrypted = device.decrypt(ROOM, &event).unwrap();
        assert_eq!(body(&decrypted), "sent after the restart");
    }
    // Sent once: the record is gone, nothing is sent again.
    alice.reload();
    assert!(alice.machine.outgoing_requests().is_empty());
}

#[test]
fn a_key_request_queued_before_a_crash_is_sent_after_the_restart() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = alice_and_bob(&mut server);
    let event = alice.send(&mut server, ROOM, "lost key");
    // The key never reaches Bob's phone.
    server
        .inboxes
        .remove(&(BOB.to_owned(), "BOBPHONE".to_owned()));
    bob.sync(&mut server, vec![]);
    assert_eq!(
        bob.decrypt(ROOM, &event).unwrap_err().cause,
        UtdCause::MissingRoomKey
    );
    // The decryption queued an m.room_key_request and was saved; crash.
    bob.reload();
    let requests = bob.machine.outgoing_requests();
    assert!(
        requests.iter().any(|r| matches!(
            &r.request,
            Request::ToDevice { event_type, body, .. }
                if event_type == "m.room_key_request" && body["messages"][BOB]["*"]["action"] == "request"
        )),
        "{requests:?}"
    );
    for request in &requests {
        bob.answer(&mut server, request);
    }
    bob.save();
}

#[test]
fn a_change_set_that_could_not_be_saved_is_taken_again_under_newer_changes() {
    let mut server = FakeServer::default();
    let (mut alice, _, _) = alice_and_bob(&mut server);
    alice.machine.set_only_verified(super::room_id(ROOM), true);
    let lost = alice.machine.take_changes();
    let room_key = format!("room/{ROOM}");
    assert!(lost.records.contains_key(&room_key));
    // The commit failed: the client hands the set back; a newer change to
    // the same record wins over it.
    alice.machine.restore_changes(lost.clone());
    alice.machine.set_only_verified(super::room_id(ROOM), false);
    let again = alice.machine.take_changes();
    assert!(lost.records.keys().all(|k| again.records.contains_key(k)));
    assert_ne!(again.records[&room_key], lost.records[&room_key]);
}

#[test]
fn records_saved_under_ids_that_never_parsed_are_dropped_at_load() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _bob2) = alice_and_bob(&mut server);
    alice.send(&mut server, ROOM, "before the restart");
    // Written before ids were parsed: the room's records, copied under a
    // room id that is none, and Bob's device list under a user id that is
    // none.
    let records = alice.store.load_all().unwrap();
    let mut legacy = Changes::default();
    let mut invalid_keys = Vec::new();
    for (key, value) in &records {
        let kind = key.split('/').next().unwrap_or_default();
        let renamed = match kind {
            "room" | "outbound" | "outbound_shares" | "inbound" | "replay" => {
                key.replace(ROOM, "not a room")
            }
            "devices" if key.ends_with(BOB) => key.replace(BOB, "not a user"),
            _ => continue,
        };
        let value = String::from_utf8(value.clone())
            .unwrap()
            .replace(ROOM, "not a room")
            .replace(BOB, "not a user");
        legacy.put(renamed.clone(), value.into_bytes());
        invalid_keys.push(renamed);
    }
    assert!(invalid_keys.iter().any(|k| k.starts_with("outbound/")));
    assert!(invalid_keys.iter().any(|k| k.starts_with("devices/")));
    // And the room's own session shared with a user id that is none: its
    // recipients are lost, so the session must not encrypt again.
    let shares_key = format!("outbound_shares/{ROOM}");
    let shares = String::from_utf8(records[&shares_key].clone()).unwrap();
    assert!(shares.contains(BOB));
    legacy.put(
        shares_key.clone(),
        shares.replace(BOB, "not a user").into_bytes(),
    );
    invalid_keys.push(shares_key);
    invalid_keys.push(format!("outbound/{ROOM}"));
    let first_session = alice.machine.outbound_session_id(room_id(ROOM)).unwrap();
    alice.store.save(legacy).unwrap();

    alice.reload();
    let deleted = alice.machine.take_changes().records;
    for key in &invalid_keys {
        assert_eq!(deleted.get(key), Some(&None), "{key} not dropped");
    }
    // What was valid still works: the room, its session, Bob's devices.
    assert_eq!(alice.machine.outbound_session_id(room_id(ROOM)), None);
    let event = alice.send(&mut server, ROOM, "after the restart");
    assert_ne!(
        alice.machine.outbound_session_id(room_id(ROOM)).unwrap(),
        first_session
    );
    bob.sync(&mut server, vec![]);
    assert_eq!(
        body(&bob.decrypt(ROOM, &event).unwrap()),
        "after the restart"
    );
}
