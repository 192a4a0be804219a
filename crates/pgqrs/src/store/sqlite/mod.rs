//! SQLite backend: WAL, `BEGIN IMMEDIATE` write transactions, a busy timeout, and
//! `synchronous=FULL` by default.
//!
//! SQLite allows one writer at a time. Inside one process, pgqrs sends every write through a
//! single writer connection (a pool of one), so its own tasks queue up in order instead of
//! spinning on the database lock; reads use a separate pool. Other processes contend through
//! SQLite's lock and the busy timeout.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};

use super::sqlite_sql::*;
use super::*;
use crate::config::Durability;
use crate::error::from_sqlx;

// Single-row writes through the writer pool are fetched with `fetch_all`, never
// `fetch_one`/`fetch_optional`: those stop after the first row and reset the statement, and a
// statement that commits on reset instead of running to its end skips SQLite's WAL hook, which
// is what runs the automatic checkpoint. The WAL then grew without bound (77 MB after 6,000
// `create_workflow` calls) and every commit appended to it.
fn first_row<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

fn one_row<T>(rows: Vec<T>) -> std::result::Result<T, sqlx::Error> {
    rows.into_iter().next().ok_or(sqlx::Error::RowNotFound)
}

pub(crate) struct SqliteBackend {
    cfg: Config,
    writer: SqlitePool,
    reader: SqlitePool,
    target: String,
    wakers: Arc<Wakers>,
    queue_ids: QueueIds,
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
    use sqlx::Connection;
    let mut conn = loop {
        match sqlx::SqliteConnection::connect_with(&opts).await {
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
        match sqlx::query_scalar::<_, i64>("PRAGMA data_version")
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

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        if let Some(h) = self
            .watcher
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2)
}

fn queue_info(r: &SqliteRow) -> Result<QueueInfo, sqlx::Error> {
    Ok(QueueInfo {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        created_at: from_micros(r.try_get(2)?),
    })
}

fn json(text: &str) -> Result<serde_json::Value, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn run(r: &SqliteRow) -> Result<WorkflowRun, sqlx::Error> {
    let status: &str = r.try_get(3)?;
    Ok(WorkflowRun {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        input: json(r.try_get::<&str, _>(2)?)?,
        status: RunStatus::parse(status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown run status {status:?}").into()))?,
        output: r.try_get::<Option<&str>, _>(4)?.map(json).transpose()?,
        error: r.try_get(5)?,
        owner: r.try_get(6)?,
        lease_until: r.try_get::<Option<i64>, _>(7)?.map(from_micros),
        attempts: r.try_get(8)?,
        created_at: from_micros(r.try_get(9)?),
        updated_at: from_micros(r.try_get(10)?),
        finished_at: r.try_get::<Option<i64>, _>(11)?.map(from_micros),
    })
}

impl SqliteBackend {
    pub(crate) async fn connect(cfg: Config) -> Result<Self> {
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
        let conn_err = |e: sqlx::Error| Error::Connection {
            target: target.clone(),
            message: e.to_string(),
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
        Ok(SqliteBackend {
            cfg,
            writer,
            reader,
            target,
            wakers: Arc::default(),
            queue_ids: QueueIds::default(),
            watch_opts,
            watcher: std::sync::Mutex::new(None),
        })
    }

    /// Claim from the queue with this id (see [`QueueIds::claim`]).
    async fn claim_in(&self, queue_id: i64, p: &ClaimParams<'_>) -> Result<Vec<Message>> {
        let now = now_us();
        let rows = sqlx::query(CLAIM)
            .bind(queue_id)
            .bind(now)
            .bind(now.saturating_add(us(p.lease)))
            .bind(p.limit as i64)
            .bind(p.worker_id)
            .fetch_all(&self.writer)
            .await
            .map_err(|e| self.err(e))?;
        let mut msgs = rows
            .iter()
            .map(|r| {
                Ok(Message {
                    id: r.try_get(0)?,
                    queue: p.queue.to_string(),
                    payload: json(r.try_get::<&str, _>(1)?)?,
                    attempts: r.try_get(2)?,
                    max_attempts: r.try_get(3)?,
                    enqueued_at: from_micros(r.try_get(4)?),
                    visible_at: from_micros(r.try_get(5)?),
                    last_error: r.try_get(6)?,
                    lease_token: r.try_get(7)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.err(e))?;
        msgs.sort_unstable_by_key(|m| m.id);
        Ok(msgs)
    }

    fn err(&self, e: sqlx::Error) -> Error {
        from_sqlx(e, &self.target)
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.err(e))
    }

    async fn queue_id(&self, name: &str) -> Result<i64> {
        if let Some(id) = self.queue_ids.get(name) {
            return Ok(id);
        }
        let id = self.get_queue(name).await?.id;
        self.queue_ids.put(name, id);
        Ok(id)
    }

    /// Run a lease statement built for `leases.len()` leases, with `pre` bound first.
    async fn lease_stmt(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        sql: String,
        pre: &[i64],
        leases: &[Lease],
    ) -> Result<Vec<i64>> {
        let mut q = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql));
        for p in pre {
            q = q.bind(*p);
        }
        for l in leases {
            q = q.bind(l.id).bind(l.token);
        }
        q.fetch_all(&mut **tx).await.map_err(|e| self.err(e))
    }

    async fn lease_update(&self, sql: String, pre: &[i64], leases: &[Lease]) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write_tx().await?;
        let ids = self.lease_stmt(&mut tx, sql, pre, leases).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(mark(leases, ids))
    }

    async fn apply_migrations(&self, up_to: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(VERSION_TABLE)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let current: Option<i64> = sqlx::query_scalar(SCHEMA_VERSION)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let current = current.unwrap_or(0);
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
            sqlx::raw_sql(*sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            sqlx::query(INSERT_VERSION)
                .bind(version)
                .bind(now_us())
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }
}

/// Largest number of leases in one statement (two parameters each, well under SQLite's limit).
const LEASE_CHUNK: usize = 4000;
/// Largest number of rows in one multi-row insert.
const INSERT_CHUNK: usize = 5000;

#[async_trait]
impl Backend for SqliteBackend {
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
        let mut missing = Vec::new();
        for name in TABLES.iter().chain(INDEXES) {
            let n: i64 = sqlx::query_scalar(OBJECT_EXISTS)
                .bind(name)
                .fetch_one(&self.reader)
                .await
                .map_err(|e| self.err(e))?;
            if n == 0 {
                missing.push(*name);
            }
        }
        check_missing(&missing, "")
    }

    async fn schema_version(&self) -> Result<Option<i64>> {
        let n: i64 = sqlx::query_scalar(OBJECT_EXISTS)
            .bind("pgqrs_schema_version")
            .fetch_one(&self.reader)
            .await
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Ok(None);
        }
        sqlx::query_scalar(SCHEMA_VERSION)
            .fetch_one(&self.reader)
            .await
            .map_err(|e| self.err(e))
    }

    async fn close(&self) {
        if let Some(h) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn create_queue(&self, name: &str) -> Result<QueueInfo> {
        let row = sqlx::query(CREATE_QUEUE)
            .bind(name)
            .bind(now_us())
            .fetch_all(&self.writer)
            .await
            .map(first_row)
            .map_err(|e| self.err(e))?;
        match row {
            Some(r) => queue_info(&r).map_err(|e| self.err(e)),
            None => Err(Error::QueueAlreadyExists {
                queue: name.to_string(),
            }),
        }
    }

    async fn get_queue(&self, name: &str) -> Result<QueueInfo> {
        let row = sqlx::query(GET_QUEUE)
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| self.err(e))?;
        match row {
            Some(r) => queue_info(&r).map_err(|e| self.err(e)),
            None => Err(Error::QueueNotFound {
                queue: name.to_string(),
            }),
        }
    }

    async fn delete_queue(&self, name: &str, force: bool) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM pgqrs_queues WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let Some(id) = id else {
            return Err(Error::QueueNotFound {
                queue: name.to_string(),
            });
        };
        if !force {
            let leased: i64 = sqlx::query_scalar(COUNT_LEASED)
                .bind(id)
                .bind(now_us())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
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
            sqlx::query(sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        self.queue_ids.forget(name);
        Ok(())
    }

    async fn purge_queue(&self, name: &str) -> Result<u64> {
        let id = self.queue_id(name).await?;
        let r = sqlx::query(DELETE_QUEUE_JOBS)
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.rows_affected())
    }

    async fn list_queues(&self) -> Result<Vec<QueueInfo>> {
        let rows = sqlx::query(LIST_QUEUES)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| queue_info(r).map_err(|e| self.err(e)))
            .collect()
    }

