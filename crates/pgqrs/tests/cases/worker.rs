//! The long-running `worker()`: concurrency, batches, failures, panics, shutdown, registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pgqrs::{Consumer, Error, RetryPolicy, WorkerStatus};
use serde_json::json;

use crate::assert_err;
use crate::common::*;

/// Ids handled, with how many times each.
#[derive(Default, Clone)]
struct Tally(Arc<Mutex<HashMap<i64, usize>>>);

impl Tally {
    fn record(&self, id: i64) {
        *self.0.lock().unwrap().entry(id).or_default() += 1;
    }
    fn snapshot(&self) -> HashMap<i64, usize> {
        self.0.lock().unwrap().clone()
    }
}

/// At most `concurrency` handlers run at once, and they do run concurrently.
pub async fn worker_concurrency(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let ids = pgqrs::enqueue()
        .messages(0..12)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tally = Tally::default();
    let (f, p, t) = (in_flight.clone(), peak.clone(), tally.clone());
    let w = pgqrs::worker("q")
        .concurrency(4)
        .poll_interval(ms(50))
        .handle(move |m| {
            let (f, p, t) = (f.clone(), p.clone(), t.clone());
            async move {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                sleep_ms(300).await;
                f.fetch_sub(1, Ordering::SeqCst);
                t.record(m.id);
                Ok(())
            }
        });
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(30), "12 jobs archived", || async {
        metrics(&store, "q").await.archived == 12
    })
    .await;
    stop.shutdown();
    let stats = run.await.unwrap().unwrap();
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 4, "{peak} handlers ran at once with concurrency 4");
    assert!(peak >= 2, "handlers never overlapped (peak {peak})");
    let seen = tally.snapshot();
    assert_eq!(seen.len(), 12);
    assert!(ids.iter().all(|id| seen[id] == 1), "{seen:?}");
    assert_eq!(
        (stats.succeeded, stats.failed, stats.lease_lost),
        (12, 0, 0)
    );
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 12, 0));
}

/// A batch handler gets up to `batch_size` messages per call; a failed batch fails every
/// message in it.
pub async fn worker_batch_handler(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let n = 23;
    pgqrs::enqueue()
        .messages(0..n)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let tally = Tally::default();
    let failures = Tally::default();
    let (s, t, f) = (sizes.clone(), tally.clone(), failures.clone());
    let w = pgqrs::worker("q")
        .batch_size(5)
        .concurrency(2)
        .poll_interval(ms(50))
        .retry(RetryPolicy::fixed(5, ms(0)))
        .handle_batch(move |msgs| {
            let (s, t, f) = (s.clone(), t.clone(), f.clone());
            async move {
                s.lock().unwrap().push(msgs.len());
                // A batch holding a first attempt fails as a whole.
                if msgs.iter().any(|m| m.attempts == 1) {
                    for m in &msgs {
                        f.record(m.id);
                    }
                    return Err("a first attempt in the batch".into());
                }
                for m in &msgs {
                    t.record(m.id);
                }
                Ok(())
            }
        });
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(30), "all jobs archived", || async {
        metrics(&store, "q").await.archived == n as i64
    })
    .await;
    stop.shutdown();
    let stats = run.await.unwrap().unwrap();
    let sizes = sizes.lock().unwrap().clone();
    assert!(
        sizes.iter().all(|s| (1..=5).contains(s)),
        "batch sizes {sizes:?}"
    );
    assert!(
        sizes.iter().any(|s| *s > 1),
        "never more than one per call: {sizes:?}"
    );
    let seen = tally.snapshot();
    assert_eq!(seen.len(), n as usize);
    assert!(seen.values().all(|c| *c == 1), "{seen:?}");
    // Every message of a failed batch had its attempt recorded as failed.
    let failed = failures.snapshot();
    let archived = pgqrs::admin(&store).archived_jobs("q", 100).await.unwrap();
    for a in &archived {
        let f = failed.get(&a.id).copied().unwrap_or(0);
        assert!(f >= 1, "job {} never failed", a.id);
        assert_eq!(
            a.attempts as usize,
            f + 1,
            "job {}: {f} failed batches",
            a.id
        );
    }
    assert_eq!(stats.succeeded, n as u64);
    assert_eq!(stats.failed as usize, failed.values().sum::<usize>());
    assert_eq!(stats.dead, 0);
}

