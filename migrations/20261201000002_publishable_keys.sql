-- Browser keys. A publishable key is meant to be seen (it sits in a web page): it may only
-- ingest, only from the listed origins (`scheme://host[:port]`, checked against the request's
-- `Origin`), and is rate-limited per client address. A secret key (publishable = false) is
-- refused from any browser origin, so a server key leaked into a page fails loudly.
ALTER TABLE api_keys
    ADD COLUMN publishable boolean NOT NULL DEFAULT false,
    ADD COLUMN origins     text[]  NOT NULL DEFAULT '{}',
    ADD CONSTRAINT api_keys_publishable_ingest_only
        CHECK (NOT publishable OR (roles = '{ingest}' AND cardinality(origins) > 0));
