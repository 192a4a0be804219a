//! The SQLite dialect's SQL, run by both engines (sqlx's SQLite and Turso, which speaks the
//! same dialect: `RETURNING`, `ON CONFLICT`, partial indexes, `VALUES` lists, `AUTOINCREMENT`).
//! Timestamps are microseconds since the epoch, so a database file means the same to both. A
//! statement that had to differ on one engine would be named here for each, and chosen in
//! `mod.rs`.
//!
//! Batch statements over leases are built for the batch's size: `{leases}` is replaced by
//! `(?, ?), (?, ?), …` — one `(job id, lease token)` pair per lease ([`for_leases`]). Those
//! built for up to [`KEEP_PREPARED_UP_TO`] leases are kept prepared (one per size).

use super::Sql;

/// Lease statements for batches up to this size are kept prepared.
const KEEP_PREPARED_UP_TO: usize = 16;

/// Numbered migrations, applied in order by `install`.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_queues_and_jobs.sql")),
    (2, include_str!("migrations/0002_workers.sql")),
    (3, include_str!("migrations/0003_workflows.sql")),
    (4, include_str!("migrations/0004_priorities.sql")),
    (5, include_str!("migrations/0005_unique_jobs.sql")),
    (6, include_str!("migrations/0006_retention.sql")),
    (7, include_str!("migrations/0007_schedules.sql")),
    (8, include_str!("migrations/0008_flow_control.sql")),
];

pub(super) const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS pgqrs_schema_version (
    version      INTEGER PRIMARY KEY,
    installed_at INTEGER NOT NULL
)";
pub(super) const SCHEMA_VERSION: &str = "SELECT max(version) FROM pgqrs_schema_version";
pub(super) const INSERT_VERSION: &str =
    "INSERT INTO pgqrs_schema_version (version, installed_at) VALUES (?, ?)";
pub(super) const OBJECT_EXISTS: &str =
    "SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'index') AND name = ?";