/// A failing handler is retried with the policy; when retries run out the job is dead.
pub async fn worker_failing_handler_retries(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let ids = pgqrs::enqueue()
        .messages(["flaky", "flaky", "always"])
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let w = pgqrs::worker("q")
        .concurrency(3)
        .poll_interval(ms(50))
        .retry(RetryPolicy::fixed(3, ms(100)))
        .handle(|m| async move {
            match (m.payload.as_str(), m.attempts) {
                (Some("always"), a) => Err(format!("always fails (attempt {a})").into()),
                (_, a) if a < 3 => Err(format!("transient {a}").into()),
                _ => Ok(()),
            }
        });
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(30), "2 archived and 1 dead", || async {
        let m = metrics(&store, "q").await;
        m.archived == 2 && m.dead == 1
    })
    .await;
    stop.shutdown();
    let stats = run.await.unwrap().unwrap();
    let dead = pgqrs::admin(&store).dead_letters("q", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].attempts), (ids[2], 3));
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("always fails (attempt 3)")
    );
    let archived = pgqrs::admin(&store).archived_jobs("q", 10).await.unwrap();
    assert!(archived.iter().all(|a| a.attempts == 3), "{archived:?}");
    assert_eq!((stats.succeeded, stats.failed, stats.dead), (2, 7, 1));
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 2, 1));
}

/// A panicking handler counts as a failed attempt; the worker keeps going.
pub async fn worker_panicking_handler(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let ids = pgqrs::enqueue()
        .messages(["panic", "ok", "ok", "ok", "ok", "ok"])
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let w = pgqrs::worker("q")
        .poll_interval(ms(50))
        .retry(RetryPolicy::none())
        .handle(|m| async move {
            if m.payload == json!("panic") {
                panic!("kaboom in job {}", m.id);
            }
            Ok(())
        });
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(30), "5 archived and 1 dead", || async {
        let m = metrics(&store, "q").await;
        m.archived == 5 && m.dead == 1
    })
    .await;
    assert!(!run.is_finished(), "the worker survived the panic");
    // It still handles new work.
    pgqrs::enqueue()
        .message(&json!("ok"))
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    eventually(secs(10), "the job after the panic", || async {
        metrics(&store, "q").await.archived == 6
    })
    .await;
    stop.shutdown();
    let stats = run
        .await
        .unwrap()
        .expect("run returns Ok after a handler panic");
    let dead = pgqrs::admin(&store).dead_letters("q", 10).await.unwrap();
    assert_eq!(dead[0].id, ids[0]);
    let text = dead[0].last_error.clone().unwrap_or_default();
    assert!(
        text.contains("panick") && text.contains("kaboom in job"),
        "{text:?}"
    );
    assert_eq!((stats.succeeded, stats.failed, stats.dead), (6, 1, 1));
}

/// Shutdown: the running handler finishes within the grace period; jobs never started are
/// released (claimable at once, attempt given back); nothing new is claimed.
pub async fn worker_graceful_shutdown(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    pgqrs::enqueue()
        .messages(0..5)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let (s, f) = (started.clone(), finished.clone());
    let w = pgqrs::worker("q")
        .concurrency(1)
        .poll_interval(ms(50))
        .shutdown_grace(secs(20))
        .handle(move |_m| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                sleep_ms(1000).await;
                f.store(true, Ordering::SeqCst);
                Ok(())
            }
        });
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(10), "the first handler starts", || async {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    stop.shutdown();
    assert!(stop.is_shutdown());
    let stats = run.await.unwrap().expect("graceful shutdown");
    assert!(
        finished.load(Ordering::SeqCst),
        "the running handler was allowed to finish"
    );
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "no handler started after shutdown"
    );
    assert_eq!(stats.succeeded, 1);
    assert_eq!(
        counts(&store, "q").await,
        (4, 0, 0, 1, 0),
        "nothing left leased"
    );
    let c = Consumer::new(&store, "q").await.unwrap();
    let rest = c.dequeue(10, None).await.unwrap();
    assert_eq!(
        rest.len(),
        4,
        "released and never-claimed jobs are claimable"
    );
    assert!(
        rest.iter().all(|m| m.attempts == 1),
        "released attempts were given back"
    );
    let w = pgqrs::admin(&store).list_workers().await.unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].status, WorkerStatus::Stopped);
}

