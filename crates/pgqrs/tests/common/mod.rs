//! Test isolation for the conformance suite.
//!
//! * [`TestDb::sqlite`]: a fresh SQLite file (`sqlite://{tmp}/t.db`) in a temporary directory
//!   that lives as long as the `TestDb`.
//! * [`TestDb::turso`]: a fresh Turso file (`turso://{tmp}/t.db`) in a temporary directory,
//!   like SQLite.
//! * [`TestDb::postgres`]: the server in `PGQRS_TEST_DSN`, with a fresh schema per test
//!   (`?schema=t_<unix-secs>_<random>`). The schema is dropped when the `TestDb` is dropped —
//!   also when the case panicked — and, as a safety net, every run first drops the `t_*`
//!   schemas older than an hour that earlier (killed) runs left behind.
//!
//! When `PGQRS_TEST_DSN` is unset, PostgreSQL cases print a skip notice and pass, except under
//! `CI=true`, where they fail: CI must never silently skip a backend.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgqrs::{Error, Store};

/// Which backend a [`TestDb`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    Turso,
}

/// One test's private database.
pub struct TestDb {
    kind: Kind,
    /// The connection string handed to pgqrs (PostgreSQL: with `schema=...`).
    dsn: String,
    /// PostgreSQL: the server DSN without our schema parameter; SQLite: same as `dsn`.
    raw_dsn: String,
    /// PostgreSQL: the test's schema.
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

/// Schemas created by this suite start with this.
const SCHEMA_PREFIX: &str = "t_";
/// Leftover schemas older than this are dropped at the start of a run.
const STALE_AFTER_SECS: u64 = 3600;

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `base` with one more query parameter.
pub fn add_param(base: &str, param: &str) -> String {
    if param.is_empty() {
        base.to_string()
    } else if base.contains('?') {
        format!("{base}&{param}")
    } else {
        format!("{base}?{param}")
    }
}

/// The server DSN in `var`; `None` (skip, with a notice) when it is unset, except under
/// `CI=true`, where a case that cannot reach its server fails.
#[cfg(feature = "postgres")]
fn server_dsn(var: &str, what: &str, example: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(s) if !s.trim().is_empty() => Some(s),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
                panic!("{var} is not set and CI=true: {what} cases must run under CI (export {var}={example})");
            }
            eprintln!("SKIPPED: {what} case (set {var}={example} to run it)");
            None
        }
    }
}

impl TestDb {
    /// A fresh SQLite database file. Always available.
    pub async fn sqlite() -> Option<TestDb> {
        let dir = tempfile::Builder::new()
            .prefix("pgqrs-conformance-")
            .tempdir()
            .expect("create a temporary directory");
        let dsn = format!("sqlite://{}/t.db", dir.path().display());
        Some(TestDb {
            kind: Kind::Sqlite,
            raw_dsn: dsn.clone(),
            dsn,
            schema: None,
            _dir: Some(dir),
        })
    }

    /// A fresh Turso database file. Always available (feature `turso`).
    pub async fn turso() -> Option<TestDb> {
        let dir = tempfile::Builder::new()
            .prefix("pgqrs-conformance-")
            .tempdir()
            .expect("create a temporary directory");
        let dsn = format!("turso://{}/t.db", dir.path().display());
        Some(TestDb {
            kind: Kind::Turso,
            raw_dsn: dsn.clone(),
            dsn,
            schema: None,
            _dir: Some(dir),
        })
    }

    /// A fresh schema on the server in `PGQRS_TEST_DSN`; `None` (skip) when it is unset,
    /// unless `CI=true`.
    #[cfg(feature = "postgres")]
    pub async fn postgres() -> Option<TestDb> {
        let server = server_dsn(
            "PGQRS_TEST_DSN",
            "PostgreSQL",
            "postgresql://user@host:5432/db",
        )?;
        sweep_stale_schemas(&server).await;
        let schema = format!("{SCHEMA_PREFIX}{}_{:08x}", unix_secs(), fastrand::u32(..));
        Some(TestDb {
            kind: Kind::Postgres,
            dsn: add_param(&server, &format!("schema={schema}")),
            raw_dsn: server,
            schema: Some(schema),
            _dir: None,
        })
    }

