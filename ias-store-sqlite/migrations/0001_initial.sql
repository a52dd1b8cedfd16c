-- ias schema, version 1. Never edit this file once released: add a new
-- numbered migration instead. Times are Unix milliseconds (UTC).

CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    builtin     INTEGER NOT NULL DEFAULT 0 CHECK (builtin IN (0, 1))
);

CREATE TABLE permissions (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL
);

CREATE TABLE role_permissions (
    role       TEXT NOT NULL REFERENCES roles (name),
    permission TEXT NOT NULL REFERENCES permissions (name),
    scope      TEXT NOT NULL CHECK (scope IN ('own', 'org', 'global')),
    PRIMARY KEY (role, permission)
);

CREATE TABLE organizations (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    slug                 TEXT NOT NULL UNIQUE,
    monthly_token_budget INTEGER NOT NULL CHECK (monthly_token_budget >= 0),
    timezone             TEXT NOT NULL,
    managed_by           TEXT NOT NULL DEFAULT 'api' CHECK (managed_by IN ('api', 'gitops')),
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);

CREATE TABLE users (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id              INTEGER NOT NULL REFERENCES organizations (id),
    email               TEXT NOT NULL UNIQUE,
    role                TEXT NOT NULL REFERENCES roles (name),
    -- NULL: the user has no limit of its own; only the org budget applies.
    monthly_token_limit INTEGER NULL CHECK (monthly_token_limit IS NULL OR monthly_token_limit >= 0),
    password_hash       TEXT NULL,
    managed_by          TEXT NOT NULL DEFAULT 'api' CHECK (managed_by IN ('api', 'gitops')),
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX users_org_email ON users (org_id, email);

CREATE TABLE api_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    org_id     INTEGER NOT NULL REFERENCES organizations (id),
    -- SHA-256 of the secret; the secret itself is never stored.
    key_hash   BLOB NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    prefix     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NULL,
    revoked_at INTEGER NULL
);
CREATE INDEX api_keys_user ON api_keys (user_id, id);

CREATE TABLE org_allowed_models (
    org_id     INTEGER NOT NULL REFERENCES organizations (id),
    model      TEXT NOT NULL,
    managed_by TEXT NOT NULL DEFAULT 'api' CHECK (managed_by IN ('api', 'gitops')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, model)
) WITHOUT ROWID;

-- Per-period counters, one row per scope (org or user) and month (YYYY-MM).
CREATE TABLE usage_counters (
    scope           TEXT NOT NULL CHECK (scope IN ('org', 'user')),
    scope_id        INTEGER NOT NULL,
    period          TEXT NOT NULL,
    used_tokens     INTEGER NOT NULL DEFAULT 0 CHECK (used_tokens >= 0),
    reserved_tokens INTEGER NOT NULL DEFAULT 0 CHECK (reserved_tokens >= 0),
    PRIMARY KEY (scope, scope_id, period)
) WITHOUT ROWID;

-- AUTOINCREMENT: ids are never reused, so a stale id can never settle a newer
-- reservation (likewise for keys, users and organizations).
CREATE TABLE reservations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id     INTEGER NOT NULL REFERENCES organizations (id),
    user_id    INTEGER NOT NULL REFERENCES users (id),
    key_id     INTEGER NOT NULL REFERENCES api_keys (id),
    model      TEXT NOT NULL,
    period     TEXT NOT NULL,
    tokens     INTEGER NOT NULL CHECK (tokens >= 0),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX reservations_org_expiry ON reservations (org_id, expires_at);

CREATE TABLE usage_events (
    id              INTEGER PRIMARY KEY,
    org_id          INTEGER NOT NULL REFERENCES organizations (id),
    user_id         INTEGER NOT NULL REFERENCES users (id),
    key_id          INTEGER NOT NULL REFERENCES api_keys (id),
    model           TEXT NOT NULL,
    period          TEXT NOT NULL,
    reserved_tokens INTEGER NOT NULL,
    tokens          INTEGER NOT NULL CHECK (tokens >= 0),
    created_at      INTEGER NOT NULL
);
CREATE INDEX usage_events_org_period ON usage_events (org_id, period, model);
CREATE INDEX usage_events_user_period ON usage_events (user_id, period);

-- Append-only and hash-chained: each row stores the previous row's hash.
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    source    TEXT NOT NULL CHECK (source IN ('cli', 'api', 'gitops', 'library')),
    action    TEXT NOT NULL,
    org_id    INTEGER NULL,
    target    TEXT NOT NULL,
    target_id INTEGER NULL,
    changes   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_log_org ON audit_log (org_id, id);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TABLE gitops_sync_state (
    org_id          INTEGER PRIMARY KEY REFERENCES organizations (id),
    repo_url        TEXT NOT NULL,
    git_ref         TEXT NOT NULL DEFAULT 'main',
    path            TEXT NOT NULL DEFAULT 'ias.yaml',
    enabled         INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    last_commit     TEXT NULL,
    last_attempt_at INTEGER NULL,
    last_success_at INTEGER NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'synced', 'out_of_sync', 'error')),
    message         TEXT NULL,
    drift           TEXT NULL
);

INSERT INTO roles (name, description, builtin) VALUES
    ('system_admin', 'Everything, in every organization', 1),
    ('org_admin', 'Everything inside its own organization', 1),
    ('member', 'Its own keys and its own usage', 1);

INSERT INTO permissions (name, description) VALUES
    ('org.create', 'Create organizations'),
    ('org.read', 'Read organizations and their settings'),
    ('org.update', 'Change an organization''s budget or time zone'),
    ('user.create', 'Create users'),
    ('user.read', 'Read users'),
    ('user.update', 'Change a user''s role or monthly limit'),
    ('user.reset_password', 'Reset a user''s password'),
    ('role.grant_system_admin', 'Give a user the system_admin role'),
    ('key.create', 'Create API keys'),
    ('key.read', 'List API keys'),
    ('key.revoke', 'Revoke API keys'),
    ('model.read', 'Read allowed models'),
    ('model.manage', 'Allow or deny models'),
    ('limits.manage', 'Set rate limits'),
    ('usage.read', 'Read usage'),
    ('audit.read', 'Read the audit log'),
    ('gitops.manage', 'Enable, disable and sync GitOps');

INSERT INTO role_permissions (role, permission, scope)
    SELECT 'system_admin', name, 'global' FROM permissions;
INSERT INTO role_permissions (role, permission, scope)
    SELECT 'org_admin', name, 'org' FROM permissions
    WHERE name NOT IN ('org.create', 'role.grant_system_admin', 'user.reset_password');
INSERT INTO role_permissions (role, permission, scope) VALUES
    ('member', 'key.create', 'own'),
    ('member', 'key.read', 'own'),
    ('member', 'key.revoke', 'own'),
    ('member', 'usage.read', 'own'),
    ('member', 'model.read', 'own');
