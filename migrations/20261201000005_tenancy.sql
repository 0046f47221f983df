-- Tenancy and data lifecycle.

-- Per-application ingest quotas, in events a second per ingest instance (`eye apps quota`).
-- NULL: `ingest.quota_rate` applies; 0: no quota. NULL burst: twice the rate.
ALTER TABLE applications
    ADD COLUMN ingest_rate  double precision CHECK (ingest_rate >= 0),
    ADD COLUMN ingest_burst double precision CHECK (ingest_burst >= 0);

-- The bounds of each partition of `parent` (NULL: MINVALUE / MAXVALUE), read from the catalog:
-- what partition upkeep and retention decide by, whatever a partition is named.
CREATE FUNCTION eye_partitions(parent regclass)
RETURNS TABLE (partition regclass, lower_bound timestamptz, upper_bound timestamptz)
LANGUAGE sql STABLE SET TimeZone = 'UTC' AS $$
    SELECT c.oid::regclass,
           CASE WHEN b[1] = 'MINVALUE' THEN NULL ELSE trim(both '''' from b[1])::timestamptz END,
           CASE WHEN b[2] = 'MAXVALUE' THEN NULL ELSE trim(both '''' from b[2])::timestamptz END
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                    'FROM \((.*)\) TO \((.*)\)') AS b
    WHERE i.inhparent = parent
$$;

-- The first day of the idempotency ledger's slice holding `at`: slices are `window_days` long,
-- counted from 1970-01-01 (UTC). The one definition of a slice, for ingest's lookups, the
-- partitions and their pruning.
CREATE FUNCTION eye_ledger_slice(window_days integer, at timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date '1970-01-01'
           + (((at AT TIME ZONE 'UTC')::date - date '1970-01-01') / window_days) * window_days
$$;

-- Creates, if none covers `at`, the partition of `parent` (`events` or `idempotency_keys`) for the
-- day, the month or the `N days` slice since 1970-01-01 (`granularity`) holding `at` (UTC),
-- clipped to its neighbours: the store can move from month to day partitions (or back) at any
-- time, and both kinds then coexist. Safe to call
-- concurrently (an advisory lock serialises creators). Owned by the schema owner and run with its
-- rights, so the services' own roles need no right to create tables.
CREATE FUNCTION eye_ensure_partition(parent regclass, at timestamptz, granularity text)
RETURNS regclass
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    existing    regclass;
    part_start  timestamptz;
    part_end    timestamptz;
    part_name   text;
    is_date     boolean;
BEGIN
    IF parent NOT IN ('events'::regclass, 'idempotency_keys'::regclass) THEN
        RAISE EXCEPTION 'eye_ensure_partition: % is not partitioned by The Eye', parent;
    END IF;
    IF granularity !~ '^(day|month|[1-9][0-9]* days)$' THEN
        RAISE EXCEPTION 'eye_ensure_partition: granularity must be day, month or N days, not %',
            granularity;
    END IF;
    SELECT p.partition INTO existing FROM eye_partitions(parent) p
    WHERE (p.lower_bound IS NULL OR p.lower_bound <= at) AND (p.upper_bound IS NULL OR at < p.upper_bound);
    IF existing IS NOT NULL THEN
        RETURN existing;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('eye_ensure_partition:' || parent::text));
    -- A creator that held the lock before us may have made it.
    SELECT p.partition INTO existing FROM eye_partitions(parent) p
    WHERE (p.lower_bound IS NULL OR p.lower_bound <= at) AND (p.upper_bound IS NULL OR at < p.upper_bound);
    IF existing IS NOT NULL THEN
        RETURN existing;
    END IF;
    IF granularity LIKE '% days' THEN
        part_start := eye_ledger_slice(split_part(granularity, ' ', 1)::integer, at)::timestamp
                      AT TIME ZONE 'UTC';
        part_end := part_start + granularity::interval;
    ELSE
        part_start := date_trunc(granularity, at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
        part_end := part_start + ('1 ' || granularity)::interval;
    END IF;
    SELECT greatest(part_start, max(p.upper_bound)) INTO part_start
    FROM eye_partitions(parent) p WHERE p.upper_bound <= at;
    SELECT least(part_end, min(p.lower_bound)) INTO part_end
    FROM eye_partitions(parent) p WHERE p.lower_bound > at;
    is_date := parent = 'idempotency_keys'::regclass;
    part_name := format('%s_p%s', parent::text,
        CASE WHEN granularity = 'month' AND part_end - part_start >= interval '28 days'
                  AND part_start = date_trunc('month', part_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
             THEN to_char(part_start AT TIME ZONE 'UTC', 'YYYYMM')
             ELSE to_char(part_start AT TIME ZONE 'UTC', 'YYYYMMDD') END);
    BEGIN
        IF is_date THEN
            EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                part_name, parent, (part_start AT TIME ZONE 'UTC')::date, (part_end AT TIME ZONE 'UTC')::date);
        ELSE
            EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                part_name, parent, part_start, part_end);
        END IF;
    EXCEPTION WHEN duplicate_table OR unique_violation THEN
        NULL;
    END;
    RETURN part_name::regclass;
END;
$$;

-- The month partition of `events` holding `at`, as before (kept for existing callers).
CREATE OR REPLACE FUNCTION eye_ensure_event_partition(at timestamptz) RETURNS text
LANGUAGE sql AS $$ SELECT eye_ensure_partition('events', at, 'month')::text $$;