    /// A fresh schema on the server in `PGQRS_TEST_DSN`, reached through the PgBouncer in
    /// `PGQRS_TEST_PGBOUNCER_DSN` (session pooling, in front of that server) with
    /// `statement_cache=false&notify=false` (unnamed statements, workers that poll). Raw SQL
    /// and the schema's cleanup go straight to the server. `None` (skip) when it is unset,
    /// unless `CI=true` (`.ci/run` installs and starts PgBouncer).
    #[cfg(feature = "postgres")]
    pub async fn pgbouncer() -> Option<TestDb> {
        let bouncer = server_dsn(
            "PGQRS_TEST_PGBOUNCER_DSN",
            "PgBouncer",
            "postgresql://user@host:6432/db (.ci/pgbouncer starts one)",
        )?;
        let mut db = TestDb::postgres().await?;
        let schema = db
            .schema
            .clone()
            .expect("a PostgreSQL test database has a schema");
        db.dsn = add_param(
            &bouncer,
            &format!("schema={schema}&statement_cache=false&notify=false"),
        );
        Some(db)
    }

    /// Another fresh database on the same backend as `db`.
    pub async fn same_kind(db: &TestDb) -> TestDb {
        match db.kind {
            Kind::Sqlite => TestDb::sqlite().await.expect("sqlite"),
            Kind::Turso => TestDb::turso().await.expect("turso"),
            #[cfg(feature = "postgres")]
            Kind::Postgres => TestDb::postgres().await.expect("postgres"),
            #[allow(unreachable_patterns)]
            k => panic!("backend {k:?} not compiled in"),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn is_postgres(&self) -> bool {
        self.kind == Kind::Postgres
    }

    pub fn is_sqlite(&self) -> bool {
        self.kind == Kind::Sqlite
    }

    pub fn is_turso(&self) -> bool {
        self.kind == Kind::Turso
    }

    /// The test's connection string.
    pub fn dsn(&self) -> String {
        self.dsn.clone()
    }

    /// The test's connection string with extra query parameters (`"a=1&b=2"`).
    pub fn dsn_with(&self, params: &str) -> String {
        add_param(&self.dsn, params)
    }

    /// Connect, without installing.
    pub async fn connect(&self) -> Store {
        self.connect_with("").await
    }

    /// Connect with extra query parameters, without installing.
    pub async fn connect_with(&self, params: &str) -> Store {
        let dsn = self.dsn_with(params);
        pgqrs::connect(&dsn)
            .await
            .unwrap_or_else(|e| panic!("connect to {dsn}: {e}"))
    }

    /// Connect and install the schema.
    pub async fn store(&self) -> Store {
        self.store_with("").await
    }

    /// Connect with extra query parameters and install the schema.
    pub async fn store_with(&self, params: &str) -> Store {
        let store = self.connect_with(params).await;
        pgqrs::admin(&store).install().await.expect("install");
        store
    }

    /// Connect, install and create `queue`.
    pub async fn store_with_queue(&self, queue: &str) -> Store {
        let store = self.store().await;
        pgqrs::admin(&store)
            .create_queue(queue)
            .await
            .expect("create_queue");
        store
    }

    /// The schema-qualified name of a pgqrs table, for raw SQL.
    pub fn table(&self, name: &str) -> String {
        match &self.schema {
            Some(s) => format!("\"{s}\".{name}"),
            None => name.to_string(),
        }
    }

    /// Run raw SQL (one or more statements) on the test's database, outside pgqrs.
    pub async fn exec_raw(&self, sql: &str) {
        use sqlx::{AssertSqlSafe, Connection};
        match self.kind {
            #[cfg(feature = "postgres")]
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.raw_dsn)
                    .await
                    .expect("raw connect");
                sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("raw SQL {sql:?}: {e}"));
                let _ = c.close().await;
            }
            #[cfg(feature = "sqlite")]
            Kind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.raw_dsn)
                    .await
                    .expect("raw connect");
                sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("raw SQL {sql:?}: {e}"));
                let _ = c.close().await;
            }
            #[cfg(feature = "turso")]
            Kind::Turso => {
                // Same process: Turso shares the store's open database with this connection.
                let path = self.raw_dsn.trim_start_matches("turso://");
                let db = turso::Builder::new_local(path)
                    .build()
                    .await
                    .expect("raw open");
                let c = db.connect().expect("raw connect");
                c.busy_timeout(Duration::from_secs(10))
                    .expect("busy timeout");
                c.execute_batch(sql)
                    .await
                    .unwrap_or_else(|e| panic!("raw SQL {sql:?}: {e}"));
            }
            #[allow(unreachable_patterns)]
            _ => panic!("raw SQL {sql:?}: backend {:?} not compiled in", self.kind),
        }
    }
}

