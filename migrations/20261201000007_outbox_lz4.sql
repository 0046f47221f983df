-- Outbox bodies (protobuf batches of 100 to 10,000 events, nearly always past the 2 kB TOAST
-- threshold) are compressed with lz4 instead of pglz. In a CPU profile of the steady benchmark,
-- `pglz_compress` was the largest single function, 6% of all CPU; with lz4 the same run went from
-- 30,400 to 33,900 events/s end to end (docs/benchmarks.md, "Where the time goes"). Rows written
-- before this migration keep their pglz bodies and are read as before.
--
-- A server built without lz4 keeps pglz: the change is skipped with a notice, not failed.
DO $$
BEGIN
    ALTER TABLE outbox ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4 support; outbox bodies stay pglz-compressed';
END
$$;
