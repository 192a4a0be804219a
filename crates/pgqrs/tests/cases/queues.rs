//! Queues: create, duplicate, list, delete, purge, name validation, unknown queues.

use pgqrs::{Consumer, Error};
use serde_json::json;

use crate::assert_err;
use crate::common::*;

async fn queue_names(store: &pgqrs::Store) -> Vec<String> {
    pgqrs::admin(store)
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect()
}

pub async fn queue_lifecycle(db: &TestDb) {
    let store = db.store().await;
    let admin = pgqrs::admin(&store);
    assert!(queue_names(&store).await.is_empty());

    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    for name in ["gamma", "alpha", "beta"] {
        let q = admin.create_queue(name).await.unwrap();
        assert_eq!(q.name, name);
        assert!(q.created_at >= before, "{q:?}");
    }
    match admin.create_queue("beta").await {
        Err(Error::QueueAlreadyExists { queue }) => assert_eq!(queue, "beta"),
        other => panic!("duplicate queue: {other:?}"),
    }
    assert_eq!(queue_names(&store).await, ["alpha", "beta", "gamma"]);
    let ids: Vec<i64> = admin
        .list_queues()
        .await
        .unwrap()
        .iter()
        .map(|q| q.id)
        .collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "queue ids must be distinct: {ids:?}");

    // Empty queue metrics.
    let m = metrics(&store, "beta").await;
    assert_eq!(m.queue, "beta");
    assert_eq!(
        (m.ready, m.delayed, m.leased, m.archived, m.dead),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(m.oldest_ready_age_secs, 0.0);

    // Purge removes ready, delayed and leased jobs; keeps the archive and dead letters.
    pgqrs::enqueue()
        .messages((0..5).map(|i| json!(i)))
        .to("beta")
        .execute(&store)
        .await
        .unwrap();
    pgqrs::enqueue()
        .message(&json!("later"))
        .delay(secs(60))
        .to("beta")
        .execute(&store)
        .await
        .unwrap();
    pgqrs::enqueue()
        .message(&json!("other queue"))
        .to("alpha")
        .execute(&store)
        .await
        .unwrap();
    let c = Consumer::new(&store, "beta").await.unwrap();
    let got = c.dequeue(3, Some(secs(30))).await.unwrap();
    assert_eq!(got.len(), 3);
    c.archive(got[0].id).await.unwrap();
    c.fail(got[1].id, "dead on purpose", &pgqrs::RetryPolicy::none())
        .await
        .unwrap();
    // got[2] stays leased.
    assert_eq!(counts(&store, "beta").await, (2, 1, 1, 1, 1));
    let purged = admin.purge_queue("beta").await.unwrap();
    assert_eq!(purged, 4, "2 ready + 1 delayed + 1 leased");
    assert_eq!(counts(&store, "beta").await, (0, 0, 0, 1, 1));
    assert_eq!(
        metrics(&store, "alpha").await.ready,
        1,
        "other queues untouched"
    );
    // The purged job's holder finds its lease gone.
    assert_err!(c.archive(got[2].id).await, Error::LeaseLost { .. });
    assert_eq!(admin.purge_queue("beta").await.unwrap(), 0);

    // Delete removes the queue with its archive and dead letters.
    admin.delete_queue("beta", false).await.unwrap();
    assert_eq!(queue_names(&store).await, ["alpha", "gamma"]);
    assert_err!(
        admin.queue_metrics("beta").await,
        Error::QueueNotFound { .. }
    );
    assert_err!(
        admin.delete_queue("beta", false).await,
        Error::QueueNotFound { .. }
    );
    assert_err!(
        admin.delete_queue("beta", true).await,
        Error::QueueNotFound { .. }
    );
    assert_err!(admin.purge_queue("beta").await, Error::QueueNotFound { .. });
    // A queue of the same name starts empty.
    admin.create_queue("beta").await.unwrap();
    assert_eq!(counts(&store, "beta").await, (0, 0, 0, 0, 0));
    assert!(admin.dead_letters("beta", 10).await.unwrap().is_empty());
    assert!(admin.archived_jobs("beta", 10).await.unwrap().is_empty());
    // Deleting a queue with ready jobs (none leased) needs no force.
    admin.delete_queue("alpha", false).await.unwrap();
    assert_eq!(queue_names(&store).await, ["beta", "gamma"]);
}