pub(super) const CREATE_QUEUE: &str = "INSERT INTO pgqrs_queues
        (name, created_at, archive_retention, dead_retention, concurrency_limit,
         group_concurrency_limit, rate_limit, rate_period_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (name) DO NOTHING
    RETURNING id, name, created_at, archive_retention, dead_retention,
        concurrency_limit, group_concurrency_limit, rate_limit, rate_period_ms";
pub(super) const QUEUE_ID: &str = "SELECT id FROM pgqrs_queues WHERE name = ?";
pub(super) const GET_QUEUE: &str = "SELECT id, name, created_at, archive_retention, dead_retention,
        concurrency_limit, group_concurrency_limit, rate_limit, rate_period_ms
    FROM pgqrs_queues WHERE name = ?";
pub(super) const LIST_QUEUES: &str =
    "SELECT id, name, created_at, archive_retention, dead_retention,
        concurrency_limit, group_concurrency_limit, rate_limit, rate_period_ms
    FROM pgqrs_queues ORDER BY name";
/// `?2`/`?4`: whether to set the archive/dead retention to `?3`/`?5` (NULL: forever).
pub(super) const SET_QUEUE_RETENTION: &str = "UPDATE pgqrs_queues
    SET archive_retention = CASE WHEN ?2 THEN ?3 ELSE archive_retention END,
        dead_retention = CASE WHEN ?4 THEN ?5 ELSE dead_retention END
    WHERE name = ?1
    RETURNING id, name, created_at, archive_retention, dead_retention,
        concurrency_limit, group_concurrency_limit, rate_limit, rate_period_ms";
/// Replaces every limit; the rate window starts afresh.
pub(super) const SET_QUEUE_LIMITS: &str = "UPDATE pgqrs_queues
    SET concurrency_limit = ?2, group_concurrency_limit = ?3, rate_limit = ?4,
        rate_period_ms = ?5, rate_window_start = NULL, rate_window_count = 0
    WHERE name = ?1
    RETURNING id, name, created_at, archive_retention, dead_retention,
        concurrency_limit, group_concurrency_limit, rate_limit, rate_period_ms";

// Flow control (`flow.rs`): a claim of a queue with limits, in one write transaction (which
// serializes it with every other writer). The queue's limits and rate window:
pub(super) const GET_LIMITS: &str = "SELECT concurrency_limit, group_concurrency_limit,
    rate_limit, rate_period_ms, rate_window_start, rate_window_count
    FROM pgqrs_queues WHERE id = ?1";
/// The live leases of one priority (`?3`): the claim index's range after now (`?2`).
pub(super) const COUNT_LIVE_AT: &str = "SELECT count(*) FROM pgqrs_jobs
    WHERE queue_id = ?1 AND attempts < max_attempts AND priority = ?3 AND visible_at > ?2
          AND leased_at IS NOT NULL";
/// The live leases of final attempts (the exhausted index).
pub(super) const COUNT_LIVE_FINAL: &str = "SELECT count(*) FROM pgqrs_jobs
    WHERE queue_id = ?1 AND attempts >= max_attempts AND visible_at > ?2
          AND leased_at IS NOT NULL";
/// The group after `?2` (the first with `''`, below every group): one descent of the group
/// index each, a loose index scan.
pub(super) const NEXT_GROUP: &str = "SELECT group_key FROM pgqrs_jobs
    WHERE queue_id = ?1 AND group_key IS NOT NULL AND group_key > ?2
    ORDER BY group_key LIMIT 1";
/// The live leases of one group (`?3`): the group index's range after now (`?2`).
pub(super) const COUNT_GROUP_LIVE: &str = "SELECT count(*) FROM pgqrs_jobs
    WHERE queue_id = ?1 AND group_key = ?3 AND visible_at > ?2 AND leased_at IS NOT NULL";
/// Up to `?4` ready jobs of one group (`?3`), in visible order: the group index's range up
/// to now. Rows: id, priority, visible_at.
pub(super) const GROUP_READY: &str = "SELECT id, priority, visible_at FROM pgqrs_jobs
    WHERE queue_id = ?1 AND group_key = ?3 AND visible_at <= ?2 AND attempts < max_attempts
    ORDER BY visible_at, id LIMIT ?4";
/// Up to `?4` ready jobs without a group of one priority (`?3`), in claim order.
pub(super) const UNGROUPED_READY: &str = "SELECT id, priority, visible_at FROM pgqrs_jobs
    WHERE queue_id = ?1 AND priority = ?3 AND visible_at <= ?2 AND attempts < max_attempts
          AND group_key IS NULL
    ORDER BY visible_at, id LIMIT ?4";
/// The rate window after a claim: `?2` its start, `?3` jobs taken.
pub(super) const SAVE_WINDOW: &str =
    "UPDATE pgqrs_queues SET rate_window_start = ?2, rate_window_count = ?3 WHERE id = ?1";

/// Lease the jobs picked by a group-limited claim: `?1` now, `?2` lease until, `?3` worker,
/// then `n` ids.
pub(super) fn claim_ids(n: usize) -> Sql {
    Sql::built(
        format!(
            "UPDATE pgqrs_jobs
            SET attempts = attempts + 1, lease_token = lease_token + 1,
                visible_at = ?2, leased_at = ?1, worker_id = ?3
            WHERE id IN ({})
            RETURNING id, payload, attempts, max_attempts, enqueued_at, visible_at, last_error,
                      lease_token, priority, timeout_ms",
            numbered(4, n)
        ),
        false,
    )
}

// Retention: the oldest rows first, through the index that orders each table by age (`?2`
// the cut-off time, `?3` rows per statement). One short write each: the writer lock is held
// for one batch at a time.
pub(super) const PRUNE_ARCHIVE: &str = "DELETE FROM pgqrs_archive WHERE id IN (
    SELECT id FROM pgqrs_archive WHERE queue_id = ?1 AND archived_at < ?2
    ORDER BY archived_at LIMIT ?3)";
pub(super) const PRUNE_DEAD: &str = "DELETE FROM pgqrs_dead WHERE id IN (
    SELECT id FROM pgqrs_dead WHERE queue_id = ?1 AND failed_at < ?2
    ORDER BY failed_at LIMIT ?3)";
