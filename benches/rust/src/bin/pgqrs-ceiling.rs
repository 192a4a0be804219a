//! The benchmark's ceiling: the best hand-written SQL for pgqrs's benchmark scenarios, run
//! through the same drivers pgqrs uses (sqlx 0.9, PostgreSQL and SQLite), with no queue library
//! around it. `benches/run.py` prints every pgqrs figure as a ratio to these.
//!
//! ```text
//! pgqrs-ceiling s1 --dsn DSN --count 5000                    # one INSERT per job
//! pgqrs-ceiling s2 --dsn DSN --count 50000 --batch 500       # batch INSERT
//! pgqrs-ceiling s3 --dsn DSN --count 20000 --consumers 4 --batch 50
//! pgqrs-ceiling reset-schema --dsn DSN | drop-schema --dsn DSN   # PostgreSQL housekeeping
//! pgqrs-ceiling version --dsn DSN                            # server / library version
//! pgqrs-ceiling analyze-ready --dsn DSN | analyze-leased --dsn DSN  # statistics of pgqrs's tables
//! ```
//!
//! DSNs are pgqrs's: `postgresql://…?schema=NAME` (the tables go in schema NAME) or
//! `sqlite:///path.db`. Each scenario prints one JSON object: `{"value": jobs/s, …}`.
//! Connections are made as pgqrs makes them (no TLS to a local server unless `sslmode` says
//! so), but without sqlx's ping before each use of a pooled connection.
//!
//! What the SQL does, per backend:
//! * PostgreSQL — S1: one `INSERT … RETURNING id` per job (autocommit). S2: one
//!   `INSERT … SELECT … FROM unnest($2::text[])` per batch. S3: each consumer claims with a
//!   `FOR UPDATE SKIP LOCKED` CTE feeding an `UPDATE … RETURNING` (a lease: attempts + 1,
//!   invisible for 30 s) and completes with one `DELETE … WHERE id = ANY($1)` per claimed batch.
//! * SQLite — WAL, `synchronous=FULL` (pgqrs's default durability), one writer connection.
//!   S1: one autocommit `INSERT` per job. S2: a multi-row `INSERT` per batch, in a
//!   `BEGIN IMMEDIATE` transaction. S3: claim (`UPDATE … WHERE id IN (SELECT … LIMIT n)
//!   RETURNING`) and completion (`DELETE … WHERE id IN (SELECT value FROM json_each(?))`), each
//!   in its own `BEGIN IMMEDIATE` transaction.

use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Row};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const QUEUE: i64 = 1;
const LEASE_SECS: f64 = 30.0;

struct Args {
    command: String,
    dsn: String,
    count: usize,
    batch: usize,
    consumers: usize,
}

fn parse_args() -> Res<Args> {
    let mut it = std::env::args().skip(1);
    let command = it.next().ok_or("usage: pgqrs-ceiling <s1|s2|s3|reset-schema|drop-schema|version> --dsn DSN [--count N] [--batch N] [--consumers N]")?;
    let mut a = Args {
        command,
        dsn: String::new(),
        count: 1000,
        batch: 1,
        consumers: 1,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dsn" => a.dsn = value,
            "--count" => a.count = value.parse()?,
            "--batch" => a.batch = value.parse()?,
            "--consumers" => a.consumers = value.parse()?,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    if a.dsn.is_empty() {
        return Err("--dsn is required".into());
    }
    if a.batch == 0 || a.consumers == 0 {
        return Err("--batch and --consumers must be at least 1".into());
    }
    Ok(a)
}

/// Split pgqrs's `schema` query parameter off a PostgreSQL DSN.
fn split_schema(dsn: &str) -> (String, String) {
    let Some((base, query)) = dsn.split_once('?') else {
        return (dsn.to_string(), "public".to_string());
    };
    let mut schema = "public".to_string();
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("schema=") {
            Some(s) => {
                schema = s.to_string();
                false
            }
            None => !kv.is_empty(),
        })
        .collect();
    if rest.is_empty() {
        (base.to_string(), schema)
    } else {
        (format!("{base}?{}", rest.join("&")), schema)
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn payload(i: usize) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    json!({"i": i, "t": t}).to_string()
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

enum Db {
    Pg(PgPool),
    Lite(SqlitePool),
}

fn ping() -> bool {
    std::env::var("CEILING_PING").is_ok_and(|v| v == "1")
}

/// pgqrs's TLS policy, so that both connect alike: a DSN that names no `sslmode` (with
/// `PGSSLMODE` unset) to a loopback address or a Unix socket goes without TLS; anything else
/// keeps sqlx's default. (sqlx leaves Nagle's algorithm on, and over TLS a statement larger
/// than one TLS record waits for a delayed ACK: tens of milliseconds.)
fn pg_options(dsn: &str) -> Res<PgConnectOptions> {
    let opts = PgConnectOptions::from_str(dsn)?;
    let named = dsn.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|kv| kv.to_ascii_lowercase().starts_with("sslmode="))
    });
    let host = opts.get_host().trim_matches(['[', ']']).to_string();
    let local = host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    Ok(
        if local && !named && std::env::var_os("PGSSLMODE").is_none() {
            opts.ssl_mode(PgSslMode::Disable)
        } else {
            opts
        },
    )
}

