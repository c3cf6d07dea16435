//! The room versions this server can authorise and resolve, and ruma's rules
//! for each.
//!
//! Myelin creates and serves rooms of every stable room version, 1 to 12.
//! The rules themselves are ruma's [`RoomVersionRules`]; this module names
//! the versions and answers the questions the rest of the server asks of a
//! version. What each version means here, and what is not done for the old
//! ones, is in `spec-notes/room-versions.md`.
//!
//! What changes between the versions ([v1] to [v12]):
//!
//! | | 1 | 2 | 3 | 4, 5 | 6 | 7 | 8, 9 | 10 | 11 | 12 |
//! | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
//! | event id | `$random:server`, in the PDU | same | reference hash, standard base64 | URL-safe base64 | ← | ← | ← | ← | ← | ← |
//! | `prev_events`, `auth_events` | `[id, {"sha256": hash}]` pairs | same | ids | ← | ← | ← | ← | ← | ← | ← |
//! | state resolution | v1 | v2 | v2 | v2 | v2 | v2 | v2 | v2 | v2 | v2.1 |
//! | `knock` | | | | | | yes | yes | yes | yes | yes |
//! | `restricted` (`knock_restricted` from 10) | | | | | | | yes | yes | yes | yes |
//! | power levels | strings or integers | ← | ← | ← | ← + `notifications` checked | ← | ← | integers only | ← | ← |
//! | creator | `content.creator` | ← | ← | ← | ← | ← | ← | ← | `sender` | `sender` + `additional_creators`, infinite power |
//! | room id | `!opaque:server` | ← | ← | ← | ← | ← | ← | ← | ← | `!` + create event hash |
//! | `redacts` | top level | ← | ← | ← | ← | ← | ← | ← | `content` | `content` |
//!
//! Redaction keeps different keys per version (`m.room.aliases` content
//! until 5, `allow` of join rules from 8, `join_authorised_via_users_server`
//! from 9, the whole create content and more from 11): ruma's
//! [`RedactionRules`](ruma::room_version_rules::RedactionRules) for the
//! version decide.
//!
//! [v1]: https://spec.matrix.org/v1.16/rooms/v1/
//! [v12]: https://spec.matrix.org/v1.16/rooms/v12/

use std::fmt;

use ruma::{
    RoomVersionId,
    room_version_rules::{
        EventIdFormatVersion, RoomIdFormatVersion, RoomVersionRules, StateResolutionVersion,
    },
};

/// A room version whose events this server can parse, authorise and resolve.
///
/// Converting from a [`RoomVersionId`] (with [`TryFrom`]) is the one place an
/// unsupported version is refused; everything past it takes a `RoomVersion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RoomVersion {
    /// [Room version 1](https://spec.matrix.org/v1.16/rooms/v1/).
    V1,
    /// [Room version 2](https://spec.matrix.org/v1.16/rooms/v2/).
    V2,
    /// [Room version 3](https://spec.matrix.org/v1.16/rooms/v3/).
    V3,
    /// [Room version 4](https://spec.matrix.org/v1.16/rooms/v4/).
    V4,
    /// [Room version 5](https://spec.matrix.org/v1.16/rooms/v5/).
    V5,
    /// [Room version 6](https://spec.matrix.org/v1.16/rooms/v6/).
    V6,
    /// [Room version 7](https://spec.matrix.org/v1.16/rooms/v7/).
    V7,
    /// [Room version 8](https://spec.matrix.org/v1.16/rooms/v8/).
    V8,
    /// [Room version 9](https://spec.matrix.org/v1.16/rooms/v9/).
    V9,
    /// [Room version 10](https://spec.matrix.org/v1.16/rooms/v10/).
    V10,
    /// [Room version 11](https://spec.matrix.org/v1.16/rooms/v11/).
    V11,
    /// [Room version 12](https://spec.matrix.org/v1.16/rooms/v12/).
    V12,
}

/// The state resolution algorithm a room version uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateResolution {
    /// [State resolution v1](https://spec.matrix.org/v1.16/rooms/v1/#state-resolution)
    /// (room version 1).
    V1,
    /// [State resolution v2](https://spec.matrix.org/v1.16/rooms/v2/#state-resolution)
    /// (room versions 2 to 11).
    V2,
    /// [State resolution v2.1](https://spec.matrix.org/v1.16/rooms/v12/#state-resolution)
    /// (room version 12): iterative auth checks start from an empty state and
    /// the conflicted state subgraph joins the full conflicted set.
    V2_1,
}

/// A room version that ruma or this server does not support.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unsupported room version {0}")]
pub struct UnsupportedRoomVersion(pub RoomVersionId);

static RULES: [RoomVersionRules; 12] = [
    RoomVersionRules::V1,
    RoomVersionRules::V2,
    RoomVersionRules::V3,
    RoomVersionRules::V4,
    RoomVersionRules::V5,
    RoomVersionRules::V6,
    RoomVersionRules::V7,
    RoomVersionRules::V8,
    RoomVersionRules::V9,
    RoomVersionRules::V10,
    RoomVersionRules::V11,
    RoomVersionRules::V12,
];

impl RoomVersion {
    /// Every supported version, oldest first.
    pub const ALL: [RoomVersion; 12] = [
        Self::V1,
        Self::V2,
        Self::V3,
        Self::V4,
        Self::V5,
        Self::V6,
        Self::V7,
        Self::V8,
        Self::V9,
        Self::V10,
        Self::V11,
        Self::V12,
    ];

