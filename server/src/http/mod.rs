//! The HTTP edge: routers, extractors and the mapping of errors to Matrix JSON.
//!
//! Handlers are thin: parse and authenticate, call one service, shape the answer.

pub mod client;
pub mod error;
pub mod extract;
pub mod federation;
pub mod guest_access;
pub mod keys;
pub mod media;
pub mod tls;

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, connect_info::Connected},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    serve::IncomingStream,
};
use tracing::Instrument;

use crate::config::IpRange;
use crate::service::e2ee::E2eeKeys;
use crate::service::federation::{
    Federation, inbound::Inbound, membership::RemoteMembership, sender::FederationSender,
};
use crate::service::public_rooms::PublicRooms;
use crate::service::rate_limit::{AccountBudgets, Budget};
use crate::service::{
    account_data::AccountData, accounts::Accounts, dehydrated_devices::DehydratedDevices,
    devices::Devices, key_backup::KeyBackup, media::Media, presence::Presence, profile::Profiles,
    push::Push, push_rules::PushRules, pushers::Pushers, room_ops::RoomOps,
    server_keys::ServerKeys, sync::Sync, to_device::ToDevice, typing::Typing,
};
use error::MatrixError;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Accounts, tokens and passwords.
    pub accounts: Arc<Accounts>,
    /// Device management.
    pub devices: Arc<Devices>,
    /// MSC3814 dehydrated devices.
    pub dehydrated_devices: Arc<DehydratedDevices>,
    /// Profiles.
    pub profiles: Arc<Profiles>,
    /// The server's signing keys.
    pub server_keys: Arc<ServerKeys>,
    /// Room operations.
    pub rooms: Arc<RoomOps>,
    /// Sync and history.
    pub sync: Arc<Sync>,
    /// Typing notifications.
    pub typing: Arc<Typing>,
    /// Account data and receipts.
    pub account_data: Arc<AccountData>,
    /// Push rules.
    pub push_rules: Arc<PushRules>,
    /// Push rule results: notification counts and `GET /notifications`.
    pub push: Arc<Push>,
    /// Users' presence.
    pub presence: Arc<Presence>,
    /// Push gateways registered by clients.
    pub pushers: Arc<Pushers>,
    /// Server-side key backups.
    pub key_backup: Arc<KeyBackup>,
    /// The media store.
    pub media: Arc<Media>,
    /// End-to-end encryption keys and device lists.
    pub e2ee_keys: Arc<E2eeKeys>,
    /// Send-to-device messaging.
    pub to_device: Arc<ToDevice>,
    /// Per-account budgets of the writes a client can repeat cheaply.
    pub budgets: Arc<AccountBudgets>,
    /// The public room directory's listings.
    pub public_rooms: Arc<PublicRooms>,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[IpRange]>,
    /// Other servers: request authentication, their keys, the outbound client.
    pub federation: Arc<Federation>,
    /// What other servers send and ask: transactions, the room DAG.
    pub inbound: Arc<Inbound>,
    /// Joins, leaves, knocks and invites with other servers.
    pub membership: Arc<RemoteMembership>,
    /// Local PDUs and EDUs out to other servers.
    pub outbound: FederationSender,
}

/// The peer address of a connection, plain or TLS, as `ConnectInfo`.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, tls::TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, tls::TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The whole HTTP application.
pub fn app(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .nest("/_matrix/client", client::router())
        .nest("/_matrix/key", keys::router())
        .merge(media::router(state.media.max_upload_bytes()))
        .fallback(|| async { MatrixError::unrecognized() })
        .method_not_allowed_fallback(|| async { MatrixError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), spend_budget))
        .layer(middleware::from_fn(trace_request))
        .layer(middleware::from_fn(cors))
        .with_state(state)
}

/// CORS as the spec requires, so browser clients on any origin work:
/// every response carries the headers and every `OPTIONS` preflight succeeds.
async fn cors(request: Request, next: Next) -> Response {
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
    response
}

/// Takes one request from the account's budget for routes that write what a
/// client can repeat cheaply, before the handler runs. The session it
/// authenticates is kept in the request for the handler's [`Authed`].
///
/// [`Authed`]: extract::Authed
async fn spend_budget(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let Some(budget) = route.and_then(|route| budget_of(request.method(), route)) else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let session =
        match <extract::Authed as axum::extract::FromRequestParts<AppState>>::from_request_parts(
            &mut parts, &state,
        )
        .await
        {
            Ok(extract::Authed(session)) => session,
            Err(error) => return error.into_response(),
        };
    if let Err(error) = state.budgets.spend(budget, &session.user_id) {
        tracing::debug!(user_id = %session.user_id, ?budget, "rate limited");
        return MatrixError::from(error).into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The budget a matched route spends, if any.
fn budget_of(method: &Method, route: &str) -> Option<Budget> {
    let route = route
        .strip_prefix("/_matrix/client/v3")
        .or_else(|| route.strip_prefix("/_matrix/client/r0"))
        .unwrap_or(route);
    let budget = match (method.as_str(), route) {
        ("PUT", "/rooms/{room_id}/send/{event_type}/{txn_id}")
        | ("PUT", "/rooms/{room_id}/redact/{event_id}/{txn_id}")
        | ("PUT", "/rooms/{room_id}/state/{event_type}")
        | ("PUT", "/rooms/{room_id}/state/{event_type}/")
        | ("PUT", "/rooms/{room_id}/state/{event_type}/{state_key}") => Budget::Sends,
        ("POST", "/createRoom") => Budget::RoomCreation,
        ("POST", "/rooms/{room_id}/invite") => Budget::Invites,
        ("PUT", "/sendToDevice/{event_type}/{txn_id}") => Budget::ToDevice,
        ("POST", "/keys/claim") => Budget::KeyClaims,
        ("PUT", "/rooms/{room_id}/typing/{user_id}") => Budget::Typing,
        ("POST", "/_matrix/media/v3/upload")
        | ("PUT", "/_matrix/media/v3/upload/{server_name}/{media_id}")
        | ("POST", "/_matrix/media/v1/create") => Budget::MediaUploads,
        _ => return None,
    };
    Some(budget)
}

/// One span per request with the method and the matched route, never the
/// query string (it may hold an access token) nor the body.
pub(crate) async fn trace_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::debug_span!("request", method = %request.method(), route = %route);
    async move {
        let response = next.run(request).await;
        tracing::debug!(status = response.status().as_u16(), "response");
        response
    }
    .instrument(span)
    .await
}
