//! Attachments through the SDK against a Myelin server: in an encrypted
//! room the server stores only ciphertext and Bob's client gets the file
//! back byte for byte; bytes that are not the ones the sender hashed are
//! refused; in a plain room the file travels as is.

use myelin_sdk::{
    Client, Error, Room, RoomEvent, RoomSecurity, myelin_crypto::attachment::AttachmentError,
};
use myelin_tests::{Backend, TestServer, backend_tests, random_suffix};
use serde_json::Value;

use crate::{
    sdk_e2ee::{shared_room, until_decrypted},
    sdk_support::registered,
};

backend_tests!(
    an_encrypted_attachment_reaches_bob_and_only_ciphertext_reaches_the_server,
    a_plain_room_gets_a_plain_url
);

/// Bob's client, and Alice's handle on a room of `security` they share.
async fn alice_and_bob(server: &TestServer, security: RoomSecurity) -> (Client, Room) {
    let url = &server.base_url;
    let suffix = &random_suffix()[..8];
    let alice = registered(url, &format!("alice{suffix}")).await;
    let bob = registered(url, &format!("bob{suffix}")).await;
    let room = shared_room(&alice, &bob, security).await;
    (bob, room)
}

/// Bytes that are not UTF-8, over several AES blocks and not a multiple of 16.
fn document(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

async fn an_encrypted_attachment_reaches_bob_and_only_ciphertext_reaches_the_server(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let (bob, room) = alice_and_bob(&server, RoomSecurity::Encrypted).await;

    let plaintext = document(100_003);
    room.send_attachment("report.pdf", "application/pdf", &plaintext)
        .await
        .unwrap();
    let seen = until_decrypted(&bob, "report.pdf").await;
    assert_eq!(seen.event_type, "m.room.message");
    assert_eq!(seen.content["msgtype"], "m.file");
    assert_eq!(seen.content["info"]["size"], plaintext.len());
    assert!(
        seen.content.get("url").is_none(),
        "no plain url: {}",
        seen.content
    );
    let file = &seen.content["file"];
    assert_eq!(file["v"], "v2");

    // Bob gets the file back, byte for byte.
    assert_eq!(bob.download_attachment(file).await.unwrap(), plaintext);
    // Also streamed, chunk by chunk, into a writer.
    let mut streamed = Vec::new();
    let written = bob
        .download_attachment_to(file, &mut streamed)
        .await
        .unwrap();
    assert_eq!(written, plaintext.len() as u64);
    assert_eq!(streamed, plaintext);

    // The server holds ciphertext of the same length, unrelated to the
    // plaintext; the event it stores is m.room.encrypted, without the key.
    let media_url = file["url"].as_str().unwrap();
    let raw = bob.download_media(media_url).await.unwrap();
    assert_eq!(raw.len(), plaintext.len());
    assert_ne!(raw, plaintext);
    assert!(!raw.windows(64).any(|w| w == &plaintext[..64]));
    let history = room.messages(None, 50).await.unwrap().events;
    let stored: Vec<&RoomEvent> = history.iter().filter(|e| !e.is_state()).collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_type, "m.room.encrypted");
    let key = file["key"]["k"].as_str().unwrap();
    assert!(!stored[0].content.to_string().contains(key));

    // A malicious server (or sender) serving other ciphertext under this
    // event's key and hash: here another file's media id. Refused, and no
    // plaintext comes back.
    room.send_attachment("other.png", "image/png", &document(5_000))
        .await
        .unwrap();
    let other = until_decrypted(&bob, "other.png").await;
    assert_eq!(other.content["msgtype"], "m.image");
    let mut swapped: Value = file.clone();
    swapped["url"] = other.content["file"]["url"].clone();
    let refused = bob.download_attachment(&swapped).await.unwrap_err();
    assert!(
        matches!(refused, Error::Attachment(AttachmentError::HashMismatch)),
        "{refused:?}"
    );
    let mut unverified = Vec::new();
    let refused = bob
        .download_attachment_to(&swapped, &mut unverified)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::Attachment(AttachmentError::HashMismatch)),
        "{refused:?}"
    );

    // A `file` object that is not v2, or whose key is not a 256-bit AES-CTR
    // JWK, is refused before any download.
    let mut old = file.clone();
    old["v"] = "v1".into();
    assert!(matches!(
        bob.download_attachment(&old).await.unwrap_err(),
        Error::Attachment(AttachmentError::UnsupportedVersion)
    ));
    let mut weak = file.clone();
    weak["key"]["alg"] = "A128CTR".into();
    assert!(matches!(
        bob.download_attachment(&weak).await.unwrap_err(),
        Error::Attachment(AttachmentError::UnsupportedKey("alg"))
    ));
}

async fn a_plain_room_gets_a_plain_url(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (bob, room) = alice_and_bob(&server, RoomSecurity::Plain).await;

    let plaintext = document(2_000);
    let id = room
        .send_attachment("cat.png", "image/png", &plaintext)
        .await
        .unwrap();
    let history = room.messages(None, 50).await.unwrap().events;
    let event = history.iter().find(|e| e.event_id == id).unwrap();
    assert_eq!(event.event_type, "m.room.message");
    assert_eq!(event.content["msgtype"], "m.image");
    assert!(event.content.get("file").is_none());
    let media_url = event.content["url"].as_str().unwrap();
    assert_eq!(bob.download_media(media_url).await.unwrap(), plaintext);
}
