//! Rooms across servers: joins, leaves, knocks and invites over the
//! Server-Server API, on both sides (spec-notes/federation.md, "Joins,
//! invites, leaves").
//!
//! - [`resident`]: this server holds the room and answers `make_join`,
//!   `send_join`, `make_leave`, `send_leave`, `make_knock`, `send_knock`,
//!   and takes invites of its users to rooms elsewhere (`invite` v2);
//! - [`joining`]: a local user joins a room only other servers hold,
//!   rejects an invite from another server, or invites a remote user;
//! - [`answer`]: the checks on a `send_join` answer before anything of it
//!   is kept.

pub mod answer;
mod joining;
mod resident;

use std::sync::Arc;

use myelin_crypto::{hash_and_sign_event, sign_event};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, ServerName, UserId,
};
use serde_json::Value;

pub use resident::{MembershipKind, SendJoinAnswer};

use super::{
    Federation, FederationError, KeyLookupError,
    pdu_check::{CheckedPdu, PduCheckError, check_pdu},
};
use crate::{
    service::{
        ServiceError,
        room_events::RoomEvents,
        rooms::{pdu::Pdu, version::RoomVersion},
        server_keys::ServerKeys,
    },
    storage::{Millis, Storage},
};

/// Stripped state events kept with an invite or a knock at most; a
/// server sends about ten.
const MAX_INVITE_STATE_EVENTS: usize = 64;

/// Joins, leaves, knocks and invites with other servers.
pub struct RemoteMembership {
    events: Arc<RoomEvents>,
    storage: Arc<dyn Storage>,
    federation: Arc<Federation>,
    keys: Arc<ServerKeys>,
}

impl std::fmt::Debug for RemoteMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteMembership").finish_non_exhaustive()
    }
}

impl RemoteMembership {
    /// Builds the service.
    pub fn new(
        events: Arc<RoomEvents>,
        storage: Arc<dyn Storage>,
        federation: Arc<Federation>,
        keys: Arc<ServerKeys>,
    ) -> Self {
        Self {
            events,
            storage,
            federation,
            keys,
        }
    }

    fn server_name(&self) -> &ServerName {
        self.keys.server_name()
    }

    /// Steps 1 to 3 of the checks on receipt for an event another server
    /// hands over: format, signatures and content hash. An event whose
    /// hash fails is refused rather than taken redacted: a membership
    /// event handed over for this server to act on must be whole.
    async fn checked(
        &self,
        version: RoomVersion,
        object: CanonicalJsonObject,
    ) -> Result<Pdu, ServiceError> {
        match check_pdu(self.federation.keys(), version, object).await {
            Ok(CheckedPdu {
                pdu,
                redacted: false,
            }) => Ok(pdu),
            Ok(CheckedPdu { redacted: true, .. }) => Err(ServiceError::Forbidden(
                "the event's content hash does not match".to_owned(),
            )),
            Err(PduCheckError::Malformed(error)) => Err(ServiceError::BadJson(error.to_string())),
            Err(PduCheckError::Signature(reason)) => Err(ServiceError::Forbidden(format!(
                "the event's signatures do not verify: {reason}"
            ))),
            Err(PduCheckError::Storage(error)) => Err(error.into()),
        }
    }

    /// Adds this server's signature to an event another server built.
    fn countersign(
        &self,
        version: RoomVersion,
        object: &mut CanonicalJsonObject,
    ) -> Result<(), ServiceError> {
        sign_event(
            self.server_name(),
            self.keys.current(),
            &version.id(),
            object,
        )
        .map_err(|error| ServiceError::BadJson(format!("cannot sign the event: {error}")))
    }

