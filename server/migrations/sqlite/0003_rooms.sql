-- Rooms: the event DAG, state snapshots, memberships, aliases and the directory.
CREATE TABLE rooms (
    room_id      TEXT    PRIMARY KEY NOT NULL,
    room_version TEXT    NOT NULL,
    is_public    BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts   BIGINT  NOT NULL
);

-- Every accepted PDU in the order this server accepted it. `json` is the
-- canonical JSON served to clients and servers (the redacted form once a
-- redaction applies). `state_group` is the room state after the event.
CREATE TABLE events (
    stream_ordering BIGINT PRIMARY KEY NOT NULL,
    event_id        TEXT   NOT NULL UNIQUE,
    room_id         TEXT   NOT NULL REFERENCES rooms (room_id),
    event_type      TEXT   NOT NULL,
    state_key       TEXT,
    sender          TEXT   NOT NULL,
    depth           BIGINT NOT NULL,
    state_group     BIGINT NOT NULL,
    json            TEXT   NOT NULL,
    redacted_by     TEXT
);
CREATE INDEX events_by_room ON events (room_id, stream_ordering);

-- State snapshots, delta-encoded: a group lists what changed since
-- `prev_group`, or everything when `prev_group` is NULL. A group's id is the
-- stream ordering of the state event that produced it.
CREATE TABLE state_groups (
    state_group  BIGINT  PRIMARY KEY NOT NULL,
    room_id      TEXT    NOT NULL,
    prev_group   BIGINT,
    chain_length INTEGER NOT NULL
);
CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    event_type  TEXT   NOT NULL,
    state_key   TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    PRIMARY KEY (state_group, event_type, state_key)
);

-- The events with no successor yet: the next local event's prev_events.
CREATE TABLE forward_extremities (
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- Every membership change of every user, in stream order: the membership
-- at any stream position is the latest row at or below it, which keeps sync
-- consistent while new events arrive.
CREATE TABLE membership_history (
    user_id         TEXT   NOT NULL,
    room_id         TEXT   NOT NULL,
    stream_ordering BIGINT NOT NULL,
    membership      TEXT   NOT NULL,
    event_id        TEXT   NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
CREATE INDEX membership_history_by_room ON membership_history (room_id, user_id, stream_ordering);

-- Rooms a user left and asked to forget; a new membership clears the mark.
CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

-- Client transactions, so a retried request returns the first event. A
-- transaction id is scoped to the device and the endpoint's path, so
-- `txn_key` holds the path (room, event type) with the client's id.
CREATE TABLE event_transactions (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_key   TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_key)
);
-- The sender's device sees its transaction id on its own events in sync.
CREATE INDEX event_transactions_by_event ON event_transactions (event_id);

CREATE TABLE room_aliases (
    alias   TEXT PRIMARY KEY NOT NULL,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_by_room ON room_aliases (room_id);
