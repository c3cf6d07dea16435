-- Sync filters a client uploaded (POST /user/{userId}/filter), kept verbatim.
CREATE TABLE sync_filters (
    user_id   TEXT   NOT NULL,
    filter_id BIGINT NOT NULL,
    json      TEXT   NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