async fn pg_pool(dsn: &str, size: u32) -> Res<PgPool> {
    let (base, schema) = split_schema(dsn);
    let opts = pg_options(&base)?.options([("search_path", schema)]);
    // No ping before each use of a pooled connection (sqlx's default): a round trip per
    // statement that a hand-written loop would not make. CEILING_PING=1 puts it back, to
    // measure what it costs.
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .min_connections(size)
        .test_before_acquire(ping())
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(opts)
        .await?)
}

async fn open(dsn: &str, size: u32) -> Res<Db> {
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let pool = pg_pool(dsn, size).await?;
        for stmt in [
            "CREATE TABLE jobs (
                id          BIGSERIAL PRIMARY KEY,
                queue_id    BIGINT NOT NULL,
                payload     JSONB NOT NULL,
                attempts    INTEGER NOT NULL DEFAULT 0,
                enqueued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                visible_at  TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
            "CREATE INDEX jobs_claim ON jobs (queue_id, visible_at, id)",
        ] {
            sqlx::query(stmt).execute(&pool).await?;
        }
        Ok(Db::Pg(pool))
    } else if dsn.starts_with("sqlite:") {
        let opts = SqliteConnectOptions::from_str(dsn)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        // One writer connection: in one process that is the fastest way to share SQLite's
        // single write lock (pgqrs does the same).
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(ping())
            .connect_with(opts)
            .await?;
        for stmt in [
            "CREATE TABLE jobs (
                id          INTEGER PRIMARY KEY,
                queue_id    INTEGER NOT NULL,
                payload     TEXT NOT NULL,
                attempts    INTEGER NOT NULL DEFAULT 0,
                enqueued_at INTEGER NOT NULL,
                visible_at  INTEGER NOT NULL
            )",
            "CREATE INDEX jobs_claim ON jobs (queue_id, visible_at, id)",
        ] {
            sqlx::query(stmt).execute(&pool).await?;
        }
        Ok(Db::Lite(pool))
    } else {
        Err(format!("the ceiling speaks PostgreSQL and SQLite only, not {dsn:?}").into())
    }
}

// --- S1: one INSERT per job -------------------------------------------------------------

async fn s1(db: &Db, count: usize) -> Res<()> {
    for i in 0..count {
        match db {
            Db::Pg(p) => {
                sqlx::query_scalar::<_, i64>(
                    "INSERT INTO jobs (queue_id, payload) VALUES ($1, $2::jsonb) RETURNING id",
                )
                .bind(QUEUE)
                .bind(payload(i))
                .fetch_one(p)
                .await?;
            }
            Db::Lite(p) => {
                let now = now_us();
                sqlx::query_scalar::<_, i64>(
                    "INSERT INTO jobs (queue_id, payload, enqueued_at, visible_at)
                     VALUES (?1, ?2, ?3, ?3) RETURNING id",
                )
                .bind(QUEUE)
                .bind(payload(i))
                .bind(now)
                .fetch_one(p)
                .await?;
            }
        }
    }
    Ok(())
}

// --- S2: batch INSERT -------------------------------------------------------------------

fn lite_insert_sql(n: usize) -> String {
    let mut s =
        String::from("INSERT INTO jobs (queue_id, payload, enqueued_at, visible_at) VALUES ");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("(?1, ?{}, ?2, ?2)", i + 3));
    }
    s.push_str(" RETURNING id");
    s
}