/// The finished runs a prune takes (`?1` the cut-off time, `?2` rows per statement): their
/// steps go first, then the runs, in one transaction (the same rows both times).
macro_rules! pruned_runs {
    () => {
        "SELECT id FROM pgqrs_workflow_runs
        WHERE finished_at < ?1 AND status IN ('succeeded', 'failed', 'cancelled')
        ORDER BY finished_at LIMIT ?2"
    };
}
pub(super) const PRUNE_RUN_STEPS: &str = concat!(
    "DELETE FROM pgqrs_workflow_steps WHERE run_id IN (",
    pruned_runs!(),
    ")"
);
pub(super) const PRUNE_RUNS: &str = concat!(
    "DELETE FROM pgqrs_workflow_runs WHERE id IN (",
    pruned_runs!(),
    ")"
);
pub(super) const GET_SETTING: &str = "SELECT value FROM pgqrs_settings WHERE name = ?";
pub(super) const SET_SETTING: &str = "INSERT INTO pgqrs_settings (name, value, updated_at)
    VALUES (?1, ?2, ?3)
    ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";
pub(super) const COUNT_LEASED: &str = "SELECT count(*) FROM pgqrs_jobs
    WHERE queue_id = ? AND leased_at IS NOT NULL AND visible_at > ?";
pub(super) const DELETE_QUEUE_JOBS: &str = "DELETE FROM pgqrs_jobs WHERE queue_id = ?";
pub(super) const DELETE_QUEUE_ARCHIVE: &str = "DELETE FROM pgqrs_archive WHERE queue_id = ?";
pub(super) const DELETE_QUEUE_DEAD: &str = "DELETE FROM pgqrs_dead WHERE queue_id = ?";
pub(super) const DELETE_QUEUE: &str = "DELETE FROM pgqrs_queues WHERE id = ?";
pub(super) const QUEUE_METRICS: &str = "SELECT
        coalesce(sum(visible_at <= ?2 AND attempts < max_attempts), 0),
        coalesce(sum(visible_at > ?2 AND leased_at IS NULL), 0),
        coalesce(sum((visible_at > ?2 AND leased_at IS NOT NULL)
                     OR (visible_at <= ?2 AND attempts >= max_attempts)), 0),
        min(CASE WHEN visible_at <= ?2 AND attempts < max_attempts THEN enqueued_at END),
        (SELECT count(*) FROM pgqrs_archive WHERE queue_id = ?1),
        (SELECT count(*) FROM pgqrs_dead WHERE queue_id = ?1)
    FROM pgqrs_jobs WHERE queue_id = ?1";

// Priorities: a claim visits the priorities present in the queue from the highest down
// (`TOP_PRIORITY`, then `NEXT_PRIORITY`: one index descent each) and takes from each, in
// visible-then-id order, what it still needs (`CLAIM`, `?6` the priority). Each take is a
// range of the claim index that ends at the first row not visible yet, so leased and delayed
// jobs are never read. (One statement ordering all priorities at once lets SQLite's planner,
// after an ANALYZE that saw every job leased, pick a skip-scan and sort every ready job.)
pub(super) const TOP_PRIORITY: &str = "SELECT priority FROM pgqrs_jobs
    WHERE queue_id = ?1 AND attempts < max_attempts ORDER BY priority DESC LIMIT 1";
pub(super) const NEXT_PRIORITY: &str = "SELECT priority FROM pgqrs_jobs
    WHERE queue_id = ?1 AND attempts < max_attempts AND priority < ?2
    ORDER BY priority DESC LIMIT 1";
pub(super) const CLAIM: &str = "UPDATE pgqrs_jobs
    SET attempts = attempts + 1, lease_token = lease_token + 1,
        visible_at = ?3, leased_at = ?2, worker_id = ?5
    WHERE id IN (SELECT id FROM pgqrs_jobs
                 WHERE queue_id = ?1 AND priority = ?6 AND visible_at <= ?2
                       AND attempts < max_attempts
                 ORDER BY visible_at, id LIMIT ?4)
    RETURNING id, payload, attempts, max_attempts, enqueued_at, visible_at, last_error,
              lease_token, priority, timeout_ms";

/// The jobs of a lease list that are still held: `SELECT j.id FROM … WHERE …`.
///
/// `CROSS JOIN` makes the lease list the outer loop (SQLite never reorders it), so each lease is
/// one primary-key lookup whatever `ANALYZE` recorded about the job table: a queue swings
/// between "all ready" and "all leased", and a plan that trusted those statistics could scan
/// the table once per lease.
const HELD: &str = "SELECT j.id FROM (VALUES {leases}) AS l
    CROSS JOIN pgqrs_jobs j ON j.id = l.column1 AND j.lease_token = l.column2
    WHERE j.leased_at IS NOT NULL";

