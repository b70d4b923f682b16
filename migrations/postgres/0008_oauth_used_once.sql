-- Single-use values of the OAuth façade (consent forms, ID-JAG `jti`s), by digest, kept until
-- they expire, so that several replicas refuse a second use as one gateway would.
CREATE TABLE oauth_used_once (
    digest        TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
