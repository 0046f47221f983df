-- Exports (`eye export DEST`): which occurrence hour was exported to which destination, and from
-- what state of the store, so that a rerun skips what is unchanged and `--follow` re-exports an
-- hour that an event stored late made stale.
CREATE TABLE exports (
    -- The destination as given (`/data/eye-export`, `s3://bucket/prefix`).
    destination text        NOT NULL,
    -- `events` or `errors` (quarantined events, `--errors`).
    kind        text        NOT NULL CHECK (kind IN ('events', 'errors')),
    hour        timestamptz NOT NULL,
    -- What the hour held when exported: its row count and latest change (see eye_export).
    state       text        NOT NULL,
    rows        bigint      NOT NULL,
    files       integer     NOT NULL,
    bytes       bigint      NOT NULL,
    exported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, kind, hour)
);
