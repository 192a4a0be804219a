//! The plans of the statements on the job and workflow tables, on a real server, after
//! `ANALYZE` in both states a queue swings between ("all ready" and "all leased"), with the
//! generic plans that sqlx's prepared statements switch to after five executions and with
//! custom ones. See the note above `queries!` for the rules the statements follow.
//!
//! Statements that read a whole queue by nature (metrics, purge, deleting a queue, the
//! leased-jobs check before a delete) are not listed: any plan of theirs reads every row of
//! the queue once.
//!
//! A sequential scan is not a disaster in itself: with a custom plan, a batch of 500 ids is a
//! hashed `= ANY`, and on a table of a few thousand jobs one scan may cost less than 500 index
//! probes (the planner knows the table's current size, whatever the statistics say). So the
//! job table here is large enough (100,000 jobs) that only a plan misled by statistics would
//! scan it. What must never appear at any size is a join that compares every lease with every
//! row (`Join Filter`).
//!
//! Needs `PGQRS_TEST_DSN`; skipped without it, except under `CI=true`, where it fails.

use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use super::queries::Queries;
use crate::store::Backend;

/// Jobs in the queue: enough that scanning them costs far more than probing 500 ids.
const JOBS: i64 = 100_000;
/// Rows in each of the other tables.
const ROWS: i64 = 20_000;

fn server_dsn() -> Option<String> {
    match std::env::var("PGQRS_TEST_DSN") {
        Ok(s) if !s.trim().is_empty() => Some(s),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
                panic!("PGQRS_TEST_DSN is not set and CI=true: the PostgreSQL plan test must run");
            }
            eprintln!("SKIPPED: PostgreSQL plan test (set PGQRS_TEST_DSN to run it)");
            None
        }
    }
}

