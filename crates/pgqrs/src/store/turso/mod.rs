//! Turso backend: the embedded, pure-Rust, SQLite-compatible engine (the `turso` crate; sqlx
//! cannot speak it).
//!
//! * Connection strings: `turso://PATH` (the file is created if missing; `turso:///abs/path`
//!   for an absolute path) and `turso::memory:`.
//! * The schema and the SQL are the SQLite dialect (see `sqlite_sql.rs`); timestamps are
//!   microseconds since the epoch.
//! * Durability: WAL with `synchronous=FULL` by default (`?synchronous=normal` opts out).
//! * Writes: Turso, like SQLite, allows one writer at a time. Inside one process every write
//!   of every store on the same file goes through one gate (a fair async mutex), so pgqrs's
//!   own tasks queue up in order instead of spinning on the engine's lock; each store then
//!   writes through its one writer connection, in `BEGIN IMMEDIATE` transactions. Reads use a
//!   small pool of their own connections and run alongside the writer (WAL snapshots).
//! * Processes: Turso 0.8 locks the database file for the process that opens it (its
//!   multi-process WAL is experimental), so **one process at a time** may open a database.
//!   A second process gets [`Error::Connection`] saying so at `connect`; so does a `fork()`ed
//!   child of a process that has the file open (see [`shared_for`]).
//! * A task cancelled in the middle of a write transaction (a timeout, a dropped future)
//!   leaves its connection inside the transaction; the next user of the connection rolls it
//!   back before doing anything else, so an interrupted write never half-commits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use ::turso::{Connection, Value};
use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{Mutex, MutexGuard};

use super::sqlite_sql::*;
use super::*;
use crate::config::Durability;

/// Largest number of leases in one statement (two parameters each).
const LEASE_CHUNK: usize = 4000;
/// Largest number of rows in one multi-row insert.
const INSERT_CHUNK: usize = 5000;
/// Lease statements for batches up to this size are kept prepared (one per size).
const CACHE_LEASE_STMTS_UP_TO: usize = 16;
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

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2)
}

// ---------------------------------------------------------------------------------------
// What the stores of one file share in this process.
// ---------------------------------------------------------------------------------------

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
// Errors and values.
// ---------------------------------------------------------------------------------------

/// What a database file held by another process looks like to Turso.
fn is_locked_by_other_process(message: &str) -> bool {
    message.contains("locked by another process")
        || message.contains("already open") && message.contains("another process")
}

