-- Users' connections to third-party upstreams (per-user OAuth). The token set is sealed with
-- AES-256-GCM by the gateway before it is written (`sealed`, under the key named in `key_id`);
-- this table never holds a usable token. `binding` is a digest of the user's issuer and subject.
CREATE TABLE upstream_connections (
    binding       TEXT NOT NULL,
    upstream      TEXT NOT NULL,
    subject       TEXT NOT NULL,
    issuer        TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    sealed        TEXT NOT NULL,
    scopes        TEXT NOT NULL DEFAULT '',
    expires_at_ms BIGINT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (binding, upstream)
);
-- Finds the rows still sealed under an old key, to re-seal them after a rotation.
CREATE INDEX upstream_connections_key_id ON upstream_connections (key_id);
