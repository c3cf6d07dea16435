//! The room versions this server can authorise and resolve, and ruma's rules
//! for each.
//!
//! Myelin supports room versions 10, 11 and 12: the versions whose
//! authorization rules and state resolution the tests in this module tree
//! exercise. ruma's rules exist for older versions too, but ruma's state-res
//! crate asks servers not to advertise versions 1 to 5 and we have not tested
//! 6 to 9, so [`RoomVersion::try_from`] refuses them.
//!
//! What changes between the supported versions ([v10], [v11], [v12]):
//!
//! | | 10 | 11 | 12 |
//! | --- | --- | --- | --- |
//! | `knock`, `restricted`, `knock_restricted` join rules | yes | yes | yes |
//! | creator | `content.creator` | the create event's `sender` | the `sender` and `content.additional_creators` |
//! | creators' power | from `m.room.power_levels` | from `m.room.power_levels` | infinite; may not appear in `users` |
//! | room id | `!opaque:server` | `!opaque:server` | `!` + the create event's reference hash |
//! | create event in `auth_events` | required | required | forbidden |
//! | `redacts` of `m.room.redaction` | top level | in `content` | in `content` |
//! | state resolution | v2 | v2 | v2.1 |
//!
//! [v10]: https://spec.matrix.org/v1.16/rooms/v10/
//! [v11]: https://spec.matrix.org/v1.16/rooms/v11/
//! [v12]: https://spec.matrix.org/v1.16/rooms/v12/

use std::fmt;

use ruma::{
    RoomVersionId,
    room_version_rules::{RoomIdFormatVersion, RoomVersionRules},
};

/// A room version whose events this server can parse, authorise and resolve.
///
/// Converting from a [`RoomVersionId`] (with [`TryFrom`]) is the one place an
/// unsupported version is refused; everything past it takes a `RoomVersion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RoomVersion {
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

static RULES_V10: RoomVersionRules = RoomVersionRules::V10;
static RULES_V11: RoomVersionRules = RoomVersionRules::V11;
static RULES_V12: RoomVersionRules = RoomVersionRules::V12;

impl RoomVersion {
    /// Every supported version, oldest first.
    pub const ALL: [RoomVersion; 3] = [Self::V10, Self::V11, Self::V12];

    /// The version's identifier (`"10"`, `"11"`, `"12"`).
    pub fn id(self) -> RoomVersionId {
        match self {
            Self::V10 => RoomVersionId::V10,
            Self::V11 => RoomVersionId::V11,
            Self::V12 => RoomVersionId::V12,
        }
    }

    /// ruma's rules for this version: event format, redaction, signatures,
    /// authorization and state resolution tweaks.
    pub fn rules(self) -> &'static RoomVersionRules {
        match self {
            Self::V10 => &RULES_V10,
            Self::V11 => &RULES_V11,
            Self::V12 => &RULES_V12,
        }
    }

    /// The state resolution algorithm of this version.
    pub fn state_resolution(self) -> StateResolution {
        let consider_subgraph = self
            .rules()
            .state_res
            .v2_rules()
            .is_some_and(|rules| rules.consider_conflicted_state_subgraph);
        if consider_subgraph {
            StateResolution::V2_1
        } else {
            StateResolution::V2
        }
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
        match id {
            RoomVersionId::V10 => Ok(Self::V10),
            RoomVersionId::V11 => Ok(Self::V11),
            RoomVersionId::V12 => Ok(Self::V12),
            other => Err(UnsupportedRoomVersion(other.clone())),
        }
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
    fn supported_versions_round_trip_through_their_ids() {
        for version in RoomVersion::ALL {
            assert_eq!(RoomVersion::try_from(&version.id()), Ok(version));
        }
    }

    #[test]
    fn versions_before_10_and_unknown_versions_are_refused() {
        for id in [RoomVersionId::V1, RoomVersionId::V6, RoomVersionId::V9] {
            assert_eq!(
                RoomVersion::try_from(&id),
                Err(UnsupportedRoomVersion(id.clone()))
            );
        }
        let custom = RoomVersionId::try_from("org.example.custom").unwrap();
        assert_eq!(
            RoomVersion::try_from(&custom),
            Err(UnsupportedRoomVersion(custom.clone()))
        );
    }

    #[test]
    fn only_version_12_uses_state_resolution_v2_1_and_hashed_room_ids() {
        assert_eq!(RoomVersion::V10.state_resolution(), StateResolution::V2);
        assert_eq!(RoomVersion::V11.state_resolution(), StateResolution::V2);
        assert_eq!(RoomVersion::V12.state_resolution(), StateResolution::V2_1);
        assert!(!RoomVersion::V11.is_room_id_derived_from_create_event());
        assert!(RoomVersion::V12.is_room_id_derived_from_create_event());
    }
}
