//! The SDK scenarios of sdk_chat.rs, sdk_e2ee.rs (end-to-end encryption)
//! sdk_cross_signing.rs and sdk_verification.rs (emoji verification) against a homeserver we did not start,
//! named by `MYELIN_SDK_HOMESERVER` (a URL). Ignored by default;
//! `tests/interop/sdk.sh` runs it, and `tests/interop/synapse.sh
//! tests/interop/sdk.sh` runs it against a throwaway Synapse (see
//! tests/interop/README.md).
//!
//! The server must allow open registration (`m.login.dummy`) and not
//! rate-limit a handful of requests.

use crate::{
    sdk_chat::{encrypted_rooms, two_clients_chat},
    sdk_cross_signing::{
        a_verified_users_signed_device_is_verified_and_an_unsigned_one_is_not_on,
        keys_and_trust_survive_a_restart_on, replacing_cross_signing_keys_needs_the_password_on,
    },
    sdk_e2ee::{
        a_member_who_left_cannot_decrypt_later_messages_on,
        a_restarted_device_keeps_its_sessions_on, users_and_devices_exchange_encrypted_messages_on,
    },
};

/// The environment variable naming the homeserver.
const HOMESERVER_VAR: &str = "MYELIN_SDK_HOMESERVER";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a running homeserver: run tests/interop/sdk.sh"]
async fn two_sdk_clients_chat_through_any_homeserver() {
    let homeserver =
        std::env::var(HOMESERVER_VAR).unwrap_or_else(|_| panic!("set {HOMESERVER_VAR}"));
    two_clients_chat(&homeserver).await;
    encrypted_rooms(&homeserver).await;
    users_and_devices_exchange_encrypted_messages_on(&homeserver).await;
    a_member_who_left_cannot_decrypt_later_messages_on(&homeserver).await;
    a_restarted_device_keeps_its_sessions_on(&homeserver).await;
    a_verified_users_signed_device_is_verified_and_an_unsigned_one_is_not_on(&homeserver).await;
    replacing_cross_signing_keys_needs_the_password_on(&homeserver).await;
    keys_and_trust_survive_a_restart_on(&homeserver).await;
    crate::sdk_verification::two_users_verify_each_other_by_emoji_on(&homeserver).await;
}
