//! Rooms: the event model, the authorization rules and state resolution.
//!
//! This module tree is pure: no storage, no I/O, no clock. Callers hand in
//! events and lookups (closures over whatever store or cache they keep) and
//! get typed answers back.
//!
//! - [`version`]: the supported room versions (every stable one, 1 to 12)
//!   and ruma's rules for each.
//! - [`pdu`]: [`pdu::Pdu`], one event of a room's DAG parsed from its
//!   canonical JSON, kept with exactly those bytes.
//! - [`auth`]: the authorization rules (ruma's), which events a new event
//!   must cite, and errors that name the failed rule.
//! - [`e2e_policy`]: Myelin's E2E-only room policy, checked on local
//!   events against the current state.
//! - [`local_rules`]: what this server adds for events its own users ask it
//!   to sign (restricted joins it vouches for, event shapes no client may
//!   build).
//! - [`state`]: a room's current state, its member index and the state
//!   groups that record it.
//! - [`server_acl`]: whether a room's `m.room.server_acl` lets a server in.
//! - [`resolve`]: state resolution (v1 for room version 1, v2, and v2.1
//!   from room version 12) when the DAG forks.
//!
//! Signatures and content hashes are checked by `myelin_crypto`, not here:
//! callers verify received PDUs before they reach the authorization rules.
//!
//! # Example
//!
//! A server creates a version 12 room and its creator joins: each event is
//! built with `myelin_crypto::build_pdu`, cites the auth events
//! [`auth::auth_events_for`] picks from the current state, and is checked
//! with [`auth::check_auth`] before it joins the state.
//!
//! ```
//! use std::collections::HashMap;
//!
//! use myelin_crypto::{NewPdu, SigningKey, build_pdu, parse_canonical_object};
//! use myelin_server::service::rooms::{
//!     auth::{auth_events_for, check_auth},
//!     pdu::Pdu,
//!     resolve::StateMap,
//!     version::RoomVersion,
//! };
//! use ruma::{
//!     MilliSecondsSinceUnixEpoch, OwnedEventId, UInt, events::TimelineEventType, server_name,
//!     user_id,
//! };
//!
//! let version = RoomVersion::V12;
//! let key = SigningKey::generate("1")?;
//! let alice = user_id!("@alice:example.org");
//! let mut events: HashMap<OwnedEventId, Pdu> = HashMap::new();
//! let mut state: StateMap<OwnedEventId> = StateMap::new();
//! let mut extremities: Vec<OwnedEventId> = Vec::new();
//!
//! let mut append = |room_id, kind: &str, state_key: Option<&str>, content: &str| {
//!     let mut new = NewPdu {
//!         room_id,
//!         sender: alice.to_owned(),
//!         event_type: TimelineEventType::from(kind),
//!         state_key: state_key.map(str::to_owned),
//!         content: parse_canonical_object(content)?,
//!         prev_events: extremities.clone(),
//!         auth_events: Vec::new(),
//!         depth: UInt::try_from(events.len() + 1)?,
//!         origin_server_ts: MilliSecondsSinceUnixEpoch::now(),
//!         redacts: None,
//!         v1_ids: None,
//!     };
//!     new.auth_events = auth_events_for(version, &new, |kind, key| {
//!         state.get(&(kind.clone(), key.to_owned())).cloned()
//!     })?;
//!     let signed = build_pdu(new, server_name!("example.org"), &key, &version.id())?;
//!     let pdu = Pdu::from_signed(version, signed)?;
//!     check_auth(version, &pdu, |id| events.get(id).cloned(), |kind, key| {
//!         let id = state.get(&(kind.clone(), key.to_owned()))?;
//!         events.get(id).cloned()
//!     })?;
//!     if let Some(key) = pdu.state_map_key() {
//!         state.insert(key, pdu.event_id().to_owned());
//!     }
//!     extremities = vec![pdu.event_id().to_owned()];
//!     events.insert(pdu.event_id().to_owned(), pdu.clone());
//!     Ok::<_, Box<dyn std::error::Error>>(pdu)
//! };
//!
//! // Version 12: the create event has no room id; the room id is its hash.
//! let create = append(None, "m.room.create", Some(""), r#"{"room_version":"12"}"#)?;
//! let room_id = create.room_id().to_owned();
//! append(Some(room_id.clone()), "m.room.member", Some(alice.as_str()), r#"{"membership":"join"}"#)?;
//! assert_eq!(state.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod auth;
pub mod e2e_policy;
pub mod local_rules;
pub mod pdu;
pub mod resolve;
pub mod server_acl;
pub mod state;
pub mod version;

#[cfg(test)]
pub(crate) mod testing;
