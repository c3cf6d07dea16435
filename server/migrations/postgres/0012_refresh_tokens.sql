-- Refresh tokens (spec: POST /refresh). An access token issued with a
-- refresh token expires at expires_ts; one issued without (NULL) does not.
ALTER TABLE access_tokens ADD COLUMN expires_ts BIGINT;
-- The refresh token that was spent to issue this access token. It stays
-- valid (so a client whose /refresh answer was lost can retry) until the
-- new access token or its refresh token is first used, then it is deleted.
ALTER TABLE access_tokens ADD COLUMN spent_refresh BYTEA;

-- Only the SHA-256 of a refresh token is stored, as for access tokens. A
-- refresh deletes the device's other tokens, so a device holds at most the
-- current pair and the refresh token spent for it.
CREATE TABLE refresh_tokens (
    token_hash BYTEA  PRIMARY KEY NOT NULL,
    user_id    TEXT   NOT NULL,
    device_id  TEXT   NOT NULL,
    created_ts BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_by_device ON refresh_tokens (user_id, device_id);
