-- MSC3814 dehydrated devices: at most one per user. The device itself is a
-- row of `devices` (without tokens), so its keys and to-device inbox live in
-- the usual tables and go with it; `device_data` is the client's opaque JSON
-- object (its encrypted Olm account), stored as sent.
CREATE TABLE dehydrated_devices (
    user_id     TEXT PRIMARY KEY NOT NULL,
    device_id   TEXT NOT NULL,
    device_data TEXT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
