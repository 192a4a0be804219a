//! Flow control: concurrency limits (per queue, per group) and rate limits, enforced by the
//! claim on every backend.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgqrs::{Consumer, Error, QueueLimits, QueueOptions, RateLimit};
use serde_json::json;

use crate::assert_err;
use crate::common::*;

async fn fill(store: &pgqrs::Store, queue: &str, n: usize, group: Option<&str>) -> Vec<i64> {
    let mut b = pgqrs::enqueue()
        .messages((0..n).map(|i| json!({ "i": i })))
        .to(queue);
    if let Some(g) = group {
        b = b.group(g);
    }
    b.execute(store).await.unwrap()
}

/// Limits are set at creation, shown by the queue, replaced as a whole, and checked: zero and
/// negative values are typed errors that say how to fix them.
pub async fn limits_settings(db: &TestDb) {
    let store = db.store().await;
    let admin = pgqrs::admin(&store);
    let q = admin
        .create_queue_with(
            "lim",
            QueueOptions::new()
                .concurrency_limit(5)
                .group_concurrency_limit(2)
                .rate_limit(RateLimit::new(10, ms(1500))),
        )
        .await
        .unwrap();
    assert_eq!(
        q.limits,
        QueueLimits::new()
            .concurrency(5)
            .group_concurrency(2)
            .rate(RateLimit::new(10, ms(1500)))
    );
    let listed = admin.list_queues().await.unwrap();
    assert_eq!(listed[0].limits, q.limits);
    let plain = admin.create_queue("plain").await.unwrap();
    assert!(!plain.limits.any());

    let q = admin
        .set_queue_limits("lim", QueueLimits::new().concurrency(1))
        .await
        .unwrap();
    assert_eq!(
        q.limits,
        QueueLimits::new().concurrency(1),
        "replaced as a whole"
    );
    let q = admin
        .set_queue_limits("lim", QueueLimits::new())
        .await
        .unwrap();
    assert!(!q.limits.any(), "cleared");

    for (bad, field) in [
        (QueueLimits::new().concurrency(0), "concurrency_limit"),
        (QueueLimits::new().concurrency(-1), "concurrency_limit"),
        (
            QueueLimits::new().group_concurrency(0),
            "group_concurrency_limit",
        ),
        (
            QueueLimits::new().rate(RateLimit::per_second(-5)),
            "rate_limit",
        ),
        (
            QueueLimits::new().rate(RateLimit::new(5, Duration::ZERO)),
            "rate_limit",
        ),
    ] {
        let e = admin.set_queue_limits("lim", bad).await.unwrap_err();
        assert!(
            matches!(&e, Error::Validation { field: f, .. } if *f == field),
            "{e:?}"
        );
        let e = admin
            .create_queue_with("bad", QueueOptions::new().limits(bad))
            .await
            .unwrap_err();
        assert!(matches!(&e, Error::Validation { .. }), "{e:?}");
    }
    let e = admin
        .set_queue_limits("lim", QueueLimits::new().concurrency(0))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("leave it out"), "{e}");
    assert_err!(
        admin.set_queue_limits("nope", QueueLimits::new()).await,
        Error::QueueNotFound { .. }
    );
    assert!(
        admin
            .list_queues()
            .await
            .unwrap()
            .iter()
            .all(|q| q.name != "bad"),
        "nothing was created"
    );

    // Groups: checked like keys, and carried by the job into the archive and dead letters.
    for bad in ["", "a\0b"] {
        assert_err!(
            pgqrs::enqueue()
                .message(&1)
                .group(bad)
                .to("plain")
                .execute(&store)
                .await,
            Error::Validation { field: "group", .. }
        );
    }
    let ids = fill(&store, "plain", 2, Some("customer-7")).await;
    let job = admin.get_job(ids[0]).await.unwrap();
    assert_eq!(job.group.as_deref(), Some("customer-7"));
    let c = Consumer::new(&store, "plain").await.unwrap();
    let got = c.dequeue(2, None).await.unwrap();
    assert_eq!(got.len(), 2);
    c.archive(got[0].id).await.unwrap();
    c.fail(got[1].id, "boom", &pgqrs::RetryPolicy::none())
        .await
        .unwrap();
    for id in ids {
        let j = admin.get_job(id).await.unwrap();
        assert_eq!(j.group.as_deref(), Some("customer-7"), "{:?}", j.state);
    }
}

