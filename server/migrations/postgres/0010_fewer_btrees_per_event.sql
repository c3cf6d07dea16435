-- SQLite's migration 0010 rebuilds three tables so that each event writes
-- fewer b-trees; PostgreSQL's tables are heaps with separate indexes
-- already, and its `events` primary key is the only index on the column.
-- Nothing to change; the number keeps the two migration histories aligned.
SELECT 1;
