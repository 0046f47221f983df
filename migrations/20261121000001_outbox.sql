-- The outbox of the `flush-event` crate: a Postgres-backed queue of protobuf bodies, one row per
-- batch, handed from stage to stage in the same transaction as the work it stands for.
--
-- `outbox` holds only pending and in-flight rows. `visible_at` is at once the run-at time, the
-- retry time and the lease expiry: a row whose consumer died becomes visible again by itself.
CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stage       text        NOT NULL,
    body        bytea       NOT NULL,
    -- Propagation headers, e.g. the W3C `traceparent` of the call that produced the row.
    headers     jsonb       NOT NULL DEFAULT '{}',
    -- Claims so far; a row past `max_attempts` is dead-lettered instead of processed again.
    attempts    integer     NOT NULL DEFAULT 0,
    -- Fencing token, bumped by every claim: an ack or retry must present the token of its claim,
    -- so a consumer whose lease was taken over matches nothing.
    fence       bigint      NOT NULL DEFAULT 0,
    visible_at  timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_error  text
) WITH (
    -- Rows are short-lived: vacuum early and often so dead tuples never pile up.
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);

-- Claims read the oldest visible rows of one stage.
CREATE INDEX outbox_claim ON outbox (stage, visible_at, id);

-- Rows that failed `max_attempts` times (or cannot be decoded), with their last error. Replaying
-- moves them back into `outbox` with a fresh attempt count.
CREATE TABLE outbox_dead_letters (
    id              bigint      PRIMARY KEY,
    stage           text        NOT NULL,
    body            bytea       NOT NULL,
    headers         jsonb       NOT NULL,
    attempts        integer     NOT NULL,
    created_at      timestamptz NOT NULL,
    dead_at         timestamptz NOT NULL DEFAULT now(),
    last_error      text        NOT NULL
);
CREATE INDEX outbox_dead_letters_stage ON outbox_dead_letters (stage, dead_at);
