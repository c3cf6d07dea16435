-- What each user's push rules made of the events they were sent: one row per
-- (user, event) whose actions notify. `stream_ordering` is the event's own
-- position (compared with the read receipt's event). `actions` is the JSON
-- array of actions.
CREATE TABLE event_push_actions (
    user_id         TEXT    NOT NULL,
    room_id         TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    stream_ordering BIGINT  NOT NULL,
    actions         TEXT    NOT NULL,
    highlight       BOOLEAN NOT NULL,
    ts              BIGINT  NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_push_actions_by_room ON event_push_actions (user_id, room_id, stream_ordering);
CREATE INDEX event_push_actions_by_user ON event_push_actions (user_id, stream_ordering);
