//! A local user and a room held by other servers: joining it through one
//! of them (`make_join`, `send_join`, the answer checked and imported),
//! rejecting an invite from another server (`make_leave`, `send_leave`),
//! and inviting a user of another server (`invite` v2).

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, OwnedServerName, RoomAliasId, RoomId,
    RoomOrAliasId, ServerName, UserId,
};
use serde_json::Value;

use super::{
    Expected, MembershipKind, RemoteMembership, answer::check_join_answer, encode, remote_error,
    sign_template, stripped_event, stripped_state,
};
use crate::service::{
    ServiceError,
    room_events::{LocalEvent, RemoteOutcome, parse_version},
    rooms::{pdu::Pdu, version::RoomVersion},
};

/// Servers tried for one join at most.
const MAX_JOIN_CANDIDATES: usize = 8;

/// State and auth chain events taken from one `send_join` answer at most
/// (each list); the answer's size is capped by the client as well.
const MAX_ANSWER_EVENTS: usize = 50_000;

impl RemoteMembership {
    /// The room a room id or an alias of another server names, and the
    /// servers its directory says to join it through (none for a room id).
    ///
    /// # Errors
    /// `NotFound` for an unknown alias (or federation off); `BadGateway`
    /// when the alias's server cannot answer.
    pub async fn resolve(
        &self,
        target: &RoomOrAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>), ServiceError> {
        match <&RoomId>::try_from(target) {
            Ok(room_id) => Ok((room_id.to_owned(), Vec::new())),
            Err(_) if !self.federation.is_enabled() => {
                Err(ServiceError::NotFound("no such room alias".to_owned()))
            }
            Err(alias) => self.resolve_alias(alias).await,
        }
    }

