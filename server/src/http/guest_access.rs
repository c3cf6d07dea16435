//! What a guest account may do: the endpoints the spec's "Guest Access"
//! module lists (reading and taking part in rooms that let guests in,
//! sync, profiles, presence, receipts, typing, account data, device keys
//! and to-device messages). Everything else answers 403
//! `M_GUEST_ACCESS_FORBIDDEN`.

use axum::http::Method;

/// Route templates (after `/_matrix/client/{version}`) a guest may call.
const GUEST_ROUTES: &[(Method, &str)] = &[
    (Method::GET, "/sync"),
    (Method::GET, "/account/whoami"),
    (Method::POST, "/logout"),
    (Method::GET, "/capabilities"),
    (Method::GET, "/joined_rooms"),
    (Method::GET, "/publicRooms"),
    (Method::POST, "/publicRooms"),
    (Method::GET, "/directory/room/{room_alias}"),
    (Method::POST, "/join/{room_id_or_alias}"),
    (Method::POST, "/rooms/{room_id}/join"),
    (Method::POST, "/rooms/{room_id}/leave"),
    (Method::GET, "/rooms/{room_id}/state"),
    (Method::GET, "/rooms/{room_id}/state/{event_type}"),
    (Method::GET, "/rooms/{room_id}/state/{event_type}/"),
    (
        Method::GET,
        "/rooms/{room_id}/state/{event_type}/{state_key}",
    ),
    (Method::GET, "/rooms/{room_id}/members"),
    (Method::GET, "/rooms/{room_id}/joined_members"),
    (Method::GET, "/rooms/{room_id}/messages"),
    (Method::GET, "/rooms/{room_id}/context/{event_id}"),
    (Method::GET, "/rooms/{room_id}/event/{event_id}"),
    (Method::PUT, "/rooms/{room_id}/send/{event_type}/{txn_id}"),
    (Method::PUT, "/rooms/{room_id}/typing/{user_id}"),
    (
        Method::POST,
        "/rooms/{room_id}/receipt/{receipt_type}/{event_id}",
    ),
    (Method::POST, "/rooms/{room_id}/read_markers"),
    (Method::GET, "/profile/{user_id}"),
    (Method::GET, "/profile/{user_id}/displayname"),
    (Method::PUT, "/profile/{user_id}/displayname"),
    (Method::GET, "/profile/{user_id}/avatar_url"),
    (Method::PUT, "/profile/{user_id}/avatar_url"),
    (Method::GET, "/presence/{user_id}/status"),
    (Method::PUT, "/presence/{user_id}/status"),
    (Method::GET, "/pushrules/"),
    (Method::GET, "/pushrules/global/"),
    (Method::GET, "/user/{user_id}/account_data/{data_type}"),
    (Method::PUT, "/user/{user_id}/account_data/{data_type}"),
    (
        Method::GET,
        "/user/{user_id}/rooms/{room_id}/account_data/{data_type}",
    ),
    (
        Method::PUT,
        "/user/{user_id}/rooms/{room_id}/account_data/{data_type}",
    ),
    (Method::POST, "/user/{user_id}/filter"),
    (Method::GET, "/user/{user_id}/filter/{filter_id}"),
    (Method::POST, "/keys/upload"),
    (Method::POST, "/keys/query"),
    (Method::POST, "/keys/claim"),
    (Method::GET, "/keys/changes"),
    (Method::PUT, "/sendToDevice/{event_type}/{txn_id}"),
    (Method::GET, "/media/config"),
    (Method::GET, "/media/download/{server_name}/{media_id}"),
    (
        Method::GET,
        "/media/download/{server_name}/{media_id}/{file_name}",
    ),
];

/// Whether a guest may make this request: `route` is the matched route
/// template, `path` the request's path.
pub fn guest_may(method: &Method, route: &str, path: &str) -> bool {
    let Some(route) = without_version(route) else {
        return false;
    };
    let listed = GUEST_ROUTES
        .iter()
        .any(|(allowed, template)| allowed == method && *template == route);
    // Guests send messages only (the spec lists `send/m.room.message`).
    let is_send = route == "/rooms/{room_id}/send/{event_type}/{txn_id}";
    listed && (!is_send || path.split('/').rev().nth(1) == Some("m.room.message"))
}

/// A client route template without `/_matrix/client/{version}`.
fn without_version(route: &str) -> Option<&str> {
    let rest = route.strip_prefix("/_matrix/client/")?;
    rest.find('/').map(|at| &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_send_messages_and_nothing_else_into_rooms() {
        let route = "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}";
        let message = "/_matrix/client/v3/rooms/!r:x/send/m.room.message/1";
        let reaction = "/_matrix/client/v3/rooms/!r:x/send/m.reaction/1";
        assert!(guest_may(&Method::PUT, route, message));
        assert!(!guest_may(&Method::PUT, route, reaction));
    }

    #[test]
    fn unlisted_routes_and_methods_are_refused() {
        assert!(guest_may(
            &Method::GET,
            "/_matrix/client/v3/sync",
            "/_matrix/client/v3/sync"
        ));
        assert!(!guest_may(
            &Method::POST,
            "/_matrix/client/v3/createRoom",
            "/_matrix/client/v3/createRoom"
        ));
        let account_data = "/_matrix/client/v3/user/{user_id}/account_data/{data_type}";
        assert!(!guest_may(&Method::DELETE, account_data, "/"));
        assert!(!guest_may(
            &Method::GET,
            "/_matrix/key/v2/server",
            "/_matrix/key/v2/server"
        ));
    }
}
