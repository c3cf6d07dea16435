//! Helpers shared by the room tests: a signing key, users and PDU builders.

use std::{cell::RefCell, collections::HashMap};

use myelin_crypto::{NewPdu, SignedPdu, SigningKey, V1EventIds, build_pdu, parse_canonical_object};
use ruma::{
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, UInt,
    events::{StateEventType, TimelineEventType},
    server_name,
    state_res::StateMap,
};
use serde_json::{Value as JsonValue, json};

use super::{
    auth::{self, AuthError},
    pdu::Pdu,
    version::RoomVersion,
};

/// The test servers' signing key (a fixed seed: the tests are deterministic).
pub(crate) fn key() -> SigningKey {
    SigningKey::from_seed(&[7; 32], "test").expect("a 32-byte seed is a valid key")
}

/// A user id: `@name:a.test` for a bare name, or the full id if it starts
/// with `@`.
pub(crate) fn user(name: &str) -> OwnedUserId {
    let id = if name.starts_with('@') {
        name.to_owned()
    } else {
        format!("@{name}:a.test")
    };
    OwnedUserId::try_from(id).expect("valid test user id")
}

/// JSON content as canonical JSON.
pub(crate) fn content(value: JsonValue) -> CanonicalJsonObject {
    parse_canonical_object(&value.to_string()).expect("test content is canonical JSON")
}

/// A new PDU with the given header fields and no DAG links.
pub(crate) fn new_pdu(
    room_id: Option<OwnedRoomId>,
    sender: &OwnedUserId,
    kind: &str,
    state_key: Option<&str>,
    body: JsonValue,
) -> NewPdu {
    NewPdu {
        room_id,
        sender: sender.clone(),
        event_type: TimelineEventType::from(kind),
        state_key: state_key.map(str::to_owned),
        content: content(body),
        prev_events: Vec::new(),
        auth_events: Vec::new(),
        depth: UInt::MIN,
        origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::MIN),
        redacts: None,
        v1_ids: None,
    }
}

thread_local! {
    /// The reference hash of every test PDU signed on this thread, for the
    /// `[id, {"sha256": hash}]` citations of room versions 1 and 2.
    static REFERENCE_HASHES: RefCell<HashMap<OwnedEventId, String>> =
        RefCell::new(HashMap::new());
}

/// Signs `new` as `a.test` under `version`. In room versions 1 and 2 the
/// event gets the next `$n:a.test` id, and cites events with the reference
/// hashes recorded when they were signed (a placeholder for ids no test PDU
/// has: tests cite unknown events on purpose).
pub(crate) fn sign(version: RoomVersion, mut new: NewPdu) -> SignedPdu {
    if version.has_origin_chosen_event_ids() {
        let reference_hashes = REFERENCE_HASHES.with_borrow(|known| {
            new.prev_events
                .iter()
                .chain(&new.auth_events)
                .map(|id| {
                    let hash = known
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| "unknown".to_owned());
                    (id.clone(), hash)
                })
                .collect()
        });
        let serial = REFERENCE_HASHES.with_borrow(HashMap::len);
        new.v1_ids = Some(V1EventIds {
            event_id: OwnedEventId::try_from(format!("${serial}:a.test"))
                .expect("valid test event id"),
            reference_hashes,
        });
    }
    let signed =
        build_pdu(new, server_name!("a.test"), &key(), &version.id()).expect("test PDU builds");
    let hash = myelin_crypto::reference_hash(&version.id(), signed.pdu())
        .expect("a built PDU has a reference hash");
    REFERENCE_HASHES.with_borrow_mut(|known| known.insert(signed.event_id().clone(), hash));
    signed
}

/// Signs `new` and wraps it as a [`Pdu`].
pub(crate) fn pdu(version: RoomVersion, new: NewPdu) -> Pdu {
    Pdu::from_signed(version, sign(version, new)).expect("test PDU is well formed")
}

/// The room id for a room whose create event will be `create` (only needed
/// before version 12, where it is not derived).
pub(crate) fn legacy_room_id() -> OwnedRoomId {
    OwnedRoomId::try_from("!room:a.test").expect("valid room id")
}

