//! `GET /_matrix/client/v3/capabilities`.

use axum::Json;
use serde_json::{Value, json};

use crate::http::extract::Authed;

/// What this server lets the user change.
pub async fn get_capabilities(_: Authed) -> Json<Value> {
    Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": false }
        }
    }))
}
