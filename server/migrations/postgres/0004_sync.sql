-- Sync filters a client uploaded (POST /user/{userId}/filter), kept verbatim.
CREATE TABLE sync_filters (
    user_id   TEXT   NOT NULL,
    filter_id BIGINT NOT NULL,
    json      TEXT   NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- Account data, global (room_id = '') and per room, kept verbatim; each
-- write takes a stream position so sync can send what changed.
CREATE TABLE account_data (
    user_id         TEXT   NOT NULL,
    room_id         TEXT   NOT NULL,
    data_type       TEXT   NOT NULL,
    content         TEXT   NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_by_stream ON account_data (user_id, stream_ordering);

-- The latest receipt of each type per user, room and thread ('' for none).
CREATE TABLE receipts (
    room_id         TEXT   NOT NULL,
    receipt_type    TEXT   NOT NULL,
    user_id         TEXT   NOT NULL,
    thread_id       TEXT   NOT NULL,
    event_id        TEXT   NOT NULL,
    ts              BIGINT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_by_stream ON receipts (room_id, stream_ordering);
