-- Each user's presence as they last set it. `stream_ordering` places the
-- latest change on the server-wide stream, for sync.
CREATE TABLE presence (
    user_id         TEXT   PRIMARY KEY NOT NULL,
    presence        TEXT   NOT NULL,
    status_msg      TEXT,
    last_active_ts  BIGINT NOT NULL,
    stream_ordering BIGINT NOT NULL
);
CREATE INDEX presence_by_stream ON presence (stream_ordering);
