-- ias schema for PostgreSQL, version 4: GitOps hybrid mode, as the SQLite
-- store's version 4. Never edit this file once released: add a new
-- numbered migration instead.

-- The version 1 table was never written to; its shape could not hold the
-- settings, status and inventory that GitOps keeps, so it is replaced.
DROP TABLE gitops_sync_state;

CREATE TABLE gitops_sync_state (
    org_id                BIGINT PRIMARY KEY REFERENCES organizations (id),
    repo_url              TEXT NOT NULL,
    git_ref               TEXT NOT NULL,
    path                  TEXT NOT NULL,
    -- Where the transport finds credentials (env:NAME, token-file:PATH, ...); never a secret.
    credentials           TEXT NULL,
    prune                 BOOLEAN NOT NULL DEFAULT FALSE,
    drift_policy          TEXT NOT NULL DEFAULT 'report' CHECK (drift_policy IN ('report', 'heal')),
    max_removal_percent   BIGINT NOT NULL DEFAULT 25
                          CHECK (max_removal_percent BETWEEN 0 AND 100),
    allow_empty           BOOLEAN NOT NULL DEFAULT FALSE,
    suspended             BOOLEAN NOT NULL DEFAULT FALSE,
    status                TEXT NOT NULL
                          CHECK (status IN ('synced', 'out_of_sync', 'error', 'suspended')),
    reason                TEXT NOT NULL,
    message               TEXT NOT NULL,
    last_fetched_commit   TEXT NULL,
    last_attempted_commit TEXT NULL,
    last_applied_commit   TEXT NULL,
    last_attempt_at       BIGINT NULL,
    last_success_at       BIGINT NULL,
    consecutive_failures  BIGINT NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    next_retry_at         BIGINT NULL,
    drift_count           BIGINT NOT NULL DEFAULT 0 CHECK (drift_count >= 0),
    -- JSON text, as in SQLite: the drift found at the last check, field by field.
    drift                 TEXT NOT NULL DEFAULT '[]',
    -- JSON text: what Git applied last (commit, file, users Git added); NULL before the first apply.
    inventory             TEXT NULL,
    lease_holder          TEXT NULL,
    lease_until           BIGINT NULL,
    enabled_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);

-- GitOps ends a membership without deleting anything: the user, its keys
-- and its usage stay for the record, and its keys stop working.
ALTER TABLE users ADD COLUMN removed_at BIGINT NULL;
