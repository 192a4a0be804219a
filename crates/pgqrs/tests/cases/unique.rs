//! Unique jobs: one waiting or running job per key in a queue.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgqrs::{Consumer, Error, OnDuplicate, RetryPolicy};
use serde_json::json;

use crate::assert_err;
use crate::common::*;

async fn put(store: &pgqrs::Store, queue: &str, key: &str) -> pgqrs::Result<i64> {
    pgqrs::enqueue()
        .message(&json!({ "key": key }))
        .key(key)
        .to(queue)
        .execute(store)
        .await
        .map(|ids| ids[0])
}

async fn put_strict(store: &pgqrs::Store, queue: &str, key: &str) -> pgqrs::Result<i64> {
    pgqrs::enqueue()
        .message(&json!({ "key": key }))
        .key(key)
        .on_duplicate(OnDuplicate::Error)
        .to(queue)
        .execute(store)
        .await
        .map(|ids| ids[0])
}

/// Jobs of the queue still to be done (ready, delayed, leased).
async fn live(store: &pgqrs::Store, queue: &str) -> i64 {
    let (ready, delayed, leased, _, _) = counts(store, queue).await;
    ready + delayed + leased
}

/// While a job with the key waits or runs, an enqueue with the key gets its id (by default)
/// or `DuplicateJob` carrying it; keys belong to their queue; a finished job (archived or
/// deleted) frees its key; keyless jobs are never folded.
pub async fn unique_key_holds_while_waiting_or_running(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    pgqrs::admin(&store).create_queue("other").await.unwrap();
    let first = put(&store, "q", "invoice-42").await.unwrap();
    assert_eq!(put(&store, "q", "invoice-42").await.unwrap(), first);
    assert_err!(put_strict(&store, "q", "invoice-42").await,
        Error::DuplicateJob { existing_id, ref key } if existing_id == first && key == "invoice-42");
    assert_eq!(live(&store, "q").await, 1);
    // Another key, another queue, no key: new jobs.
    let other_key = put(&store, "q", "invoice-43").await.unwrap();
    let other_queue = put(&store, "other", "invoice-42").await.unwrap();
    assert!(other_key != first && other_queue != first);
    let plain = pgqrs::enqueue()
        .messages([1, 1])
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    assert_eq!(plain.len(), 2);
    assert_eq!(live(&store, "q").await, 4);

    // Delayed, then leased: still held.
    let delayed = pgqrs::enqueue()
        .message(&json!("later"))
        .key("later")
        .delay(secs(3600))
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    assert_eq!(put(&store, "q", "later").await.unwrap(), delayed);
    let c = Consumer::new(&store, "q").await.unwrap();
    let msgs = c.dequeue(10, None).await.unwrap();
    assert_eq!(msgs.len(), 4, "the four ready jobs are leased now");
    assert_eq!(put(&store, "q", "invoice-42").await.unwrap(), first);
    assert_err!(put_strict(&store, "q", "invoice-43").await,
        Error::DuplicateJob { existing_id, .. } if existing_id == other_key);

    // Finished: archived or deleted, the key is free again.
    c.archive(first).await.unwrap();
    c.delete(other_key).await.unwrap();
    let again = put_strict(&store, "q", "invoice-42").await.unwrap();
    assert!(again > first);
    let again_43 = put(&store, "q", "invoice-43").await.unwrap();
    assert!(again_43 > other_key);
}

