-- ias schema for PostgreSQL, version 5: rate limits exact across replicas
-- and lease syncs applied once, as the SQLite store's version 5; change
-- notices; lease syncs in one statement. Never edit this file once released: add a new numbered
-- migration instead.
--
-- Requests and tokens per minute are leased like budgets: every replica
-- holds credits of a limit (`rate_leases`), grants requests from them in
-- memory, and reports each grant with its time; a reported grant stays in
-- `rate_window` for 60 seconds. `rate_counters` holds, per scope and kind,
-- the window's total and what every lease holds, so that
-- `used + held <= limit` is kept under one row lock.

CREATE TABLE rate_counters (
    scope        TEXT NOT NULL CHECK (scope IN ('org', 'user', 'key')),
    scope_id     BIGINT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('requests', 'tokens')),
    -- Credits of the grants in `rate_window`.
    used         BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),
    -- Credits held by every replica's leases.
    held         BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
    -- Until then (Unix ms) a replica waits for credits: no spare is
    -- granted, and holders give back what they hold unused.
    demand_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, scope_id, kind)
);

-- Reported grants of the last 60 seconds, summed per millisecond.
CREATE TABLE rate_window (
    scope    TEXT NOT NULL,
    scope_id BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    at       BIGINT NOT NULL,
    amount   BIGINT NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (scope, scope_id, kind, at)
);

-- Credits each running replica holds; taken back from a replica that
-- stopped a minute after its lease expired.
CREATE TABLE rate_leases (
    holder     TEXT NOT NULL,
    scope      TEXT NOT NULL,
    scope_id   BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    credits    BIGINT NOT NULL CHECK (credits >= 0),
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (scope, scope_id, kind, holder)
);
CREATE INDEX rate_leases_holder ON rate_leases (holder);

-- The number of each replica's last lease sync: a sync sent again after
-- its answer was lost (same holder, same number) is not applied twice.
-- Rows of replicas gone for a day are dropped.
CREATE TABLE lease_syncs (
    holder TEXT PRIMARY KEY,
    seq    BIGINT NOT NULL,
    at     BIGINT NOT NULL
);
CREATE INDEX lease_syncs_at ON lease_syncs (at);

-- Every statement that appends to the change feed notifies channel
-- `ias_changes` when its transaction commits, so replicas read the feed at
-- once instead of at their next periodic check (which still runs, for a
-- notice lost while a replica was disconnected). `ias_sync_leases()`
-- notifies the same channel when a replica starts waiting for rate
-- credits that others hold, so they give back what they hold unused.
CREATE FUNCTION ias_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ias_changes', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER changes_notify AFTER INSERT ON changes
    FOR EACH STATEMENT EXECUTE FUNCTION ias_notify_change();

-- One replica's lease sync in one statement: the rules of
-- `ias_core::lease` (budget entries: `lease::apply`; rate entries: the
-- rate lease rule, with `rate::DEMAND_MS` = 1000 and the 60 s window),
-- then renewals, usage events, daily roll-ups and the holder's recalled
-- rate leases. Arrays describe the entries column by column; charges of
-- rate entry i have `c_entry = i` (from 1). Counter rows are created and
-- locked in one order (scope, id, period or kind), budgets before rates,
-- so overlapping syncs wait for each other instead of deadlocking; other
-- holders' leases are only taken back under their counter's lock, and
-- renewals skip rows another transaction holds.
--
-- A sync whose `p_seq` is not above the holder's last is a retry: it
-- applies no charge, give-back, grant or event, renews the holder's leases
-- and answers the current state.
--
-- Answers one row per budget entry (`budget`), per rate entry (`rate`),
-- per lease taken back from a stopped holder (`reclaimed`, for the log)
-- and per recalled lease (`recall`). A missing organization or user
-- raises SQLSTATE P0002 with the entity as message and its id as detail.
CREATE FUNCTION ias_sync_leases(
    p_holder TEXT, p_seq BIGINT, p_now BIGINT, p_expires BIGINT,
    b_scope TEXT[], b_id BIGINT[], b_period TEXT[], b_charge BIGINT[], b_give BIGINT[],
    b_want BIGINT[], b_need BIGINT[],
    r_scope TEXT[], r_id BIGINT[], r_kind TEXT[], r_give BIGINT[], r_want BIGINT[],
    r_need BIGINT[],
    c_entry INT[], c_at BIGINT[], c_amount BIGINT[],
    e_org BIGINT[], e_user BIGINT[], e_key BIGINT[], e_model TEXT[], e_period TEXT[],
    e_reserved BIGINT[], e_tokens BIGINT[], e_at BIGINT[],
    d_org BIGINT[], d_day TEXT[], d_user BIGINT[], d_model TEXT[], d_tokens BIGINT[],
    d_requests BIGINT[]
) RETURNS TABLE (
    o_part TEXT, o_ord INT, o_limit BIGINT, o_used BIGINT, o_held BIGINT, o_lease BIGINT,
    o_granted BIGINT, o_wait BIGINT, o_recall BOOLEAN, o_scope TEXT, o_scope_id BIGINT,
    o_kind TEXT
)
LANGUAGE plpgsql AS $$
DECLARE
    i INT;
    v_limit BIGINT;
    v_used BIGINT;
    v_held BIGINT;
    v_lease BIGINT;
    v_demand BIGINT;
    v_taken BIGINT;
    v_charge BIGINT;
    v_consumed BIGINT;
    v_give BIGINT;
    v_want BIGINT;
    v_must BIGINT;
    v_left BIGINT;
    v_granted BIGINT;
    v_short BIGINT;
    v_wait BIGINT;
    v_at BIGINT;
    v_amount BIGINT;
    v_row BIGINT;
    v_back BIGINT;
    v_seen BIGINT;
    v_retry BOOLEAN;
