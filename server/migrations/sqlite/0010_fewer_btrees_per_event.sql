-- Fewer b-trees written per event (each is a page in the write-ahead log
-- at every commit, and the commit's fsync waits for them):
--
-- * `events` declared its key `BIGINT PRIMARY KEY`, which in SQLite is a
--   unique index beside the table's hidden rowid; `INTEGER PRIMARY KEY`
--   makes the stream ordering the rowid itself.
-- * `event_transactions` and `forward_extremities` are looked up only by
--   their primary keys (and transactions by event id): as WITHOUT ROWID
--   tables the primary key is the table, not an index beside it.
CREATE TABLE events_by_position (
    stream_ordering INTEGER PRIMARY KEY NOT NULL,
    event_id        TEXT    NOT NULL UNIQUE,
    room_id         TEXT    NOT NULL REFERENCES rooms (room_id),
    event_type      TEXT    NOT NULL,
    state_key       TEXT,
    sender          TEXT    NOT NULL,
    depth           BIGINT  NOT NULL,
    state_group     BIGINT  NOT NULL,
    json            TEXT    NOT NULL,
    redacted_by     TEXT
);
INSERT INTO events_by_position
    SELECT stream_ordering, event_id, room_id, event_type, state_key, sender, depth,
           state_group, json, redacted_by
    FROM events;
DROP TABLE events;
ALTER TABLE events_by_position RENAME TO events;
CREATE INDEX events_by_room_with_kind ON events (room_id, stream_ordering, event_type, sender);

CREATE TABLE event_transactions_by_key (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_key   TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_key)
) WITHOUT ROWID;
INSERT INTO event_transactions_by_key
    SELECT user_id, device_id, txn_key, txn_id, event_id FROM event_transactions;
DROP TABLE event_transactions;
ALTER TABLE event_transactions_by_key RENAME TO event_transactions;
CREATE INDEX event_transactions_by_event ON event_transactions (event_id);

CREATE TABLE forward_extremities_by_room (
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
) WITHOUT ROWID;
INSERT INTO forward_extremities_by_room SELECT room_id, event_id FROM forward_extremities;
DROP TABLE forward_extremities;
ALTER TABLE forward_extremities_by_room RENAME TO forward_extremities;
