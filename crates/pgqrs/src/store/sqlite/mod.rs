//! The SQLite-dialect backend: one backend for two engines that speak the same SQL, SQLite
//! through sqlx (`sqlx.rs`) and Turso (`turso.rs`).
//!
//! Everything above the connection is written once, here: the statements (`queries.rs`), the
//! migrations (`migrations/`), transactions, batching, wake-ups and row decoding. An engine
//! only hands out held connections ([`Engine`], [`Conn`], [`Tx`]) and keeps what is its own:
//! how it connects, closes and learns of other connections' commits.
//!
//! * Timestamps are microseconds since the epoch.
//! * Writes go through one writer connection per store; a write of several statements is one
//!   `BEGIN IMMEDIATE` transaction. A single statement runs on its own (an autocommit write
//!   takes the write lock before it reads, so it needs no `BEGIN IMMEDIATE`).
//! * Every statement runs to its end (see [`Conn::rows`]).

mod inspect;
#[cfg(all(test, feature = "sqlite"))]
mod plans;
mod queries;
mod schedules;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlx;
#[cfg(feature = "turso")]
pub(crate) mod turso;
mod unique;

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use self::queries::*;
use super::decode::{self, Cols};
use super::*;

/// Largest number of leases in one statement (two parameters each, well under SQLite's limit).
const LEASE_CHUNK: usize = 4000;
/// Largest number of rows in one multi-row insert.
const INSERT_CHUNK: usize = 5000;
/// The schema version this build installs.
const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2)
}

/// When jobs enqueued at `now` become claimable, in microseconds since the epoch.
fn visible_at(v: Visibility, now: i64) -> i64 {
    match v {
        Visibility::Now => now,
        Visibility::After(d) => now.saturating_add(us(d)),
        Visibility::At(t) => t.timestamp_micros(),
    }
}

/// A queue's id, looked up in the caller's transaction (which may have created the queue);
/// never cached from there, since that transaction may still roll back.
async fn caller_queue_id<C: Conn>(c: &mut C, queue: &str) -> Result<i64> {
    match first(c.rows(QUEUE_ID, &[queue.into()]).await?) {
        Some(r) => r.i64(0),
        None => Err(Error::QueueNotFound {
            queue: queue.to_string(),
        }),
    }
}

/// A value bound to a statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(i64),
    Text(&'a str),
    Null,
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<i32> for Arg<'_> {
    fn from(v: i32) -> Self {
        Arg::Int(v.into())
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}

impl<'a, T: Into<Arg<'a>>> From<Option<T>> for Arg<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Arg::Null, Into::into)
    }
}

/// A statement's text, and whether the engine should keep it prepared. Fixed statements
/// (`&'static str`) are kept; built ones say so (see `queries.rs`). sqlx keeps every statement
/// in its own bounded cache, so only Turso reads the flag.
pub(crate) struct Sql {
    text: Cow<'static, str>,
    #[cfg_attr(not(feature = "turso"), allow(dead_code))]
    keep: bool,
}

impl Sql {
    fn built(text: String, keep: bool) -> Self {
        Sql {
            text: Cow::Owned(text),
            keep,
        }
    }
}

impl From<&'static str> for Sql {
    fn from(text: &'static str) -> Self {
        Sql {
            text: Cow::Borrowed(text),
            keep: true,
        }
    }
}

/// A connection an engine hands out for one operation.
pub(crate) trait Conn: Send {
    type Row: Cols + Send;

