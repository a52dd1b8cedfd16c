-- ias schema version 5: rate limits exact across governors; lease syncs
-- applied once. Never edit this file once released: add a new numbered
-- migration instead.
--
-- Requests and tokens per minute are leased like budgets: every governor
-- sharing the database holds credits of a limit (`rate_leases`), grants
-- requests from them in memory, and reports each grant with its time; a
-- reported grant stays in `rate_window` for 60 seconds. `rate_counters`
-- holds, per scope and kind, the window's total and what every lease
-- holds, so that `used + held <= limit` can be kept in one transaction.

CREATE TABLE rate_counters (
    scope        TEXT NOT NULL CHECK (scope IN ('org', 'user', 'key')),
    scope_id     INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('requests', 'tokens')),
    -- Credits of the grants in `rate_window`.
    used         INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0),
    -- Credits held by every governor's leases.
    held         INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
    -- Until then (Unix ms) a governor waits for credits: no spare is
    -- granted, and holders give back what they hold unused.
    demand_until INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, scope_id, kind)
) WITHOUT ROWID;

-- Reported grants of the last 60 seconds, summed per millisecond.
CREATE TABLE rate_window (
    scope    TEXT NOT NULL,
    scope_id INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    at       INTEGER NOT NULL,
    amount   INTEGER NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (scope, scope_id, kind, at)
) WITHOUT ROWID;

-- Credits each running governor holds; taken back from a governor that
-- stopped a minute after its lease expired.
CREATE TABLE rate_leases (
    holder     TEXT NOT NULL,
    scope      TEXT NOT NULL,
    scope_id   INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    credits    INTEGER NOT NULL CHECK (credits >= 0),
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (scope, scope_id, kind, holder)
) WITHOUT ROWID;
CREATE INDEX rate_leases_holder ON rate_leases (holder);

-- The number of each governor's last lease sync: a sync sent again after
-- its answer was lost (same holder, same number) is not applied twice.
-- Rows of governors gone for a day are dropped.
CREATE TABLE lease_syncs (
    holder TEXT PRIMARY KEY,
    seq    INTEGER NOT NULL,
    at     INTEGER NOT NULL
);
CREATE INDEX lease_syncs_at ON lease_syncs (at);