/// A create event for `version`, sent by `creator`.
pub(crate) fn create_event(version: RoomVersion, creator: &OwnedUserId) -> Pdu {
    let room_id = (!version.is_room_id_derived_from_create_event()).then(legacy_room_id);
    let mut body = serde_json::json!({ "room_version": version.to_string() });
    if version.has_creator_field() {
        body["creator"] = serde_json::json!(creator);
    }
    pdu(
        version,
        new_pdu(room_id, creator, "m.room.create", Some(""), body),
    )
}

/// `assert!(matches!(..))` that prints the value on failure.
macro_rules! assert_matches {
    ($value:expr, $pattern:pat $(if $guard:expr)? $(, $($message:tt)+)?) => {
        match $value {
            $pattern $(if $guard)? => {}
            ref other => panic!(
                "{:?} does not match `{}`{}",
                other,
                stringify!($pattern $(if $guard)?),
                { let _context = String::new(); $( let _context = format!(": {}", format_args!($($message)+)); )? _context },
            ),
        }
    };
}
pub(crate) use assert_matches;

/// Runs `$body` once per supported room version, with `$version` bound.
///
/// `for_each_version!(where |v| .., |version| { .. })` runs it only for the
/// versions the filter keeps (a rule some versions lack).
macro_rules! for_each_version {
    (|$version:ident| $body:block) => {
        for $version in $crate::service::rooms::version::RoomVersion::ALL {
            $body
        }
    };
    (where $filter:expr, |$version:ident| $body:block) => {
        for $version in $crate::service::rooms::version::RoomVersion::ALL
            .into_iter()
            .filter($filter)
        {
            $body
        }
    };
}
pub(crate) use for_each_version;

/// A room under construction: every event built so far, the current state
/// along one line of the DAG, and its forward extremity.
///
/// Cloning forks it: both copies share the events so far and then grow
/// separately, as two servers would; [`TestRoom::merge_events`] brings the
/// events of a fork back for state resolution.
#[derive(Clone)]
pub(crate) struct TestRoom {
    pub(crate) version: RoomVersion,
    pub(crate) create: Pdu,
    pub(crate) events: HashMap<OwnedEventId, Pdu>,
    pub(crate) state: StateMap<OwnedEventId>,
    extremities: Vec<OwnedEventId>,
    depth: u64,
    clock: u64,
}

impl TestRoom {
    /// A room with only its create event, by `creator`.
    pub(crate) fn new(version: RoomVersion, creator: &str) -> Self {
        Self::with_create(version, create_event(version, &user(creator)))
    }

    /// A room starting with the given create event.
    pub(crate) fn with_create(version: RoomVersion, create: Pdu) -> Self {
        let mut room = Self {
            version,
            create: create.clone(),
            events: HashMap::new(),
            state: StateMap::new(),
            extremities: Vec::new(),
            depth: 0,
            clock: 0,
        };
        room.apply(create);
        room
    }

    /// The usual room: alice creates it (power 100; in version 12 as creator,
    /// so not listed), bob is a moderator (50), charlie a plain member (0);
    /// `state_default`, `ban`, `kick` and `redact` are 50, `invite` 0; the join
    /// rule is public and all three have joined.
    pub(crate) fn standard(version: RoomVersion) -> Self {
        let mut room = Self::new(version, "alice");
        room.join("alice");
        room.ok(
            "alice",
            "m.room.power_levels",
            Some(""),
            default_power_levels(version),
        );
        room.ok(
            "alice",
            "m.room.join_rules",
            Some(""),
            json!({ "join_rule": "public" }),
        );
        room.join("bob");
        room.join("charlie");
        room
    }

    /// The room id.
    pub(crate) fn room_id(&self) -> OwnedRoomId {
        self.create.room_id().to_owned()
    }

    /// A new event on top of the current state: prev_events are the forward
    /// extremities, auth_events picked from the current state.
    pub(crate) fn new_event(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        body: JsonValue,
    ) -> NewPdu {
        let mut new = new_pdu(Some(self.room_id()), &user(sender), kind, state_key, body);
        new.auth_events = auth::auth_events_for(self.version, &new, |kind, state_key| {
            self.state
                .get(&(kind.clone(), state_key.to_owned()))
                .cloned()
        })
        .expect("test event has a readable membership");
        new.prev_events = self.extremities.clone();
        self.depth += 1;
        self.clock += 1;
        new.depth = UInt::new(self.depth).expect("small depth");
        new.origin_server_ts =
            MilliSecondsSinceUnixEpoch(UInt::new(self.clock).expect("small clock"));
        new
    }

