-- ias schema, version 2: the in-memory hot path. Never edit this file once
-- released: add a new numbered migration instead.
--
-- Governors now hold budget leases instead of per-request reservation rows:
-- usage_counters.reserved_tokens is what every governor's leases hold, and
-- `leases` says which governor holds how much. Reservations live in the
-- governor's memory.

DROP TABLE reservations;
-- Their holds went with them.
UPDATE usage_counters SET reserved_tokens = 0;

CREATE TABLE leases (
    holder     TEXT NOT NULL,
    scope      TEXT NOT NULL CHECK (scope IN ('org', 'user')),
    scope_id   INTEGER NOT NULL,
    period     TEXT NOT NULL,
    tokens     INTEGER NOT NULL CHECK (tokens >= 0),
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (scope, scope_id, period, holder)
) WITHOUT ROWID;
CREATE INDEX leases_holder ON leases (holder);

-- Requests and tokens per minute, per organization, user or key.
CREATE TABLE rate_limits (
    scope      TEXT NOT NULL CHECK (scope IN ('org', 'user', 'key')),
    scope_id   INTEGER NOT NULL,
    rpm        INTEGER NULL CHECK (rpm IS NULL OR rpm > 0),
    tpm        INTEGER NULL CHECK (tpm IS NULL OR tpm > 0),
    managed_by TEXT NOT NULL DEFAULT 'api' CHECK (managed_by IN ('api', 'gitops')),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (scope, scope_id)
) WITHOUT ROWID;

-- Usage per organization-local day, user and model, for analytics.
CREATE TABLE usage_daily (
    org_id   INTEGER NOT NULL REFERENCES organizations (id),
    day      TEXT NOT NULL,
    user_id  INTEGER NOT NULL REFERENCES users (id),
    model    TEXT NOT NULL,
    tokens   INTEGER NOT NULL CHECK (tokens >= 0),
    requests INTEGER NOT NULL CHECK (requests >= 0),
    PRIMARY KEY (org_id, day, user_id, model)
) WITHOUT ROWID;

-- The change feed: every write to a row the hot path caches appends the
-- row's kind and id, in the same transaction, so governors reload it.
CREATE TABLE changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    entity    TEXT NOT NULL CHECK (entity IN ('org', 'user', 'key')),
    entity_id INTEGER NOT NULL
);

CREATE TRIGGER changes_org_insert AFTER INSERT ON organizations
BEGIN
    INSERT INTO changes (entity, entity_id) VALUES ('org', NEW.id);
END;
CREATE TRIGGER changes_org_update AFTER UPDATE ON organizations
BEGIN
    INSERT INTO changes (entity, entity_id) VALUES ('org', NEW.id);
END;
CREATE TRIGGER changes_user_insert AFTER INSERT ON users
BEGIN
    INSERT INTO changes (entity, entity_id) VALUES ('user', NEW.id);
END;
CREATE TRIGGER changes_user_update AFTER UPDATE ON users
BEGIN
    INSERT INTO changes (entity, entity_id) VALUES ('user', NEW.id);
END;
CREATE TRIGGER changes_key_insert AFTER INSERT ON api_keys
BEGIN
    INSERT INTO changes (entity, entity_id) VALUES ('key', NEW.id);
END;
CREATE TRIGGER changes_key_update AFTER UPDATE ON api_keys
BEGIN
    INSERT INTO changes (entity, entity_id) VALUES ('key', NEW.id);
END;
CREATE TRIGGER changes_model_insert AFTER INSERT ON org_allowed_models
BEGIN
    INSERT INTO changes (entity, entity_id) VALUES ('org', NEW.org_id);
END;
CREATE TRIGGER changes_model_delete AFTER DELETE ON org_allowed_models
BEGIN
    INSERT INTO changes (entity, entity_id) VALUES ('org', OLD.org_id);
END;
CREATE TRIGGER changes_rate_insert AFTER INSERT ON rate_limits
BEGIN
    INSERT INTO changes (entity, entity_id) VALUES (NEW.scope, NEW.scope_id);
END;
CREATE TRIGGER changes_rate_update AFTER UPDATE ON rate_limits
BEGIN
    INSERT INTO changes (entity, entity_id) VALUES (NEW.scope, NEW.scope_id);
END;
CREATE TRIGGER changes_rate_delete AFTER DELETE ON rate_limits
BEGIN
    INSERT INTO changes (entity, entity_id) VALUES (OLD.scope, OLD.scope_id);
END;
