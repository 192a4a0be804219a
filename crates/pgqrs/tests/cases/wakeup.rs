//! Idle workers wake up for a job enqueued through another store, long before their poll
//! interval: PostgreSQL LISTEN/NOTIFY, the SQLite change watcher, and on Turso (one process
//! per file) the wake-ups every store on the file shares inside the process. With
//! `notify=false` (PostgreSQL) workers fall back to polling.

use std::time::{Duration, Instant};

use pgqrs::{Store, WorkerStatus};
use serde_json::json;
use tokio::sync::mpsc;

use crate::common::*;

/// Far longer than any bound below: a job that starts within one of them was not found by
/// polling.
const LONG_POLL: Duration = Duration::from_secs(10);

/// A worker on `queue` polling every `poll`; each handler sends (job id, start instant).
fn worker(
    store: &Store,
    queue: &str,
    poll: Duration,
) -> (
    pgqrs::ShutdownHandle,
    tokio::task::JoinHandle<pgqrs::Result<pgqrs::WorkerStats>>,
    mpsc::UnboundedReceiver<(i64, Instant)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let w = pgqrs::worker(queue).poll_interval(poll).handle(move |m| {
        let _ = tx.send((m.id, Instant::now()));
        async { Ok(()) }
    });
    let (stop, run) = spawn_worker(store, w);
    (stop, run, rx)
}

/// Wait until the worker on `queue` is registered and running, (PostgreSQL with
/// notifications) its LISTEN is in place, and it has had time to find the queue empty and
/// start waiting.
async fn until_idle(db: &TestDb, store: &Store, queue: &str, listens: bool) {
    let admin = pgqrs::admin(store);
    eventually(secs(10), "the worker is registered", || async {
        admin
            .list_workers()
            .await
            .unwrap()
            .iter()
            .any(|w| w.queue == queue && w.status == WorkerStatus::Running)
    })
    .await;
    #[cfg(not(feature = "postgres"))]
    let _ = (db, listens);
    #[cfg(feature = "postgres")]
    if listens {
        let channel = format!("pgqrs_{}", db.schema().expect("a PostgreSQL schema"));
        let sql =
            format!("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %{channel}%'");
        eventually(secs(10), "the worker's store listens", || async {
            db.pg_count(&sql).await > 0
        })
        .await;
    }
    sleep_ms(500).await;
}

/// A job enqueued through a second store on the same database starts within 1 s, though the
/// worker polls every 10 s; twice, so a worker woken once is woken again.
pub async fn from_another_store(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let other = db.connect().await;
    let (stop, run, mut started) = worker(&store, "q", LONG_POLL);
    until_idle(db, &store, "q", db.is_postgres()).await;
    for round in 0..2 {
        let t = Instant::now();
        let id = pgqrs::enqueue()
            .message(&json!(round))
            .to("q")
            .execute(&other)
            .await
            .unwrap()[0];
        let (got, at) = tokio::time::timeout(secs(1), started.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "[{:?}] round {round}: a job enqueued by another store did not start within \
                     1 s (poll interval {LONG_POLL:?}): the idle worker was not woken",
                    db.kind()
                )
            })
            .expect("worker alive");
        assert_eq!(got, id);
        let waited = at - t;
        assert!(waited < secs(1), "round {round}: started after {waited:?}");
        eprintln!(
            "wakeup[{:?}] round {round}: started {waited:?} after the enqueue",
            db.kind()
        );
        sleep_ms(500).await; // idle again
    }
    stop.shutdown();
    let stats = run.await.unwrap().unwrap();
    assert_eq!(stats.succeeded, 2, "{stats:?}");
    other.close().await;
}

/// PostgreSQL with `notify=false`: a short poll interval still delivers a job enqueued
/// through another store; with a long one nothing wakes the worker early (the job waits).
pub async fn notify_off_polls(db: &TestDb) {
    let store = db.store_with("notify=false").await;
    let admin = pgqrs::admin(&store);
    admin.create_queue("fast").await.unwrap();
    admin.create_queue("slow").await.unwrap();
    let other = db.connect().await;

    // Polling every 50 ms (an idle worker's wait doubles up to 500 ms).
    let (stop, run, mut started) = worker(&store, "fast", ms(50));
    until_idle(db, &store, "fast", false).await;
    let t = Instant::now();
    let id = pgqrs::enqueue()
        .message(&json!("fast"))
        .to("fast")
        .execute(&other)
        .await
        .unwrap()[0];
    let (got, at) = tokio::time::timeout(secs(3), started.recv())
        .await
        .expect("with notify=false and a 50 ms poll interval the job starts by polling")
        .unwrap();
    assert_eq!(got, id);
    eprintln!(
        "notify=false, 50 ms poll: started {:?} after the enqueue",
        at - t
    );
    stop.shutdown();
    run.await.unwrap().unwrap();

    // Polling every 10 s, no notifications: the job is not picked up within 2 s.
    let (stop, run, mut started) = worker(&store, "slow", LONG_POLL);
    until_idle(db, &store, "slow", false).await;
    pgqrs::enqueue()
        .message(&json!("slow"))
        .to("slow")
        .execute(&other)
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(secs(2), started.recv()).await.is_err(),
        "with notify=false something woke the idle worker before its poll interval"
    );
    assert_eq!(metrics(&store, "slow").await.ready, 1);
    // Shutting down does not wait out the poll interval.
    let t = Instant::now();
    stop.shutdown();
    run.await.unwrap().unwrap();
    assert!(t.elapsed() < secs(5), "shutdown took {:?}", t.elapsed());
    other.close().await;
}