/// Deleting a queue is refused while a job is leased, unless forced; an expired lease does not
/// count.
pub async fn delete_refused_while_leased(db: &TestDb) {
    let store = db.store().await;
    let admin = pgqrs::admin(&store);
    admin.create_queue("busy").await.unwrap();
    pgqrs::enqueue()
        .messages([1, 2])
        .to("busy")
        .execute(&store)
        .await
        .unwrap();
    let c = Consumer::new(&store, "busy").await.unwrap();
    let held = c.dequeue(1, Some(secs(30))).await.unwrap();
    assert_eq!(held.len(), 1);
    match admin.delete_queue("busy", false).await {
        Err(Error::QueueInUse { queue, leased }) => {
            assert_eq!((queue.as_str(), leased), ("busy", 1));
        }
        other => panic!("delete with a leased job: {other:?}"),
    }
    assert_eq!(
        counts(&store, "busy").await,
        (1, 0, 1, 0, 0),
        "nothing changed"
    );
    admin
        .delete_queue("busy", true)
        .await
        .expect("forced delete");
    assert!(queue_names(&store).await.is_empty());
    assert_err!(c.archive(held[0].id).await, Error::LeaseLost { .. });

    // An expired lease is not "in use".
    admin.create_queue("expired").await.unwrap();
    pgqrs::enqueue()
        .message(&1)
        .to("expired")
        .execute(&store)
        .await
        .unwrap();
    let c = Consumer::new(&store, "expired").await.unwrap();
    assert_eq!(c.dequeue(1, Some(secs(1))).await.unwrap().len(), 1);
    sleep_ms(1300).await;
    admin
        .delete_queue("expired", false)
        .await
        .expect("delete after the lease expired");
}

/// Bad names are refused with `Error::Validation` before anything is written.
pub async fn queue_name_validation(db: &TestDb) {
    let store = db.store().await;
    let admin = pgqrs::admin(&store);
    let long = "a".repeat(49);
    let bad: Vec<&str> = vec![
        "",
        &long,
        "has space",
        " lead",
        "trail ",
        "semi;colon",
        "x'; DROP TABLE pgqrs_jobs; --",
        "quote\"d",
        "dot.ted",
        "sl/ash",
        "back\\slash",
        "tab\there",
        "new\nline",
        "nul\0byte",
        "ünïcödé",
        "名前",
        "emoji🦀",
        "%",
        "*",
    ];
    for name in &bad {
        match admin.create_queue(name).await {
            Err(Error::Validation { field, message }) => {
                assert_eq!(field, "queue name", "{name:?}");
                assert!(!message.is_empty());
            }
            other => panic!("create_queue({name:?}): expected Validation, got {other:?}"),
        }
        assert_err!(
            pgqrs::enqueue().message(&1).to(*name).execute(&store).await,
            Error::Validation { .. }
        );
        assert_err!(
            pgqrs::dequeue()
                .from(*name)
                .handle(|_m| async { Ok(()) })
                .execute(&store)
                .await,
            Error::Validation { .. }
        );
        assert_err!(admin.queue_metrics(name).await, Error::Validation { .. });
        assert_err!(
            admin.delete_queue(name, true).await,
            Error::Validation { .. }
        );
        assert_err!(admin.purge_queue(name).await, Error::Validation { .. });
        assert_err!(Consumer::new(&store, name).await, Error::Validation { .. });
        let w = pgqrs::worker(*name).handle(|_m| async { Ok(()) });
        assert_err!(w.run(&store).await, Error::Validation { .. });
    }
    assert!(queue_names(&store).await.is_empty(), "nothing was written");
    assert!(
        admin.list_workers().await.unwrap().is_empty(),
        "no worker registered"
    );

    // The edges that are allowed.
    let max = "Z".repeat(48);
    for name in ["a", "9", "A-b_9", "under_score", "da-sh", max.as_str()] {
        admin
            .create_queue(name)
            .await
            .unwrap_or_else(|e| panic!("create_queue({name:?}): {e}"));
    }
    assert_eq!(queue_names(&store).await.len(), 6);
    // Names are case-sensitive.
    admin.create_queue("A").await.expect("'A' differs from 'a'");
}

