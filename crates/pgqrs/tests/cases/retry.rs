//! Retries, dead letters and re-queueing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pgqrs::{Backoff, Consumer, RetryPolicy};
use serde_json::json;

use crate::common::*;

/// A failing handler is retried up to the job's max attempts, then the job becomes a dead
/// letter with the last error text; re-queueing makes it claimable again.
pub async fn retry_then_dead_letter_then_requeue(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    let payload = json!({"n": 1});
    let id = pgqrs::enqueue()
        .message(&payload)
        .max_attempts(3)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    // (attempts, max_attempts, last_error) as each attempt saw them.
    type Seen = Arc<Mutex<Vec<(i32, i32, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let policy = RetryPolicy {
        max_attempts: None, // the job's own limit (3)
        backoff: Backoff::Fixed(ms(0)),
    };
    for round in 1..=3 {
        let s = seen.clone();
        let n = pgqrs::dequeue()
            .from("q")
            .retry(policy)
            .handle(move |m| {
                let s = s.clone();
                async move {
                    s.lock()
                        .unwrap()
                        .push((m.attempts, m.max_attempts, m.last_error.clone()));
                    Err(format!("boom {}", m.attempts).into())
                }
            })
            .execute(&store)
            .await
            .unwrap();
        assert_eq!(n, 1, "round {round}");
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (1, 3, None),
            (2, 3, Some("boom 1".to_string())),
            (3, 3, Some("boom 2".to_string())),
        ],
        "each attempt sees the previous attempt's error"
    );
    let n = pgqrs::dequeue()
        .from("q")
        .handle(|_m| async { Ok(()) })
        .execute(&store)
        .await
        .unwrap();
    assert_eq!(n, 0, "a dead letter is not claimable");
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 0, 1));

    let dead = admin.dead_letters("q", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!((d.id, d.queue.as_str(), d.attempts), (id, "q", 3));
    assert_eq!(d.payload, payload);
    assert!(
        d.last_error
            .as_deref()
            .is_some_and(|e| e.contains("boom 3")),
        "last error: {:?}",
        d.last_error
    );
    assert!(d.failed_at >= d.enqueued_at);

    // Re-queue: ids that are not dead letters are skipped.
    assert_eq!(admin.requeue_dead("q", &[]).await.unwrap(), 0);
    assert_eq!(
        admin.requeue_dead("q", &[id, id + 1000, -1]).await.unwrap(),
        1
    );
    assert_eq!(
        admin.requeue_dead("q", &[id]).await.unwrap(),
        0,
        "already re-queued"
    );
    assert_eq!(counts(&store, "q").await, (1, 0, 0, 0, 0));
    assert!(admin.dead_letters("q", 10).await.unwrap().is_empty());
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let a2 = attempts.clone();
    let n = pgqrs::dequeue()
        .from("q")
        .handle(move |m| {
            let a2 = a2.clone();
            async move {
                a2.lock().unwrap().push((m.id, m.attempts, m.payload));
                Ok(())
            }
        })
        .execute(&store)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        *attempts.lock().unwrap(),
        vec![(id, 1, payload)],
        "attempts were reset"
    );
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 1, 0));

    // requeue_all_dead, and a policy stricter than the job's limit.
    let ids = pgqrs::enqueue()
        .messages([1, 2])
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let n = pgqrs::dequeue()
        .from("q")
        .batch(10)
        .retry(RetryPolicy::none())
        .handle(|_m| async { Err("no retries".into()) })
        .execute(&store)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let dead = admin.dead_letters("q", 10).await.unwrap();
    assert_eq!(dead.iter().map(|d| d.id).collect::<Vec<_>>(), ids);
    assert!(dead.iter().all(|d| d.attempts == 1));
    assert_eq!(admin.dead_letters("q", 1).await.unwrap().len(), 1, "limit");
    assert_eq!(admin.requeue_all_dead("q").await.unwrap(), 2);
    assert_eq!(admin.requeue_all_dead("q").await.unwrap(), 0);
    assert_eq!(counts(&store, "q").await, (2, 0, 0, 1, 0));
}

