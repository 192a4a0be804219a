//! Inspecting and acting on jobs: get one by id in any state, list a queue's jobs by state a
//! page at a time, cancel a waiting job, retry a dead one, reschedule or re-prioritize a
//! waiting one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use pgqrs::{Consumer, Error, Job, JobState, RetryPolicy, RunAt};
use serde_json::json;

use crate::assert_err;
use crate::common::*;

async fn put(store: &pgqrs::Store, tag: &str, priority: i64) -> i64 {
    pgqrs::enqueue()
        .message(&json!({ "tag": tag }))
        .priority(priority)
        .to("q")
        .execute(store)
        .await
        .unwrap()[0]
}

async fn put_delayed(store: &pgqrs::Store, tag: &str) -> i64 {
    pgqrs::enqueue()
        .message(&json!({ "tag": tag }))
        .delay(secs(3600))
        .to("q")
        .execute(store)
        .await
        .unwrap()[0]
}

/// Every job of `state`, paging `limit` at a time; checks each page's size and cursor.
async fn all_pages(store: &pgqrs::Store, state: JobState, limit: i64) -> Vec<Job> {
    let admin = pgqrs::admin(store);
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = admin
            .list_jobs("q", state, Some(limit), cursor.as_deref())
            .await
            .unwrap();
        assert!(page.jobs.len() as i64 <= limit);
        assert!(page.jobs.iter().all(|j| j.state == state && j.queue == "q"));
        out.extend(page.jobs.iter().cloned());
        match page.next_cursor {
            Some(c) => {
                assert_eq!(page.jobs.len() as i64, limit, "a full page has a next one");
                cursor = Some(c);
            }
            None => return out,
        }
    }
}

/// Jobs and claimed messages, by id.
trait HasId {
    fn id(&self) -> i64;
}

impl HasId for Job {
    fn id(&self) -> i64 {
        self.id
    }
}

impl HasId for pgqrs::Message {
    fn id(&self) -> i64 {
        self.id
    }
}

fn ids<T: HasId>(v: &[T]) -> Vec<i64> {
    v.iter().map(HasId::id).collect()
}

/// A job of each state, found by id with what it holds; the states agree with the metrics'
/// counts; an unknown id is `JobNotFound`.
pub async fn get_job_in_every_state(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    let done = put(&store, "done", 0).await;
    let dead = pgqrs::enqueue()
        .message(&json!({ "tag": "dead" }))
        .priority(4)
        .max_attempts(1)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let c = Consumer::new(&store, "q").await.unwrap();
    let got = c.dequeue(2, None).await.unwrap();
    assert_eq!(ids(&got), [dead, done], "priority 4 first");
    c.archive(done).await.unwrap();
    c.fail(dead, "boom", &RetryPolicy::default()).await.unwrap();
    let leased = put(&store, "leased", 0).await;
    let before_claim = Utc::now();
    let claimed = c.dequeue(1, Some(secs(600))).await.unwrap();
    assert_eq!(ids(&claimed), [leased]);
    let ready = put(&store, "ready", -3).await;
    let delayed = put_delayed(&store, "delayed").await;

    let j = admin.get_job(ready).await.unwrap();
    assert_eq!((j.state, j.queue.as_str()), (JobState::Ready, "q"));
    assert_eq!(j.payload, json!({ "tag": "ready" }));
    assert_eq!((j.priority, j.attempts, j.max_attempts), (-3, 0, Some(5)));
    assert!(j.visible_at.unwrap() <= Utc::now() + chrono::Duration::seconds(5));
    assert_eq!(
        (j.leased_at, j.finished_at, j.last_error),
        (None, None, None)
    );

    let j = admin.get_job(delayed).await.unwrap();
    assert_eq!(j.state, JobState::Delayed);
    assert!(j.visible_at.unwrap() > Utc::now() + chrono::Duration::seconds(3000));

    let j = admin.get_job(leased).await.unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Leased, 1));
    assert_eq!(j.visible_at, Some(claimed[0].visible_at), "the lease's end");
    let at = j.leased_at.expect("leased_at");
    assert!(at >= before_claim - chrono::Duration::seconds(5), "{at}");

    let j = admin.get_job(done).await.unwrap();
    assert_eq!(
        (j.state, j.attempts, j.max_attempts),
        (JobState::Archived, 1, None)
    );
    assert_eq!(j.payload, json!({ "tag": "done" }));
    assert!(j.finished_at.is_some() && j.visible_at.is_none());

    let j = admin.get_job(dead).await.unwrap();
    assert_eq!((j.state, j.priority), (JobState::Dead, 4));
    assert_eq!((j.attempts, j.max_attempts), (1, Some(1)));
    assert!(j.last_error.unwrap().contains("boom"));
    assert!(j.finished_at.is_some());

    assert_err!(admin.get_job(i64::MAX).await, Error::JobNotFound { id } if id == i64::MAX);
    assert_err!(admin.get_job(-1).await, Error::JobNotFound { .. });

    // The same five, listed by state, agree with the metrics.
    let mut listed = Vec::new();
    for state in JobState::ALL {
        listed.push(all_pages(&store, state, 10).await.len() as i64);
    }
    let (r, d, l, a, x) = counts(&store, "q").await;
    assert_eq!(listed, [r, d, l, a, x]);
    assert_eq!(listed, [1, 1, 1, 1, 1]);
}

