//! The Turso engine of the SQLite-dialect backend: the embedded, pure-Rust, SQLite-compatible
//! engine (the `turso` crate; sqlx cannot speak it). The schema and the SQL are the SQLite
//! dialect's (`queries.rs`); this file holds only what is Turso's own.
//!
//! * Connection strings: `turso://PATH` (the file is created if missing; `turso:///abs/path`
//!   for an absolute path) and `turso::memory:`.
//! * Durability: WAL with `synchronous=FULL` by default (`?synchronous=normal` opts out).
//! * Writes: Turso, like SQLite, allows one writer at a time. Inside one process every write
//!   of every store on the same file goes through one gate (a fair async mutex), so pgqrs's
//!   own tasks queue up in order instead of spinning on the engine's lock; each store then
//!   writes through its one writer connection. Reads use a small pool of their own
//!   connections and run alongside the writer (WAL snapshots).
//! * Processes: Turso 0.8 locks the database file for the process that opens it (its
//!   multi-process WAL is experimental), so **one process at a time** may open a database.
//!   A second process gets [`Error::Connection`] saying so at `connect`; so does a `fork()`ed
//!   child of a process that has the file open (see [`shared_for`]).
//! * The engine works inside the poll of its futures: every operation yields first (see
//!   [`yield_before_engine_work`]).
//! * A task cancelled in the middle of a write transaction (a timeout, a dropped future)
//!   leaves its connection inside the transaction; the next user of the connection rolls it
//!   back before doing anything else, so an interrupted write never half-commits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Weak};

use ::turso::{Connection, Value};
use tokio::sync::{Mutex, MutexGuard};

use super::{Arg, Conn, Engine, Sql, Tx};
use crate::config::{Config, Durability};
use crate::error::{file_open_message, Error, Result};
use crate::store::decode::{bad_value, Cols};
use crate::store::Wakers;

/// Reader connections when `pool_size` is not given.
const DEFAULT_READERS: u32 = 4;

/// The engine does its work (statements, fsyncs, busy waits) synchronously inside the poll
/// of its futures. Yield once before touching it, so that whoever polls a pgqrs future first
/// on a thread of its own gets it back at once: the Python binding polls every call once on
/// the event loop's thread and hands it to the tokio runtime when it yields, so engine work
/// never runs on (and never blocks) the event loop.
async fn yield_before_engine_work() {
    tokio::task::yield_now().await
}

/// What the stores of one database file share inside this process.
struct Shared {
    /// The process that opened the file (a `fork()`ed child inherits this memory).
    pid: u32,
    /// Stores of this process that have the file open (connected, not closed).
    open: AtomicUsize,
    /// The write gate: one writer at a time, in arrival order, so that several stores on one
    /// file never contend for the engine's write lock.
    gate: Mutex<()>,
    /// Idle workers of every store on the file: an enqueue through any store wakes them.
    /// (No other process can have the file open, so nothing is missed.)
    wakers: Wakers,
}

impl Shared {
    fn new() -> Self {
        Shared {
            pid: std::process::id(),
            open: AtomicUsize::new(0),
            gate: Mutex::new(()),
            wakers: Wakers::default(),
        }
    }
}

static SHARED: LazyLock<std::sync::Mutex<HashMap<PathBuf, Weak<Shared>>>> =
    LazyLock::new(Default::default);

/// The shared state of `path` (`None`: in-memory, private to its store), or the reason the
/// file cannot be opened here.
///
/// A `fork()`ed child inherits the parent's memory, including Turso's own registry of open
/// databases: opening a file the parent had open would hand the child the parent's database
/// object, with no file lock of its own, and two processes would then write the file
/// unawares. That is refused like any second process.
fn shared_for(path: Option<&PathBuf>, target: &str) -> Result<Arc<Shared>> {
    let Some(path) = path else {
        return Ok(Arc::new(Shared::new()));
    };
    let me = std::process::id();
    let mut all = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|_, s| s.strong_count() > 0);
    if let Some(s) = all.get(path).and_then(Weak::upgrade) {
        if s.pid == me {
            return Ok(s);
        }
        if s.open.load(Ordering::Acquire) > 0 {
            return Err(one_process(
                target,
                "the database was open in the parent process when this one was forked",
            ));
        }
    }
    let s = Arc::new(Shared::new());
    all.insert(path.clone(), Arc::downgrade(&s));
    Ok(s)
}

/// `p` made absolute and canonical (its directory, when the file does not exist yet), so that
/// two spellings of one file share one [`Shared`].
fn canonical(p: &std::path::Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    match (std::fs::canonicalize(dir), p.file_name()) {
        (Ok(d), Some(f)) => d.join(f),
        _ => p.to_path_buf(),
    }
}

