//! Connecting: bad connection strings, unreachable databases, a closed store.

use std::time::Duration;

use pgqrs::Error;
use serde_json::json;

use crate::assert_err;
use crate::common::*;

/// Connection strings rejected before any I/O, and databases that can't be reached.
pub async fn connect_errors(db: &TestDb) {
    type Check = fn(&Error) -> bool;
    let table: Vec<(&str, Check)> = vec![
        ("", |e| matches!(e, Error::InvalidDsn { .. })),
        ("   ", |e| matches!(e, Error::InvalidDsn { .. })),
        ("jobs.db", |e| matches!(e, Error::InvalidDsn { .. })),
        (
            "mysql://user@host/db",
            |e| matches!(e, Error::InvalidDsn { reason, .. } if reason.contains("mysql")),
        ),
        (
            "redis://localhost:6379",
            |e| matches!(e, Error::InvalidDsn { reason, .. } if reason.contains("redis")),
        ),
        (
            "postgresql://h/db?pool_size=many",
            |e| matches!(e, Error::InvalidDsn { reason, .. } if reason.contains("pool_size")),
        ),
        ("postgresql://h/db?schema=a;drop", |e| {
            matches!(
                e,
                Error::Validation {
                    field: "schema",
                    ..
                }
            )
        }),
        ("sqlite::memory:?max_attempts=0", |e| {
            matches!(
                e,
                Error::Validation {
                    field: "max_attempts",
                    ..
                }
            )
        }),
        ("sqlite::memory:?synchronous=sometimes", |e| {
            matches!(e, Error::InvalidDsn { .. })
        }),
    ];
    #[allow(unused_mut)]
    let mut table = table;
    #[cfg(not(feature = "sqlite"))]
    table.push(("sqlite::memory:", |e| {
        matches!(
            e,
            Error::BackendNotEnabled {
                feature: "sqlite",
                ..
            }
        )
    }));
    #[cfg(not(feature = "turso"))]
    table.push((
        "turso://jobs.db",
        |e| matches!(e, Error::BackendNotEnabled { scheme, feature: "turso" } if scheme == "turso"),
    ));
    #[cfg(feature = "turso")]
    table.push((
        "turso://jobs.db?mode=rwc",
        |e| matches!(e, Error::InvalidDsn { reason, .. } if reason.contains("mode")),
    ));
    #[cfg(not(feature = "postgres"))]
    table.push(("postgresql://u@h/db", |e| {
        matches!(
            e,
            Error::BackendNotEnabled {
                feature: "postgres",
                ..
            }
        )
    }));
    for (dsn, check) in table {
        let r = tokio::time::timeout(secs(10), pgqrs::connect(dsn))
            .await
            .unwrap_or_else(|_| panic!("connect({dsn:?}) hung"));
        match r {
            Err(e) if check(&e) => {
                // Every message says what was wrong: the scheme or the feature is named.
                let text = e.to_string();
                assert!(!text.is_empty());
                if let Error::BackendNotEnabled { feature, .. } = &e {
                    assert!(text.contains(feature) && text.contains("feature"), "{text}");
                }
            }
            other => panic!("connect({dsn:?}): unexpected {other:?}"),
        }
    }

    // A password never appears in an error message.
    let e = pgqrs::connect("mysql://user:s3cret@host/db")
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("s3cret"), "{e}");

    // An unreachable database fails with a connection error naming where it looked, in
    // bounded time (the guard is far above the default 5 s connect timeout).
    if db.is_postgres() {
        #[cfg(feature = "postgres")]
        {
            let dsn = "postgresql://postgres@127.0.0.1:1/x";
            let r = tokio::time::timeout(secs(30), pgqrs::connect(dsn))
                .await
                .expect("connecting to a closed port must not hang");
            match r {
                Err(e @ Error::Connection { .. }) => {
                    let Error::Connection { target, .. } = &e else {
                        unreachable!()
                    };
                    assert!(
                        target.contains("127.0.0.1") && target.contains(":1"),
                        "{target}"
                    );
                    let text = e.to_string();
                    assert!(text.contains("127.0.0.1:1"), "{text}");
                    assert!(e.is_transient());
                }
                other => panic!("connect({dsn}): expected Error::Connection, got {other:?}"),
            }
        }
    } else {
        // A file in a directory that does not exist.
        let scheme = if db.is_turso() { "turso" } else { "sqlite" };
        let dsn = &format!("{scheme}:///nonexistent-pgqrs-dir/sub/t.db");
        let r = tokio::time::timeout(secs(30), async {
            let s = pgqrs::connect(dsn).await?;
            pgqrs::admin(&s).install().await
        })
        .await
        .expect("must not hang");
        match r {
            Err(e @ Error::Connection { .. }) => {
                assert!(e.to_string().contains("nonexistent-pgqrs-dir"), "{e}");
            }
            other => panic!("{dsn}: expected Error::Connection, got {other:?}"),
        }
        // In-memory databases work.
        let s = pgqrs::connect(&format!("{scheme}::memory:"))
            .await
            .expect("in-memory database");
        pgqrs::admin(&s).install().await.expect("install in memory");
        pgqrs::admin(&s)
            .create_queue("m")
            .await
            .expect("create_queue in memory");
        pgqrs::enqueue()
            .message(&1)
            .to("m")
            .execute(&s)
            .await
            .expect("enqueue in memory");
        assert_eq!(metrics(&s, "m").await.ready, 1);
    }

    // The test's own database connects, and reports its backend.
    let store = db.connect().await;
    let expected = if db.is_postgres() {
        pgqrs::BackendKind::Postgres
    } else if db.is_turso() {
        pgqrs::BackendKind::Turso
    } else {
        pgqrs::BackendKind::Sqlite
    };
    assert_eq!(store.backend(), expected);
}

