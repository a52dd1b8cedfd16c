//! A database of one test on the PostgreSQL server named by
//! `IAS_TEST_POSTGRES_URL`, dropped when the test ends, passed or failed.
//!
//! Names follow the PostgreSQL store's tests (`ias_test_<unix seconds>_<pid>_<n>`),
//! whose clean-up of databases left by killed runs therefore covers these
//! too. Without a server the tests that ask for one skip with a notice,
//! unless `IAS_REQUIRE_POSTGRES=1`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ias_core::url::redact;
use sqlx::{Connection, PgConnection};

/// The server used when `IAS_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

async fn connect(url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("ias_test_{seconds}_{}_{n}", std::process::id())
}

/// `url` with its database replaced by `name`, keeping any query.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{scheme}://{authority}/{name}{query}")
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
        let server =
            std::env::var("IAS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let required = std::env::var("IAS_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
        let mut admin = match connect(&server).await {
            Ok(conn) => conn,
            Err(err) => {
                let notice = format!("PostgreSQL at `{}` is unreachable: {err}", redact(&server));
                assert!(!required, "{notice}, and IAS_REQUIRE_POSTGRES=1");
                eprintln!("skipped: {notice}; set IAS_TEST_POSTGRES_URL to run this test");
                return None;
            }
        };
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
}

impl Drop for TestDb {
    /// Drops the database from a thread of its own, with a runtime of its
    /// own: this may run inside the test's runtime, or while a test unwinds.
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
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
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database `{}`: {dropped:?}", self.name);
        }
    }
}
