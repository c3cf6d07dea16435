-- Server-side key backups (Client-Server API, "Server-side key backups").
-- auth_data and session_data are kept verbatim and never interpreted: they
-- are the client's, signed and encrypted by it.

-- Each version a user created. A deleted version keeps its row (with
-- is_deleted set and its keys gone) so that its number is never handed out
-- again: a client still writing to it must be told the backup changed, not
-- land its keys in someone else's new backup. etag counts key changes.
CREATE TABLE backup_versions (
    user_id    TEXT    NOT NULL,
    version    BIGINT  NOT NULL,
    algorithm  TEXT    NOT NULL,
    auth_data  TEXT    NOT NULL,
    etag       BIGINT  NOT NULL,
    is_deleted BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, version)
);

-- One backed-up Megolm session per (version, room, session).
CREATE TABLE backup_keys (
    user_id             TEXT    NOT NULL,
    version             BIGINT  NOT NULL,
    room_id             TEXT    NOT NULL,
    session_id          TEXT    NOT NULL,
    first_message_index BIGINT  NOT NULL,
    forwarded_count     BIGINT  NOT NULL,
    is_verified         BOOLEAN NOT NULL,
    session_data        TEXT    NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