/// A waiting job whose lease expired is `ready` (as the metrics count it); a final attempt
/// whose lease expired is `leased` until a worker buries it. Both list where they count.
pub async fn expired_leases_keep_the_metrics_states(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    let again = put(&store, "again", 0).await;
    let last = pgqrs::enqueue()
        .message(&json!({ "tag": "last" }))
        .max_attempts(1)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let c = Consumer::new(&store, "q").await.unwrap();
    assert_eq!(c.dequeue(2, Some(ms(100))).await.unwrap().len(), 2);
    sleep_ms(300).await;
    let j = admin.get_job(again).await.unwrap();
    assert_eq!(j.state, JobState::Ready);
    assert!(j.leased_at.is_some(), "the expired claim is still recorded");
    assert_eq!(admin.get_job(last).await.unwrap().state, JobState::Leased);
    assert_eq!(counts(&store, "q").await, (1, 0, 1, 0, 0));
    assert_eq!(ids(&all_pages(&store, JobState::Ready, 5).await), [again]);
    assert_eq!(ids(&all_pages(&store, JobState::Leased, 5).await), [last]);
    assert!(all_pages(&store, JobState::Delayed, 5).await.is_empty());
}

/// Pages of every state come in the documented order, each job once; the limit defaults to
/// 100 and is bounded; a cursor of another state or a mangled one is refused.
pub async fn list_jobs_pages_in_order(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    // Ready: three priorities, interleaved, with a delayed job of the top priority.
    let mut want = Vec::new();
    for i in 0..9 {
        let p = [0, 5, -2][i % 3];
        want.push((p, put(&store, &format!("r{i}"), p).await));
    }
    pgqrs::enqueue()
        .message(&json!("later"))
        .priority(5)
        .delay(secs(3600))
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    want.sort_by_key(|&(p, id)| (std::cmp::Reverse(p), id));
    let want: Vec<i64> = want.into_iter().map(|(_, id)| id).collect();
    for limit in [1, 2, 4, 9, 100] {
        assert_eq!(ids(&all_pages(&store, JobState::Ready, limit).await), want);
    }
    // Claims take them in that order.
    let c = Consumer::new(&store, "q").await.unwrap();
    let claimed = c.dequeue(4, Some(secs(600))).await.unwrap();
    assert_eq!(ids(&claimed), want[..4]);
    let leased = all_pages(&store, JobState::Leased, 3).await;
    assert_eq!(ids(&leased), want[..4], "priority, then lease end, then id");
    assert_eq!(ids(&all_pages(&store, JobState::Ready, 2).await), want[4..]);

    // Delayed: soonest first within a priority.
    let soon = pgqrs::enqueue()
        .message(&json!("soon"))
        .priority(5)
        .delay(secs(600))
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let delayed = all_pages(&store, JobState::Delayed, 1).await;
    assert_eq!(delayed.len(), 2);
    assert_eq!(delayed[0].id, soon);

    // Archived: newest first. Dead: by id.
    for m in &claimed[..3] {
        c.archive(m.id).await.unwrap();
        sleep_ms(5).await;
    }
    let archived = all_pages(&store, JobState::Archived, 2).await;
    let mut newest_first = ids(&claimed[..3]);
    newest_first.reverse();
    assert_eq!(ids(&archived), newest_first);
    let dead_ids = pgqrs::enqueue()
        .messages(0..5)
        .max_attempts(1)
        .priority(9)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let got = c.dequeue(5, None).await.unwrap();
    for m in got.iter().rev() {
        c.fail(m.id, "boom", &RetryPolicy::default()).await.unwrap();
    }
    assert_eq!(ids(&all_pages(&store, JobState::Dead, 2).await), dead_ids);

    // The limit: default 100, 1 to 10,000.
    pgqrs::enqueue()
        .messages(0..150)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let page = admin
        .list_jobs("q", JobState::Ready, None, None)
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 100);
    assert!(page.next_cursor.is_some());
    let rest = admin
        .list_jobs(
            "q",
            JobState::Ready,
            Some(10_000),
            page.next_cursor.as_deref(),
        )
        .await
        .unwrap();
    assert_eq!(rest.jobs.len(), 150 + 5 - 100);
    assert_eq!(rest.next_cursor, None);
    for bad in [0, -1, 10_001, i64::MAX] {
        assert_err!(
            admin.list_jobs("q", JobState::Ready, Some(bad), None).await,
            Error::Validation { field: "limit", ref message } if message.contains("10000")
        );
    }
    // Cursors.
    let ready_cursor = page.next_cursor.unwrap();
    assert_err!(
        admin
            .list_jobs("q", JobState::Delayed, None, Some(&ready_cursor))
            .await,
        Error::Validation { field: "cursor", ref message } if message.contains("ready")
    );
    let long = "9".repeat(100_000);
    for bad in ["", "x", "ready:1", "ready:a:b:c", "dead:1:2", long.as_str()] {
        assert_err!(
            admin.list_jobs("q", JobState::Ready, None, Some(bad)).await,
            Error::Validation {
                field: "cursor",
                ..
            }
        );
    }
    assert_err!(
        admin.list_jobs("nope", JobState::Ready, None, None).await,
        Error::QueueNotFound { .. }
    );
    assert_err!(
        admin
            .list_jobs("bad name", JobState::Dead, None, None)
            .await,
        Error::Validation { .. }
    );
}