// ---------------------------------------------------------------------------------------
// Errors and rows.
// ---------------------------------------------------------------------------------------

/// What a database file held by another process looks like to Turso.
fn is_locked_by_other_process(message: &str) -> bool {
    message.contains("locked by another process")
        || message.contains("already open") && message.contains("another process")
}

/// Normalise a Turso error into a pgqrs [`Error`].
fn from_turso(e: ::turso::Error, target: &str) -> Error {
    use ::turso::Error as E;
    let (code, message) = match e {
        E::Busy(message) | E::BusySnapshot(message) => return Error::Busy { message },
        E::Error(message) if message.contains("no such table") => {
            let where_ = format!(" in {target} ({message})");
            return Error::SchemaNotInstalled { where_ };
        }
        E::Error(message) if is_locked_by_other_process(&message) => {
            return one_process(target, &message)
        }
        E::BatchStatementFailed { error, .. } => return from_turso(*error, target),
        E::IoError(kind, op) => ("IOERR", format!("{target}: I/O error during {op}: {kind}")),
        E::NotAdb(m) => ("NOTADB", format!("{target} is not a database file: {m}")),
        E::Constraint(m) => ("CONSTRAINT", m),
        E::Readonly(m) => ("READONLY", m),
        E::DatabaseFull(m) => ("FULL", m),
        E::Corrupt(m) => ("CORRUPT", m),
        E::Interrupt(m) => ("INTERRUPT", m),
        other => {
            let message = other.to_string();
            return Error::Database {
                code: None,
                message,
            };
        }
    };
    Error::Database {
        code: Some(code.into()),
        message,
    }
}

/// The typed error for a database file that another process has open.
fn one_process(target: &str, message: &str) -> Error {
    Error::Connection {
        target: target.to_string(),
        message: format!(
            "{message}: Turso allows one process at a time to open a database; stop the other \
             process first, or use SQLite or PostgreSQL for several processes"
        ),
    }
}

/// A fetched row.
pub(crate) struct R(Vec<Value>);

impl Cols for R {
    fn opt_i64(&self, i: usize) -> Result<Option<i64>> {
        match self.0.get(i) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Integer(n)) => Ok(Some(*n)),
            Some(v) => Err(bad_value(i, format!("{v:?} (an integer expected)"))),
        }
    }

    fn opt_str(&self, i: usize) -> Result<Option<&str>> {
        match self.0.get(i) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Text(s)) => Ok(Some(s)),
            Some(v) => Err(bad_value(i, format!("{v:?} (text expected)"))),
        }
    }
}

fn value(a: &Arg<'_>) -> Value {
    match *a {
        Arg::Int(v) => Value::Integer(v),
        Arg::Text(v) => Value::Text(v.to_string()),
        Arg::Null => Value::Null,
    }
}

// ---------------------------------------------------------------------------------------
// Connections.
// ---------------------------------------------------------------------------------------

/// A connection slot; `None` once the store is closed.
type Slot = Mutex<Option<Connection>>;

/// A connection held for one operation.
pub(crate) struct Held<'a> {
    guard: MutexGuard<'a, Option<Connection>>,
    target: &'a str,
    _gate: Option<MutexGuard<'a, ()>>,
}

