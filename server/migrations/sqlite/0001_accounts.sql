-- Accounts, devices and the access tokens that act for them.
CREATE TABLE accounts (
    user_id       TEXT    PRIMARY KEY NOT NULL,
    password_hash TEXT    NOT NULL,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    displayname   TEXT,
    avatar_url    TEXT,
    created_ts    BIGINT  NOT NULL
);

CREATE TABLE devices (
    user_id      TEXT   NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    device_id    TEXT   NOT NULL,
    display_name TEXT,
    created_ts   BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Only the SHA-256 of a token is stored: a copy of the database does not log anyone in.
CREATE TABLE access_tokens (
    token_hash BLOB   PRIMARY KEY NOT NULL,
    user_id    TEXT   NOT NULL,
    device_id  TEXT   NOT NULL,
    created_ts BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_by_device ON access_tokens (user_id, device_id);
