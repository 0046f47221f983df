-- Least privilege: a group role per service, granted only what that service does. Deployments
-- create a login role per service IN ROLE the group (docs/operations.md, "Roles"):
--
--   CREATE ROLE eye_ingest_login LOGIN PASSWORD '...' IN ROLE eye_ingest;
--
-- and give each service its own DATABASE_URL. The migrating role (the schema owner) keeps owning
-- every table; partitions are created and dropped through its SECURITY DEFINER functions, so no
-- service may create or drop a table. Roles are cluster-wide: several Eye databases on one
-- server share them, each granting its own tables.
--
-- Every later migration that adds a table or a function a service uses updates `eye_grant_roles`
-- and calls it again: the grants live in one place.

-- Grants `privileges` on `objects` to `role` if the role exists.
CREATE FUNCTION eye_grant(role text, privileges text, objects text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = role) THEN
        EXECUTE format('GRANT %s ON %s TO %I', privileges, objects, role);
    END IF;
END;
$$;

-- Creates the service roles (when the migrating role may: it needs CREATEROLE; otherwise a
-- notice says to create them and call this again) and grants each what it needs.
CREATE FUNCTION eye_grant_roles() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    service  text;
    crud     constant text := 'SELECT, INSERT, UPDATE, DELETE';
BEGIN
    FOREACH service IN ARRAY ARRAY['eye_ingest', 'eye_validator', 'eye_writer', 'eye_delivery',
                                   'eye_query', 'eye_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = service) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', service);
            EXCEPTION WHEN insufficient_privilege OR duplicate_object OR unique_violation THEN
                RAISE NOTICE 'role % not created (%); create it, then run SELECT eye_grant_roles()',
                    service, SQLERRM;
            END;
        END IF;
        PERFORM eye_grant(service, 'USAGE', 'SCHEMA ' || quote_ident(current_schema()));
    END LOOP;

    -- The partition functions run as the schema owner: only who needs them may call them.
    REVOKE ALL ON FUNCTION eye_ensure_partition(regclass, timestamptz, text) FROM PUBLIC;
    REVOKE ALL ON FUNCTION eye_drop_partitions_before(regclass, timestamptz) FROM PUBLIC;
    -- Identity columns draw from sequences.
    PERFORM eye_grant(r, 'USAGE', 'SEQUENCE ' || pg_get_serial_sequence('outbox', 'id'))
    FROM unnest(ARRAY['eye_ingest', 'eye_validator', 'eye_writer', 'eye_delivery', 'eye_admin']) r;
    PERFORM eye_grant(r, 'USAGE', 'SEQUENCE ' || pg_get_serial_sequence('event_errors', 'id'))
    FROM unnest(ARRAY['eye_validator', 'eye_admin']) r;

    -- Ingest: authenticates keys, reads the schemas' redaction annotations, records ids in the
    -- ledger (creating its day slices), enqueues. It cannot read the store.
    PERFORM eye_grant('eye_ingest', 'SELECT', 'api_keys, applications, event_schemas');
    PERFORM eye_grant('eye_ingest', 'SELECT, INSERT', 'idempotency_keys, outbox');
    PERFORM eye_grant('eye_ingest', 'EXECUTE',
                      'FUNCTION eye_ensure_partition(regclass, timestamptz, text)');

    -- The validator: consumes `validate`, feeds `write`, quarantines.
    PERFORM eye_grant('eye_validator', crud, 'outbox');
    PERFORM eye_grant('eye_validator', 'SELECT, INSERT', 'outbox_dead_letters');
    PERFORM eye_grant('eye_validator', 'SELECT', 'event_schemas, suppressions');
    PERFORM eye_grant('eye_validator', 'SELECT, INSERT, UPDATE', 'event_errors');

    -- The writer: consumes `write`, stores, feeds the subscriptions' stages, runs the upkeep
    -- (partitions, retention, the ledger's slices).
    PERFORM eye_grant('eye_writer', crud, 'outbox, sessions');
    PERFORM eye_grant('eye_writer', 'SELECT, INSERT, DELETE', 'outbox_dead_letters');
    PERFORM eye_grant('eye_writer', 'SELECT, INSERT', 'events');
    PERFORM eye_grant('eye_writer', 'SELECT, UPDATE', 'subscriptions');
    PERFORM eye_grant('eye_writer', 'SELECT, DELETE', 'event_errors');
    PERFORM eye_grant('eye_writer', 'EXECUTE',
                      'FUNCTION eye_ensure_partition(regclass, timestamptz, text), '
                      'eye_drop_partitions_before(regclass, timestamptz)');

    -- Delivery: consumes the subscriptions' stages, reads what it delivers, backfills.
    PERFORM eye_grant('eye_delivery', crud, 'outbox');
    PERFORM eye_grant('eye_delivery', 'SELECT, INSERT', 'outbox_dead_letters');
    PERFORM eye_grant('eye_delivery', 'SELECT', 'events, applications');
    PERFORM eye_grant('eye_delivery', 'SELECT, UPDATE', 'subscriptions');

    -- Query (and the console): reads only.
    PERFORM eye_grant('eye_query', 'SELECT',
                      'events, sessions, event_errors, applications, api_keys, event_schemas, '
                      'outbox, outbox_dead_letters, subscriptions, exports, deletions');

    -- Administration (the CLI run by an operator, the console's admin pages, replays,
    -- deletions, exports): every row of every table, no DDL. Grant it with eye_query to a query
    -- server that serves admin keys.
    PERFORM eye_grant('eye_admin', crud,
                      'applications, api_keys, event_schemas, idempotency_keys, events, sessions, '
                      'event_errors, outbox, outbox_dead_letters, subscriptions, exports, '
                      'deletions, suppressions');
    PERFORM eye_grant('eye_admin', 'EXECUTE',
                      'FUNCTION eye_ensure_partition(regclass, timestamptz, text), '
                      'eye_drop_partitions_before(regclass, timestamptz)');
END;
$$;

SELECT eye_grant_roles();
