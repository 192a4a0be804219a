//! PostgreSQL backend: `FOR UPDATE SKIP LOCKED` claims, one statement per batch operation.

mod inspect;
#[cfg(test)]
mod plans;
mod queries;
mod schedules;
mod unique;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::query::{Query, QueryScalar};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, Row, SqlSafeStr};

use self::queries::{Queries, MIGRATIONS, SQL_ENQUEUE_VERSION, VERSION_TABLE};
use super::decode::{self, bad_value, Cols};
use super::*;
use crate::error::{from_sqlx, pg_connect_error};

type PgQuery = Query<'static, Postgres, PgArguments>;

pub(crate) struct PgBackend {
    cfg: Config,
    pool: PgPool,
    q: Queries,
    schema: String,
    target: String,
    queue_ids: QueueIds,
    wakers: Arc<Wakers>,
    notifier: Arc<Notifier>,
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Workers of other processes are woken with NOTIFY on one channel per schema; the payload is
/// the queue name. Enqueues notify at most once per queue per [`DEBOUNCE`] window: the first
/// enqueue of a window notifies in its own statement, and if more come within the window one
/// trailing NOTIFY is sent when it ends, so no wake-up is lost and bursts cost one message.
struct Notifier {
    pool: PgPool,
    channel: String,
    last: std::sync::Mutex<HashMap<String, (Instant, bool)>>,
}

/// Shortest time between two notifications of one queue from one store.
const DEBOUNCE: Duration = Duration::from_millis(3);

impl Notifier {
    /// Whether this enqueue should carry the NOTIFY; if not, make sure a trailing one follows.
    fn leading_edge(self: &Arc<Self>, queue: &str) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let entry = last
            .entry(queue.to_string())
            .or_insert((now - DEBOUNCE * 2, false));
        if now.duration_since(entry.0) >= DEBOUNCE {
            entry.0 = now;
            return true;
        }
        if !entry.1 {
            entry.1 = true;
            let at = entry.0 + DEBOUNCE;
            let this = self.clone();
            let queue = queue.to_string();
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                {
                    let mut last = this.last.lock().unwrap_or_else(|e| e.into_inner());
                    last.insert(queue.clone(), (Instant::now(), false));
                }
                if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(&this.channel)
                    .bind(&queue)
                    .execute(&this.pool)
                    .await
                {
                    tracing::debug!(error = %e, "trailing NOTIFY failed; workers fall back to polling");
                }
            });
        }
        false
    }
}

