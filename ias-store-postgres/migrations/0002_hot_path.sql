-- ias schema for PostgreSQL, version 2: the in-memory hot path, as the
-- SQLite store's version 2. Never edit this file once released: add a new
-- numbered migration instead.
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
    scope_id   BIGINT NOT NULL,
    period     TEXT NOT NULL,
    tokens     BIGINT NOT NULL CHECK (tokens >= 0),
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (scope, scope_id, period, holder)
);
CREATE INDEX leases_holder ON leases (holder);

-- Requests and tokens per minute, per organization, user or key.
CREATE TABLE rate_limits (
    scope      TEXT NOT NULL CHECK (scope IN ('org', 'user', 'key')),
    scope_id   BIGINT NOT NULL,
    rpm        BIGINT NULL CHECK (rpm IS NULL OR rpm > 0),
    tpm        BIGINT NULL CHECK (tpm IS NULL OR tpm > 0),
    managed_by TEXT NOT NULL DEFAULT 'api' CHECK (managed_by IN ('api', 'gitops')),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (scope, scope_id)
);

-- Usage per organization-local day, user and model, for analytics.
CREATE TABLE usage_daily (
    org_id   BIGINT NOT NULL REFERENCES organizations (id),
    day      TEXT NOT NULL,
    user_id  BIGINT NOT NULL REFERENCES users (id),
    model    TEXT NOT NULL,
    tokens   BIGINT NOT NULL CHECK (tokens >= 0),
    requests BIGINT NOT NULL CHECK (requests >= 0),
    PRIMARY KEY (org_id, day, user_id, model)
);

-- The change feed: every write to a row the hot path caches appends the
-- row's kind and id, in the same transaction, so governors reload it.
CREATE TABLE changes (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity    TEXT NOT NULL CHECK (entity IN ('org', 'user', 'key')),
    entity_id BIGINT NOT NULL
);

-- Appends one change. Sequence values are handed out when a row is
-- inserted, not when its transaction commits, so without care a reader
-- could see seq 8 committed while seq 7 is still in flight, move past it,
-- and never reload that row. The write-log lock (advisory lock
-- 7593477141487904607, the bytes `ias:log_`, also held while the store
-- appends to the audit chain) is taken before `seq` is drawn and kept
-- until the transaction ends, so changes commit in `seq` order and every
-- reader sees a prefix of the feed. The lock serialises admin writes only;
-- budget leases and usage never take it.
CREATE FUNCTION ias_append_change(kind TEXT, row_id BIGINT) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7593477141487904607);
    INSERT INTO changes (entity, entity_id) VALUES (kind, row_id);
END;
$$;

-- Organizations, users and keys: the changed row itself (argument: its kind).
CREATE FUNCTION ias_change_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ias_append_change(TG_ARGV[0], NEW.id);
    RETURN NULL;
END;
$$;

-- Allowed models: their organization.
CREATE FUNCTION ias_change_model() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM ias_append_change('org', OLD.org_id);
    ELSE
        PERFORM ias_append_change('org', NEW.org_id);
    END IF;
    RETURN NULL;
END;
$$;

-- Rate limits: the organization, user or key they limit.
CREATE FUNCTION ias_change_rate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM ias_append_change(OLD.scope, OLD.scope_id);
    ELSE
        PERFORM ias_append_change(NEW.scope, NEW.scope_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER changes_org AFTER INSERT OR UPDATE ON organizations
    FOR EACH ROW EXECUTE FUNCTION ias_change_row('org');
CREATE TRIGGER changes_user AFTER INSERT OR UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION ias_change_row('user');
CREATE TRIGGER changes_key AFTER INSERT OR UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION ias_change_row('key');
CREATE TRIGGER changes_model AFTER INSERT OR DELETE ON org_allowed_models
    FOR EACH ROW EXECUTE FUNCTION ias_change_model();
CREATE TRIGGER changes_rate AFTER INSERT OR UPDATE OR DELETE ON rate_limits
    FOR EACH ROW EXECUTE FUNCTION ias_change_rate();
