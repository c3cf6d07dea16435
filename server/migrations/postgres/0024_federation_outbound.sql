-- The outbound federation sender (spec-notes/federation-sender.md).
--
-- PDUs are not copied anywhere: each destination's cursor is the stream
-- position of the last local event it acknowledged (or that concerned it
-- not), and its sender reads the events after it from `events`.
CREATE TABLE federation_outbound_cursors (
    destination     TEXT   PRIMARY KEY NOT NULL,
    stream_ordering BIGINT NOT NULL
);

-- How far the dispatcher has looked through local events for destinations
-- (a single row): a destination first met in an event below this position
-- has its cursor already, so a restart never misses a new destination.
CREATE TABLE federation_outbound_scan (
    id              INTEGER PRIMARY KEY NOT NULL CHECK (id = 0),
    stream_ordering BIGINT  NOT NULL
);

-- EDUs waiting for a destination's acknowledgement, oldest first.
CREATE TABLE federation_outbound_edus (
    id          BIGSERIAL PRIMARY KEY,
    destination TEXT    NOT NULL,
    edu         TEXT    NOT NULL
);
CREATE INDEX federation_outbound_edus_by_destination
    ON federation_outbound_edus (destination, id);