    /// Run a statement to its end and return every row. Writes must run to their end: a
    /// statement stopped after its first row is reset instead, and SQLite commits an
    /// autocommit write on reset without running its WAL hook (the automatic checkpoint), so
    /// the WAL grew without bound (77 MB after 6,000 `create_workflow` calls).
    fn rows(
        &mut self,
        sql: impl Into<Sql> + Send,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<Self::Row>>> + Send;

    /// Run a statement that returns no rows; the number of rows it changed.
    fn exec(
        &mut self,
        sql: impl Into<Sql> + Send,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<u64>> + Send;
}

/// A `BEGIN IMMEDIATE` transaction on the writer connection. Dropped without
/// [`finish`](Self::finish) (a cancelled task), it is rolled back before the connection is
/// used again.
pub(crate) trait Tx: Conn + Sized {
    /// Run a script of several statements (a migration).
    fn script(&mut self, sql: &'static str) -> impl Future<Output = Result<()>> + Send;
    fn commit(self) -> impl Future<Output = Result<()>> + Send;
    fn rollback(self) -> impl Future<Output = ()> + Send;

    /// Commit when `r` is `Ok`, roll back otherwise.
    fn finish<T: Send>(self, r: Result<T>) -> impl Future<Output = Result<T>> + Send {
        async move {
            match r {
                Ok(v) => self.commit().await.map(|()| v),
                Err(e) => {
                    self.rollback().await;
                    Err(e)
                }
            }
        }
    }
}

/// A database engine that speaks the SQLite dialect.
pub(crate) trait Engine: Sized + Send + Sync + 'static {
    type Conn<'a>: Conn
    where
        Self: 'a;
    type Tx<'a>: Tx
    where
        Self: 'a;

    fn connect(cfg: &Config) -> impl Future<Output = Result<Self>> + Send;
    /// What error messages call the database ("sqlite file jobs.db").
    fn target(&self) -> &str;
    /// The idle workers an enqueue through this store wakes.
    fn wakers(&self) -> &Wakers;
    /// A connection for reads.
    fn reader(&self) -> impl Future<Output = Result<Self::Conn<'_>>> + Send;
    /// The writer connection, for one statement.
    fn writer(&self) -> impl Future<Output = Result<Self::Conn<'_>>> + Send;
    /// A write transaction on the writer connection.
    fn begin(&self) -> impl Future<Output = Result<Self::Tx<'_>>> + Send;
    fn close(&self) -> impl Future<Output = ()> + Send;
    /// A worker is about to wait for jobs: make sure it hears of other connections' commits.
    fn will_wait(&self) {}
}

/// The first row, if any.
fn first<R>(rows: Vec<R>) -> Option<R> {
    rows.into_iter().next()
}

/// The first row, which the statement always returns.
fn one<R>(rows: Vec<R>) -> Result<R> {
    first(rows).ok_or_else(|| Error::Database {
        code: None,
        message: "statement returned no row".into(),
    })
}

/// The ids a statement returned.
fn ids<R: Cols>(rows: Vec<R>) -> Result<Vec<i64>> {
    rows.iter().map(|r| r.i64(0)).collect()
}

/// `pre`, then one `(id, token)` pair per lease.
fn lease_args(pre: &[i64], leases: &[Lease]) -> Vec<Arg<'static>> {
    let mut a = Vec::with_capacity(pre.len() + 2 * leases.len());
    a.extend(pre.iter().map(|v| Arg::Int(*v)));
    for l in leases {
        a.extend([Arg::Int(l.id), Arg::Int(l.token)]);
    }
    a
}

/// A run's id, its owner, now and the end of a lease from now.
fn run_lease_args(id: i64, owner: &str, lease: Duration) -> [Arg<'_>; 4] {
    let now = now_us();
    [
        Arg::Int(id),
        Arg::Text(owner),
        Arg::Int(now),
        Arg::Int(now.saturating_add(us(lease))),
    ]
}

/// The backend over an engine.
pub(crate) struct SqliteBackend<E> {
    cfg: Config,
    e: E,
    queue_ids: QueueIds,
}

type Row<'a, E> = <<E as Engine>::Conn<'a> as Conn>::Row;

impl<E: Engine> SqliteBackend<E> {
    pub(crate) async fn connect(cfg: Config) -> Result<Self> {
        Ok(SqliteBackend {
            e: E::connect(&cfg).await?,
            cfg,
            queue_ids: QueueIds::default(),
        })
    }

    /// One read statement.
    async fn read(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<Row<'_, E>>> {
        self.e.reader().await?.rows(sql, args).await
    }