impl Held<'_> {
    fn conn(&self) -> &Connection {
        self.guard
            .as_ref()
            .expect("a held connection is open (checked when taken)")
    }

    fn err(&self, e: ::turso::Error) -> Error {
        from_turso(e, self.target)
    }

    async fn statement(&self, sql: Sql) -> Result<::turso::Statement> {
        let c = self.conn();
        let stmt = if sql.keep {
            c.prepare_cached(&sql.text).await
        } else {
            c.prepare(&sql.text).await
        };
        stmt.map_err(|e| self.err(e))
    }

    /// Roll back a transaction a cancelled task left open on this connection.
    async fn reset(&self) -> Result<()> {
        let open = !self.conn().is_autocommit().map_err(|e| self.err(e))?;
        if open {
            tracing::debug!("turso: rolling back a transaction left open by a cancelled task");
            self.conn()
                .execute("ROLLBACK", ())
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

impl Conn for Held<'_> {
    type Row = R;

    async fn rows(&mut self, sql: impl Into<Sql> + Send, args: &[Arg<'_>]) -> Result<Vec<R>> {
        let mut stmt = self.statement(sql.into()).await?;
        let params: Vec<Value> = args.iter().map(value).collect();
        let mut rows = stmt.query(params).await.map_err(|e| self.err(e))?;
        let n = rows.column_count();
        let mut out = Vec::new();
        while let Some(row) = rows.next().await.map_err(|e| self.err(e))? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                vals.push(row.get_value(i).map_err(|e| self.err(e))?);
            }
            out.push(R(vals));
        }
        Ok(out)
    }

    async fn exec(&mut self, sql: impl Into<Sql> + Send, args: &[Arg<'_>]) -> Result<u64> {
        let mut stmt = self.statement(sql.into()).await?;
        let params: Vec<Value> = args.iter().map(value).collect();
        stmt.execute(params).await.map_err(|e| self.err(e))
    }
}

impl Tx for Held<'_> {
    async fn script(&mut self, sql: &'static str) -> Result<()> {
        self.conn()
            .execute_batch(sql)
            .await
            .map_err(|e| self.err(e))
    }

    async fn commit(self) -> Result<()> {
        if let Err(e) = self.conn().execute("COMMIT", ()).await {
            let _ = self.conn().execute("ROLLBACK", ()).await;
            return Err(self.err(e));
        }
        Ok(())
    }

    async fn rollback(self) {
        if !self.conn().is_autocommit().unwrap_or(true) {
            let _ = self.conn().execute("ROLLBACK", ()).await;
        }
    }
}

/// The Turso engine of one store.
pub(crate) struct Turso {
    target: String,
    /// Kept so the database stays open while the store is; dropped by `close`.
    db: std::sync::Mutex<Option<::turso::Database>>,
    shared: Arc<Shared>,
    writer: Slot,
    readers: Vec<Slot>,
    next_reader: AtomicUsize,
    closed: AtomicBool,
}

impl Drop for Turso {
    fn drop(&mut self) {
        if !*self.closed.get_mut() {
            self.shared.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Where a `turso:` connection string points: `None` for an in-memory database.
fn parse_location(cfg: &Config) -> Result<Option<PathBuf>> {
    let bad = |reason: String| Error::InvalidDsn {
        dsn: cfg.redacted.clone(),
        reason,
    };
    let dsn = cfg.driver_dsn.as_str();
    let (base, query) = dsn.split_once('?').unwrap_or((dsn, ""));
    if let Some(p) = query.split('&').find(|p| !p.is_empty()) {
        return Err(bad(format!(
            "unknown parameter {:?} for turso (pgqrs's own parameters are listed in the README)",
            p.split('=').next().unwrap_or(p)
        )));
    }
    let rest = base
        .strip_prefix("turso:")
        .or_else(|| base.strip_prefix("TURSO:"))
        .ok_or_else(|| bad("expected turso://PATH or turso::memory:".into()))?;
    if rest == ":memory:" || rest == "//:memory:" {
        return Ok(None);
    }
    // `turso:/abs/path` too: what URL libraries make of `turso:///abs/path`.
    let path = match rest.strip_prefix("//") {
        Some(p) => p,
        None if rest.starts_with('/') => rest,
        None => {
            return Err(bad(
                "expected turso://PATH (turso:///absolute/path) or turso::memory:".into(),
            ))
        }
    };
    if path.is_empty() {
        return Err(bad("no file path after turso://".into()));
    }
    Ok(Some(PathBuf::from(path)))
}

impl Turso {
    /// Hold a locked connection slot, with the write gate for the writer's; roll back what a
    /// cancelled task left open on it.
    async fn hold<'a>(
        &'a self,
        guard: MutexGuard<'a, Option<Connection>>,
        gate: Option<MutexGuard<'a, ()>>,
    ) -> Result<Held<'a>> {
        if guard.is_none() {
            return Err(Error::Closed);
        }
        let held = Held {
            guard,
            target: &self.target,
            _gate: gate,
        };
        held.reset().await?;
        Ok(held)
    }

    /// Fails once the store is closed; then yields (see [`yield_before_engine_work`]).
    async fn ready(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        yield_before_engine_work().await;
        Ok(())
    }
}

impl Engine for Turso {
    type Conn<'a> = Held<'a>;
    type Tx<'a> = Held<'a>;

