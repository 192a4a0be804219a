//! Retention: per-queue settings for the archive and dead letters, the store's setting for
//! finished workflow runs, pruning on demand and by running workers.

use std::time::Duration;

use pgqrs::{Error, Pruned, QueueOptions, Retention};

use crate::assert_err;
use crate::common::*;

/// Microseconds since the epoch, as the SQLite dialect stores times.
fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A time `age` seconds ago, as an SQL expression of the test's backend.
fn ago(db: &TestDb, age: u64) -> String {
    if db.is_postgres() {
        format!("now() - interval '{age} seconds'")
    } else {
        (now_us() - age as i64 * 1_000_000).to_string()
    }
}

/// Ids of the history written by [`add_history`] start here, above the jobs' own ids (a job
/// keeps its id in the archive and the dead letters).
const HISTORY_IDS: i64 = 1_000_000;

/// Add `n` archived jobs and `n` dead letters to `queue`, finished `age` seconds ago, with ids
/// from `HISTORY_IDS + first`.
async fn add_history(db: &TestDb, queue_id: i64, first: i64, n: i64, age: u64) {
    let (archive, dead) = (db.table("pgqrs_archive"), db.table("pgqrs_dead"));
    let first = HISTORY_IDS + first;
    let at = ago(db, age);
    let last = first + n - 1;
    if db.is_postgres() {
        db.exec_raw(&format!(
            "INSERT INTO {archive} (id, queue_id, payload, attempts, enqueued_at, archived_at)
             SELECT n, {queue_id}, '{{}}', 1, now(), {at} FROM generate_series({first}, {last}) n;
             INSERT INTO {dead} (id, queue_id, payload, attempts, max_attempts, enqueued_at, failed_at, last_error)
             SELECT n, {queue_id}, '{{}}', 3, 3, now(), {at}, 'boom' FROM generate_series({first}, {last}) n;"
        ))
        .await;
        return;
    }
    // Plain multi-row inserts (both engines of the SQLite dialect), 500 rows each.
    let enq = now_us();
    let mut sql = String::new();
    let ids: Vec<i64> = (first..=last).collect();
    for chunk in ids.chunks(500) {
        let rows =
            |f: &dyn Fn(i64) -> String| chunk.iter().map(|&i| f(i)).collect::<Vec<_>>().join(", ");
        sql.push_str(&format!(
            "INSERT INTO {archive} (id, queue_id, payload, attempts, enqueued_at, archived_at) VALUES {};\n",
            rows(&|i| format!("({i}, {queue_id}, '{{}}', 1, {enq}, {at})"))
        ));
        sql.push_str(&format!(
            "INSERT INTO {dead} (id, queue_id, payload, attempts, max_attempts, enqueued_at, failed_at, last_error) VALUES {};\n",
            rows(&|i| format!("({i}, {queue_id}, '{{}}', 3, 3, {enq}, {at}, 'boom')"))
        ));
    }
    db.exec_raw(&sql).await;
}

/// Add a workflow run of `status`, finished `age` seconds ago when finished, with two steps;
/// its id.
async fn add_run(db: &TestDb, store: &pgqrs::Store, status: &str, age: u64) -> i64 {
    let run = pgqrs::admin(store)
        .create_workflow("wf", &serde_json::json!({}))
        .await
        .unwrap();
    let id = run.id();
    let (runs, steps) = (
        db.table("pgqrs_workflow_runs"),
        db.table("pgqrs_workflow_steps"),
    );
    let finished = if matches!(status, "succeeded" | "failed" | "cancelled") {
        ago(db, age)
    } else {
        "NULL".into()
    };
    let now = if db.is_postgres() {
        "now()".to_string()
    } else {
        now_us().to_string()
    };
    db.exec_raw(&format!(
        "UPDATE {runs} SET status = '{status}', finished_at = {finished} WHERE id = {id};
         INSERT INTO {steps} (run_id, position, name, status, attempts, created_at, updated_at)
         VALUES ({id}, 0, 'a', 'succeeded', 1, {now}, {now}), ({id}, 1, 'b', 'succeeded', 1, {now}, {now});"
    ))
    .await;
    id
}

async fn queue(store: &pgqrs::Store, name: &str) -> pgqrs::QueueInfo {
    pgqrs::admin(store)
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .find(|q| q.name == name)
        .unwrap_or_else(|| panic!("queue {name}"))
}