    /// One write statement, on its own.
    async fn write(&self, sql: impl Into<Sql> + Send, args: &[Arg<'_>]) -> Result<Vec<Row<'_, E>>> {
        self.e.writer().await?.rows(sql, args).await
    }

    /// One lease statement, on its own: `template` built for the leases, `pre` bound first.
    async fn lease_update(&self, template: &str, pre: i64, leases: &[Lease]) -> Result<Vec<bool>> {
        let sql = for_leases(template, leases.len());
        let done = ids(self.write(sql, &lease_args(&[pre], leases)).await?)?;
        Ok(mark(leases, done))
    }

    /// An enqueue's error: the queue was deleted (by another store) if its key is gone.
    fn queue_gone(&self, e: Error, queue: &str) -> Error {
        match e {
            Error::Database { ref message, .. } if message.contains("FOREIGN KEY") => {
                self.queue_ids.forget(queue);
                Error::QueueNotFound {
                    queue: queue.to_string(),
                }
            }
            e => e,
        }
    }

    /// Insert the jobs of a plain enqueue, in `tx` (chunks of [`INSERT_CHUNK`] rows); their
    /// ids.
    async fn insert_jobs<C: Conn>(
        &self,
        tx: &mut C,
        queue_id: i64,
        p: &EnqueueParams<'_>,
        now: i64,
        visible_at: i64,
    ) -> Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(p.payloads.len());
        for chunk in p.payloads.chunks(INSERT_CHUNK) {
            let mut args = Vec::with_capacity(7 + chunk.len());
            args.extend(
                [
                    queue_id,
                    p.max_attempts.into(),
                    now,
                    visible_at,
                    p.priority.into(),
                ]
                .map(Arg::Int),
            );
            args.push(p.timeout_ms.into());
            args.push(p.group.as_deref().into());
            args.extend(chunk.iter().map(|s| Arg::Text(s)));
            let rows = tx.rows(enqueue(chunk.len()), &args).await;
            for r in rows.map_err(|e| self.queue_gone(e, p.queue))? {
                ids.push(r.i64(0)?);
            }
        }
        Ok(ids)
    }

    /// A transaction for an enqueue on the caller's connection: a savepoint in the
    /// caller's transaction, or a `BEGIN IMMEDIATE` one of its own when the connection is in
    /// none (see `sqlx.rs`). The core has checked that the store is an SQLite one.
    #[cfg(feature = "sqlite")]
    async fn caller_tx<'c>(&'c self, on: Caller<'c>) -> Result<impl Tx + 'c> {
        match on {
            Caller::Sqlite(c) => self::sqlx::caller_tx(c, self.e.target()).await,
            #[allow(unreachable_patterns)]
            other => Err(Error::validation(
                "connection",
                format!(
                    "a {} connection cannot run an SQLite store's enqueue",
                    other.kind().name()
                ),
            )),
        }
    }

    /// Without sqlx's SQLite there is no connection a caller could hand in.
    #[cfg(not(feature = "sqlite"))]
    async fn caller_tx<'c>(&'c self, on: Caller<'c>) -> Result<E::Tx<'c>> {
        Err(Error::validation(
            "connection",
            format!(
                "a {} connection cannot run this store's enqueue",
                on.kind().name()
            ),
        ))
    }

    async fn migrate(&self, up_to: i64) -> Result<()> {
        let mut tx = self.e.begin().await?;
        let r = async {
            tx.exec(VERSION_TABLE, &[]).await?;
            let current = one(tx.rows(SCHEMA_VERSION, &[]).await?)?.opt_i64(0)?;
            for (version, sql) in pending_migrations(MIGRATIONS, current.unwrap_or(0), up_to)? {
                tx.script(sql).await?;
                tx.exec(INSERT_VERSION, &[(*version).into(), now_us().into()])
                    .await?;
            }
            Ok(())
        }
        .await;
        tx.finish(r).await
    }
}

#[async_trait]
impl<E: Engine> Backend for SqliteBackend<E> {
    fn config(&self) -> &Config {
        &self.cfg
    }

    fn queue_ids(&self) -> &QueueIds {
        &self.queue_ids
    }

    async fn install_up_to(&self, version: i64) -> Result<()> {
        self.migrate(version).await
    }

    async fn verify(&self) -> Result<()> {
        check_schema_version(self.schema_version().await?, LATEST, || {
            format!(" in {}", self.e.target())
        })?;
        let mut r = self.e.reader().await?;
        let mut missing = Vec::new();
        for name in TABLES.iter().chain(INDEXES) {
            if one(r.rows(OBJECT_EXISTS, &[(*name).into()]).await?)?.i64(0)? == 0 {
                missing.push(*name);
            }
        }
        check_missing(&missing, "")
    }

    async fn schema_version(&self) -> Result<Option<i64>> {
        let mut r = self.e.reader().await?;
        let table = one(r
            .rows(OBJECT_EXISTS, &["pgqrs_schema_version".into()])
            .await?)?;
        if table.i64(0)? == 0 {
            return Ok(None);
        }
        one(r.rows(SCHEMA_VERSION, &[]).await?)?.opt_i64(0)
    }

    async fn close(&self) {
        self.e.close().await
    }

    async fn create_queue(&self, q: NewQueue<'_>) -> Result<QueueInfo> {
        let args = [
            q.name.into(),
            now_us().into(),
            q.archive_retention.stored().into(),
            q.dead_retention.stored().into(),
            q.limits.stored().0.into(),
            q.limits.stored().1.into(),
            q.limits.stored().2.into(),
            q.limits.stored().3.into(),
        ];
        match first(self.write(CREATE_QUEUE, &args).await?) {
            Some(r) => decode::queue_info(&r),
            None => Err(Error::QueueAlreadyExists {
                queue: q.name.to_string(),
            }),
        }
    }

    async fn set_queue_limits(&self, name: &str, limits: crate::QueueLimits) -> Result<QueueInfo> {
        let (c, g, rj, rp) = limits.stored();
        let args = [name.into(), c.into(), g.into(), rj.into(), rp.into()];
        match first(self.write(SET_QUEUE_LIMITS, &args).await?) {
            Some(r) => decode::queue_info(&r),
            None => Err(Error::QueueNotFound {
                queue: name.to_string(),
            }),
        }
    }

