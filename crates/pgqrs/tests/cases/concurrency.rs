//! Many consumers on one queue: every job handled exactly once when no lease expires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pgqrs::Consumer;
use serde_json::json;

use crate::common::*;

/// (jobs, consumers) per backend: 8 × 5,000 on PostgreSQL, 4 on SQLite.
fn size(db: &TestDb) -> (usize, usize) {
    if db.is_postgres() {
        (5000, 8)
    } else {
        (5000, 4)
    }
}

async fn fill(store: &pgqrs::Store, n: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        ids.extend(
            pgqrs::enqueue()
                .messages(chunk.iter().map(|i| json!({ "i": i })))
                .to("q")
                .execute(store)
                .await
                .unwrap(),
        );
    }
    assert_eq!(ids.len(), n);
    ids
}

fn check_exactly_once(ids: &[i64], seen: &HashMap<i64, usize>) {
    let dup: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).take(10).collect();
    assert!(dup.is_empty(), "handled more than once: {dup:?}");
    let lost: Vec<_> = ids
        .iter()
        .filter(|id| !seen.contains_key(id))
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "never handled ({} in all): {lost:?}",
        ids.len() - seen.len()
    );
    assert_eq!(
        seen.len(),
        ids.len(),
        "handled ids that were never enqueued?"
    );
}

/// K workers (each its own registered worker, concurrency 2) share the queue.
pub async fn exactly_once_workers(db: &TestDb) {
    let (n, k) = size(db);
    let store = db.store_with("pool_size=16").await;
    pgqrs::admin(&store).create_queue("q").await.unwrap();
    let ids = fill(&store, n).await;
    let seen: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let handled = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut runs = Vec::new();
    for _ in 0..k {
        let (s, h) = (seen.clone(), handled.clone());
        let w = pgqrs::worker("q")
            .concurrency(2)
            .batch_size(10)
            .poll_interval(ms(50))
            .handle(move |m| {
                *s.lock().unwrap().entry(m.id).or_default() += 1;
                h.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            });
        runs.push(spawn_worker(&store, w));
    }
    eventually(secs(120), "every job handled", || async {
        handled.load(Ordering::SeqCst) >= n
    })
    .await;
    eventually(secs(30), "every completion written", || async {
        metrics(&store, "q").await.archived == n as i64
    })
    .await;
    let elapsed = t.elapsed();
    let mut total = pgqrs::WorkerStats::default();
    let mut per_worker = Vec::new();
    for (stop, _) in &runs {
        stop.shutdown();
    }
    for (_, run) in runs {
        let s = run.await.unwrap().expect("worker run");
        per_worker.push(s.succeeded);
        total.succeeded += s.succeeded;
        total.failed += s.failed;
        total.lease_lost += s.lease_lost;
        total.released += s.released;
    }
    eprintln!(
        "exactly_once_workers[{:?}]: {n} jobs, {k} workers, {elapsed:?}; per worker {per_worker:?}",
        db.kind()
    );
    check_exactly_once(&ids, &seen.lock().unwrap());
    assert_eq!(total.succeeded, n as u64);
    assert_eq!((total.failed, total.lease_lost, total.released), (0, 0, 0));
    assert_eq!(counts(&store, "q").await, (0, 0, 0, n as i64, 0));
    assert!(
        per_worker.iter().filter(|s| **s > 0).count() >= 2,
        "the work was shared: {per_worker:?}"
    );
}

/// K tasks, each with its own `Consumer` on its own `Store` (its own connection pool, as K
/// processes would have), claim batches and archive them.
pub async fn exactly_once_consumers(db: &TestDb) {
    let (n, k) = size(db);
    let store = db.store_with("pool_size=16").await;
    pgqrs::admin(&store).create_queue("q").await.unwrap();
    let ids = fill(&store, n).await;
    let seen: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let transient = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..k {
        let own = db.connect_with("pool_size=2").await;
        let c = Consumer::new(&own, "q").await.unwrap();
        let (seen, done, transient) = (seen.clone(), done.clone(), transient.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = 0usize;
            let start = Instant::now();
            while done.load(Ordering::SeqCst) < n {
                assert!(
                    start.elapsed() < secs(120),
                    "stuck at {} of {n}",
                    done.load(Ordering::SeqCst)
                );
                let msgs = match c.dequeue(20, Some(secs(120))).await {
                    Ok(m) => m,
                    Err(e) if e.is_transient() => {
                        transient.fetch_add(1, Ordering::SeqCst);
                        sleep_ms(20).await;
                        continue;
                    }
                    Err(e) => panic!("dequeue: {e}"),
                };
                if msgs.is_empty() {
                    sleep_ms(20).await;
                    continue;
                }
                let batch: Vec<i64> = msgs.iter().map(|m| m.id).collect();
                {
                    let mut s = seen.lock().unwrap();
                    for id in &batch {
                        *s.entry(*id).or_default() += 1;
                    }
                }
                let ok = loop {
                    match c.archive_many(&batch).await {
                        Ok(r) => break r,
                        Err(e) if e.is_transient() => {
                            transient.fetch_add(1, Ordering::SeqCst);
                            sleep_ms(20).await;
                        }
                        Err(e) => panic!("archive_many: {e}"),
                    }
                };
                assert!(
                    ok.iter().all(|x| *x),
                    "a lease was lost with a 120 s lease: {ok:?}"
                );
                mine += batch.len();
                done.fetch_add(batch.len(), Ordering::SeqCst);
            }
            mine
        }));
    }
    let mut per_task = Vec::new();
    for task in tasks {
        per_task.push(task.await.expect("consumer task"));
    }
    eprintln!(
        "exactly_once_consumers[{:?}]: {n} jobs, {k} consumers, {:?}; per consumer {per_task:?}; {} transient errors retried",
        db.kind(),
        t.elapsed(),
        transient.load(Ordering::SeqCst)
    );
    check_exactly_once(&ids, &seen.lock().unwrap());
    assert_eq!(per_task.iter().sum::<usize>(), n);
    assert_eq!(counts(&store, "q").await, (0, 0, 0, n as i64, 0));
}
