//! Enqueueing inside the caller's own transaction (`EnqueueBuilder::execute_in`): the jobs
//! exist if and only if that transaction commits. PostgreSQL and SQLite (sqlx); a Turso
//! store refuses with a typed error, since Turso is not sqlx.
//!
//! The caller's transaction is on a pool of the test's own (not the store's), as an
//! application's would be: a PostgreSQL connection straight to the server, or an SQLite
//! connection to the same file, begun with `BEGIN IMMEDIATE`.

use std::time::{Duration, Instant};

use pgqrs::sqlx;
use pgqrs::{Consumer, Error, OnDuplicate, SqlxConnection, Store};
use serde_json::json;

use crate::assert_err;
use crate::common::*;

/// An application's transaction on the test's database.
enum AppTx {
    #[cfg(feature = "postgres")]
    Pg(sqlx::Transaction<'static, sqlx::Postgres>),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl AppTx {
    /// Begin one; `None` on Turso, which has no sqlx connection.
    async fn begin(db: &TestDb) -> Option<AppTx> {
        match db.kind() {
            #[cfg(feature = "postgres")]
            Kind::Postgres => {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&db.server_dsn())
                    .await
                    .expect("app pool");
                Some(AppTx::Pg(pool.begin().await.expect("begin")))
            }
            #[cfg(feature = "sqlite")]
            Kind::Sqlite => {
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(db.sqlite_options())
                    .await
                    .expect("app pool");
                let tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
                Some(AppTx::Sqlite(tx))
            }
            _ => None,
        }
    }

    fn conn(&mut self) -> &mut dyn SqlxConnection {
        match self {
            #[cfg(feature = "postgres")]
            AppTx::Pg(tx) => tx,
            #[cfg(feature = "sqlite")]
            AppTx::Sqlite(tx) => tx,
        }
    }

    /// The application's own write, in the same transaction.
    async fn own_write(&mut self, db: &TestDb, n: i64) {
        let sql = format!("INSERT INTO {} (n) VALUES ({n})", db.table("app_orders"));
        let sql = sqlx::AssertSqlSafe(sql);
        match self {
            #[cfg(feature = "postgres")]
            AppTx::Pg(tx) => sqlx::raw_sql(sql).execute(&mut **tx).await.map(drop),
            #[cfg(feature = "sqlite")]
            AppTx::Sqlite(tx) => sqlx::raw_sql(sql).execute(&mut **tx).await.map(drop),
        }
        .expect("own write");
    }

    async fn commit(self) {
        match self {
            #[cfg(feature = "postgres")]
            AppTx::Pg(tx) => tx.commit().await,
            #[cfg(feature = "sqlite")]
            AppTx::Sqlite(tx) => tx.commit().await,
        }
        .expect("commit");
    }

    async fn rollback(self) {
        match self {
            #[cfg(feature = "postgres")]
            AppTx::Pg(tx) => tx.rollback().await,
            #[cfg(feature = "sqlite")]
            AppTx::Sqlite(tx) => tx.rollback().await,
        }
        .expect("rollback");
    }
}

/// A store with queue `q` and the application's table `app_orders`.
async fn setup(db: &TestDb) -> Store {
    setup_with(db, "").await
}

async fn setup_with(db: &TestDb, params: &str) -> Store {
    let store = db.store_with(params).await;
    pgqrs::admin(&store).create_queue("q").await.unwrap();
    db.exec_raw(&format!(
        "CREATE TABLE {} (n BIGINT NOT NULL)",
        db.table("app_orders")
    ))
    .await;
    store
}

async fn orders(db: &TestDb) -> i64 {
    db.count(&format!("SELECT count(*) FROM {}", db.table("app_orders")))
        .await
}

/// A Turso store refuses, saying why, before it touches anything; so does a store of
/// another backend than the connection's.
async fn refused_on_turso(db: &TestDb, store: &Store) {
    #[cfg(feature = "sqlite")]
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("an SQLite connection");
        let r = pgqrs::enqueue()
            .message(&json!(1))
            .to("q")
            .execute_in(store, &mut c)
            .await;
        assert_err!(&r, Error::Validation { field: "connection", message }
            if message.contains("Turso is not sqlx") && message.contains("PostgreSQL and SQLite"));
    }
    assert_eq!(counts(store, "q").await, (0, 0, 0, 0, 0), "{:?}", db.kind());
}