/// `template` built for a list of `n` leases: `{held}` stands for [`HELD`].
pub(super) fn for_leases(template: &str, n: usize) -> Sql {
    let held = HELD.replace("{leases}", &placeholders(n, 2));
    Sql::built(template.replace("{held}", &held), n <= KEEP_PREPARED_UP_TO)
}

pub(super) const ARCHIVE: &str = "INSERT INTO pgqrs_archive (id, queue_id, payload, attempts, enqueued_at, archived_at, last_error, priority, unique_key, group_key)
    SELECT id, queue_id, payload, attempts, enqueued_at, ?, last_error, priority, unique_key, group_key FROM pgqrs_jobs
    WHERE id IN ({held})";
pub(super) const BURY: &str = "INSERT INTO pgqrs_dead (id, queue_id, payload, attempts, max_attempts, enqueued_at, failed_at, last_error, priority, unique_key, timeout_ms, group_key)
    SELECT id, queue_id, payload, attempts, max_attempts, enqueued_at, ?, ?, priority, unique_key, timeout_ms, group_key FROM pgqrs_jobs
    WHERE id IN ({held})";
pub(super) const DELETE: &str = "DELETE FROM pgqrs_jobs WHERE id IN ({held}) RETURNING id";
pub(super) const EXTEND: &str =
    "UPDATE pgqrs_jobs SET visible_at = ? WHERE id IN ({held}) RETURNING id";
pub(super) const RELEASE: &str =
    "UPDATE pgqrs_jobs SET visible_at = ?, leased_at = NULL, worker_id = NULL,
        attempts = max(attempts - 1, 0)
    WHERE id IN ({held}) RETURNING id";
pub(super) const RETRY: &str = "UPDATE pgqrs_jobs
    SET visible_at = ?, leased_at = NULL, worker_id = NULL, last_error = ?
    WHERE id IN ({held}) RETURNING id";

/// Multi-row insert: `?1` queue, `?2` max attempts, `?3` enqueued at, `?4` visible at, `?5`
/// priority, `?6` timeout (ms), `?7` group, then one payload per row. Kept prepared for one
/// row only.
pub(super) fn enqueue(n: usize) -> Sql {
    let mut s = String::from(
        "INSERT INTO pgqrs_jobs (queue_id, max_attempts, enqueued_at, visible_at, priority, timeout_ms, group_key, payload) VALUES ",
    );
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?{})", i + 8));
    }
    s.push_str(" RETURNING id");
    Sql::built(s, n == 1)
}

/// Unique jobs, multi-row insert: `?1` queue, `?2` max attempts, `?3` enqueued at, `?4`
/// visible at, `?5` priority, `?6` timeout (ms), `?7` group, then a payload and a key (or
/// NULL) per row. Kept prepared for one row only.
pub(super) fn enqueue_keyed(n: usize) -> Sql {
    let mut s = String::from(
        "INSERT INTO pgqrs_jobs (queue_id, max_attempts, enqueued_at, visible_at, priority, timeout_ms, group_key, payload, unique_key) VALUES ",
    );
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?{}, ?{})",
            2 * i + 8,
            2 * i + 9
        ));
    }
    s.push_str(" RETURNING id");
    Sql::built(s, n == 1)
}

/// `?first, ?first+1, …`: `n` numbered parameters.
fn numbered(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The jobs holding keys: `?1` queue, then `n` keys. Rows: key, id.
pub(super) fn live_keys(n: usize) -> Sql {
    Sql::built(
        format!(
            "SELECT unique_key, id FROM pgqrs_jobs
             WHERE queue_id = ?1 AND unique_key IN ({})",
            numbered(2, n)
        ),
        n == 1,
    )
}

/// The archived jobs holding keys: `?1` queue, `?2` archived after, then `n` keys. Rows:
/// key, id; the latest first for each key.
pub(super) fn archived_keys(n: usize) -> Sql {
    Sql::built(
        format!(
            "SELECT unique_key, id FROM pgqrs_archive
             WHERE queue_id = ?1 AND unique_key IN ({}) AND archived_at > ?2
             ORDER BY unique_key, archived_at DESC, id DESC",
            numbered(3, n)
        ),
        n == 1,
    )
}

/// `(?, ?), (?, ?)` for `rows` rows of `cols` columns.
fn placeholders(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row; rows].join(", ")
}