/// Operations on a queue that does not exist fail with `QueueNotFound` naming it.
pub async fn unknown_queue_errors(db: &TestDb) {
    let store = db.store().await;
    let admin = pgqrs::admin(&store);
    let nf = |r: Result<(), Error>, what: &str| match r {
        Err(Error::QueueNotFound { queue }) => assert_eq!(queue, "nope", "{what}"),
        other => panic!("{what}: expected QueueNotFound, got {other:?}"),
    };
    nf(
        pgqrs::enqueue()
            .message(&1)
            .to("nope")
            .execute(&store)
            .await
            .map(drop),
        "enqueue",
    );
    nf(
        pgqrs::enqueue()
            .messages([1, 2, 3])
            .to("nope")
            .execute(&store)
            .await
            .map(drop),
        "enqueue batch",
    );
    nf(
        pgqrs::enqueue()
            .message(&1)
            .delay(secs(5))
            .to("nope")
            .execute(&store)
            .await
            .map(drop),
        "delayed enqueue",
    );
    nf(
        pgqrs::dequeue()
            .from("nope")
            .handle(|_m| async { Ok(()) })
            .execute(&store)
            .await
            .map(drop),
        "dequeue",
    );
    nf(admin.queue_metrics("nope").await.map(drop), "metrics");
    nf(admin.purge_queue("nope").await.map(drop), "purge");
    nf(admin.delete_queue("nope", false).await, "delete");
    nf(
        admin.dead_letters("nope", 10).await.map(drop),
        "dead_letters",
    );
    nf(
        admin.archived_jobs("nope", 10).await.map(drop),
        "archived_jobs",
    );
    nf(
        admin.requeue_all_dead("nope").await.map(drop),
        "requeue_all_dead",
    );
    nf(
        admin.requeue_dead("nope", &[1]).await.map(drop),
        "requeue_dead",
    );
    nf(
        Consumer::new(&store, "nope").await.map(drop),
        "Consumer::new",
    );
    let w = pgqrs::worker("nope").handle(|_m| async { Ok(()) });
    nf(w.run(&store).await.map(drop), "worker.run");
    assert!(
        admin.list_workers().await.unwrap().is_empty(),
        "no worker registered"
    );
    let e = admin.queue_metrics("nope").await.unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("create_queue"), "{e}");

    // A queue deleted after use is unknown again (no stale cache).
    admin.create_queue("nope").await.unwrap();
    pgqrs::enqueue()
        .message(&1)
        .to("nope")
        .execute(&store)
        .await
        .unwrap();
    admin.delete_queue("nope", false).await.unwrap();
    nf(
        pgqrs::enqueue()
            .message(&2)
            .to("nope")
            .execute(&store)
            .await
            .map(drop),
        "enqueue after delete",
    );
    nf(
        pgqrs::dequeue()
            .from("nope")
            .handle(|_m| async { Ok(()) })
            .execute(&store)
            .await
            .map(drop),
        "dequeue after delete",
    );
}

/// Store A has used queue `q`; store B deletes and re-creates it. A must see the new queue:
/// enqueue into it and claim from it (no stale queue id cache).
pub async fn queue_recreated_by_another_store(db: &TestDb) {
    let a = db.store_with_queue("q").await;
    let b = db.store().await;
    pgqrs::enqueue()
        .message(&json!("old"))
        .to("q")
        .execute(&a)
        .await
        .unwrap();
    let consume = |store: &pgqrs::Store| {
        let store = store.clone();
        async move {
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let s2 = seen.clone();
            let n = pgqrs::dequeue()
                .from("q")
                .batch(10)
                .handle(move |m| {
                    s2.lock().unwrap().push(m.payload);
                    async { Ok(()) }
                })
                .execute(&store)
                .await;
            let seen = seen.lock().unwrap().clone();
            n.map(|_| seen)
        }
    };
    assert_eq!(consume(&a).await.unwrap(), vec![json!("old")]);

    // B deletes the queue: A's dequeue must say so rather than report an empty queue.
    pgqrs::admin(&b).delete_queue("q", false).await.unwrap();
    let after_delete = consume(&a).await;

    // B re-creates it and enqueues: A must see that job, and enqueue on the first try.
    pgqrs::admin(&b).create_queue("q").await.unwrap();
    pgqrs::enqueue()
        .message(&json!("from b"))
        .to("q")
        .execute(&b)
        .await
        .unwrap();
    let after_recreate = consume(&a).await;
    let enqueue_a = pgqrs::enqueue()
        .message(&json!("from a"))
        .to("q")
        .execute(&a)
        .await;
    let m = metrics(&b, "q").await;

    let ok = matches!(after_delete, Err(Error::QueueNotFound { .. }))
        && matches!(&after_recreate, Ok(v) if *v == vec![json!("from b")])
        && enqueue_a.is_ok()
        && m.ready == 1;
    assert!(
        ok,
        "store A keeps using the deleted queue's id:\n  A dequeue after B deleted q: {after_delete:?} \
         (want QueueNotFound)\n  A dequeue after B re-created q and enqueued: {after_recreate:?} \
         (want [\"from b\"])\n  A enqueue after re-creation: {enqueue_a:?} (want Ok)\n  \
         metrics via B: {m:?}"
    );
}