-- Drops the partitions of `parent` that end at or before `before`: retention and the dedup
-- window remove whole partitions, never rows. Returns the names dropped. Each drop waits at
-- most `lock_timeout` (set by the caller) for the parent's lock.
CREATE FUNCTION eye_drop_partitions_before(parent regclass, before timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    expired regclass;
    expired_name text;
BEGIN
    IF parent NOT IN ('events'::regclass, 'idempotency_keys'::regclass) THEN
        RAISE EXCEPTION 'eye_drop_partitions_before: % is not partitioned by The Eye', parent;
    END IF;
    FOR expired IN
        SELECT p.partition FROM eye_partitions(parent) p
        WHERE p.upper_bound IS NOT NULL AND p.upper_bound <= before ORDER BY p.upper_bound
    LOOP
        expired_name := expired::text;
        EXECUTE format('DROP TABLE %s', expired);
        RETURN NEXT expired_name;
    END LOOP;
END;
$$;

-- Makes the sessions `ids` agree with the events left in the store after a retention drop or a
-- deletion: first and last time, count and applications recomputed; a session with no events
-- left is removed. Returns how many sessions were removed.
CREATE FUNCTION eye_recompute_sessions(ids uuid[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    removed bigint;
BEGIN
    UPDATE sessions s SET
        first_seen_at = x.first_seen_at, last_seen_at = x.last_seen_at,
        event_count = x.event_count, application_ids = x.application_ids, updated_at = now()
    FROM (
        SELECT e.session_id, min(e.occurred_at) AS first_seen_at, max(e.occurred_at) AS last_seen_at,
               count(*) AS event_count, array_agg(DISTINCT e.application_id) AS application_ids
        FROM events e WHERE e.session_id = ANY (ids) GROUP BY e.session_id
    ) x
    WHERE s.session_id = x.session_id;
    DELETE FROM sessions s WHERE s.session_id = ANY (ids)
        AND NOT EXISTS (SELECT FROM events e WHERE e.session_id = s.session_id);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END;
$$;

-- The idempotency ledger, in slices as long as the dedup window (`store.dedup_window_days`,
-- `eye_ledger_slice`): ingest records an id in the current slice, whose primary key (application,
-- event id, slice) also makes two requests racing with one id conflict, and looks it up in the
-- previous slice only: one extra index probe, whatever the window. An id is so remembered for
-- at least the window and at most twice it; upkeep drops the slices before the previous one.
-- The ids of the last 14 days kept so far are carried over (in 7-day slices, the default window);
-- older ones are past any window.
ALTER TABLE idempotency_keys RENAME TO idempotency_keys_legacy;
CREATE TABLE idempotency_keys (
    application_id  uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    -- The first day of its slice (`eye_ledger_slice`).
    slice           date        NOT NULL,
    accepted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (application_id, event_id, slice)
) PARTITION BY RANGE (slice);
SELECT eye_ensure_partition('idempotency_keys', at, '7 days')
FROM (SELECT DISTINCT eye_ledger_slice(7, accepted_at)::timestamp AT TIME ZONE 'UTC' AS at
      FROM idempotency_keys_legacy WHERE accepted_at > now() - interval '14 days') recent;
INSERT INTO idempotency_keys (application_id, event_id, slice, accepted_at)
SELECT application_id, event_id, eye_ledger_slice(7, accepted_at), accepted_at
FROM idempotency_keys_legacy WHERE accepted_at > now() - interval '14 days';
DROP TABLE idempotency_keys_legacy;

-- Deletion receipts (`eye delete`): who asked, when, for what, and how many rows of which tables
-- went. The subject itself is not kept: the filter is recorded by its kinds (`session`,
-- `application`, `contains`) and a SHA-256 digest of it (`eye_admin::deletion`), so a receipt
-- can be checked against a request without holding the person's identifiers.
CREATE TABLE deletions (
    id            uuid        PRIMARY KEY,
    requested_by  text        NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    filter_kinds  text[]      NOT NULL,
    filter_digest text        NOT NULL,
    -- Whether later matching events are refused (a row in `suppressions`).
    suppressed    boolean     NOT NULL DEFAULT false,
    -- Rows removed, by table: {"events": 3, "event_errors": 1, ...}.
    counts        jsonb       NOT NULL DEFAULT '{}'
);

-- Suppressions: later events matching one are refused at validation (not stored, not
-- quarantined), counted as `suppressed`. Values are kept as digests only (see
-- `event_model::subject`): the session id's, and each containment leaf's by JSON pointer.
CREATE TABLE suppressions (
    id              uuid        PRIMARY KEY,
    deletion_id     uuid        NOT NULL REFERENCES deletions (id),
    application_id  uuid,
    session_digest  text,
    -- {"/user_id": "<digest>", ...}
    data_digests    jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (application_id IS NOT NULL OR session_digest IS NOT NULL OR data_digests <> '{}')
);

-- Marks the exported hours that a deletion changed, so that the next `eye export` (or a running
-- `--follow`) rewrites them, also an hour left with no rows (its files are removed).
CREATE FUNCTION eye_exports_mark_deleted(kind text, hours timestamptz[]) RETURNS bigint
LANGUAGE sql AS $$
    WITH marked AS (
        UPDATE exports SET state = 'deleted' WHERE exports.kind = $1 AND hour = ANY ($2) RETURNING 1
    )
    SELECT count(*) FROM marked
$$;