/// The race: several stores (as several processes would be), each with a worker of its own,
/// drain a queue with a concurrency limit; the handlers running at once and the leased count
/// sampled meanwhile never exceed the limit.
pub async fn concurrency_limit_holds_across_stores(db: &TestDb) {
    const LIMIT: usize = 3;
    let n = if db.is_postgres() { 120 } else { 60 };
    let store = db.store().await;
    pgqrs::admin(&store)
        .create_queue_with("q", QueueOptions::new().concurrency_limit(LIMIT as i64))
        .await
        .unwrap();
    fill(&store, "q", n, None).await;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut runs = Vec::new();
    let mut stores = Vec::new();
    for _ in 0..4 {
        let own = db.connect_with("pool_size=3").await;
        let (running, most, done) = (running.clone(), most.clone(), done.clone());
        let w = pgqrs::worker("q")
            .concurrency(4)
            .batch_size(2)
            .poll_interval(ms(20))
            .handle(move |_m| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let (running, done) = (running.clone(), done.clone());
                async move {
                    tokio::time::sleep(ms(5)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            });
        runs.push(spawn_worker(&own, w));
        stores.push(own);
    }
    let sampling = Arc::new(AtomicBool::new(true));
    let sampled_most = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (store, sampling, sampled_most) =
            (store.clone(), sampling.clone(), sampled_most.clone());
        tokio::spawn(async move {
            let mut samples = 0;
            while sampling.load(Ordering::SeqCst) {
                let m = metrics(&store, "q").await;
                sampled_most.fetch_max(m.leased as usize, Ordering::SeqCst);
                samples += 1;
                sleep_ms(3).await;
            }
            samples
        })
    };
    eventually(secs(120), "every job handled", || async {
        done.load(Ordering::SeqCst) >= n
    })
    .await;
    sampling.store(false, Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    for (stop, _) in &runs {
        stop.shutdown();
    }
    for (_, run) in runs {
        run.await.unwrap().expect("worker run");
    }
    let (most, sampled) = (
        most.load(Ordering::SeqCst),
        sampled_most.load(Ordering::SeqCst),
    );
    eprintln!(
        "concurrency_limit_holds_across_stores[{:?}]: {n} jobs, at most {most} running, \
         at most {sampled} leased in {samples} samples",
        db.kind()
    );
    assert!(
        most <= LIMIT,
        "{most} handlers ran at once under a limit of {LIMIT}"
    );
    assert!(
        sampled <= LIMIT,
        "{sampled} jobs leased at once under a limit of {LIMIT}"
    );
    assert!(
        samples > 5,
        "the leased count was sampled while the workers ran"
    );
    assert!(
        most >= 2,
        "the workers did run in parallel up to the limit ({most})"
    );
    eventually(secs(30), "every completion written", || async {
        metrics(&store, "q").await.archived == n as i64
    })
    .await;
}

/// A claim takes what the limit leaves; a full queue claims nothing until a lease ends
/// (completed, failed, released, or expired).
pub async fn concurrency_limit_counts_live_leases(db: &TestDb) {
    let store = db.store().await;
    pgqrs::admin(&store)
        .create_queue_with("q", QueueOptions::new().concurrency_limit(3))
        .await
        .unwrap();
    fill(&store, "q", 10, None).await;
    let c = Consumer::new(&store, "q").await.unwrap();
    let first = c.dequeue(10, None).await.unwrap();
    assert_eq!(first.len(), 3, "the limit leaves 3");
    assert!(
        c.dequeue(10, None).await.unwrap().is_empty(),
        "at the limit"
    );
    c.archive(first[0].id).await.unwrap();
    let second = c.dequeue(10, None).await.unwrap();
    assert_eq!(second.len(), 1, "one lease ended");
    c.release(first[1].id, Duration::ZERO).await.unwrap();
    c.fail(first[2].id, "x", &pgqrs::RetryPolicy::none())
        .await
        .unwrap();
    assert_eq!(c.dequeue(10, None).await.unwrap().len(), 2);
    // An expired lease no longer counts.
    let other = Consumer::new(&store, "q").await.unwrap();
    assert!(other.dequeue(1, None).await.unwrap().is_empty());
    let short = db.store().await;
    pgqrs::admin(&short)
        .set_queue_limits("q", QueueLimits::new().concurrency(4))
        .await
        .unwrap();
    let s = Consumer::new(&short, "q").await.unwrap();
    let brief = s.dequeue(5, Some(ms(300))).await.unwrap();
    assert_eq!(brief.len(), 1, "the raised limit leaves 1");
    assert!(s.dequeue(5, None).await.unwrap().is_empty());
    sleep_ms(400).await;
    assert_eq!(
        s.dequeue(5, None).await.unwrap().len(),
        1,
        "the expired lease freed its place"
    );
}

/// With a group limit, one group flooding the head of the queue at its limit does not hide
/// other groups' jobs, nor jobs without a group.
pub async fn group_limit_does_not_starve_other_groups(db: &TestDb) {
    let store = db.store().await;
    pgqrs::admin(&store)
        .create_queue_with("q", QueueOptions::new().group_concurrency_limit(2))
        .await
        .unwrap();
    let flood = fill(&store, "q", 300, Some("big")).await;
    let b = fill(&store, "q", 3, Some("b")).await;
    let c_ids = fill(&store, "q", 1, Some("c")).await;
    let none = fill(&store, "q", 2, None).await;
    let c = Consumer::new(&store, "q").await.unwrap();
    let got = c.dequeue(100, None).await.unwrap();
    let mut ids: Vec<i64> = got.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    let mut want = vec![flood[0], flood[1], b[0], b[1], c_ids[0], none[0], none[1]];
    want.sort_unstable();
    assert_eq!(
        ids, want,
        "2 per group, every group, and the jobs without a group"
    );
    assert!(
        c.dequeue(100, None).await.unwrap().is_empty(),
        "every group at its limit"
    );
    c.archive(flood[0]).await.unwrap();
    c.archive(b[0]).await.unwrap();
    let mut next: Vec<i64> = c
        .dequeue(100, None)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    next.sort_unstable();
    assert_eq!(next, vec![flood[2], b[2]]);

    // With a queue limit too: the queue's limit caps the sum.
    pgqrs::admin(&store)
        .set_queue_limits("q", QueueLimits::new().group_concurrency(2).concurrency(8))
        .await
        .unwrap();
    c.archive(flood[1]).await.unwrap();
    c.archive(flood[2]).await.unwrap();
    let more = c.dequeue(100, None).await.unwrap();
    assert_eq!(more.len(), 2, "big got its 2 places back");
    assert!(c.dequeue(100, None).await.unwrap().is_empty());
}

/// A rate limit: each window takes at most its count; a worker waits for the next window.
pub async fn rate_limit_windows(db: &TestDb) {
    let store = db.store().await;
    pgqrs::admin(&store)
        .create_queue_with(
            "q",
            QueueOptions::new().rate_limit(RateLimit::new(3, ms(600))),
        )
        .await
        .unwrap();
    fill(&store, "q", 5, None).await;
    let c = Consumer::new(&store, "q").await.unwrap();
    let t = Instant::now();
    let first = c.dequeue(10, None).await.unwrap();
    assert_eq!(first.len(), 3);
    if t.elapsed() < ms(400) {
        assert!(
            c.dequeue(10, None).await.unwrap().is_empty(),
            "the window is full"
        );
    }
    let rest = claim_until(&c, 2, None, secs(10)).await;
    assert!(
        t.elapsed() >= ms(550),
        "the second window opened after {:?}",
        t.elapsed()
    );
    assert_eq!(rest.len(), 2);

    // A worker under a rate limit: 12 jobs at 4 per second take three windows.
    pgqrs::admin(&store)
        .create_queue_with(
            "w",
            QueueOptions::new().rate_limit(RateLimit::per_second(4)),
        )
        .await
        .unwrap();
    fill(&store, "w", 12, None).await;
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let s = starts.clone();
    let w = pgqrs::worker("w")
        .concurrency(8)
        .poll_interval(ms(20))
        .handle(move |_m| {
            s.lock().unwrap().push(Instant::now());
            async { Ok(()) }
        });
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(20), "every job started", || async {
        starts.lock().unwrap().len() >= 12
    })
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    let starts = starts.lock().unwrap().clone();
    let span = starts[11] - starts[0];
    assert!(
        span >= ms(1900),
        "12 jobs at 4 per second started within {span:?}"
    );
    let in_first = starts.iter().filter(|t| **t - starts[0] < ms(800)).count();
    assert!(in_first <= 4, "{in_first} jobs started in the first window");
}

