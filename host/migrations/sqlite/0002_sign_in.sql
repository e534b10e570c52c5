-- Sign-in (SQLite dialect): local passwords, OAuth applications, authorization codes,
-- grants and their tokens, API keys, browser sessions. Secrets are stored only as
-- SHA-256 hashes (hex) of high-entropy random values; a password hash is sealed like a
-- setting. The PostgreSQL migration of the same number creates the same tables.

ALTER TABLE users ADD COLUMN deactivated_at BIGINT;

CREATE TABLE user_passwords (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- The scrypt PHC string, sealed for `user_passwords/<user id>/phc`.
    phc        BLOB NOT NULL,
    key_id     BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX user_passwords_key ON user_passwords (key_id);

CREATE TABLE oauth_clients (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    redirect_uris   TEXT NOT NULL DEFAULT '[]',
    scopes          TEXT NOT NULL DEFAULT '[]',
    grant_types     TEXT NOT NULL DEFAULT '[]',
    -- Confidential clients authenticate with a secret; public ones (browsers) with PKCE alone.
    secret_hash     TEXT,
    -- The user a client-credentials token acts as.
    service_user_id TEXT REFERENCES users (id) ON DELETE RESTRICT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Browser sessions of the sign-in pages.
CREATE TABLE auth_sessions (
    id         TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id);

-- A grant: what one authorization (a code exchange or a client-credentials request) gave
-- one client for one user; its access and refresh tokens form one family, revoked together.
CREATE TABLE auth_grants (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id           TEXT NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    session_id          TEXT REFERENCES auth_sessions (id) ON DELETE SET NULL,
    scopes              TEXT NOT NULL DEFAULT '[]',
    created_at          BIGINT NOT NULL,
    -- Refreshing is refused after either.
    idle_expires_at     BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    revoked_at          BIGINT,
    revoked_why         TEXT
);
CREATE INDEX auth_grants_user ON auth_grants (user_id);
CREATE INDEX auth_grants_session ON auth_grants (session_id);

CREATE TABLE auth_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL REFERENCES auth_grants (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    -- A refresh token is used once; a second use revokes its grant.
    used_at    BIGINT
);
CREATE INDEX auth_tokens_grant ON auth_tokens (grant_id);
CREATE INDEX auth_tokens_expiry ON auth_tokens (expires_at);

CREATE TABLE auth_codes (
    code_hash      TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id     TEXT REFERENCES auth_sessions (id) ON DELETE SET NULL,
    redirect_uri   TEXT NOT NULL,
    scopes         TEXT NOT NULL DEFAULT '[]',
    code_challenge TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    -- What the exchange issued, revoked if the code is presented again.
    grant_id       TEXT
);
CREATE INDEX auth_codes_expiry ON auth_codes (expires_at);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    key_hash   TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    scopes     TEXT NOT NULL DEFAULT '[]',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_user ON api_keys (user_id);
