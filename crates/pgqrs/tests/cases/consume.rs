//! The seed's one-shot `dequeue().from().handle().execute()`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use pgqrs::{Error, RetryPolicy};
use serde_json::{json, Value};

use crate::assert_err;
use crate::common::*;

/// `execute` handles what is ready now, up to the batch size (default 1), returns how many it
/// handled, and ends by itself when the queue is empty.
pub async fn dequeue_one_shot(db: &TestDb) {
    let store = db.store_with_queue("tasks").await;
    let ids = pgqrs::enqueue()
        .messages([json!({"n": 1}), json!({"n": 2}), json!({"n": 3})])
        .to("tasks")
        .execute(&store)
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<(i64, Value)>>> = Arc::default();
    let run = |batch: Option<usize>| {
        let seen = seen.clone();
        let mut b = pgqrs::dequeue().from("tasks");
        if let Some(n) = batch {
            b = b.batch(n);
        }
        b.handle(move |msg| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((msg.id, msg.payload));
                Ok(())
            }
        })
    };
    assert_eq!(
        run(None).execute(&store).await.unwrap(),
        1,
        "default batch is 1"
    );
    assert_eq!(counts(&store, "tasks").await, (2, 0, 0, 1, 0));
    assert_eq!(run(Some(10)).execute(&store).await.unwrap(), 2);
    assert_eq!(
        run(Some(10)).execute(&store).await.unwrap(),
        0,
        "nothing left: returns 0"
    );
    assert_eq!(counts(&store, "tasks").await, (0, 0, 0, 3, 0));
    let got: HashSet<i64> = seen.lock().unwrap().iter().map(|(id, _)| *id).collect();
    assert_eq!(got, ids.iter().copied().collect::<HashSet<_>>());
    assert_eq!(seen.lock().unwrap().len(), 3, "each handled once");

    // Delayed jobs are not "ready now": execute returns without waiting for them.
    pgqrs::enqueue()
        .message(&1)
        .delay(secs(30))
        .to("tasks")
        .execute(&store)
        .await
        .unwrap();
    assert_eq!(run(Some(10)).execute(&store).await.unwrap(), 0);

    // A custom visibility timeout applies to the claim.
    pgqrs::enqueue()
        .message(&2)
        .to("tasks")
        .execute(&store)
        .await
        .unwrap();
    let lease: Arc<Mutex<Option<chrono::Duration>>> = Arc::default();
    let l2 = lease.clone();
    let n = pgqrs::dequeue()
        .from("tasks")
        .visibility_timeout(secs(5))
        .handle(move |m| {
            *l2.lock().unwrap() = Some(m.visible_at - chrono::Utc::now());
            async { Ok(()) }
        })
        .execute(&store)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let left = lease.lock().unwrap().expect("handled");
    assert!(
        left > chrono::Duration::seconds(3) && left <= chrono::Duration::seconds(6),
        "lease of about 5 s expected, got {left:?}"
    );

    // Bad arguments.
    assert_err!(
        pgqrs::dequeue()
            .handle(|_m| async { Ok(()) })
            .execute(&store)
            .await,
        Error::Validation { field: "queue", .. }
    );
    assert_err!(
        pgqrs::dequeue()
            .from("tasks")
            .batch(0)
            .handle(|_m| async { Ok(()) })
            .execute(&store)
            .await,
        Error::Validation { .. }
    );
    assert_err!(
        pgqrs::dequeue()
            .from("tasks")
            .visibility_timeout(secs(0))
            .handle(|_m| async { Ok(()) })
            .execute(&store)
            .await,
        Error::Validation { .. }
    );
}

/// A handler error and a handler panic both count as a failed attempt with the error text; the
/// caller survives the panic.
pub async fn dequeue_handler_error_and_panic(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let ids = pgqrs::enqueue()
        .messages(["err", "panic", "ok"])
        .max_attempts(2)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let consume = || {
        pgqrs::dequeue()
            .from("q")
            .batch(10)
            .retry(RetryPolicy::fixed(2, ms(0)))
            .handle(|m| async move {
                match m.payload.as_str() {
                    Some("err") => Err(format!("handler said no to {}", m.id).into()),
                    Some("panic") => panic!("kaboom {}", m.id),
                    _ => Ok(()),
                }
            })
    };
    assert_eq!(consume().execute(&store).await.unwrap(), 3);
    assert_eq!(
        counts(&store, "q").await,
        (2, 0, 0, 1, 0),
        "two retried, one archived"
    );
    assert_eq!(consume().execute(&store).await.unwrap(), 2);
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 1, 2));
    let dead = pgqrs::admin(&store).dead_letters("q", 10).await.unwrap();
    let err = dead
        .iter()
        .find(|d| d.id == ids[0])
        .expect("err job is dead");
    let pan = dead
        .iter()
        .find(|d| d.id == ids[1])
        .expect("panic job is dead");
    assert_eq!(
        err.last_error.as_deref(),
        Some(format!("handler said no to {}", ids[0]).as_str())
    );
    let text = pan.last_error.clone().unwrap_or_default();
    assert!(
        text.contains("panic") && text.contains(&format!("kaboom {}", ids[1])),
        "panic text: {text:?}"
    );
    assert_eq!((err.attempts, pan.attempts), (2, 2));
}

/// `Consumer::settle` records handlers' outcomes as `dequeue().execute()` does: successes
/// archived, failures recorded under the policy (here: dead at once), per id in order; the
/// settled leases are forgotten.
pub async fn consumer_settle(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let ids = pgqrs::enqueue()
        .messages([1, 2, 3])
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let c = pgqrs::Consumer::new(&store, "q").await.unwrap();
    assert_eq!(c.dequeue(3, None).await.unwrap().len(), 3);
    let settled = c
        .settle(
            vec![
                (ids[2], Ok(())),
                (ids[0], Err("boom".to_string())),
                (ids[1], Ok(())),
            ],
            &RetryPolicy::none(),
        )
        .await
        .unwrap();
    assert_eq!(settled, vec![true, true, true]);
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 2, 1));
    let dead = pgqrs::admin(&store).dead_letters("q", 10).await.unwrap();
    assert_eq!(
        (dead[0].id, dead[0].last_error.as_deref()),
        (ids[0], Some("boom"))
    );
    assert_err!(
        c.settle(vec![(ids[1], Ok(()))], &RetryPolicy::none()).await,
        Error::JobNotFound { id } if id == ids[1]
    );
    assert!(c
        .settle(vec![], &RetryPolicy::none())
        .await
        .unwrap()
        .is_empty());
}