    async fn set_queue_retention(
        &self,
        name: &str,
        archive: Option<Retention>,
        dead: Option<Retention>,
    ) -> Result<QueueInfo> {
        let args = [
            name.into(),
            i64::from(archive.is_some()).into(),
            archive.and_then(Retention::stored).into(),
            i64::from(dead.is_some()).into(),
            dead.and_then(Retention::stored).into(),
        ];
        match first(self.write(SET_QUEUE_RETENTION, &args).await?) {
            Some(r) => decode::queue_info(&r),
            None => Err(Error::QueueNotFound {
                queue: name.to_string(),
            }),
        }
    }

    async fn prune_batch(
        &self,
        what: Prunable,
        queue_id: i64,
        older_than: Duration,
        limit: i64,
    ) -> Result<u64> {
        let cutoff = now_us().saturating_sub(us(older_than));
        match what {
            Prunable::Archive | Prunable::Dead => {
                let sql = if what == Prunable::Archive {
                    PRUNE_ARCHIVE
                } else {
                    PRUNE_DEAD
                };
                let args = [queue_id.into(), cutoff.into(), limit.into()];
                self.e.writer().await?.exec(sql, &args).await
            }
            Prunable::WorkflowRuns => {
                let args = [cutoff.into(), limit.into()];
                let mut tx = self.e.begin().await?;
                let r = async {
                    tx.exec(PRUNE_RUN_STEPS, &args).await?;
                    tx.exec(PRUNE_RUNS, &args).await
                }
                .await;
                tx.finish(r).await
            }
        }
    }

    async fn get_setting(&self, name: &str) -> Result<Option<Option<i64>>> {
        let r = first(self.read(GET_SETTING, &[name.into()]).await?);
        r.map(|r| r.opt_i64(0)).transpose()
    }

    async fn set_setting(&self, name: &str, value: Option<i64>) -> Result<()> {
        let args = [name.into(), value.into(), now_us().into()];
        self.e.writer().await?.exec(SET_SETTING, &args).await?;
        Ok(())
    }

    async fn get_queue(&self, name: &str) -> Result<QueueInfo> {
        match first(self.read(GET_QUEUE, &[name.into()]).await?) {
            Some(r) => decode::queue_info(&r),
            None => Err(Error::QueueNotFound {
                queue: name.to_string(),
            }),
        }
    }

    async fn delete_queue(&self, name: &str, force: bool) -> Result<()> {
        let mut tx = self.e.begin().await?;
        let r = async {
            let Some(row) = first(tx.rows(QUEUE_ID, &[name.into()]).await?) else {
                return Err(Error::QueueNotFound {
                    queue: name.to_string(),
                });
            };
            let id = row.i64(0)?;
            if !force {
                let leased =
                    one(tx.rows(COUNT_LEASED, &[id.into(), now_us().into()]).await?)?.i64(0)?;
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
                tx.exec(sql, &[id.into()]).await?;
            }
            Ok(())
        }
        .await;
        tx.finish(r).await?;
        self.queue_ids.forget(name);
        Ok(())
    }

    async fn purge_queue(&self, name: &str) -> Result<u64> {
        let id = self.queue_id(name).await?;
        self.e
            .writer()
            .await?
            .exec(DELETE_QUEUE_JOBS, &[id.into()])
            .await
    }

    async fn list_queues(&self) -> Result<Vec<QueueInfo>> {
        let rows = self.read(LIST_QUEUES, &[]).await?;
        rows.iter().map(decode::queue_info).collect()
    }

    async fn queue_metrics(&self, name: &str) -> Result<QueueMetrics> {
        let id = self.queue_id(name).await?;
        let now = now_us();
        let r = one(self.read(QUEUE_METRICS, &[id.into(), now.into()]).await?)?;
        let oldest = r.opt_i64(3)?;
        let age = oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1e6);
        decode::queue_metrics(&r, name, age)
    }

    async fn enqueue_jobs(&self, p: EnqueueParams<'_>, on: On<'_>) -> Result<Vec<i64>> {
        let now = now_us();
        let visible_at = visible_at(p.visibility, now);
        let mut ids = match on {
            On::Pool => {
                let queue_id = self.queue_id(p.queue).await?;
                let mut tx = self.e.begin().await?;
                let r = self
                    .insert_jobs(&mut tx, queue_id, &p, now, visible_at)
                    .await;
                tx.finish(r).await?
            }
            On::Caller(c) => {
                let mut tx = self.caller_tx(c).await?;
                let r = async {
                    let queue_id = caller_queue_id(&mut tx, p.queue).await?;
                    self.insert_jobs(&mut tx, queue_id, &p, now, visible_at)
                        .await
                }
                .await;
                // Committing a savepoint publishes nothing: no wake-up here (see `On`).
                return tx.finish(r).await.map(|mut ids| {
                    ids.sort_unstable();
                    ids
                });
            }
        };
        ids.sort_unstable();
        if visible_at <= now {
            self.e.wakers().wake(p.queue);
        }
        Ok(ids)
    }

