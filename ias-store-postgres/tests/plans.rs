//! Query plans at scale: every hot lookup and paged list the store runs
//! reads the big tables through an index.
//!
//! The test fills a database of its own with tens of thousands of users,
//! keys, usage rows, audit entries, changes and leases, runs `ANALYZE`, and
//! runs each statement under `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` (in
//! a transaction it rolls back), with arguments bound as the store binds
//! them. A statement fails the test when its plan scans a big table from
//! end to end (`Seq Scan`), reads more than a thousand rows only to discard
//! them, or, unless it adds up an organization's usage, reads more pages
//! than its rows need; a page also fails when it sorts more than a thousand
//! rows before its limit applies.
//!
//! The statements come from the store itself (`ias_store_postgres::queries`),
//! so the test follows the code. Lease lookups run inside
//! `ias_sync_leases()` (migration 5), where `EXPLAIN` cannot see; they are
//! checked as the same statements with the function's variables as
//! arguments, after checking that the function still holds them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestDb;
use ias_store_postgres::{MIGRATIONS, PostgresStore, queries};
use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Acquire, Executor, PgConnection, Postgres, Row};

/// Tables that grow with organizations, users, keys and traffic.
const BIG_TABLES: &[&str] = &[
    "users",
    "api_keys",
    "usage_counters",
    "usage_events",
    "usage_daily",
    "leases",
    "rate_counters",
    "rate_window",
    "rate_leases",
    "lease_syncs",
    "audit_log",
    "changes",
];

/// Users in all: 10,000 in `org-1`, 150 in each of the 199 others.
const USERS: i64 = 10_000 + 199 * 150;

/// Rows enough that the planner prefers an index wherever one applies:
/// 200 organizations, one of them big, of about 40,000 users created in
/// turns, each organization's spread evenly (every 50th removed), two keys each, usage in two periods, 50,000 audit entries
/// (half of them the big organization's, one in 500 a `key.revoke`), the
/// change feed of every insert, and leases of 20 governors.
const FILL: &str = "
INSERT INTO organizations (slug, monthly_token_budget, timezone, created_at, updated_at)
SELECT 'org-' || g, 1000000, 'UTC', 0, 0 FROM generate_series(1, 200) g;

INSERT INTO users (org_id, email, role, created_at, updated_at, removed_at)
SELECT o.id, 'u' || g || '@' || o.slug || '.io', 'member', 0, 0,
       CASE WHEN g % 50 = 0 THEN 1 END
FROM organizations o,
     LATERAL (SELECT CASE WHEN o.slug = 'org-1' THEN 10000 ELSE 150 END AS n) size,
     generate_series(1, size.n) g
ORDER BY g::FLOAT8 / size.n, o.id;

INSERT INTO api_keys (user_id, org_id, key_hash, prefix, created_at)
SELECT u.id, u.org_id, sha256(convert_to(u.id || ':' || k, 'UTF8')), 'ias_test', k
FROM users u, generate_series(1, 2) k;

