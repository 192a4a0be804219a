//! SQLite through sqlx: WAL, a busy timeout, and `synchronous=FULL` by default.
//!
//! SQLite allows one writer at a time. Inside one process, pgqrs sends every write through a
//! single writer connection (a pool of one), so its own tasks queue up in order instead of
//! spinning on the database lock; reads use a separate pool. Other processes contend through
//! SQLite's lock and the busy timeout, and a change watcher wakes this store's idle workers
//! when they commit.

use std::ops::DerefMut;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ::sqlx::pool::PoolConnection;
use ::sqlx::query::Query;
use ::sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use ::sqlx::{AssertSqlSafe, Row, Transaction};

use super::{Arg, Conn, Engine, Sql, Tx};
use crate::config::{Config, Durability};
use crate::error::{file_open_message, from_sqlx, Error, Result};
use crate::store::decode::{bad_value, Cols};
use crate::store::Wakers;

pub(crate) struct SqlxSqlite {
    writer: SqlitePool,
    reader: SqlitePool,
    target: String,
    wakers: Arc<Wakers>,
    /// Options for the change watcher's own connection (`None` for in-memory databases).
    watch_opts: Option<SqliteConnectOptions>,
    watcher: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How often the change watcher looks for commits by other connections.
const WATCH_EVERY: Duration = Duration::from_millis(10);

/// Wake this store's idle workers when another connection (another store, another process)
/// commits to the database file: `PRAGMA data_version` changes then. One tiny query per
/// [`WATCH_EVERY`] on a connection of its own; ends when the store is dropped.
async fn watch_changes(opts: SqliteConnectOptions, wakers: std::sync::Weak<Wakers>) {
    use ::sqlx::Connection;
    let mut conn = loop {
        match SqliteConnection::connect_with(&opts).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::debug!(error = %e, "change watcher cannot connect; retrying");
                if wakers.upgrade().is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut last: Option<i64> = None;
    loop {
        let Some(w) = wakers.upgrade() else { return };
        match ::sqlx::query_scalar::<_, i64>("PRAGMA data_version")
            .fetch_one(&mut conn)
            .await
        {
            Ok(v) => {
                if last.is_some_and(|l| l != v) {
                    w.wake_all();
                }
                last = Some(v);
            }
            Err(e) => tracing::debug!(error = %e, "change watcher query failed"),
        }
        drop(w);
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

impl SqlxSqlite {
    fn stop_watcher(&self) {
        let h = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = h {
            h.abort();
        }
    }

    fn err(&self, e: ::sqlx::Error) -> Error {
        from_sqlx(e, &self.target)
    }
}

impl Drop for SqlxSqlite {
    fn drop(&mut self) {
        self.stop_watcher();
    }
}

impl Engine for SqlxSqlite {
    type Conn<'a> = SqlxConn<'a, PoolConnection<Sqlite>>;
    type Tx<'a> = SqlxConn<'a, Transaction<'static, Sqlite>>;

    async fn connect(cfg: &Config) -> Result<Self> {
        let opts =
            SqliteConnectOptions::from_str(&cfg.driver_dsn).map_err(|e| Error::InvalidDsn {
                dsn: cfg.redacted.clone(),
                reason: e.to_string(),
            })?;
        let memory = cfg.driver_dsn.contains(":memory:") || cfg.driver_dsn.contains("mode=memory");
        let target = if memory {
            "sqlite in-memory database".to_string()
        } else {
            format!("sqlite file {}", opts.get_filename().display())
        };
        let opts = opts
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(match cfg.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(cfg.busy_timeout)
            .foreign_keys(true);
        let watch_opts = (!memory).then(|| opts.clone());
        let connect = |max: u32| {
            SqlitePoolOptions::new()
                .max_connections(max)
                .min_connections(if memory { 1 } else { 0 })
                .idle_timeout(if memory {
                    None
                } else {
                    Some(Duration::from_secs(600))
                })
                .max_lifetime(None)
                // sqlx pings a pooled connection before each use by default: for SQLite
                // that is a round trip to the connection's thread on every statement, and
                // an open file handle does not go stale the way a socket does.
                .test_before_acquire(false)
                .acquire_timeout(cfg.connect_timeout.max(cfg.busy_timeout))
                .connect_with(opts.clone())
        };
        let file = opts.get_filename().to_path_buf();
        let conn_err = |e: ::sqlx::Error| {
            let message = match e {
                ::sqlx::Error::Database(db) if !memory => {
                    file_open_message(&file, &format!("cannot open the file: {}", db.message()))
                }
                ::sqlx::Error::Io(io) if !memory => {
                    file_open_message(&file, &format!("cannot open the file: {io}"))
                }
                e => e.to_string(),
            };
            Error::Connection {
                target: target.clone(),
                message,
            }
        };
        let writer = connect(1).await.map_err(conn_err)?;
        // An in-memory database lives in its connection: share the one.
        let reader = if memory {
            writer.clone()
        } else {
            connect(cfg.pool_size.unwrap_or(4))
                .await
                .map_err(conn_err)?
        };
        Ok(SqlxSqlite {
            writer,
            reader,
            target,
            wakers: Arc::default(),
            watch_opts,
            watcher: std::sync::Mutex::new(None),
        })
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn wakers(&self) -> &Wakers {
        &self.wakers
    }

    async fn reader(&self) -> Result<Self::Conn<'_>> {
        let c = self.reader.acquire().await.map_err(|e| self.err(e))?;
        Ok(SqlxConn(c, &self.target))
    }

    async fn writer(&self) -> Result<Self::Conn<'_>> {
        let c = self.writer.acquire().await.map_err(|e| self.err(e))?;
        Ok(SqlxConn(c, &self.target))
    }

    async fn begin(&self) -> Result<Self::Tx<'_>> {
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await;
        Ok(SqlxConn(tx.map_err(|e| self.err(e))?, &self.target))
    }

    async fn close(&self) {
        self.stop_watcher();
        self.writer.close().await;
        self.reader.close().await;
    }

    fn will_wait(&self) {
        if let Some(opts) = &self.watch_opts {
            let mut w = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
            if w.as_ref().is_none_or(|h| h.is_finished()) {
                *w = Some(tokio::spawn(watch_changes(
                    opts.clone(),
                    Arc::downgrade(&self.wakers),
                )));
            }
        }
    }
}

/// A pooled connection or a transaction, and what errors call the database.
pub(crate) struct SqlxConn<'a, C>(C, &'a str);

fn bind(sql: Sql, args: &[Arg<'_>]) -> Query<'static, Sqlite, SqliteArguments> {
    // sqlx keeps every statement prepared in its own bounded cache (`sql.keep` is for Turso).
    let mut q = ::sqlx::query(AssertSqlSafe(sql.text));
    for a in args {
        q = match *a {
            Arg::Int(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::Null => q.bind(None::<i64>),
        };
    }
    q
}

impl<C: DerefMut<Target = SqliteConnection> + Send> Conn for SqlxConn<'_, C> {
    type Row = SqliteRow;

    async fn rows(
        &mut self,
        sql: impl Into<Sql> + Send,
        args: &[Arg<'_>],
    ) -> Result<Vec<SqliteRow>> {
        let q = bind(sql.into(), args);
        q.fetch_all(&mut *self.0)
            .await
            .map_err(|e| from_sqlx(e, self.1))
    }

    async fn exec(&mut self, sql: impl Into<Sql> + Send, args: &[Arg<'_>]) -> Result<u64> {
        let q = bind(sql.into(), args);
        let r = q.execute(&mut *self.0).await;
        Ok(r.map_err(|e| from_sqlx(e, self.1))?.rows_affected())
    }
}

/// A transaction on a caller's connection
/// ([`EnqueueBuilder::execute_in`](crate::EnqueueBuilder::execute_in)): a savepoint when sqlx
/// began a transaction on it, else `BEGIN IMMEDIATE`, which takes the write lock at once (a
/// deferred one could fail with a busy error at its first write, which no busy timeout
/// waits out). A connection in a transaction that sqlx did not begin (a raw `BEGIN`) gets
/// SQLite's "cannot start a transaction within a transaction".
pub(crate) async fn caller_tx<'c>(
    c: &'c mut SqliteConnection,
    target: &'c str,
) -> Result<SqlxConn<'c, Transaction<'c, Sqlite>>> {
    use ::sqlx::Connection;
    let tx = if c.is_in_transaction() {
        c.begin().await
    } else {
        c.begin_with("BEGIN IMMEDIATE").await
    };
    Ok(SqlxConn(tx.map_err(|e| from_sqlx(e, target))?, target))
}

impl Tx for SqlxConn<'_, Transaction<'_, Sqlite>> {
    async fn script(&mut self, sql: &'static str) -> Result<()> {
        let r = ::sqlx::raw_sql(sql).execute(&mut *self.0).await;
        r.map(drop).map_err(|e| from_sqlx(e, self.1))
    }

    async fn commit(self) -> Result<()> {
        self.0.commit().await.map_err(|e| from_sqlx(e, self.1))
    }

    async fn rollback(self) {
        let _ = self.0.rollback().await;
    }
}

impl Cols for SqliteRow {
    fn opt_i64(&self, i: usize) -> Result<Option<i64>> {
        self.try_get(i).map_err(|e| bad_value(i, e))
    }

    fn opt_str(&self, i: usize) -> Result<Option<&str>> {
        self.try_get(i).map_err(|e| bad_value(i, e))
    }
}