    async fn enqueue_unique(
        &self,
        p: EnqueueParams<'_>,
        u: UniqueParams<'_>,
        on: On<'_>,
    ) -> Result<Vec<Placed>> {
        self.enqueue_unique_jobs(p, u, on).await
    }

    /// Claims priority by priority, highest first (see `CLAIM` in `queries.rs`); the
    /// lookups run on the writer, so they see every committed job.
    async fn claim_in(&self, queue_id: i64, p: &ClaimParams<'_>) -> Result<Vec<Message>> {
        claim_by_priority(&mut self.e.writer().await?, queue_id, p, p.limit, now_us()).await
    }

    /// The limits and the live leases are read in the write transaction that claims, so no
    /// other writer (claim, completion, another process) comes between.
    async fn claim_limited(&self, queue_id: i64, p: &ClaimParams<'_>) -> Result<Claim> {
        let mut tx = self.e.begin().await?;
        let r = claim_limited(&mut tx, queue_id, p).await;
        tx.finish(r).await
    }

    fn wake_queue(&self, queue: &str) {
        self.e.wakers().wake(queue);
    }

    async fn complete_jobs(&self, leases: &[Lease], how: Completion) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.e.begin().await?;
        let r = async {
            let mut done = Vec::with_capacity(leases.len());
            for chunk in leases.chunks(LEASE_CHUNK) {
                if how == Completion::Archive {
                    tx.exec(
                        for_leases(ARCHIVE, chunk.len()),
                        &lease_args(&[now_us()], chunk),
                    )
                    .await?;
                }
                let rows = tx
                    .rows(for_leases(DELETE, chunk.len()), &lease_args(&[], chunk))
                    .await?;
                done.extend(ids(rows)?);
            }
            Ok(done)
        }
        .await;
        let done = tx.finish(r).await?;
        Ok(mark(leases, done))
    }

    async fn fail_jobs(&self, failures: &[Failure]) -> Result<Vec<bool>> {
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_us();
        let mut tx = self.e.begin().await?;
        let r = async {
            let mut done = Vec::new();
            for f in failures {
                let (id, token) = (Arg::Int(f.lease.id), Arg::Int(f.lease.token));
                let error = Arg::Text(&f.error);
                let rows = match f.retry_in {
                    Some(d) => {
                        let at = Arg::Int(now.saturating_add(us(d)));
                        let args = [at, error, id, token];
                        tx.rows(for_leases(RETRY, 1), &args).await?
                    }
                    None => {
                        let args = [Arg::Int(now), error, id, token];
                        tx.exec(for_leases(BURY, 1), &args).await?;
                        tx.rows(for_leases(DELETE, 1), &args[2..]).await?
                    }
                };
                done.extend(ids(rows)?);
            }
            Ok(done)
        }
        .await;
        let done = tx.finish(r).await?;
        let leases: Vec<Lease> = failures.iter().map(|f| f.lease).collect();
        Ok(mark(&leases, done))
    }

