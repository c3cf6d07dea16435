-- A sync shows the sending device the transaction id of its own events,
-- looked up by event id: kept on the event's row, that lookup needs no
-- index of its own, and each event writes one b-tree fewer (a page in the
-- write-ahead log at every commit). `event_transactions` keeps only what
-- makes a retried transaction idempotent: its key and the event it made.
ALTER TABLE events ADD COLUMN txn_device_id TEXT;
ALTER TABLE events ADD COLUMN txn_id TEXT;
UPDATE events
SET txn_device_id = t.device_id, txn_id = t.txn_id
FROM event_transactions AS t
WHERE t.event_id = events.event_id;
DROP INDEX event_transactions_by_event;
ALTER TABLE event_transactions DROP COLUMN txn_id;
