-- Events from other servers that are kept for the room's DAG but never
-- reach clients: soft-failed events (allowed by the state before them, not
-- by the room's current state) and rejected ones. They have no stream
-- position, so no read of the timeline (sync, messages, context) can
-- return them. `state_group` is the state after a soft-failed event and
-- the state before a rejected one (a rejected event changes no state), for
-- later events that cite them as prev_events.
CREATE TABLE withheld_events (
    event_id    TEXT    PRIMARY KEY NOT NULL,
    room_id     TEXT    NOT NULL REFERENCES rooms (room_id),
    rejected    BOOLEAN NOT NULL,
    depth       BIGINT  NOT NULL,
    state_group BIGINT  NOT NULL,
    json        TEXT    NOT NULL
);

-- The room's current state after an event, when a fork of the DAG made
-- it the resolution of several states rather than the state after the
-- event itself (`state_group`). NULL for every event that follows all
-- forward extremities, which is every local event.
ALTER TABLE events ADD COLUMN room_state_group BIGINT;
