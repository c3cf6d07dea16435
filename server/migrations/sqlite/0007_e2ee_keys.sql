-- End-to-end encryption keys (Client-Server API, "End-to-End Encryption"):
-- device keys, one-time and fallback keys, cross-signing keys, the
-- signatures users upload, and the device-list change stream.
-- Every key object is kept as the exact JSON text the client uploaded: the
-- server checks its signatures once, on upload, and never re-serialises the
-- signed part. See spec-notes/device-keys.md.

-- A device's identity keys. The two public keys are columns so that a
-- re-upload changing them can be refused in the same statement that writes.
CREATE TABLE device_keys (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    ed25519_key    TEXT NOT NULL,
    curve25519_key TEXT NOT NULL,
    json           TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- Unclaimed one-time keys; a claim deletes its row, so a key is handed out
-- at most once. key_id is the full `<algorithm>:<id>`.
CREATE TABLE one_time_keys (
    user_id     TEXT   NOT NULL,
    device_id   TEXT   NOT NULL,
    key_id      TEXT   NOT NULL,
    algorithm   TEXT   NOT NULL,
    json        TEXT   NOT NULL,
    uploaded_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX one_time_keys_by_age ON one_time_keys (user_id, device_id, algorithm, uploaded_ts, key_id);

-- One fallback key per device and algorithm; is_used once it was claimed.
CREATE TABLE fallback_keys (
    user_id   TEXT    NOT NULL,
    device_id TEXT    NOT NULL,
    algorithm TEXT    NOT NULL,
    key_id    TEXT    NOT NULL,
    json      TEXT    NOT NULL,
    is_used   BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- A user's cross-signing keys: key_type is master, self_signing or user_signing.
CREATE TABLE cross_signing_keys (
    user_id    TEXT NOT NULL,
    key_type   TEXT NOT NULL,
    public_key TEXT NOT NULL,
    json       TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded through /keys/signatures/upload, merged into the
-- signed object when it is served. Those on a device go with its keys.
CREATE TABLE device_key_signatures (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id  TEXT NOT NULL,
    signature      TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, signer_user_id, signer_key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES device_keys (user_id, device_id) ON DELETE CASCADE
);

-- Signatures on a cross-signing key, by its public key: a replaced key does
-- not inherit the signatures of the one before.
CREATE TABLE cross_signing_signatures (
    user_id        TEXT NOT NULL,
    public_key     TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id  TEXT NOT NULL,
    signature      TEXT NOT NULL,
    PRIMARY KEY (user_id, public_key, signer_user_id, signer_key_id)
);

-- Each change to a user's devices, device keys or cross-signing keys, at
-- the stream position that orders it. viewer is '' when everyone sharing a
-- room with the user must hear of it, or the one user who may (a signature
-- by that user's user-signing key is private to them).
CREATE TABLE device_list_changes (
    stream_ordering BIGINT NOT NULL,
    user_id         TEXT   NOT NULL,
    viewer          TEXT   NOT NULL,
    PRIMARY KEY (stream_ordering, user_id, viewer)
);

-- Which rooms saw membership changes in a stream range (device lists).
CREATE INDEX membership_history_by_stream ON membership_history (stream_ordering);