    async fn extend_leases(&self, leases: &[Lease], by: Duration) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(leases.len());
        for chunk in leases.chunks(LEASE_CHUNK) {
            let until = now_us().saturating_add(us(by));
            out.extend(self.lease_update(EXTEND, until, chunk).await?);
        }
        Ok(out)
    }

    async fn release_jobs(&self, leases: &[Lease], delay: Duration) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(leases.len());
        for chunk in leases.chunks(LEASE_CHUNK) {
            let at = now_us().saturating_add(us(delay));
            out.extend(self.lease_update(RELEASE, at, chunk).await?);
        }
        if delay.is_zero() && out.iter().any(|x| *x) {
            // Wake any idle worker of this process; the queue name is not known here, so
            // wake them all.
            self.e.wakers().wake_all();
        }
        Ok(out)
    }

    async fn dead_letters(&self, queue: &str, limit: i64) -> Result<Vec<DeadLetter>> {
        let id = self.queue_id(queue).await?;
        let rows = self.read(DEAD_LETTERS, &[id.into(), limit.into()]).await?;
        rows.iter().map(|r| decode::dead_letter(r, queue)).collect()
    }

    async fn requeue_dead(&self, queue: &str, ids: Option<&[i64]>) -> Result<u64> {
        let qid = self.queue_id(queue).await?;
        let now = now_us();
        let mut tx = self.e.begin().await?;
        let r = async {
            let mut n = 0;
            match ids {
                None => {
                    n += tx.exec(REQUEUE_DEAD_ALL, &[qid.into(), now.into()]).await?;
                    tx.exec(DELETE_DEAD_ALL, &[qid.into()]).await?;
                }
                Some(ids) => {
                    for id in ids {
                        let args = [qid.into(), now.into(), (*id).into()];
                        n += tx.exec(REQUEUE_DEAD_ONE, &args).await?;
                        tx.exec(DELETE_DEAD_ONE, &args).await?;
                    }
                }
            }
            Ok(n)
        }
        .await;
        let n = tx.finish(r).await?;
        if n > 0 {
            self.e.wakers().wake(queue);
        }
        Ok(n)
    }

    async fn archived_jobs(&self, queue: &str, limit: i64) -> Result<Vec<ArchivedJob>> {
        let id = self.queue_id(queue).await?;
        let rows = self.read(ARCHIVED, &[id.into(), limit.into()]).await?;
        rows.iter()
            .map(|r| decode::archived_job(r, queue))
            .collect()
    }

    async fn rescue_expired(&self, queue: &str) -> Result<u64> {
        let qid = self.queue_id(queue).await?;
        let now = now_us();
        // Cheap read first: almost always there is nothing to do.
        if self
            .read(RESCUE_SELECT, &[qid.into(), now.into()])
            .await?
            .is_empty()
        {
            return Ok(0);
        }
        let mut tx = self.e.begin().await?;
        let r = async {
            let args = [qid.into(), now.into(), EXPIRED_FINAL.into()];
            tx.exec(RESCUE_BURY, &args).await?;
            tx.exec(RESCUE_DELETE, &args[..2]).await
        }
        .await;
        tx.finish(r).await
    }

    async fn register_worker(&self, w: NewWorker) -> Result<i64> {
        let now = now_us();
        let args = [
            w.hostname.as_str().into(),
            w.pid.into(),
            w.queue.as_str().into(),
            now.into(),
            now.into(),
        ];
        one(self.write(REGISTER_WORKER, &args).await?)?.i64(0)
    }

    async fn worker_heartbeat(&self, id: i64, status: WorkerStatus) -> Result<()> {
        let args = [now_us().into(), status.as_str().into(), id.into()];
        self.e.writer().await?.exec(HEARTBEAT, &args).await?;
        Ok(())
    }

    async fn list_workers(&self) -> Result<Vec<WorkerInfo>> {
        let rows = self.read(LIST_WORKERS, &[]).await?;
        rows.iter().map(decode::worker_info).collect()
    }

    async fn create_schedule(&self, s: NewSchedule<'_>) -> Result<ScheduleInfo> {
        self.insert_schedule(s).await
    }

    async fn get_schedule(&self, name: &str) -> Result<ScheduleInfo> {
        match first(self.read(GET_SCHEDULE, &[name.into()]).await?) {
            Some(r) => decode::schedule(&r),
            None => Err(Error::ScheduleNotFound {
                name: name.to_string(),
            }),
        }
    }

    async fn list_schedules(&self) -> Result<Vec<ScheduleInfo>> {
        let rows = self.read(LIST_SCHEDULES, &[]).await?;
        rows.iter().map(decode::schedule).collect()
    }

    /// On the writer, so that it sees every committed firing.
    async fn upcoming_schedules(&self, limit: i64) -> Result<Vec<ScheduleInfo>> {
        let rows = self.write(UPCOMING_SCHEDULES, &[limit.into()]).await?;
        rows.iter().map(decode::schedule).collect()
    }

    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_at: Option<DateTime<Utc>>,
    ) -> Result<ScheduleInfo> {
        self.pause_schedule(name, paused, next_at).await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool> {
        Ok(!self
            .write(DELETE_SCHEDULE, &[name.into()])
            .await?
            .is_empty())
    }

    async fn fire_schedule(&self, f: FireParams<'_>) -> Result<Option<Fired>> {
        self.fire(f).await
    }

    async fn wait_for_jobs(&self, queue: &str, timeout: Duration) {
        self.e.will_wait();
        self.e.wakers().wait(queue, timeout).await
    }

    async fn create_run(&self, name: &str, input: String) -> Result<WorkflowRun> {
        let args = [name.into(), input.as_str().into(), now_us().into()];
        decode::workflow_run(&one(self.write(CREATE_RUN, &args).await?)?)
    }

    async fn get_run(&self, id: i64) -> Result<WorkflowRun> {
        match first(self.read(GET_RUN, &[id.into()]).await?) {
            Some(r) => decode::workflow_run(&r),
            None => Err(Error::WorkflowNotFound { id }),
        }
    }

    async fn acquire_run(
        &self,
        id: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<WorkflowRun>> {
        let r = first(
            self.write(ACQUIRE_RUN, &run_lease_args(id, owner, lease))
                .await?,
        );
        r.map(|r| decode::workflow_run(&r)).transpose()
    }

    async fn run_lease(&self, id: i64) -> Result<RunLease> {
        match first(self.read(RUN_LEASE, &[id.into(), now_us().into()]).await?) {
            Some(r) => decode::run_lease(&r),
            None => Err(Error::WorkflowNotFound { id }),
        }
    }

    async fn renew_run(&self, id: i64, owner: &str, lease: Duration) -> Result<bool> {
        let args = run_lease_args(id, owner, lease);
        Ok(!self.write(RENEW_RUN, &args).await?.is_empty())
    }

    async fn list_steps(&self, run_id: i64) -> Result<Vec<StepRecord>> {
        let rows = self.read(LIST_STEPS, &[run_id.into()]).await?;
        rows.iter().map(decode::step_record).collect()
    }

    async fn record_step(&self, owner: &str, s: NewStep<'_>) -> Result<bool> {
        let now = now_us();
        let args = [
            s.run_id.into(),
            s.position.into(),
            s.name.into(),
            s.status.as_str().into(),
            s.output.as_deref().into(),
            s.error.as_deref().into(),
            s.attempts.into(),
            s.retry_in.map(|d| now.saturating_add(us(d))).into(),
            owner.into(),
            now.into(),
        ];
        Ok(!self.write(RECORD_STEP, &args).await?.is_empty())
    }

    async fn finish_run(&self, p: FinishRunParams<'_>) -> Result<bool> {
        let args = [
            p.id.into(),
            p.owner.into(),
            p.status.as_str().into(),
            p.output.as_deref().into(),
            p.error.as_deref().into(),
            now_us().into(),
        ];
        Ok(!self.write(FINISH_RUN, &args).await?.is_empty())
    }

    async fn cancel_run(&self, id: i64) -> Result<bool> {
        let args = [id.into(), now_us().into()];
        Ok(!self.write(CANCEL_RUN, &args).await?.is_empty())
    }

    async fn list_runs(&self, status: Option<RunStatus>, limit: i64) -> Result<Vec<WorkflowRun>> {
        let args = [status.map(RunStatus::as_str).into(), limit.into()];
        let rows = self.read(LIST_RUNS, &args).await?;
        rows.iter().map(decode::workflow_run).collect()
    }
}

/// [`Backend::claim_in`] on `c` (the writer, or a transaction on it): up to `limit` jobs,
/// priority by priority, highest first.
async fn claim_by_priority<C: Conn>(
    c: &mut C,
    queue_id: i64,
    p: &ClaimParams<'_>,
    limit: usize,
    now: i64,
) -> Result<Vec<Message>> {
    let until = now.saturating_add(us(p.lease));
    let mut msgs: Vec<Message> = Vec::new();
    let mut below: Option<i64> = None;
    while msgs.len() < limit {
        let rows = match below {
            None => c.rows(TOP_PRIORITY, &[queue_id.into()]).await?,
            Some(b) => c.rows(NEXT_PRIORITY, &[queue_id.into(), b.into()]).await?,
        };
        let Some(priority) = rows.first().map(|r| r.i64(0)).transpose()? else {
            break;
        };
        let args = [
            queue_id.into(),
            now.into(),
            until.into(),
            ((limit - msgs.len()) as i64).into(),
            p.worker_id.into(),
            priority.into(),
        ];
        // Each take comes back in id order, all of one priority, below the ones before.
        msgs.extend(decode::claimed(&c.rows(CLAIM, &args).await?, p.queue)?);
        below = Some(priority);
    }
    Ok(msgs)
}

/// The live leases of the queue at `now`: per priority present (the claim index's range
/// after now), plus the final attempts.
async fn count_live<C: Conn>(c: &mut C, queue_id: i64, now: i64) -> Result<i64> {
    let mut live = one(c
        .rows(COUNT_LIVE_FINAL, &[queue_id.into(), now.into()])
        .await?)?
    .i64(0)?;
    let mut below: Option<i64> = None;
    loop {
        let rows = match below {
            None => c.rows(TOP_PRIORITY, &[queue_id.into()]).await?,
            Some(b) => c.rows(NEXT_PRIORITY, &[queue_id.into(), b.into()]).await?,
        };
        let Some(priority) = rows.first().map(|r| r.i64(0)).transpose()? else {
            return Ok(live);
        };
        let args = [queue_id.into(), now.into(), priority.into()];
        live += one(c.rows(COUNT_LIVE_AT, &args).await?)?.i64(0)?;
        below = Some(priority);
    }
}

/// A group-limited claim of up to `want` jobs (see `claim_grouped` in the PostgreSQL
/// backend): each group's free places filled from its ready jobs in visible order, and the
/// ready jobs without a group, the first `want` of them in claim order.
async fn claim_grouped<C: Conn>(
    c: &mut C,
    queue_id: i64,
    p: &ClaimParams<'_>,
    want: i64,
    group_limit: i64,
    now: i64,
) -> Result<Vec<Message>> {
    // (priority, visible_at, id) of every candidate.
    let mut cand: Vec<(i64, i64, i64)> = Vec::new();
    let mut after = String::new();
    loop {
        let rows = c
            .rows(NEXT_GROUP, &[queue_id.into(), after.as_str().into()])
            .await?;
        let Some(group) = rows.first().map(|r| r.string(0)).transpose()? else {
            break;
        };
        let args = [queue_id.into(), now.into(), group.as_str().into()];
        let live = one(c.rows(COUNT_GROUP_LIVE, &args).await?)?.i64(0)?;
        let free = (group_limit - live).min(want);
        if free > 0 {
            let args = [
                queue_id.into(),
                now.into(),
                group.as_str().into(),
                free.into(),
            ];
            for r in c.rows(GROUP_READY, &args).await? {
                cand.push((r.i64(1)?, r.i64(2)?, r.i64(0)?));
            }
        }
        after = group;
    }
    let mut below: Option<i64> = None;
    loop {
        let rows = match below {
            None => c.rows(TOP_PRIORITY, &[queue_id.into()]).await?,
            Some(b) => c.rows(NEXT_PRIORITY, &[queue_id.into(), b.into()]).await?,
        };
        let Some(priority) = rows.first().map(|r| r.i64(0)).transpose()? else {
            break;
        };
        let args = [queue_id.into(), now.into(), priority.into(), want.into()];
        for r in c.rows(UNGROUPED_READY, &args).await? {
            cand.push((r.i64(1)?, r.i64(2)?, r.i64(0)?));
        }
        below = Some(priority);
    }
    cand.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    cand.truncate(usize::try_from(want).unwrap_or(0));
    if cand.is_empty() {
        return Ok(Vec::new());
    }
    let mut args: Vec<Arg<'_>> = vec![
        now.into(),
        now.saturating_add(us(p.lease)).into(),
        p.worker_id.into(),
    ];
    args.extend(cand.iter().map(|c| Arg::Int(c.2)));
    let rows = c.rows(claim_ids(cand.len()), &args).await?;
    decode::claimed(&rows, p.queue)
}