/// Normalise a Turso error into a pgqrs [`Error`].
fn from_turso(e: ::turso::Error, target: &str) -> Error {
    use ::turso::Error as E;
    match e {
        E::Busy(message) | E::BusySnapshot(message) => Error::Busy { message },
        E::Error(message) if message.contains("no such table") => Error::SchemaNotInstalled {
            where_: format!(" in {target} ({message})"),
        },
        E::Error(message) if is_locked_by_other_process(&message) => one_process(target, &message),
        E::IoError(kind, op) => Error::Database {
            code: Some("IOERR".into()),
            message: format!("{target}: I/O error during {op}: {kind}"),
        },
        E::Constraint(message) => Error::Database {
            code: Some("CONSTRAINT".into()),
            message,
        },
        E::Readonly(message) => Error::Database {
            code: Some("READONLY".into()),
            message,
        },
        E::DatabaseFull(message) => Error::Database {
            code: Some("FULL".into()),
            message,
        },
        E::NotAdb(message) => Error::Database {
            code: Some("NOTADB".into()),
            message: format!("{target} is not a database file: {message}"),
        },
        E::Corrupt(message) => Error::Database {
            code: Some("CORRUPT".into()),
            message,
        },
        E::Interrupt(message) => Error::Database {
            code: Some("INTERRUPT".into()),
            message,
        },
        E::BatchStatementFailed { error, .. } => from_turso(*error, target),
        other => Error::Database {
            code: None,
            message: other.to_string(),
        },
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

fn decode(what: &str, v: &Value) -> Error {
    Error::Database {
        code: None,
        message: format!("unexpected value for {what}: {v:?}"),
    }
}

/// Column accessors over a fetched row.
struct R(Vec<Value>);

impl R {
    fn v(&self, i: usize) -> &Value {
        self.0.get(i).unwrap_or(&Value::Null)
    }

    fn i64(&self, i: usize) -> Result<i64> {
        match self.v(i) {
            Value::Integer(n) => Ok(*n),
            v => Err(decode("an integer column", v)),
        }
    }

    fn opt_i64(&self, i: usize) -> Result<Option<i64>> {
        match self.v(i) {
            Value::Null => Ok(None),
            _ => self.i64(i).map(Some),
        }
    }

    fn i32(&self, i: usize) -> Result<i32> {
        let n = self.i64(i)?;
        i32::try_from(n).map_err(|_| decode("a 32-bit integer column", &Value::Integer(n)))
    }

    fn str(&self, i: usize) -> Result<&str> {
        match self.v(i) {
            Value::Text(s) => Ok(s),
            v => Err(decode("a text column", v)),
        }
    }

    fn opt_str(&self, i: usize) -> Result<Option<String>> {
        match self.v(i) {
            Value::Null => Ok(None),
            _ => self.str(i).map(|s| Some(s.to_string())),
        }
    }

    fn string(&self, i: usize) -> Result<String> {
        self.str(i).map(str::to_string)
    }

    fn json(&self, i: usize) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(self.str(i)?)?)
    }

    fn opt_json(&self, i: usize) -> Result<Option<serde_json::Value>> {
        match self.v(i) {
            Value::Null => Ok(None),
            _ => self.json(i).map(Some),
        }
    }

    fn time(&self, i: usize) -> Result<chrono::DateTime<Utc>> {
        self.i64(i).map(from_micros)
    }

    fn opt_time(&self, i: usize) -> Result<Option<chrono::DateTime<Utc>>> {
        Ok(self.opt_i64(i)?.map(from_micros))
    }
}

fn queue_info(r: &R) -> Result<QueueInfo> {
    Ok(QueueInfo {
        id: r.i64(0)?,
        name: r.string(1)?,
        created_at: r.time(2)?,
    })
}

fn run(r: &R) -> Result<WorkflowRun> {
    let status = r.str(3)?;
    Ok(WorkflowRun {
        id: r.i64(0)?,
        name: r.string(1)?,
        input: r.json(2)?,
        status: RunStatus::parse(status)
            .ok_or_else(|| decode("a run status", &Value::Text(status.into())))?,
        output: r.opt_json(4)?,
        error: r.opt_str(5)?,
        owner: r.opt_str(6)?,
        lease_until: r.opt_time(7)?,
        attempts: r.i32(8)?,
        created_at: r.time(9)?,
        updated_at: r.time(10)?,
        finished_at: r.opt_time(11)?,
    })
}

/// Bind a lease list: `(id, token)` pairs after `pre`.
fn lease_params(pre: &[i64], leases: &[Lease]) -> Vec<Value> {
    let mut p: Vec<Value> = pre.iter().map(|v| Value::Integer(*v)).collect();
    for l in leases {
        p.push(Value::Integer(l.id));
        p.push(Value::Integer(l.token));
    }
    p
}

// ---------------------------------------------------------------------------------------
// Connections.
// ---------------------------------------------------------------------------------------

/// A connection slot; `None` once the store is closed.
type Slot = Mutex<Option<Connection>>;

