-- The catalog's decisions about whole upstreams. An upstream is served only while `approved`:
-- registered (`pending`) → `approved` or `rejected`; `approved` → `quarantined` (held back as a
-- whole until approved again) or `retired` (withdrawn; registering it again starts over).
CREATE TABLE catalog_upstreams (
    upstream         TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    registered_by    TEXT NULL,
    registered_at_ms BIGINT NOT NULL,
    decided_by       TEXT NULL,
    decided_at_ms    BIGINT NULL,
    reason           TEXT NULL
);

-- Upstreams whose definitions were approved before upstreams had states of their own stay
-- served.
INSERT INTO catalog_upstreams (upstream, state, registered_at_ms, decided_by, decided_at_ms)
SELECT upstream, 'approved', MIN(first_seen_ms), MAX(decided_by), MAX(decided_at_ms)
FROM catalog_definitions WHERE state = 'approved' GROUP BY upstream;
