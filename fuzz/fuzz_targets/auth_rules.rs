//! The authorization rules and state resolution over rooms the fuzzer
//! writes: events of every kind that matters to the rules (create, members
//! with every membership, power levels, join rules, redactions, messages,
//! anything else) from a handful of users, citing earlier events as
//! `prev_events` and `auth_events` in any way, in every room version.
//! Each event is checked against its auth events and the state before it;
//! then the states at several points are resolved (ruma's v2 and v2.1,
//! Myelin's own v1). No panic, and the same question asked twice gets the
//! same answer.
#![no_main]

use std::collections::{BTreeMap, HashMap, HashSet};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use myelin_crypto::{NewPdu, V1EventIds, build_pdu, parse_canonical_object, reference_hash};
use myelin_fuzz::signing_key;
use myelin_server::service::rooms::{
    auth::{check_auth, check_auth_events, user_power_level},
    pdu::Pdu,
    resolve::{ResolveError, StateMap, auth_chain, resolve_state},
    version::RoomVersion,
};
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, UInt,
    events::{StateEventType, TimelineEventType},
};
use serde_json::{Map, Value, json};

/// Most events in one room: enough for forks and chains, small enough to
/// keep a run quick.
const MAX_EVENTS: usize = 24;

const USERS: [&str; 4] = [
    "@alice:a.test",
    "@bob:a.test",
    "@carol:b.test",
    "@mallory:c.test",
];

const EVENT_TYPES: [&str; 6] = [
    "m.room.message",
    "m.room.member",
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.name",
    "m.room.history_visibility",
];