/// A connection held for one operation.
struct Held<'a> {
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

    /// Run a statement and collect every row it returns.
    async fn rows(&self, sql: &str, params: Vec<Value>, cached: bool) -> Result<Vec<R>> {
        let c = self.conn();
        let mut stmt = if cached {
            c.prepare_cached(sql).await
        } else {
            c.prepare(sql).await
        }
        .map_err(|e| self.err(e))?;
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

    /// A statement of fixed text (kept prepared); every row.
    async fn all(&self, sql: &str, params: Vec<Value>) -> Result<Vec<R>> {
        self.rows(sql, params, true).await
    }

    /// A statement of fixed text; its first row, if any.
    async fn opt(&self, sql: &str, params: Vec<Value>) -> Result<Option<R>> {
        Ok(self.rows(sql, params, true).await?.into_iter().next())
    }

    /// A statement of fixed text; its first row, which must exist.
    async fn one(&self, sql: &str, params: Vec<Value>) -> Result<R> {
        self.opt(sql, params).await?.ok_or_else(|| Error::Database {
            code: None,
            message: format!("statement returned no row: {sql}"),
        })
    }

    /// A statement that returns no rows; the number of rows it changed.
    async fn exec(&self, sql: &str, params: Vec<Value>) -> Result<u64> {
        let c = self.conn();
        let mut stmt = c.prepare_cached(sql).await.map_err(|e| self.err(e))?;
        stmt.execute(params).await.map_err(|e| self.err(e))
    }

    /// Ids returned by a lease statement built for `n` leases.
    async fn ids(&self, sql: &str, params: Vec<Value>, n: usize) -> Result<Vec<i64>> {
        self.rows(sql, params, n <= CACHE_LEASE_STMTS_UP_TO)
            .await?
            .iter()
            .map(|r| r.i64(0))
            .collect()
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

    async fn begin(&self) -> Result<()> {
        self.conn()
            .execute("BEGIN IMMEDIATE", ())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Commit when `r` is `Ok`, roll back otherwise.
    async fn finish<T>(&self, r: Result<T>) -> Result<T> {
        match r {
            Ok(v) => match self.conn().execute("COMMIT", ()).await {
                Ok(_) => Ok(v),
                Err(e) => {
                    let _ = self.conn().execute("ROLLBACK", ()).await;
                    Err(self.err(e))
                }
            },
            Err(e) => {
                if !self.conn().is_autocommit().unwrap_or(true) {
                    let _ = self.conn().execute("ROLLBACK", ()).await;
                }
                Err(e)
            }
        }
    }
}

impl Drop for TursoBackend {
    fn drop(&mut self) {
        if !*self.closed.get_mut() {
            self.shared.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

pub(crate) struct TursoBackend {
    cfg: Config,
    target: String,
    /// Kept so the database stays open while the store is; dropped by `close`.
    db: std::sync::Mutex<Option<::turso::Database>>,
    shared: Arc<Shared>,
    writer: Slot,
    readers: Vec<Slot>,
    next_reader: AtomicUsize,
    closed: AtomicBool,
    queue_ids: QueueIds,
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

impl TursoBackend {
    pub(crate) async fn connect(cfg: Config) -> Result<Self> {
        let location = parse_location(&cfg)?;
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
        let conn_err = |e: ::turso::Error| match e {
            ::turso::Error::IoError(kind, op) => Error::Connection {
                target: target.clone(),
                message: match kind {
                    std::io::ErrorKind::NotFound => {
                        "cannot create the database file: its directory does not exist".into()
                    }
                    k => format!("I/O error during {op}: {k}"),
                },
            },
            ::turso::Error::Error(m) if is_locked_by_other_process(&m) => one_process(&target, &m),
            e => Error::Connection {
                target: target.clone(),
                message: e.to_string(),
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
                Self::configure(&c, &cfg, location.is_some())
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
                message: "timed out opening the database".into(),
            })??;
        let writer = conns.remove(0);
        let readers = conns.into_iter().map(|c| Mutex::new(Some(c))).collect();
        shared.open.fetch_add(1, Ordering::AcqRel);
        Ok(TursoBackend {
            cfg,
            target,
            db: std::sync::Mutex::new(Some(db)),
            shared,
            writer: Mutex::new(Some(writer)),
            readers,
            next_reader: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            queue_ids: QueueIds::default(),
        })
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

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    async fn take<'a>(
        &'a self,
        slot: &'a Slot,
        gate: Option<MutexGuard<'a, ()>>,
    ) -> Result<Held<'a>> {
        let guard = slot.lock().await;
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

    /// The writer connection, after the process-wide write gate of this file.
    async fn writer(&self) -> Result<Held<'_>> {
        self.check_open()?;
        yield_before_engine_work().await;
        let gate = self.shared.gate.lock().await;
        self.take(&self.writer, Some(gate)).await
    }

    /// A reader connection (the writer's, for an in-memory database).
    async fn reader(&self) -> Result<Held<'_>> {
        self.check_open()?;
        yield_before_engine_work().await;
        if self.readers.is_empty() {
            return self.writer().await;
        }
        for slot in &self.readers {
            if let Ok(guard) = slot.try_lock() {
                if guard.is_none() {
                    return Err(Error::Closed);
                }
                let held = Held {
                    guard,
                    target: &self.target,
                    _gate: None,
                };
                held.reset().await?;
                return Ok(held);
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.take(&self.readers[i], None).await
    }

    /// A write transaction on the writer connection.
    async fn write_tx(&self) -> Result<Held<'_>> {
        let w = self.writer().await?;
        w.begin().await?;
        Ok(w)
    }

    /// Claim from the queue with this id (see [`QueueIds::claim`]).
    async fn claim_in(&self, queue_id: i64, p: &ClaimParams<'_>) -> Result<Vec<Message>> {
        let now = now_us();
        let w = self.writer().await?;
        let rows = w
            .all(
                CLAIM,
                vec![
                    queue_id.into(),
                    now.into(),
                    now.saturating_add(us(p.lease)).into(),
                    (p.limit as i64).into(),
                    p.worker_id.into(),
                ],
            )
            .await?;
        drop(w);
        let mut msgs = rows
            .iter()
            .map(|r| {
                Ok(Message {
                    id: r.i64(0)?,
                    queue: p.queue.to_string(),
                    payload: r.json(1)?,
                    attempts: r.i32(2)?,
                    max_attempts: r.i32(3)?,
                    enqueued_at: r.time(4)?,
                    visible_at: r.time(5)?,
                    last_error: r.opt_str(6)?,
                    lease_token: r.i64(7)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        msgs.sort_unstable_by_key(|m| m.id);
        Ok(msgs)
    }

    async fn queue_id(&self, name: &str) -> Result<i64> {
        if let Some(id) = self.queue_ids.get(name) {
            return Ok(id);
        }
        let id = self.get_queue(name).await?.id;
        self.queue_ids.put(name, id);
        Ok(id)
    }

    /// Run a lease statement built for `leases.len()` leases, in its own transaction.
    async fn lease_update(&self, sql: String, pre: &[i64], leases: &[Lease]) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let w = self.writer().await?;
        // One statement: atomic by itself.
        let ids = w.ids(&sql, lease_params(pre, leases), leases.len()).await?;
        Ok(mark(leases, ids))
    }

    async fn apply_migrations(&self, up_to: i64) -> Result<()> {
        let w = self.write_tx().await?;
        let r = async {
            w.exec(VERSION_TABLE, vec![]).await?;
            let current = w
                .one(SCHEMA_VERSION, vec![])
                .await?
                .opt_i64(0)?
                .unwrap_or(0);
            let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
            if current > latest {
                return Err(Error::SchemaTooNew {
                    found: current,
                    supported: latest,
                });
            }
            for (version, sql) in MIGRATIONS {
                if *version <= current || *version > up_to {
                    continue;
                }
                w.conn().execute_batch(sql).await.map_err(|e| w.err(e))?;
                w.exec(INSERT_VERSION, vec![(*version).into(), now_us().into()])
                    .await?;
            }
            Ok(())
        }
        .await;
        w.finish(r).await
    }
}

#[async_trait]
impl Backend for TursoBackend {
    fn config(&self) -> &Config {
        &self.cfg
    }

    async fn install(&self) -> Result<()> {
        self.apply_migrations(i64::MAX).await
    }

    async fn install_up_to(&self, version: i64) -> Result<()> {
        self.apply_migrations(version).await
    }

    async fn verify(&self) -> Result<()> {
        let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        check_schema_version(self.schema_version().await?, latest, || {
            format!(" in {}", self.target)
        })?;
        let r = self.reader().await?;
        let mut missing = Vec::new();
        for name in TABLES.iter().chain(INDEXES) {
            if r.one(OBJECT_EXISTS, vec![(*name).into()]).await?.i64(0)? == 0 {
                missing.push(*name);
            }
        }
        check_missing(&missing, "")
    }

    async fn schema_version(&self) -> Result<Option<i64>> {
        let r = self.reader().await?;
        if r.one(OBJECT_EXISTS, vec!["pgqrs_schema_version".into()])
            .await?
            .i64(0)?
            == 0
        {
            return Ok(None);
        }
        r.one(SCHEMA_VERSION, vec![]).await?.opt_i64(0)
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

    async fn create_queue(&self, name: &str) -> Result<QueueInfo> {
        let w = self.writer().await?;
        match w
            .opt(CREATE_QUEUE, vec![name.into(), now_us().into()])
            .await?
        {
            Some(r) => queue_info(&r),
            None => Err(Error::QueueAlreadyExists {
                queue: name.to_string(),
            }),
        }
    }

    async fn get_queue(&self, name: &str) -> Result<QueueInfo> {
        let r = self.reader().await?;
        match r.opt(GET_QUEUE, vec![name.into()]).await? {
            Some(row) => queue_info(&row),
            None => Err(Error::QueueNotFound {
                queue: name.to_string(),
            }),
        }
    }

    async fn delete_queue(&self, name: &str, force: bool) -> Result<()> {
        let w = self.write_tx().await?;
        let r = async {
            let id = match w
                .opt(
                    "SELECT id FROM pgqrs_queues WHERE name = ?",
                    vec![name.into()],
                )
                .await?
            {
                Some(r) => r.i64(0)?,
                None => {
                    return Err(Error::QueueNotFound {
                        queue: name.to_string(),
                    })
                }
            };
            if !force {
                let leased = w
                    .one(COUNT_LEASED, vec![id.into(), now_us().into()])
                    .await?
                    .i64(0)?;
                if leased > 0 {
                    return Err(Error::QueueInUse {
                        queue: name.to_string(),
                        leased: leased as u64,
                    });
                }
            }
            for sql in [
                DELETE_QUEUE_JOBS,
                DELETE_QUEUE_ARCHIVE,
                DELETE_QUEUE_DEAD,
                DELETE_QUEUE,
            ] {
                w.exec(sql, vec![id.into()]).await?;
            }
            Ok(())
        }
        .await;
        w.finish(r).await?;
        self.queue_ids.forget(name);
        Ok(())
    }

    async fn purge_queue(&self, name: &str) -> Result<u64> {
        let id = self.queue_id(name).await?;
        let w = self.writer().await?;
        w.exec(DELETE_QUEUE_JOBS, vec![id.into()]).await
    }

    async fn list_queues(&self) -> Result<Vec<QueueInfo>> {
        let r = self.reader().await?;
        r.all(LIST_QUEUES, vec![])
            .await?
            .iter()
            .map(queue_info)
            .collect()
    }

    async fn queue_metrics(&self, name: &str) -> Result<QueueMetrics> {
        let id = self.queue_id(name).await?;
        let now = now_us();
        let r = self.reader().await?;
        let row = r.one(QUEUE_METRICS, vec![id.into(), now.into()]).await?;
        let oldest = row.opt_i64(3)?;
        Ok(QueueMetrics {
            queue: name.to_string(),
            ready: row.i64(0)?,
            delayed: row.i64(1)?,
            leased: row.i64(2)?,
            oldest_ready_age_secs: oldest
                .map(|t| ((now - t).max(0)) as f64 / 1e6)
                .unwrap_or(0.0),
            archived: row.i64(4)?,
            dead: row.i64(5)?,
        })
    }

    async fn enqueue_jobs(&self, p: EnqueueParams<'_>) -> Result<Vec<i64>> {
        let EnqueueParams {
            queue,
            payloads,
            visibility,
            max_attempts,
        } = p;
        let queue_id = self.queue_id(queue).await?;
        let now = now_us();
        let visible_at = match visibility {
            Visibility::Now => now,
            Visibility::After(d) => now.saturating_add(us(d)),
            Visibility::At(t) => t.timestamp_micros(),
        };
        let w = self.write_tx().await?;
        let r = async {
            let mut ids = Vec::with_capacity(payloads.len());
            for chunk in payloads.chunks(INSERT_CHUNK) {
                let mut p: Vec<Value> = vec![
                    queue_id.into(),
                    max_attempts.into(),
                    now.into(),
                    visible_at.into(),
                ];
                p.extend(chunk.iter().map(|s| Value::Text(s.clone())));
                let got = w
                    .rows(&enqueue(chunk.len()), p, chunk.len() == 1)
                    .await
                    .map_err(|e| match e {
                        Error::Database { ref message, .. } if message.contains("FOREIGN KEY") => {
                            self.queue_ids.forget(queue);
                            Error::QueueNotFound {
                                queue: queue.to_string(),
                            }
                        }
                        e => e,
                    })?;
                for r in got {
                    ids.push(r.i64(0)?);
                }
            }
            Ok(ids)
        }
        .await;
        let mut ids = w.finish(r).await?;
        ids.sort_unstable();
        if visible_at <= now {
            self.shared.wakers.wake(queue);
        }
        Ok(ids)
    }

    async fn claim_jobs(&self, p: ClaimParams<'_>) -> Result<Vec<Message>> {
        self.queue_ids
            .claim(
                p.queue,
                || async { Ok(self.get_queue(p.queue).await?.id) },
                |id| self.claim_in(id, &p),
            )
            .await
    }

    async fn complete_jobs(&self, leases: &[Lease], how: Completion) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let w = self.write_tx().await?;
        let r = async {
            let mut done = Vec::with_capacity(leases.len());
            for chunk in leases.chunks(LEASE_CHUNK) {
                if how == Completion::Archive {
                    let sql = archive(chunk.len());
                    w.rows(
                        &sql,
                        lease_params(&[now_us()], chunk),
                        chunk.len() <= CACHE_LEASE_STMTS_UP_TO,
                    )
                    .await?;
                }
                done.extend(
                    w.ids(&delete(chunk.len()), lease_params(&[], chunk), chunk.len())
                        .await?,
                );
            }
            Ok(done)
        }
        .await;
        let done = w.finish(r).await?;
        Ok(mark(leases, done))
    }

    async fn fail_jobs(&self, failures: &[Failure]) -> Result<Vec<bool>> {
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_us();
        let w = self.write_tx().await?;
        let r = async {
            let mut done = Vec::new();
            for f in failures {
                let one = [f.lease];
                match f.retry_in {
                    Some(d) => {
                        let mut p: Vec<Value> =
                            vec![now.saturating_add(us(d)).into(), f.error.as_str().into()];
                        p.extend(lease_params(&[], &one));
                        done.extend(w.ids(&retry(1), p, 1).await?);
                    }
                    None => {
                        let mut p: Vec<Value> = vec![now.into(), f.error.as_str().into()];
                        p.extend(lease_params(&[], &one));
                        w.rows(&bury(1), p, true).await?;
                        done.extend(w.ids(&delete(1), lease_params(&[], &one), 1).await?);
                    }
                }
            }
            Ok(done)
        }
        .await;
        let done = w.finish(r).await?;
        let leases: Vec<Lease> = failures.iter().map(|f| f.lease).collect();
        Ok(mark(&leases, done))
    }

    async fn extend_leases(&self, leases: &[Lease], by: Duration) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(leases.len());
        for chunk in leases.chunks(LEASE_CHUNK) {
            let until = now_us().saturating_add(us(by));
            out.extend(
                self.lease_update(extend(chunk.len()), &[until], chunk)
                    .await?,
            );
        }
        Ok(out)
    }

    async fn release_jobs(&self, leases: &[Lease], delay: Duration) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(leases.len());
        for chunk in leases.chunks(LEASE_CHUNK) {
            let at = now_us().saturating_add(us(delay));
            out.extend(
                self.lease_update(release(chunk.len()), &[at], chunk)
                    .await?,
            );
        }
        if delay.is_zero() && out.iter().any(|x| *x) {
            // Wake any idle worker of this process; the queue name is not known here, so
            // wake them all.
            self.shared.wakers.wake_all();
        }
        Ok(out)
    }

    async fn dead_letters(&self, queue: &str, limit: i64) -> Result<Vec<DeadLetter>> {
        let id = self.queue_id(queue).await?;
        let r = self.reader().await?;
        r.all(DEAD_LETTERS, vec![id.into(), limit.into()])
            .await?
            .iter()
            .map(|r| {
                Ok(DeadLetter {
                    id: r.i64(0)?,
                    queue: queue.to_string(),
                    payload: r.json(1)?,
                    attempts: r.i32(2)?,
                    last_error: r.opt_str(3)?,
                    enqueued_at: r.time(4)?,
                    failed_at: r.time(5)?,
                })
            })
            .collect()
    }

    async fn requeue_dead(&self, queue: &str, ids: Option<&[i64]>) -> Result<u64> {
        let qid = self.queue_id(queue).await?;
        let now = now_us();
        let w = self.write_tx().await?;
        let r = async {
            let mut n = 0;
            match ids {
                None => {
                    n += w
                        .exec(REQUEUE_DEAD_ALL, vec![qid.into(), now.into()])
                        .await?;
                    w.exec(DELETE_DEAD_ALL, vec![qid.into()]).await?;
                }
                Some(ids) => {
                    for id in ids {
                        n += w
                            .exec(REQUEUE_DEAD_ONE, vec![qid.into(), now.into(), (*id).into()])
                            .await?;
                        w.exec(DELETE_DEAD_ONE, vec![qid.into(), now.into(), (*id).into()])
                            .await?;
                    }
                }
            }
            Ok(n)
        }
        .await;
        let n = w.finish(r).await?;
        if n > 0 {
            self.shared.wakers.wake(queue);
        }
        Ok(n)
    }

    async fn archived_jobs(&self, queue: &str, limit: i64) -> Result<Vec<ArchivedJob>> {
        let id = self.queue_id(queue).await?;
        let r = self.reader().await?;
        r.all(ARCHIVED, vec![id.into(), limit.into()])
            .await?
            .iter()
            .map(|r| {
                Ok(ArchivedJob {
                    id: r.i64(0)?,
                    queue: queue.to_string(),
                    payload: r.json(1)?,
                    attempts: r.i32(2)?,
                    enqueued_at: r.time(3)?,
                    archived_at: r.time(4)?,
                })
            })
            .collect()
    }

    async fn rescue_expired(&self, queue: &str) -> Result<u64> {
        let qid = self.queue_id(queue).await?;
        let now = now_us();
        // Cheap read first: almost always there is nothing to do.
        {
            let r = self.reader().await?;
            if r.opt(RESCUE_SELECT, vec![qid.into(), now.into()])
                .await?
                .is_none()
            {
                return Ok(0);
            }
        }
        let w = self.write_tx().await?;
        let r = async {
            w.exec(
                RESCUE_BURY,
                vec![qid.into(), now.into(), EXPIRED_FINAL.into()],
            )
            .await?;
            w.exec(RESCUE_DELETE, vec![qid.into(), now.into()]).await
        }
        .await;
        w.finish(r).await
    }

    async fn register_worker(&self, nw: NewWorker) -> Result<i64> {
        let now = now_us();
        let w = self.writer().await?;
        w.one(
            REGISTER_WORKER,
            vec![
                nw.hostname.into(),
                nw.pid.into(),
                nw.queue.into(),
                now.into(),
                now.into(),
            ],
        )
        .await?
        .i64(0)
    }

    async fn worker_heartbeat(&self, id: i64, status: WorkerStatus) -> Result<()> {
        let w = self.writer().await?;
        w.exec(
            HEARTBEAT,
            vec![now_us().into(), status.as_str().into(), id.into()],
        )
        .await?;
        Ok(())
    }

    async fn list_workers(&self) -> Result<Vec<WorkerInfo>> {
        let r = self.reader().await?;
        r.all(LIST_WORKERS, vec![])
            .await?
            .iter()
            .map(|r| {
                Ok(WorkerInfo {
                    id: r.i64(0)?,
                    hostname: r.string(1)?,
                    pid: r.i64(2)?,
                    queue: r.string(3)?,
                    started_at: r.time(4)?,
                    heartbeat_at: r.time(5)?,
                    status: WorkerStatus::parse(r.str(6)?),
                })
            })
            .collect()
    }

    async fn wait_for_jobs(&self, queue: &str, timeout: Duration) {
        self.shared.wakers.wait(queue, timeout).await
    }

    async fn create_run(&self, name: &str, input: String) -> Result<WorkflowRun> {
        let w = self.writer().await?;
        let r = w
            .one(CREATE_RUN, vec![name.into(), input.into(), now_us().into()])
            .await?;
        run(&r)
    }

    async fn get_run(&self, id: i64) -> Result<WorkflowRun> {
        let r = self.reader().await?;
        match r.opt(GET_RUN, vec![id.into()]).await? {
            Some(row) => run(&row),
            None => Err(Error::WorkflowNotFound { id }),
        }
    }

    async fn acquire_run(
        &self,
        id: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<WorkflowRun>> {
        let now = now_us();
        let w = self.writer().await?;
        w.opt(
            ACQUIRE_RUN,
            vec![
                id.into(),
                owner.into(),
                now.into(),
                now.saturating_add(us(lease)).into(),
            ],
        )
        .await?
        .map(|r| run(&r))
        .transpose()
    }

    async fn run_lease(&self, id: i64) -> Result<RunLease> {
        let r = self.reader().await?;
        let row = r
            .opt(RUN_LEASE, vec![id.into(), now_us().into()])
            .await?
            .ok_or(Error::WorkflowNotFound { id })?;
        let status = row.str(0)?;
        Ok(RunLease {
            status: RunStatus::parse(status)
                .ok_or_else(|| decode("a run status", &Value::Text(status.into())))?,
            owner: row.opt_str(1)?,
            lease_valid: row.i64(2)? != 0,
        })
    }

    async fn renew_run(&self, id: i64, owner: &str, lease: Duration) -> Result<bool> {
        let now = now_us();
        let w = self.writer().await?;
        Ok(w.opt(
            RENEW_RUN,
            vec![
                id.into(),
                owner.into(),
                now.into(),
                now.saturating_add(us(lease)).into(),
            ],
        )
        .await?
        .is_some())
    }

    async fn list_steps(&self, run_id: i64) -> Result<Vec<StepRecord>> {
        let r = self.reader().await?;
        r.all(LIST_STEPS, vec![run_id.into()])
            .await?
            .iter()
            .map(|r| {
                let status = r.str(3)?;
                Ok(StepRecord {
                    run_id: r.i64(0)?,
                    position: r.i32(1)?,
                    name: r.string(2)?,
                    status: StepStatus::parse(status)
                        .ok_or_else(|| decode("a step status", &Value::Text(status.into())))?,
                    output: r.opt_json(4)?,
                    error: r.opt_str(5)?,
                    attempts: r.i32(6)?,
                    next_retry_at: r.opt_time(7)?,
                })
            })
            .collect()
    }

    async fn record_step(&self, owner: &str, s: NewStep<'_>) -> Result<bool> {
        let now = now_us();
        let w = self.writer().await?;
        Ok(w.opt(
            RECORD_STEP,
            vec![
                s.run_id.into(),
                s.position.into(),
                s.name.into(),
                s.status.as_str().into(),
                s.output.into(),
                s.error.into(),
                s.attempts.into(),
                s.retry_in.map(|d| now.saturating_add(us(d))).into(),
                owner.into(),
                now.into(),
            ],
        )
        .await?
        .is_some())
    }

    async fn finish_run(&self, p: FinishRunParams<'_>) -> Result<bool> {
        let FinishRunParams {
            id,
            owner,
            status,
            output,
            error,
        } = p;
        let w = self.writer().await?;
        Ok(w.opt(
            FINISH_RUN,
            vec![
                id.into(),
                owner.into(),
                status.as_str().into(),
                output.into(),
                error.into(),
                now_us().into(),
            ],
        )
        .await?
        .is_some())
    }

    async fn cancel_run(&self, id: i64) -> Result<bool> {
        let w = self.writer().await?;
        Ok(w.opt(CANCEL_RUN, vec![id.into(), now_us().into()])
            .await?
            .is_some())
    }

    async fn list_runs(&self, status: Option<RunStatus>, limit: i64) -> Result<Vec<WorkflowRun>> {
        let r = self.reader().await?;
        r.all(
            LIST_RUNS,
            vec![status.map(|s| s.as_str()).into(), limit.into()],
        )
        .await?
        .iter()
        .map(run)
        .collect()
    }
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
            let b = TursoBackend::connect(cfg).await.unwrap();
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
