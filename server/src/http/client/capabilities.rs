//! `GET /_matrix/client/v3/capabilities`.

use axum::{Json, extract::State};
use serde_json::{Map, Value, json};

use crate::{
    http::{AppState, extract::Authed},
    service::rooms::version::RoomVersion,
};

/// What this server lets the user change, and the room versions it speaks.
pub async fn get_capabilities(State(state): State<AppState>, _: Authed) -> Json<Value> {
    let available: Map<String, Value> = RoomVersion::ALL
        .iter()
        .map(|version| (version.id().to_string(), Value::from("stable")))
        .collect();
    Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": false },
            "m.room_versions": {
                "default": state.rooms.default_room_version().id().to_string(),
                "available": available,
            },
        }
    }))
}