/// A batch gives each job its key (or none): jobs whose key is taken get the holder's id in
/// their place, jobs of the batch sharing a key are one job, and with `OnDuplicate::Error`
/// a taken key writes no job of the batch.
pub async fn unique_keys_in_batches(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let held = put(&store, "q", "b").await.unwrap();
    let ids = pgqrs::enqueue()
        .messages(["a1", "b", "a2", "none1", "c", "none2", "a3"])
        .keys([
            Some("a"),
            Some("b"),
            Some("a"),
            None,
            Some("c"),
            None,
            Some("a"),
        ])
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    assert_eq!(ids.len(), 7);
    assert_eq!(ids[1], held);
    assert_eq!(ids[0], ids[2]);
    assert_eq!(ids[0], ids[6]);
    let new: HashSet<i64> = [ids[0], ids[3], ids[4], ids[5]].into();
    assert_eq!(new.len(), 4, "{ids:?}");
    assert!(!new.contains(&held));
    assert!(
        ids[0] < ids[3] && ids[3] < ids[4] && ids[4] < ids[5],
        "ids in the jobs' order"
    );
    assert_eq!(live(&store, "q").await, 5);
    // The payload of the first job with a key is the one kept.
    let c = Consumer::new(&store, "q").await.unwrap();
    let msgs = c.dequeue(10, None).await.unwrap();
    let by_id: HashMap<i64, serde_json::Value> =
        msgs.iter().map(|m| (m.id, m.payload.clone())).collect();
    assert_eq!(by_id[&ids[0]], json!("a1"));
    for m in &msgs {
        c.archive(m.id).await.unwrap();
    }

    // Error policy: one taken key, nothing written.
    let d = put(&store, "q", "d").await.unwrap();
    let r = pgqrs::enqueue()
        .messages(["x", "y", "z"])
        .keys([Some("x"), Some("d"), None])
        .on_duplicate(OnDuplicate::Error)
        .to("q")
        .execute(&store)
        .await;
    assert_err!(r, Error::DuplicateJob { existing_id, ref key } if existing_id == d && key == "d");
    assert_eq!(
        live(&store, "q").await,
        1,
        "nothing of the batch was written"
    );
    // "x" was not written by the refused batch: it is free.
    put_strict(&store, "q", "x").await.unwrap();
    // Error policy: the batch repeats a key.
    let r = pgqrs::enqueue()
        .messages(["p", "q"])
        .keys(["p", "p"])
        .on_duplicate(OnDuplicate::Error)
        .to("q")
        .execute(&store)
        .await;
    assert_err!(r, Error::Validation { field: "keys", ref message } if message.contains("\"p\""));
    assert_eq!(live(&store, "q").await, 2);
    // All keys new under the error policy: written.
    let ids = pgqrs::enqueue()
        .messages(["e", "f"])
        .keys(["e".to_string(), "f".to_string()])
        .on_duplicate(OnDuplicate::Error)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    assert!(ids[0] < ids[1]);
    assert_eq!(live(&store, "q").await, 4);
}

/// `unique_for`: a job with the key archived within the window holds it; one archived
/// before it, deleted on completion, or dead, does not.
pub async fn unique_for_covers_recently_finished(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let c = Consumer::new(&store, "q").await.unwrap();
    let windowed = |key: &'static str, w: Duration, policy: OnDuplicate| {
        let store = store.clone();
        async move {
            pgqrs::enqueue()
                .message(&json!(key))
                .key(key)
                .unique_for(w)
                .on_duplicate(policy)
                .to("q")
                .execute(&store)
                .await
                .map(|ids| ids[0])
        }
    };
    let hour = secs(3600);
    let done = put(&store, "q", "k").await.unwrap();
    let m = c.dequeue(1, None).await.unwrap();
    assert_eq!(m[0].id, done);
    c.archive(done).await.unwrap();
    assert_eq!(
        windowed("k", hour, OnDuplicate::Existing).await.unwrap(),
        done
    );
    assert_err!(windowed("k", hour, OnDuplicate::Error).await,
        Error::DuplicateJob { existing_id, .. } if existing_id == done);
    assert_eq!(live(&store, "q").await, 0);
    // A batch sees the archived job too.
    let ids = pgqrs::enqueue()
        .messages([1, 2])
        .keys(["k", "k2"])
        .unique_for(hour)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    assert_eq!(ids[0], done);
    assert!(ids[1] > done);
    // Outside the window: a new job.
    sleep_ms(60).await;
    let fresh = windowed("k", ms(50), OnDuplicate::Error).await.unwrap();
    assert!(fresh > done);
    // A live job wins over the archived one.
    assert_eq!(
        windowed("k", hour, OnDuplicate::Existing).await.unwrap(),
        fresh
    );

    // Deleted on completion: nothing remembers it.
    let m = c.dequeue(10, None).await.unwrap();
    for m in &m {
        c.delete(m.id).await.unwrap();
    }
    let after_delete = windowed("k", hour, OnDuplicate::Existing).await.unwrap();
    assert_eq!(
        after_delete, done,
        "the archived job is still within the hour"
    );
    let gone = windowed("k2", hour, OnDuplicate::Error).await.unwrap();
    assert!(gone > ids[1], "k2's job was deleted, not archived");

    // Dead letters hold no key, with or without a window.
    let dies = pgqrs::enqueue()
        .message(&json!("dies"))
        .key("dies")
        .max_attempts(1)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let got = claim_until(&c, 2, None, secs(10)).await;
    assert!(got.iter().any(|m| m.id == dies));
    c.fail(dies, "boom", &RetryPolicy::default()).await.unwrap();
    let next = windowed("dies", hour, OnDuplicate::Error).await.unwrap();
    assert!(next > dies);
}