BEGIN
    -- A retry of a sync already applied changes nothing but the renewals.
    SELECT s.seq INTO v_seen FROM lease_syncs s WHERE s.holder = p_holder;
    v_retry := coalesce(v_seen >= p_seq, false);
    INSERT INTO lease_syncs AS s (holder, seq, at) VALUES (p_holder, p_seq, p_now)
    ON CONFLICT (holder) DO UPDATE SET seq = greatest(s.seq, excluded.seq), at = excluded.at;
    DELETE FROM lease_syncs s WHERE s.at < p_now - 86400000;

    -- Budget counters: create what is missing, then lock, in one order.
    IF cardinality(b_scope) > 0 THEN
        INSERT INTO usage_counters (scope, scope_id, period)
        SELECT t.s, t.n, t.p FROM unnest(b_scope, b_id, b_period) AS t (s, n, p)
        ORDER BY t.s, t.n, t.p
        ON CONFLICT DO NOTHING;
        PERFORM 1 FROM usage_counters c
        WHERE (c.scope, c.scope_id, c.period) IN
              (SELECT t.s, t.n, t.p FROM unnest(b_scope, b_id, b_period) AS t (s, n, p))
        ORDER BY c.scope, c.scope_id, c.period
        FOR UPDATE;
    END IF;

    FOR i IN 1 .. coalesce(cardinality(b_scope), 0) LOOP
        IF b_scope[i] = 'org' THEN
            SELECT o.monthly_token_budget INTO v_limit FROM organizations o WHERE o.id = b_id[i];
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = 'organization',
                    DETAIL = b_id[i]::TEXT;
            END IF;
        ELSE
            SELECT u.monthly_token_limit INTO v_limit FROM users u WHERE u.id = b_id[i];
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = 'user',
                    DETAIL = b_id[i]::TEXT;
            END IF;
        END IF;
        SELECT c.used_tokens, c.reserved_tokens INTO v_used, v_held FROM usage_counters c
        WHERE c.scope = b_scope[i] AND c.scope_id = b_id[i] AND c.period = b_period[i];
        IF b_want[i] > 0 AND NOT v_retry THEN
            WITH gone AS (
                DELETE FROM leases l
                WHERE l.scope = b_scope[i] AND l.scope_id = b_id[i] AND l.period = b_period[i]
                  AND l.holder <> p_holder AND l.expires_at <= p_now
                RETURNING l.tokens
            )
            SELECT coalesce(sum(gone.tokens), 0) INTO v_taken FROM gone;
            v_held := greatest(v_held - v_taken, 0);
            IF v_taken > 0 THEN
                RETURN QUERY SELECT 'reclaimed'::TEXT, i, NULL::BIGINT, NULL::BIGINT,
                    NULL::BIGINT, NULL::BIGINT, v_taken, NULL::BIGINT, false, b_scope[i],
                    b_id[i], 'tokens'::TEXT;
            END IF;
        END IF;
        SELECT l.tokens INTO v_lease FROM leases l
        WHERE l.scope = b_scope[i] AND l.scope_id = b_id[i] AND l.period = b_period[i]
          AND l.holder = p_holder;
        v_lease := coalesce(v_lease, 0);

        v_charge := CASE WHEN v_retry THEN 0 ELSE greatest(b_charge[i], 0) END;
        v_consumed := least(v_charge, v_lease);
        v_lease := v_lease - v_consumed;
        v_held := greatest(v_held - v_consumed, 0);
        v_used := v_used + v_charge;
        v_give := CASE WHEN v_retry THEN 0 ELSE least(greatest(b_give[i], 0), v_lease) END;
        v_lease := v_lease - v_give;
        v_held := greatest(v_held - v_give, 0);
        v_want := CASE WHEN v_retry THEN 0 ELSE greatest(b_want[i], 0) END;
        IF v_limit IS NULL THEN
            v_granted := v_want;
        ELSE
            v_left := greatest(v_limit - v_used - v_held, 0);
            v_must := least(greatest(b_need[i], 0), v_want);
            IF v_left <= v_must THEN
                v_granted := v_left;
            ELSE
                v_granted := v_must + least(v_want - v_must, (v_left - v_must) / 2);
            END IF;
        END IF;
        v_held := v_held + v_granted;
        v_lease := v_lease + v_granted;

        UPDATE usage_counters c SET used_tokens = v_used, reserved_tokens = v_held
        WHERE c.scope = b_scope[i] AND c.scope_id = b_id[i] AND c.period = b_period[i];
        IF v_lease > 0 THEN
            INSERT INTO leases (scope, scope_id, period, holder, tokens, expires_at)
            VALUES (b_scope[i], b_id[i], b_period[i], p_holder, v_lease, p_expires)
            ON CONFLICT (scope, scope_id, period, holder)
            DO UPDATE SET tokens = excluded.tokens, expires_at = excluded.expires_at;
        ELSE
            DELETE FROM leases l
            WHERE l.scope = b_scope[i] AND l.scope_id = b_id[i] AND l.period = b_period[i]
              AND l.holder = p_holder;
        END IF;
        RETURN QUERY SELECT 'budget'::TEXT, i, v_limit, v_used, v_held, v_lease, v_granted,
            NULL::BIGINT, false, NULL::TEXT, NULL::BIGINT, NULL::TEXT;
    END LOOP;

    -- Rate counters: create what is missing, then lock, in one order.
    IF cardinality(r_scope) > 0 THEN
        INSERT INTO rate_counters (scope, scope_id, kind)
        SELECT t.s, t.n, t.k FROM unnest(r_scope, r_id, r_kind) AS t (s, n, k)
        ORDER BY t.s, t.n, t.k
        ON CONFLICT DO NOTHING;
        PERFORM 1 FROM rate_counters c
        WHERE (c.scope, c.scope_id, c.kind) IN
              (SELECT t.s, t.n, t.k FROM unnest(r_scope, r_id, r_kind) AS t (s, n, k))
        ORDER BY c.scope, c.scope_id, c.kind
        FOR UPDATE;
    END IF;

    FOR i IN 1 .. coalesce(cardinality(r_scope), 0) LOOP
        SELECT CASE WHEN r_kind[i] = 'requests' THEN rl.rpm ELSE rl.tpm END INTO v_limit
        FROM rate_limits rl WHERE rl.scope = r_scope[i] AND rl.scope_id = r_id[i];
        SELECT c.used, c.held, c.demand_until INTO v_used, v_held, v_demand FROM rate_counters c
        WHERE c.scope = r_scope[i] AND c.scope_id = r_id[i] AND c.kind = r_kind[i];
        SELECT l.credits INTO v_lease FROM rate_leases l
        WHERE l.scope = r_scope[i] AND l.scope_id = r_id[i] AND l.kind = r_kind[i]
          AND l.holder = p_holder;
        v_lease := coalesce(v_lease, 0);

        -- 1. Grants come out of the lease; those still in the window join it.
        SELECT coalesce(sum(t.a), 0) INTO v_charge
        FROM unnest(c_entry, c_amount) AS t (e, a) WHERE t.e = i AND t.a > 0 AND NOT v_retry;
        v_consumed := least(v_charge, v_lease);
        v_lease := v_lease - v_consumed;
        v_held := greatest(v_held - v_consumed, 0);
        SELECT coalesce(sum(t.a), 0) INTO v_charge
        FROM unnest(c_entry, c_at, c_amount) AS t (e, at, a)
        WHERE t.e = i AND t.a > 0 AND t.at + 60000 > p_now AND NOT v_retry;
        v_used := v_used + v_charge;
        INSERT INTO rate_window AS w (scope, scope_id, kind, at, amount)
        SELECT r_scope[i], r_id[i], r_kind[i], t.at, sum(t.a)
        FROM unnest(c_entry, c_at, c_amount) AS t (e, at, a)
        WHERE t.e = i AND t.a > 0 AND t.at + 60000 > p_now AND NOT v_retry
        GROUP BY t.at ORDER BY t.at
        ON CONFLICT (scope, scope_id, kind, at) DO UPDATE SET amount = w.amount + excluded.amount;

        -- 2. Corrections move credits from the window back to the lease.
        FOR v_at, v_amount IN
            SELECT t.at, t.a FROM unnest(c_entry, c_at, c_amount) WITH ORDINALITY AS t (e, at, a, n)
            WHERE t.e = i AND t.a < 0 AND t.at + 60000 > p_now AND NOT v_retry ORDER BY t.n
        LOOP
            SELECT w.amount INTO v_row FROM rate_window w
            WHERE w.scope = r_scope[i] AND w.scope_id = r_id[i] AND w.kind = r_kind[i]
              AND w.at = v_at;
            v_back := least(-v_amount, coalesce(v_row, 0));
            IF v_back > 0 THEN
                UPDATE rate_window w SET amount = w.amount - v_back
                WHERE w.scope = r_scope[i] AND w.scope_id = r_id[i] AND w.kind = r_kind[i]
                  AND w.at = v_at;
                v_used := v_used - v_back;
                v_lease := v_lease + v_back;
                v_held := v_held + v_back;
            END IF;
        END LOOP;

        -- 3. Give back; 4. drop grants that left the window.
        v_give := CASE WHEN v_retry THEN 0 ELSE least(greatest(r_give[i], 0), v_lease) END;
        v_lease := v_lease - v_give;
        v_held := greatest(v_held - v_give, 0);
        WITH gone AS (
            DELETE FROM rate_window w
            WHERE w.scope = r_scope[i] AND w.scope_id = r_id[i] AND w.kind = r_kind[i]
              AND w.at <= p_now - 60000
            RETURNING w.amount
        )
        SELECT coalesce(sum(gone.amount), 0) INTO v_taken FROM gone;
        v_used := greatest(v_used - v_taken, 0);

        -- 5. Take back leases of holders that stopped a window's length ago.
        IF r_want[i] > 0 AND NOT v_retry THEN
            WITH gone AS (
                DELETE FROM rate_leases l
                WHERE l.scope = r_scope[i] AND l.scope_id = r_id[i] AND l.kind = r_kind[i]
                  AND l.holder <> p_holder AND l.expires_at <= p_now - 60000
                RETURNING l.credits
            )
            SELECT coalesce(sum(gone.credits), 0) INTO v_taken FROM gone;
            v_held := greatest(v_held - v_taken, 0);
            IF v_taken > 0 THEN
                RETURN QUERY SELECT 'reclaimed'::TEXT, i, NULL::BIGINT, NULL::BIGINT,
                    NULL::BIGINT, NULL::BIGINT, v_taken, NULL::BIGINT, false, r_scope[i],
                    r_id[i], r_kind[i];
            END IF;
        END IF;

        -- 6. Grant: what is needed whole or not at all, spare only without demand.
        v_want := CASE WHEN v_retry THEN 0 ELSE greatest(r_want[i], 0) END;
        IF v_limit IS NULL THEN
            v_granted := v_want;
        ELSE
            v_left := greatest(v_limit - v_used - v_held, 0);
            v_must := least(greatest(r_need[i], 0), v_want);
            IF v_left < v_must THEN
                v_granted := 0;
            ELSIF v_demand > p_now THEN
                v_granted := v_must;
            ELSE
                v_granted := v_must + least(v_want - v_must, (v_left - v_must) / 2);
            END IF;
        END IF;
        v_lease := v_lease + v_granted;
        v_held := v_held + v_granted;

        -- 7. Short of the need: when it fits, and demand if others hold credits.
        v_wait := NULL;
        IF v_limit IS NOT NULL AND v_granted < r_need[i] AND NOT v_retry THEN
            v_left := v_limit - v_used - v_held;
            v_short := r_need[i] - v_granted;
            IF v_left >= v_short THEN
                v_wait := 0;
            ELSE
                FOR v_at, v_amount IN
                    SELECT w.at, w.amount FROM rate_window w
                    WHERE w.scope = r_scope[i] AND w.scope_id = r_id[i] AND w.kind = r_kind[i]
                    ORDER BY w.at
                LOOP
                    v_left := v_left + v_amount;
                    IF v_left >= v_short THEN
                        v_wait := greatest(v_at + 60000 - p_now, 0);
                        EXIT;
                    END IF;
                END LOOP;
            END IF;
            IF r_want[i] > 0 AND v_held > v_lease THEN
                IF v_demand <= p_now THEN
                    -- New demand: wake the other replicas, which then sync and give back.
                    PERFORM pg_notify('ias_changes', 'recall');
                END IF;
                v_demand := greatest(v_demand, p_now + 1000);
            END IF;
        END IF;

        UPDATE rate_counters c SET used = v_used, held = v_held, demand_until = v_demand
        WHERE c.scope = r_scope[i] AND c.scope_id = r_id[i] AND c.kind = r_kind[i];
        IF v_lease > 0 THEN
            INSERT INTO rate_leases (holder, scope, scope_id, kind, credits, expires_at)
            VALUES (p_holder, r_scope[i], r_id[i], r_kind[i], v_lease, p_expires)
            ON CONFLICT (scope, scope_id, kind, holder)
            DO UPDATE SET credits = excluded.credits, expires_at = excluded.expires_at;
        ELSE
            DELETE FROM rate_leases l
            WHERE l.scope = r_scope[i] AND l.scope_id = r_id[i] AND l.kind = r_kind[i]
              AND l.holder = p_holder;
        END IF;
        RETURN QUERY SELECT 'rate'::TEXT, i, v_limit, v_used, v_held, v_lease, v_granted,
            v_wait, v_demand > p_now, NULL::TEXT, NULL::BIGINT, NULL::TEXT;
    END LOOP;

    -- Renew the holder's other leases, skipping rows another transaction holds.
    UPDATE leases l SET expires_at = p_expires
    WHERE (l.scope, l.scope_id, l.period, l.holder) IN
          (SELECT x.scope, x.scope_id, x.period, x.holder FROM leases x
           WHERE x.holder = p_holder FOR UPDATE SKIP LOCKED);
    UPDATE rate_leases l SET expires_at = p_expires
    WHERE (l.scope, l.scope_id, l.kind, l.holder) IN
          (SELECT x.scope, x.scope_id, x.kind, x.holder FROM rate_leases x
           WHERE x.holder = p_holder FOR UPDATE SKIP LOCKED);

    -- Usage events, and their daily roll-ups (given in key order).
    IF cardinality(e_org) > 0 AND NOT v_retry THEN
        INSERT INTO usage_events
            (org_id, user_id, key_id, model, period, reserved_tokens, tokens, created_at)
        SELECT * FROM unnest(e_org, e_user, e_key, e_model, e_period, e_reserved, e_tokens, e_at);
        INSERT INTO usage_daily AS d (org_id, day, user_id, model, tokens, requests)
        SELECT * FROM unnest(d_org, d_day, d_user, d_model, d_tokens, d_requests)
        ON CONFLICT (org_id, day, user_id, model)
        DO UPDATE SET tokens = d.tokens + excluded.tokens,
                      requests = d.requests + excluded.requests;
    END IF;

    -- The holder's rate leases on scopes under demand: give back what is unused.
    RETURN QUERY
        SELECT 'recall'::TEXT, 0, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT,
            NULL::BIGINT, NULL::BIGINT, true, l.scope, l.scope_id, l.kind
        FROM rate_leases l
        JOIN rate_counters c ON c.scope = l.scope AND c.scope_id = l.scope_id AND c.kind = l.kind
        WHERE l.holder = p_holder AND l.credits > 0 AND c.demand_until > p_now
        ORDER BY l.scope, l.scope_id, l.kind;
END;
$$;
