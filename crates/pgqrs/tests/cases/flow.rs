//! Flow control for jobs: priorities.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgqrs::{Consumer, Error, RetryPolicy};
use serde_json::json;

use crate::assert_err;
use crate::common::*;

async fn put(store: &pgqrs::Store, tag: &str, priority: Option<i64>) -> i64 {
    let mut b = pgqrs::enqueue().message(&json!(tag)).to("q");
    if let Some(p) = priority {
        b = b.priority(p);
    }
    b.execute(store).await.unwrap()[0]
}

/// Claims take the highest priority first, then the earliest visible, then the lowest id; a
/// job not visible yet waits whatever its priority; a batch claim hands jobs out in that order.
pub async fn priorities_order_claims(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let low = put(&store, "low", Some(-5)).await;
    let plain_1 = put(&store, "plain-1", None).await;
    let high_1 = put(&store, "high-1", Some(10)).await;
    let plain_2 = put(&store, "plain-2", Some(0)).await;
    let high_2 = put(&store, "high-2", Some(10)).await;
    let top = put(&store, "top", Some(pgqrs::MAX_PRIORITY)).await;
    let bottom = put(&store, "bottom", Some(pgqrs::MIN_PRIORITY)).await;
    // Visible a little later than high-2, enqueued before it: earliest visible first.
    pgqrs::enqueue()
        .message(&json!("later"))
        .priority(10)
        .delay(Duration::from_secs(3600))
        .to("q")
        .execute(&store)
        .await
        .unwrap();

    let c = Consumer::new(&store, "q").await.unwrap();
    let one = c.dequeue(1, None).await.unwrap();
    assert_eq!(one.iter().map(|m| m.id).collect::<Vec<_>>(), [top]);
    assert_eq!(one[0].priority, i16::MAX);
    let rest = c.dequeue(10, None).await.unwrap();
    let got: Vec<(i64, i16)> = rest.iter().map(|m| (m.id, m.priority)).collect();
    assert_eq!(
        got,
        [
            (high_1, 10),
            (high_2, 10),
            (plain_1, 0),
            (plain_2, 0),
            (low, -5),
            (bottom, i16::MIN)
        ],
        "the delayed priority-10 job is not claimable yet"
    );
}

/// A priority outside -32768..=32767 is refused with a typed error naming the range, and
/// nothing is written; a batch carries its priority to every job.
pub async fn priority_out_of_range_and_batches(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    for bad in [pgqrs::MAX_PRIORITY + 1, pgqrs::MIN_PRIORITY - 1, i64::MAX] {
        let r = pgqrs::enqueue()
            .messages([1, 2])
            .priority(bad)
            .to("q")
            .execute(&store)
            .await;
        assert_err!(r, Error::Validation { field: "priority", ref message }
            if message.contains("-32768") && message.contains("32767"));
    }
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 0, 0));
    put(&store, "plain", None).await;
    let batch = pgqrs::enqueue()
        .messages(["a", "b", "c"])
        .priority(3)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let c = Consumer::new(&store, "q").await.unwrap();
    let got = c.dequeue(3, None).await.unwrap();
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), batch);
    assert!(got.iter().all(|m| m.priority == 3));
}

/// A dead letter keeps its priority: requeued, it is claimed before plainer jobs again.
pub async fn dead_letter_keeps_priority(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let urgent = pgqrs::enqueue()
        .message(&json!("urgent"))
        .priority(7)
        .max_attempts(1)
        .to("q")
        .execute(&store)
        .await
        .unwrap()[0];
    let c = Consumer::new(&store, "q").await.unwrap();
    let m = c.dequeue(1, None).await.unwrap().remove(0);
    c.fail(m.id, "boom", &RetryPolicy::default()).await.unwrap();
    assert_eq!(metrics(&store, "q").await.dead, 1);
    let plain = put(&store, "plain", None).await;
    assert_eq!(
        pgqrs::admin(&store)
            .requeue_dead("q", &[urgent])
            .await
            .unwrap(),
        1
    );
    let got = c.dequeue(2, None).await.unwrap();
    let got: Vec<(i64, i16)> = got.iter().map(|m| (m.id, m.priority)).collect();
    assert_eq!(got, [(urgent, 7), (plain, 0)]);
}

/// A worker with one handler slot runs a high-priority job enqueued after many plain ones
/// before the plain ones still waiting.
pub async fn worker_runs_higher_priority_first(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    pgqrs::enqueue()
        .messages(0..20)
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let urgent = put(&store, "urgent", Some(1)).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = order.clone();
    let w = pgqrs::worker("q").poll_interval(ms(20)).handle(move |m| {
        let o = o.clone();
        async move {
            o.lock().unwrap().push(m.id);
            Ok(())
        }
    });
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(20), "all 21 jobs are archived", || async {
        metrics(&store, "q").await.archived == 21
    })
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    let order = order.lock().unwrap().clone();
    assert_eq!(order.first(), Some(&urgent), "{order:?}");
}
