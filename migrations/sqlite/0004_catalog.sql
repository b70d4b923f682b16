-- The catalog: every definition an upstream offered (tool, prompt, resource, template), its pin
-- (SHA-256 of its canonical form), the scanner's findings and the reviewer's decision.
-- `approved_pin`/`approved_definition` keep what was last approved, so that a changed
-- definition (state `quarantined`) can be shown beside it and re-approved.
CREATE TABLE catalog_definitions (
    upstream            TEXT NOT NULL,
    kind                TEXT NOT NULL,
    name                TEXT NOT NULL,
    pin                 TEXT NOT NULL,
    definition          TEXT NOT NULL,
    findings            TEXT NOT NULL DEFAULT '[]',
    worst               TEXT NULL,
    state               TEXT NOT NULL,
    approved_pin        TEXT NULL,
    approved_definition TEXT NULL,
    decided_by          TEXT NULL,
    decided_at_ms       BIGINT NULL,
    first_seen_ms       BIGINT NOT NULL,
    updated_at_ms       BIGINT NOT NULL,
    PRIMARY KEY (upstream, kind, name)
);