INSERT INTO org_allowed_models (org_id, model, created_at)
SELECT o.id, m, 0 FROM organizations o,
       unnest(ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-3', 'anthropic/*', 'mistral']) m;

INSERT INTO rate_limits (scope, scope_id, rpm, tpm, updated_at)
SELECT 'user', u.id, 60, NULL, 0 FROM users u WHERE u.id % 4 = 0;

INSERT INTO usage_counters (scope, scope_id, period, used_tokens)
SELECT 'user', u.id, p, 10 FROM users u, unnest(ARRAY['2026-11', '2026-12']) p;
INSERT INTO usage_counters (scope, scope_id, period, used_tokens)
SELECT 'org', o.id, p, 10 FROM organizations o, unnest(ARRAY['2026-11', '2026-12']) p;

INSERT INTO usage_events
    (org_id, user_id, key_id, model, period, reserved_tokens, tokens, created_at)
SELECT k.org_id, k.user_id, k.id, m, '2026-12', 10, 10, 0
FROM api_keys k, unnest(ARRAY['gpt-4o', 'claude-3']) m;

INSERT INTO usage_daily (org_id, day, user_id, model, tokens, requests)
SELECT u.org_id, '2026-12-' || lpad(d::text, 2, '0'), u.id, m, 10, 1
FROM users u, generate_series(1, 10) d, unnest(ARRAY['gpt-4o', 'claude-3']) m
WHERE u.id % 4 = 0;

INSERT INTO audit_log
    (id, at, actor, source, action, org_id, target, target_id, changes, prev_hash, hash)
SELECT g, g * 1000, 'operator:plans', 'cli',
       CASE WHEN g % 500 = 0 THEN 'key.revoke'
            ELSE (ARRAY['user.create', 'key.create', 'model.allow'])[g % 3 + 1] END,
       CASE WHEN g % 2 = 0 THEN 1 ELSE g % 200 + 1 END, 'user:u@x.io', g, '{}', '', ''
FROM generate_series(1, 50000) g;

INSERT INTO leases (holder, scope, scope_id, period, tokens, expires_at)
SELECT 'governor-' || (u.id % 20), 'user', u.id, '2026-12', 100, 0
FROM users u WHERE u.id % 2 = 0;

INSERT INTO rate_counters (scope, scope_id, kind, used, held)
SELECT 'user', u.id, 'requests', 1, 1 FROM users u WHERE u.id % 2 = 0;
INSERT INTO rate_window (scope, scope_id, kind, at, amount)
SELECT 'user', u.id, 'requests', 1000, 1 FROM users u WHERE u.id % 2 = 0;
INSERT INTO rate_leases (holder, scope, scope_id, kind, credits, expires_at)
SELECT 'governor-' || (u.id % 20), 'user', u.id, 'requests', 1, 0
FROM users u WHERE u.id % 2 = 0;
INSERT INTO lease_syncs (holder, seq, at)
SELECT 'governor-' || g, 1, g FROM generate_series(1, 2000) g;

INSERT INTO gitops_sync_state (org_id, repo_url, git_ref, path, status, reason, message,
                               enabled_at, updated_at)
SELECT o.id, 'https://git.example.com/x.git', 'main', 'ias.yaml', 'synced', 'synced', '', 0, 0
FROM organizations o WHERE o.id % 2 = 0;
";

/// An argument, bound as the store binds it.
#[derive(Clone)]
enum Arg {
    Int(i64),
    Text(String),
    Ints(Vec<i64>),
    Texts(Vec<&'static str>),
}

fn bind<'q>(
    query: Query<'q, Postgres, PgArguments>,
    arg: &Arg,
) -> Query<'q, Postgres, PgArguments> {
    match arg.clone() {
        Arg::Int(n) => query.bind(n),
        Arg::Text(s) => query.bind(s),
        Arg::Ints(v) => query.bind(v),
        Arg::Texts(v) => query.bind(v),
    }
}

fn text(value: &str) -> Arg {
    Arg::Text(value.to_owned())
}

/// How much of the tables a statement may read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// About the rows it returns, found through an index.
    Rows,
    /// A page: as `Rows`, and mostly handed over in key order by an index,
    /// so the read stops at the limit instead of sorting all it found.
    Page,
    /// Every row it adds up (one organization's, in one period): it only
    /// must not scan a big table from end to end.
    Sum,
}

/// A statement to explain: what it is, its text, its arguments, and how
/// much it may read.
struct Statement {
    name: String,
    sql: String,
    args: Vec<Arg>,
    reads: Reads,
}

fn statement(reads: Reads, name: &str, sql: impl Into<String>, args: Vec<Arg>) -> Statement {
    Statement {
        name: name.to_owned(),
        sql: sql.into(),
        args,
        reads,
    }
}

fn lookup(name: &str, sql: impl Into<String>, args: Vec<Arg>) -> Statement {
    statement(Reads::Rows, name, sql, args)
}

fn page(name: &str, sql: impl Into<String>, args: Vec<Arg>) -> Statement {
    statement(Reads::Page, name, sql, args)
}

fn sum(name: &str, sql: impl Into<String>, args: Vec<Arg>) -> Statement {
    statement(Reads::Sum, name, sql, args)
}

/// Ids from the middle of the big organization, as a live system would look up.
struct Sample {
    org: i64,
    /// An organization of 150 users, as most are.
    typical_org: i64,
    user: i64,
    key: i64,
    email: String,
}

async fn sample(conn: &mut PgConnection) -> Sample {
    let row = sqlx::query(
        "SELECT u.org_id, u.id, u.email, k.id FROM users u JOIN api_keys k ON k.user_id = u.id
         JOIN organizations o ON o.id = u.org_id
         WHERE o.slug = 'org-1' AND u.id % 4 = 0 ORDER BY u.id OFFSET 2500 LIMIT 1",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let typical_org = sqlx::query_scalar("SELECT id FROM organizations WHERE slug = 'org-100'")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    Sample {
        org: row.get(0),
        typical_org,
        user: row.get(1),
        email: row.get(2),
        key: row.get(3),
    }
}

/// The store's own statements, as it runs them.
fn store_statements(s: &Sample) -> Vec<Statement> {
    use Arg::Int;
    let december = || text("2026-12");
    let mut all = vec![
        lookup(
            "user by email",
            queries::user_by_email_sql(),
            vec![text(&s.email)],
        ),
        lookup("user by id", queries::user_by_id_sql(), vec![Int(s.user)]),
        lookup("key by id", queries::key_by_id_sql(), vec![Int(s.key)]),
        lookup(
            "org by slug",
            queries::org_by_slug_sql(),
            vec![text("org-100")],
        ),
        page(
            "orgs page",
            queries::list_orgs_sql(),
            vec![Int(s.org), Int(101)],
        ),
        page(
            "users page, first",
            queries::list_users_sql(),
            vec![Int(s.org), Int(0), Int(101)],
        ),
        page(
            "users page, later",
            queries::list_users_sql(),
            vec![Int(s.org), Int(s.user), Int(101)],
        ),
        page(
            "keys page, first",
            queries::list_keys_sql(),
            vec![Int(s.user), Int(i64::MAX), Int(101)],
        ),
        page(
            "keys page, later",
            queries::list_keys_sql(),
            vec![Int(s.user), Int(s.key), Int(101)],
        ),
        lookup(
            "models page",
            queries::LIST_MODELS,
            vec![Int(s.org), text("claude-3"), Int(101)],
        ),
        lookup(
            "gitops states page",
            queries::list_states_sql(),
            vec![Int(s.org), Int(101)],
        ),
        sum(
            "daily usage page of an org",
            queries::ORG_DAYS,
            vec![
                Int(s.typical_org),
                text("2026-12-01"),
                text("2026-12-31"),
                text(""),
                text(""),
                Int(101),
            ],
        ),
        page(
            "daily usage page of a user",
            queries::USER_DAYS,
            vec![
                Int(s.org),
                text("2026-12-01"),
                text("2026-12-31"),
                text("2026-12-03"),
                text("gpt-4o"),
                Int(101),
                Int(s.user),
            ],
        ),
        lookup(
            "usage counter",
            queries::COUNTER,
            vec![text("user"), Int(s.user), december()],
        ),
        lookup(
            "user limit",
            queries::USER_LIMIT,
            vec![Int(s.user), Int(s.org)],
        ),
        lookup(
            "usage report of one user",
            queries::one_user_usage_sql(),
            vec![Int(s.org), december(), Int(s.user)],
        ),
        page(
            "usage report, page of users",
            queries::users_usage_sql(),
            vec![Int(s.org), december(), Int(s.user), Int(101)],
        ),
        lookup(
            "usage report per model, one user",
            queries::USER_MODEL_USAGE,
            vec![Int(s.org), december(), Int(s.user)],
        ),
        sum(
            "usage report per model, whole org",
            queries::MODEL_USAGE,
            vec![Int(s.org), december()],
        ),
        lookup("change feed head", queries::CHANGE_SEQ, vec![]),
        page(
            "change feed read",
            queries::CHANGES_SINCE,
            vec![Int(100_000), Int(5_000)],
        ),
        page(
            "cache users page",
            queries::user_page_sql(),
            vec![Int(s.user), Int(1_000)],
        ),
        page(
            "cache keys page",
            queries::key_page_sql(),
            vec![Int(s.key), Int(1_000)],
        ),
        lookup("newest audit entry", queries::LAST_ENTRY, vec![]),
    ];
    all.extend(audit_statements(s));
    all
}

/// A page of the audit log under every combination of filters, with an
/// action that is rare and a time that only the newest entries are past.
fn audit_statements(s: &Sample) -> Vec<Statement> {
    let mut all = Vec::new();
    for org in [false, true] {
        for since in [false, true] {
            for action in [false, true] {
                let mut args = vec![Arg::Int(40_000), Arg::Int(101)];
                let mut shown = Vec::new();
                if org {
                    args.push(Arg::Int(s.org));
                    shown.push("org");
                }
                if since {
                    args.push(Arg::Int(49_990_000));
                    shown.push("since");
                }
                if action {
                    args.push(text("key.revoke"));
                    shown.push("action");
                }
                let name = format!("audit page [{}]", shown.join(", "));
                let sql = queries::audit_search_sql(org, since, action);
                // Since a time, the entries are found by time, then sorted.
                let reads = if since { Reads::Rows } else { Reads::Page };
                all.push(statement(reads, &name, sql, args));
            }
        }
    }
    all
}

/// The lease lookups of `ias_sync_leases()`, with its variables as arguments,
/// each with the text that shows the function still runs it.
fn lease_statements(s: &Sample) -> Vec<(Statement, &'static str)> {
    use Arg::{Int, Ints, Texts};
    vec![
        (
            lookup(
                "a holder's last sync",
                "SELECT s.seq FROM lease_syncs s WHERE s.holder = $1",
                vec![text("governor-7")],
            ),
            "FROM lease_syncs s WHERE s.holder = p_holder",
        ),
        (
            lookup(
                "syncs of gone holders",
                "DELETE FROM lease_syncs s WHERE s.at < $1 - 86400000",
                vec![Int(86_400_010)],
            ),
            "DELETE FROM lease_syncs s WHERE s.at < p_now - 86400000",
        ),
        (
            lookup(
                "counters locked by a sync",
                "SELECT 1 FROM usage_counters c
                 WHERE (c.scope, c.scope_id, c.period) IN
                       (SELECT t.s, t.n, t.p FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[])
                        AS t (s, n, p))
                 ORDER BY c.scope, c.scope_id, c.period
                 FOR UPDATE",
                vec![
                    Texts(vec!["org", "user"]),
                    Ints(vec![s.org, s.user]),
                    Texts(vec!["2026-12", "2026-12"]),
                ],
            ),
            "WHERE (c.scope, c.scope_id, c.period) IN",
        ),
        (
            lookup(
                "expired leases of other holders",
                "DELETE FROM leases l
                 WHERE l.scope = $1 AND l.scope_id = $2 AND l.period = $3
                   AND l.holder <> $4 AND l.expires_at <= $5",
                vec![
                    text("user"),
                    Int(s.user),
                    text("2026-12"),
                    text("governor-1"),
                    Int(1_000),
                ],
            ),
            "AND l.holder <> p_holder AND l.expires_at <= p_now",
        ),
        (
            lookup(
                "a holder's lease",
                "SELECT l.tokens FROM leases l
                 WHERE l.scope = $1 AND l.scope_id = $2 AND l.period = $3 AND l.holder = $4",
                vec![
                    text("user"),
                    Int(s.user),
                    text("2026-12"),
                    text("governor-1"),
                ],
            ),
            "SELECT l.tokens INTO v_lease FROM leases l",
        ),
        (
            lookup(
                "a holder's rate lease",
                "SELECT l.credits FROM rate_leases l
                 WHERE l.scope = $1 AND l.scope_id = $2 AND l.kind = $3 AND l.holder = $4",
                vec![
                    text("user"),
                    Int(s.user),
                    text("requests"),
                    text("governor-1"),
                ],
            ),
            "SELECT l.credits INTO v_lease FROM rate_leases l",
        ),
        (
            lookup(
                "a scope's rate window",
                "SELECT w.at, w.amount FROM rate_window w
                 WHERE w.scope = $1 AND w.scope_id = $2 AND w.kind = $3 ORDER BY w.at",
                vec![text("user"), Int(s.user), text("requests")],
            ),
            "WHERE w.scope = r_scope[i] AND w.scope_id = r_id[i] AND w.kind = r_kind[i]",
        ),
        (
            lookup(
                "renewing a holder's leases",
                "UPDATE leases l SET expires_at = $2
                 WHERE (l.scope, l.scope_id, l.period, l.holder) IN
                       (SELECT x.scope, x.scope_id, x.period, x.holder FROM leases x
                        WHERE x.holder = $1 FOR UPDATE SKIP LOCKED)",
                vec![text("governor-3"), Int(5_000)],
            ),
            "WHERE x.holder = p_holder FOR UPDATE SKIP LOCKED);",
        ),
        (
            lookup(
                "renewing a holder's rate leases",
                "UPDATE rate_leases l SET expires_at = $2
                 WHERE (l.scope, l.scope_id, l.kind, l.holder) IN
                       (SELECT x.scope, x.scope_id, x.kind, x.holder FROM rate_leases x
                        WHERE x.holder = $1 FOR UPDATE SKIP LOCKED)",
                vec![text("governor-3"), Int(5_000)],
            ),
            "SELECT x.scope, x.scope_id, x.kind, x.holder FROM rate_leases x",
        ),
        (
            lookup(
                "a holder's recalled rate leases",
                "SELECT l.scope, l.scope_id, l.kind FROM rate_leases l
                 JOIN rate_counters c
                   ON c.scope = l.scope AND c.scope_id = l.scope_id AND c.kind = l.kind
                 WHERE l.holder = $1 AND l.credits > 0 AND c.demand_until > $2
                 ORDER BY l.scope, l.scope_id, l.kind",
                vec![text("governor-3"), Int(5_000)],
            ),
            "WHERE l.holder = p_holder AND l.credits > 0 AND c.demand_until > p_now",
        ),
    ]
}

/// Every sequential scan of a big table in a JSON plan node and its children.
fn seq_scans(node: &Value, found: &mut Vec<String>) {
    let kind = node["Node Type"].as_str().unwrap_or_default();
    let relation = node["Relation Name"].as_str().unwrap_or_default();
    if kind == "Seq Scan" && BIG_TABLES.contains(&relation) {
        found.push(format!("Seq Scan on {relation}"));
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        seq_scans(child, found);
    }
}

/// Rows a page may read and sort before its limit applies; a page that
/// sorts more should come in key order from an index.
const MAX_SORTED: f64 = 1_000.0;

/// How many rows the sort on a plan's driving side (the first input of
/// each node, down to the scan) sorted, if there is one.
fn sorted_rows(node: &Value) -> Option<f64> {
    match node["Node Type"].as_str() {
        Some("Sort" | "Incremental Sort") => node["Plans"][0]["Actual Rows"].as_f64(),
        _ => node["Plans"]
            .as_array()
            .and_then(|children| children.first())
            .and_then(sorted_rows),
    }
}

/// Rows of a big table that one statement may read only to discard them
/// (`Rows Removed by Filter`): more means the index does not fit the query.
const MAX_DISCARDED: f64 = 1_000.0;

/// Rows of big tables that a plan read and then discarded by a filter.
fn discarded(node: &Value, found: &mut Vec<String>) {
    let relation = node["Relation Name"].as_str().unwrap_or_default();
    let loops = node["Actual Loops"].as_f64().unwrap_or(1.0);
    let removed = ["Rows Removed by Filter", "Rows Removed by Index Recheck"]
        .iter()
        .filter_map(|field| node[*field].as_f64())
        .sum::<f64>()
        * loops;
    if BIG_TABLES.contains(&relation) && removed > MAX_DISCARDED {
        found.push(format!("{removed} rows of {relation} read and discarded"));
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        discarded(child, found);
    }
}

/// Pages (8 kB blocks) a statement that reads about its rows may touch:
/// a few for the index and the row of each row returned, with room for
/// what the lookups of each row read beside it.
fn block_budget(rows: f64) -> f64 {
    32.0 + 16.0 * rows
}

/// What is wrong with how `plan` ran `statement`, if anything.
fn faults(statement: &Statement, plan: &Value) -> Vec<String> {
    let mut found = Vec::new();
    seq_scans(plan, &mut found);
    discarded(plan, &mut found);
    if statement.reads == Reads::Sum {
        return found;
    }
    let blocks = ["Shared Hit Blocks", "Shared Read Blocks"]
        .iter()
        .filter_map(|field| plan[*field].as_f64())
        .sum::<f64>();
    let rows = plan["Actual Rows"].as_f64().unwrap_or_default();
    if blocks > block_budget(rows) {
        found.push(format!("{blocks} pages read for {rows} rows"));
    }
    if let Some(sorted) = sorted_rows(plan).filter(|_| statement.reads == Reads::Page)
        && sorted > MAX_SORTED
    {
        found.push(format!("{sorted} rows read and sorted for one page"));
    }
    found
}

/// The plan PostgreSQL picks for `statement`, run, as JSON; whatever the
/// statement changes is rolled back.
async fn explain(conn: &mut PgConnection, statement: &Statement) -> Value {
    let sql = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}", statement.sql);
    let mut query = sqlx::query(&sql);
    for arg in &statement.args {
        query = bind(query, arg);
    }
    let mut tx = conn.begin().await.unwrap();
    let row = query
        .fetch_one(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("cannot explain {}: {e}", statement.name));
    tx.rollback().await.unwrap();
    // `json` comes as its text; sqlx is built without its JSON types.
    let text: String = row.try_get_unchecked(0).unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn fill(conn: &mut PgConnection) {
    conn.execute(FILL).await.unwrap();
    sqlx::query("ANALYZE").execute(&mut *conn).await.unwrap();
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(users, USERS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_queries_read_big_tables_through_indexes() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::open(db.url()).await.unwrap();
    store.close().await;
    let mut conn = db.connect().await;
    fill(&mut conn).await;
    let sample = sample(&mut conn).await;

    let function = MIGRATIONS[4].sql;
    let mut statements = store_statements(&sample);
    for (statement, shown_by) in lease_statements(&sample) {
        assert!(
            function.contains(shown_by),
            "ias_sync_leases() no longer runs `{shown_by}` ({}): update this test",
            statement.name
        );
        statements.push(statement);
    }

    let mut faulty = Vec::new();
    for statement in &statements {
        let plan = explain(&mut conn, statement).await;
        let found = faults(statement, &plan[0]["Plan"]);
        if !found.is_empty() {
            faulty.push(format!(
                "{}: {}\n{}\n{:#}",
                statement.name,
                found.join("; "),
                statement.sql,
                plan
            ));
        }
    }
    assert!(
        faulty.is_empty(),
        "{} statement(s) read more than their rows:\n\n{}",
        faulty.len(),
        faulty.join("\n\n")
    );
}
