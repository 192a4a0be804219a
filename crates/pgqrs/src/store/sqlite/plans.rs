//! The claim's plans on the SQLite dialect: each of its statements reads a range of the claim
//! index in the index's order, whatever ANALYZE recorded, in both states a queue swings
//! between.
//! (Turso runs the same statement; its planner is checked by the conformance suite's
//! behaviour, not here.)

use sqlx::{Connection, Row, SqliteConnection};

use super::queries::{
    CLAIM, COUNT_GROUP_LIVE, COUNT_LIVE_AT, COUNT_LIVE_FINAL, GROUP_READY, LIST_ARCHIVED,
    LIST_DEAD, LIST_DELAYED, LIST_LEASED, LIST_READY, MIGRATIONS, NEXT_GROUP, NEXT_PRIORITY,
    PRUNE_ARCHIVE, PRUNE_DEAD, PRUNE_RUNS, PRUNE_RUN_STEPS, TOP_PRIORITY, UNGROUPED_READY,
};

async fn exec(c: &mut SqliteConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `EXPLAIN QUERY PLAN` of `sql` with `args`, one line per step.
async fn plan_of(c: &mut SqliteConnection, sql: &str, args: &[Option<i64>]) -> String {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
    for a in args {
        q = q.bind(*a);
    }
    let plan: Vec<String> = q
        .fetch_all(&mut *c)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect();
    plan.join("\n")
}

/// A page of `list_jobs` reads ranges of the existing indexes (the claim index in its order
/// for waiting and leased jobs), in both states a queue swings between.
#[tokio::test]
async fn list_jobs_reads_existing_indexes() {
    let mut c = SqliteConnection::connect("sqlite::memory:").await.unwrap();
    for (_, sql) in MIGRATIONS {
        exec(&mut c, sql).await;
    }
    exec(
        &mut c,
        "INSERT INTO pgqrs_queues (name, created_at) VALUES ('q', 0);
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)
         INSERT INTO pgqrs_jobs (queue_id, payload, max_attempts, enqueued_at, visible_at, priority)
         SELECT 1, '{}', 3, 0, 0, n % 3 FROM g;
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)
         INSERT INTO pgqrs_archive (id, queue_id, payload, attempts, enqueued_at, archived_at)
         SELECT n + 100000, 1, '{}', 1, 0, n FROM g;
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)
         INSERT INTO pgqrs_dead (id, queue_id, payload, attempts, max_attempts, enqueued_at, failed_at)
         SELECT n + 200000, 1, '{}', 3, 3, 0, n FROM g;",
    )
    .await;
    let states = [
        (
            "all ready",
            "UPDATE pgqrs_jobs SET attempts = 0, leased_at = NULL, visible_at = 0",
        ),
        (
            "all leased",
            "UPDATE pgqrs_jobs SET attempts = 1, leased_at = 1, visible_at = 9000000000000000",
        ),
    ];
    // queue, now, priority, visible_at, id, how many
    let page = [Some(1), Some(1), Some(1), Some(0), Some(0), Some(51)];
    let mut failures = Vec::new();
    for (state, sql) in states {
        exec(&mut c, sql).await;
        exec(&mut c, "ANALYZE").await;
        for (name, list) in [
            ("LIST_READY", LIST_READY),
            ("LIST_DELAYED", LIST_DELAYED),
            ("LIST_LEASED", LIST_LEASED),
        ] {
            for (part, sql, index, in_order) in [
                (
                    "same_priority",
                    list.same_priority,
                    "pgqrs_jobs_claim",
                    true,
                ),
                ("lower", list.lower, "pgqrs_jobs_claim", true),
                ("exhausted", list.exhausted, "pgqrs_jobs_exhausted", false),
            ] {
                if name == "LIST_READY" && part == "exhausted" {
                    continue; // never run: a ready job has attempts left
                }
                let plan = plan_of(&mut c, sql, &page).await;
                if !plan.contains(index) || (in_order && plan.contains("TEMP B-TREE")) {
                    failures.push(format!("{name}.{part} ({state}):\n{plan}"));
                }
            }
        }
        for (name, sql, args, index) in [
            (
                "LIST_ARCHIVED",
                LIST_ARCHIVED,
                &[Some(1), Some(i64::MAX), Some(i64::MAX), Some(51)][..],
                "pgqrs_archive_queue",
            ),
            (
                "LIST_DEAD",
                LIST_DEAD,
                &[Some(1), Some(0), Some(51)][..],
                // By queue, or in id order when the statistics say one queue has them all.
                "pgqrs_dead_queue|INTEGER PRIMARY KEY",
            ),
        ] {
            let plan = plan_of(&mut c, sql, args).await;
            if !index.split('|').any(|i| plan.contains(i)) {
                failures.push(format!("{name} ({state}):\n{plan}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn claim_reads_the_claim_index_in_order() {
    let mut c = SqliteConnection::connect("sqlite::memory:").await.unwrap();
    for (_, sql) in MIGRATIONS {
        exec(&mut c, sql).await;
    }
    exec(
        &mut c,
        "INSERT INTO pgqrs_queues (name, created_at) VALUES ('q', 0);
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)
         INSERT INTO pgqrs_jobs (queue_id, payload, max_attempts, enqueued_at, visible_at, priority)
         SELECT 1, '{}', 3, 0, 0, n % 3 FROM g;",
    )
    .await;
    let states = [
        (
            "all ready",
            "UPDATE pgqrs_jobs SET attempts = 0, leased_at = NULL, visible_at = 0",
        ),
        (
            "all leased",
            "UPDATE pgqrs_jobs SET attempts = 1, leased_at = 1, visible_at = 9000000000000000",
        ),
    ];
    let mut failures = Vec::new();
    for (state, sql) in states {
        exec(&mut c, sql).await;
        exec(&mut c, "ANALYZE").await;
        let args: [&[Option<i64>]; 3] = [
            &[Some(1)],
            &[Some(1), Some(0)],
            &[Some(1), Some(1), Some(2), Some(50), None, Some(0)],
        ];
        for ((name, sql), args) in [
            ("TOP_PRIORITY", TOP_PRIORITY),
            ("NEXT_PRIORITY", NEXT_PRIORITY),
            ("CLAIM", CLAIM),
        ]
        .into_iter()
        .zip(args)
        {
            let plan = plan_of(&mut c, sql, args).await;
            // The claim of a queue without limits never reads the index of grouped jobs.
            if !plan.contains("pgqrs_jobs_claim")
                || plan.contains("TEMP B-TREE")
                || plan.contains("pgqrs_jobs_group")
            {
                failures.push(format!("{name} ({state}):\n{plan}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Pruning takes the oldest rows of each table through the index that orders it by age, in
/// that order (no sort of the whole history), after ANALYZE of a large history; and the claim
/// reads neither the archive nor the dead letters, so their size cannot slow it.
#[tokio::test]
async fn prunes_read_the_age_indexes_in_order() {
    let mut c = SqliteConnection::connect("sqlite::memory:").await.unwrap();
    for (_, sql) in MIGRATIONS {
        exec(&mut c, sql).await;
    }
    exec(
        &mut c,
        "INSERT INTO pgqrs_queues (name, created_at) VALUES ('q', 0), ('r', 0);
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)
         INSERT INTO pgqrs_archive (id, queue_id, payload, attempts, enqueued_at, archived_at)
         SELECT n, 1 + n % 2, '{}', 1, n, n FROM g;
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)
         INSERT INTO pgqrs_dead (id, queue_id, payload, attempts, max_attempts, enqueued_at, failed_at)
         SELECT n, 1 + n % 2, '{}', 3, 3, n, n FROM g;
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)
         INSERT INTO pgqrs_workflow_runs (name, input, status, created_at, updated_at, finished_at)
         SELECT 'wf', '{}', CASE WHEN n % 2 = 0 THEN 'running' ELSE 'succeeded' END, n, n,
                CASE WHEN n % 2 = 0 THEN NULL ELSE n END FROM g;
         ANALYZE;",
    )
    .await;
    let mut failures = Vec::new();
    for (name, sql, index, args) in [
        (
            "PRUNE_ARCHIVE",
            PRUNE_ARCHIVE,
            "pgqrs_archive_queue",
            &[1i64, 10_000, 1000][..],
        ),
        (
            "PRUNE_DEAD",
            PRUNE_DEAD,
            "pgqrs_dead_failed",
            &[1, 10_000, 1000],
        ),
        (
            "PRUNE_RUN_STEPS",
            PRUNE_RUN_STEPS,
            "pgqrs_workflow_runs_finished",
            &[10_000, 1000],
        ),
        (
            "PRUNE_RUNS",
            PRUNE_RUNS,
            "pgqrs_workflow_runs_finished",
            &[10_000, 1000],
        ),
        ("CLAIM", CLAIM, "pgqrs_jobs_claim", &[1, 1, 2, 50, 0, 0]),
    ] {
        let args: Vec<Option<i64>> = args.iter().copied().map(Some).collect();
        let plan = plan_of(&mut c, sql, &args).await;
        let reads_history =
            name == "CLAIM" && (plan.contains("pgqrs_archive") || plan.contains("pgqrs_dead"));
        if !plan.contains(index) || plan.contains("TEMP B-TREE") || reads_history {
            failures.push(format!("{name}:\n{plan}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A statement argument of the group-limited claim's plans.
enum A {
    I(i64),
    T(&'static str),
}

/// The statements of a claim under limits read ranges of existing indexes in their order,
/// in both states a queue swings between: the groups, their live leases and ready jobs
/// through the partial index of grouped jobs; the live leases and the jobs without a group
/// per priority through the claim index; the final attempts through the exhausted index.
#[tokio::test]
async fn limited_claim_reads_ranges_of_indexes() {
    let mut c = SqliteConnection::connect("sqlite::memory:").await.unwrap();
    for (_, sql) in MIGRATIONS {
        exec(&mut c, sql).await;
    }
    exec(
        &mut c,
        "INSERT INTO pgqrs_queues (name, created_at) VALUES ('q', 0);
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)
         INSERT INTO pgqrs_jobs (queue_id, payload, max_attempts, enqueued_at, visible_at, priority, group_key)
         SELECT 1, '{}', 3, 0, 0, n % 3, CASE WHEN n % 2 = 0 THEN 'customer-' || (n % 100) END
         FROM g;",
    )
    .await;
    let states = [
        (
            "all ready",
            "UPDATE pgqrs_jobs SET attempts = 0, leased_at = NULL, visible_at = 0",
        ),
        (
            "all leased",
            "UPDATE pgqrs_jobs SET attempts = 1, leased_at = 1, visible_at = 9000000000000000",
        ),
    ];
    let now = 1_000_000;
    let cases: [(&str, &str, Vec<A>, &str); 6] = [
        (
            "NEXT_GROUP",
            NEXT_GROUP,
            vec![A::I(1), A::T("")],
            "pgqrs_jobs_group",
        ),
        (
            "COUNT_GROUP_LIVE",
            COUNT_GROUP_LIVE,
            vec![A::I(1), A::I(now), A::T("customer-2")],
            "pgqrs_jobs_group",
        ),
        (
            "GROUP_READY",
            GROUP_READY,
            vec![A::I(1), A::I(now), A::T("customer-2"), A::I(50)],
            "pgqrs_jobs_group",
        ),
        (
            "UNGROUPED_READY",
            UNGROUPED_READY,
            vec![A::I(1), A::I(now), A::I(0), A::I(50)],
            "pgqrs_jobs_claim",
        ),
        (
            "COUNT_LIVE_AT",
            COUNT_LIVE_AT,
            vec![A::I(1), A::I(now), A::I(0)],
            "pgqrs_jobs_claim",
        ),
        (
            "COUNT_LIVE_FINAL",
            COUNT_LIVE_FINAL,
            vec![A::I(1), A::I(now)],
            "pgqrs_jobs_exhausted",
        ),
    ];
    let mut failures = Vec::new();
    for (state, sql) in states {
        exec(&mut c, sql).await;
        exec(&mut c, "ANALYZE").await;
        for (name, sql, args, index) in &cases {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
            for a in args {
                q = match a {
                    A::I(v) => q.bind(*v),
                    A::T(t) => q.bind(*t),
                };
            }
            let plan: Vec<String> = q
                .fetch_all(&mut c)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect();
            let plan = plan.join("\n");
            if !plan.contains(index)
                || plan.contains("TEMP B-TREE")
                || plan.lines().any(|l| l.trim() == "SCAN pgqrs_jobs")
            {
                failures.push(format!("{name} ({state}):\n{plan}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
