//! The server key API, `/_matrix/key/v2`: this server's signed key document.
//!
//! See [`crate::service::server_keys`] and the [spec].
//!
//! [spec]: https://spec.matrix.org/v1.16/server-server-api/#get_matrixkeyv2server

use axum::{Json, Router, extract::State, routing::get};
use ruma::CanonicalJsonObject;

use super::AppState;
use crate::storage::Millis;

/// Routes under `/_matrix/key`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/server", get(get_server_keys))
        // Deprecated: `keyId` is ignored and the whole document returned, as
        // the spec asks of servers.
        .route("/v2/server/{key_id}", get(get_server_keys))
}

/// `GET /_matrix/key/v2/server`: the current and old verify keys, signed
/// with the current key.
pub async fn get_server_keys(State(state): State<AppState>) -> Json<CanonicalJsonObject> {
    Json(state.server_keys.key_document(Millis::now()))
}