/// [`Backend::claim_limited`] in the write transaction `tx`.
async fn claim_limited<C: Conn>(tx: &mut C, queue_id: i64, p: &ClaimParams<'_>) -> Result<Claim> {
    use crate::flow::{allowance, Throttle, Window};
    let Some(row) = first(tx.rows(GET_LIMITS, &[queue_id.into()]).await?) else {
        return Ok(Claim::default());
    };
    let limits = crate::QueueLimits::from_stored(
        row.opt_i64(0)?,
        row.opt_i64(1)?,
        row.opt_i64(2)?,
        row.opt_i64(3)?,
    );
    let window = Window {
        start_us: row.opt_i64(4)?,
        taken: row.i64(5)?,
    };
    let now = now_us();
    let mut want = p.limit as i64;
    let mut throttle = Throttle::None;
    let rate = limits.rate.map(|r| allowance(r, window, now));
    if let Some(a) = rate {
        if let Some(wait) = a.wait {
            return Ok(Claim {
                jobs: Vec::new(),
                throttle: Throttle::Rate(wait),
            });
        }
        if a.jobs <= want {
            want = a.jobs;
            throttle = Throttle::Rate(Duration::ZERO);
        }
    }
    if let Some(limit) = limits.concurrency {
        let free = limit - count_live(tx, queue_id, now).await?;
        if free <= 0 {
            return Ok(Claim {
                jobs: Vec::new(),
                throttle: Throttle::Concurrency,
            });
        }
        if free <= want {
            want = free;
            throttle = Throttle::Concurrency;
        }
    }
    let jobs = match limits.group_concurrency {
        Some(g) => claim_grouped(tx, queue_id, p, want, g, now).await?,
        None => claim_by_priority(tx, queue_id, p, want as usize, now).await?,
    };
    if let Some(a) = rate {
        if !jobs.is_empty() {
            let args = [
                queue_id.into(),
                a.window.start_us.into(),
                (a.window.taken + jobs.len() as i64).into(),
            ];
            tx.exec(SAVE_WINDOW, &args).await?;
        }
    }
    if (jobs.len() as i64) < want {
        throttle = Throttle::None;
    }
    Ok(Claim { jobs, throttle })
}