    /// The version's identifier (`"1"` to `"12"`).
    pub fn id(self) -> RoomVersionId {
        match self {
            Self::V1 => RoomVersionId::V1,
            Self::V2 => RoomVersionId::V2,
            Self::V3 => RoomVersionId::V3,
            Self::V4 => RoomVersionId::V4,
            Self::V5 => RoomVersionId::V5,
            Self::V6 => RoomVersionId::V6,
            Self::V7 => RoomVersionId::V7,
            Self::V8 => RoomVersionId::V8,
            Self::V9 => RoomVersionId::V9,
            Self::V10 => RoomVersionId::V10,
            Self::V11 => RoomVersionId::V11,
            Self::V12 => RoomVersionId::V12,
        }
    }

    /// ruma's rules for this version: event format, redaction, signatures,
    /// authorization and state resolution tweaks.
    pub fn rules(self) -> &'static RoomVersionRules {
        // `ALL` lists the variants in declaration order, so the variant's
        // discriminant is its index in `RULES`.
        &RULES[self as usize]
    }

    /// The state resolution algorithm of this version.
    pub fn state_resolution(self) -> StateResolution {
        match &self.rules().state_res {
            StateResolutionVersion::V2(rules) if rules.consider_conflicted_state_subgraph => {
                StateResolution::V2_1
            }
            StateResolutionVersion::V2(_) => StateResolution::V2,
            _ => StateResolution::V1,
        }
    }

    /// Whether event ids are chosen by the origin server (`$random:server`,
    /// versions 1 and 2) rather than derived from the event's reference hash.
    /// Such events carry their id in an `event_id` field, and cite other
    /// events as `[id, {"sha256": reference hash}]` pairs.
    pub fn has_origin_chosen_event_ids(self) -> bool {
        self.rules().event_id_format == EventIdFormatVersion::V1
    }

    /// Whether the `m.room.create` event names the creator in
    /// `content.creator` (before version 11); from version 11 the creator is
    /// the create event's `sender`.
    pub fn has_creator_field(self) -> bool {
        !self.rules().authorization.use_room_create_sender
    }

    /// Whether the room's creators (the create event's sender and
    /// `content.additional_creators`) hold infinite power and may not be
    /// listed in `m.room.power_levels` `users` (version 12).
    pub fn are_creators_privileged(self) -> bool {
        self.rules()
            .authorization
            .explicitly_privilege_room_creators
    }

    /// Whether the room id is derived from the `m.room.create` event's
    /// reference hash (version 12), in which case the create event has no
    /// `room_id` and is never cited in `auth_events`.
    pub fn is_room_id_derived_from_create_event(self) -> bool {
        self.rules().room_id_format == RoomIdFormatVersion::V2
    }
}

impl TryFrom<&RoomVersionId> for RoomVersion {
    type Error = UnsupportedRoomVersion;

    fn try_from(id: &RoomVersionId) -> Result<Self, Self::Error> {
        Self::ALL
            .into_iter()
            .find(|version| version.id() == *id)
            .ok_or_else(|| UnsupportedRoomVersion(id.clone()))
    }
}

impl From<RoomVersion> for RoomVersionId {
    fn from(version: RoomVersion) -> Self {
        version.id()
    }
}

impl fmt::Display for RoomVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stable_version_round_trips_through_its_id() {
        for (index, version) in RoomVersion::ALL.into_iter().enumerate() {
            assert_eq!(version.id().as_str(), (index + 1).to_string());
            assert_eq!(RoomVersion::try_from(&version.id()), Ok(version));
        }
    }

    #[test]
    fn each_version_gets_its_own_rules() {
        for version in RoomVersion::ALL {
            let expected = version.id().rules().unwrap();
            let rules = version.rules();
            assert_eq!(rules.event_id_format, expected.event_id_format, "{version}");
            assert_eq!(rules.state_res, expected.state_res, "{version}");
            assert_eq!(
                rules.authorization.knocking, expected.authorization.knocking,
                "{version}"
            );
            assert_eq!(
                rules
                    .redaction
                    .keep_room_member_join_authorised_via_users_server,
                expected
                    .redaction
                    .keep_room_member_join_authorised_via_users_server,
                "{version}"
            );
        }
    }

    #[test]
    fn unstable_and_unknown_versions_are_refused() {
        for id in ["org.example.custom", "13", "1.1"] {
            let id = RoomVersionId::try_from(id).unwrap();
            assert_eq!(
                RoomVersion::try_from(&id),
                Err(UnsupportedRoomVersion(id.clone()))
            );
        }
    }

    #[test]
    fn state_resolution_is_v1_then_v2_then_v2_1() {
        assert_eq!(RoomVersion::V1.state_resolution(), StateResolution::V1);
        for version in &RoomVersion::ALL[1..11] {
            assert_eq!(version.state_resolution(), StateResolution::V2, "{version}");
        }
        assert_eq!(RoomVersion::V12.state_resolution(), StateResolution::V2_1);
    }

    #[test]
    fn version_features_switch_where_the_spec_says() {
        let origin_chosen: Vec<_> = RoomVersion::ALL
            .into_iter()
            .filter(|v| v.has_origin_chosen_event_ids())
            .collect();
        assert_eq!(origin_chosen, [RoomVersion::V1, RoomVersion::V2]);
        let with_creator_field = RoomVersion::ALL
            .into_iter()
            .filter(|v| v.has_creator_field())
            .count();
        assert_eq!(with_creator_field, 10);
        assert!(!RoomVersion::V11.are_creators_privileged());
        assert!(RoomVersion::V12.are_creators_privileged());
        assert!(!RoomVersion::V11.is_room_id_derived_from_create_event());
        assert!(RoomVersion::V12.is_room_id_derived_from_create_event());
    }
}