    async fn queue_metrics(&self, name: &str) -> Result<QueueMetrics> {
        let id = self.queue_id(name).await?;
        let now = now_us();
        let r = sqlx::query(QUEUE_METRICS)
            .bind(id)
            .bind(now)
            .fetch_one(&self.reader)
            .await
            .map_err(|e| self.err(e))?;
        let g = |i| r.try_get::<i64, _>(i).map_err(|e| self.err(e));
        let oldest: Option<i64> = r.try_get(3).map_err(|e| self.err(e))?;
        Ok(QueueMetrics {
            queue: name.to_string(),
            ready: g(0)?,
            delayed: g(1)?,
            leased: g(2)?,
            oldest_ready_age_secs: oldest
                .map(|t| ((now - t).max(0)) as f64 / 1e6)
                .unwrap_or(0.0),
            archived: g(4)?,
            dead: g(5)?,
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
        let mut ids = Vec::with_capacity(payloads.len());
        let mut tx = self.write_tx().await?;
        for chunk in payloads.chunks(INSERT_CHUNK) {
            let mut q = sqlx::query_scalar::<_, i64>(AssertSqlSafe(enqueue(chunk.len())))
                .bind(queue_id)
                .bind(max_attempts)
                .bind(now)
                .bind(visible_at);
            for p in chunk {
                q = q.bind(p.as_str());
            }
            let got = q.fetch_all(&mut *tx).await.map_err(|e| match e {
                sqlx::Error::Database(ref db) if db.message().contains("FOREIGN KEY") => {
                    self.queue_ids.forget(queue);
                    Error::QueueNotFound {
                        queue: queue.to_string(),
                    }
                }
                e => self.err(e),
            })?;
            ids.extend(got);
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        ids.sort_unstable();
        if visible_at <= now {
            self.wakers.wake(queue);
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
        let mut tx = self.write_tx().await?;
        let mut done = Vec::with_capacity(leases.len());
        for chunk in leases.chunks(LEASE_CHUNK) {
            if how == Completion::Archive {
                let mut q = sqlx::query(AssertSqlSafe(archive(chunk.len()))).bind(now_us());
                for l in chunk {
                    q = q.bind(l.id).bind(l.token);
                }
                q.execute(&mut *tx).await.map_err(|e| self.err(e))?;
            }
            done.extend(
                self.lease_stmt(&mut tx, delete(chunk.len()), &[], chunk)
                    .await?,
            );
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(mark(leases, done))
    }

    async fn fail_jobs(&self, failures: &[Failure]) -> Result<Vec<bool>> {
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_us();
        let mut tx = self.write_tx().await?;
        let mut done = Vec::new();
        for f in failures {
            let one = [f.lease];
            match f.retry_in {
                Some(d) => {
                    let got = sqlx::query_scalar::<_, i64>(AssertSqlSafe(retry(1)))
                        .bind(now.saturating_add(us(d)))
                        .bind(f.error.as_str())
                        .bind(f.lease.id)
                        .bind(f.lease.token)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(|e| self.err(e))?;
                    done.extend(got);
                }
                None => {
                    sqlx::query(AssertSqlSafe(bury(1)))
                        .bind(now)
                        .bind(f.error.as_str())
                        .bind(f.lease.id)
                        .bind(f.lease.token)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.err(e))?;
                    done.extend(self.lease_stmt(&mut tx, delete(1), &[], &one).await?);
                }
            }
        }
        tx.commit().await.map_err(|e| self.err(e))?;
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
            self.wakers.wake_all();
        }
        Ok(out)
    }

    async fn dead_letters(&self, queue: &str, limit: i64) -> Result<Vec<DeadLetter>> {
        let id = self.queue_id(queue).await?;
        let rows = sqlx::query(DEAD_LETTERS)
            .bind(id)
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    id: r.try_get(0)?,
                    queue: queue.to_string(),
                    payload: json(r.try_get::<&str, _>(1)?)?,
                    attempts: r.try_get(2)?,
                    last_error: r.try_get(3)?,
                    enqueued_at: from_micros(r.try_get(4)?),
                    failed_at: from_micros(r.try_get(5)?),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    async fn requeue_dead(&self, queue: &str, ids: Option<&[i64]>) -> Result<u64> {
        let qid = self.queue_id(queue).await?;
        let now = now_us();
        let mut tx = self.write_tx().await?;
        let mut n = 0;
        match ids {
            None => {
                n += sqlx::query(REQUEUE_DEAD_ALL)
                    .bind(qid)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?
                    .rows_affected();
                sqlx::query(DELETE_DEAD_ALL)
                    .bind(qid)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            Some(ids) => {
                for id in ids {
                    n += sqlx::query(REQUEUE_DEAD_ONE)
                        .bind(qid)
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.err(e))?
                        .rows_affected();
                    sqlx::query(DELETE_DEAD_ONE)
                        .bind(qid)
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.err(e))?;
                }
            }
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        if n > 0 {
            self.wakers.wake(queue);
        }
        Ok(n)
    }

    async fn archived_jobs(&self, queue: &str, limit: i64) -> Result<Vec<ArchivedJob>> {
        let id = self.queue_id(queue).await?;
        let rows = sqlx::query(ARCHIVED)
            .bind(id)
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(ArchivedJob {
                    id: r.try_get(0)?,
                    queue: queue.to_string(),
                    payload: json(r.try_get::<&str, _>(1)?)?,
                    attempts: r.try_get(2)?,
                    enqueued_at: from_micros(r.try_get(3)?),
                    archived_at: from_micros(r.try_get(4)?),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    async fn rescue_expired(&self, queue: &str) -> Result<u64> {
        let qid = self.queue_id(queue).await?;
        let now = now_us();
        // Cheap read first: almost always there is nothing to do.
        let any: Option<i64> = sqlx::query_scalar(RESCUE_SELECT)
            .bind(qid)
            .bind(now)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| self.err(e))?;
        if any.is_none() {
            return Ok(0);
        }
        let mut tx = self.write_tx().await?;
        sqlx::query(RESCUE_BURY)
            .bind(qid)
            .bind(now)
            .bind(EXPIRED_FINAL)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let n = sqlx::query(RESCUE_DELETE)
            .bind(qid)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?
            .rows_affected();
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(n)
    }

    async fn register_worker(&self, w: NewWorker) -> Result<i64> {
        let now = now_us();
        sqlx::query_scalar(REGISTER_WORKER)
            .bind(w.hostname)
            .bind(w.pid)
            .bind(w.queue)
            .bind(now)
            .bind(now)
            .fetch_all(&self.writer)
            .await
            .and_then(one_row)
            .map_err(|e| self.err(e))
    }

    async fn worker_heartbeat(&self, id: i64, status: WorkerStatus) -> Result<()> {
        sqlx::query(HEARTBEAT)
            .bind(now_us())
            .bind(status.as_str())
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn list_workers(&self) -> Result<Vec<WorkerInfo>> {
        let rows = sqlx::query(LIST_WORKERS)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(WorkerInfo {
                    id: r.try_get(0)?,
                    hostname: r.try_get(1)?,
                    pid: r.try_get(2)?,
                    queue: r.try_get(3)?,
                    started_at: from_micros(r.try_get(4)?),
                    heartbeat_at: from_micros(r.try_get(5)?),
                    status: WorkerStatus::parse(r.try_get::<&str, _>(6)?),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    async fn wait_for_jobs(&self, queue: &str, timeout: Duration) {
        if let Some(opts) = &self.watch_opts {
            let mut w = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
            if w.as_ref().is_none_or(|h| h.is_finished()) {
                *w = Some(tokio::spawn(watch_changes(
                    opts.clone(),
                    Arc::downgrade(&self.wakers),
                )));
            }
        }
        self.wakers.wait(queue, timeout).await
    }

    async fn create_run(&self, name: &str, input: String) -> Result<WorkflowRun> {
        let r = sqlx::query(CREATE_RUN)
            .bind(name)
            .bind(input)
            .bind(now_us())
            .fetch_all(&self.writer)
            .await
            .and_then(one_row)
            .map_err(|e| self.err(e))?;
        run(&r).map_err(|e| self.err(e))
    }

    async fn get_run(&self, id: i64) -> Result<WorkflowRun> {
        let r = sqlx::query(GET_RUN)
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| self.err(e))?;
        match r {
            Some(r) => run(&r).map_err(|e| self.err(e)),
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
        let r = sqlx::query(ACQUIRE_RUN)
            .bind(id)
            .bind(owner)
            .bind(now)
            .bind(now.saturating_add(us(lease)))
            .fetch_all(&self.writer)
            .await
            .map(first_row)
            .map_err(|e| self.err(e))?;
        r.map(|r| run(&r).map_err(|e| self.err(e))).transpose()
    }

    async fn run_lease(&self, id: i64) -> Result<RunLease> {
        let r = sqlx::query(RUN_LEASE)
            .bind(id)
            .bind(now_us())
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| self.err(e))?
            .ok_or(Error::WorkflowNotFound { id })?;
        let status: &str = r.try_get(0).map_err(|e| self.err(e))?;
        Ok(RunLease {
            status: RunStatus::parse(status).ok_or_else(|| Error::Database {
                code: None,
                message: format!("unknown run status {status:?}"),
            })?,
            owner: r.try_get(1).map_err(|e| self.err(e))?,
            lease_valid: r.try_get::<i64, _>(2).map_err(|e| self.err(e))? != 0,
        })
    }

    async fn renew_run(&self, id: i64, owner: &str, lease: Duration) -> Result<bool> {
        let now = now_us();
        let r = sqlx::query(RENEW_RUN)
            .bind(id)
            .bind(owner)
            .bind(now)
            .bind(now.saturating_add(us(lease)))
            .fetch_all(&self.writer)
            .await
            .map(first_row)
            .map_err(|e| self.err(e))?;
        Ok(r.is_some())
    }

    async fn list_steps(&self, run_id: i64) -> Result<Vec<StepRecord>> {
        let rows = sqlx::query(LIST_STEPS)
            .bind(run_id)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                let status: &str = r.try_get(3)?;
                Ok(StepRecord {
                    run_id: r.try_get(0)?,
                    position: r.try_get(1)?,
                    name: r.try_get(2)?,
                    status: StepStatus::parse(status).ok_or_else(|| {
                        sqlx::Error::Decode(format!("unknown step status {status:?}").into())
                    })?,
                    output: r.try_get::<Option<&str>, _>(4)?.map(json).transpose()?,
                    error: r.try_get(5)?,
                    attempts: r.try_get(6)?,
                    next_retry_at: r.try_get::<Option<i64>, _>(7)?.map(from_micros),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    async fn record_step(&self, owner: &str, s: NewStep<'_>) -> Result<bool> {
        let now = now_us();
        let r = sqlx::query(RECORD_STEP)
            .bind(s.run_id)
            .bind(s.position)
            .bind(s.name)
            .bind(s.status.as_str())
            .bind(s.output)
            .bind(s.error)
            .bind(s.attempts)
            .bind(s.retry_in.map(|d| now.saturating_add(us(d))))
            .bind(owner)
            .bind(now)
            .fetch_all(&self.writer)
            .await
            .map(first_row)
            .map_err(|e| self.err(e))?;
        Ok(r.is_some())
    }

    async fn finish_run(&self, p: FinishRunParams<'_>) -> Result<bool> {
        let FinishRunParams {
            id,
            owner,
            status,
            output,
            error,
        } = p;
        let r = sqlx::query(FINISH_RUN)
            .bind(id)
            .bind(owner)
            .bind(status.as_str())
            .bind(output)
            .bind(error)
            .bind(now_us())
            .fetch_all(&self.writer)
            .await
            .map(first_row)
            .map_err(|e| self.err(e))?;
        Ok(r.is_some())
    }

    async fn cancel_run(&self, id: i64) -> Result<bool> {
        let r = sqlx::query(CANCEL_RUN)
            .bind(id)
            .bind(now_us())
            .fetch_all(&self.writer)
            .await
            .map(first_row)
            .map_err(|e| self.err(e))?;
        Ok(r.is_some())
    }

    async fn list_runs(&self, status: Option<RunStatus>, limit: i64) -> Result<Vec<WorkflowRun>> {
        let rows = sqlx::query(LIST_RUNS)
            .bind(status.map(|s| s.as_str()))
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| run(r).map_err(|e| self.err(e)))
            .collect()
    }
}