async fn exec(c: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// One statement to explain: its text, its arguments as SQL literals, and the indexes its
/// plan must use (each inner list: one of these).
struct Case<'a> {
    name: &'static str,
    sql: &'a str,
    args: String,
    uses: &'static [&'static [&'static str]],
}

/// A run found by id: through the primary key or the `(status, id)` index, one row either way.
const RUN_BY_ID: &[&[&str]] = &[&["pgqrs_workflow_runs_pkey", "pgqrs_workflow_runs_status"]];

async fn explain(c: &mut PgConnection, case: &Case<'_>) -> String {
    exec(c, &format!("PREPARE pgqrs_plan_case AS {}", case.sql)).await;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "EXPLAIN EXECUTE pgqrs_plan_case({})",
        case.args
    )))
    .fetch_all(&mut *c)
    .await
    .unwrap_or_else(|e| panic!("EXPLAIN {}: {e}", case.name));
    exec(c, "DEALLOCATE pgqrs_plan_case").await;
    rows.iter()
        .map(|r| r.get::<String, _>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A page of a queue's waiting or leased jobs (`list_jobs`): ranges of the claim index and of
/// the exhausted index, never a scan of the table.
const PAGE_OF_JOBS: &[&[&str]] = &[&["pgqrs_jobs_claim"], &["pgqrs_jobs_exhausted"]];

/// Plans that must never appear: a sequential scan of a hot table, or a nested loop that
/// compares every row of one side with every row of the other.
const FORBIDDEN: &[&str] = &[
    "Seq Scan on pgqrs_jobs",
    "Seq Scan on pgqrs_workflow_runs",
    "Seq Scan on pgqrs_workflow_steps",
    "Seq Scan on pgqrs_dead",
    "Join Filter",
];

/// Statements that may read a whole queue in one scan when the statistics say so. A delayed job
/// differs from a leased one only by `leased_at`, which no index holds: a page of delayed jobs
/// reads past the leased jobs of the priorities it crosses, through the claim index or in one
/// scan, whichever is cheaper (with every job leased, the scan).
///
/// Counting a limited queue's live leases reads every leased (and delayed) job of the queue by
/// nature: in a queue under a concurrency limit those are at most the limit (plus the delayed
/// jobs), but with every job leased, as in the second state here, one scan is the cheapest.
const MAY_SCAN_JOBS: &[&str] = &["list_delayed", "count_live"];

/// Statements whose ORDER BY their index must serve as it is: a claim reads the rows it takes
/// in the index's order (priority, visible, id) and stops, never sorts what it found; a prune
/// takes the oldest rows of its table in the order of the index that sorts them by age.
const IN_INDEX_ORDER: &[&str] = &["claim", "prune_archive", "prune_dead", "prune_runs"];

/// Statements of the job path, which never read the archive (or the dead letters): however
/// large those grow, a claim or a completion costs the same. (A completion inserts into the
/// archive, one index entry per job: logarithmic in its size, never a scan.)
/// The claim of a queue without limits: the same statement as before flow control, which
/// reads neither the queue's row (its limits) nor the index of grouped jobs.
const UNLIMITED_CLAIM: &str = "claim";

const NEVER_READ_HISTORY: &[&str] = &[
    "claim",
    "archive",
    "delete",
    "retry",
    "bury",
    "extend",
    "release",
    "rescue",
    "enqueue_one",
    "enqueue_many",
    "count_live",
    "claim_grouped",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_hold_whatever_the_statistics_say() {
    let Some(server) = server_dsn() else { return };
    // The integration suite's sweeper drops leftovers named like this after an hour.
    let schema = format!(
        "t_{}_{:08x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        fastrand::u32(..)
    );
    let sep = if server.contains('?') { '&' } else { '?' };
    let config =
        crate::config::Config::new(&format!("{server}{sep}schema={schema}")).expect("config");
    let store = super::PgBackend::connect(config).await.expect("connect");
    store.install().await.expect("install");
    let queue = store
        .create_queue(crate::store::NewQueue {
            name: "q",
            archive_retention: crate::Retention::days(7),
            dead_retention: crate::Retention::days(30),
            limits: crate::QueueLimits::new(),
        })
        .await
        .expect("queue");
    let mut c = PgConnection::connect(&server).await.expect("raw connect");
    let s = format!("\"{schema}\"");
    let q = Queries::new(&s);
    exec(
        &mut c,
        &format!(
            "INSERT INTO {s}.pgqrs_jobs (queue_id, payload, max_attempts, priority, group_key)
                 SELECT {qid}, '{{}}', 3, g % 3,
                        CASE WHEN g % 2 = 0 THEN 'customer-' || (g % 100) END
                 FROM generate_series(1, {JOBS}) g;
             INSERT INTO {s}.pgqrs_archive (id, queue_id, payload, attempts, enqueued_at, archived_at)
                 SELECT g + 10000000, {qid}, '{{}}', 1, now(), now() - (g / 100) * interval '1 minute'
                 FROM generate_series(1, {ROWS}) g;
             INSERT INTO {s}.pgqrs_dead (id, queue_id, payload, attempts, max_attempts, enqueued_at, failed_at)
                 SELECT g + 20000000, {qid}, '{{}}', 3, 3, now(), now() - g * interval '1 second'
                 FROM generate_series(1, {ROWS}) g;
             INSERT INTO {s}.pgqrs_workflow_runs (name, input, status, finished_at)
                 SELECT 'wf', '{{}}', 'succeeded', now() - g * interval '1 second'
                 FROM generate_series(1, {ROWS}) g;
             INSERT INTO {s}.pgqrs_workflow_steps (run_id, position, name, status, attempts)
                 SELECT r.id, p, 's', 'succeeded', 1
                 FROM {s}.pgqrs_workflow_runs r, generate_series(0, 2) p;",
            qid = queue.id
        ),
    )
    .await;

    let ids = |from: i64| {
        format!(
            "'{{{}}}'",
            (from..from + 500)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let (job_ids, tokens, dead_ids) = (ids(5_001), ids(1), ids(20_005_001));
    // An even id: a run that is pending or running (the odd ones are finished).
    let rid = ROWS / 2;
    let errs = format!("'{{{}}}'", vec!["\"e\""; 500].join(","));
    let delays = format!("'{{{}}}'", vec!["1.5"; 500].join(","));
    let qid = queue.id;
    let cases = [
        Case {
            name: "claim",
            sql: q.claim.as_str(),
            args: format!("{qid}, 50, 30, NULL"),
            uses: &[&["pgqrs_jobs_claim"], &["pgqrs_jobs_pkey"]],
        },
        Case {
            name: "lock_limits",
            sql: q.lock_limits.as_str(),
            args: format!("{qid}"),
            uses: &[&["pgqrs_queues_pkey"]],
        },
        Case {
            name: "count_live",
            sql: q.count_live.as_str(),
            args: format!("{qid}"),
            // The leases per priority (claim index) and the final attempts (exhausted index).
            uses: &[&["pgqrs_jobs_claim"], &["pgqrs_jobs_exhausted"]],
        },
        Case {
            name: "claim_grouped",
            sql: q.claim_grouped.as_str(),
            args: format!("{qid}, 50, 30, NULL, 2"),
            // The groups, their leases and ready jobs through the group index; the jobs
            // without a group per priority through the claim index.
            uses: &[
                &["pgqrs_jobs_group"],
                &["pgqrs_jobs_claim"],
                &["pgqrs_jobs_pkey"],
            ],
        },
        Case {
            name: "save_window",
            sql: q.save_window.as_str(),
            args: format!("{qid}, 1700000000000000, 3"),
            uses: &[&["pgqrs_queues_pkey"]],
        },
        Case {
            name: "archive",
            sql: q.archive.as_str(),
            args: format!("{job_ids}, {tokens}"),
            uses: &[&["pgqrs_jobs_pkey"]],
        },
        Case {
            name: "delete",
            sql: q.delete.as_str(),
            args: format!("{job_ids}, {tokens}"),
            uses: &[&["pgqrs_jobs_pkey"]],
        },
        Case {
            name: "retry",
            sql: q.retry.as_str(),
            args: format!("{job_ids}, {tokens}, {delays}, {errs}"),
            uses: &[&["pgqrs_jobs_pkey"]],
        },
        Case {
            name: "bury",
            sql: q.bury.as_str(),
            args: format!("{job_ids}, {tokens}, {errs}"),
            uses: &[&["pgqrs_jobs_pkey"]],
        },
        Case {
            name: "extend",
            sql: q.extend.as_str(),
            args: format!("{job_ids}, {tokens}, 30"),
            uses: &[&["pgqrs_jobs_pkey"]],
        },
        Case {
            name: "release",
            sql: q.release.as_str(),
            args: format!("{job_ids}, {tokens}, 0"),
            uses: &[&["pgqrs_jobs_pkey"]],
        },
        Case {
            name: "rescue",
            sql: q.rescue.as_str(),
            args: format!("{qid}, 'expired'"),
            uses: &[&["pgqrs_jobs_exhausted"], &["pgqrs_jobs_pkey"]],
        },
        Case {
            name: "enqueue_one",
            sql: q.enqueue_one.as_str(),
            args: format!("{qid}, '{{}}', 3, NULL, 0, 'ch', 'q', false, 0, NULL, NULL"),
            uses: &[&["pgqrs_queues_pkey"]],
        },
        Case {
            name: "enqueue_many",
            sql: q.enqueue_many.as_str(),
            args: format!(
                "{qid}, '{{\"{{}}\",\"{{}}\"}}', 3, NULL, 0, 'ch', 'q', false, 0, NULL, NULL"
            ),
            uses: &[&["pgqrs_queues_pkey"]],
        },
        Case {
            name: "enqueue_unique",
            sql: q.enqueue_unique.as_str(),
            args: format!(
                "{qid}, '{{\"{{}}\",\"{{}}\"}}', 3, NULL, 0, 'ch', 'q', false, 0, \
                 '{{\"a\",NULL}}', 3600, false, NULL, NULL"
            ),
            // The keys through the partial indexes, which hold keyed jobs only.
            uses: &[
                &["pgqrs_queues_pkey"],
                &["pgqrs_jobs_unique"],
                &["pgqrs_archive_unique"],
            ],
        },
        Case {
            name: "requeue_dead",
            sql: q.requeue_dead.as_str(),
            args: format!("{qid}, {dead_ids}"),
            uses: &[&["pgqrs_dead_pkey"]],
        },
        Case {
            name: "dead_letters",
            sql: q.dead_letters.as_str(),
            args: format!("{qid}, 50"),
            uses: &[&["pgqrs_dead_queue", "pgqrs_dead_pkey"]],
        },
        Case {
            name: "archived",
            sql: q.archived.as_str(),
            args: format!("{qid}, 50"),
            // Reads the archive only (a listing for people): no hot table involved.
            uses: &[],
        },
        Case {
            name: "prune_archive",
            sql: q.prune_archive.as_str(),
            args: format!("{qid}, 3600, 1000"),
            uses: &[&["pgqrs_archive_queue"], &["pgqrs_archive_pkey"]],
        },
        Case {
            name: "prune_dead",
            sql: q.prune_dead.as_str(),
            args: format!("{qid}, 3600, 1000"),
            uses: &[&["pgqrs_dead_failed"], &["pgqrs_dead_pkey"]],
        },
        Case {
            name: "prune_runs",
            sql: q.prune_runs.as_str(),
            args: "3600, 1000".into(),
            uses: &[
                &["pgqrs_workflow_runs_finished"],
                &["pgqrs_workflow_runs_pkey"],
            ],
        },
        Case {
            name: "get_job",
            sql: q.get_job.as_str(),
            args: "5001".into(),
            uses: &[
                &["pgqrs_jobs_pkey"],
                &["pgqrs_archive_pkey"],
                &["pgqrs_dead_pkey"],
            ],
        },
        Case {
            name: "list_ready",
            sql: q.list_ready.as_str(),
            args: format!("{qid}, 1, '2000-01-01', 0, 51"),
            uses: PAGE_OF_JOBS,
        },
        Case {
            name: "list_delayed",
            sql: q.list_delayed.as_str(),
            args: format!("{qid}, 32768, '1970-01-01', 0, 51"),
            uses: PAGE_OF_JOBS,
        },
        Case {
            name: "list_leased",
            sql: q.list_leased.as_str(),
            args: format!("{qid}, 2, '2000-01-01', 7, 51"),
            uses: PAGE_OF_JOBS,
        },
        Case {
            name: "list_archived",
            sql: q.list_archived.as_str(),
            args: format!("{qid}, '9999-12-31', 9223372036854775807, 51"),
            uses: &[&["pgqrs_archive_queue"]],
        },
        Case {
            name: "list_dead",
            sql: q.list_dead.as_str(),
            args: format!("{qid}, 20005000, 51"),
            uses: &[&["pgqrs_dead_queue", "pgqrs_dead_pkey"]],
        },
        Case {
            name: "cancel_job",
            sql: q.cancel_job.as_str(),
            args: "5001".into(),
            uses: &[&["pgqrs_jobs_pkey"]],
        },
        Case {
            name: "reschedule_job",
            sql: q.reschedule_job.as_str(),
            args: "5001, NULL, 60".into(),
            uses: &[&["pgqrs_jobs_pkey"]],
        },
        Case {
            name: "set_job_priority",
            sql: q.set_job_priority.as_str(),
            args: "5001, 3".into(),
            uses: &[&["pgqrs_jobs_pkey"]],
        },
        Case {
            name: "get_run",
            sql: q.get_run.as_str(),
            args: format!("{rid}"),
            uses: RUN_BY_ID,
        },
        Case {
            name: "acquire_run",
            sql: q.acquire_run.as_str(),
            args: format!("{rid}, 'w', 30"),
            uses: RUN_BY_ID,
        },
        Case {
            name: "run_lease",
            sql: q.run_lease.as_str(),
            args: format!("{rid}"),
            uses: RUN_BY_ID,
        },
        Case {
            name: "renew_run",
            sql: q.renew_run.as_str(),
            args: format!("{rid}, 'w', 30"),
            uses: RUN_BY_ID,
        },
        Case {
            name: "list_steps",
            sql: q.list_steps.as_str(),
            args: format!("{rid}"),
            uses: &[&["pgqrs_workflow_steps_pkey"]],
        },
        Case {
            name: "record_step",
            sql: q.record_step.as_str(),
            args: format!("{rid}, 3, 's', 'succeeded', '1', NULL, 1, NULL, 'w'"),
            uses: RUN_BY_ID,
        },
        Case {
            name: "finish_run",
            sql: q.finish_run.as_str(),
            args: format!("{rid}, 'w', 'succeeded', '1', NULL"),
            uses: RUN_BY_ID,
        },
        Case {
            name: "cancel_run",
            sql: q.cancel_run.as_str(),
            args: format!("{rid}"),
            uses: RUN_BY_ID,
        },
        Case {
            name: "list_runs_by_status",
            sql: q.list_runs_by_status.as_str(),
            args: "'running', 50".into(),
            // A listing for people: by status through its index, or in id order through the
            // primary key when the statistics say most runs have that status.
            uses: &[&["pgqrs_workflow_runs_status", "pgqrs_workflow_runs_pkey"]],
        },
        Case {
            name: "list_runs",
            sql: q.list_runs.as_str(),
            args: "50".into(),
            uses: &[&["pgqrs_workflow_runs_pkey"]],
        },
    ];

    let mut failures = Vec::new();
    // The two states a queue swings between, each analyzed; then both kinds of plan.
    let states = [
        (
            "all ready, the unfinished runs pending",
            format!(
                "UPDATE {s}.pgqrs_jobs SET attempts = 0, leased_at = NULL, worker_id = NULL,
                     visible_at = now() - interval '1 second';
                 UPDATE {s}.pgqrs_workflow_runs SET status = 'pending', owner = NULL,
                     lease_until = NULL, finished_at = NULL WHERE id % 2 = 0;"
            ),
        ),
        (
            "all leased, the unfinished runs running",
            format!(
                "UPDATE {s}.pgqrs_jobs SET attempts = 1, leased_at = now(), worker_id = 1,
                     lease_token = nextval('{s}.pgqrs_lease_tokens'),
                     visible_at = now() + interval '1 hour';
                 UPDATE {s}.pgqrs_workflow_runs SET status = 'running', owner = 'w',
                     lease_until = now() + interval '1 hour', finished_at = NULL
                 WHERE id % 2 = 0;"
            ),
        ),
    ];
    for (state, sql) in &states {
        exec(&mut c, sql).await;
        exec(&mut c, &format!("VACUUM ANALYZE {s}.pgqrs_jobs, {s}.pgqrs_workflow_runs, {s}.pgqrs_workflow_steps, {s}.pgqrs_archive, {s}.pgqrs_dead")).await;
        for mode in ["force_generic_plan", "force_custom_plan"] {
            exec(&mut c, &format!("SET plan_cache_mode = {mode}")).await;
            for case in &cases {
                let plan = explain(&mut c, case).await;
                let mut bad: Vec<&str> = FORBIDDEN
                    .iter()
                    .copied()
                    .filter(|f| plan.contains(f))
                    .filter(|f| {
                        !(MAY_SCAN_JOBS.contains(&case.name) && *f == "Seq Scan on pgqrs_jobs")
                    })
                    .collect();
                if IN_INDEX_ORDER.contains(&case.name) && plan.contains("Sort") {
                    bad.push("Sort");
                }
                if NEVER_READ_HISTORY.contains(&case.name)
                    && plan.lines().any(|l| {
                        l.contains("Scan")
                            && (l.contains("pgqrs_archive") || l.contains("pgqrs_dead"))
                    })
                {
                    bad.push("a scan of the archive or the dead letters");
                }
                if case.name == UNLIMITED_CLAIM
                    && (plan.contains("pgqrs_jobs_group") || plan.contains("pgqrs_queues"))
                {
                    bad.push("a read of the limits or of the group index");
                }
                let missing: Vec<&[&str]> = case
                    .uses
                    .iter()
                    .copied()
                    .filter(|one_of| !one_of.iter().any(|i| plan.contains(i)))
                    .collect();
                if !bad.is_empty() || !missing.is_empty() {
                    failures.push(format!(
                        "{} ({state}, {mode}): has {bad:?}, lacks {missing:?}\n{plan}",
                        case.name
                    ));
                }
            }
        }
    }
    exec(&mut c, &format!("DROP SCHEMA {s} CASCADE")).await;
    let _ = c.close().await;
    store.close().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