async fn insert_batch(db: &Db, from: usize, n: usize) -> Res<usize> {
    let payloads: Vec<String> = (from..from + n).map(payload).collect();
    let ids = match db {
        Db::Pg(p) => {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO jobs (queue_id, payload)
                 SELECT $1, p::jsonb FROM unnest($2::text[]) WITH ORDINALITY AS t(p, n) ORDER BY n
                 RETURNING id",
            )
            .bind(QUEUE)
            .bind(&payloads)
            .fetch_all(p)
            .await?
        }
        Db::Lite(p) => {
            let sql = lite_insert_sql(n);
            let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
            let mut q = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
                .bind(QUEUE)
                .bind(now_us());
            for pl in payloads {
                q = q.bind(pl);
            }
            let ids = q.fetch_all(&mut *tx).await?;
            tx.commit().await?;
            ids
        }
    };
    Ok(ids.len())
}

async fn s2(db: &Db, count: usize, batch: usize) -> Res<()> {
    let mut done = 0;
    while done < count {
        let n = batch.min(count - done);
        done += insert_batch(db, done, n).await?;
    }
    Ok(())
}

// --- S3: drain a backlog ----------------------------------------------------------------

/// Claim up to `n` jobs (a lease); returns their ids after decoding each payload.
async fn claim(db: &Db, n: usize) -> Res<Vec<i64>> {
    match db {
        Db::Pg(p) => {
            let rows = sqlx::query(
                "WITH c AS (
                    SELECT id FROM jobs
                    WHERE queue_id = $1 AND visible_at <= now()
                    ORDER BY visible_at, id
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE jobs j
                SET attempts = j.attempts + 1, visible_at = now() + make_interval(secs => $3)
                FROM c WHERE j.id = c.id
                RETURNING j.id, j.payload",
            )
            .bind(QUEUE)
            .bind(n as i64)
            .bind(LEASE_SECS)
            .fetch_all(p)
            .await?;
            let mut ids = Vec::with_capacity(rows.len());
            for r in rows {
                let _payload: Json<Value> = r.try_get(1)?;
                ids.push(r.try_get(0)?);
            }
            Ok(ids)
        }
        Db::Lite(p) => {
            let now = now_us();
            let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
            let rows = sqlx::query(
                "UPDATE jobs SET attempts = attempts + 1, visible_at = ?3
                 WHERE id IN (SELECT id FROM jobs WHERE queue_id = ?1 AND visible_at <= ?2
                              ORDER BY visible_at, id LIMIT ?4)
                 RETURNING id, payload",
            )
            .bind(QUEUE)
            .bind(now)
            .bind(now + (LEASE_SECS * 1e6) as i64)
            .bind(n as i64)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            let mut ids = Vec::with_capacity(rows.len());
            for r in rows {
                let text: &str = r.try_get(1)?;
                let _payload: Value = serde_json::from_str(text)?;
                ids.push(r.try_get(0)?);
            }
            Ok(ids)
        }
    }
}

/// Complete (delete) the claimed jobs in one statement.
async fn complete(db: &Db, ids: &[i64]) -> Res<()> {
    match db {
        Db::Pg(p) => {
            sqlx::query("DELETE FROM jobs WHERE id = ANY($1)")
                .bind(ids)
                .execute(p)
                .await?;
        }
        Db::Lite(p) => {
            let list = serde_json::to_string(ids)?;
            let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?1))")
                .bind(list)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

async fn consumer(db: std::sync::Arc<Db>, batch: usize) -> Res<usize> {
    let mut done = 0;
    loop {
        let ids = claim(&db, batch).await?;
        if ids.is_empty() {
            return Ok(done);
        }
        complete(&db, &ids).await?;
        done += ids.len();
    }
}

async fn s3(db: Db, count: usize, consumers: usize, batch: usize) -> Res<f64> {
    // Prefill (not timed).
    let mut filled = 0;
    while filled < count {
        let n = 500.min(count - filled);
        filled += insert_batch(&db, filled, n).await?;
    }
    let db = std::sync::Arc::new(db);
    let start = Instant::now();
    let tasks: Vec<_> = (0..consumers)
        .map(|_| tokio::spawn(consumer(db.clone(), batch)))
        .collect();
    let mut drained = 0;
    for t in tasks {
        drained += t.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    if drained != count {
        return Err(format!("drained {drained} jobs, expected {count}").into());
    }
    Ok(elapsed)
}

// --- housekeeping -------------------------------------------------------------------------

/// Planner statistics for pgqrs's tables in a database pgqrs filled (the `analyzed` drains):
/// taken as they are (every job ready), or with every job leased for the moment of `ANALYZE`
/// and ready again afterwards, the two states between which a real queue swings while
/// autovacuum analyzes it.
async fn analyze_pgqrs(dsn: &str, leased: bool) -> Res<()> {
    // Per dialect: lease every job, take the statistics, make every job ready again.
    let (lease, analyze, unlease) = if dsn.starts_with("sqlite:") {
        (
            "UPDATE pgqrs_jobs SET attempts = attempts + 1, leased_at = 1,
                 visible_at = 9000000000000000;"
                .to_string(),
            "ANALYZE; PRAGMA optimize;".to_string(),
            "UPDATE pgqrs_jobs SET attempts = attempts - 1, leased_at = NULL, visible_at = 0;"
                .to_string(),
        )
    } else {
        let s = quote_ident(&split_schema(dsn).1);
        (
            format!(
                "UPDATE {s}.pgqrs_jobs SET attempts = attempts + 1, leased_at = now(),
                     visible_at = now() + interval '1 hour';"
            ),
            format!("ANALYZE {s}.pgqrs_jobs, {s}.pgqrs_archive, {s}.pgqrs_dead;"),
            format!(
                "UPDATE {s}.pgqrs_jobs SET attempts = attempts - 1, leased_at = NULL,
                     visible_at = now();"
            ),
        )
    };
    let sql = if leased {
        format!("{lease}{analyze}{unlease}")
    } else {
        analyze
    };
    if dsn.starts_with("sqlite:") {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::from_str(dsn)?.busy_timeout(Duration::from_secs(30)),
            )
            .await?;
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&pool).await?;
        pool.close().await;
    } else {
        let pool = server_pool(dsn).await?;
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&pool).await?;
        pool.close().await;
    }
    Ok(())
}

