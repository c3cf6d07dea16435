//! The Client-Server API, `/_matrix/client`.

mod account;
mod account_data;
mod auth_data;
mod capabilities;
mod dehydrated_devices;
mod devices;
pub(crate) mod directory;
mod events;
mod key_backup;
mod keys;
mod login;
mod notifications;
mod presence;
mod profile;
mod push_rules;
mod pushers;
mod register;
mod room_state;
mod rooms;
mod send;
mod sync;
mod to_device;
mod versions;

use axum::{
    Router,
    routing::{get, post, put},
};

use super::AppState;

/// Routes under `/_matrix/client`.
pub fn router() -> Router<AppState> {
    let v3 = Router::new()
        .route("/register", post(register::register))
        .route(
            "/register/available",
            get(register::check_registration_availability),
        )
        .route("/login", get(login::get_login_types).post(login::login))
        .route("/refresh", post(login::refresh))
        .route("/logout", post(login::logout))
        .route("/logout/all", post(login::logout_all))
        .route("/account/whoami", get(account::whoami))
        .route("/account/password", post(account::change_password))
        .route("/account/deactivate", post(account::deactivate))
        .route("/devices", get(devices::get_devices))
        .route(
            "/devices/{device_id}",
            get(devices::get_device)
                .put(devices::update_device)
                .delete(devices::delete_device),
        )
        .route("/delete_devices", post(devices::delete_devices))
        .route("/profile/{user_id}", get(profile::get_profile))
        .route(
            "/user_directory/search",
            post(profile::search_user_directory),
        )
        .route(
            "/profile/{user_id}/displayname",
            get(profile::get_display_name).put(profile::set_display_name),
        )
        .route(
            "/profile/{user_id}/avatar_url",
            get(profile::get_avatar_url).put(profile::set_avatar_url),
        )
        .route("/capabilities", get(capabilities::get_capabilities))
        .route("/sync", get(sync::sync_events))
        .route(
            "/sendToDevice/{event_type}/{txn_id}",
            put(to_device::send_to_device),
        )
        .route(
            "/user/{user_id}/account_data/{data_type}",
            get(account_data::get_global_account_data).put(account_data::set_global_account_data),
        )
        .route(
            "/user/{user_id}/rooms/{room_id}/account_data/{data_type}",
            get(account_data::get_room_account_data).put(account_data::set_room_account_data),
        )
        .route(
            "/user/{user_id}/rooms/{room_id}/tags",
            get(account_data::get_tags),
        )
        .route(
            "/user/{user_id}/rooms/{room_id}/tags/{tag}",
            put(account_data::set_tag).delete(account_data::delete_tag),
        )
        .route(
            "/rooms/{room_id}/typing/{user_id}",
            put(account_data::set_typing),
        )
        .route(
            "/rooms/{room_id}/receipt/{receipt_type}/{event_id}",
            post(account_data::create_receipt),
        )
        .route(
            "/rooms/{room_id}/read_markers",
            post(account_data::set_read_marker),
        )
        .route(
            "/presence/{user_id}/status",
            get(presence::get_presence).put(presence::set_presence),
        )
        .route("/notifications", get(notifications::get_notifications))
        .route("/pushers", get(pushers::get_pushers))
        .route("/pushers/set", post(pushers::set_pusher))
        .route("/pushrules/", get(push_rules::get_all))
        .route("/pushrules/global/", get(push_rules::get_global))
        .route("/pushrules/global/{kind}/", get(push_rules::get_kind))
        .route(
            "/pushrules/global/{kind}/{rule_id}",
            get(push_rules::get_rule)
                .put(push_rules::put_rule)
                .delete(push_rules::delete_rule),
        )
        .route(
            "/pushrules/global/{kind}/{rule_id}/enabled",
            get(push_rules::get_enabled).put(push_rules::put_enabled),
        )
        .route(
            "/pushrules/global/{kind}/{rule_id}/actions",
            get(push_rules::get_actions).put(push_rules::put_actions),
        )
        .route(
            "/room_keys/version",
            get(key_backup::get_latest_backup_info).post(key_backup::create_backup_version),
        )
        .route(
            "/room_keys/version/{version}",
            get(key_backup::get_backup_info)
                .put(key_backup::update_backup_version)
                .delete(key_backup::delete_backup_version),
        )
        .route(
            "/room_keys/keys",
            get(key_backup::get_backup_keys)
                .put(key_backup::add_backup_keys)
                .delete(key_backup::delete_backup_keys),
        )
        .route(
            "/room_keys/keys/{room_id}",
            get(key_backup::get_backup_keys_for_room)
                .put(key_backup::add_backup_keys_for_room)
                .delete(key_backup::delete_backup_keys_for_room),
        )
        .route(
            "/room_keys/keys/{room_id}/{session_id}",
            get(key_backup::get_backup_keys_for_session)
                .put(key_backup::add_backup_keys_for_session)
                .delete(key_backup::delete_backup_keys_for_session),
        )
        .route("/keys/upload", post(keys::upload_keys))
        .route("/keys/query", post(keys::get_keys))
        .route("/keys/claim", post(keys::claim_keys))
        .route("/keys/changes", get(keys::get_key_changes))
        .route(
            "/keys/device_signing/upload",
            post(keys::upload_signing_keys),
        )
        .route("/keys/signatures/upload", post(keys::upload_signatures))
        .route("/user/{user_id}/filter", post(sync::create_filter))
        .route("/user/{user_id}/filter/{filter_id}", get(sync::get_filter))
        .route("/rooms/{room_id}/messages", get(sync::get_message_events))
        .route(
            "/rooms/{room_id}/context/{event_id}",
            get(sync::get_event_context),
        )
        .route(
            "/rooms/{room_id}/event/{event_id}",
            get(sync::get_room_event),
        )
        .route("/createRoom", post(rooms::create_room))
        .route("/joined_rooms", get(rooms::get_joined_rooms))
        .route(
            "/join/{room_id_or_alias}",
            post(rooms::join_room_by_id_or_alias),
        )
        .route("/knock/{room_id_or_alias}", post(rooms::knock_room))
        .route("/rooms/{room_id}/join", post(rooms::join_room_by_id))
        .route("/rooms/{room_id}/leave", post(rooms::leave_room))
        .route("/rooms/{room_id}/forget", post(rooms::forget_room))
        .route("/rooms/{room_id}/upgrade", post(rooms::upgrade_room))
        .route("/rooms/{room_id}/invite", post(rooms::invite_user))
        .route("/rooms/{room_id}/kick", post(rooms::kick_user))
        .route("/rooms/{room_id}/ban", post(rooms::ban_user))
        .route("/rooms/{room_id}/unban", post(rooms::unban_user))
        .route(
            "/rooms/{room_id}/send/{event_type}/{txn_id}",
            put(send::send_message_event),
        )
        .route(
            "/rooms/{room_id}/redact/{event_id}/{txn_id}",
            put(send::redact_event),
        )
        .route("/rooms/{room_id}/state", get(room_state::get_state_events))
        .route(
            "/rooms/{room_id}/state/{event_type}",
            get(room_state::get_state_event_empty_key).put(room_state::send_state_event_empty_key),
        )
        .route(
            "/rooms/{room_id}/state/{event_type}/",
            get(room_state::get_state_event_empty_key).put(room_state::send_state_event_empty_key),
        )
        .route(
            "/rooms/{room_id}/state/{event_type}/{state_key}",
            get(room_state::get_state_event).put(room_state::send_state_event),
        )
        .route(
            "/rooms/{room_id}/members",
            get(room_state::get_member_events),
        )
        .route(
            "/rooms/{room_id}/joined_members",
            get(room_state::joined_members),
        )
        .route("/rooms/{room_id}/aliases", get(directory::get_room_aliases))
        .route(
            "/directory/room/{room_alias}",
            get(directory::get_room_alias)
                .put(directory::create_room_alias)
                .delete(directory::delete_room_alias),
        )
        .route(
            "/directory/list/room/{room_id}",
            get(directory::get_room_visibility).put(directory::set_room_visibility),
        )
        .route(
            "/publicRooms",
            get(directory::get_public_rooms).post(directory::get_public_rooms_filtered),
        );
    let v1 = Router::new().route(
        "/register/m.login.registration_token/validity",
        get(register::check_registration_token_validity),
    );
    let msc3814 = Router::new()
        .route(
            "/dehydrated_device",
            get(dehydrated_devices::get_dehydrated_device)
                .put(dehydrated_devices::put_dehydrated_device)
                .delete(dehydrated_devices::delete_dehydrated_device),
        )
        .route(
            "/dehydrated_device/{device_id}/events",
            post(dehydrated_devices::get_dehydrated_events),
        );
    Router::new()
        .route("/versions", get(versions::get_supported_versions))
        .nest("/v3", v3.clone())
        // r0 is the pre-1.0 name of v3; older clients still use it.
        .nest("/r0", v3)
        .nest("/v1", v1)
        .nest("/unstable/org.matrix.msc3814.v1", msc3814)
}

/// `{}`: the body of endpoints that answer nothing.
fn empty_object() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({}))
}