pub(super) const RESCUE_SELECT: &str = "SELECT id FROM pgqrs_jobs
    WHERE queue_id = ? AND visible_at <= ? AND attempts >= max_attempts LIMIT 1";
pub(super) const RESCUE_BURY: &str = "INSERT INTO pgqrs_dead (id, queue_id, payload, attempts, max_attempts, enqueued_at, failed_at, last_error, priority, unique_key, timeout_ms, group_key)
    SELECT id, queue_id, payload, attempts, max_attempts, enqueued_at, ?2,
           CASE WHEN last_error IS NULL THEN ?3 ELSE last_error || char(10) || ?3 END, priority,
           unique_key, timeout_ms, group_key
    FROM pgqrs_jobs WHERE queue_id = ?1 AND visible_at <= ?2 AND attempts >= max_attempts";
pub(super) const RESCUE_DELETE: &str =
    "DELETE FROM pgqrs_jobs WHERE queue_id = ?1 AND visible_at <= ?2 AND attempts >= max_attempts";

pub(super) const DEAD_LETTERS: &str =
    "SELECT id, payload, attempts, last_error, enqueued_at, failed_at
    FROM pgqrs_dead WHERE queue_id = ? ORDER BY id LIMIT ?";
// A requeued dead letter gets its key back, unless a job of the queue holds the key now (or,
// requeueing them all, an older dead letter with the key is requeued): then it stays a dead
// letter, to be requeued after that job is done. The deletes remove only the dead letters
// that are jobs again (ids are never reused).
pub(super) const REQUEUE_DEAD_ALL: &str = "INSERT INTO pgqrs_jobs (id, queue_id, payload, attempts, max_attempts, enqueued_at, visible_at, last_error, priority, unique_key, timeout_ms, group_key)
    SELECT id, queue_id, payload, 0, max_attempts, enqueued_at, ?2, last_error, priority, unique_key, timeout_ms, group_key
    FROM pgqrs_dead d WHERE d.queue_id = ?1
        AND (d.unique_key IS NULL OR (
            NOT EXISTS (SELECT 1 FROM pgqrs_jobs j
                        WHERE j.queue_id = ?1 AND j.unique_key = d.unique_key)
            AND d.id = (SELECT min(d2.id) FROM pgqrs_dead d2
                        WHERE d2.queue_id = ?1 AND d2.unique_key = d.unique_key)))";
pub(super) const DELETE_DEAD_ALL: &str = "DELETE FROM pgqrs_dead WHERE queue_id = ?1
    AND EXISTS (SELECT 1 FROM pgqrs_jobs j WHERE j.id = pgqrs_dead.id)";
pub(super) const REQUEUE_DEAD_ONE: &str = "INSERT INTO pgqrs_jobs (id, queue_id, payload, attempts, max_attempts, enqueued_at, visible_at, last_error, priority, unique_key, timeout_ms, group_key)
    SELECT id, queue_id, payload, 0, max_attempts, enqueued_at, ?2, last_error, priority, unique_key, timeout_ms, group_key
    FROM pgqrs_dead d WHERE d.queue_id = ?1 AND d.id = ?3
        AND (d.unique_key IS NULL OR NOT EXISTS (SELECT 1 FROM pgqrs_jobs j
                                                 WHERE j.queue_id = ?1 AND j.unique_key = d.unique_key))";
pub(super) const DELETE_DEAD_ONE: &str = "DELETE FROM pgqrs_dead WHERE queue_id = ?1 AND id = ?3
    AND EXISTS (SELECT 1 FROM pgqrs_jobs j WHERE j.id = ?3)";
pub(super) const ARCHIVED: &str = "SELECT id, payload, attempts, enqueued_at, archived_at
    FROM pgqrs_archive WHERE queue_id = ? ORDER BY archived_at DESC, id DESC LIMIT ?";

pub(super) const REGISTER_WORKER: &str = "INSERT INTO pgqrs_workers
    (hostname, pid, queue, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?) RETURNING id";
pub(super) const HEARTBEAT: &str =
    "UPDATE pgqrs_workers SET heartbeat_at = ?, status = ? WHERE id = ?";
