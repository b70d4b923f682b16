-- Clients of the authorization-server façade registered dynamically (RFC 7591). `metadata` is
-- the validated client metadata as JSON; a confidential client's secret is kept only as its
-- SHA-256 (`secret_hash`). Unused clients are deleted after a configured time.
CREATE TABLE oauth_clients (
    client_id     TEXT PRIMARY KEY,
    metadata      TEXT NOT NULL,
    secret_hash   TEXT NULL,
    registered_ip TEXT NULL,
    created_at_ms BIGINT NOT NULL,
    last_used_ms  BIGINT NULL,
    revoked_at_ms BIGINT NULL
);