/// A queue gets the core's retention defaults unless told otherwise; settings can be changed
/// one at a time; the store's workflow retention starts at its default; bad values are
/// refused with a typed error naming the setting, and change nothing.
pub async fn retention_settings(db: &TestDb) {
    let store = db.store().await;
    let admin = pgqrs::admin(&store);
    let q = admin.create_queue("plain").await.unwrap();
    assert_eq!(q.archive_retention, pgqrs::DEFAULT_ARCHIVE_RETENTION);
    assert_eq!(q.dead_retention, pgqrs::DEFAULT_DEAD_RETENTION);
    assert_eq!(q.archive_retention, Retention::days(7));
    assert_eq!(q.dead_retention, Retention::days(30));

    let q = admin
        .create_queue_with(
            "custom",
            QueueOptions::new()
                .archive_retention(Retention::secs(3600))
                .dead_retention(Retention::Forever),
        )
        .await
        .unwrap();
    assert_eq!(
        (q.archive_retention, q.dead_retention),
        (Retention::secs(3600), Retention::Forever)
    );
    assert_eq!(queue(&store, "custom").await, q, "read back as created");

    // One setting changed, the other kept; a fraction of a second is rounded up.
    let q = admin
        .set_queue_retention(
            "custom",
            None,
            Some(Retention::For(Duration::from_millis(1500))),
        )
        .await
        .unwrap();
    assert_eq!(
        (q.archive_retention, q.dead_retention),
        (Retention::secs(3600), Retention::secs(2))
    );
    let q = admin
        .set_queue_retention("custom", Some(Retention::Forever), None)
        .await
        .unwrap();
    assert_eq!(
        (q.archive_retention, q.dead_retention),
        (Retention::Forever, Retention::secs(2))
    );
    assert_eq!(queue(&store, "custom").await, q);

    for bad in [
        Retention::For(Duration::ZERO),
        Retention::For(Duration::from_millis(500)),
        Retention::For(pgqrs::MAX_RETENTION + Duration::from_secs(1)),
    ] {
        assert_err!(
            admin
                .create_queue_with("bad", QueueOptions::new().archive_retention(bad))
                .await,
            Error::Validation { field: "archive_retention", ref message } if message.contains("forever")
        );
        assert_err!(
            admin
                .create_queue_with("bad", QueueOptions::new().dead_retention(bad))
                .await,
            Error::Validation {
                field: "dead_retention",
                ..
            }
        );
        assert_err!(
            admin.set_queue_retention("custom", Some(bad), None).await,
            Error::Validation {
                field: "archive_retention",
                ..
            }
        );
        assert_err!(
            admin.set_workflow_retention(bad).await,
            Error::Validation {
                field: "workflow_retention",
                ..
            }
        );
    }
    assert!(
        !admin
            .list_queues()
            .await
            .unwrap()
            .iter()
            .any(|q| q.name == "bad"),
        "nothing created"
    );
    assert_eq!(queue(&store, "custom").await, q, "nothing changed");
    assert_err!(
        admin
            .set_queue_retention("nope", Some(Retention::secs(5)), None)
            .await,
        Error::QueueNotFound { .. }
    );
    assert_err!(
        admin.prune(None, Some(pgqrs::MAX_RETENTION * 2)).await,
        Error::Validation {
            field: "older_than",
            ..
        }
    );
    assert_err!(
        admin.prune(Some("nope"), None).await,
        Error::QueueNotFound { .. }
    );

    assert_eq!(
        admin.workflow_retention().await.unwrap(),
        pgqrs::DEFAULT_WORKFLOW_RETENTION
    );
    admin
        .set_workflow_retention(Retention::days(90))
        .await
        .unwrap();
    assert_eq!(
        admin.workflow_retention().await.unwrap(),
        Retention::days(90)
    );
    admin
        .set_workflow_retention(Retention::Forever)
        .await
        .unwrap();
    assert_eq!(
        admin.workflow_retention().await.unwrap(),
        Retention::Forever
    );
}

