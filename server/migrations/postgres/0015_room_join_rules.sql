-- Each room's current join rule, kept with every m.room.join_rules event:
-- the user directory shows the members of public rooms.
ALTER TABLE rooms ADD COLUMN join_rule TEXT;
UPDATE rooms SET join_rule = (
    SELECT e.json::jsonb -> 'content' ->> 'join_rule' FROM events e
    WHERE e.room_id = rooms.room_id AND e.event_type = 'm.room.join_rules' AND e.state_key = ''
    ORDER BY e.stream_ordering DESC LIMIT 1
);
