-- Per-account media limits (the byte quota, reserved ids) read an
-- account's uploads; without this index every upload scanned the table.
CREATE INDEX media_by_uploader ON media (uploader);
