-- The building model, settings, history and the audit log (PostgreSQL dialect).
-- Times are Unix milliseconds; JSON is stored as text; sealed values as blobs.
-- The SQLite migration of the same number creates the same tables.

CREATE TABLE zones (
    id          TEXT PRIMARY KEY,
    parent_id   TEXT REFERENCES zones (id) ON DELETE RESTRICT,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tags        TEXT NOT NULL DEFAULT '[]',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX zones_parent ON zones (parent_id);

CREATE TABLE systems (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    email       TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE system_zones (
    system_id TEXT NOT NULL REFERENCES systems (id) ON DELETE CASCADE,
    zone_id   TEXT NOT NULL REFERENCES zones (id) ON DELETE CASCADE,
    position  BIGINT NOT NULL,
    PRIMARY KEY (system_id, zone_id)
);
CREATE INDEX system_zones_zone ON system_zones (zone_id);

CREATE TABLE components (
    digest TEXT PRIMARY KEY,
    bytes  BYTEA NOT NULL
);

CREATE TABLE drivers (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    -- What its modules are called in a system (`Display` gives `Display_1`).
    module_name   TEXT NOT NULL,
    digest        TEXT NOT NULL REFERENCES components (digest) ON DELETE RESTRICT,
    metadata      TEXT NOT NULL,
    source_repo   TEXT,
    source_commit TEXT,
    approval      TEXT NOT NULL DEFAULT 'pending'
                  CHECK (approval IN ('pending', 'approved', 'revoked')),
    approved_by   TEXT,
    approved_at   BIGINT,
    approval_note TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX drivers_digest ON drivers (digest);

CREATE TABLE modules (
    id          TEXT PRIMARY KEY,
    driver_id   TEXT NOT NULL REFERENCES drivers (id) ON DELETE RESTRICT,
    endpoint    TEXT,
    uri         TEXT,
    custom_name TEXT,
    notes       TEXT NOT NULL DEFAULT '',
    running     BIGINT NOT NULL DEFAULT 0,
    -- The home system: the first system the module was added to, while it stays there.
    system_id   TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX modules_driver ON modules (driver_id);

CREATE TABLE system_modules (
    system_id TEXT NOT NULL REFERENCES systems (id) ON DELETE CASCADE,
    module_id TEXT NOT NULL REFERENCES modules (id) ON DELETE CASCADE,
    position  BIGINT NOT NULL,
    PRIMARY KEY (system_id, module_id)
);
CREATE INDEX system_modules_module ON system_modules (module_id);

-- One record per parent and level; `value` is the sealed JSON object, `key_id` the key it
-- is sealed under (so rotation finds what is left to re-encrypt without opening anything).
CREATE TABLE settings (
    id          TEXT PRIMARY KEY,
    parent_kind TEXT NOT NULL CHECK (parent_kind IN ('driver', 'zone', 'system', 'module')),
    parent_id   TEXT NOT NULL,
    level       TEXT NOT NULL CHECK (level IN ('none', 'support', 'admin', 'never_displayed')),
    value       BYTEA NOT NULL,
    key_id      BIGINT NOT NULL,
    revision    BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT NOT NULL,
    UNIQUE (parent_kind, parent_id, level)
);
CREATE INDEX settings_key ON settings (key_id);

CREATE TABLE settings_history (
    settings_id TEXT NOT NULL,
    revision    BIGINT NOT NULL,
    level       TEXT NOT NULL,
    value       BYTEA NOT NULL,
    key_id      BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT NOT NULL,
    PRIMARY KEY (settings_id, revision)
);
CREATE INDEX settings_history_key ON settings_history (key_id);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE,
    username    TEXT NOT NULL UNIQUE,
    first_name  TEXT NOT NULL DEFAULT '',
    last_name   TEXT NOT NULL DEFAULT '',
    roles       TEXT NOT NULL DEFAULT '[]',
    auth_source TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE module_history (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    module_id TEXT NOT NULL,
    at        BIGINT NOT NULL,
    online    BIGINT NOT NULL,
    reason    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX module_history_module_at ON module_history (module_id, at);
CREATE INDEX module_history_at ON module_history (at);

CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    details     TEXT NOT NULL,
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL
);

-- The chain's head: one row, updated first in every append so appends are serialised.
CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