/// Rolled back: no job, and nothing claimable; committed: every job, with its options,
/// claimable, alongside the application's own write.
pub async fn commit_or_nothing(db: &TestDb) {
    let store = setup(db).await;
    let Some(mut tx) = AppTx::begin(db).await else {
        return refused_on_turso(db, &store).await;
    };
    tx.own_write(db, 1).await;
    let ids = pgqrs::enqueue()
        .message(&json!({"order": 1}))
        .to("q")
        .execute_in(&store, tx.conn())
        .await
        .expect("enqueue in the transaction");
    let batch = pgqrs::enqueue()
        .messages([json!("a"), json!("b"), json!("c")])
        .to("q")
        .execute_in(&store, tx.conn())
        .await
        .expect("batch in the transaction");
    assert_eq!(batch.len(), 3);
    assert!(batch.windows(2).all(|w| w[0] < w[1]), "{batch:?}");
    // Not visible outside the transaction before it ends.
    assert_err!(
        pgqrs::admin(&store).get_job(ids[0]).await,
        Error::JobNotFound { .. }
    );
    tx.rollback().await;
    assert_eq!(counts(&store, "q").await, (0, 0, 0, 0, 0));
    assert_eq!(orders(db).await, 0);
    for id in ids.iter().chain(&batch) {
        assert_err!(
            pgqrs::admin(&store).get_job(*id).await,
            Error::JobNotFound { .. }
        );
    }
    let c = Consumer::new(&store, "q").await.unwrap();
    assert!(c.dequeue(10, None).await.unwrap().is_empty());

    // Committed: the jobs and the application's row, together.
    let mut tx = AppTx::begin(db).await.expect("a second transaction");
    tx.own_write(db, 2).await;
    let ids = pgqrs::enqueue()
        .message(&json!({"order": 2}))
        .priority(7)
        .max_attempts(9)
        .timeout(Duration::from_millis(1500))
        .to("q")
        .execute_in(&store, tx.conn())
        .await
        .unwrap();
    let later = pgqrs::enqueue()
        .message(&json!("later"))
        .delay(Duration::from_secs(3600))
        .to("q")
        .execute_in(&store, tx.conn())
        .await
        .unwrap();
    tx.commit().await;
    assert_eq!(orders(db).await, 1);
    assert_eq!(counts(&store, "q").await, (1, 1, 0, 0, 0));
    let got = c.dequeue(10, None).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].id, ids[0]);
    assert_eq!(got[0].payload, json!({"order": 2}));
    assert_eq!(got[0].priority, 7);
    assert_eq!(got[0].max_attempts, 9);
    assert_eq!(got[0].timeout, Some(Duration::from_millis(1500)));
    let delayed = pgqrs::admin(&store).get_job(later[0]).await.unwrap();
    assert_eq!(delayed.state, pgqrs::JobState::Delayed);
}

