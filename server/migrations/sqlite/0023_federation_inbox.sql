-- Federation received (Server-Server API, "Transactions", "Send-to-device
-- messaging").

-- The answer given to each transaction received, so that a transaction
-- sent again (its sender did not see the answer) is answered the same
-- without being processed twice. Kept a day.
CREATE TABLE federation_transactions (
    origin      TEXT   NOT NULL,
    txn_id      TEXT   NOT NULL,
    answer      TEXT   NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_transactions_by_age ON federation_transactions (received_ts);

-- The `message_id` of each `m.direct_to_device` EDU delivered, so that the
-- same messages in a later transaction are not delivered again. Kept a day.
CREATE TABLE federation_to_device_messages (
    origin      TEXT   NOT NULL,
    message_id  TEXT   NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, message_id)
);
CREATE INDEX federation_to_device_messages_by_age
    ON federation_to_device_messages (received_ts);