/// Shutdown with a handler that outlives the grace period: the worker stops anyway and the
/// job is released.
pub async fn worker_grace_exceeded(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let ids = pgqrs::enqueue()
        .messages(["slow", "next"])
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let w = pgqrs::worker("q")
        .concurrency(1)
        .poll_interval(ms(50))
        .shutdown_grace(ms(500))
        .handle(move |_m| {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                sleep_ms(60_000).await;
                Ok(())
            }
        });
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(10), "the slow handler starts", || async {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    stop.shutdown();
    let stats = tokio::time::timeout(secs(20), run)
        .await
        .expect("run must return once the grace period is over, not wait for the handler")
        .unwrap()
        .expect("Ok after grace");
    assert_eq!(stats.succeeded, 0);
    assert_eq!(
        stats.released, 2,
        "the abandoned job and the prefetched one"
    );
    assert_eq!(counts(&store, "q").await, (2, 0, 0, 0, 0));
    let c = Consumer::new(&store, "q").await.unwrap();
    let rest = c.dequeue(10, None).await.unwrap();
    let mut got: Vec<i64> = rest.iter().map(|m| m.id).collect();
    got.sort();
    assert_eq!(got, ids);
    assert!(rest.iter().all(|m| m.attempts == 1), "attempts given back");
}

/// A worker registers (host, pid, queue, start) and heartbeats while its handler runs; admin
/// sees it running and healthy, then stopped.
pub async fn worker_registration_heartbeat(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    pgqrs::enqueue()
        .message(&json!("slow"))
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let w = pgqrs::worker("q")
        .poll_interval(ms(50))
        .heartbeat_interval(ms(200))
        .handle(move |_m| {
            let s = s.clone();
            async move {
                s.store(true, Ordering::SeqCst);
                sleep_ms(2000).await;
                Ok(())
            }
        });
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(10), "the handler starts", || async {
        started.load(Ordering::SeqCst)
    })
    .await;
    let workers = admin.list_workers().await.unwrap();
    assert_eq!(workers.len(), 1, "{workers:?}");
    let first = workers[0].clone();
    assert_eq!(first.queue, "q");
    assert_eq!(first.pid, std::process::id() as i64);
    assert!(!first.hostname.is_empty());
    assert_eq!(first.status, WorkerStatus::Running);
    assert!(first.heartbeat_at >= first.started_at);
    assert!(first.is_healthy(secs(5)));
    sleep_ms(800).await;
    let later = admin.list_workers().await.unwrap()[0].clone();
    assert!(
        later.heartbeat_at > first.heartbeat_at,
        "heartbeat must advance while the handler runs: {} then {}",
        first.heartbeat_at,
        later.heartbeat_at
    );
    assert_eq!(later.status, WorkerStatus::Running);
    assert_eq!(later.started_at, first.started_at);

    stop.shutdown();
    let stats = run.await.unwrap().unwrap();
    assert_eq!(stats.worker_id, first.id);
    assert_eq!(stats.succeeded, 1);
    let end = admin.list_workers().await.unwrap()[0].clone();
    assert_eq!(end.status, WorkerStatus::Stopped);
    assert!(
        !end.is_healthy(secs(3600)),
        "a stopped worker is not healthy"
    );

    // A second worker is listed first (newest first).
    let w2 = pgqrs::worker("q")
        .poll_interval(ms(50))
        .handle(|_m| async { Ok(()) });
    let (stop2, run2) = spawn_worker(&store, w2);
    eventually(secs(10), "the second worker registers", || async {
        admin.list_workers().await.unwrap().len() == 2
    })
    .await;
    stop2.shutdown();
    let s2 = run2.await.unwrap().unwrap();
    let all = admin.list_workers().await.unwrap();
    assert_eq!(all[0].id, s2.worker_id);
    assert_ne!(s2.worker_id, first.id);
}

