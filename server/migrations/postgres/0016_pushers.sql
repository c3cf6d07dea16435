-- Push gateways registered by clients (POST /pushers/set). A pusher belongs
-- to the device that set it and goes with it (logout, deletion,
-- deactivation). `pusher` is the pusher as clients read it back, JSON.
CREATE TABLE pushers (
    user_id    TEXT   NOT NULL,
    device_id  TEXT   NOT NULL,
    app_id     TEXT   NOT NULL,
    pushkey    TEXT   NOT NULL,
    pusher     TEXT   NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX pushers_by_key ON pushers (app_id, pushkey);
CREATE INDEX pushers_by_device ON pushers (user_id, device_id);
