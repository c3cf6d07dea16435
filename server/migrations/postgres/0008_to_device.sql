-- Send-to-device messaging (Client-Server API, "Send-to-Device messaging").

-- Messages waiting for their recipient device. content is the sender's JSON
-- text, kept byte for byte and never read. Each send takes one stream
-- position, and a device gets at most one message per send, so
-- (user, device, position) orders a device's inbox. A row is deleted once
-- the device's sync acknowledges its position, or with the device.
CREATE TABLE to_device_inbox (
    user_id         TEXT   NOT NULL,
    device_id       TEXT   NOT NULL,
    stream_ordering BIGINT NOT NULL,
    sender          TEXT   NOT NULL,
    event_type      TEXT   NOT NULL,
    content         TEXT   NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_ordering),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- Transaction ids already applied per sending device, so that a retried
-- PUT delivers nothing twice. They go with the device: a new device that
-- reuses the id starts afresh.
CREATE TABLE to_device_transactions (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- The greatest stream position a send took (one row). Inbox rows are
-- deleted once read, yet the stream must never restart below a position a
-- client may hold in its since token.
CREATE TABLE to_device_stream (
    id       SMALLINT PRIMARY KEY NOT NULL,
    position BIGINT   NOT NULL
);