pub(super) const LIST_WORKERS: &str =
    "SELECT id, hostname, pid, queue, started_at, heartbeat_at, status
    FROM pgqrs_workers ORDER BY id DESC";

macro_rules! run_cols {
    () => {
        "id, name, input, status, output, error, owner, lease_until, attempts, created_at, updated_at, finished_at"
    };
}

pub(super) const CREATE_RUN: &str = concat!(
    "INSERT INTO pgqrs_workflow_runs (name, input, created_at, updated_at)
        VALUES (?1, ?2, ?3, ?3) RETURNING ",
    run_cols!(),
    ""
);
pub(super) const GET_RUN: &str = concat!(
    "SELECT ",
    run_cols!(),
    " FROM pgqrs_workflow_runs WHERE id = ?1"
);
/// `?1` id, `?2` owner, `?3` now, `?4` lease until.
pub(super) const ACQUIRE_RUN: &str = concat!(
    "UPDATE pgqrs_workflow_runs
        SET status = 'running', owner = ?2, lease_until = ?4, attempts = attempts + 1,
            updated_at = ?3
        WHERE id = ?1 AND (status = 'pending'
              OR (status = 'running' AND (owner = ?2 OR lease_until IS NULL OR lease_until < ?3)))
        RETURNING ",
    run_cols!(),
    ""
);
pub(super) const LIST_RUNS: &str = concat!(
    "SELECT ",
    run_cols!(),
    " FROM pgqrs_workflow_runs WHERE (?1 IS NULL OR status = ?1)
        ORDER BY id LIMIT ?2"
);
pub(super) const RUN_LEASE: &str =
    "SELECT status, owner, coalesce(lease_until > ?2, 0) FROM pgqrs_workflow_runs WHERE id = ?1";
pub(super) const RENEW_RUN: &str =
    "UPDATE pgqrs_workflow_runs SET lease_until = ?4, updated_at = ?3
    WHERE id = ?1 AND owner = ?2 AND status = 'running' RETURNING id";
pub(super) const LIST_STEPS: &str =
    "SELECT run_id, position, name, status, output, error, attempts,
    next_retry_at FROM pgqrs_workflow_steps WHERE run_id = ? ORDER BY position";
/// `?9` owner, `?10` now.
pub(super) const RECORD_STEP: &str = "INSERT INTO pgqrs_workflow_steps
        (run_id, position, name, status, output, error, attempts, next_retry_at, created_at, updated_at)
    SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?10, ?10
    WHERE EXISTS (SELECT 1 FROM pgqrs_workflow_runs WHERE id = ?1 AND owner = ?9 AND status = 'running')
    ON CONFLICT (run_id, position) DO UPDATE
    SET name = excluded.name, status = excluded.status, output = excluded.output,
        error = excluded.error, attempts = excluded.attempts,
        next_retry_at = excluded.next_retry_at, updated_at = excluded.updated_at
    RETURNING run_id";
pub(super) const FINISH_RUN: &str = "UPDATE pgqrs_workflow_runs
    SET status = ?3, output = ?4, error = ?5, finished_at = ?6, updated_at = ?6, lease_until = NULL
    WHERE id = ?1 AND owner = ?2 AND status = 'running' RETURNING id";
pub(super) const CANCEL_RUN: &str = "UPDATE pgqrs_workflow_runs
    SET status = 'cancelled', finished_at = ?2, updated_at = ?2, lease_until = NULL
    WHERE id = ?1 AND status IN ('pending', 'running') RETURNING id";

// Inspecting and acting on jobs (the inspection API, `inspect.rs`). `?2` is now in every statement that reads
// the job table. A job row's state is `QUEUE_METRICS`' definition to the letter: ready,
// delayed, or else leased.
macro_rules! job_state {
    () => {
        "CASE WHEN visible_at <= ?2 AND attempts < max_attempts THEN 'ready'
              WHEN visible_at > ?2 AND leased_at IS NULL THEN 'delayed'
              ELSE 'leased' END"
    };
}
// Waiting: ready or delayed.
macro_rules! waiting {
    () => {
        "((visible_at <= ?2 AND attempts < max_attempts) OR (visible_at > ?2 AND leased_at IS NULL))"
    };
}
// The columns of `decode::job_in` from a job table row, with the queue's id in column 1.
macro_rules! job_cols {
    () => {
        concat!(
            "id, queue_id, payload, ",
            job_state!(),
            ", priority, attempts, max_attempts, enqueued_at, visible_at, leased_at, worker_id,
            NULL, last_error, group_key"
        )
    };
}

