-- The Eye's own tables: who may send, what payloads must look like, what was accepted, stored,
-- and quarantined.

-- Trusted clients. Keys are random 256-bit secrets stored only as SHA-256 hashes.
CREATE TABLE applications (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE api_keys (
    id              uuid        PRIMARY KEY,
    application_id  uuid        NOT NULL REFERENCES applications (id),
    key_hash        bytea       NOT NULL UNIQUE,
    -- What the key may do: `ingest` (IngestService), `read` (QueryService).
    roles           text[]      NOT NULL DEFAULT '{ingest}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);
CREATE INDEX api_keys_application ON api_keys (application_id);

-- The schema registry: every version of the JSON Schema of each event type; the highest version
-- of a type is the one in force.
CREATE TABLE event_schemas (
    category    text        NOT NULL,
    name        text        NOT NULL,
    version     integer     NOT NULL CHECK (version > 0),
    schema      jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (category, name, version)
);

-- The idempotency ledger: every (application, event_id) ingest ever accepted. Its primary key is
-- what answers DUPLICATE, whatever the event's timestamp, before anything is enqueued.
CREATE TABLE idempotency_keys (
    application_id  uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    accepted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (application_id, event_id)
);

-- The event store, partitioned by month of `occurred_at` (partitions are created ahead of need
-- by `eye_ensure_event_partition`; retention drops whole partitions). The primary key includes the
-- partition key, as Postgres requires; a retried event keeps its timestamp, so it still catches
-- every redelivery, and `idempotency_keys` catches a reused event_id with another timestamp.
CREATE TABLE events (
    application_id  uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    session_id      uuid        NOT NULL,
    category        text        NOT NULL,
    name            text        NOT NULL,
    data            jsonb       NOT NULL,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    -- The schema version the payload was validated against; NULL: no schema was registered.
    schema_version  integer,
    PRIMARY KEY (application_id, event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);

-- A session's events in time order.
CREATE INDEX events_session ON events (session_id, occurred_at, event_id);
-- A category (optionally with a name) over a time range.
CREATE INDEX events_type_time ON events (category, name, occurred_at, event_id);
-- Everything in a time range, in keyset order.
CREATE INDEX events_time ON events (occurred_at, event_id);

-- Creates the month partition holding `at` if it does not exist yet. Safe to call concurrently:
-- a transaction-scoped advisory lock serialises creators, and a creator that lost the race (its
-- catalog snapshot may predate the winner's commit) treats "already exists" as done.
CREATE FUNCTION eye_ensure_event_partition(at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    month_end   timestamptz := month_start + interval '1 month';
    partition   text := format('events_p%s', to_char(month_start AT TIME ZONE 'UTC', 'YYYYMM'));
BEGIN
    IF to_regclass(partition) IS NOT NULL THEN
        RETURN partition;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('eye_ensure_event_partition'));
    BEGIN
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
            partition, month_start, month_end
        );
    EXCEPTION WHEN duplicate_table OR unique_violation THEN
        NULL;
    END;
    RETURN partition;
END;
$$;

-- Sessions, upserted by the writer in the same transaction as their events.
CREATE TABLE sessions (
    session_id      uuid        PRIMARY KEY,
    first_seen_at   timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    event_count     bigint      NOT NULL,
    -- Every application that sent events for this session.
    application_ids uuid[]      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Quarantine: every event the validator refused, with why, and the event itself so it can be
-- replayed after a schema fix. One row per (application, event_id): a replay that fails again
-- updates the row.
CREATE TABLE event_errors (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    application_id  uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    session_id      uuid        NOT NULL,
    category        text        NOT NULL,
    name            text        NOT NULL,
    -- The payload as sent, as text: quarantine must hold even what `jsonb` would refuse.
    data            text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    reason          text        NOT NULL,
    message         text        NOT NULL,
    schema_version  integer,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    failures        integer     NOT NULL DEFAULT 1,
    -- Set when the error is sent back through validation; `replay_outcome` says what became of it.
    replayed_at     timestamptz,
    replay_outcome  text,
    UNIQUE (application_id, event_id)
);
CREATE INDEX event_errors_reason ON event_errors (reason, failed_at);
CREATE INDEX event_errors_type ON event_errors (category, name, failed_at);
CREATE INDEX event_errors_failed_at ON event_errors (failed_at);