    async fn connect(cfg: &Config) -> Result<Self> {
        let location = parse_location(cfg)?;
        yield_before_engine_work().await;
        let target = match &location {
            None => "turso in-memory database".to_string(),
            Some(p) => format!("turso file {}", p.display()),
        };
        let path_str = match &location {
            None => ":memory:".to_string(),
            Some(p) => p
                .to_str()
                .ok_or_else(|| Error::InvalidDsn {
                    dsn: cfg.redacted.clone(),
                    reason: "the file path is not valid UTF-8".into(),
                })?
                .to_string(),
        };
        // What is wrong with the file, for an error that may be about it.
        let about_file = |what: String| match &location {
            Some(p) => file_open_message(p, &what),
            None => what,
        };
        let conn_err = |e: ::turso::Error| match e {
            ::turso::Error::IoError(kind, op) => Error::Connection {
                target: target.clone(),
                message: about_file(format!("I/O error during {op}: {kind}")),
            },
            ::turso::Error::Error(m) if is_locked_by_other_process(&m) => one_process(&target, &m),
            e => Error::Connection {
                target: target.clone(),
                message: about_file(format!("cannot open the database: {e}")),
            },
        };
        let shared = shared_for(location.as_deref().map(canonical).as_ref(), &target)?;
        let open = async {
            let db = ::turso::Builder::new_local(&path_str)
                .build()
                .await
                .map_err(conn_err)?;
            let readers = if location.is_some() {
                cfg.pool_size.unwrap_or(DEFAULT_READERS).clamp(1, 64)
            } else {
                // An in-memory database is private to its store: reads go through the
                // writer's connection.
                0
            };
            let mut conns = Vec::new();
            for _ in 0..=readers {
                let c = db.connect().map_err(conn_err)?;
                configure(&c, cfg, location.is_some())
                    .await
                    .map_err(|e| match e {
                        Error::Database { message, .. } => Error::Connection {
                            target: target.clone(),
                            message,
                        },
                        e => e,
                    })?;
                conns.push(c);
            }
            Ok::<_, Error>((db, conns))
        };
        let (db, mut conns) = tokio::time::timeout(cfg.connect_timeout.max(cfg.busy_timeout), open)
            .await
            .map_err(|_| Error::Connection {
                target: target.clone(),
                message: "timed out opening the database: is the file on a slow or \
                          unresponsive disk?"
                    .into(),
            })??;
        let writer = conns.remove(0);
        let readers = conns.into_iter().map(|c| Mutex::new(Some(c))).collect();
        shared.open.fetch_add(1, Ordering::AcqRel);
        Ok(Turso {
            target,
            db: std::sync::Mutex::new(Some(db)),
            shared,
            writer: Mutex::new(Some(writer)),
            readers,
            next_reader: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        })
    }

    fn target(&self) -> &str {
        &self.target
    }

    /// Shared by every store of the file in this process: an enqueue through any store wakes
    /// them. (No other process can have the file open, so nothing is missed.)
    fn wakers(&self) -> &Wakers {
        &self.shared.wakers
    }

    /// A reader connection (the writer's, for an in-memory database).
    async fn reader(&self) -> Result<Held<'_>> {
        if self.readers.is_empty() {
            return self.writer().await;
        }
        self.ready().await?;
        for slot in &self.readers {
            if let Ok(guard) = slot.try_lock() {
                return self.hold(guard, None).await;
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.hold(self.readers[i].lock().await, None).await
    }

    /// The writer connection, after the process-wide write gate of this file.
    async fn writer(&self) -> Result<Held<'_>> {
        self.ready().await?;
        let gate = self.shared.gate.lock().await;
        self.hold(self.writer.lock().await, Some(gate)).await
    }

    async fn begin(&self) -> Result<Held<'_>> {
        let w = self.writer().await?;
        w.conn()
            .execute("BEGIN IMMEDIATE", ())
            .await
            .map_err(|e| w.err(e))?;
        Ok(w)
    }

    async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.open.fetch_sub(1, Ordering::AcqRel);
        // Wait for operations in flight, then drop every connection and the database: the
        // file lock is released once no store of this process uses the file any more.
        *self.writer.lock().await = None;
        for r in &self.readers {
            *r.lock().await = None;
        }
        self.db.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.shared.wakers.wake_all();
    }
}