/// `?1` id, `?2` now: one snapshot over the three tables, by primary key.
pub(super) const GET_JOB: &str = "SELECT j.id, q.name, j.payload,
        CASE WHEN j.visible_at <= ?2 AND j.attempts < j.max_attempts THEN 'ready'
             WHEN j.visible_at > ?2 AND j.leased_at IS NULL THEN 'delayed'
             ELSE 'leased' END,
        j.priority, j.attempts, j.max_attempts, j.enqueued_at, j.visible_at, j.leased_at,
        j.worker_id, NULL, j.last_error, j.group_key
    FROM pgqrs_jobs j JOIN pgqrs_queues q ON q.id = j.queue_id WHERE j.id = ?1
    UNION ALL
    SELECT a.id, q.name, a.payload, 'archived', a.priority, a.attempts, NULL, a.enqueued_at,
        NULL, NULL, NULL, a.archived_at, a.last_error, a.group_key
    FROM pgqrs_archive a JOIN pgqrs_queues q ON q.id = a.queue_id WHERE a.id = ?1
    UNION ALL
    SELECT d.id, q.name, d.payload, 'dead', d.priority, d.attempts, d.max_attempts,
        d.enqueued_at, NULL, NULL, NULL, d.failed_at, d.last_error, d.group_key
    FROM pgqrs_dead d JOIN pgqrs_queues q ON q.id = d.queue_id WHERE d.id = ?1";

pub(super) const QUEUE_NAME: &str = "SELECT name FROM pgqrs_queues WHERE id = ?";

/// One page of a queue's jobs in one state, in claim order, after a key: three statements,
/// merged by the caller. `?1` queue, `?2` now, `?3` the key's priority, `?4` its visible_at,
/// `?5` its id, `?6` how many.
pub(super) struct ListPending {
    /// The rest of the key's priority: a range of the claim index.
    pub same_priority: &'static str,
    /// The lower priorities: a range of the claim index.
    pub lower: &'static str,
    /// Jobs on their final attempt (the small exhausted index; not in the claim index). Not
    /// run for ready jobs, which have attempts left.
    pub exhausted: &'static str,
}

macro_rules! list_pending {
    ($state:expr) => {
        ListPending {
            same_priority: concat!(
                "SELECT ",
                job_cols!(),
                " FROM pgqrs_jobs
                WHERE queue_id = ?1 AND attempts < max_attempts AND priority = ?3
                      AND visible_at >= ?4 AND (visible_at > ?4 OR id > ?5) AND ",
                $state,
                " ORDER BY visible_at, id LIMIT ?6"
            ),
            lower: concat!(
                "SELECT ",
                job_cols!(),
                " FROM pgqrs_jobs
                WHERE queue_id = ?1 AND attempts < max_attempts AND priority < ?3 AND ",
                $state,
                " ORDER BY priority DESC, visible_at, id LIMIT ?6"
            ),
            exhausted: concat!(
                "SELECT ",
                job_cols!(),
                " FROM pgqrs_jobs
                WHERE queue_id = ?1 AND attempts >= max_attempts AND ",
                $state,
                " AND (priority < ?3 OR (priority = ?3
                       AND (visible_at > ?4 OR (visible_at = ?4 AND id > ?5))))
                ORDER BY priority DESC, visible_at, id LIMIT ?6"
            ),
        }
    };
}

// The state's condition is a filter, never an index range (`+visible_at`): a range on it
// would make SQLite, after an ANALYZE that saw few rows match, search every priority and sort
// what it found, instead of reading the claim index in its order and stopping at the page's
// end.
pub(super) const LIST_READY: ListPending =
    list_pending!("+visible_at <= ?2 AND attempts < max_attempts");
pub(super) const LIST_DELAYED: ListPending =
    list_pending!("+visible_at > ?2 AND leased_at IS NULL");
pub(super) const LIST_LEASED: ListPending = list_pending!(
    "((+visible_at > ?2 AND leased_at IS NOT NULL) OR (+visible_at <= ?2 AND attempts >= max_attempts))"
);

