-- A deactivated account keeps its row, so its user id is never handed out
-- again; it has no devices, tokens or keys and cannot log in.
ALTER TABLE accounts ADD COLUMN deactivated BOOLEAN NOT NULL DEFAULT FALSE;
