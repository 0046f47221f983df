-- Quarantined payloads become jsonb, like events.data: `data->>'host'` works in psql, and
-- `eye errors --json` and `eye events --json` give payloads the same shape. Every payload the
-- validator quarantines is already a JSON object (ingest refuses anything else), so nothing is
-- lost; a row that does not parse (none should) is kept as a JSON string of its text.
CREATE FUNCTION pg_temp.eye_as_jsonb(t text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN others THEN
    RETURN to_jsonb(t);
END
$$;

ALTER TABLE event_errors ALTER COLUMN data TYPE jsonb USING pg_temp.eye_as_jsonb(data);
