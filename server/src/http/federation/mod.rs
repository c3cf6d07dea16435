//! The Server-Server API, `/_matrix/federation` (and `/_matrix/key`), on
//! its own TLS listener.
//!
//! Every answer, errors and unknown endpoints included, is JSON with
//! `Content-Type: application/json`: Synapse counts anything else as a
//! failed connection and backs off. Authenticated endpoints take a
//! [`Signed`] request, which yields the origin server.

mod auth;
mod events;
mod membership;
mod query;
mod send;
mod user_keys;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde_json::{Value, json};

use super::{AppState, error::MatrixError, keys};

pub use auth::Signed;

/// The federation listener's application.
pub fn app(state: AppState, max_body_bytes: usize) -> Router {
    let v1 = Router::new()
        .route("/version", get(get_server_version))
        .route("/query/profile", get(query::get_profile_information))
        .route("/query/directory", get(query::get_room_information))
        .route("/user/keys/query", post(user_keys::get_keys))
        .route("/user/keys/claim", post(user_keys::claim_keys))
        .route("/user/devices/{user_id}", get(user_keys::get_devices))
        .route("/send/{txn_id}", put(send::send_transaction))
        .route("/event/{event_id}", get(events::get_event))
        .route("/state/{room_id}", get(events::get_room_state))
        .route("/state_ids/{room_id}", get(events::get_room_state_ids))
        .route(
            "/event_auth/{room_id}/{event_id}",
            get(events::get_event_authorization),
        )
        .route("/backfill/{room_id}", get(events::get_backfill))
        .route(
            "/get_missing_events/{room_id}",
            post(events::get_missing_events),
        )
        .route(
            "/publicRooms",
            get(events::get_public_rooms).post(events::get_public_rooms_filtered),
        )
        .route(
            "/make_join/{room_id}/{user_id}",
            get(membership::create_join_event_template),
        )
        .route(
            "/make_leave/{room_id}/{user_id}",
            get(membership::create_leave_event_template),
        )
        .route(
            "/make_knock/{room_id}/{user_id}",
            get(membership::create_knock_event_template),
        )
        .route(
            "/send_knock/{room_id}/{event_id}",
            put(membership::create_knock_event),
        );
    let v2 = Router::new()
        .route(
            "/send_join/{room_id}/{event_id}",
            put(membership::create_join_event),
        )
        .route(
            "/send_leave/{room_id}/{event_id}",
            put(membership::create_leave_event),
        )
        .route(
            "/invite/{room_id}/{event_id}",
            put(membership::create_invite),
        );
    Router::new()
        .nest("/_matrix/federation/v1", v1)
        .nest("/_matrix/federation/v2", v2)
        .nest("/_matrix/key", keys::router())
        .fallback(|| async { MatrixError::unrecognized() })
        .method_not_allowed_fallback(|| async { MatrixError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn(json_only))
        .layer(middleware::from_fn(super::trace_request))
        .with_state(state)
}

/// `GET /_matrix/federation/v1/version`, unauthenticated.
async fn get_server_version() -> Json<Value> {
    Json(json!({
        "server": { "name": "Myelin", "version": env!("CARGO_PKG_VERSION") }
    }))
}

/// Turns any answer that is not JSON (a rejection from below the handlers)
/// into a Matrix error with its status.
async fn json_only(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value == HeaderValue::from_static("application/json"));
    if is_json {
        return response;
    }
    let status = response.status();
    let message = status.canonical_reason().unwrap_or("Error");
    MatrixError::new(status, "M_UNKNOWN", message).into_response()
}