    /// Joins `user_id` to a room this server does not hold, or knocks on
    /// it, through the first of the candidate servers that lets them in:
    /// `via`, the server of a pending invite, the room id's server.
    /// `content` is the member event's content (profile, reason).
    ///
    /// # Errors
    /// `NotFound` when no server knows the room (or federation is off);
    /// `Forbidden` when the rules refuse; `BadGateway` when every server
    /// failed or answered with something that does not hold.
    pub async fn join_or_knock(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        via: Vec<OwnedServerName>,
        content: CanonicalJsonObject,
        kind: MembershipKind,
    ) -> Result<(), ServiceError> {
        if !self.federation.is_enabled() {
            return Err(ServiceError::NotFound("no such room".to_owned()));
        }
        let mut candidates = via;
        if let Some((inviter, _)) = self.pending(user_id, room_id, &["invite"]).await? {
            candidates.push(inviter.sender().server_name().to_owned());
        }
        if let Some(server) = room_id.server_name() {
            candidates.push(server.to_owned());
        }
        let mut tried = Vec::new();
        let mut last_error =
            ServiceError::NotFound("no server to join the room through".to_owned());
        for server in candidates {
            if server == self.server_name() || tried.contains(&server) {
                continue;
            }
            if tried.len() == MAX_JOIN_CANDIDATES {
                break;
            }
            tried.push(server.clone());
            let outcome = match kind {
                MembershipKind::Knock => {
                    self.knock_via(&server, user_id, room_id, content.clone())
                        .await
                }
                _ => {
                    self.join_via(&server, user_id, room_id, content.clone())
                        .await
                }
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::info!(%server, %room_id, %error, "a join or knock through another server failed");
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    /// Rejects an invite from another server to a room this server does
    /// not hold (a leave through the inviting server), or withdraws a knock
    /// on one (through the servers of the room's stripped state, then the
    /// room id's).
    ///
    /// # Errors
    /// `Forbidden` (not in the room) without such an invite or knock; the
    /// errors of the leave there.
    pub async fn leave_out_of_room(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        content: CanonicalJsonObject,
    ) -> Result<(), ServiceError> {
        let (pending, stripped_state) = self
            .pending(user_id, room_id, &["invite", "knock"])
            .await?
            .ok_or_else(ServiceError::not_in_room)?;
        let mut candidates: Vec<OwnedServerName> = Vec::new();
        if pending.sender() != user_id {
            candidates.push(pending.sender().server_name().to_owned());
        }
        let described: Vec<Value> = serde_json::from_str(&stripped_state).unwrap_or_default();
        candidates.extend(
            described
                .iter()
                .filter_map(|event| event["sender"].as_str())
                .filter_map(|sender| <&UserId>::try_from(sender).ok())
                .map(|sender| sender.server_name().to_owned()),
        );
        candidates.extend(room_id.server_name().map(ToOwned::to_owned));
        candidates.retain(|server| server != self.server_name());
        candidates.dedup();
        let mut last_error = ServiceError::not_in_room();
        for server in candidates.iter().take(MAX_JOIN_CANDIDATES) {
            match self
                .exchange(
                    server,
                    room_id,
                    user_id,
                    MembershipKind::Leave,
                    content.clone(),
                )
                .await
            {
                Ok((_, leave, _)) => {
                    return self
                        .events
                        .record_out_of_room_membership(&leave, "[]")
                        .await;
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// Invites a user of another server to a local room: the invite is
    /// built on the room's state, signed by the invitee's server
    /// (`PUT /v2/invite`), then added to the room.
    ///
    /// # Errors
    /// `Forbidden` from the rules or when the invitee's server refuses or
    /// does not sign; `BadGateway` when it cannot be reached.
    pub async fn invite(&self, room_id: &RoomId, event: LocalEvent) -> Result<(), ServiceError> {
        if !self.federation.is_enabled() {
            return Err(ServiceError::InvalidParam(
                "this server does not federate".to_owned(),
            ));
        }
        let (invite, invite_state) = self.events.build_remote_invite(room_id, &event).await?;
        let version = invite.room_version();
        let target = invite
            .state_key()
            .and_then(|key| <&UserId>::try_from(key).ok())
            .ok_or_else(|| ServiceError::InvalidParam("the invite names no user".to_owned()))?;
        let server = target.server_name();
        let stripped: Vec<Value> = invite_state.iter().map(stripped_event).collect();
        let body = serde_json::json!({
            "room_version": version.to_string(),
            "event": pdu_json(&invite),
            "invite_room_state": stripped,
        });
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            encode(room_id.as_str()),
            encode(invite.event_id().as_str())
        );
        let answer = self
            .federation
            .client()
            .put(server, &path, &body)
            .await
            .map_err(|error| remote_error(server, error))?;
        let signed = event_object(&answer)?;
        let signed = self.checked(version, signed).await?;
        if signed.event_id() != invite.event_id()
            || !self.is_signed_by(server, version, &signed).await?
        {
            return Err(ServiceError::Forbidden(format!(
                "{server} did not sign the invite"
            )));
        }
        match self.events.append_remote(signed).await {
            Ok(RemoteOutcome::Accepted | RemoteOutcome::AlreadyStored(_)) => Ok(()),
            Ok(outcome) => Err(ServiceError::Forbidden(format!(
                "the invite is not accepted: {outcome:?}"
            ))),
            Err(error) => Err(ServiceError::Internal(format!(
                "the signed invite cannot be added: {error}"
            ))),
        }
    }

    /// One try at knocking through `server`: the knock is kept as an
    /// out-of-room membership with the stripped state the resident answers.
    async fn knock_via(
        &self,
        server: &ServerName,
        user_id: &UserId,
        room_id: &RoomId,
        content: CanonicalJsonObject,
    ) -> Result<(), ServiceError> {
        let (_, knock, answer) = self
            .exchange(server, room_id, user_id, MembershipKind::Knock, content)
            .await?;
        let described = answer
            .get("knock_room_state")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        self.events
            .record_out_of_room_membership(&knock, &stripped_state(described))
            .await
    }

    /// One try at joining through `server`.
    async fn join_via(
        &self,
        server: &ServerName,
        user_id: &UserId,
        room_id: &RoomId,
        content: CanonicalJsonObject,
    ) -> Result<(), ServiceError> {
        let (version, join, answer) = self
            .exchange(server, room_id, user_id, MembershipKind::Join, content)
            .await?;
        let state = self.answer_events(version, &answer, "state").await?;
        let auth_chain = self.answer_events(version, &answer, "auth_chain").await?;
        // A restricted join comes back with the authorising server's
        // signature; it is the same event (signatures are not hashed).
        let join = match answer.get("event") {
            Some(event) if !event.is_null() => {
                let signed = self.checked(version, event_object_value(event)?).await?;
                if signed.event_id() != join.event_id() {
                    return Err(ServiceError::BadGateway(format!(
                        "{server} answered with another join event"
                    )));
                }
                signed
            }
            _ => join,
        };
        let joined = check_join_answer(room_id, join, state, auth_chain).map_err(|error| {
            ServiceError::BadGateway(format!("{server} answered the join badly: {error}"))
        })?;
        self.events.import_joined_room(joined).await
    }

    /// `make_*` on `server`, the template filled in with `content` and
    /// signed, then `send_*`: the room version, the event sent and the
    /// resident's answer.
    async fn exchange(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        kind: MembershipKind,
        content: CanonicalJsonObject,
    ) -> Result<(RoomVersion, Pdu, Value), ServiceError> {
        let (make, send, query) = match kind {
            MembershipKind::Join => ("make_join", "v2/send_join", supported_versions()),
            MembershipKind::Knock => ("make_knock", "v1/send_knock", supported_versions()),
            MembershipKind::Leave => ("make_leave", "v2/send_leave", String::new()),
        };
        let (version, template) = self.make(server, room_id, user_id, make, &query).await?;
        let expected = Expected {
            room_id,
            user_id,
            membership: kind.as_str(),
        };
        let event = sign_template(&self.keys, version, template, &expected, content)?;
        let path = format!(
            "/_matrix/federation/{send}/{}/{}",
            encode(room_id.as_str()),
            encode(event.event_id().as_str())
        );
        let answer = self
            .federation
            .client()
            .put(server, &path, &pdu_json(&event))
            .await
            .map_err(|error| remote_error(server, error))?;
        Ok((version, event, answer))
    }

    /// `make_join`, `make_leave` or `make_knock` on `server`: the room version and the
    /// event template.
    async fn make(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        endpoint: &str,
        query: &str,
    ) -> Result<(RoomVersion, CanonicalJsonObject), ServiceError> {
        let mut path = format!(
            "/_matrix/federation/v1/{endpoint}/{}/{}",
            encode(room_id.as_str()),
            encode(user_id.as_str())
        );
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        let answer = self
            .federation
            .client()
            .get(server, &path)
            .await
            .map_err(|error| remote_error(server, error))?;
        let version = answer
            .get("room_version")
            .and_then(Value::as_str)
            .unwrap_or("1");
        let version = parse_version(version)
            .ok()
            .filter(|version| !version.has_origin_chosen_event_ids())
            .ok_or_else(|| {
                ServiceError::BadGateway(format!(
                    "{server} names a room version this server cannot join"
                ))
            })?;
        Ok((version, event_object(&answer)?))
    }

    /// The events of one list of a `send_join` answer, each checked
    /// (format, signatures; the redacted form when its content hash fails).
    async fn answer_events(
        &self,
        version: RoomVersion,
        answer: &Value,
        field: &str,
    ) -> Result<Vec<Pdu>, ServiceError> {
        let bad = |reason: String| ServiceError::BadGateway(format!("send_join {field}: {reason}"));
        let list = answer
            .get(field)
            .and_then(Value::as_array)
            .ok_or_else(|| bad("missing".to_owned()))?;
        if list.len() > MAX_ANSWER_EVENTS {
            return Err(bad(format!("more than {MAX_ANSWER_EVENTS} events")));
        }
        let mut events = Vec::with_capacity(list.len());
        for event in list {
            let object = event_object_value(event)?;
            let checked = super::check_pdu(self.federation.keys(), version, object)
                .await
                .map_err(|error| bad(error.to_string()))?;
            events.push(checked.pdu);
        }
        Ok(events)
    }

    /// A remote alias's room and the servers to join it through.
    async fn resolve_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>), ServiceError> {
        let server = alias.server_name();
        if server == self.server_name() {
            return Err(ServiceError::NotFound("no such room alias".to_owned()));
        }
        let path = format!(
            "/_matrix/federation/v1/query/directory?room_alias={}",
            encode(alias.as_str())
        );
        let answer =
            self.federation
                .client()
                .get(server, &path)
                .await
                .map_err(|error| match error {
                    super::FederationError::Remote { status: 404, .. } => {
                        ServiceError::NotFound("no such room alias".to_owned())
                    }
                    other => remote_error(server, other),
                })?;
        let room_id = answer
            .get("room_id")
            .and_then(Value::as_str)
            .filter(|id| !id.contains('\0'))
            .and_then(|id| OwnedRoomId::try_from(id).ok())
            .ok_or_else(|| {
                ServiceError::BadGateway(format!("{server} answered without a room id"))
            })?;
        let mut servers: Vec<OwnedServerName> = answer
            .get("servers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|name| OwnedServerName::try_from(name).ok())
            .take(MAX_JOIN_CANDIDATES)
            .collect();
        servers.push(server.to_owned());
        Ok((room_id, servers))
    }

    /// The user's pending out-of-room membership in a room this server does
    /// not hold, if it is one of `memberships`: the event and the stripped
    /// state kept with it.
    async fn pending(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        memberships: &[&str],
    ) -> Result<Option<(Pdu, String)>, ServiceError> {
        let current = self.storage.memberships_of(user_id, None).await?;
        let Some(invite) = current
            .iter()
            .find(|m| m.room_id == room_id && memberships.contains(&m.membership.as_str()))
        else {
            return Ok(None);
        };
        let Some(stored) = self
            .storage
            .out_of_room_membership(&invite.event_id)
            .await?
        else {
            return Ok(None);
        };
        let version = parse_version(&stored.room_version)?;
        let pdu = Pdu::from_storage(version, stored.event_id, stored.json).map_err(|error| {
            ServiceError::Internal(format!("a stored membership event is invalid: {error}"))
        })?;
        Ok(Some((pdu, stored.stripped_state)))
    }
}

/// `ver=…` for every room version this server joins over federation
/// (from 3 on: in versions 1 and 2 the joining server would choose ids).
fn supported_versions() -> String {
    RoomVersion::ALL
        .iter()
        .filter(|version| !version.has_origin_chosen_event_ids())
        .map(|version| format!("ver={version}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// An event as JSON to send.
fn pdu_json(pdu: &Pdu) -> Value {
    Value::from(CanonicalJsonValue::Object(pdu.as_object().clone()))
}

/// The `event` object of an answer.
fn event_object(answer: &Value) -> Result<CanonicalJsonObject, ServiceError> {
    event_object_value(answer.get("event").unwrap_or(&Value::Null))
}

/// A JSON value as an event object (canonical JSON: no floats).
fn event_object_value(value: &Value) -> Result<CanonicalJsonObject, ServiceError> {
    match CanonicalJsonValue::try_from(value.clone()) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        _ => Err(ServiceError::BadGateway(
            "an event in the answer is not a JSON object".to_owned(),
        )),
    }
}