    /// Whether `server` signed `object` (an event) with a key valid when
    /// the event says it was sent: what the invitee's server adds to an
    /// invite, which the room version does not otherwise require.
    async fn is_signed_by(
        &self,
        server: &ServerName,
        version: RoomVersion,
        pdu: &Pdu,
    ) -> Result<bool, ServiceError> {
        let Some(CanonicalJsonValue::Object(signatures)) = pdu.as_object().get("signatures") else {
            return Ok(false);
        };
        let Some(CanonicalJsonValue::Object(by_key)) = signatures.get(server.as_str()) else {
            return Ok(false);
        };
        let redacted =
            ruma::canonical_json::redact(pdu.as_object().clone(), &version.rules().redaction, None)
                .map_err(|error| ServiceError::BadJson(error.to_string()))?;
        let sent_at =
            Millis(i64::try_from(u64::from(pdu.origin_server_ts().0)).unwrap_or(i64::MAX));
        for key_id in by_key
            .keys()
            .filter(|id| id.starts_with("ed25519:"))
            .take(8)
        {
            let key = match self
                .federation
                .keys()
                .verify_key(server, key_id, sent_at)
                .await
            {
                Ok(key) => key,
                Err(KeyLookupError::NotFound { .. }) => continue,
                Err(KeyLookupError::Storage(error)) => return Err(error.into()),
            };
            if myelin_crypto::verify_signature_by(&redacted, server.as_str(), key_id, &key.encode())
                .is_ok()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Fills in and signs a membership event template from a resident (the
/// answer to `make_join`, `make_leave` or `make_knock`) for `user_id`:
/// the template must be an `m.room.member` event of that user in the room
/// with `membership`; `content` replaces the template's content except
/// for `membership` and a restricted join's authoriser.
///
/// # Errors
/// `BadGateway` for a template that is not that event.
fn sign_template(
    keys: &ServerKeys,
    version: RoomVersion,
    mut template: CanonicalJsonObject,
    expected: &Expected<'_>,
    content: CanonicalJsonObject,
) -> Result<Pdu, ServiceError> {
    let text = |name: &str| match template.get(name) {
        Some(CanonicalJsonValue::String(value)) => Some(value.clone()),
        _ => None,
    };
    let user = expected.user_id.as_str();
    let is_template = text("type").as_deref() == Some("m.room.member")
        && text("sender").as_deref() == Some(user)
        && text("state_key").as_deref() == Some(user)
        && text("room_id").as_deref() == Some(expected.room_id.as_str());
    let template_content = match template.get("content") {
        Some(CanonicalJsonValue::Object(content)) => content.clone(),
        _ => CanonicalJsonObject::new(),
    };
    let membership = match template_content.get("membership") {
        Some(CanonicalJsonValue::String(membership)) => membership.as_str(),
        _ => "",
    };
    if !is_template || membership != expected.membership {
        return Err(ServiceError::BadGateway(
            "the resident's event template is not this membership".to_owned(),
        ));
    }
    let mut content = content;
    content.insert(
        "membership".to_owned(),
        CanonicalJsonValue::String(expected.membership.to_owned()),
    );
    if let Some(authoriser) = template_content.get("join_authorised_via_users_server") {
        content.insert(
            "join_authorised_via_users_server".to_owned(),
            authoriser.clone(),
        );
    }
    template.insert("content".to_owned(), CanonicalJsonValue::Object(content));
    for field in ["signatures", "hashes", "unsigned", "event_id", "origin"] {
        template.remove(field);
    }
    template.insert(
        "origin_server_ts".to_owned(),
        CanonicalJsonValue::Integer(ruma::Int::from(MilliSecondsSinceUnixEpoch::now().get())),
    );
    hash_and_sign_event(
        keys.server_name(),
        keys.current(),
        &version.id(),
        &mut template,
    )
    .map_err(|error| ServiceError::BadGateway(format!("cannot sign the template: {error}")))?;
    Pdu::from_object(version, template)
        .map_err(|error| ServiceError::BadGateway(format!("the template is malformed: {error}")))
}

/// The event a template must be.
struct Expected<'a> {
    room_id: &'a ruma::RoomId,
    user_id: &'a UserId,
    membership: &'a str,
}

/// A failed request to another server, for the local user who asked.
fn remote_error(server: &ServerName, error: FederationError) -> ServiceError {
    match error {
        FederationError::Remote {
            status: 403, error, ..
        } => ServiceError::Forbidden(format!("{server} refused: {}", error.unwrap_or_default())),
        FederationError::Remote { status: 404, .. } => {
            ServiceError::NotFound(format!("{server} does not know the room"))
        }
        other => ServiceError::BadGateway(format!("{server}: {other}")),
    }
}

/// An event as stripped state (`type`, `state_key`, `sender`, `content`):
/// how invites and knocks describe a room to a user not in it.
pub fn stripped_event(pdu: &Pdu) -> serde_json::Value {
    serde_json::json!({
        "type": pdu.kind().to_string(),
        "state_key": pdu.state_key(),
        "sender": pdu.sender(),
        "content": serde_json::from_str::<serde_json::Value>(pdu.content().get())
            .unwrap_or_default(),
    })
}

/// The stripped state events of an invite or a knock, as JSON to keep: only objects
/// with a string `type`, `state_key` and `sender` and an object `content`,
/// reduced to those fields, at most [`MAX_INVITE_STATE_EVENTS`].
fn stripped_state(events: &[Value]) -> String {
    let kept: Vec<Value> = events
        .iter()
        .filter(|event| {
            event["type"].is_string()
                && event["state_key"].is_string()
                && event["sender"].is_string()
                && event["content"].is_object()
        })
        .take(MAX_INVITE_STATE_EVENTS)
        .map(|event| {
            serde_json::json!({
                "type": event["type"],
                "state_key": event["state_key"],
                "sender": event["sender"],
                "content": event["content"],
            })
        })
        .collect();
    Value::Array(kept).to_string()
}

/// Percent-encodes an identifier for a path segment or query value.
fn encode(value: &str) -> String {
    super::percent_encode(value)
}
