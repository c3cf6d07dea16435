//! `PUT /_matrix/federation/v1/send/{txnId}`: a transaction of PDUs and
//! EDUs from another server.

use axum::{Json, extract::State};
use serde_json::Value;

use super::Signed;
use crate::{
    http::{AppState, error::MatrixError, extract::Path},
    service::federation::inbound::Transaction,
};

/// Processes the transaction (or answers a retried one as before):
/// `{pdus: {event_id: {} | {error}}}`, 200 even when PDUs failed.
pub async fn send_transaction(
    State(state): State<AppState>,
    Path(txn_id): Path<String>,
    signed: Signed<Transaction>,
) -> Result<Json<Value>, MatrixError> {
    let answer = state
        .inbound
        .receive_transaction(&signed.origin, &txn_id, signed.body)
        .await?;
    Ok(Json(answer))
}