/// A dead job gives its key up; requeued while another job holds the key, it stays a dead
/// letter (not counted) and is requeued, with its key, once that job is done.
pub async fn requeued_dead_letter_and_its_key(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let c = Consumer::new(&store, "q").await.unwrap();
    let admin = || pgqrs::admin(&store);
    let mut dead = Vec::new();
    for _ in 0..2 {
        let id = pgqrs::enqueue()
            .message(&json!("k"))
            .key("k")
            .max_attempts(1)
            .to("q")
            .execute(&store)
            .await
            .unwrap()[0];
        let m = c.dequeue(1, None).await.unwrap();
        assert_eq!(m[0].id, id);
        c.fail(id, "boom", &RetryPolicy::default()).await.unwrap();
        dead.push(id);
    }
    assert_eq!(metrics(&store, "q").await.dead, 2);
    let holder = put(&store, "q", "k").await.unwrap();
    assert!(holder > dead[1]);
    // One by one, and all at once: held, so they stay.
    assert_eq!(admin().requeue_dead("q", &dead).await.unwrap(), 0);
    assert_eq!(admin().requeue_all_dead("q").await.unwrap(), 0);
    assert_eq!(metrics(&store, "q").await.dead, 2);
    assert_eq!(live(&store, "q").await, 1);
    // The holder finishes: requeueing both brings back one (the older), which holds the key.
    let m = c.dequeue(1, None).await.unwrap();
    c.archive(m[0].id).await.unwrap();
    assert_eq!(admin().requeue_all_dead("q").await.unwrap(), 1);
    assert_eq!(metrics(&store, "q").await.dead, 1);
    assert_eq!(put(&store, "q", "k").await.unwrap(), dead[0]);
    let m = c.dequeue(1, None).await.unwrap();
    assert_eq!(m[0].id, dead[0]);
    c.archive(dead[0]).await.unwrap();
    // Then the other, by id.
    assert_eq!(admin().requeue_dead("q", &[dead[1]]).await.unwrap(), 1);
    assert_eq!(put(&store, "q", "k").await.unwrap(), dead[1]);
    assert_eq!(metrics(&store, "q").await.dead, 0);
}

/// Bad keys and options are refused with typed errors, and nothing is written.
pub async fn unique_options_validated(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let one = || pgqrs::enqueue().message(&json!(1)).to("q");
    let long = "k".repeat(pgqrs::MAX_KEY_BYTES + 1);
    for (b, field) in [
        (one().key(""), "key"),
        (one().key("a\0b"), "key"),
        (one().key(long.clone()), "key"),
        (pgqrs::enqueue().messages([1, 2]).key("k").to("q"), "key"),
        (
            pgqrs::enqueue().messages([1, 2]).keys(["a"]).to("q"),
            "keys",
        ),
        (
            pgqrs::enqueue()
                .messages([1, 2])
                .keys([Some("a"), Some("")])
                .to("q"),
            "keys",
        ),
        (one().key("k").keys(["k"]), "key"),
        (one().unique_for(secs(10)), "unique_for"),
        (one().on_duplicate(OnDuplicate::Error), "on_duplicate"),
        (one().key("k").unique_for(Duration::ZERO), "unique_for"),
        (
            one().key("k").unique_for(secs(101 * 365 * 24 * 3600)),
            "unique_for",
        ),
    ] {
        let r = b.execute(&store).await;
        assert_err!(r, Error::Validation { field: f, .. } if f == field);
    }
    let e = one().key(long).execute(&store).await.unwrap_err();
    assert!(e.to_string().contains("512"), "{e}");
    assert!(e.to_string().len() < 400, "{e}");
    assert_eq!(live(&store, "q").await, 0);
    // The longest key is fine; so is any text but NUL.
    put(&store, "q", &"k".repeat(pgqrs::MAX_KEY_BYTES))
        .await
        .unwrap();
    put(&store, "q", " ünïcode key ✓ ").await.unwrap();
    assert_eq!(live(&store, "q").await, 2);
    // An enqueue to a missing queue says so, keyed too.
    assert_err!(put(&store, "nope", "k").await, Error::QueueNotFound { .. });
}

/// (stores, tasks per store, keys) for the race: several connections on PostgreSQL and
/// SQLite; one store on Turso (its files belong to one process's one database object).
fn race_size(db: &TestDb) -> (usize, usize, usize) {
    if db.is_postgres() {
        (6, 4, 25)
    } else if db.is_sqlite() {
        (4, 3, 25)
    } else {
        (1, 8, 25)
    }
}