/// A worker of a queue at its concurrency limit wakes when a lease ends, not after its
/// (long) poll interval.
pub async fn freed_capacity_wakes_idle_workers(db: &TestDb) {
    let store = db.store().await;
    pgqrs::admin(&store)
        .create_queue_with("q", QueueOptions::new().concurrency_limit(1))
        .await
        .unwrap();
    fill(&store, "q", 2, None).await;
    let c = Consumer::new(&store, "q").await.unwrap();
    let held = c.dequeue(1, None).await.unwrap();
    assert_eq!(held.len(), 1);
    let started: Arc<Mutex<Option<Instant>>> = Arc::default();
    let s = started.clone();
    let w = pgqrs::worker("q")
        .poll_interval(secs(20))
        .handle(move |_m| {
            s.lock().unwrap().get_or_insert_with(Instant::now);
            async { Ok(()) }
        });
    let (stop, run) = spawn_worker(&store, w);
    sleep_ms(300).await;
    assert!(started.lock().unwrap().is_none(), "held back by the limit");
    let freed = Instant::now();
    c.archive(held[0].id).await.unwrap();
    eventually(
        secs(5),
        "the waiting worker took the freed place",
        || async { started.lock().unwrap().is_some() },
    )
    .await;
    let waited = started.lock().unwrap().unwrap() - freed;
    assert!(waited < secs(3), "woke after {waited:?}");
    stop.shutdown();
    run.await.unwrap().unwrap();
}

