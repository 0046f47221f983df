-- Subscriptions: the ways out. Each one names a destination (a webhook or a NATS JetStream
-- server) and a filter; the writer enqueues the keys of the events it stores that match a
-- `live` subscription (paused or not) into that subscription's outbox stage (`deliver/<id>`), in
-- the transaction that stores them, and `eye-delivery` delivers them.
CREATE TABLE subscriptions (
    id              uuid        PRIMARY KEY,
    name            text        NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    destination     text        NOT NULL CHECK (destination IN ('webhook', 'nats')),
    -- The webhook URL, or the NATS server URL.
    url             text        NOT NULL,
    -- The Standard Webhooks signing secret (`whsec_...`); NULL for NATS.
    secret          text,
    -- The filter, as `eye events` takes it: NULL matches everything.
    application_id  uuid        REFERENCES applications (id),
    category        text,
    event_name      text,
    contains        jsonb,
    -- Ordered subscriptions are delivered one batch at a time, in storage order; their events get
    -- consecutive sequence numbers from `sequence` (the last one assigned).
    ordered         boolean     NOT NULL DEFAULT false,
    sequence        bigint      NOT NULL DEFAULT 0,
    -- `backfilling`: `eye-delivery` is enqueueing the events stored since `backfill_from`
    -- (resuming after the cursor `backfill_stored_at`, `backfill_application_id`,
    -- `backfill_event_id`) and the writer enqueues nothing yet; `live`: the writer enqueues.
    state           text        NOT NULL DEFAULT 'live' CHECK (state IN ('backfilling', 'live')),
    backfill_from   timestamptz,
    backfill_stored_at timestamptz,
    backfill_application_id uuid,
    backfill_event_id uuid,
    -- A paused subscription keeps being fed; only its delivery waits (`eye subscriptions pause`,
    -- or a webhook that answered 410 Gone).
    paused          boolean     NOT NULL DEFAULT false,
    paused_reason   text,
    -- Events delivered (acknowledged by the destination), counted in delivery's hand-off.
    delivered       bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((destination = 'webhook') = (secret IS NOT NULL))
);

-- Subscription changes wake `eye-delivery` at once (it also rereads them every few seconds).
CREATE FUNCTION eye_subscriptions_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('eye_subscriptions', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER subscriptions_changed AFTER INSERT OR UPDATE OF state, paused OR DELETE ON subscriptions
FOR EACH STATEMENT EXECUTE FUNCTION eye_subscriptions_changed();

-- Whether an event matches a subscription's filter: the one definition, used by the writer as it
-- stores events and by `eye-delivery` as it backfills (a simple SQL function: Postgres inlines it).
CREATE FUNCTION eye_subscription_matches(
    s subscriptions, application_id uuid, category text, name text, data jsonb
) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT (s.application_id IS NULL OR s.application_id = $2)
       AND (s.category IS NULL OR s.category = $3)
       AND (s.event_name IS NULL OR s.event_name = $4)
       AND (s.contains IS NULL OR $5 @> s.contains)
$$;