/// The builder's checks and defaults are the same on a caller's connection: a bad option is
/// a typed error and the transaction goes on; the store's default max_attempts applies; an
/// unknown queue is QueueNotFound; a queue created in the same transaction is found.
pub async fn same_checks_and_defaults(db: &TestDb) {
    let store = setup_with(db, "max_attempts=6").await;
    let Some(mut tx) = AppTx::begin(db).await else {
        return refused_on_turso(db, &store).await;
    };
    let bad = pgqrs::enqueue()
        .message(&json!(1))
        .priority(40_000)
        .to("q")
        .execute_in(&store, tx.conn())
        .await;
    assert_err!(
        bad,
        Error::Validation {
            field: "priority",
            ..
        }
    );
    let none = pgqrs::enqueue()
        .message(&json!(1))
        .to("q")
        .execute_in(&store, tx.conn())
        .await;
    assert!(none.is_ok(), "{none:?}");
    let both = pgqrs::enqueue()
        .message(&json!(1))
        .delay(Duration::from_secs(1))
        .at(chrono::Utc::now())
        .to("q")
        .execute_in(&store, tx.conn())
        .await;
    assert_err!(both, Error::Validation { field: "delay", .. });
    let empty = pgqrs::enqueue().to("q").execute_in(&store, tx.conn()).await;
    assert_eq!(empty.unwrap(), Vec::<i64>::new());
    let missing = pgqrs::enqueue()
        .message(&json!(1))
        .to("no-such-queue")
        .execute_in(&store, tx.conn())
        .await;
    assert_err!(missing, Error::QueueNotFound { queue } if queue == "no-such-queue");
    tx.own_write(db, 1).await;
    tx.commit().await;
    let job = pgqrs::admin(&store)
        .get_job(none.unwrap()[0])
        .await
        .unwrap();
    assert_eq!(job.max_attempts, Some(6), "the store's max_attempts");
    assert_eq!(
        orders(db).await,
        1,
        "the transaction went on after the errors"
    );

    // PostgreSQL: a connection in no transaction works like the store (each statement
    // commits; a keyed batch in a transaction of its own); one in a transaction sqlx did not
    // begin (a raw BEGIN) cannot hold the savepoint a keyed batch needs, and says so.
    #[cfg(feature = "postgres")]
    if db.is_postgres() {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&db.server_dsn()).await.unwrap();
        let ids = pgqrs::enqueue()
            .messages([json!("b1"), json!("b2")])
            .keys(["b1", "b2"])
            .to("q")
            .execute_in(&store, &mut c)
            .await
            .unwrap();
        pgqrs::admin(&store).get_job(ids[1]).await.unwrap();
        sqlx::raw_sql("BEGIN").execute(&mut c).await.unwrap();
        let r = pgqrs::enqueue()
            .messages([json!("b3"), json!("b4")])
            .keys(["b3", "b4"])
            .to("q")
            .execute_in(&store, &mut c)
            .await;
        assert_err!(r, Error::Validation { field: "connection", message }
            if message.contains("raw BEGIN"));
        let one = pgqrs::enqueue()
            .message(&json!("b5"))
            .key("b5")
            .to("q")
            .execute_in(&store, &mut c)
            .await
            .unwrap();
        sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap();
        assert_err!(
            pgqrs::admin(&store).get_job(one[0]).await,
            Error::JobNotFound { .. }
        );
        let _ = c.close().await;
    }

    // A connection of another backend than the store's.
    #[cfg(all(feature = "postgres", feature = "sqlite"))]
    if db.is_postgres() {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let r = pgqrs::enqueue()
            .message(&json!(1))
            .to("q")
            .execute_in(&store, &mut c)
            .await;
        assert_err!(r, Error::Validation { field: "connection", message }
            if message.contains("sqlite connection") && message.contains("postgres store"));
    }
}

