-- The driver supply chain (PostgreSQL dialect): source repositories, builds, the host's
-- attestation signing keys, and the provenance and signed approval of each driver. The
-- SQLite migration of the same number creates the same tables.

-- Git repositories drivers are built from. Credentials (a sealed JSON document) are
-- never returned by the API.
CREATE TABLE repositories (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    url         TEXT NOT NULL,
    -- The branch whose newer commits make "update available"; NULL: the remote's HEAD.
    branch      TEXT,
    credentials BYTEA,
    key_id      BIGINT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Builds of a driver at a commit, one at a time, in the background.
CREATE TABLE builds (
    id            TEXT PRIMARY KEY,
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    commit_sha    TEXT NOT NULL,
    package_path  TEXT NOT NULL,
    state         TEXT NOT NULL
                  CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- What it is doing now (cloning, fetching, compiling, ...).
    stage         TEXT NOT NULL DEFAULT '',
    -- The build record (command, toolchain, digest) once it finished.
    record        TEXT,
    -- Compiler output, the tail kept.
    output        TEXT NOT NULL DEFAULT '',
    error         TEXT,
    driver_id     TEXT,
    requested_by  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT
);
CREATE INDEX builds_created ON builds (created_at);

-- The host's Ed25519 keys that sign approvals. The private key is sealed; the newest
-- key not retired signs.
CREATE TABLE signing_keys (
    id          TEXT PRIMARY KEY,
    public_key  TEXT NOT NULL,
    private_key BYTEA NOT NULL,
    key_id      BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

-- Where a driver came from and the signed statement of its approval.
ALTER TABLE drivers ADD COLUMN repository_id TEXT;
ALTER TABLE drivers ADD COLUMN package_path TEXT;
ALTER TABLE drivers ADD COLUMN build_id TEXT;
ALTER TABLE drivers ADD COLUMN attestation TEXT;
