-- The server's own ed25519 signing keys, published at GET /_matrix/key/v2/server.
-- The current key has no expired_ts and keeps its seed (unpadded base64, a
-- secret). An expired key keeps its public key, so remote servers can still
-- verify what it signed, and loses its seed.
CREATE TABLE server_signing_keys (
    key_id     TEXT   PRIMARY KEY NOT NULL,
    public_key TEXT   NOT NULL,
    seed       TEXT,
    created_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    CHECK (expired_ts IS NOT NULL OR seed IS NOT NULL)
);

-- At most one current key, so that servers sharing a database agree on it.
CREATE UNIQUE INDEX server_signing_keys_one_current
    ON server_signing_keys ((expired_ts IS NULL)) WHERE expired_ts IS NULL;