/// Limits set by another store apply to a store that knew the queue unlimited within
/// `LIMITS_REFRESH`; the queue's own store applies them at once.
pub async fn limits_set_elsewhere_apply(db: &TestDb) {
    let store = db.store().await;
    pgqrs::admin(&store).create_queue("q").await.unwrap();
    fill(&store, "q", 10, None).await;
    let c = Consumer::new(&store, "q").await.unwrap();
    assert_eq!(c.dequeue(1, None).await.unwrap().len(), 1);
    let other = db.store().await;
    pgqrs::admin(&other)
        .set_queue_limits("q", QueueLimits::new().concurrency(2))
        .await
        .unwrap();
    let o = Consumer::new(&other, "q").await.unwrap();
    assert_eq!(
        o.dequeue(5, None).await.unwrap().len(),
        1,
        "at once in the store that set it"
    );
    sleep_ms(pgqrs::LIMITS_REFRESH.as_millis() as u64 + 100).await;
    assert!(
        c.dequeue(5, None).await.unwrap().is_empty(),
        "the other store noticed"
    );
    pgqrs::admin(&other)
        .set_queue_limits("q", QueueLimits::new())
        .await
        .unwrap();
    sleep_ms(pgqrs::LIMITS_REFRESH.as_millis() as u64 + 100).await;
    assert_eq!(c.dequeue(5, None).await.unwrap().len(), 5, "cleared");
}
