-- API keys for headless agents: only a SHA-256 digest of the secret part is kept.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    groups_     TEXT NOT NULL,
    servers     TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
