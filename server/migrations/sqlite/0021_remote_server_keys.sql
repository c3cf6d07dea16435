-- Other servers' signing keys, fetched from their key documents
-- (GET /_matrix/key/v2/server) or a notary. A current key is trusted until
-- valid_until_ts (the document's, capped at fetch time + 7 days); an old key
-- (expired_ts set) verifies what was signed before it expired, and
-- valid_until_ts is then its expired_ts.
CREATE TABLE remote_server_keys (
    server_name    TEXT   NOT NULL,
    key_id         TEXT   NOT NULL,
    public_key     TEXT   NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts     BIGINT,
    PRIMARY KEY (server_name, key_id)
);

-- The latest key document of each server as it signed it, served again by
-- the notary endpoints (/_matrix/key/v2/query) with this server's signature.
CREATE TABLE remote_key_documents (
    server_name    TEXT   PRIMARY KEY NOT NULL,
    document       TEXT   NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts     BIGINT NOT NULL
);