impl TestDb {
    /// PostgreSQL: the server's DSN, without pgqrs's parameters (for an application's own
    /// sqlx connection).
    pub fn server_dsn(&self) -> String {
        self.raw_dsn.clone()
    }

    /// SQLite: options for an application's own sqlx connection to the test's file.
    #[cfg(feature = "sqlite")]
    pub fn sqlite_options(&self) -> sqlx::sqlite::SqliteConnectOptions {
        use std::str::FromStr;
        sqlx::sqlite::SqliteConnectOptions::from_str(&self.raw_dsn)
            .expect("sqlite options")
            .busy_timeout(Duration::from_secs(10))
    }

    /// A `count(*)` (or any integer) query on the test's database, outside pgqrs.
    pub async fn count(&self, sql: &str) -> i64 {
        match self.kind {
            #[cfg(feature = "postgres")]
            Kind::Postgres => self.pg_count(sql).await,
            #[cfg(feature = "sqlite")]
            Kind::Sqlite => {
                use sqlx::{AssertSqlSafe, Connection};
                let mut c = sqlx::SqliteConnection::connect_with(&self.sqlite_options())
                    .await
                    .expect("raw connect");
                let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
                    .fetch_one(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("raw SQL {sql:?}: {e}"));
                let _ = c.close().await;
                n
            }
            #[cfg(feature = "turso")]
            Kind::Turso => {
                let path = self.raw_dsn.trim_start_matches("turso://");
                let db = turso::Builder::new_local(path)
                    .build()
                    .await
                    .expect("raw open");
                let c = db.connect().expect("raw connect");
                let mut rows = c.query(sql, ()).await.expect("raw query");
                let row = rows.next().await.expect("a row").expect("a row");
                match row.get_value(0).expect("value") {
                    turso::Value::Integer(n) => n,
                    v => panic!("raw SQL {sql:?}: {v:?} is not an integer"),
                }
            }
            #[allow(unreachable_patterns)]
            _ => panic!("backend {:?} not compiled in", self.kind),
        }
    }

    /// PostgreSQL: the test's schema.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// PostgreSQL: a `count(*)` (or any bigint) query on the server, outside pgqrs.
    #[cfg(feature = "postgres")]
    pub async fn pg_count(&self, sql: &str) -> i64 {
        use sqlx::{AssertSqlSafe, Connection};
        let mut c = sqlx::PgConnection::connect(&self.raw_dsn)
            .await
            .expect("raw connect");
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut c)
            .await
            .unwrap_or_else(|e| panic!("raw SQL {sql:?}: {e}"));
        let _ = c.close().await;
        n
    }

    /// SQLite and Turso: the database file's `PRAGMA journal_mode`, read on a connection of
    /// its own (Turso: in this process, sharing the store's open database).
    pub async fn journal_mode(&self) -> String {
        const SQL: &str = "PRAGMA journal_mode";
        match self.kind {
            #[cfg(feature = "sqlite")]
            Kind::Sqlite => {
                use sqlx::Connection;
                let mut c = sqlx::SqliteConnection::connect(&self.raw_dsn)
                    .await
                    .expect("raw connect");
                let mode: String = sqlx::query_scalar(SQL)
                    .fetch_one(&mut c)
                    .await
                    .expect("journal_mode");
                let _ = c.close().await;
                mode.to_ascii_lowercase()
            }
            #[cfg(feature = "turso")]
            Kind::Turso => {
                let path = self.raw_dsn.trim_start_matches("turso://");
                let db = turso::Builder::new_local(path)
                    .build()
                    .await
                    .expect("raw open");
                let c = db.connect().expect("raw connect");
                let mut rows = c.query(SQL, ()).await.expect("journal_mode");
                let row = rows.next().await.expect("row").expect("a row");
                match row.get_value(0).expect("value") {
                    turso::Value::Text(t) => t.to_ascii_lowercase(),
                    v => panic!("journal_mode: {v:?}"),
                }
            }
            k => panic!("journal_mode: {k:?} has none"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        #[cfg(feature = "postgres")]
        if let Some(schema) = self.schema.take() {
            // Drop can't await: run the cleanup on its own thread and runtime. Best effort:
            // a schema that can't be dropped now is swept by a later run.
            let server = self.raw_dsn.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(drop_schema(&server, &schema));
                Some(())
            })
            .join();
        }
    }
}