/// `prune` deletes what is past each queue's retention and keeps the rest; a queue kept
/// forever keeps everything; `older_than` replaces the settings; a named queue leaves the
/// others (and the workflow runs) alone.
pub async fn prune_on_demand(db: &TestDb) {
    let store = db.store().await;
    let admin = pgqrs::admin(&store);
    let hour = QueueOptions::new()
        .archive_retention(Retention::secs(3600))
        .dead_retention(Retention::secs(7200));
    let a = admin.create_queue_with("a", hour).await.unwrap();
    let keep = admin
        .create_queue_with(
            "keep",
            QueueOptions::new()
                .archive_retention(Retention::Forever)
                .dead_retention(Retention::Forever),
        )
        .await
        .unwrap();
    add_history(db, a.id, 1, 5, 3 * 3600).await; // past both retentions
    add_history(db, a.id, 101, 4, 5400).await; // past the archive's only
    add_history(db, a.id, 201, 3, 60).await; // recent
    add_history(db, keep.id, 301, 6, 30 * 86_400).await;
    assert_eq!(counts(&store, "a").await, (0, 0, 0, 12, 12));

    let p = admin.prune(None, None).await.unwrap();
    assert_eq!(
        p,
        Pruned {
            archived: 9,
            dead: 5,
            workflow_runs: 0
        }
    );
    assert_eq!(p.total(), 14);
    assert_eq!(counts(&store, "a").await, (0, 0, 0, 3, 7));
    assert_eq!(counts(&store, "keep").await, (0, 0, 0, 6, 6));
    let left: Vec<i64> = admin
        .archived_jobs("a", 100)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(
        left,
        [203, 202, 201].map(|i| HISTORY_IDS + i),
        "the recent ones stay"
    );
    assert_eq!(admin.prune(None, None).await.unwrap(), Pruned::default());

    // older_than replaces the settings, also "forever"; a named queue only.
    let p = admin
        .prune(Some("keep"), Some(Duration::from_secs(86_400)))
        .await
        .unwrap();
    assert_eq!((p.archived, p.dead), (6, 6));
    assert_eq!(counts(&store, "a").await, (0, 0, 0, 3, 7));
    let p = admin.prune(Some("a"), Some(Duration::ZERO)).await.unwrap();
    assert_eq!((p.archived, p.dead), (3, 7));
    assert_eq!(counts(&store, "a").await, (0, 0, 0, 0, 0));

    // Jobs and dead letters of the live path are untouched by pruning.
    pgqrs::enqueue()
        .messages(0..3)
        .to("a")
        .execute(&store)
        .await
        .unwrap();
    admin.prune(None, Some(Duration::ZERO)).await.unwrap();
    assert_eq!(counts(&store, "a").await, (3, 0, 0, 0, 0));
}

/// Many rows are deleted in batches until none is left (more than one statement's worth).
pub async fn prune_in_batches(db: &TestDb) {
    let store = db.store().await;
    let admin = pgqrs::admin(&store);
    let q = admin
        .create_queue_with(
            "q",
            QueueOptions::new().archive_retention(Retention::secs(60)),
        )
        .await
        .unwrap();
    add_history(db, q.id, 1, 2_500, 3600).await;
    add_history(db, q.id, 10_001, 10, 1).await;
    let p = admin.prune(Some("q"), None).await.unwrap();
    assert_eq!(p.archived, 2_500);
    assert_eq!(p.dead, 0, "dead letters keep the 30-day default");
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 10, 2_510));
}

/// Finished workflow runs go with their steps once past the store's retention (kept forever
/// by default); pending and running runs stay whatever their age; a run request for a run
/// that was pruned is done, not an error.
pub async fn prune_finished_runs(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    let admin = pgqrs::admin(&store);
    let old_ok = add_run(db, &store, "succeeded", 7200).await;
    let old_failed = add_run(db, &store, "failed", 7200).await;
    let old_cancelled = add_run(db, &store, "cancelled", 7200).await;
    let recent = add_run(db, &store, "succeeded", 10).await;
    let running = add_run(db, &store, "running", 0).await;
    let pending = add_run(db, &store, "pending", 0).await;

    assert_eq!(
        admin.prune(None, None).await.unwrap().workflow_runs,
        0,
        "kept forever by default"
    );
    admin
        .set_workflow_retention(Retention::secs(3600))
        .await
        .unwrap();
    assert_eq!(
        admin.prune(Some("q"), None).await.unwrap().workflow_runs,
        0,
        "a prune of one queue leaves the runs alone"
    );
    let p = admin.prune(None, None).await.unwrap();
    assert_eq!(p.workflow_runs, 3);
    for id in [old_ok, old_failed, old_cancelled] {
        assert_err!(admin.workflow_run(id).await, Error::WorkflowNotFound { .. });
        assert_err!(
            admin.workflow_steps(id).await,
            Error::WorkflowNotFound { .. }
        );
    }
    for id in [recent, running, pending] {
        assert_eq!(admin.workflow_steps(id).await.unwrap().len(), 2);
    }
    if db.is_postgres() {
        let n = db
            .pg_count(&format!(
                "SELECT count(*) FROM {}",
                db.table("pgqrs_workflow_steps")
            ))
            .await;
        assert_eq!(n, 6, "the pruned runs' steps are gone");
    }

    // Even `older_than=0` leaves unfinished runs.
    let p = admin.prune(None, Some(Duration::ZERO)).await.unwrap();
    assert_eq!(p.workflow_runs, 1);
    assert_eq!(admin.list_workflows(None, 100).await.unwrap().len(), 2);

    // A run request whose run was pruned is done.
    let msg = pgqrs::Message {
        id: 1,
        queue: "q".into(),
        payload: serde_json::json!({ "workflow_run": old_ok }),
        attempts: 1,
        max_attempts: 1,
        enqueued_at: chrono::Utc::now(),
        visible_at: chrono::Utc::now(),
        last_error: None,
        lease_token: 1,
        priority: 0,
        timeout: None,
    };
    assert!(pgqrs::Workflow::for_job(&store, &msg)
        .await
        .unwrap()
        .is_none());
}