/// Receive notifications and wake this process's waiting workers, until the pool closes or
/// the store is dropped. Reconnects after connection loss (workers poll meanwhile).
async fn listen_loop(pool: PgPool, channel: String, wakers: std::sync::Weak<Wakers>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::debug!(error = %e, "LISTEN connection failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(&channel).await {
            tracing::debug!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(n) => match wakers.upgrade() {
                    Some(w) => w.wake(n.payload()),
                    None => return,
                },
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "LISTEN connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        if let Some(h) = self
            .listener
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

/// The caller's connection of an enqueue, or `None` for the store's own. The core has checked
/// that a caller's connection is a PostgreSQL one.
fn caller_conn(on: On<'_>) -> Result<Option<&mut PgConnection>> {
    match on {
        On::Pool => Ok(None),
        On::Caller(Caller::Postgres(c)) => Ok(Some(c)),
        #[allow(unreachable_patterns)]
        On::Caller(other) => Err(Error::validation(
            "connection",
            format!(
                "a {} connection cannot run a PostgreSQL store's enqueue",
                other.kind().name()
            ),
        )),
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// PostgreSQL's own column types: `integer`, `json`, `timestamptz` and `boolean`.
impl Cols for PgRow {
    fn opt_i64(&self, i: usize) -> Result<Option<i64>> {
        self.try_get(i).map_err(|e| bad_value(i, e))
    }

    fn opt_str(&self, i: usize) -> Result<Option<&str>> {
        self.try_get(i).map_err(|e| bad_value(i, e))
    }

    fn opt_i32(&self, i: usize) -> Result<Option<i32>> {
        self.try_get(i).map_err(|e| bad_value(i, e))
    }

    fn opt_json(&self, i: usize) -> Result<Option<Value>> {
        let j: Option<Json<Value>> = self.try_get(i).map_err(|e| bad_value(i, e))?;
        Ok(j.map(|j| j.0))
    }

    fn opt_time(&self, i: usize) -> Result<Option<DateTime<Utc>>> {
        self.try_get(i).map_err(|e| bad_value(i, e))
    }

    fn flag(&self, i: usize) -> Result<bool> {
        self.try_get(i).map_err(|e| bad_value(i, e))
    }
}

/// TLS to the local machine protects nothing and costs a lot with sqlx 0.9 (which leaves
/// Nagle's algorithm on: replies then wait for delayed ACKs, up to tens of milliseconds). So
/// when the connection string does not ask for an `sslmode` (and `PGSSLMODE` is unset), a
/// loopback or Unix-socket connection goes without TLS; any other host keeps the driver's
/// default (`prefer`).
fn ssl_pointless(dsn: &str, host: &str) -> bool {
    let asked = dsn.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|kv| kv.to_ascii_lowercase().starts_with("sslmode="))
    });
    if asked || std::env::var_os("PGSSLMODE").is_some() {
        return false;
    }
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A pooled connection idle for at least this long is pinged before it is used again.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

impl PgBackend {
    pub(crate) async fn connect(cfg: Config) -> Result<Self> {
        let opts = PgConnectOptions::from_str(&cfg.driver_dsn).map_err(|e| Error::InvalidDsn {
            dsn: cfg.redacted.clone(),
            reason: e.to_string(),
        })?;
        let target = format!("{}:{}", opts.get_host(), opts.get_port());
        let user = opts.get_username().to_string();
        // PostgreSQL's default database is the user's name.
        let database = opts.get_database().unwrap_or(&user).to_string();
        let opts = if ssl_pointless(&cfg.driver_dsn, opts.get_host()) {
            opts.ssl_mode(PgSslMode::Disable)
        } else {
            opts
        };
        // `pgqrs` in pg_stat_activity unless the DSN names the application itself.
        let opts = if opts.get_application_name().is_none() {
            opts.application_name("pgqrs")
        } else {
            opts
        };
        let opts = opts.statement_cache_capacity(if cfg.statement_cache { 100 } else { 0 });
        let pool_fut = PgPoolOptions::new()
            .max_connections(cfg.pool_size.unwrap_or(10))
            .min_connections(0)
            // sqlx pings every pooled connection before each use by default: a whole round
            // trip per statement. Ping only connections that sat idle for a while (the ones
            // a server restart or an idle-killing proxy may have closed).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .acquire_timeout(cfg.connect_timeout)
            .connect_with(opts.clone());
        let pool = match tokio::time::timeout(
            cfg.connect_timeout + Duration::from_secs(1),
            pool_fut,
        )
        .await
        {
            Ok(Ok(p)) => p,
            // The pool retries a failing connection until its timeout and then reports only
            // that it timed out: one more attempt, on its own, says why (a server that does
            // not answer within 2 s gets the timeout's message).
            Ok(Err(sqlx::Error::PoolTimedOut)) => {
                let why = tokio::time::timeout(
                    cfg.connect_timeout.min(Duration::from_secs(2)),
                    <sqlx::PgConnection as sqlx::Connection>::connect_with(&opts),
                )
                .await;
                let e = match why {
                    Ok(Err(e)) => e,
                    Ok(Ok(c)) => {
                        let _ = sqlx::Connection::close(c).await;
                        sqlx::Error::PoolTimedOut
                    }
                    Err(_) => sqlx::Error::PoolTimedOut,
                };
                return Err(pg_connect_error(e, &target, &database, &user));
            }
            Ok(Err(e)) => return Err(pg_connect_error(e, &target, &database, &user)),
            Err(_) => {
                return Err(Error::Connection {
                    message: format!(
                        "no answer within {:?}: is the PostgreSQL server running and \
                         reachable at {target}? (or raise connect_timeout)",
                        cfg.connect_timeout
                    ),
                    target,
                })
            }
        };
        let schema = cfg.schema.clone();
        let quoted = format!("\"{schema}\"");
        let notifier = Arc::new(Notifier {
            pool: pool.clone(),
            channel: format!("pgqrs_{schema}"),
            last: std::sync::Mutex::default(),
        });
        Ok(PgBackend {
            q: Queries::new(&quoted),
            cfg,
            pool,
            schema,
            target,
            queue_ids: QueueIds::default(),
            wakers: Arc::default(),
            notifier,
            listener: std::sync::Mutex::new(None),
        })
    }

    /// Whether an enqueue's statement should carry the NOTIFY. On the store's connections,
    /// the first enqueue of a [`DEBOUNCE`] window does (see [`Notifier`]). In a caller's
    /// transaction every enqueue does: PostgreSQL delivers the NOTIFY at the commit (once per
    /// transaction, whatever the number of enqueues in it) and drops it on rollback, whereas a
    /// trailing NOTIFY sent on another connection could come before the commit and wake
    /// workers to an empty queue.
    fn notify_in_statement(&self, queue: &str, visibility: Visibility, in_caller: bool) -> bool {
        self.cfg.notify
            && matches!(visibility, Visibility::Now)
            && (in_caller || self.notifier.leading_edge(queue))
    }

    /// The queue's id: cached, else looked up on the caller's connection (so a queue created
    /// in the caller's transaction is found) or the pool. A stale cached id is harmless: the
    /// enqueue statements insert nothing for a queue row that is gone, and then look again.
    async fn queue_id_on(&self, name: &str, caller: Option<&mut PgConnection>) -> Result<i64> {
        let Some(c) = caller else {
            return self.queue_id(name).await;
        };
        if let Some(id) = self.queue_ids.get(name) {
            return Ok(id);
        }
        let row = self
            .stmt(&self.q.get_queue)
            .bind(name)
            .fetch_optional(c)
            .await
            .map_err(|e| self.err(e))?;
        match row {
            Some(r) => Ok(decode::queue_info(&r)?.id),
            None => Err(Error::QueueNotFound {
                queue: name.to_string(),
            }),
        }
    }

    /// Start the LISTEN task on first use.
    fn ensure_listener(&self) {
        let mut l = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        if l.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        *l = Some(tokio::spawn(listen_loop(
            self.pool.clone(),
            self.notifier.channel.clone(),
            Arc::downgrade(&self.wakers),
        )));
    }

    fn err(&self, e: sqlx::Error) -> Error {
        match from_sqlx(e, &self.target) {
            Error::SchemaNotInstalled { .. } => Error::SchemaNotInstalled {
                where_: format!(" in schema {:?}", self.schema),
            },
            other => other,
        }
    }

    fn sql(&self, template: &str) -> sqlx::SqlStr {
        AssertSqlSafe(template.replace("{s}", &format!("\"{}\"", self.schema))).into_sql_str()
    }

    /// A statement, prepared as a named (cached) statement unless `statement_cache=false`,
    /// which uses unnamed ones so that nothing is left on the server.
    fn query(&self, sql: impl SqlSafeStr) -> PgQuery {
        sqlx::query(sql).persistent(self.cfg.statement_cache)
    }

    /// One of the schema's statements ([`Queries`]).
    fn stmt(&self, sql: &sqlx::SqlStr) -> PgQuery {
        self.query(sql.clone())
    }

    async fn all(&self, q: PgQuery) -> Result<Vec<PgRow>> {
        q.fetch_all(&self.pool).await.map_err(|e| self.err(e))
    }

    async fn one(&self, q: PgQuery) -> Result<PgRow> {
        q.fetch_one(&self.pool).await.map_err(|e| self.err(e))
    }

    async fn opt(&self, q: PgQuery) -> Result<Option<PgRow>> {
        q.fetch_optional(&self.pool).await.map_err(|e| self.err(e))
    }

    /// The number of rows the statement changed.
    async fn exec(&self, q: PgQuery) -> Result<u64> {
        let r = q.execute(&self.pool).await.map_err(|e| self.err(e))?;
        Ok(r.rows_affected())
    }

    /// [`query`](Self::query) for a statement whose rows are one value.
    fn query_scalar<O>(
        &self,
        sql: impl SqlSafeStr,
    ) -> QueryScalar<'static, Postgres, O, PgArguments>
    where
        (O,): for<'r> sqlx::FromRow<'r, PgRow>,
    {
        sqlx::query_scalar(sql).persistent(self.cfg.statement_cache)
    }

    async fn lease_op(
        &self,
        sql: &sqlx::SqlStr,
        leases: &[Lease],
        secs_arg: Option<f64>,
    ) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = leases.iter().map(|l| l.id).collect();
        let tokens: Vec<i64> = leases.iter().map(|l| l.token).collect();
        let mut q = self.query(sql.clone()).bind(&ids).bind(&tokens);
        if let Some(s) = secs_arg {
            q = q.bind(s);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        Ok(mark(
            leases,
            rows.iter().filter_map(|r| r.try_get::<i64, _>(0).ok()),
        ))
    }

    async fn apply_migrations(&self, up_to: i64) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        self.query("SELECT pg_advisory_xact_lock(hashtext('pgqrs.install:' || $1))")
            .bind(&self.schema)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        self.query(self.sql("CREATE SCHEMA IF NOT EXISTS {s}"))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        self.query(self.sql(VERSION_TABLE))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let current: Option<i64> = self
            .query_scalar(self.q.schema_version.clone())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let mut installed = current.unwrap_or(0);
        for (version, sql) in pending_migrations(MIGRATIONS, installed, up_to)? {
            sqlx::raw_sql(self.sql(sql))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            self.query(self.sql("INSERT INTO {s}.pgqrs_schema_version (version) VALUES ($1)"))
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            installed = *version;
        }
        // Every install writes them again, so that the SQL function follows this pgqrs.
        if installed >= SQL_ENQUEUE_VERSION {
            for (name, value) in crate::limits::sql_enqueue_settings(
                self.cfg.max_attempts,
                self.cfg.max_payload_bytes,
            ) {
                self.stmt(&self.q.set_setting)
                    .bind(name)
                    .bind(value)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[async_trait]
impl Backend for PgBackend {
    fn config(&self) -> &Config {
        &self.cfg
    }

    fn queue_ids(&self) -> &QueueIds {
        &self.queue_ids
    }

    async fn install_up_to(&self, version: i64) -> Result<()> {
        self.apply_migrations(version).await
    }

    async fn verify(&self) -> Result<()> {
        let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        check_schema_version(self.schema_version().await?, latest, || {
            format!(" in schema {:?}", self.schema)
        })?;
        let mut missing = Vec::new();
        for name in TABLES.iter().chain(INDEXES) {
            let q = self
                .query("SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL")
                .bind(&self.schema)
                .bind(name);
            if !self.one(q).await?.flag(0)? {
                missing.push(*name);
            }
        }
        let q = self
            .query(
                "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = $1 AND p.proname = 'pgqrs_enqueue')",
            )
            .bind(&self.schema);
        if !self.one(q).await?.flag(0)? {
            missing.push("pgqrs_enqueue (function)");
        }
        check_missing(&missing, &format!(" in schema {:?}", self.schema))
    }

    async fn schema_version(&self) -> Result<Option<i64>> {
        let q = self.stmt(&self.q.version_table_exists);
        let q = q.bind(format!("\"{}\"", self.schema));
        if !self.one(q).await?.flag(0)? {
            return Ok(None);
        }
        self.one(self.stmt(&self.q.schema_version))
            .await?
            .opt_i64(0)
    }

    async fn close(&self) {
        if let Some(h) = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
        self.pool.close().await
    }

    async fn create_queue(&self, q: NewQueue<'_>) -> Result<QueueInfo> {
        let row = self
            .opt(
                self.stmt(&self.q.create_queue)
                    .bind(q.name)
                    .bind(q.archive_retention.stored())
                    .bind(q.dead_retention.stored())
                    .bind(q.limits.stored().0)
                    .bind(q.limits.stored().1)
                    .bind(q.limits.stored().2)
                    .bind(q.limits.stored().3),
            )
            .await?;
        match row {
            Some(r) => decode::queue_info(&r),
            None => Err(Error::QueueAlreadyExists {
                queue: q.name.to_string(),
            }),
        }
    }

    async fn set_queue_limits(&self, name: &str, limits: crate::QueueLimits) -> Result<QueueInfo> {
        let (c, g, rj, rp) = limits.stored();
        let q = self
            .stmt(&self.q.set_queue_limits)
            .bind(name)
            .bind(c)
            .bind(g)
            .bind(rj)
            .bind(rp);
        match self.opt(q).await? {
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
        let q = self
            .stmt(&self.q.set_queue_retention)
            .bind(name)
            .bind(archive.is_some())
            .bind(archive.and_then(Retention::stored))
            .bind(dead.is_some())
            .bind(dead.and_then(Retention::stored));
        match self.opt(q).await? {
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
        let q = match what {
            Prunable::Archive => self.stmt(&self.q.prune_archive).bind(queue_id),
            Prunable::Dead => self.stmt(&self.q.prune_dead).bind(queue_id),
            Prunable::WorkflowRuns => self.stmt(&self.q.prune_runs),
        };
        self.exec(q.bind(secs(older_than)).bind(limit)).await
    }

    async fn get_setting(&self, name: &str) -> Result<Option<Option<i64>>> {
        let r = self.opt(self.stmt(&self.q.get_setting).bind(name)).await?;
        r.map(|r| r.opt_i64(0)).transpose()
    }

    async fn set_setting(&self, name: &str, value: Option<i64>) -> Result<()> {
        self.exec(self.stmt(&self.q.set_setting).bind(name).bind(value))
            .await?;
        Ok(())
    }

    async fn get_queue(&self, name: &str) -> Result<QueueInfo> {
        let row = self.opt(self.stmt(&self.q.get_queue).bind(name)).await?;
        match row {
            Some(r) => decode::queue_info(&r),
            None => Err(Error::QueueNotFound {
                queue: name.to_string(),
            }),
        }
    }

    async fn delete_queue(&self, name: &str, force: bool) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let id: Option<i64> = self
            .query_scalar(self.q.lock_queue.clone())
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
            let leased: i64 = self
                .query_scalar(self.q.count_leased.clone())
                .bind(id)
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
        // The queue's row is locked `FOR UPDATE` above, so no enqueue (which locks it
        // `FOR KEY SHARE`) can add a job between these deletes: dead letters go before the
        // jobs because requeueing moves them back into the jobs table.
        for sql in [
            &self.q.delete_queue_archive,
            &self.q.delete_queue_dead,
            &self.q.purge_queue,
            &self.q.delete_queue,
        ] {
            self.query(sql.clone())
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
        let id = self.get_queue(name).await?.id;
        self.exec(self.stmt(&self.q.purge_queue).bind(id)).await
    }

    async fn list_queues(&self) -> Result<Vec<QueueInfo>> {
        let rows = self.all(self.stmt(&self.q.list_queues)).await?;
        rows.iter().map(decode::queue_info).collect()
    }

    async fn queue_metrics(&self, name: &str) -> Result<QueueMetrics> {
        let id = self.get_queue(name).await?.id;
        let r = self.one(self.stmt(&self.q.queue_metrics).bind(id)).await?;
        let age = r.try_get::<f64, _>(3).map_err(|e| self.err(e))?;
        decode::queue_metrics(&r, name, age)
    }

    async fn enqueue_jobs(&self, p: EnqueueParams<'_>, on: On<'_>) -> Result<Vec<i64>> {
        let mut caller = caller_conn(on)?;
        let EnqueueParams {
            queue,
            payloads,
            visibility,
            max_attempts,
            priority,
            timeout_ms,
            group,
        } = p;
        let (at, delay): (Option<DateTime<Utc>>, f64) = match visibility {
            Visibility::Now => (None, 0.0),
            Visibility::After(d) => (None, secs(d)),
            Visibility::At(t) => (Some(t), 0.0),
        };
        let notify = self.notify_in_statement(queue, visibility, caller.is_some());
        let sql = if payloads.len() == 1 {
            &self.q.enqueue_one
        } else {
            &self.q.enqueue_many
        };
        let mut queue_id = self.queue_id_on(queue, caller.as_deref_mut()).await?;
        let mut ids = loop {
            let q = self.query_scalar::<i64>(sql.clone()).bind(queue_id);
            let q = if payloads.len() == 1 {
                q.bind(&payloads[0])
            } else {
                q.bind(&payloads)
            };
            let q = q
                .bind(max_attempts)
                .bind(at)
                .bind(delay)
                .bind(&self.notifier.channel)
                .bind(queue)
                .bind(notify)
                .bind(priority)
                .bind(timeout_ms)
                .bind(group.as_deref());
            let ids = match caller.as_deref_mut() {
                Some(c) => q.fetch_all(c).await,
                None => q.fetch_all(&self.pool).await,
            }
            .map_err(|e| self.err(e))?;
            if !ids.is_empty() {
                break ids;
            }
            // Nothing was inserted, so the queue row with the cached id is gone (`payloads`
            // is never empty). Look the name up again: QueueNotFound if it was deleted, one
            // more try if it was re-created under a new id meanwhile.
            self.queue_ids.forget(queue);
            let fresh = self.queue_id_on(queue, caller.as_deref_mut()).await?;
            if fresh == queue_id {
                return Err(Error::QueueNotFound {
                    queue: queue.to_string(),
                });
            }
            queue_id = fresh;
        };
        ids.sort_unstable();
        // A caller's transaction is not committed yet: its NOTIFY wakes workers at the commit.
        if caller.is_none() && matches!(visibility, Visibility::Now) {
            self.wakers.wake(queue);
        }
        Ok(ids)
    }

    async fn enqueue_unique(
        &self,
        p: EnqueueParams<'_>,
        u: UniqueParams<'_>,
        on: On<'_>,
    ) -> Result<Vec<Placed>> {
        self.enqueue_unique_jobs(p, u, caller_conn(on)?).await
    }

    async fn claim_in(&self, queue_id: i64, p: &ClaimParams<'_>) -> Result<Vec<Message>> {
        let rows = self
            .all(
                self.stmt(&self.q.claim)
                    .bind(queue_id)
                    .bind(p.limit as i64)
                    .bind(secs(p.lease))
                    .bind(p.worker_id),
            )
            .await?;
        decode::claimed(&rows, p.queue)
    }

    async fn claim_limited(&self, queue_id: i64, p: &ClaimParams<'_>) -> Result<Claim> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let Some(row) = self
            .stmt(&self.q.lock_limits)
            .bind(queue_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?
        else {
            // Deleted meanwhile: the caller looks the name up again.
            return Ok(Claim::default());
        };
        let limits = crate::QueueLimits::from_stored(
            row.opt_i64(0)?,
            row.opt_i64(1)?,
            row.opt_i64(2)?,
            row.opt_i64(3)?,
        );
        let window = crate::flow::Window {
            start_us: row.opt_i64(4)?,
            taken: row.i64(5)?,
        };
        let now_us = row.i64(6)?;
        let mut want = p.limit as i64;
        let mut throttle = crate::flow::Throttle::None;
        let rate = limits
            .rate
            .map(|r| crate::flow::allowance(r, window, now_us));
        if let Some(a) = rate {
            if let Some(wait) = a.wait {
                tx.commit().await.map_err(|e| self.err(e))?;
                return Ok(Claim {
                    jobs: Vec::new(),
                    throttle: crate::flow::Throttle::Rate(wait),
                });
            }
            if a.jobs <= want {
                want = a.jobs;
                throttle = crate::flow::Throttle::Rate(Duration::ZERO);
            }
        }
        if let Some(limit) = limits.concurrency {
            let live: i64 = self
                .query_scalar(self.q.count_live.clone())
                .bind(queue_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            let free = limit - live;
            if free <= 0 {
                tx.commit().await.map_err(|e| self.err(e))?;
                return Ok(Claim {
                    jobs: Vec::new(),
                    throttle: crate::flow::Throttle::Concurrency,
                });
            }
            if free <= want {
                want = free;
                throttle = crate::flow::Throttle::Concurrency;
            }
        }
        let q = match limits.group_concurrency {
            Some(g) => self
                .stmt(&self.q.claim_grouped)
                .bind(queue_id)
                .bind(want)
                .bind(secs(p.lease))
                .bind(p.worker_id)
                .bind(g),
            None => self
                .stmt(&self.q.claim)
                .bind(queue_id)
                .bind(want)
                .bind(secs(p.lease))
                .bind(p.worker_id),
        };
        let rows = q.fetch_all(&mut *tx).await.map_err(|e| self.err(e))?;
        if let Some(a) = rate {
            if !rows.is_empty() {
                self.stmt(&self.q.save_window)
                    .bind(queue_id)
                    .bind(a.window.start_us)
                    .bind(a.window.taken + rows.len() as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        let jobs = decode::claimed(&rows, p.queue)?;
        // A limit held the claim back only if it got all the limit left.
        if (jobs.len() as i64) < want {
            throttle = crate::flow::Throttle::None;
        }
        Ok(Claim { jobs, throttle })
    }

    fn wake_queue(&self, queue: &str) {
        self.wakers.wake(queue);
        if self.cfg.notify && self.notifier.leading_edge(queue) {
            let (pool, channel, queue) = (
                self.pool.clone(),
                self.notifier.channel.clone(),
                queue.to_string(),
            );
            tokio::spawn(async move {
                if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(channel)
                    .bind(queue)
                    .execute(&pool)
                    .await
                {
                    tracing::debug!(error = %e, "NOTIFY of freed capacity failed; workers fall back to polling");
                }
            });
        }
    }

    async fn complete_jobs(&self, leases: &[Lease], how: Completion) -> Result<Vec<bool>> {
        let sql = match how {
            Completion::Archive => &self.q.archive,
            Completion::Delete => &self.q.delete,
        };
        self.lease_op(sql, leases, None).await
    }

    async fn fail_jobs(&self, failures: &[Failure]) -> Result<Vec<bool>> {
        let (retry, bury): (Vec<&Failure>, Vec<&Failure>) =
            failures.iter().partition(|f| f.retry_in.is_some());
        let mut done = Vec::new();
        if !retry.is_empty() {
            let rows = self
                .all(
                    self.stmt(&self.q.retry)
                        .bind(retry.iter().map(|f| f.lease.id).collect::<Vec<_>>())
                        .bind(retry.iter().map(|f| f.lease.token).collect::<Vec<_>>())
                        .bind(
                            retry
                                .iter()
                                .map(|f| secs(f.retry_in.unwrap_or_default()))
                                .collect::<Vec<_>>(),
                        )
                        .bind(retry.iter().map(|f| f.error.as_str()).collect::<Vec<_>>()),
                )
                .await?;
            done.extend(rows.iter().filter_map(|r| r.try_get::<i64, _>(0).ok()));
        }
        if !bury.is_empty() {
            let rows = self
                .all(
                    self.stmt(&self.q.bury)
                        .bind(bury.iter().map(|f| f.lease.id).collect::<Vec<_>>())
                        .bind(bury.iter().map(|f| f.lease.token).collect::<Vec<_>>())
                        .bind(bury.iter().map(|f| f.error.as_str()).collect::<Vec<_>>()),
                )
                .await?;
            done.extend(rows.iter().filter_map(|r| r.try_get::<i64, _>(0).ok()));
        }
        let leases: Vec<Lease> = failures.iter().map(|f| f.lease).collect();
        Ok(mark(&leases, done))
    }

    async fn extend_leases(&self, leases: &[Lease], by: Duration) -> Result<Vec<bool>> {
        self.lease_op(&self.q.extend, leases, Some(secs(by))).await
    }

    async fn release_jobs(&self, leases: &[Lease], delay: Duration) -> Result<Vec<bool>> {
        let r = self
            .lease_op(&self.q.release, leases, Some(secs(delay)))
            .await?;
        if delay.is_zero() && r.iter().any(|x| *x) {
            self.wakers.wake_all();
        }
        Ok(r)
    }

    async fn dead_letters(&self, queue: &str, limit: i64) -> Result<Vec<DeadLetter>> {
        let id = self.get_queue(queue).await?.id;
        let rows = self
            .all(self.stmt(&self.q.dead_letters).bind(id).bind(limit))
            .await?;
        rows.iter().map(|r| decode::dead_letter(r, queue)).collect()
    }

    async fn requeue_dead(&self, queue: &str, ids: Option<&[i64]>) -> Result<u64> {
        let id = self.get_queue(queue).await?.id;
        let q = match ids {
            Some(ids) => self.stmt(&self.q.requeue_dead).bind(id).bind(ids.to_vec()),
            None => self.stmt(&self.q.requeue_all_dead).bind(id),
        };
        let n = self.exec(q).await?;
        if n > 0 {
            self.wakers.wake(queue);
        }
        Ok(n)
    }

    async fn archived_jobs(&self, queue: &str, limit: i64) -> Result<Vec<ArchivedJob>> {
        let id = self.get_queue(queue).await?.id;
        let rows = self
            .all(self.stmt(&self.q.archived).bind(id).bind(limit))
            .await?;
        rows.iter()
            .map(|r| decode::archived_job(r, queue))
            .collect()
    }

    async fn rescue_expired(&self, queue: &str) -> Result<u64> {
        let id = self.queue_id(queue).await?;
        self.exec(self.stmt(&self.q.rescue).bind(id).bind(EXPIRED_FINAL))
            .await
    }

    async fn register_worker(&self, w: NewWorker) -> Result<i64> {
        let q = self.stmt(&self.q.register_worker);
        let q = q.bind(w.hostname).bind(w.pid).bind(w.queue);
        self.one(q).await?.i64(0)
    }

    async fn worker_heartbeat(&self, id: i64, status: WorkerStatus) -> Result<()> {
        self.exec(self.stmt(&self.q.heartbeat).bind(id).bind(status.as_str()))
            .await?;
        Ok(())
    }

    async fn list_workers(&self) -> Result<Vec<WorkerInfo>> {
        let rows = self.all(self.stmt(&self.q.list_workers)).await?;
        rows.iter().map(decode::worker_info).collect()
    }

    async fn create_schedule(&self, s: NewSchedule<'_>) -> Result<ScheduleInfo> {
        self.insert_schedule(s).await
    }

    async fn get_schedule(&self, name: &str) -> Result<ScheduleInfo> {
        match self.opt(self.stmt(&self.q.get_schedule).bind(name)).await? {
            Some(r) => decode::schedule(&r),
            None => Err(Error::ScheduleNotFound {
                name: name.to_string(),
            }),
        }
    }

    async fn list_schedules(&self) -> Result<Vec<ScheduleInfo>> {
        let rows = self.all(self.stmt(&self.q.list_schedules)).await?;
        rows.iter().map(decode::schedule).collect()
    }

    async fn upcoming_schedules(&self, limit: i64) -> Result<Vec<ScheduleInfo>> {
        let rows = self
            .all(self.stmt(&self.q.upcoming_schedules).bind(limit))
            .await?;
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
        Ok(self
            .opt(self.stmt(&self.q.delete_schedule).bind(name))
            .await?
            .is_some())
    }

    async fn fire_schedule(&self, f: FireParams<'_>) -> Result<Option<Fired>> {
        self.fire(f).await
    }

    async fn wait_for_jobs(&self, queue: &str, timeout: Duration) {
        if self.cfg.notify {
            self.ensure_listener();
        }
        self.wakers.wait(queue, timeout).await
    }

    async fn create_run(&self, name: &str, input: String) -> Result<WorkflowRun> {
        let r = self
            .one(self.stmt(&self.q.create_run).bind(name).bind(input))
            .await?;
        decode::workflow_run(&r)
    }

    async fn get_run(&self, id: i64) -> Result<WorkflowRun> {
        let r = self.opt(self.stmt(&self.q.get_run).bind(id)).await?;
        match r {
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
        let r = self
            .opt(
                self.stmt(&self.q.acquire_run)
                    .bind(id)
                    .bind(owner)
                    .bind(secs(lease)),
            )
            .await?;
        r.map(|r| decode::workflow_run(&r)).transpose()
    }

    async fn run_lease(&self, id: i64) -> Result<RunLease> {
        let r = self
            .opt(self.stmt(&self.q.run_lease).bind(id))
            .await?
            .ok_or(Error::WorkflowNotFound { id })?;
        decode::run_lease(&r)
    }

    async fn renew_run(&self, id: i64, owner: &str, lease: Duration) -> Result<bool> {
        let r = self
            .opt(
                self.stmt(&self.q.renew_run)
                    .bind(id)
                    .bind(owner)
                    .bind(secs(lease)),
            )
            .await?;
        Ok(r.is_some())
    }

    async fn list_steps(&self, run_id: i64) -> Result<Vec<StepRecord>> {
        let rows = self.all(self.stmt(&self.q.list_steps).bind(run_id)).await?;
        rows.iter().map(decode::step_record).collect()
    }

    async fn record_step(&self, owner: &str, s: NewStep<'_>) -> Result<bool> {
        let r = self
            .opt(
                self.stmt(&self.q.record_step)
                    .bind(s.run_id)
                    .bind(s.position)
                    .bind(s.name)
                    .bind(s.status.as_str())
                    .bind(s.output)
                    .bind(s.error)
                    .bind(s.attempts)
                    .bind(s.retry_in.map(secs))
                    .bind(owner),
            )
            .await?;
        Ok(r.is_some())
    }

    async fn finish_run(&self, p: FinishRunParams<'_>) -> Result<bool> {
        let r = self
            .opt(
                self.stmt(&self.q.finish_run)
                    .bind(p.id)
                    .bind(p.owner)
                    .bind(p.status.as_str())
                    .bind(p.output)
                    .bind(p.error),
            )
            .await?;
        Ok(r.is_some())
    }

    async fn cancel_run(&self, id: i64) -> Result<bool> {
        let r = self.opt(self.stmt(&self.q.cancel_run).bind(id)).await?;
        Ok(r.is_some())
    }

    async fn list_runs(&self, status: Option<RunStatus>, limit: i64) -> Result<Vec<WorkflowRun>> {
        let q = match status {
            Some(s) => self.stmt(&self.q.list_runs_by_status).bind(s.as_str()),
            None => self.stmt(&self.q.list_runs),
        };
        let rows = self.all(q.bind(limit)).await?;
        rows.iter().map(decode::workflow_run).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::ssl_pointless;

    #[test]
    fn tls_is_skipped_only_for_local_connections_that_did_not_ask() {
        assert!(ssl_pointless("postgresql://u@127.0.0.1/db", "127.0.0.1"));
        assert!(ssl_pointless("postgresql://u@localhost/db", "localhost"));
        assert!(ssl_pointless("postgresql://u@[::1]/db", "::1"));
        assert!(ssl_pointless(
            "postgresql:///db?host=/run/postgresql",
            "/run/postgresql"
        ));
        assert!(!ssl_pointless(
            "postgresql://u@db.internal/db",
            "db.internal"
        ));
        assert!(!ssl_pointless("postgresql://u@10.0.0.5/db", "10.0.0.5"));
        assert!(!ssl_pointless(
            "postgresql://u@127.0.0.1/db?sslmode=require",
            "127.0.0.1"
        ));
    }
}
