-- Indexes for the read path (`eye-query`). The three questions of the store (a session, a type
-- over time, everything over time) are already served by the indexes of the events table.
--
-- Both indexes are created on the partitioned parent, so every partition, existing or future,
-- gets its own. On a store that already holds much data this locks each partition against writes
-- while its index builds; there, build each partition's index first with CREATE INDEX
-- CONCURRENTLY, then create the parent's index, which attaches them instead of building.

-- `data @> '{...}'` (EventFilter.data_contains). `jsonb_path_ops` indexes one hash per path to a
-- value: smaller and faster for containment than the default `jsonb_ops`, and containment is the
-- only operator the read path offers.
CREATE INDEX events_data ON events USING gin (data jsonb_path_ops);

-- Events stored in a recent window (GetStats). Rows are appended in the order they are stored, so
-- a BRIN index (a few pages per partition, next to nothing per insert) narrows the scan to the
-- window's blocks.
CREATE INDEX events_stored_at ON events USING brin (stored_at);