/// Cancel deletes a waiting job, ready or delayed, and returns it; a leased, archived or dead
/// job is refused with `JobStateConflict` and stays as it was; an unknown id is `JobNotFound`.
pub async fn cancel_only_waiting_jobs(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    let c = Consumer::new(&store, "q").await.unwrap();
    let leased = put(&store, "leased", 0).await;
    assert_eq!(ids(&c.dequeue(1, Some(secs(600))).await.unwrap()), [leased]);
    let ready = put(&store, "ready", 2).await;
    let delayed = put_delayed(&store, "delayed").await;

    let j = admin.cancel_job(ready).await.unwrap();
    assert_eq!((j.id, j.state, j.priority), (ready, JobState::Ready, 2));
    assert_eq!(j.payload, json!({ "tag": "ready" }));
    assert_err!(admin.get_job(ready).await, Error::JobNotFound { .. });
    let j = admin.cancel_job(delayed).await.unwrap();
    assert_eq!(j.state, JobState::Delayed);
    assert_err!(admin.cancel_job(delayed).await, Error::JobNotFound { id } if id == delayed);

    let e = admin.cancel_job(leased).await.unwrap_err();
    assert!(e.to_string().contains("leased"), "{e}");
    assert_err!(
        Err::<(), _>(e),
        Error::JobStateConflict { id, state: JobState::Leased, action: "cancel" } if id == leased
    );
    // The consumer still holds it, and completes it.
    c.archive(leased).await.unwrap();
    assert_err!(
        admin.cancel_job(leased).await,
        Error::JobStateConflict {
            state: JobState::Archived,
            ..
        }
    );
    let dead = pgqrs::enqueue()
        .message(&json!(1))
        .max_attempts(1)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    c.dequeue(1, None).await.unwrap();
    c.fail(dead, "boom", &RetryPolicy::default()).await.unwrap();
    assert_err!(
        admin.cancel_job(dead).await,
        Error::JobStateConflict {
            state: JobState::Dead,
            action: "cancel",
            ..
        }
    );
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 1, 1));
}

