//! Job deadlines: a handler that runs longer than its job's timeout is cancelled and the
//! attempt recorded as failed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgqrs::{Error, RetryPolicy};
use serde_json::json;

use crate::assert_err;
use crate::common::*;

/// A handler past its job's timeout is cancelled (it never gets past its long await), the
/// attempt is recorded with a clear error, and the retry policy applies: retried, then a dead
/// letter that keeps the timeout when requeued.
pub async fn job_timeout_cancels_the_handler(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let id = pgqrs::enqueue()
        .message(&json!("slow"))
        .timeout(ms(200))
        .max_attempts(2)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let (started, finished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (s, f) = (started.clone(), finished.clone());
    let w = pgqrs::worker("q")
        .poll_interval(ms(20))
        .retry(RetryPolicy::fixed(2, Duration::ZERO))
        .handle(move |m| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                assert_eq!(m.timeout, Some(ms(200)), "the message carries its timeout");
                s.fetch_add(1, Ordering::SeqCst);
                sleep_ms(10_000).await;
                f.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
    let (stop, run) = spawn_worker(&store, w);
    eventually(
        secs(30),
        "the job is a dead letter after two timed-out attempts",
        || async { metrics(&store, "q").await.dead == 1 },
    )
    .await;
    stop.shutdown();
    let stats = run.await.unwrap().unwrap();
    assert_eq!((stats.failed, stats.dead, stats.succeeded), (2, 1, 0));
    assert_eq!(started.load(Ordering::SeqCst), 2);
    assert_eq!(finished.load(Ordering::SeqCst), 0, "cancelled at its await");
    let dead = pgqrs::admin(&store).dead_letters("q", 10).await.unwrap();
    assert_eq!(dead[0].id, id);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("handler exceeded its timeout of 0.2 s and was cancelled")
    );
    // Requeued, it keeps its own timeout.
    pgqrs::admin(&store).requeue_all_dead("q").await.unwrap();
    let c = pgqrs::Consumer::new(&store, "q").await.unwrap();
    let m = c.dequeue(1, None).await.unwrap().remove(0);
    assert_eq!((m.id, m.timeout), (id, Some(ms(200))));
}

/// The worker's `job_timeout` applies to jobs without their own; a job's own timeout wins
/// over it, longer or shorter; a handler within its time succeeds.
pub async fn worker_default_and_job_timeouts(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let put = |tag: &'static str, timeout: Option<Duration>| {
        let store = store.clone();
        async move {
            let mut b = pgqrs::enqueue()
                .message(&json!(tag))
                .max_attempts(1)
                .to("q");
            if let Some(t) = timeout {
                b = b.timeout(t);
            }
            b.execute(&store).await.unwrap()[0]
        }
    };
    let defaulted = put("defaulted", None).await;
    let longer = put("longer", Some(secs(5))).await;
    let shorter = put("shorter", Some(ms(50))).await;
    let w = pgqrs::worker("q")
        .poll_interval(ms(20))
        .concurrency(3)
        .job_timeout(ms(300))
        .handle(|m| async move {
            sleep_ms(if m.payload == json!("shorter") {
                200
            } else {
                800
            })
            .await;
            Ok(())
        });
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(30), "all three jobs settled", || async {
        let m = metrics(&store, "q").await;
        m.archived + m.dead == 3
    })
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    let dead: Vec<(i64, String)> = pgqrs::admin(&store)
        .dead_letters("q", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.last_error.unwrap_or_default()))
        .collect();
    assert_eq!(
        dead,
        [
            (
                defaulted,
                "handler exceeded its timeout of 0.3 s and was cancelled".to_string()
            ),
            (
                shorter,
                "handler exceeded its timeout of 0.05 s and was cancelled".to_string()
            ),
        ]
    );
    let archived = pgqrs::admin(&store).archived_jobs("q", 10).await.unwrap();
    assert_eq!(archived.iter().map(|j| j.id).collect::<Vec<_>>(), [longer]);
}

/// The one-shot `dequeue()` enforces a job's timeout too.
pub async fn dequeue_enforces_the_job_timeout(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    pgqrs::enqueue()
        .message(&1)
        .timeout(ms(100))
        .max_attempts(1)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let n = pgqrs::dequeue()
        .from("q")
        .handle(|_m| async {
            sleep_ms(10_000).await;
            Ok(())
        })
        .execute(&store)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(started.elapsed() < secs(5), "{:?}", started.elapsed());
    let dead = pgqrs::admin(&store).dead_letters("q", 10).await.unwrap();
    assert!(dead[0]
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("exceeded its timeout of 0.1 s")));
}

/// Timeouts out of range are refused with a typed error naming them; nothing is written.
pub async fn bad_timeouts(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    for bad in [
        Duration::ZERO,
        Duration::from_micros(10),
        pgqrs::MAX_JOB_TIMEOUT * 2,
    ] {
        assert_err!(
            pgqrs::enqueue()
                .messages([1, 2])
                .timeout(bad)
                .to("q")
                .execute(&store)
                .await,
            Error::Validation { field: "timeout", ref message } if message.contains("7 days")
        );
        assert_err!(
            pgqrs::worker("q")
                .job_timeout(bad)
                .handle(|_m| async { Ok(()) })
                .run(&store)
                .await,
            Error::Validation {
                field: "job_timeout",
                ..
            }
        );
    }
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 0, 0));
    assert!(pgqrs::admin(&store)
        .list_workers()
        .await
        .unwrap()
        .is_empty());
}
