-- The OAuth authorization-server façade (src/oauth): its signing keys, refresh tokens and
-- authorization codes. Times are milliseconds since the epoch.

-- ES256 keys Gatehouse signs access tokens with. `kid` is the RFC 7638 thumbprint of the public
-- key; the private key is sealed with AES-256-GCM (bound to the kid), so this table alone gives
-- no signing power, and a row whose sealed key does not open is never trusted or published.
CREATE TABLE oauth_signing_keys (
    kid            TEXT PRIMARY KEY,
    alg            TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    sealed_private TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    retired_at_ms  BIGINT NULL
);

-- Refresh tokens, by the SHA-256 of the token (never the token). Each is used once; tokens
-- issued from one login share a family, revoked as a whole on replay. `grant_json` holds the
-- resource, scope and identity the token grants.
CREATE TABLE oauth_refresh_tokens (
    token_hash    TEXT PRIMARY KEY,
    family_id     TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    subject       TEXT NOT NULL,
    grant_json    TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms    BIGINT NULL,
    revoked_at_ms BIGINT NULL
);
CREATE INDEX oauth_refresh_tokens_family ON oauth_refresh_tokens (family_id);
CREATE INDEX oauth_refresh_tokens_expires ON oauth_refresh_tokens (expires_at_ms);

-- Authorization codes, by the SHA-256 of the code. Consumed once; `family_id` names the refresh
-- tokens issued from the code, revoked when the code is presented again.
CREATE TABLE oauth_codes (
    code_hash      TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    resource       TEXT NOT NULL,
    scope          TEXT NOT NULL,
    identity       TEXT NOT NULL,
    family_id      TEXT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    consumed_at_ms BIGINT NULL
);
CREATE INDEX oauth_codes_expires ON oauth_codes (expires_at_ms);
