//! The server key API, `/_matrix/key/v2`: this server's signed key
//! document, and the notary endpoints that relay other servers' documents
//! with this server's signature added.
//!
//! See [`crate::service::server_keys`], [`crate::service::federation::keys`]
//! and the [spec].
//!
//! [spec]: https://spec.matrix.org/v1.16/server-server-api/#get_matrixkeyv2server

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use ruma::{CanonicalJsonObject, OwnedServerName};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState,
    error::MatrixError,
    extract::{Json as Body, Path, Query},
};
use crate::storage::Millis;

/// Servers one notary query may name.
const MAX_NOTARY_SERVERS: usize = 100;

/// Routes under `/_matrix/key`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/server", get(get_server_keys))
        // Deprecated: `keyId` is ignored and the whole document returned, as
        // the spec asks of servers.
        .route("/v2/server/{key_id}", get(get_server_keys))
        .route("/v2/query", post(get_remote_server_keys_batch))
        .route("/v2/query/{server_name}", get(get_remote_server_keys))
}

/// `GET /_matrix/key/v2/server`: the current and old verify keys, signed
/// with the current key.
pub async fn get_server_keys(State(state): State<AppState>) -> Json<CanonicalJsonObject> {
    Json(state.server_keys.key_document(Millis::now()))
}

/// `?minimum_valid_until_ts=`, or one key's criteria in a batch query.
#[derive(Debug, Deserialize)]
pub struct MinimumValidUntil {
    minimum_valid_until_ts: Option<i64>,
}

/// `GET /_matrix/key/v2/query/{serverName}`: that server's key document,
/// signed by it and by this server.
pub async fn get_remote_server_keys(
    State(state): State<AppState>,
    Path(server_name): Path<OwnedServerName>,
    Query(query): Query<MinimumValidUntil>,
) -> Result<Json<Value>, MatrixError> {
    let documents = state
        .federation
        .keys()
        .notary_documents(&server_name, query.minimum_valid_until_ts.map(Millis))
        .await
        .map_err(crate::service::ServiceError::from)?;
    Ok(Json(json!({ "server_keys": documents })))
}

/// The `POST /_matrix/key/v2/query` body.
#[derive(Debug, Deserialize)]
pub struct BatchQuery {
    server_keys: BTreeMap<OwnedServerName, BTreeMap<String, MinimumValidUntil>>,
}

/// `POST /_matrix/key/v2/query`: the key documents of several servers.
/// Key ids are not used to select: each server's whole document is
/// returned, valid until the latest `minimum_valid_until_ts` asked of it.
pub async fn get_remote_server_keys_batch(
    State(state): State<AppState>,
    Body(body): Body<BatchQuery>,
) -> Result<Json<Value>, MatrixError> {
    if body.server_keys.len() > MAX_NOTARY_SERVERS {
        return Err(MatrixError::invalid_param(format!(
            "at most {MAX_NOTARY_SERVERS} servers per query"
        )));
    }
    let mut documents = Vec::new();
    for (server_name, keys) in body.server_keys {
        let minimum = keys
            .values()
            .filter_map(|key| key.minimum_valid_until_ts)
            .max()
            .map(Millis);
        documents.extend(
            state
                .federation
                .keys()
                .notary_documents(&server_name, minimum)
                .await
                .map_err(crate::service::ServiceError::from)?,
        );
    }
    Ok(Json(json!({ "server_keys": documents })))
}
