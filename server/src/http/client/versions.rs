//! `GET /_matrix/client/versions`.

use axum::Json;
use serde_json::{Value, json};

/// The spec versions this server speaks.
///
/// Spec versions are cumulative; the server advertises the range whose
/// account, device and profile endpoints it implements. Endpoints of later
/// areas (rooms, sync, keys) answer `M_UNRECOGNIZED` until they land.
pub async fn get_supported_versions() -> Json<Value> {
    Json(json!({
        "versions": [
            "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6",
            "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"
        ],
        // Dehydrated devices (`spec-notes/dehydrated-devices.md`).
        "unstable_features": { "org.matrix.msc3814": true }
    }))
}