/// Unique keys in a transaction: the key holds within it and after the commit; with
/// `OnDuplicate::Error` a taken key fails the enqueue (and, for a batch, leaves nothing of
/// it) while the transaction goes on.
pub async fn keyed_in_transaction(db: &TestDb) {
    let store = setup(db).await;
    let Some(mut tx) = AppTx::begin(db).await else {
        return refused_on_turso(db, &store).await;
    };
    let first = pgqrs::enqueue()
        .message(&json!("k1"))
        .key("k1")
        .to("q")
        .execute_in(&store, tx.conn())
        .await
        .unwrap();
    let again = pgqrs::enqueue()
        .message(&json!("k1 again"))
        .key("k1")
        .to("q")
        .execute_in(&store, tx.conn())
        .await
        .unwrap();
    assert_eq!(first, again, "the key is held inside the transaction");
    let strict = pgqrs::enqueue()
        .message(&json!("k1 strict"))
        .key("k1")
        .on_duplicate(OnDuplicate::Error)
        .to("q")
        .execute_in(&store, tx.conn())
        .await;
    assert_err!(strict, Error::DuplicateJob { existing_id, .. } if existing_id == first[0]);
    // A batch with one taken key: nothing of it stays.
    let batch = pgqrs::enqueue()
        .messages([json!("k2"), json!("k1"), json!("k3")])
        .keys(["k2", "k1", "k3"])
        .on_duplicate(OnDuplicate::Error)
        .to("q")
        .execute_in(&store, tx.conn())
        .await;
    assert_err!(batch, Error::DuplicateJob { existing_id, .. } if existing_id == first[0]);
    let batch = pgqrs::enqueue()
        .messages([json!("k4"), json!("k1"), json!(null)])
        .keys([Some("k4"), Some("k1"), None])
        .to("q")
        .execute_in(&store, tx.conn())
        .await
        .unwrap();
    assert_eq!(batch[1], first[0]);
    tx.own_write(db, 1).await;
    tx.commit().await;
    assert_eq!(orders(db).await, 1);
    // k1, k4 and the keyless one; not k2 or k3.
    assert_eq!(counts(&store, "q").await, (3, 0, 0, 0, 0));
    let outside = pgqrs::enqueue()
        .message(&json!("k1 from the store"))
        .key("k1")
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    assert_eq!(outside, first, "the committed job holds its key");

    // Rolled back: the key is free again.
    let mut tx = AppTx::begin(db).await.unwrap();
    let gone = pgqrs::enqueue()
        .message(&json!("k5"))
        .key("k5")
        .to("q")
        .execute_in(&store, tx.conn())
        .await
        .unwrap();
    tx.rollback().await;
    assert_err!(
        pgqrs::admin(&store).get_job(gone[0]).await,
        Error::JobNotFound { .. }
    );
    let fresh = pgqrs::enqueue()
        .message(&json!("k5 from the store"))
        .key("k5")
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    // (SQLite may give the new job the rolled-back one's id: the rollback undid that too.)
    let job = pgqrs::admin(&store).get_job(fresh[0]).await.unwrap();
    assert_eq!(job.payload, json!("k5 from the store"));
    assert_eq!(counts(&store, "q").await, (4, 0, 0, 0, 0));
}

/// An idle worker polling every 10 s gets a job enqueued in a transaction within a second
/// of the commit, and nothing on a rollback (PostgreSQL: the NOTIFY is delivered at the
/// commit; SQLite: the change watcher sees the commit).
pub async fn idle_worker_wakes_at_commit(db: &TestDb) {
    let store = setup(db).await;
    let (sent, mut started) = tokio::sync::mpsc::unbounded_channel();
    let w = pgqrs::worker("q").poll_interval(secs(10)).handle(move |m| {
        let _ = sent.send((m.id, Instant::now()));
        async { Ok(()) }
    });
    let (stop, run) = spawn_worker(&store, w);
    eventually(secs(10), "the worker is running", || async {
        pgqrs::admin(&store)
            .list_workers()
            .await
            .unwrap()
            .iter()
            .any(|w| w.status == pgqrs::WorkerStatus::Running)
    })
    .await;
    #[cfg(feature = "postgres")]
    if let Some(schema) = db.schema() {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %pgqrs_{schema}%'"
        );
        eventually(secs(10), "the worker's store listens", || async {
            db.pg_count(&sql).await > 0
        })
        .await;
    }
    sleep_ms(500).await;

    let mut tx = AppTx::begin(db).await.expect("PostgreSQL or SQLite");
    pgqrs::enqueue()
        .message(&json!("rolled back"))
        .to("q")
        .execute_in(&store, tx.conn())
        .await
        .unwrap();
    tx.rollback().await;
    let mut tx = AppTx::begin(db).await.unwrap();
    let id = pgqrs::enqueue()
        .message(&json!("committed"))
        .to("q")
        .execute_in(&store, tx.conn())
        .await
        .unwrap()[0];
    sleep_ms(300).await;
    assert!(
        started.try_recv().is_err(),
        "a worker started a job before its transaction committed"
    );
    let committed = Instant::now();
    tx.commit().await;
    let (got, at) = tokio::time::timeout(secs(2), started.recv())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "[{:?}] the job committed in a transaction did not start within 2 s (poll \
                 interval 10 s): the idle worker was not woken",
                db.kind()
            )
        })
        .expect("worker alive");
    assert_eq!(got, id);
    eprintln!(
        "tx wake-up [{:?}]: started {:?} after the commit",
        db.kind(),
        at - committed
    );
    stop.shutdown();
    let stats = run.await.unwrap().unwrap();
    assert_eq!(stats.succeeded, 1, "only the committed job ran: {stats:?}");
}