/// `connect(dsn)` fails with `Error::Connection` whose message contains each of `says` and
/// none of the misleading or leaked texts; the message.
async fn connection_failure(dsn: &str, says: &[&str]) -> String {
    let r = tokio::time::timeout(secs(30), async {
        let s = pgqrs::connect(dsn).await?;
        pgqrs::admin(&s).install().await
    })
    .await
    .unwrap_or_else(|_| panic!("connect({dsn}) hung"));
    let e = match r {
        Err(e @ Error::Connection { .. }) => e,
        other => panic!("connect({dsn}): expected Error::Connection, got {other:?}"),
    };
    let text = e.to_string();
    for want in says {
        assert!(
            text.contains(want),
            "connect({dsn}): {want:?} not in: {text}"
        );
    }
    // A cause other than an unreachable server does not ask whether the server runs; the
    // driver's rendering of a server error (its source file and line) is not passed on.
    if !says.contains(&"running") {
        assert!(!text.contains("running"), "connect({dsn}): {text}");
    }
    assert!(!text.contains("reachable?"), "connect({dsn}): {text}");
    for leak in [" at line ", "error returned from database", ".c:"] {
        assert!(
            !text.contains(leak),
            "connect({dsn}) leaks {leak:?}: {text}"
        );
    }
    eprintln!("connect({dsn}): {text}");
    text
}

/// Each way of failing to connect says what is actually wrong and how to fix it.
pub async fn connect_failures_say_why(db: &TestDb) {
    if db.is_postgres() {
        #[cfg(feature = "postgres")]
        {
            // The server itself, not a pooler in front of it.
            let server = std::env::var("PGQRS_TEST_DSN").expect("PGQRS_TEST_DSN");
            let (base, query) = server.split_once('?').unwrap_or((&server, ""));
            let (hostpart, _db) = base.rsplit_once('/').expect("a database in PGQRS_TEST_DSN");
            let with = |user: Option<&str>, database: &str| {
                let mut h = hostpart.to_string();
                if let Some(u) = user {
                    let (scheme, rest) = h.split_once("://").unwrap();
                    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
                    h = format!("{scheme}://{u}@{rest}");
                }
                let dsn = format!("{h}/{database}");
                if query.is_empty() {
                    dsn
                } else {
                    format!("{dsn}?{query}")
                }
            };
            // No such database: named, and how to create it.
            connection_failure(
                &with(None, "pgqrs_no_such_database"),
                &[
                    "\"pgqrs_no_such_database\" does not exist",
                    "CREATE DATABASE \"pgqrs_no_such_database\"",
                    "connection string",
                ],
            )
            .await;
            // No such user: the user name is what to check.
            let db_name = base.rsplit_once('/').unwrap().1;
            connection_failure(
                &with(Some("pgqrs_no_such_role"), db_name),
                &["pgqrs_no_such_role", "user name"],
            )
            .await;
            // Nothing listens on port 1: is the server running there?
            connection_failure(
                "postgresql://postgres@127.0.0.1:1/x",
                &["127.0.0.1:1", "refused", "running"],
            )
            .await;
        }
    } else {
        let scheme = if db.is_turso() { "turso" } else { "sqlite" };
        // A file in a folder that does not exist: the folder is named, create it or fix
        // the path.
        connection_failure(
            &format!("{scheme}:///nonexistent-pgqrs-dir/sub/t.db"),
            &[
                "folder /nonexistent-pgqrs-dir/sub does not exist",
                "mkdir -p /nonexistent-pgqrs-dir/sub",
                "fix the path",
            ],
        )
        .await;
        // A folder where the file should be.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        connection_failure(
            &format!("{scheme}://{d}"),
            &[&format!("{d} is a folder, not a database file")],
        )
        .await;
    }
}

