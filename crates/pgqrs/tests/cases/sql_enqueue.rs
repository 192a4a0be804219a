//! PostgreSQL's SQL enqueue function, `<schema>.pgqrs_enqueue(queue, payload, ...)`, for
//! clients that are not pgqrs (psycopg, asyncpg, SQLAlchemy, psql): the same defaults and
//! checks as the library's enqueue, bounds included (the function reads them from the
//! settings that `install()` writes), typed SQLSTATEs for bad input, and unique keys.
//! Rollback and commit, and waking a worker at the commit, are tested from psycopg
//! (`tests/test_sql_enqueue.py`).

use std::time::Duration;

use pgqrs::{sqlx, Consumer, Error, JobState, Store};
use serde_json::json;

use crate::assert_err;
use crate::common::*;

/// Call the function with these arguments (SQL text after the queue), on a connection of
/// its own; the job id, or (SQLSTATE, message).
async fn call(db: &TestDb, queue: &str, args: &str) -> Result<i64, (String, String)> {
    use sqlx::Connection;
    let schema = db.schema().expect("a PostgreSQL schema");
    let sql = format!("SELECT \"{schema}\".pgqrs_enqueue('{queue}', {args})");
    let mut c = sqlx::PgConnection::connect(&db.server_dsn())
        .await
        .expect("connect");
    let r = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut c)
        .await;
    let _ = c.close().await;
    r.map_err(|e| match e {
        sqlx::Error::Database(d) => (
            d.code().map(|c| c.into_owned()).unwrap_or_default(),
            d.message().to_string(),
        ),
        e => panic!("not a database error: {e}"),
    })
}

async fn ok(db: &TestDb, args: &str) -> i64 {
    call(db, "q", args)
        .await
        .unwrap_or_else(|e| panic!("pgqrs_enqueue('q', {args}): {e:?}"))
}

async fn refused(db: &TestDb, args: &str, code: &str, says: &str) {
    match call(db, "q", args).await {
        Err((c, m)) => {
            assert_eq!(c, code, "pgqrs_enqueue('q', {args}): {m}");
            assert!(
                m.contains(says),
                "pgqrs_enqueue('q', {args}): {m:?} lacks {says:?}"
            );
        }
        Ok(id) => panic!("pgqrs_enqueue('q', {args}) made job {id}; expected {code} {says:?}"),
    }
}

async fn store_with_queue(db: &TestDb, params: &str) -> Store {
    let store = db.store_with(params).await;
    pgqrs::admin(&store).create_queue("q").await.unwrap();
    store
}