/// Many producers on their own connections enqueue the same keys at the same moment, one at
/// a time and in batches, in different orders: exactly one job per key, and every producer
/// gets its id; with the error policy exactly one producer per key succeeds.
pub async fn unique_race_many_producers(db: &TestDb) {
    let (stores, tasks, keys) = race_size(db);
    // One connection per producing task: 24 in all on PostgreSQL, within the test PgBouncer's
    // pool of 40 (session pooling holds a server connection per client connection; more
    // clients than that would wait for one instead of racing).
    let pool = format!("pool_size={tasks}");
    let first = db.store_with(&pool).await;
    pgqrs::admin(&first).create_queue("q").await.unwrap();
    let mut all = vec![first];
    for _ in 1..stores {
        all.push(db.connect_with(&pool).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(stores * tasks));
    let mut runs = Vec::new();
    for (s, store) in all.iter().enumerate() {
        for t in 0..tasks {
            let (store, start) = (store.clone(), start.clone());
            runs.push(tokio::spawn(async move {
                let mut order: Vec<usize> = (0..keys).collect();
                fastrand::shuffle(&mut order);
                start.wait().await;
                let mut got: Vec<(usize, i64)> = Vec::new();
                if (s + t) % 2 == 0 {
                    for k in order {
                        let id = put(&store, "q", &format!("k-{k}")).await.unwrap();
                        got.push((k, id));
                    }
                } else {
                    for chunk in order.chunks(7) {
                        let ids = pgqrs::enqueue()
                            .messages(chunk.iter().map(|k| json!(k)))
                            .keys(chunk.iter().map(|k| format!("k-{k}")))
                            .to("q")
                            .execute(&store)
                            .await
                            .unwrap();
                        got.extend(chunk.iter().copied().zip(ids));
                    }
                }
                got
            }));
        }
    }
    let mut by_key: HashMap<usize, HashSet<i64>> = HashMap::new();
    for r in runs {
        for (k, id) in r.await.unwrap() {
            by_key.entry(k).or_default().insert(id);
        }
    }
    assert_eq!(by_key.len(), keys);
    let split: Vec<_> = by_key.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(split.is_empty(), "keys with more than one job: {split:?}");
    assert_eq!(live(&all[0], "q").await, keys as i64);

    // The error policy: one winner per key.
    let start = Arc::new(tokio::sync::Barrier::new(stores * tasks));
    let mut runs = Vec::new();
    for store in &all {
        for _ in 0..tasks {
            let (store, start) = (store.clone(), start.clone());
            runs.push(tokio::spawn(async move {
                start.wait().await;
                let mut wins = Vec::new();
                for k in 0..keys {
                    match put_strict(&store, "q", &format!("s-{k}")).await {
                        Ok(id) => wins.push((k, id)),
                        Err(Error::DuplicateJob { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                wins
            }));
        }
    }
    let mut wins: HashMap<usize, usize> = HashMap::new();
    for r in runs {
        for (k, _) in r.await.unwrap() {
            *wins.entry(k).or_default() += 1;
        }
    }
    assert_eq!(wins.len(), keys);
    assert!(wins.values().all(|n| *n == 1), "{wins:?}");
    assert_eq!(live(&all[0], "q").await, 2 * keys as i64);
    for s in all {
        s.close().await;
    }
}

/// Producers keep enqueueing one key with a long `unique_for` while a consumer keeps
/// finishing jobs: the job moving from the queue to the archive is never missed, so one job
/// is ever made.
pub async fn unique_for_race_with_completions(db: &TestDb) {
    let store = db.store_with("pool_size=8").await;
    pgqrs::admin(&store).create_queue("q").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for _ in 0..4 {
        let (store, stop) = (store.clone(), stop.clone());
        producers.push(tokio::spawn(async move {
            let mut ids = HashSet::new();
            while !stop.load(Ordering::Relaxed) {
                let id = pgqrs::enqueue()
                    .message(&json!("once"))
                    .key("once")
                    .unique_for(secs(3600))
                    .to("q")
                    .execute(&store)
                    .await
                    .unwrap()[0];
                ids.insert(id);
            }
            ids
        }));
    }
    let c = Consumer::new(&store, "q").await.unwrap();
    let mut archived = 0;
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        for m in c.dequeue(10, None).await.unwrap() {
            c.archive(m.id).await.unwrap();
            archived += 1;
        }
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut ids = HashSet::new();
    for p in producers {
        ids.extend(p.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(archived <= 1, "archived {archived} jobs of one key");
    let (_, _, _, a, _) = counts(&store, "q").await;
    assert_eq!(a + live(&store, "q").await, 1);
}

/// A keyed job with a timeout keeps both its key and its timeout on every way through the dead
/// letters: written by the keyed enqueue (one job and a batch), buried by a failure or by a
/// worker rescuing an expired final attempt, and brought back by `requeue_dead`,
/// `requeue_all_dead` and `retry_job`.
pub async fn keyed_job_keeps_key_and_timeout_when_dead(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let c = Consumer::new(&store, "q").await.unwrap();
    let admin = || pgqrs::admin(&store);
    let policy = RetryPolicy::default();
    let one = pgqrs::enqueue()
        .message(&json!("one"))
        .key("k")
        .timeout(ms(1500))
        .max_attempts(1)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let batch = pgqrs::enqueue()
        .messages(["b1", "b2"])
        .keys(["b1", "b2"])
        .timeout(ms(2500))
        .max_attempts(1)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let expected: HashMap<i64, (&str, Duration)> = [
        (one, ("k", ms(1500))),
        (batch[0], ("b1", ms(2500))),
        (batch[1], ("b2", ms(2500))),
    ]
    .into();
    // Each key is held by its job, and each claim carries the job's timeout.
    let check_claims = |msgs: Vec<pgqrs::Message>, n: usize| {
        assert_eq!(msgs.len(), n, "{msgs:?}");
        for m in &msgs {
            assert_eq!(m.timeout, Some(expected[&m.id].1), "job {}", m.id);
        }
        msgs.iter().map(|m| m.id).collect::<Vec<_>>()
    };
    let check_keys = |ids: Vec<i64>| {
        let store = store.clone();
        let expected = expected.clone();
        async move {
            for id in ids {
                let key = expected[&id].0;
                assert_eq!(put(&store, "q", key).await.unwrap(), id, "key {key} held");
            }
        }
    };
    check_keys(vec![one, batch[0], batch[1]]).await;
    for id in check_claims(c.dequeue(3, None).await.unwrap(), 3) {
        c.fail(id, "boom", &policy).await.unwrap();
    }
    assert_eq!(metrics(&store, "q").await.dead, 3);

    // requeue_dead, by id.
    assert_eq!(admin().requeue_dead("q", &[one]).await.unwrap(), 1);
    check_keys(vec![one]).await;
    assert_eq!(
        check_claims(c.dequeue(3, None).await.unwrap(), 1),
        vec![one]
    );
    c.fail(one, "boom", &policy).await.unwrap();

    // requeue_all_dead.
    assert_eq!(admin().requeue_all_dead("q").await.unwrap(), 3);
    check_keys(vec![one, batch[0], batch[1]]).await;
    for id in check_claims(c.dequeue(3, None).await.unwrap(), 3) {
        if id == batch[1] {
            c.archive(id).await.unwrap();
        } else {
            c.fail(id, "boom", &policy).await.unwrap();
        }
    }
    assert_eq!(metrics(&store, "q").await.dead, 2);

    // retry_job (inspect and act).
    let j = admin().retry_job(one).await.unwrap();
    assert_eq!(j.id, one);
    check_keys(vec![one]).await;

    // A worker rescues the expired final attempt into the dead letters: key and timeout stay.
    let dying = Consumer::new(&store, "q").await.unwrap();
    let m = dying.dequeue(1, Some(secs(1))).await.unwrap();
    assert_eq!(check_claims(m, 1), vec![one]);
    drop(dying);
    sleep_ms(1300).await;
    let w = pgqrs::worker("q")
        .heartbeat_interval(ms(200))
        .poll_interval(ms(100))
        .handle(|_m| async { Ok(()) });
    let (stop, run) = spawn_worker(&store, w);
    eventually(
        secs(10),
        "the expired final attempt is a dead letter",
        || async { metrics(&store, "q").await.dead == 2 },
    )
    .await;
    stop.shutdown();
    assert_eq!(run.await.unwrap().unwrap().succeeded, 0);
    assert_eq!(admin().requeue_dead("q", &[one]).await.unwrap(), 1);
    check_keys(vec![one]).await;
    assert_eq!(
        check_claims(c.dequeue(3, None).await.unwrap(), 1),
        vec![one]
    );
    c.archive(one).await.unwrap();
    assert_eq!(live(&store, "q").await, 0);
    assert_eq!(metrics(&store, "q").await.dead, 1);
}