/// After `store.close()`, every operation fails with `Error::Closed`, promptly.
pub async fn closed_store(db: &TestDb) {
    let store = db.store_with_queue("q").await;
    pgqrs::enqueue()
        .message(&json!(1))
        .to("q")
        .execute(&store)
        .await
        .unwrap();
    let consumer = pgqrs::Consumer::new(&store, "q").await.unwrap();
    let clone = store.clone();
    tokio::time::timeout(secs(10), store.close())
        .await
        .expect("close must not hang");

    let bound = Duration::from_secs(10);
    macro_rules! closed {
        ($what:literal, $op:expr) => {
            let r = tokio::time::timeout(bound, $op)
                .await
                .unwrap_or_else(|_| panic!("{} on a closed store hung", $what));
            assert_err!(r, Error::Closed);
        };
    }
    closed!(
        "enqueue",
        pgqrs::enqueue().message(&json!(2)).to("q").execute(&store)
    );
    closed!(
        "enqueue on a clone",
        pgqrs::enqueue().message(&json!(2)).to("q").execute(&clone)
    );
    closed!(
        "dequeue",
        pgqrs::dequeue()
            .from("q")
            .handle(|_m| async { Ok(()) })
            .execute(&store)
    );
    closed!("Consumer::dequeue", consumer.dequeue(1, None));
    closed!("Consumer::new", pgqrs::Consumer::new(&store, "q"));
    closed!("list_queues", pgqrs::admin(&store).list_queues());
    closed!("queue_metrics", pgqrs::admin(&store).queue_metrics("q"));
    closed!("create_queue", pgqrs::admin(&store).create_queue("other"));
    closed!("install", pgqrs::admin(&store).install());
    let w = pgqrs::worker("q").handle(|_m| async { Ok(()) });
    closed!("worker.run", w.run(&store));
    // Closing twice is harmless.
    tokio::time::timeout(bound, store.close())
        .await
        .expect("second close hung");
}

/// The server closes every connection in the store's pool. A connection idle for a second or
/// more is pinged before use, so once the pool's connections have sat idle that long, the
/// next calls reconnect and succeed without the caller seeing an error.
pub async fn connections_closed_by_the_server(db: &TestDb) {
    let app = format!("pgqrs_kill_{}", std::process::id());
    let store = db
        .store_with(&format!("application_name={app}&pool_size=3"))
        .await;
    pgqrs::admin(&store).create_queue("q").await.unwrap();
    let send = |n: i64| {
        let store = store.clone();
        async move {
            pgqrs::enqueue()
                .message(&n)
                .to("q")
                .execute(&store)
                .await
                .map(drop)
        }
    };
    // Open several pooled connections at once.
    let (a, b, c) = tokio::join!(send(1), send(2), send(3));
    a.and(b).and(c).expect("enqueue before the kill");

    db.exec_raw(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = '{app}' AND pid <> pg_backend_pid()"
    ))
    .await;
    sleep_ms(1_200).await;
    for n in 4..10 {
        send(n).await.unwrap_or_else(|e| {
            panic!("enqueue {n} after the server closed the pooled connections: {e}")
        });
    }
    let m = metrics(&store, "q").await;
    assert_eq!(m.ready, 9, "{m:?}");
}