#[derive(Arbitrary, Debug)]
struct Room {
    version: u8,
    events: Vec<Event>,
    /// Indices of events after which the state forms one fork to resolve.
    forks: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Event {
    sender: u8,
    kind: Kind,
    /// Earlier events cited, by index (taken modulo the events so far).
    prev_events: Vec<u8>,
    auth_events: Vec<u8>,
    depth: u8,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Create {
        has_creator: bool,
        additional_creators: Vec<u8>,
    },
    Member {
        target: u8,
        membership: u8,
        authorised_via: Option<u8>,
    },
    PowerLevels {
        users: Vec<(u8, i8)>,
        users_default: Option<i8>,
        events_default: Option<i8>,
        state_default: Option<i8>,
        actions: [Option<i8>; 4],
        events: Vec<(u8, i8)>,
    },
    JoinRules {
        rule: u8,
        allow_room: bool,
    },
    Redaction {
        target: u8,
    },
    Message,
    /// Any type, state key and content the fuzzer writes.
    Other {
        event_type: String,
        state_key: Option<String>,
        content: String,
    },
}

fuzz_target!(|room: Room| {
    let version = RoomVersion::ALL[usize::from(room.version) % RoomVersion::ALL.len()];
    let events = build_room(version, &room.events);
    if events.is_empty() {
        return;
    }
    let by_id: HashMap<OwnedEventId, Pdu> = events
        .iter()
        .map(|pdu| (pdu.event_id().to_owned(), pdu.clone()))
        .collect();
    let fetch = |id: &EventId| by_id.get(id).cloned();

    // Each event against its auth events and the state the accepted
    // events before it make.
    let mut state: HashMap<(StateEventType, String), Pdu> = HashMap::new();
    let mut states_after = Vec::new();
    for pdu in &events {
        let lookup =
            |kind: &StateEventType, key: &str| state.get(&(kind.clone(), key.to_owned())).cloned();
        let first = check_auth(version, pdu, fetch, lookup);
        assert_eq!(
            first,
            check_auth(version, pdu, fetch, lookup),
            "check_auth twice"
        );
        assert_eq!(
            check_auth_events(version, pdu, fetch),
            check_auth_events(version, pdu, fetch),
            "check_auth_events twice"
        );
        let sender_level = user_power_level(version, pdu.sender(), lookup);
        assert_eq!(
            format!("{sender_level:?}"),
            format!("{:?}", user_power_level(version, pdu.sender(), lookup)),
            "user_power_level twice"
        );
        if first.is_ok()
            && let Some(key) = pdu.state_map_key()
        {
            state.insert(key, pdu.clone());
        }
        states_after.push(
            state
                .iter()
                .map(|(k, v)| (k.clone(), v.event_id().to_owned()))
                .collect::<StateMap<_>>(),
        );
    }

    // The states at the chosen points, resolved.
    let state_sets: Vec<StateMap<OwnedEventId>> = room
        .forks
        .iter()
        .take(4)
        .map(|at| states_after[usize::from(*at) % states_after.len()].clone())
        .collect();
    // One room has one create event. Forks that disagree on it cannot come
    // from one room's DAG, and ruma's v2 answers them differently from one
    // run to the next (fuzz/README.md, "Limits").
    let creates: HashSet<_> = state_sets
        .iter()
        .filter_map(|set| set.get(&(StateEventType::RoomCreate, String::new())))
        .collect();
    if creates.len() > 1 {
        return;
    }
    let Ok(auth_chains) = state_sets
        .iter()
        .map(|set| auth_chain(set.values(), fetch))
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    let first = resolve_state(version, &state_sets, auth_chains.clone(), fetch);
    let second = resolve_state(version, &state_sets, auth_chains, fetch);
    // Whether resolution fails on a malformed auth event varies from one
    // call to the next (fuzz/README.md, "Limits"); what it resolves to must not.
    if let (Ok(first), Ok(second)) = (ordered(first), ordered(second)) {
        assert_eq!(first, second, "resolve_state twice");
    }
});

/// A resolved state in a fixed order (a `StateMap` is a hash map), or the
/// error's message.
fn ordered(
    resolved: Result<StateMap<OwnedEventId>, ResolveError>,
) -> Result<BTreeMap<(String, String), OwnedEventId>, String> {
    resolved
        .map(|state| {
            state
                .into_iter()
                .map(|((kind, key), id)| ((kind.to_string(), key), id))
                .collect()
        })
        .map_err(|error| error.to_string())
}

/// The room's events, signed by their senders' servers; events the
/// builder refuses (no create event yet in version 12, content too large)
/// are left out.
fn build_room(version: RoomVersion, events: &[Event]) -> Vec<Pdu> {
    let key = signing_key();
    let mut built: Vec<Pdu> = Vec::new();
    let mut room_id: Option<OwnedRoomId> = (!version.is_room_id_derived_from_create_event())
        .then(|| OwnedRoomId::try_from("!room:a.test").expect("a valid room id"));
    for (index, event) in events.iter().take(MAX_EVENTS).enumerate() {
        let sender = user(event.sender);
        let (event_type, state_key, content, redacts) =
            match describe(&event.kind, &built, &room_id) {
                Some(parts) => parts,
                None => continue,
            };
        let is_create = event_type == "m.room.create";
        let cite = |indices: &[u8]| -> Vec<OwnedEventId> {
            if built.is_empty() {
                return Vec::new();
            }
            let mut ids: Vec<OwnedEventId> = indices
                .iter()
                .take(8)
                .map(|i| built[usize::from(*i) % built.len()].event_id().to_owned())
                .collect();
            ids.dedup();
            ids
        };
        let prev_events = cite(&event.prev_events);
        let auth_events = cite(&event.auth_events);
        let v1_ids = version.has_origin_chosen_event_ids().then(|| V1EventIds {
            event_id: OwnedEventId::try_from(format!("${index}:a.test")).expect("a valid event id"),
            reference_hashes: prev_events
                .iter()
                .chain(&auth_events)
                .filter_map(|id| {
                    let pdu = built.iter().find(|pdu| pdu.event_id() == id)?;
                    Some((
                        id.clone(),
                        reference_hash(&version.id(), pdu.as_object()).ok()?,
                    ))
                })
                .collect(),
        });
        let Ok(content) = parse_canonical_object(&content.to_string()) else {
            continue;
        };
        let new = NewPdu {
            room_id: if is_create && version.is_room_id_derived_from_create_event() {
                None
            } else {
                match &room_id {
                    Some(room_id) => Some(room_id.clone()),
                    None => continue,
                }
            },
            sender: sender.clone(),
            event_type: TimelineEventType::from(event_type.as_str()),
            state_key,
            content,
            prev_events,
            auth_events,
            depth: UInt::from(event.depth),
            origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::from(
                u32::try_from(index).unwrap_or(0),
            )),
            redacts,
            v1_ids,
        };
        let Ok(signed) = build_pdu(new, sender.server_name(), &key, &version.id()) else {
            continue;
        };
        let Ok(pdu) = Pdu::from_signed(version, signed) else {
            continue;
        };
        if is_create && room_id.is_none() {
            room_id = Some(pdu.room_id().to_owned());
        }
        built.push(pdu);
    }
    built
}

