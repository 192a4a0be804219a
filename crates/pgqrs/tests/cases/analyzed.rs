//! Drains on a table whose planner statistics are stale, as every production database's are.
//!
//! A queue table swings between "all ready" and "all leased" within seconds, while autovacuum
//! (or a user) runs `ANALYZE` at any moment in between. A statement whose plan trusts those
//! statistics meets the wrong ones: on PostgreSQL the batch completions once scanned the whole
//! table per lease after an `ANALYZE` taken while nothing was leased (20,000 jobs handled in
//! 3 s, archived over 40 s+). These cases fill a queue, analyze it in one state, and drain it in
//! the other with the worker's claim-ahead and batched completions: the archive must keep up
//! with the handlers.
//!
//! The bound is deliberately loose (a hang or a crawl fails it, a slow machine does not): all
//! jobs archived within `3 × (time the handlers took) + 3 s`. Speed itself is the benchmark's
//! business (`make bench`, the `analyzed` drain rows).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// Jobs per drain: enough that a plan which scans the table per lease takes seconds per batch.
const JOBS: usize = 20_000;

/// `ANALYZE` taken while every job was ready; the drain then leases them.
pub async fn drain_after_analyze_all_ready(db: &TestDb) {
    drain_after_analyze(db, false).await
}

/// `ANALYZE` taken while every job was leased; the drain starts after they were released.
pub async fn drain_after_analyze_all_leased(db: &TestDb) {
    drain_after_analyze(db, true).await
}

async fn drain_after_analyze(db: &TestDb, analyzed_leased: bool) {
    let store = db.store_with_queue("q").await;
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(1_000) {
        pgqrs::enqueue()
            .messages(chunk.iter().map(|i| serde_json::json!({ "i": i })))
            .to("q")
            .execute(&store)
            .await
            .expect("enqueue");
    }
    let jobs = db.table("pgqrs_jobs");
    if analyzed_leased {
        // Lease every job (as a drain in full swing does), analyze, then make them ready again.
        // Raw SQL: the state the statistics see is the point, not how it came about.
        if db.is_postgres() {
            db.exec_raw(&format!(
                "UPDATE {jobs} SET attempts = 1, lease_token = lease_token + 1, \
                 leased_at = now(), visible_at = now() + interval '1 hour', worker_id = 1"
            ))
            .await;
        } else {
            db.exec_raw(&format!(
                "UPDATE {jobs} SET attempts = 1, lease_token = lease_token + 1, \
                 leased_at = 1, visible_at = 9000000000000000, worker_id = 1"
            ))
            .await;
        }
        analyze(db).await;
        db.exec_raw(&format!(
            "UPDATE {jobs} SET attempts = 0, leased_at = NULL, worker_id = NULL, visible_at = {}",
            if db.is_postgres() { "now()" } else { "0" }
        ))
        .await;
    } else {
        analyze(db).await;
    }

    let handled = Arc::new(AtomicUsize::new(0));
    let all_handled_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (h, at) = (handled.clone(), all_handled_at.clone());
    let w = pgqrs::worker("q")
        .concurrency(4)
        .batch_size(50)
        .poll_interval(ms(50))
        // Completions in batches of up to 500, as a worker whose handlers outpace its
        // completion writes sends them (the statements whose plans went wrong).
        .completion_flush(ms(100), 500)
        .handle(move |_m| {
            let (h, at) = (h.clone(), at.clone());
            async move {
                if h.fetch_add(1, Ordering::SeqCst) + 1 == JOBS {
                    *at.lock().unwrap() = Some(Instant::now());
                }
                Ok(())
            }
        });
    let start = Instant::now();
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(120), "every job archived", || async {
        metrics(&store, "q").await.archived == JOBS as i64
    })
    .await;
    let archived_after = start.elapsed();
    stop.shutdown();
    let stats = run.await.unwrap().unwrap();

    let handled_after = all_handled_at
        .lock()
        .unwrap()
        .expect("every handler ran before every job was archived")
        .duration_since(start);
    let bound = handled_after * 3 + Duration::from_secs(3);
    let state = if analyzed_leased { "leased" } else { "ready" };
    eprintln!(
        "{:?}: analyzed all-{state}: handlers done after {handled_after:?}, archive after {archived_after:?}",
        db.kind()
    );
    assert!(
        archived_after <= bound,
        "analyzed all-{state}: handlers were done after {handled_after:?} but the archive took \
         {archived_after:?} (bound {bound:?}): completions do not keep up on an analyzed table"
    );
    assert_eq!(
        (stats.succeeded, stats.failed, stats.lease_lost),
        (JOBS as u64, 0, 0),
        "every job handled once and completed under its lease"
    );
    assert_eq!(handled.load(Ordering::SeqCst), JOBS);
    assert_eq!(counts(&store, "q").await, (0, 0, 0, JOBS as i64, 0));
}

/// Planner statistics for the job tables, as autovacuum (PostgreSQL) or a user (`ANALYZE`,
/// `PRAGMA optimize` on SQLite) records them.
async fn analyze(db: &TestDb) {
    match db.kind() {
        Kind::Postgres => {
            let sql = ["pgqrs_jobs", "pgqrs_archive", "pgqrs_dead"]
                .iter()
                .map(|t| format!("ANALYZE {};", db.table(t)))
                .collect::<String>();
            db.exec_raw(&sql).await
        }
        Kind::Sqlite => db.exec_raw("ANALYZE; PRAGMA optimize;").await,
        // Turso's planner reads `sqlite_stat1` as SQLite's does.
        Kind::Turso => db.exec_raw("ANALYZE;").await,
    }
}