#[cfg(feature = "postgres")]
async fn drop_schema(server: &str, schema: &str) {
    use sqlx::{AssertSqlSafe, Connection};
    let connect =
        tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(server));
    let Ok(Ok(mut c)) = connect.await else { return };
    let sql = format!("SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut c).await {
        eprintln!("note: could not drop test schema {schema} (a later run sweeps it): {e}");
    }
    let _ = c.close().await;
}

/// Once per process: drop `t_<secs>_<rand>` schemas older than an hour.
#[cfg(feature = "postgres")]
async fn sweep_stale_schemas(server: &str) {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            use sqlx::Connection;
            let Ok(Ok(mut c)) =
                tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(server))
                    .await
            else {
                return;
            };
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT nspname::text FROM pg_namespace WHERE nspname ~ '^t_[0-9]+_[0-9a-f]{8}$'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap_or_default();
            let _ = c.close().await;
            let cutoff = unix_secs().saturating_sub(STALE_AFTER_SECS);
            for name in names {
                let secs = name
                    .strip_prefix(SCHEMA_PREFIX)
                    .and_then(|r| r.split('_').next())
                    .and_then(|s| s.parse::<u64>().ok());
                if secs.is_some_and(|s| s < cutoff) {
                    drop_schema(server, &name).await;
                }
            }
        })
        .await;
}

// ---------------------------------------------------------------------------------------
// Small helpers shared by the cases.
// ---------------------------------------------------------------------------------------

/// Every case runs under this bound, so that a hang fails instead of blocking the suite.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(150);

/// Run a case body with [`CASE_TIMEOUT`].
pub async fn bounded<F: Future<Output = ()>>(name: &str, f: F) {
    if tokio::time::timeout(CASE_TIMEOUT, f).await.is_err() {
        panic!("case {name} did not finish within {CASE_TIMEOUT:?} (hang?)");
    }
}

/// Poll `check` every 50 ms until it returns true, or panic after `within` with `what`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        if start.elapsed() > within {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Metrics of `queue`, or panic.
pub async fn metrics(store: &Store, queue: &str) -> pgqrs::QueueMetrics {
    pgqrs::admin(store)
        .queue_metrics(queue)
        .await
        .unwrap_or_else(|e| panic!("queue_metrics({queue}): {e}"))
}

/// `(ready, delayed, leased, archived, dead)` of `queue`.
pub async fn counts(store: &Store, queue: &str) -> (i64, i64, i64, i64, i64) {
    let m = metrics(store, queue).await;
    (m.ready, m.delayed, m.leased, m.archived, m.dead)
}

/// Short description of an error's kind, for assertion messages.
pub fn kind_of(e: &Error) -> String {
    format!("{e:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Assert that `r` failed with a pattern, showing the actual result otherwise.
#[macro_export]
macro_rules! assert_err {
    ($r:expr, $pat:pat $(if $guard:expr)? $(,)?) => {
        match $r {
            Err($pat) $(if $guard)? => {}
            other => panic!(
                "expected Err({}), got {:?} at {}:{}",
                stringify!($pat),
                other,
                file!(),
                line!()
            ),
        }
    };
}

/// Claim from `c` (lease `vt`, the store's default when `None`) until `n` messages were
/// collected, polling every 50 ms; panic after `within`.
pub async fn claim_until(
    c: &pgqrs::Consumer,
    n: usize,
    vt: Option<Duration>,
    within: Duration,
) -> Vec<pgqrs::Message> {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < n {
        if start.elapsed() > within {
            panic!(
                "claimed {} of {n} messages from {} within {within:?}",
                got.len(),
                c.queue()
            );
        }
        got.extend(c.dequeue(n - got.len(), vt).await.expect("dequeue"));
        if got.len() < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    got
}

/// Run `w` on its own task. Returns its shutdown handle and the task.
pub fn spawn_worker(
    store: &Store,
    w: pgqrs::Worker,
) -> (
    pgqrs::ShutdownHandle,
    tokio::task::JoinHandle<pgqrs::Result<pgqrs::WorkerStats>>,
) {
    let stop = w.shutdown_handle();
    let store = store.clone();
    (stop, tokio::spawn(async move { w.run(&store).await }))
}