type Parts = (String, Option<String>, Value, Option<OwnedEventId>);

/// The event's type, state key, content and redacted event.
fn describe(kind: &Kind, built: &[Pdu], room_id: &Option<OwnedRoomId>) -> Option<Parts> {
    let parts = match kind {
        Kind::Create {
            has_creator,
            additional_creators,
        } => {
            let mut content = Map::new();
            if *has_creator {
                content.insert("creator".to_owned(), json!(USERS[0]));
            }
            if !additional_creators.is_empty() {
                let creators: Vec<&str> = additional_creators
                    .iter()
                    .take(4)
                    .map(|u| USERS[usize::from(*u) % USERS.len()])
                    .collect();
                content.insert("additional_creators".to_owned(), json!(creators));
            }
            (
                "m.room.create".to_owned(),
                Some(String::new()),
                Value::Object(content),
                None,
            )
        }
        Kind::Member {
            target,
            membership,
            authorised_via,
        } => {
            let membership = ["join", "invite", "leave", "ban", "knock", "unknown"]
                [usize::from(*membership) % 6];
            let mut content = json!({ "membership": membership });
            if let Some(via) = authorised_via {
                content["join_authorised_via_users_server"] = json!(user(*via));
            }
            (
                "m.room.member".to_owned(),
                Some(user(*target).to_string()),
                content,
                None,
            )
        }
        Kind::PowerLevels {
            users,
            users_default,
            events_default,
            state_default,
            actions,
            events,
        } => {
            let mut content = Map::new();
            let users: Map<String, Value> = users
                .iter()
                .take(4)
                .map(|(u, level)| (user(*u).to_string(), json!(level)))
                .collect();
            content.insert("users".to_owned(), Value::Object(users));
            for (name, value) in [
                ("users_default", users_default),
                ("events_default", events_default),
                ("state_default", state_default),
                ("ban", &actions[0]),
                ("kick", &actions[1]),
                ("invite", &actions[2]),
                ("redact", &actions[3]),
            ] {
                if let Some(value) = value {
                    content.insert(name.to_owned(), json!(value));
                }
            }
            let events: Map<String, Value> = events
                .iter()
                .take(6)
                .map(|(t, level)| {
                    (
                        EVENT_TYPES[usize::from(*t) % EVENT_TYPES.len()].to_owned(),
                        json!(level),
                    )
                })
                .collect();
            content.insert("events".to_owned(), Value::Object(events));
            (
                "m.room.power_levels".to_owned(),
                Some(String::new()),
                Value::Object(content),
                None,
            )
        }
        Kind::JoinRules { rule, allow_room } => {
            let rule = [
                "public",
                "invite",
                "knock",
                "restricted",
                "knock_restricted",
                "private",
            ][usize::from(*rule) % 6];
            let mut content = json!({ "join_rule": rule });
            if *allow_room && let Some(room_id) = room_id {
                content["allow"] = json!([{ "type": "m.room_membership", "room_id": room_id }]);
            }
            (
                "m.room.join_rules".to_owned(),
                Some(String::new()),
                content,
                None,
            )
        }
        Kind::Redaction { target } => {
            let target = built
                .get(usize::from(*target) % built.len().max(1))?
                .event_id()
                .to_owned();
            (
                "m.room.redaction".to_owned(),
                None,
                json!({ "redacts": target }),
                Some(target),
            )
        }
        Kind::Message => (
            "m.room.message".to_owned(),
            None,
            json!({ "msgtype": "m.text", "body": "" }),
            None,
        ),
        Kind::Other {
            event_type,
            state_key,
            content,
        } => {
            let content: Value = serde_json::from_str(content)
                .ok()
                .filter(Value::is_object)?;
            (event_type.clone(), state_key.clone(), content, None)
        }
    };
    Some(parts)
}

fn user(index: u8) -> OwnedUserId {
    OwnedUserId::try_from(USERS[usize::from(index) % USERS.len()]).expect("a valid user id")
}
