//! Test databases on the PostgreSQL server named by `IAS_TEST_POSTGRES_URL`.
//!
//! Each test gets a database of its own, `ias_test_<unix seconds>_<pid>_<n>`,
//! dropped when its [`TestDb`] is dropped, which happens also when the test
//! fails. Databases of a test process that was killed are dropped by the
//! next run once they are an hour old. Without a server the tests skip
//! with a notice, unless `IAS_REQUIRE_POSTGRES=1` (set by `.ci/run`).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support, shared by several test binaries"
)]

pub mod proxy;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ias_core::url::redact;
use sqlx::{Connection, PgConnection};

/// The server used when `IAS_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const PREFIX: &str = "ias_test_";
const STALE_AFTER: Duration = Duration::from_secs(3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The maintenance database URL of the test server.
pub fn server_url() -> String {
    std::env::var("IAS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn required() -> bool {
    std::env::var("IAS_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

async fn connect(url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}_{}_{n}", unix_seconds(), std::process::id())
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("IAS_TEST_POSTGRES_URL is a URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

/// Drops test databases left by killed runs: ours by name, and over an hour old.
///
/// A plain `DROP DATABASE` fails while anyone is connected, so a database
/// still in use is left alone.
async fn drop_stale(admin: &mut PgConnection) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'ias\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    let cutoff = unix_seconds().saturating_sub(STALE_AFTER.as_secs());
    for name in names {
        let Some(created) = created_at(&name) else {
            continue;
        };
        if created < cutoff {
            let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .execute(&mut *admin)
                .await;
            eprintln!("dropping stale test database `{name}`: {dropped:?}");
        }
    }
}

/// The creation time in a name made by [`unique_name`].
fn created_at(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut parts = rest.split('_');
    let seconds = parts.next()?.parse().ok()?;
    let _pid: u32 = parts.next()?.parse().ok()?;
    let _n: u64 = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(seconds)
}

/// A database of one test, dropped (with every connection to it) when this is dropped.
pub struct TestDb {
    server: String,
    name: String,
    url: String,
}

impl TestDb {
    /// Creates a database, or `None` with a notice when the server is unreachable.
    ///
    /// # Panics
    ///
    /// When the server is unreachable and `IAS_REQUIRE_POSTGRES=1`.
    pub async fn create() -> Option<TestDb> {
        let server = server_url();
        let mut admin = match connect(&server).await {
            Ok(conn) => conn,
            Err(err) if required() => panic!(
                "PostgreSQL at `{}` is unreachable and IAS_REQUIRE_POSTGRES=1: {err}",
                redact(&server)
            ),
            Err(err) => {
                eprintln!(
                    "skipped: PostgreSQL at `{}` is unreachable ({err}); \
                     set IAS_TEST_POSTGRES_URL to run the PostgreSQL tests",
                    redact(&server)
                );
                return None;
            }
        };
        drop_stale(&mut admin).await;
        let name = unique_name();
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.ok();
        let url = with_database(&server, &name);
        Some(TestDb { server, name, url })
    }

    /// The URL of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A plain connection to this test's database, for raw SQL.
    pub async fn connect(&self) -> PgConnection {
        connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    /// Drops the database from a thread of its own: this may run inside a
    /// runtime (at the end of a test) or while a failed test unwinds.
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = connect(&server).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
                admin.close().await.map_err(|e| e.to_string())
            })
        });
        match dropping.join() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("could not drop test database `{}`: {err}", self.name),
            Err(_) => eprintln!("could not drop test database `{}`", self.name),
        }
    }
}

#[test]
fn names_carry_their_creation_time() {
    let name = unique_name();
    let created = created_at(&name).unwrap();
    assert!(created + 5 >= unix_seconds());
    assert_eq!(created_at("ias_test_other"), None);
    assert_eq!(created_at("ias_test_1_2_3_4"), None);
    let url = with_database(
        "postgres://u:p@127.0.0.1:5432/postgres?sslmode=disable",
        "x",
    );
    assert_eq!(url, "postgres://u:p@127.0.0.1:5432/x?sslmode=disable");
}
