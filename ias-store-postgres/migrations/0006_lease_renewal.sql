-- Lease renewal renews only the leases past half their life.
--
-- Before, every sync renewed every lease its holder had: a replica holding
-- leases for thousands of users rewrote all of them on each flush (five
-- times a second). Now a sync renews only the holder's leases that would
-- expire by the midpoint of `now` and the new expiry. After any sync every
-- lease of the holder still outlives that midpoint, which is all a governor
-- relies on: it grants from its leases only until half the lease time has
-- passed since its last sync. A lease in use is rewritten about once per half
-- lease time instead of once per sync.
--
-- `ias_sync_leases` is replaced whole (same signature); only its renewal step
-- differs from migration 5. The holder indexes gain the expiry, so the
-- renewal reads just the rows it rewrites.

DROP INDEX leases_holder;
CREATE INDEX leases_holder_expiry ON leases (holder, expires_at);
DROP INDEX rate_leases_holder;
CREATE INDEX rate_leases_holder_expiry ON rate_leases (holder, expires_at);

CREATE OR REPLACE FUNCTION ias_sync_leases(
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
    v_mid BIGINT;
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

    -- Renew the holder's other leases past half their life (expiring by the
    -- midpoint of now and p_expires), skipping rows another transaction holds.
    v_mid := p_now + (p_expires - p_now) / 2;
    UPDATE leases l SET expires_at = p_expires
    WHERE (l.scope, l.scope_id, l.period, l.holder) IN
          (SELECT x.scope, x.scope_id, x.period, x.holder FROM leases x
           WHERE x.holder = p_holder AND x.expires_at <= v_mid FOR UPDATE SKIP LOCKED);
    UPDATE rate_leases l SET expires_at = p_expires
    WHERE (l.scope, l.scope_id, l.kind, l.holder) IN
          (SELECT x.scope, x.scope_id, x.kind, x.holder FROM rate_leases x
           WHERE x.holder = p_holder AND x.expires_at <= v_mid FOR UPDATE SKIP LOCKED);

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