/// A handler that runs longer than the visibility timeout keeps its lease: the worker extends
/// it at each heartbeat, so nobody else gets the job.
pub async fn worker_extends_running_leases(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let id = pgqrs::enqueue()
        .message(&json!("long"))
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let w = pgqrs::worker("q")
        .visibility_timeout(secs(1))
        .heartbeat_interval(ms(200))
        .poll_interval(ms(50))
        .handle(move |_m| {
            let d = d.clone();
            async move {
                sleep_ms(2500).await;
                d.store(true, Ordering::SeqCst);
                Ok(())
            }
        });
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(10), "the worker claims the job", || async {
        metrics(&store, "q").await.leased == 1
    })
    .await;
    let thief = Consumer::new(&store, "q").await.unwrap();
    let mut stolen = Vec::new();
    while !done.load(Ordering::SeqCst) {
        stolen.extend(thief.dequeue(1, Some(secs(30))).await.unwrap());
        sleep_ms(100).await;
    }
    assert!(
        stolen.is_empty(),
        "the job was claimed by another consumer: {stolen:?}"
    );
    eventually(secs(10), "the job is archived", || async {
        metrics(&store, "q").await.archived == 1
    })
    .await;
    stop.shutdown();
    let stats = run.await.unwrap().unwrap();
    assert_eq!((stats.succeeded, stats.lease_lost), (1, 0));
    let a = pgqrs::admin(&store).archived_jobs("q", 10).await.unwrap();
    assert_eq!((a[0].id, a[0].attempts), (id, 1));
}

/// `delete_on_success(true)`: handled jobs are deleted, not archived.
pub async fn worker_delete_on_success(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    pgqrs::enqueue()
        .messages(0..5)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let w = pgqrs::worker("q")
        .poll_interval(ms(50))
        .delete_on_success(true)
        .handle(move |_m| {
            h.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        });
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(20), "5 jobs handled and gone", || async {
        handled.load(Ordering::SeqCst) == 5 && metrics(&store, "q").await.pending() == 0
    })
    .await;
    stop.shutdown();
    let stats = run.await.unwrap().unwrap();
    assert_eq!(stats.succeeded, 5);
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 0, 0));
}

/// A queue deleted under a running worker ends its run with `QueueNotFound` (documented on
/// `Worker::run`), instead of polling an empty queue forever.
pub async fn worker_queue_deleted(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    pgqrs::enqueue()
        .message(&1)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let w = pgqrs::worker("q")
        .poll_interval(ms(50))
        .handle(|_m| async { Ok(()) });
    let (_stop, run) = spawn_worker(&store, w);
    eventually(secs(10), "the first job is handled", || async {
        metrics(&store, "q").await.archived == 1
    })
    .await;
    // Deleted through another store, as an admin tool would.
    let admin_store = db.store().await;
    pgqrs::admin(&admin_store)
        .delete_queue("q", true)
        .await
        .unwrap();
    match tokio::time::timeout(secs(10), run).await {
        Ok(r) => match r.unwrap() {
            Err(pgqrs::Error::QueueNotFound { queue }) => assert_eq!(queue, "q"),
            other => panic!("worker on a deleted queue ended with {other:?}"),
        },
        Err(_) => panic!("the worker kept running 10 s after its queue was deleted"),
    }
}

