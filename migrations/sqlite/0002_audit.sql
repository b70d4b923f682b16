-- The audit trail: one row per decision and per call. Arguments are stored redacted (or as a
-- digest); credentials never reach this table.
CREATE TABLE audit_records (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       BIGINT NOT NULL,
    request_id  TEXT NOT NULL,
    server      TEXT NOT NULL,
    upstream    TEXT,
    method      TEXT NOT NULL,
    target      TEXT,
    subject     TEXT,
    issuer      TEXT,
    client_id   TEXT,
    decision    TEXT NOT NULL,
    rule        TEXT,
    outcome     TEXT NOT NULL,
    error_code  BIGINT,
    latency_us  BIGINT NOT NULL,
    bytes_in    BIGINT NOT NULL,
    bytes_out   BIGINT NOT NULL,
    arguments   TEXT
);
CREATE INDEX audit_records_at ON audit_records (at_ms);
CREATE INDEX audit_records_subject ON audit_records (subject, at_ms);