/// `Consumer::fail` applies the policy's backoff: the job is delayed, then comes back with the
/// error text.
pub async fn consumer_fail_with_backoff(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let id = pgqrs::enqueue()
        .message(&json!("x"))
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let c = Consumer::new(&store, "q").await.unwrap();
    let m = c.dequeue(1, None).await.unwrap();
    c.fail(m[0].id, "try again later", &RetryPolicy::fixed(5, secs(1)))
        .await
        .unwrap();
    assert_eq!(counts(&store, "q").await, (0, 1, 0, 0, 0));
    assert!(
        c.dequeue(1, None).await.unwrap().is_empty(),
        "backoff not over"
    );
    let again = claim_until(&c, 1, None, secs(5)).await;
    assert_eq!(again[0].id, id);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(again[0].last_error.as_deref(), Some("try again later"));

    // Exponential backoff: the second failure waits longer than the first (2 s vs 1 s), so
    // after 1.3 s the job is still delayed.
    c.fail(
        again[0].id,
        "second",
        &RetryPolicy::exponential(5, secs(1), secs(60)),
    )
    .await
    .unwrap();
    sleep_ms(1300).await;
    assert!(
        c.dequeue(1, None).await.unwrap().is_empty(),
        "2 s backoff after attempt 2"
    );
    assert_eq!(metrics(&store, "q").await.delayed, 1);
}

/// A retry policy that allows more attempts than the job's own `max_attempts` must not strand
/// the job: after the failure it is either claimable again or a dead letter.
pub async fn policy_and_job_limits_agree(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let id = pgqrs::enqueue()
        .message(&json!("limits"))
        .max_attempts(2)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let policy = RetryPolicy::fixed(5, ms(0));
    for _ in 0..2 {
        let n = pgqrs::dequeue()
            .from("q")
            .retry(policy)
            .handle(|_m| async { Err("fails".into()) })
            .execute(&store)
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    // Attempt 2 of the job's 2 failed; the policy allows 5. The job's own limit wins: the
    // job is a dead letter after its second attempt, and nothing claims it a third time.
    let n = pgqrs::dequeue()
        .from("q")
        .retry(policy)
        .handle(|_m| async { Err("fails".into()) })
        .execute(&store)
        .await
        .unwrap();
    let dead = pgqrs::admin(&store).dead_letters("q", 10).await.unwrap();
    let m = metrics(&store, "q").await;
    assert_eq!(
        n, 0,
        "job {id} was claimed past its max_attempts of 2; metrics {m:?}"
    );
    let d = dead
        .iter()
        .find(|d| d.id == id)
        .unwrap_or_else(|| panic!("job {id} is not a dead letter: {dead:?}; metrics {m:?}"));
    assert_eq!(d.attempts, 2, "{d:?}");
    assert_eq!((m.pending(), m.dead), (0, 1), "{m:?}");
}

/// A job whose final attempt's lease expires (its consumer died) becomes a dead letter through
/// a worker's heartbeat, without being handled again.
pub async fn final_attempt_expiry_rescued_by_worker(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let id = pgqrs::enqueue()
        .message(&json!("last chance"))
        .max_attempts(1)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let dying = Consumer::new(&store, "q").await.unwrap();
    assert_eq!(dying.dequeue(1, Some(secs(1))).await.unwrap().len(), 1);
    drop(dying);
    sleep_ms(1300).await;
    let c = Consumer::new(&store, "q").await.unwrap();
    assert!(
        c.dequeue(1, None).await.unwrap().is_empty(),
        "no attempt is left: the job must not be claimed again"
    );

    let calls = Arc::new(AtomicUsize::new(0));
    let k = calls.clone();
    let w = pgqrs::worker("q")
        .heartbeat_interval(ms(200))
        .poll_interval(ms(100))
        .handle(move |_m| {
            k.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        });
    let (stop, run) = spawn_worker(&store, w);
    let admin = pgqrs::admin(&store);
    eventually(
        secs(10),
        "the expired final attempt becomes a dead letter",
        || async { !admin.dead_letters("q", 10).await.unwrap().is_empty() },
    )
    .await;
    stop.shutdown();
    let stats = run.await.unwrap().unwrap();
    let dead = admin.dead_letters("q", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].attempts), (id, 1));
    let text = dead[0].last_error.clone().unwrap_or_default();
    assert!(text.contains("lease expired"), "last error: {text:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "never handled again");
    assert_eq!(stats.succeeded, 0);
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 0, 1));
}