/// With no options, the function makes the job the builder makes (the store that installed
/// sets max_attempts); with options, the same stored values.
pub async fn defaults_and_options_match_the_builder(db: &TestDb) {
    let store = store_with_queue(db, "max_attempts=7").await;
    let by_sql = ok(db, r#"'{"a": 1}'"#).await;
    let by_lib = pgqrs::enqueue()
        .message(&json!({"a": 1}))
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let c = Consumer::new(&store, "q").await.unwrap();
    let got = c.dequeue(10, None).await.unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    let (s, l) = (&got[0], &got[1]);
    assert_eq!((s.id, l.id), (by_sql, by_lib));
    assert_eq!(s.payload, l.payload);
    assert_eq!((s.max_attempts, s.priority, s.timeout), (7, 0, None));
    assert_eq!(
        (s.max_attempts, s.priority, s.timeout),
        (l.max_attempts, l.priority, l.timeout)
    );

    let id = ok(
        db,
        "'[1]', priority => 9, max_attempts => 2, timeout => interval '1.5 seconds'",
    )
    .await;
    let m = c.dequeue(1, None).await.unwrap();
    assert_eq!(m[0].id, id);
    assert_eq!(
        (m[0].priority, m[0].max_attempts, m[0].timeout),
        (9, 2, Some(Duration::from_millis(1500)))
    );
    // Timeouts are stored in whole milliseconds, rounded up, as the library stores them.
    ok(db, "'2', timeout => interval '0.0015 seconds'").await;
    assert_eq!(
        c.dequeue(1, None).await.unwrap()[0].timeout,
        Some(Duration::from_millis(2))
    );
    let later = ok(db, "'3', delay => interval '1 hour'").await;
    let at = ok(db, "'4', at => now() + interval '2 hours'").await;
    let admin = pgqrs::admin(&store);
    for id in [later, at] {
        assert_eq!(admin.get_job(id).await.unwrap().state, JobState::Delayed);
    }
    let past = ok(db, "'5', at => now() - interval '1 minute'").await;
    assert_eq!(admin.get_job(past).await.unwrap().state, JobState::Ready);
    // The group, as the builder's `group`.
    let grouped = ok(db, "'6', group_key => 'customer-7'").await;
    let job = admin.get_job(grouped).await.unwrap();
    assert_eq!(job.group.as_deref(), Some("customer-7"));
    let keyed = ok(db, "'7', key => 'g', group_key => 'customer-8'").await;
    let job = admin.get_job(keyed).await.unwrap();
    assert_eq!(job.group.as_deref(), Some("customer-8"));
}

/// The library's bounds, at their edges, and every bad option: SQLSTATE 22023 with the
/// option's name; an unknown queue: 42704.
pub async fn bad_input_is_refused_like_the_library(db: &TestDb) {
    let store = store_with_queue(db, "").await;
    let bad = "22023";
    ok(db, "'1', priority => 32767").await;
    ok(db, "'1', priority => -32768").await;
    refused(db, "'1', priority => 32768", bad, "priority").await;
    refused(db, "'1', priority => -32769", bad, "priority").await;
    assert_err!(
        pgqrs::enqueue()
            .message(&1)
            .priority(32768)
            .to("q")
            .execute(&store)
            .await,
        Error::Validation {
            field: "priority",
            ..
        }
    );
    refused(db, "'1', max_attempts => 0", bad, "max_attempts").await;
    refused(db, "NULL", bad, "payload").await;
    ok(db, "'null'").await;
    refused(
        db,
        "'1', delay => interval '1 second', at => now()",
        bad,
        "not both",
    )
    .await;
    refused(db, "'1', delay => interval '-1 second'", bad, "delay").await;
    refused(db, "'1', delay => interval '101 years'", bad, "delay").await;
    refused(db, "'1', at => now() + interval '101 years'", bad, "at").await;
    ok(db, "'1', timeout => interval '7 days'").await;
    ok(db, "'1', timeout => interval '1 millisecond'").await;
    refused(
        db,
        "'1', timeout => interval '7 days 1 millisecond'",
        bad,
        "timeout",
    )
    .await;
    refused(
        db,
        "'1', timeout => interval '0.5 milliseconds'",
        bad,
        "timeout",
    )
    .await;
    refused(db, "'1', key => ''", bad, "key").await;
    refused(db, "'1', group_key => ''", bad, "group_key").await;
    refused(
        db,
        &format!(
            "'1', group_key => '{}'",
            "g".repeat(pgqrs::MAX_KEY_BYTES + 1)
        ),
        bad,
        "group_key",
    )
    .await;
    ok(
        db,
        &format!("'1', key => '{}'", "k".repeat(pgqrs::MAX_KEY_BYTES)),
    )
    .await;
    refused(
        db,
        &format!("'1', key => '{}'", "k".repeat(pgqrs::MAX_KEY_BYTES + 1)),
        bad,
        "key",
    )
    .await;
    refused(
        db,
        "'1', unique_for => interval '1 hour'",
        bad,
        "unique_for",
    )
    .await;
    refused(db, "'1', on_duplicate => 'error'", bad, "on_duplicate").await;
    refused(
        db,
        "'1', key => 'a', on_duplicate => 'replace'",
        bad,
        "on_duplicate",
    )
    .await;
    refused(
        db,
        "'1', key => 'a', unique_for => interval '0'",
        bad,
        "unique_for",
    )
    .await;
    // The payload must read back as written.
    let deep = |n: usize| format!("'{}{}'", "[".repeat(n), "]".repeat(n));
    ok(db, &deep(pgqrs::MAX_DEPTH)).await;
    refused(db, &deep(pgqrs::MAX_DEPTH + 1), bad, "nested more than 100").await;
    // Brackets and digits inside strings (escaped quotes too) are text, not structure.
    ok(
        db,
        &format!(
            r#"'["{}", "\" 99999999999999999999999 1e400"]'"#,
            "[".repeat(150)
        ),
    )
    .await;
    let mixed = |n: usize| format!("'{}1{}'", r#"{"a": ["#.repeat(n), "]}".repeat(n));
    ok(db, &mixed(pgqrs::MAX_DEPTH / 2)).await;
    refused(
        db,
        &mixed(pgqrs::MAX_DEPTH / 2 + 1),
        bad,
        "nested more than 100",
    )
    .await;
    ok(
        db,
        "'[18446744073709551615, -9223372036854775808, 1e308, 1e-400]'",
    )
    .await;
    refused(db, "'[18446744073709551616]'", bad, "64-bit range").await;
    refused(db, "'{\"n\": 1e400}'", bad, "64-bit float").await;
    ok(db, r#"'"99999999999999999999999 in a string"'"#).await;
    ok(db, r#"'"\ud83d\ude00 and \\ud800"'"#).await;
    refused(db, r#"'"\ud800"'"#, bad, "surrogate").await;
    refused(db, r#"'{"\udc00": 1}'"#, bad, "surrogate").await;
    match call(db, "no-such-queue", "'1'").await {
        Err((code, m)) => {
            assert_eq!(code, "42704", "{m}");
            assert!(m.contains("\"no-such-queue\" does not exist"), "{m}");
        }
        Ok(id) => panic!("made job {id} in no queue"),
    }
    // The size limit is the installing store's max_payload_bytes: installing again from a
    // store with another one changes it.
    let small = db.store_with("max_payload_bytes=250").await;
    let big = format!("'\"{}\"'", "x".repeat(249));
    refused(db, &big, bad, "exceeds the maximum of 250 bytes").await;
    ok(db, &format!("'\"{}\"'", "x".repeat(248))).await;
    small.close().await;
    // Nothing refused was written.
    let (ready, ..) = counts(&store, "q").await;
    assert_eq!(ready, 13, "the accepted calls only");
}

/// Unique keys: the holder's id (on_duplicate 'existing', the default), or unique_violation
/// (23505) naming it; a finished job holds its key for unique_for.
pub async fn unique_keys(db: &TestDb) {
    let store = store_with_queue(db, "").await;
    let first = ok(db, "'1', key => 'k'").await;
    assert_eq!(ok(db, "'2', key => 'k'").await, first);
    let by_lib = pgqrs::enqueue()
        .message(&3)
        .key("k")
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    assert_eq!(by_lib, vec![first], "the library sees the same key");
    match call(db, "q", "'4', key => 'k', on_duplicate => 'error'").await {
        Err((code, m)) => {
            assert_eq!(code, "23505", "{m}");
            assert!(m.contains(&format!("job {first} already holds")), "{m}");
        }
        Ok(id) => panic!("made job {id} with a taken key"),
    }
    // Finished: free, unless within unique_for.
    let c = Consumer::new(&store, "q").await.unwrap();
    let m = c.dequeue(1, None).await.unwrap();
    c.archive(m[0].id).await.unwrap();
    assert_eq!(
        ok(db, "'5', key => 'k', unique_for => interval '1 hour'").await,
        first
    );
    let second = ok(db, "'6', key => 'k'").await;
    assert_ne!(second, first);
    assert_eq!(counts(&store, "q").await.0, 1);
}

/// The settings the function reads are written by every install: a function whose settings
/// are gone says to run install(); verify() checks that the function exists.
pub async fn install_writes_the_settings(db: &TestDb) {
    let store = store_with_queue(db, "").await;
    let settings = db.table("pgqrs_settings");
    db.exec_raw(&format!(
        "DELETE FROM {settings} WHERE name LIKE 'enqueue.%'"
    ))
    .await;
    refused(db, "'1'", "55000", "run pgqrs's install()").await;
    pgqrs::admin(&store).install().await.unwrap();
    ok(db, "'1'").await;
    pgqrs::admin(&store).verify().await.unwrap();
    let schema = db.schema().unwrap();
    db.exec_raw(&format!(
        "DROP FUNCTION \"{schema}\".pgqrs_enqueue(text, json, interval, timestamptz, integer, \
         integer, interval, text, interval, text, text)"
    ))
    .await;
    let e = pgqrs::admin(&store).verify().await.unwrap_err();
    assert!(e.to_string().contains("pgqrs_enqueue"), "{e}");
}