/// A session started from a worker's settings reports them (the poll interval from the
/// connection string unless the worker sets its own); `next_jobs` claims what is there, and
/// returns at once, claiming nothing, once claiming has stopped.
pub async fn worker_session_settings(db: &TestDb) {
    let store = db.store_with("poll_interval_ms=35").await;
    pgqrs::admin(&store).create_queue("q").await.unwrap();
    assert_eq!(store.config().idle_poll_interval(), ms(35));
    assert_err!(
        pgqrs::worker("q").concurrency(0).validate(),
        Error::Validation {
            field: "concurrency",
            ..
        }
    );
    assert_err!(
        pgqrs::worker("q").batch_size(0).validate(),
        Error::Validation {
            field: "batch_size",
            ..
        }
    );

    let s = pgqrs::worker("q").session(&store).await.unwrap();
    assert_eq!(
        (
            s.concurrency(),
            s.batch_size(),
            s.shutdown_grace(),
            s.poll_interval()
        ),
        (1, 1, secs(30), ms(35)),
        "defaults, and the store's poll interval"
    );
    s.stop().await;

    let s = pgqrs::worker("q")
        .concurrency(3)
        .batch_size(2)
        .poll_interval(ms(500))
        .shutdown_grace(secs(1))
        .session(&store)
        .await
        .unwrap();
    assert_eq!(
        (
            s.concurrency(),
            s.batch_size(),
            s.shutdown_grace(),
            s.poll_interval()
        ),
        (3, 2, secs(1), ms(500))
    );
    let ids = pgqrs::enqueue()
        .messages(0..4)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let got = s.next_jobs(0, false).await.unwrap();
    assert_eq!(got.jobs.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert!(got.refill_below >= 1);
    for m in &got.jobs {
        s.complete_message(m, Ok(())).unwrap();
    }
    s.stop_claiming();
    let none = tokio::time::timeout(secs(5), s.next_jobs(0, false))
        .await
        .expect("returns at once after stop_claiming")
        .unwrap();
    assert_eq!((none.jobs.len(), none.refill_below), (0, 0));
    let stats = s.stop().await;
    assert_eq!(stats.succeeded, 4);
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 4, 0));
}

/// Two workers whose lease (1 s) is shorter than the default heartbeat used to be (5 s), with
/// handlers that run 2.5 s: the heartbeat follows the lease (a third of it), so every job runs
/// once and no completion is refused. (With a fixed 5 s heartbeat every job ran twice.)
pub async fn worker_heartbeat_follows_short_lease(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let ids = pgqrs::enqueue()
        .messages(0..3)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let tally = Tally::default();
    let make = |t: Tally| {
        pgqrs::worker("q")
            .concurrency(3)
            .visibility_timeout(secs(1))
            .poll_interval(ms(50))
            .handle(move |m| {
                let t = t.clone();
                async move {
                    t.record(m.id);
                    sleep_ms(2500).await;
                    Ok(())
                }
            })
    };
    let (stop_a, run_a) = spawn_worker(&store, make(tally.clone()));
    let (stop_b, run_b) = spawn_worker(&store, make(tally.clone()));
    eventually(secs(20), "all three jobs are archived", || async {
        metrics(&store, "q").await.archived == 3
    })
    .await;
    // Any re-delivery of a lost lease would have shown up by now (leases are 1 s).
    sleep_ms(1500).await;
    stop_a.shutdown();
    stop_b.shutdown();
    let (a, b) = (run_a.await.unwrap().unwrap(), run_b.await.unwrap().unwrap());
    let runs = tally.snapshot();
    assert_eq!(runs.len(), 3, "{runs:?}");
    for id in &ids {
        assert_eq!(
            runs.get(id),
            Some(&1),
            "job {id} ran more than once: {runs:?}"
        );
    }
    assert_eq!(a.lease_lost + b.lease_lost, 0, "{a:?} {b:?}");
    assert_eq!(a.succeeded + b.succeeded, 3);
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 3, 0));
}

