-- The services' login roles for deploy/compose.yaml, each in the group role the migrations
-- created and granted (docs/operations.md, "Roles"). The passwords are the compose file's
-- defaults: change both for anything but a laptop.
DO $$
DECLARE
    login record;
BEGIN
    FOR login IN SELECT * FROM (VALUES
        ('eye_ingest_login', 'ingest', 'eye_ingest'),
        ('eye_validator_login', 'validator', 'eye_validator'),
        ('eye_writer_login', 'writer', 'eye_writer'),
        ('eye_delivery_login', 'delivery', 'eye_delivery'),
        ('eye_query_login', 'query', 'eye_query, eye_admin')
    ) AS l(name, password, groups) LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = login.name) THEN
            EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE %s',
                           login.name, login.password, login.groups);
        END IF;
    END LOOP;
END;
$$;