/// Per-connection settings: busy timeout, foreign keys, WAL and the durability level.
async fn configure(c: &Connection, cfg: &Config, file: bool) -> Result<()> {
    let err = |e: ::turso::Error| Error::Database {
        code: None,
        message: e.to_string(),
    };
    c.busy_timeout(cfg.busy_timeout).map_err(err)?;
    c.execute("PRAGMA foreign_keys = ON", ())
        .await
        .map_err(err)?;
    if file {
        // WAL is Turso's journal mode already; ask for it anyway, so that a file created
        // by another tool in rollback-journal mode is switched too.
        let mut rows = c
            .query("PRAGMA journal_mode = WAL", ())
            .await
            .map_err(err)?;
        while rows.next().await.map_err(err)?.is_some() {}
    }
    let sync = match cfg.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    c.execute(&format!("PRAGMA synchronous = {sync}"), ())
        .await
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pragma(c: &Connection, name: &str) -> Value {
        let mut rows = c.query(format!("PRAGMA {name}"), ()).await.unwrap();
        let v = rows.next().await.unwrap().unwrap().get_value(0).unwrap();
        while rows.next().await.unwrap().is_some() {}
        v
    }

    #[tokio::test]
    async fn connection_settings() {
        let dir = std::env::temp_dir().join(format!("pgqrs-turso-unit-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        for (param, want) in [("", 2), ("?synchronous=normal", 1)] {
            let path = dir.join(format!("s{want}.db"));
            let cfg = Config::new(&format!("turso://{}{param}", path.display())).unwrap();
            let b = Turso::connect(&cfg).await.unwrap();
            let w = b.writer().await.unwrap();
            assert_eq!(
                pragma(w.conn(), "synchronous").await,
                Value::Integer(want),
                "{param}"
            );
            assert_eq!(pragma(w.conn(), "foreign_keys").await, Value::Integer(1));
            assert_eq!(
                pragma(w.conn(), "journal_mode").await,
                Value::Text("wal".into())
            );
            drop(w);
            b.close().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    async fn count(c: &Held<'_>) -> i64 {
        let mut rows = c.conn().query("SELECT count(*) FROM t", ()).await.unwrap();
        let v = rows.next().await.unwrap().unwrap().get_value(0).unwrap();
        while rows.next().await.unwrap().is_some() {}
        match v {
            Value::Integer(n) => n,
            v => panic!("count: {v:?}"),
        }
    }

    /// A write transaction whose task is cancelled halfway (a timeout drops the future, and
    /// with it the held writer, inside the transaction) leaves nothing behind: the next user
    /// of the writer rolls it back first, and writes go on. (The engine works inside one poll,
    /// so pgqrs's own writes yield only before their transaction; this drives one that does
    /// not.)
    #[tokio::test]
    async fn cancelled_transaction_rolls_back() {
        let dir = std::env::temp_dir().join(format!("pgqrs-turso-unit-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = Config::new(&format!("turso://{}", dir.join("t.db").display())).unwrap();
        let b = Turso::connect(&cfg).await.unwrap();
        let mut w = b.writer().await.unwrap();
        w.exec("CREATE TABLE t (x INTEGER)", &[]).await.unwrap();
        drop(w);

        let halfway = async {
            let mut tx = b.begin().await.unwrap();
            tx.exec("INSERT INTO t VALUES (1)", &[]).await.unwrap();
            tx.exec("INSERT INTO t VALUES (2)", &[]).await.unwrap();
            std::future::pending::<()>().await;
        };
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(50), halfway).await;
        assert!(cancelled.is_err());

        let mut tx = b
            .begin()
            .await
            .expect("a new transaction on the same writer");
        assert_eq!(
            count(&tx).await,
            0,
            "the cancelled transaction's rows are there"
        );
        tx.exec("INSERT INTO t VALUES (3)", &[]).await.unwrap();
        tx.commit().await.unwrap();
        let r = b.reader().await.unwrap();
        assert_eq!(count(&r).await, 1);
        drop(r);
        let w = b.writer().await.unwrap();
        assert!(w.conn().is_autocommit().unwrap());
        assert_eq!(count(&w).await, 1);
        drop(w);
        b.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn loc(dsn: &str) -> Result<Option<PathBuf>> {
        parse_location(&Config::new(dsn)?)
    }

    #[test]
    fn locations() {
        assert_eq!(loc("turso::memory:").unwrap(), None);
        assert_eq!(
            loc("turso://jobs.db").unwrap(),
            Some(PathBuf::from("jobs.db"))
        );
        assert_eq!(
            loc("turso:///tmp/x/jobs.db?max_attempts=3").unwrap(),
            Some(PathBuf::from("/tmp/x/jobs.db"))
        );
        assert_eq!(
            loc("turso:/tmp/j.db").unwrap(),
            Some(PathBuf::from("/tmp/j.db"))
        );
        assert!(matches!(loc("turso://"), Err(Error::InvalidDsn { .. })));
        assert!(matches!(
            loc("turso:jobs.db"),
            Err(Error::InvalidDsn { .. })
        ));
        assert!(matches!(
            loc("turso://jobs.db?mode=rwc"),
            Err(Error::InvalidDsn { reason, .. }) if reason.contains("mode")
        ));
    }
}