/// One connection to the server of a pgqrs DSN, outside its schema (housekeeping).
async fn server_pool(dsn: &str) -> Res<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(1)
        .connect_with(pg_options(&split_schema(dsn).0)?)
        .await?)
}

async fn schema_cmd(dsn: &str, create: bool) -> Res<()> {
    if !(dsn.starts_with("postgres://") || dsn.starts_with("postgresql://")) {
        return Ok(());
    }
    let pool = server_pool(dsn).await?;
    let q = quote_ident(&split_schema(dsn).1);
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {q} CASCADE")))
        .execute(&pool)
        .await?;
    if create {
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {q}")))
            .execute(&pool)
            .await?;
    }
    pool.close().await;
    Ok(())
}

/// The server's (or the bundled library's) version, for the report's header.
async fn version(dsn: &str) -> Res<()> {
    let v: String = if dsn.starts_with("sqlite:") {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(SqliteConnectOptions::from_str("sqlite::memory:")?)
            .await?;
        sqlx::query_scalar("SELECT 'SQLite ' || sqlite_version()")
            .fetch_one(&pool)
            .await?
    } else {
        let pool = server_pool(dsn).await?;
        sqlx::query_scalar("SELECT 'PostgreSQL ' || current_setting('server_version')")
            .fetch_one(&pool)
            .await?
    };
    println!("{}", json!({ "version": v }));
    Ok(())
}

async fn run(a: Args) -> Res<()> {
    let report = |elapsed: f64, count: usize| {
        println!(
            "{}",
            json!({"value": count as f64 / elapsed, "unit": "jobs/s",
                   "count": count, "elapsed_s": elapsed})
        );
    };
    match a.command.as_str() {
        "reset-schema" => schema_cmd(&a.dsn, true).await,
        "version" => version(&a.dsn).await,
        "drop-schema" => schema_cmd(&a.dsn, false).await,
        "analyze-ready" => analyze_pgqrs(&a.dsn, false).await,
        "analyze-leased" => analyze_pgqrs(&a.dsn, true).await,
        "s1" => {
            let db = open(&a.dsn, 1).await?;
            let start = Instant::now();
            s1(&db, a.count).await?;
            report(start.elapsed().as_secs_f64(), a.count);
            Ok(())
        }
        "s2" => {
            let db = open(&a.dsn, 1).await?;
            let start = Instant::now();
            s2(&db, a.count, a.batch).await?;
            report(start.elapsed().as_secs_f64(), a.count);
            Ok(())
        }
        "s3" => {
            let db = open(&a.dsn, a.consumers as u32).await?;
            let elapsed = s3(db, a.count, a.consumers, a.batch).await?;
            report(elapsed, a.count);
            Ok(())
        }
        other => Err(format!("unknown command {other:?}").into()),
    }
}

fn main() {
    let result = parse_args().and_then(|a| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(a))
    });
    if let Err(e) = result {
        eprintln!("pgqrs-ceiling: {e}");
        std::process::exit(1);
    }
}
