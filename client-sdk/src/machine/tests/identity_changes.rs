//! A verified user whose identity changes: a verification violation, which
//! refuses sharing and encrypting until the application acknowledges it.

use super::{
    ALICE, BOB, MachineError, ROOM, body,
    cross_signing::{alice_verified_bob, bootstrap, cross_signed_alice_and_bob, verify},
    server::{Client, FakeServer},
};
use crate::machine::RoomUpdate;

fn refused_for_bob(result: Result<impl std::fmt::Debug, MachineError>) {
    match result {
        Err(MachineError::VerificationViolation { user_ids }) => {
            assert_eq!(user_ids, vec![BOB.to_owned()]);
        }
        other => panic!("expected a verification violation, got {other:?}"),
    }
}

/// Alice verified Bob, then Bob's identity changed (new keys made on his
/// laptop: a reset, or the server's own keys; Alice cannot tell which).
fn bobs_identity_changed_after_alice_verified_him(
    server: &mut FakeServer,
) -> (Client, Client, Client) {
    let (mut alice, mut bob, mut bob2) = alice_verified_bob(server);
    let before = alice.send(server, ROOM, "before");
    bob.sync(server, vec![]);
    assert_eq!(body(&bob.decrypt(ROOM, &before).unwrap()), "before");
    bootstrap(&mut bob2, server);
    alice.sync(server, vec![]);
    (alice, bob, bob2)
}

#[test]
fn a_verified_users_new_identity_blocks_sending_until_acknowledged() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = bobs_identity_changed_after_alice_verified_him(&mut server);

    let identity = alice.machine.user_identity(super::user_id(BOB)).unwrap();
    assert!(identity.has_verification_violation && !identity.is_verified);
    assert_eq!(
        alice.machine.verification_violations(),
        vec![BOB.to_owned()]
    );
    refused_for_bob(
        alice
            .machine
            .share_room_key(super::room_id(ROOM), alice.now_ms),
    );
    // The session shared before the change cannot be used either.
    refused_for_bob(alice.machine.encrypt_room_event(
        super::room_id(ROOM),
        "m.room.message",
        &serde_json::json!({"body": "x"}),
        alice.now_ms,
    ));
    // Pinning the new key (TOFU) is not acknowledging the violation.
    assert!(alice.machine.pin_identity(super::user_id(BOB)));
    refused_for_bob(
        alice
            .machine
            .share_room_key(super::room_id(ROOM), alice.now_ms),
    );
    // Nor does a restart forget it.
    alice.save();
    alice.reload();
    refused_for_bob(
        alice
            .machine
            .share_room_key(super::room_id(ROOM), alice.now_ms),
    );

    assert!(
        alice
            .machine
            .acknowledge_identity_change(super::user_id(BOB))
    );
    let identity = alice.machine.user_identity(super::user_id(BOB)).unwrap();
    assert!(!identity.has_verification_violation && !identity.has_changed);
    assert!(!identity.is_verified);
    assert!(alice.machine.verification_violations().is_empty());
    let after = alice.send(&mut server, ROOM, "after");
    bob.sync(&mut server, vec![]);
    assert_eq!(body(&bob.decrypt(ROOM, &after).unwrap()), "after");
    alice.reload();
    assert!(alice.machine.verification_violations().is_empty());
}

#[test]
fn verifying_the_new_identity_also_ends_the_violation() {
    let mut server = FakeServer::default();
    let (mut alice, _bob, _) = bobs_identity_changed_after_alice_verified_him(&mut server);
    assert!(alice.machine.pin_identity(super::user_id(BOB)));
    verify(&mut alice, &mut server, BOB);
    assert!(
        alice
            .machine
            .user_identity(super::user_id(BOB))
            .unwrap()
            .is_verified
    );
    assert!(alice.machine.verification_violations().is_empty());
    alice.send(&mut server, ROOM, "to the verified new identity");
}

#[test]
fn a_new_identity_of_a_user_never_verified_does_not_block() {
    let mut server = FakeServer::default();
    let (mut alice, _bob, mut bob2) = cross_signed_alice_and_bob(&mut server);
    bootstrap(&mut bob2, &mut server);
    alice.sync(&mut server, vec![]);
    let identity = alice.machine.user_identity(super::user_id(BOB)).unwrap();
    assert!(identity.has_changed && !identity.has_verification_violation);
    alice.send(&mut server, ROOM, "fine");
}

#[test]
fn the_policy_can_be_turned_off_and_stays_off_after_a_restart() {
    let mut server = FakeServer::default();
    let (mut alice, mut bob, _) = bobs_identity_changed_after_alice_verified_him(&mut server);
    assert!(alice.machine.verification_violations_block_sending());
    alice
        .machine
        .set_verification_violations_block_sending(false);
    alice.save();
    alice.reload();
    assert!(!alice.machine.verification_violations_block_sending());
    // Still shown, no longer blocking.
    assert_eq!(
        alice.machine.verification_violations(),
        vec![BOB.to_owned()]
    );
    let sent = alice.send(&mut server, ROOM, "regardless");
    bob.sync(&mut server, vec![]);
    assert_eq!(body(&bob.decrypt(ROOM, &sent).unwrap()), "regardless");
}

#[test]
fn a_violation_blocks_only_rooms_the_user_reads() {
    let mut server = FakeServer::default();
    let (mut alice, _bob, _) = bobs_identity_changed_after_alice_verified_him(&mut server);
    let alone = RoomUpdate {
        room_id: super::room("!alone:example.org"),
        ..super::encrypted_room(&[ALICE])
    };
    alice.sync(&mut server, vec![alone]);
    alice.send(&mut server, "!alone:example.org", "only me here");
    refused_for_bob(
        alice
            .machine
            .share_room_key(super::room_id(ROOM), alice.now_ms),
    );
}