/// A heartbeat longer than half the lease could let leases expire between two extensions: the
/// worker refuses it with a typed error naming the setting, as it does a lease too short for
/// any heartbeat.
pub async fn worker_refuses_heartbeat_longer_than_half_the_lease(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let r = pgqrs::worker("q")
        .visibility_timeout(secs(2))
        .heartbeat_interval(secs(5))
        .session(&store)
        .await;
    assert_err!(r, Error::Validation { field: "heartbeat_interval", ref message }
        if message.contains("half the lease"));
    let r = pgqrs::worker("q")
        .visibility_timeout(ms(10))
        .session(&store)
        .await;
    assert_err!(
        r,
        Error::Validation {
            field: "visibility_timeout",
            ..
        }
    );
    // Exactly half the lease is allowed; so is the derived default with a short lease.
    let s = pgqrs::worker("q")
        .visibility_timeout(secs(2))
        .heartbeat_interval(secs(1))
        .session(&store)
        .await
        .unwrap();
    s.stop().await;
    let s = pgqrs::worker("q")
        .visibility_timeout(ms(100))
        .session(&store)
        .await
        .unwrap();
    s.stop().await;
    assert!(pgqrs::admin(&store).list_workers().await.unwrap().len() == 2);
}

/// Worker A's quick handlers grow its claim depth, then both stall. The jobs it claimed ahead
/// wait at most the claim-ahead timeout (2 s by default) before A gives them back, so worker B,
/// started afterwards, gets every job but the two A runs, within that time plus B's poll.
/// (Before, A kept them leased for as long as it lived.)
pub async fn worker_gives_back_jobs_its_stalled_handlers_hold(db: &TestDb) {
    const JOBS: usize = 3_000;
    let store = db.store_with_queue("q").await;
    pgqrs::enqueue()
        .messages(0..JOBS)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let stalled = Arc::new(AtomicBool::new(false));
    let unblock = Arc::new(tokio::sync::Notify::new());
    let (st, un) = (stalled.clone(), unblock.clone());
    let a = pgqrs::worker("q")
        .concurrency(2)
        .poll_interval(ms(50))
        .handle(move |_m| {
            let (st, un) = (st.clone(), un.clone());
            async move {
                if st.load(Ordering::SeqCst) {
                    un.notified().await;
                }
                Ok(())
            }
        });
    let (stop_a, run_a) = spawn_worker(&store, a);
    eventually(secs(30), "worker A handles a first 1,000 jobs", || async {
        metrics(&store, "q").await.archived >= 1_000
    })
    .await;
    stalled.store(true, Ordering::SeqCst);
    sleep_ms(300).await;
    let held = metrics(&store, "q").await.leased;
    assert!(
        held > 2,
        "A should hold jobs claimed ahead besides its two stalled ones, holds {held}"
    );
    let stalled_at = std::time::Instant::now();
    let b = pgqrs::worker("q")
        .concurrency(4)
        .poll_interval(ms(50))
        .handle(|_m| async { Ok(()) });
    let (stop_b, run_b) = spawn_worker(&store, b);
    eventually(secs(20), "B handles every job A does not run", || async {
        let m = metrics(&store, "q").await;
        m.archived == JOBS as i64 - 2 && m.leased == 2
    })
    .await;
    let waited = stalled_at.elapsed();
    assert!(
        waited < secs(6),
        "the jobs A claimed ahead reached B after {waited:?}; the bound is the 2 s claim-ahead \
         timeout, one check (1 s) and B's poll"
    );
    unblock.notify_waiters();
    stalled.store(false, Ordering::SeqCst);
    unblock.notify_waiters();
    stop_a.shutdown();
    stop_b.shutdown();
    let (sa, sb) = (run_a.await.unwrap().unwrap(), run_b.await.unwrap().unwrap());
    assert!(
        sa.released >= held as u64 - 2,
        "A gave back what it held: {sa:?}"
    );
    assert_eq!(sa.lease_lost + sb.lease_lost, 0, "{sa:?} {sb:?}");
    assert_eq!(counts(&store, "q").await, (0, 0, 0, JOBS as i64, 0));
}