/// Cancels racing claims on the same jobs: a job is either cancelled or claimed, never both
/// and never neither; a claimed job's consumer completes it; a refused cancel says why.
pub async fn cancel_races_claims(db: &TestDb) {
    let store = db.store_with("pool_size=8").await;
    pgqrs::admin(&store).create_queue("q").await.unwrap();
    let n = if db.is_postgres() { 400 } else { 200 };
    let all = pgqrs::enqueue()
        .messages(0..n)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let claimed: Arc<Mutex<Vec<i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut claimers = Vec::new();
    for _ in 0..2 {
        let (store, claimed, stop) = (store.clone(), claimed.clone(), stop.clone());
        claimers.push(tokio::spawn(async move {
            let c = Consumer::new(&store, "q").await.unwrap();
            while !stop.load(Ordering::SeqCst) {
                let got = c.dequeue(3, Some(secs(600))).await.unwrap();
                if got.is_empty() {
                    tokio::task::yield_now().await;
                }
                for m in got {
                    // The claim stands: completing it succeeds.
                    c.archive(m.id).await.unwrap();
                    claimed.lock().unwrap().push(m.id);
                }
            }
        }));
    }
    let mut cancelled = Vec::new();
    let mut refused = Vec::new();
    let admin = pgqrs::admin(&store);
    // From the back, so that cancels and claims meet in the middle.
    for &id in all.iter().rev() {
        match admin.cancel_job(id).await {
            Ok(j) => {
                assert_eq!(j.id, id);
                assert!(j.state.is_waiting(), "{:?}", j.state);
                cancelled.push(id);
            }
            Err(Error::JobStateConflict { id: got, state, .. }) => {
                assert_eq!(got, id);
                assert!(
                    matches!(state, JobState::Leased | JobState::Archived),
                    "{state}"
                );
                refused.push(id);
            }
            Err(e) => panic!("cancel {id}: {e}"),
        }
    }
    eventually(secs(60), "every job cancelled or completed", || async {
        counts(&store, "q").await == (0, 0, 0, (n as usize - cancelled.len()) as i64, 0)
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for c in claimers {
        c.await.unwrap();
    }
    let claimed: HashSet<i64> = claimed.lock().unwrap().iter().copied().collect();
    let cancelled_set: HashSet<i64> = cancelled.iter().copied().collect();
    assert!(claimed.is_disjoint(&cancelled_set), "claimed and cancelled");
    assert_eq!(
        claimed.len() + cancelled_set.len(),
        n as usize,
        "each job once"
    );
    assert!(refused.iter().all(|id| claimed.contains(id)));
    assert!(!claimed.is_empty() && !cancelled.is_empty(), "they raced");
}

/// A dead job goes back to ready now with its attempts reset (and is claimed again); a job
/// that is not dead is refused; an unknown id is `JobNotFound`.
pub async fn retry_dead_job(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    let c = Consumer::new(&store, "q").await.unwrap();
    let id = pgqrs::enqueue()
        .message(&json!("x"))
        .max_attempts(2)
        .priority(3)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    for _ in 0..2 {
        c.dequeue(1, None).await.unwrap();
        c.fail(id, "boom", &RetryPolicy::fixed(2, Duration::ZERO))
            .await
            .unwrap();
    }
    assert_eq!(admin.get_job(id).await.unwrap().state, JobState::Dead);
    let j = admin.retry_job(id).await.unwrap();
    assert_eq!((j.state, j.attempts, j.priority), (JobState::Ready, 0, 3));
    assert!(
        j.last_error.unwrap().contains("boom"),
        "the last error is kept"
    );
    let e = admin.retry_job(id).await.unwrap_err();
    assert!(e.to_string().contains("dead"), "{e}");
    assert_err!(
        Err::<(), _>(e),
        Error::JobStateConflict {
            state: JobState::Ready,
            action: "retry",
            ..
        }
    );
    assert_eq!(ids(&c.dequeue(1, None).await.unwrap()), [id]);
    assert_err!(
        admin.retry_job(id).await,
        Error::JobStateConflict {
            state: JobState::Leased,
            ..
        }
    );
    assert_err!(admin.retry_job(i64::MAX).await, Error::JobNotFound { .. });
}

/// A waiting job's run time moves both ways; its priority changes the claim order; a leased
/// job is refused; bad values are refused before anything is written.
pub async fn reschedule_and_reprioritize(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    let c = Consumer::new(&store, "q").await.unwrap();
    let a = put(&store, "a", 0).await;
    let b = put(&store, "b", 0).await;

    let j = admin
        .reschedule_job(a, RunAt::After(secs(3600)))
        .await
        .unwrap();
    assert_eq!(j.state, JobState::Delayed);
    assert!(j.visible_at.unwrap() > Utc::now() + chrono::Duration::seconds(3000));
    let at = Utc::now() + chrono::Duration::seconds(7200);
    let j = admin.reschedule_job(a, RunAt::At(at)).await.unwrap();
    assert_eq!(j.state, JobState::Delayed);
    let diff = (j.visible_at.unwrap() - at).num_milliseconds().abs();
    assert!(diff < 1000, "{diff} ms");
    assert_eq!(counts(&store, "q").await, (1, 1, 0, 0, 0));
    let j = admin.reschedule_job(a, RunAt::Now).await.unwrap();
    assert_eq!(j.state, JobState::Ready);

    // Priority: b before a now.
    let j = admin.set_job_priority(b, 7).await.unwrap();
    assert_eq!((j.state, j.priority), (JobState::Ready, 7));
    let delayed = put_delayed(&store, "d").await;
    assert_eq!(
        admin.set_job_priority(delayed, -1).await.unwrap().priority,
        -1
    );
    let got = c.dequeue(1, Some(secs(600))).await.unwrap();
    assert_eq!(ids(&got), [b]);
    assert_eq!(got[0].priority, 7);

    // A leased job: refused, unchanged, still completable.
    assert_err!(
        admin.reschedule_job(b, RunAt::Now).await,
        Error::JobStateConflict {
            state: JobState::Leased,
            action: "reschedule",
            ..
        }
    );
    assert_err!(
        admin.set_job_priority(b, 1).await,
        Error::JobStateConflict {
            state: JobState::Leased,
            action: "set_priority",
            ..
        }
    );
    c.archive(b).await.unwrap();
    assert_err!(
        admin.set_job_priority(b, 1).await,
        Error::JobStateConflict {
            state: JobState::Archived,
            ..
        }
    );
    assert_err!(
        admin.set_job_priority(i64::MAX, 1).await,
        Error::JobNotFound { .. }
    );
    assert_err!(
        admin.reschedule_job(i64::MAX, RunAt::Now).await,
        Error::JobNotFound { .. }
    );

    // Bad values.
    for p in [pgqrs::MAX_PRIORITY + 1, pgqrs::MIN_PRIORITY - 1] {
        assert_err!(
            admin.set_job_priority(a, p).await,
            Error::Validation { field: "priority", ref message } if message.contains("32767")
        );
    }
    assert_err!(
        admin
            .reschedule_job(a, RunAt::After(secs(101 * 365 * 24 * 3600)))
            .await,
        Error::Validation { field: "delay", .. }
    );
    assert_err!(
        admin
            .reschedule_job(a, RunAt::At(Utc::now() + chrono::Duration::days(101 * 366)))
            .await,
        Error::Validation { field: "at", .. }
    );
    assert_err!(
        RunAt::from_options(Some(secs(1)), Some(Utc::now())),
        Error::Validation { .. }
    );
    assert_err!(RunAt::from_options(None, None), Error::Validation { .. });
    assert_eq!(admin.get_job(a).await.unwrap().priority, 0);
    assert_eq!(admin.get_job(a).await.unwrap().state, JobState::Ready);
}

/// Rescheduling a job whose lease expired takes the job from that old lease: its consumer
/// can no longer complete it, and the job waits as rescheduled (delayed, not leased).
pub async fn reschedule_ends_an_expired_lease(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    let id = put(&store, "x", 0).await;
    let c = Consumer::new(&store, "q").await.unwrap();
    c.dequeue(1, Some(ms(100))).await.unwrap();
    sleep_ms(300).await;
    let j = admin
        .reschedule_job(id, RunAt::After(secs(600)))
        .await
        .unwrap();
    assert_eq!(
        (j.state, j.leased_at, j.worker_id),
        (JobState::Delayed, None, None)
    );
    assert_err!(c.archive(id).await, Error::LeaseLost { .. });
    assert_eq!(counts(&store, "q").await, (0, 1, 0, 0, 0));
    // Made ready now, an idle worker runs it.
    let w = pgqrs::worker("q")
        .poll_interval(secs(30))
        .handle(|_m| async { Ok(()) });
    let (stop, run) = spawn_worker(&store, w);
    sleep_ms(200).await;
    admin.reschedule_job(id, RunAt::Now).await.unwrap();
    eventually(secs(10), "the rescheduled job ran", || async {
        metrics(&store, "q").await.archived == 1
    })
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();
}