/// A running worker prunes its queue's archive and dead letters, and finished runs, in the
/// background, and leaves other queues alone.
pub async fn worker_prunes_in_background(db: &TestDb) {
    let store = db.store().await;
    let admin = pgqrs::admin(&store);
    let q = admin
        .create_queue_with(
            "q",
            QueueOptions::new()
                .archive_retention(Retention::secs(1))
                .dead_retention(Retention::secs(3600)),
        )
        .await
        .unwrap();
    let other = admin
        .create_queue_with(
            "other",
            QueueOptions::new()
                .archive_retention(Retention::secs(1))
                .dead_retention(Retention::secs(1)),
        )
        .await
        .unwrap();
    add_history(db, q.id, 1, 1_500, 7200).await; // archive and dead letters past retention
    add_history(db, other.id, 5_001, 5, 7200).await;
    admin
        .set_workflow_retention(Retention::secs(60))
        .await
        .unwrap();
    let old_run = add_run(db, &store, "succeeded", 600).await;
    let new_run = add_run(db, &store, "succeeded", 0).await;
    pgqrs::enqueue()
        .messages(0..5)
        .to("q")
        .execute(&store)
        .await
        .unwrap();

    let w = pgqrs::worker("q")
        .poll_interval(ms(20))
        .prune_interval(ms(100))
        .handle(|_m| async { Ok(()) });
    let (stop, run) = spawn_worker(&store, w);
    eventually(
        secs(30),
        "the worker's jobs archived and then pruned, and the old dead letters gone",
        || async { counts(&store, "q").await == (0, 0, 0, 0, 0) },
    )
    .await;
    eventually(secs(10), "the old finished run pruned", || async {
        admin.workflow_run(old_run).await.is_err()
    })
    .await;
    admin
        .workflow_run(new_run)
        .await
        .expect("a run within its retention stays");
    assert_eq!(
        counts(&store, "other").await,
        (0, 0, 0, 5, 5),
        "another queue's history is its own workers' to prune"
    );
    stop.shutdown();
    let stats = run.await.unwrap().unwrap();
    assert_eq!(stats.succeeded, 5);
}

/// Several stores pruning one large history at once delete every row exactly once, without
/// errors (no lock waits or deadlocks between them), and so do several workers.
pub async fn concurrent_prunes(db: &TestDb) {
    let store = db.store().await;
    let q = pgqrs::admin(&store)
        .create_queue_with(
            "q",
            QueueOptions::new()
                .archive_retention(Retention::secs(60))
                .dead_retention(Retention::secs(60)),
        )
        .await
        .unwrap();
    add_history(db, q.id, 1, 4_000, 3600).await;
    let mut stores = vec![store.clone()];
    if !db.is_turso() {
        // Turso: one process's stores share the database; one is enough.
        for _ in 0..3 {
            stores.push(db.connect().await);
        }
    }
    let mut tasks = Vec::new();
    for (i, s) in stores.iter().cycle().take(4).enumerate() {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                pgqrs::admin(&s).prune(Some("q"), None).await
            } else {
                pgqrs::admin(&s).prune(None, None).await
            }
        }));
    }
    let mut total = Pruned::default();
    for t in tasks {
        let p = t.await.unwrap().expect("concurrent prune");
        total.archived += p.archived;
        total.dead += p.dead;
    }
    assert_eq!((total.archived, total.dead), (4_000, 4_000));
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 0, 0));

    // Four workers pruning the same queue at once.
    add_history(db, q.id, 10_001, 3_000, 3600).await;
    let mut running = Vec::new();
    for s in stores.iter().cycle().take(4) {
        let w = pgqrs::worker("q")
            .poll_interval(ms(50))
            .prune_interval(ms(50))
            .handle(|_m| async { Ok(()) });
        running.push(spawn_worker(s, w));
    }
    eventually(secs(30), "the history pruned by four workers", || async {
        counts(&store, "q").await == (0, 0, 0, 0, 0)
    })
    .await;
    for (stop, run) in running {
        stop.shutdown();
        run.await.unwrap().expect("a pruning worker ends cleanly");
    }
}