    /// Signs a new event (without checking or applying it).
    pub(crate) fn sign(&self, new: NewPdu) -> Pdu {
        pdu(self.version, new)
    }

    /// A signed event on top of the current state, not yet checked.
    pub(crate) fn build(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        body: JsonValue,
    ) -> Pdu {
        let new = self.new_event(sender, kind, state_key, body);
        self.sign(new)
    }

    /// Checks `pdu` against its auth events and the current state.
    pub(crate) fn check(&self, pdu: &Pdu) -> Result<(), AuthError> {
        auth::check_auth(self.version, pdu, self.fetch(), |kind, state_key| {
            self.state_event(kind, state_key)
        })
    }

    /// Adds `pdu` to the room without checking it.
    pub(crate) fn apply(&mut self, pdu: Pdu) {
        if let Some(key) = pdu.state_map_key() {
            self.state.insert(key, pdu.event_id().to_owned());
        }
        self.extremities = vec![pdu.event_id().to_owned()];
        self.events.insert(pdu.event_id().to_owned(), pdu);
    }

    /// Builds, checks and (if allowed) applies an event.
    pub(crate) fn send(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        body: JsonValue,
    ) -> Result<Pdu, AuthError> {
        let pdu = self.build(sender, kind, state_key, body);
        self.check(&pdu)?;
        self.apply(pdu.clone());
        Ok(pdu)
    }

    /// [`TestRoom::send`] for an event the test setup needs to succeed.
    pub(crate) fn ok(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        body: JsonValue,
    ) -> Pdu {
        self.send(sender, kind, state_key, body)
            .unwrap_or_else(|error| panic!("setup event {kind} by {sender}: {error}"))
    }

    /// `sender` sets `target`'s membership.
    pub(crate) fn member(
        &mut self,
        sender: &str,
        target: &str,
        membership: &str,
    ) -> Result<Pdu, AuthError> {
        let target = user(target);
        self.send(
            sender,
            "m.room.member",
            Some(target.as_str()),
            json!({ "membership": membership }),
        )
    }

    /// `name` joins (and the test needs that to succeed).
    pub(crate) fn join(&mut self, name: &str) -> Pdu {
        self.member(name, name, "join")
            .unwrap_or_else(|error| panic!("{name} joins: {error}"))
    }

    /// `sender` sends a message.
    pub(crate) fn message(&mut self, sender: &str) -> Result<Pdu, AuthError> {
        self.send(
            sender,
            "m.room.message",
            None,
            json!({ "msgtype": "m.text", "body": "hi" }),
        )
    }

    /// Moves this room's clock forward, so that its next events are later
    /// than another fork's.
    pub(crate) fn advance_clock(&mut self, millis: u64) {
        self.clock += millis;
    }

    /// The event in the current state at `(kind, state_key)`.
    pub(crate) fn state_event(&self, kind: &StateEventType, state_key: &str) -> Option<Pdu> {
        let id = self.state.get(&(kind.clone(), state_key.to_owned()))?;
        self.events.get(id).cloned()
    }

    /// Looks events up by id.
    pub(crate) fn fetch(&self) -> impl Fn(&EventId) -> Option<Pdu> + '_ {
        |id| self.events.get(id).cloned()
    }

    /// Adds the events another fork built.
    pub(crate) fn merge_events(&mut self, other: &TestRoom) {
        self.events.extend(
            other
                .events
                .iter()
                .map(|(id, pdu)| (id.clone(), pdu.clone())),
        );
    }
}

/// Power levels for [`TestRoom::standard`].
pub(crate) fn default_power_levels(version: RoomVersion) -> JsonValue {
    power_levels(version, json!({ "@bob:a.test": 50 }))
}

/// Power levels with the given `users`, plus alice at 100 before version 12
/// (where she has her power as creator instead).
pub(crate) fn power_levels(version: RoomVersion, mut users: JsonValue) -> JsonValue {
    if !version.are_creators_privileged() {
        users["@alice:a.test"] = json!(100);
    }
    json!({
        "users": users,
        "users_default": 0,
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "events": { "m.room.power_levels": 100, "m.room.history_visibility": 100 },
    })
}
