//! Integration tests against in-process Myelin servers over real HTTP.
//! One binary, one link step.

#![allow(
    clippy::cloned_ref_to_slice_refs,
    reason = "`[id.clone()]` reads better than `slice::from_ref` in assertions"
)]

mod accounts;
mod attacks;
mod context;
mod deactivation;
mod dehydrated_devices;
mod devices;
mod e2e_only_rooms;
mod errors;
mod federation_chat;
mod federation_e2ee;
mod federation_fake_peer;
mod federation_inbound;
mod federation_inbound_support;
mod federation_membership;
mod federation_transport;
mod guests;
mod key_backup;
mod keys_claim;
mod keys_cross_signing;
mod keys_device_lists;
mod keys_support;
mod keys_upload;
mod media;
mod members_at;
mod messages;
mod password;
mod presence;
mod profile;
mod push;
mod push_rules;
mod pushers;
mod refresh_tokens;
mod rooms_concurrency;
mod rooms_create;
mod rooms_directory;
mod rooms_join_rules;
mod rooms_membership;
mod rooms_redact;
mod rooms_send;
mod rooms_state;
mod rooms_support;
mod rooms_upgrade;
mod rooms_versions;
mod sdk_attachments;
mod sdk_backup;
mod sdk_backup_reads;
mod sdk_chat;
mod sdk_cross_signing;
mod sdk_dehydrated_devices;
mod sdk_e2ee;
mod sdk_errors;
mod sdk_example;
mod sdk_history;
mod sdk_homeserver;
mod sdk_identity_changes;
mod sdk_interop;
mod sdk_keys_query_backoff;
mod sdk_persist_before_send;
mod sdk_recovery;
mod sdk_restart;
mod sdk_secret_sharing;
mod sdk_secret_storage;
mod sdk_support;
mod sdk_verification;
mod server_keys;
mod storage;
mod stored_events;
mod sync;
mod sync_filters;
mod sync_format;
mod sync_gaps;
mod sync_lazy;
mod sync_support;
mod sync_visibility;
mod tags;
mod tls;
mod to_device;
mod user_directory;
