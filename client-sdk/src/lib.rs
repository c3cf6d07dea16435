//! Myelin's client SDK: an async Matrix [`Client`] with a sync loop, rooms,
//! timelines and a persistent, passphrase-protected store. It speaks the
//! [Client-Server API](https://spec.matrix.org/v1.16/client-server-api/)
//! to any homeserver (Myelin, Synapse, ...).
//!
//! # Layout
//!
//! - [`Client`] (`client.rs`): build from a homeserver URL or a server name
//!   ([discovery](ClientBuilder::server_name)), [register](Client::register),
//!   [log in](Client::login_password), [whoami](Client::whoami),
//!   [log out](Client::logout); a saved session is restored by
//!   [`ClientBuilder::build`] without logging in again.
//! - [`sync`]: the [sync loop](Client::sync) with a [`SyncHandler`]
//!   callback, or [`SyncStream`]; each [`SyncUpdate`] carries timeline
//!   events, state changes, invites, to-device events and device-list
//!   changes. The sync position is saved atomically with what it
//!   delivered.
//! - [`room`]: the room list ([`RoomInfo`]), [creating](Client::create_room)
//!   plain, encrypted or E2E-only rooms, and a [`Room`] handle to send
//!   (with transaction ids that survive retries and restarts), redact,
//!   paginate, type, send receipts, invite, join and leave.
//! - [`Client::send_to_device`]: batched to-device messages.
//! - [`store`] (spec-notes/client-store.md): the [`Store`] trait (namespaced records, atomic
//!   [`Changes`] batches) with [`SqliteStore`] and [`MemoryStore`];
//!   secrets sealed by [`SecretBox`] under a passphrase-derived key
//!   (myelin-crypto's `at_rest`). The crypto state machine keeps its own
//!   sealed namespaces in the same store.
//! - End-to-end encryption (spec-notes/key-distribution.md): login creates
//!   the device's Olm account and uploads its keys; each sync feeds the
//!   [`machine::OlmMachine`] (its changes saved with the sync position)
//!   and decrypts `m.room.encrypted` into [`SyncUpdate::decrypted`] or a
//!   typed cause in [`SyncUpdate::undecryptable`]; [`Room::send`] into an
//!   encrypted room shares the room key and sends `m.room.encrypted`.
//!   Plaintext never goes into an encrypted room. [`Client::devices`],
//!   [`Client::set_device_trust`] and [`Client::set_only_verified`] hold
//!   the local trust decisions.
//! - Cross-signing (spec-notes/cross-signing.md):
//!   [`Client::bootstrap_cross_signing`] (password UIA when replacing keys),
//!   [`Client::verify_user`], [`Client::verify_own_device`],
//!   [`Client::user_identity`],
//!   [`Client::pin_identity`] after a changed identity, and
//!   [`Client::is_device_verified`]; cross-signed devices of verified users
//!   count as verified for decryption and "only verified" sharing.
//! - SAS verification over to-device messages or in a room
//!   (spec-notes/verification.md): [`Client::request_verification`] or
//!   [`Client::request_verification_in_room`],
//!   [`Client::accept_verification_request`], [`Client::start_sas`],
//!   [`Client::accept_sas`], the emoji and numbers in
//!   [`Client::verification`], then [`Client::confirm_sas`] or
//!   [`Client::sas_mismatch`]; a success verifies the device and signs
//!   what cross-signing lets this device sign. QR codes between two
//!   cross-signed users: [`Client::generate_qr_code`],
//!   [`Client::scan_qr_code`], [`Client::confirm_qr_scanned`] (not between
//!   our own devices).
//! - [`Error`]: Matrix errors as a matchable [`ErrorKind`] with
//!   `retry_after`; network, store and malformed-answer errors. Nothing
//!   panics on a bad server answer.
//!
//! # Example
//!
//! Log in, join a room, send, and read the timeline (needs a homeserver,
//! so not run as a doctest; `examples/chat.rs` is a terminal client built
//! on the same calls):
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use myelin_sdk::{Client, LoopControl, SqliteStore, SyncSettings};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open("alice.db").await?;
//! let client = Client::builder()
//!     .server_name("example.org") // or .homeserver_url("https://matrix.example.org")
//!     .store(Arc::new(store))
//!     .passphrase("a passphrase that protects the access token")
//!     .build()
//!     .await?;
//! if client.session().is_none() {
//!     client.login_password("alice", "secret", Some("my laptop")).await?;
//! }
//! let room = client.join_room("#lobby:example.org").await?;
//! room.send_text("hello").await?;
//!
//! client
//!     .sync(SyncSettings::default(), |update: &myelin_sdk::SyncUpdate, _: &mut myelin_sdk::Changes| {
//!         for (room_id, event) in update.timeline_events() {
//!             println!("{room_id} {}: {}", event.sender, event.body().unwrap_or("<not text>"));
//!         }
//!         LoopControl::Continue
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Not supported yet
//!
//! - Parts of end-to-end encryption in [`Client`]: the client drives the
//!   [`machine::OlmMachine`] (see [`Client::decrypt_event`] and
//!   [`SyncUpdate::decrypted`]), but [`Room::messages`] returns ciphertext
//!   (decrypt each event with [`Client::decrypt_event`]); trust is a
//!   local decision ([`Client::set_device_trust`]), device warnings are
//!   only logged, and "only verified" is per room
//!   ([`Client::set_only_verified`]); key backup, cross-signing, history sharing and
//!   encrypted attachments are not built. A [`SyncHandler`] must not await
//!   an encrypted send (the crypto state is locked while it runs).
//! - SSO and other login flows than passwords; registration stages other
//!   than `m.login.dummy` and `m.login.registration_token`.
//! - Lazy-loaded members are not fetched on demand: [`RoomInfo::members`]
//!   holds the member events the syncs delivered.
//! - Rooms joined appear in [`Client::rooms`] after the next sync.

mod backup;
mod client;
mod cross_signing;
mod dehydration;
mod discovery;
mod encryption;
mod error;
pub mod events;
mod http;
mod key_export;
mod recovery;
pub mod room;
mod secret_storage;
mod session;
pub mod store;
pub mod sync;
mod to_device;
mod verification;

pub mod machine;

pub use myelin_crypto;
pub use ruma;

pub use self::{
    client::{Client, ClientBuilder, Registration, WhoAmI},
    dehydration::Rehydration,
    encryption::Decryption,
    error::{Error, ErrorKind, MatrixError, Result},
    events::{RoomEvent, StrippedStateEvent, ToDeviceEvent},
    http::RetryPolicy,
    room::{CreateRoom, Membership, Messages, PendingEvent, Room, RoomInfo, RoomSecurity},
    secret_storage::{SecretStorageRotation, SecretStorageUnlock},
    session::{AccessToken, SessionMeta},
    store::{Changes, MemoryStore, SecretBox, SqliteStore, Store, StoreError},
    sync::{LoopControl, SyncHandler, SyncSettings, SyncStream, SyncUpdate},
    to_device::ToDeviceMessages,
};
