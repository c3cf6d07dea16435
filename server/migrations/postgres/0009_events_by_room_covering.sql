-- The per-room index also carries each event's type and sender, so that
-- counting a room's unread messages (sync's notification counts: events of
-- the counted types from others after the user's read receipt) reads only
-- the index, not every event's row with its JSON. It replaces the narrower
-- index, whose every use it serves, so writes keep one per-room index.
CREATE INDEX events_by_room_with_kind ON events (room_id, stream_ordering, event_type, sender);
DROP INDEX events_by_room;