/// Newest first after `(?2, ?3)`: a backward range of the (queue_id, archived_at) index.
pub(super) const LIST_ARCHIVED: &str = "SELECT id, queue_id, payload, 'archived', priority,
        attempts, NULL, enqueued_at, NULL, NULL, NULL, archived_at, last_error, group_key
    FROM pgqrs_archive
    WHERE queue_id = ?1 AND archived_at <= ?2 AND (archived_at < ?2 OR id < ?3)
    ORDER BY archived_at DESC, id DESC LIMIT ?4";
/// By id after `?2`: a range of the (queue_id, id) index.
pub(super) const LIST_DEAD: &str = "SELECT id, queue_id, payload, 'dead', priority, attempts,
        max_attempts, enqueued_at, NULL, NULL, NULL, failed_at, last_error, group_key
    FROM pgqrs_dead WHERE queue_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3";

// The actions: one statement on the writer, by primary key, only while the job is waiting.
/// `?1` id, `?2` now.
pub(super) const CANCEL_JOB: &str = concat!(
    "DELETE FROM pgqrs_jobs WHERE id = ?1 AND ",
    waiting!(),
    " RETURNING ",
    job_cols!()
);
/// `?1` id, `?2` now, `?3` visible at.
pub(super) const RESCHEDULE_JOB: &str = concat!(
    "UPDATE pgqrs_jobs SET visible_at = ?3, leased_at = NULL, worker_id = NULL
    WHERE id = ?1 AND ",
    waiting!(),
    " RETURNING ",
    job_cols!()
);
/// `?1` id, `?2` now, `?3` priority.
pub(super) const SET_JOB_PRIORITY: &str = concat!(
    "UPDATE pgqrs_jobs SET priority = ?3 WHERE id = ?1 AND ",
    waiting!(),
    " RETURNING ",
    job_cols!()
);

// Schedules (the time logic is the core's: these only store and fire them).
macro_rules! schedule_cols {
    () => {
        "id, name, queue, cron, every_ms, timezone, payload, workflow, priority, max_attempts,
        catch_up, paused, next_at, last_tick_at, created_at"
    };
}
pub(super) const CREATE_SCHEDULE: &str = concat!(
    "INSERT INTO pgqrs_schedules (name, queue, cron, every_ms, timezone, payload, workflow,
        priority, max_attempts, catch_up, next_at, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
    ON CONFLICT (name) DO NOTHING
    RETURNING ",
    schedule_cols!()
);
pub(super) const GET_SCHEDULE: &str = concat!(
    "SELECT ",
    schedule_cols!(),
    " FROM pgqrs_schedules WHERE name = ?1"
);
pub(super) const LIST_SCHEDULES: &str = concat!(
    "SELECT ",
    schedule_cols!(),
    " FROM pgqrs_schedules ORDER BY name"
);
/// The `pgqrs_schedules_next` index, in order.
pub(super) const UPCOMING_SCHEDULES: &str = concat!(
    "SELECT ",
    schedule_cols!(),
    " FROM pgqrs_schedules WHERE paused = 0 ORDER BY next_at LIMIT ?1"
);
pub(super) const SET_SCHEDULE_PAUSED: &str = concat!(
    "UPDATE pgqrs_schedules SET paused = ?2, next_at = COALESCE(?3, next_at) WHERE name = ?1
    RETURNING ",
    schedule_cols!()
);
pub(super) const DELETE_SCHEDULE: &str = "DELETE FROM pgqrs_schedules WHERE name = ?1 RETURNING id";
/// One firing, first statement, in the write transaction: take the tick (`?2` the tick
/// expected, NULL for "fire now"). A firer that lost the race finds `next_at` moved on.
pub(super) const TAKE_TICK: &str = "UPDATE pgqrs_schedules
    SET next_at = COALESCE(?3, next_at), last_tick_at = COALESCE(?4, last_tick_at)
    WHERE id = ?1 AND (?2 IS NULL OR (next_at = ?2 AND paused = 0))
    RETURNING id";
/// A tick's job (`?4` its tick, `?6` now: visible from the earlier).
pub(super) const FIRE_JOB: &str = "INSERT INTO pgqrs_jobs
        (queue_id, payload, max_attempts, visible_at, priority, enqueued_at)
    VALUES (?1, ?2, ?3, min(?4, ?6), ?5, ?6) RETURNING id";
