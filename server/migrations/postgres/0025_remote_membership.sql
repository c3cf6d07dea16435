-- Events of a room joined over federation that arrived outside its
-- timeline: the state and auth chain a resident server answered a
-- `send_join` with. They are kept apart from `events` (no stream
-- position, so no timeline read returns them) and are found by id: the
-- room's state groups name them, and later events cite them as auth
-- events. An outlier that later arrives in the timeline stays here.
CREATE TABLE outlier_events (
    event_id    TEXT   PRIMARY KEY NOT NULL,
    room_id     TEXT   NOT NULL,
    depth       BIGINT NOT NULL,
    -- The state before the join that brought it: the only state this
    -- server knows near it.
    state_group BIGINT NOT NULL,
    json        TEXT   NOT NULL
);

-- Membership events of local users in rooms this server does not hold:
-- an invite from another server (with the stripped state it came with,
-- for the invitee's sync) and the leave that rejected it. The membership
-- itself is in `membership_history`, at a stream position, like any other.
CREATE TABLE out_of_room_memberships (
    event_id     TEXT PRIMARY KEY NOT NULL,
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    room_version TEXT NOT NULL,
    json         TEXT NOT NULL,
    -- A JSON array of stripped state events (`invite_room_state`).
    stripped_state TEXT NOT NULL
);

-- For a room joined over federation: the state group of the state before
-- the join, the room's state before its first timeline event, which
-- `events` cannot tell.
CREATE TABLE imported_rooms (
    room_id     TEXT   PRIMARY KEY NOT NULL,
    state_group BIGINT NOT NULL
);
