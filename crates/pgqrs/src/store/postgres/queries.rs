//! The PostgreSQL backend's SQL. `{s}` stands for the quoted schema name.

/// Numbered migrations, applied in order by `install`.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_queues_and_jobs.sql")),
    (2, include_str!("migrations/0002_workers.sql")),
    (3, include_str!("migrations/0003_workflows.sql")),
    (4, include_str!("migrations/0004_jobs_without_fk.sql")),
    (5, include_str!("migrations/0005_lease_tokens.sql")),
    (6, include_str!("migrations/0006_priorities.sql")),
    (7, include_str!("migrations/0007_unique_jobs.sql")),
    (8, include_str!("migrations/0008_retention.sql")),
    (9, include_str!("migrations/0009_schedules.sql")),
    (10, include_str!("migrations/0010_flow_control.sql")),
    (11, include_str!("migrations/0011_sql_enqueue.sql")),
];

/// The first version with the SQL enqueue function, which reads its defaults and bounds from
/// the settings that `install()` writes ([`crate::limits::sql_enqueue_settings`]).
pub(super) const SQL_ENQUEUE_VERSION: i64 = 11;

pub(super) const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS {s}.pgqrs_schema_version (
    version      BIGINT PRIMARY KEY,
    installed_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

macro_rules! queries {
    ($($name:ident = $sql:expr;)*) => {
        /// Every statement, with the schema filled in, built once per store.
        pub(super) struct Queries { $(pub $name: sqlx::SqlStr,)* }
        impl Queries {
            pub(super) fn new(schema: &str) -> Self {
                Queries { $($name: sqlx::AssertSqlSafe(std::sync::Arc::<str>::from(
                    $sql.replace("{s}", schema))).into_sql_str(),)* }
            }
        }
    };
}

use sqlx::SqlSafeStr;

// Inspecting jobs (the inspection API, `inspect.rs`). A job row's state is `queue_metrics`' definition to the
// letter: ready, delayed, or else leased.
macro_rules! job_state {
    () => {
        "CASE WHEN visible_at <= now() AND attempts < max_attempts THEN 'ready'
              WHEN visible_at > now() AND leased_at IS NULL THEN 'delayed'
              ELSE 'leased' END"
    };
}
// Waiting: ready or delayed.
macro_rules! waiting {
    () => {
        "((visible_at <= now() AND attempts < max_attempts)
          OR (visible_at > now() AND leased_at IS NULL))"
    };
}
// The columns of `decode::job` from a job table row; `$queue`: the queue's name, or its id.
macro_rules! job_cols {
    ($($queue:tt)*) => {
        concat!(
            "id, ",
            $($queue)*,
            ", payload, ",
            job_state!(),
            ", priority::int, attempts, max_attempts, enqueued_at, visible_at, leased_at,
            worker_id, NULL::timestamptz, last_error, group_key"
        )
    };
}
macro_rules! queue_name {
    () => {
        "(SELECT q.name FROM {s}.pgqrs_queues q WHERE q.id = queue_id)"
    };
}
// One page of a queue's jobs in a state (`$state`, its condition) in claim order, after the
// key (`$2` priority, `$3` visible_at, `$4` id): the rest of the key's priority, the lower
// priorities (both ranges of the claim index), and the jobs on their final attempt (the small
// exhausted index; not in the claim index).
macro_rules! list_pending {
    ($state:expr) => {
        concat!(
            "SELECT ",
            job_cols!("queue_id"),
            " FROM (
            (SELECT * FROM {s}.pgqrs_jobs
             WHERE queue_id = $1 AND attempts < max_attempts AND priority = $2::int
                   AND (visible_at, id) > ($3::timestamptz, $4::bigint) AND ",
            $state,
            "
             ORDER BY visible_at, id LIMIT $5)
            UNION ALL
            (SELECT * FROM {s}.pgqrs_jobs
             WHERE queue_id = $1 AND attempts < max_attempts AND priority < $2::int AND ",
            $state,
            "
             ORDER BY priority DESC, visible_at, id LIMIT $5)
            UNION ALL
            (SELECT * FROM {s}.pgqrs_jobs
             WHERE queue_id = $1 AND attempts >= max_attempts AND ",
            $state,
            "
                   AND (priority < $2::int OR (priority = $2::int
                        AND (visible_at, id) > ($3::timestamptz, $4::bigint))))
        ) j
        ORDER BY priority DESC, visible_at, id LIMIT $5"
        )
    };
}

// The columns of `decode::schedule`.
macro_rules! schedule_cols {
    () => {
        "id, name, queue, cron, every_ms, timezone, payload, workflow, priority::int,
        max_attempts, catch_up, paused, next_at, last_tick_at, created_at"
    };
}

// Plans that hold whatever the statistics say. A queue table swings between "all ready" and
// "all leased" within seconds, so its statistics (autovacuum's ANALYZE) are always stale, and
// prepared statements switch to generic plans after five runs. So:
// - a statement on given jobs finds them by id only: `j.id = ANY($ids)` can only be served by
//   the primary key. The lease check is a filter on the rows found (`j.lease_token =
//   ANY($tokens)`: tokens come from one sequence, so a token names one lease of one job), never
//   a join with the id list, which the planner may turn around into a scan of the whole table
//   per id when it believes that few jobs are leased;
// - a statement that picks jobs by a condition picks their ids first (through the claim or the
//   exhausted index) and then touches them with `= ANY(ARRAY(…))`, never with a join or an
//   `IN (…)` semi-join that a generic plan may turn into a hash join over a sequential scan;
// - per-lease values (a retry's delay and error) are looked up by the row's own token.
// `plans.rs` checks every plan after ANALYZE in both states, generic and custom.
queries! {
    schema_version = "SELECT max(version) FROM {s}.pgqrs_schema_version";
    version_table_exists = "SELECT to_regclass(format('%s.pgqrs_schema_version', $1::text)) IS NOT NULL";

    create_queue = "INSERT INTO {s}.pgqrs_queues (name, archive_retention, dead_retention,
            concurrency_limit, group_concurrency_limit, rate_limit, rate_period_ms)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (name) DO NOTHING
        RETURNING id, name, created_at, archive_retention, dead_retention,
            concurrency_limit::bigint, group_concurrency_limit::bigint, rate_limit::bigint, rate_period_ms";
    get_queue = "SELECT id, name, created_at, archive_retention, dead_retention,
            concurrency_limit::bigint, group_concurrency_limit::bigint, rate_limit::bigint, rate_period_ms
        FROM {s}.pgqrs_queues WHERE name = $1";
    list_queues = "SELECT id, name, created_at, archive_retention, dead_retention,
            concurrency_limit::bigint, group_concurrency_limit::bigint, rate_limit::bigint, rate_period_ms
        FROM {s}.pgqrs_queues ORDER BY name";
    // $2/$4: whether to set the archive/dead retention to $3/$5 (NULL: forever).
    set_queue_retention = "UPDATE {s}.pgqrs_queues
        SET archive_retention = CASE WHEN $2 THEN $3::bigint ELSE archive_retention END,
            dead_retention = CASE WHEN $4 THEN $5::bigint ELSE dead_retention END
        WHERE name = $1
        RETURNING id, name, created_at, archive_retention, dead_retention,
            concurrency_limit::bigint, group_concurrency_limit::bigint, rate_limit::bigint, rate_period_ms";
    // Replaces every limit; the rate window starts afresh.
    set_queue_limits = "UPDATE {s}.pgqrs_queues
        SET concurrency_limit = $2, group_concurrency_limit = $3, rate_limit = $4,
            rate_period_ms = $5, rate_window_start = NULL, rate_window_count = 0
        WHERE name = $1
        RETURNING id, name, created_at, archive_retention, dead_retention,
            concurrency_limit::bigint, group_concurrency_limit::bigint, rate_limit::bigint, rate_period_ms";

    // Flow control (`flow.rs`): a claim of a queue with limits, in one transaction.
    // 1. Lock the queue's row (`FOR NO KEY UPDATE`: limited claims of the queue wait for one
    //    another; enqueues, which take `FOR KEY SHARE`, do not) and read its limits, its rate
    //    window and the time after the lock was granted.
    lock_limits = "SELECT concurrency_limit::bigint, group_concurrency_limit::bigint,
            rate_limit::bigint, rate_period_ms,
            (EXTRACT(EPOCH FROM rate_window_start) * 1000000)::bigint, rate_window_count::bigint,
            (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint
        FROM {s}.pgqrs_queues WHERE id = $1 FOR NO KEY UPDATE";
    // 2. The live leases, in a statement after the lock (its snapshot sees every lease
    //    committed before): per priority present (a loose index scan, as in `claim`), the
    //    range of the claim index after now, plus the final attempts (exhausted index). Reads
    //    the queue's leased and delayed jobs, not its ready ones.
    count_live = "WITH RECURSIVE p(pr) AS (
            (SELECT priority FROM {s}.pgqrs_jobs
             WHERE queue_id = $1 AND attempts < max_attempts
             ORDER BY priority DESC LIMIT 1)
            UNION ALL
            SELECT (SELECT j.priority FROM {s}.pgqrs_jobs j
                    WHERE j.queue_id = $1 AND j.attempts < j.max_attempts AND j.priority < p.pr
                    ORDER BY j.priority DESC LIMIT 1)
            FROM p WHERE p.pr IS NOT NULL
        )
        SELECT (SELECT count(*) FROM p CROSS JOIN LATERAL (
                    SELECT 1 FROM {s}.pgqrs_jobs
                    WHERE queue_id = $1 AND priority = p.pr AND visible_at > now()
                          AND attempts < max_attempts AND leased_at IS NOT NULL) l)
             + (SELECT count(*) FROM {s}.pgqrs_jobs
                WHERE queue_id = $1 AND attempts >= max_attempts AND visible_at > now()
                      AND leased_at IS NOT NULL)";
    // 3a. With a group limit ($5): the groups present (`g`, a loose scan of the group index),
    //    each group's free places (`free`: the limit less its live leases, the group index's
    //    range after now), up to that many of its ready jobs in visible order (`gc`), and the
    //    ready jobs without a group per priority (`uc`, the claim index); of those, the first
    //    $2 in claim order. A group at its limit reads no ready job, so a flood of one group
    //    never hides the others' jobs.
    claim_grouped = "WITH RECURSIVE g(k) AS (
            (SELECT group_key FROM {s}.pgqrs_jobs
             WHERE queue_id = $1 AND group_key IS NOT NULL ORDER BY group_key LIMIT 1)
            UNION ALL
            SELECT (SELECT j.group_key FROM {s}.pgqrs_jobs j
                    WHERE j.queue_id = $1 AND j.group_key IS NOT NULL AND j.group_key > g.k
                    ORDER BY j.group_key LIMIT 1)
            FROM g WHERE g.k IS NOT NULL
        ), free AS (
            SELECT g.k, $5 - (SELECT count(*) FROM {s}.pgqrs_jobs j
                              WHERE j.queue_id = $1 AND j.group_key = g.k
                                    AND j.visible_at > now() AND j.leased_at IS NOT NULL) AS n
            FROM g WHERE g.k IS NOT NULL
        ), gc AS (
            SELECT r.* FROM free CROSS JOIN LATERAL (
                SELECT id, priority, visible_at FROM {s}.pgqrs_jobs j
                WHERE j.queue_id = $1 AND j.group_key = free.k AND j.visible_at <= now()
                      AND j.attempts < j.max_attempts
                ORDER BY j.visible_at, j.id
                LIMIT greatest(least(free.n, $2), 0)
                FOR UPDATE SKIP LOCKED
            ) r
        ), p(pr) AS (
            (SELECT priority FROM {s}.pgqrs_jobs
             WHERE queue_id = $1 AND attempts < max_attempts
             ORDER BY priority DESC LIMIT 1)
            UNION ALL
            SELECT (SELECT j.priority FROM {s}.pgqrs_jobs j
                    WHERE j.queue_id = $1 AND j.attempts < j.max_attempts AND j.priority < p.pr
                    ORDER BY j.priority DESC LIMIT 1)
            FROM p WHERE p.pr IS NOT NULL
        ), uc AS (
            SELECT r.* FROM p CROSS JOIN LATERAL (
                SELECT id, priority, visible_at FROM {s}.pgqrs_jobs
                WHERE queue_id = $1 AND priority = p.pr AND visible_at <= now()
                      AND attempts < max_attempts AND group_key IS NULL
                ORDER BY visible_at, id
                LIMIT $2
                FOR UPDATE SKIP LOCKED
            ) r
        ), c AS (
            SELECT id FROM (SELECT * FROM gc UNION ALL SELECT * FROM uc) x
            ORDER BY priority DESC, visible_at, id LIMIT $2
        )
        UPDATE {s}.pgqrs_jobs j
        SET attempts = j.attempts + 1, lease_token = nextval('{s}.pgqrs_lease_tokens'),
            visible_at = now() + make_interval(secs => $3), leased_at = now(), worker_id = $4
        WHERE j.id = ANY (ARRAY(SELECT id FROM c))
        RETURNING j.id, j.payload, j.attempts, j.max_attempts, j.enqueued_at, j.visible_at,
                  j.last_error, j.lease_token, j.priority::int, j.timeout_ms";
    // 3b. Without a group limit: `claim` itself, for the jobs the limits leave.
    // 4. The rate window after the claim ($2: its start in microseconds, $3: jobs taken).
    save_window = "UPDATE {s}.pgqrs_queues
        SET rate_window_start = to_timestamp($2::float8 / 1000000), rate_window_count = $3
        WHERE id = $1";
    lock_queue = "SELECT id FROM {s}.pgqrs_queues WHERE name = $1 FOR UPDATE";
    count_leased = "SELECT count(*) FROM {s}.pgqrs_jobs
        WHERE queue_id = $1 AND leased_at IS NOT NULL AND visible_at > now()";
    delete_queue_archive = "DELETE FROM {s}.pgqrs_archive WHERE queue_id = $1";
    delete_queue_dead = "DELETE FROM {s}.pgqrs_dead WHERE queue_id = $1";
    delete_queue = "DELETE FROM {s}.pgqrs_queues WHERE id = $1";
    purge_queue = "DELETE FROM {s}.pgqrs_jobs WHERE queue_id = $1";
    queue_metrics = "SELECT
            count(*) FILTER (WHERE visible_at <= now() AND attempts < max_attempts),
            count(*) FILTER (WHERE visible_at > now() AND leased_at IS NULL),
            count(*) FILTER (WHERE (visible_at > now() AND leased_at IS NOT NULL)
                                OR (visible_at <= now() AND attempts >= max_attempts)),
            COALESCE(EXTRACT(EPOCH FROM now() - min(enqueued_at)
                FILTER (WHERE visible_at <= now() AND attempts < max_attempts)), 0)::float8,
            (SELECT count(*) FROM {s}.pgqrs_archive WHERE queue_id = $1),
            (SELECT count(*) FROM {s}.pgqrs_dead WHERE queue_id = $1)
        FROM {s}.pgqrs_jobs WHERE queue_id = $1";

    // $6 channel, $7 queue name, $8 whether to notify: the NOTIFY rides along in the same
    // statement (an InitPlan evaluated once), so waking workers costs no extra round trip.
    //
    // The jobs table has no foreign key (it would be checked once per row): `q` locks the
    // queue's row once per statement instead, and an enqueue to a queue deleted meanwhile
    // inserts nothing (`delete_queue` holds that row `FOR UPDATE` while it deletes the jobs).
    enqueue_one = "WITH q AS (
            SELECT id FROM {s}.pgqrs_queues WHERE id = $1 FOR KEY SHARE
        ), ins AS (
            INSERT INTO {s}.pgqrs_jobs (queue_id, payload, max_attempts, visible_at, priority, timeout_ms, group_key)
            SELECT q.id, $2::json, $3, COALESCE($4, now() + make_interval(secs => $5)), $9, $10, $11 FROM q
            RETURNING id
        )
        SELECT id, (SELECT pg_notify($6, $7) WHERE $8) FROM ins";
    enqueue_many = "WITH q AS (
            SELECT id FROM {s}.pgqrs_queues WHERE id = $1 FOR KEY SHARE
        ), ins AS (
            INSERT INTO {s}.pgqrs_jobs (queue_id, payload, max_attempts, visible_at, priority, timeout_ms, group_key)
            SELECT q.id, p::json, $3, COALESCE($4, now() + make_interval(secs => $5)), $9, $10, $11
            FROM q, unnest($2::text[]) WITH ORDINALITY AS t(p, n) ORDER BY n
            RETURNING id
        )
        SELECT id, (SELECT pg_notify($6, $7) WHERE $8) FROM ins";

    // Unique jobs ($10 one key or NULL per payload, no key twice; $11 the unique_for window
    // in seconds or NULL; $12 insert nothing if any key is held; $13 the jobs' timeout_ms). `live` and `arch` read one
    // snapshot, in which a job with the key is either still in the job table or already in
    // the archive (archiving moves it in one statement), so a key held in the snapshot is
    // never missed. A key taken by an enqueue that committed after the snapshot (or has not
    // committed yet: the unique index makes the insert wait for it) is skipped by ON CONFLICT
    // and comes back with no id; the caller runs the statement again for it, in a new
    // snapshot. Ids are drawn in the payloads' order, and rows inserted in key order, so two
    // batches sharing keys never wait for each other in a cycle. Rows: (position from 1, id
    // or NULL, whether new).
    enqueue_unique = "WITH q AS (
            SELECT id FROM {s}.pgqrs_queues WHERE id = $1 FOR KEY SHARE
        ), t AS (
            SELECT nextval('{s}.pgqrs_jobs_id_seq') AS id, p, k, n
            FROM unnest($2::text[], $10::text[]) WITH ORDINALITY AS t(p, k, n)
        ), live AS (
            SELECT unique_key AS k, id FROM {s}.pgqrs_jobs
            WHERE queue_id = $1 AND unique_key IS NOT NULL AND unique_key = ANY($10::text[])
        ), arch AS (
            SELECT DISTINCT ON (unique_key) unique_key AS k, id FROM {s}.pgqrs_archive
            WHERE $11::float8 IS NOT NULL AND queue_id = $1
                  AND unique_key IS NOT NULL AND unique_key = ANY($10::text[])
                  AND archived_at > now() - make_interval(secs => $11::float8)
            ORDER BY unique_key, archived_at DESC, id DESC
        ), held AS (
            SELECT k, id FROM live
            UNION ALL
            SELECT k, id FROM arch WHERE k NOT IN (SELECT k FROM live)
        ), ins AS (
            INSERT INTO {s}.pgqrs_jobs (id, queue_id, payload, max_attempts, visible_at, priority, unique_key, timeout_ms, group_key)
            SELECT t.id, q.id, t.p::json, $3, COALESCE($4, now() + make_interval(secs => $5)), $9, t.k, $13::bigint, $14::text
            FROM q, t
            WHERE (t.k IS NULL OR t.k NOT IN (SELECT k FROM held))
                  AND NOT ($12 AND EXISTS (SELECT 1 FROM held))
            ORDER BY t.k
            ON CONFLICT (queue_id, unique_key) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING id
        )
        SELECT t.n, COALESCE(i.id, h.id), i.id IS NOT NULL,
               (SELECT pg_notify($6, $7) WHERE $8 AND EXISTS (SELECT 1 FROM ins))
        FROM t LEFT JOIN ins i ON i.id = t.id LEFT JOIN held h ON h.k = t.k
        ORDER BY t.n";
    // The queue's row, for an enqueue that placed nothing: was the queue deleted?
    queue_exists = "SELECT count(*) FROM {s}.pgqrs_queues WHERE id = $1";

    // Priorities: the claim visits the priorities present in the queue from the highest down
    // (`p`: one index descent each, a loose index scan) and takes from each, in visible-then-id
    // order, what it still needs (`c`). Each take is a range of the claim index that ends at
    // the first row not visible yet, so leased and delayed jobs are never read; with one
    // priority in use that is one descent and one range.
    claim = "WITH RECURSIVE p(pr) AS (
            (SELECT priority FROM {s}.pgqrs_jobs
             WHERE queue_id = $1 AND attempts < max_attempts
             ORDER BY priority DESC LIMIT 1)
            UNION ALL
            SELECT (SELECT j.priority FROM {s}.pgqrs_jobs j
                    WHERE j.queue_id = $1 AND j.attempts < j.max_attempts AND j.priority < p.pr
                    ORDER BY j.priority DESC LIMIT 1)
            FROM p WHERE p.pr IS NOT NULL
        ), c AS (
            SELECT r.id FROM p CROSS JOIN LATERAL (
                SELECT id FROM {s}.pgqrs_jobs
                WHERE queue_id = $1 AND priority = p.pr AND visible_at <= now()
                      AND attempts < max_attempts
                ORDER BY visible_at, id
                LIMIT $2
                FOR UPDATE SKIP LOCKED
            ) r
            LIMIT $2
        )
        UPDATE {s}.pgqrs_jobs j
        SET attempts = j.attempts + 1, lease_token = nextval('{s}.pgqrs_lease_tokens'),
            visible_at = now() + make_interval(secs => $3), leased_at = now(), worker_id = $4
        WHERE j.id = ANY (ARRAY(SELECT id FROM c))
        RETURNING j.id, j.payload, j.attempts, j.max_attempts, j.enqueued_at, j.visible_at,
                  j.last_error, j.lease_token, j.priority::int, j.timeout_ms";

    archive = "WITH d AS (
            DELETE FROM {s}.pgqrs_jobs j
            WHERE j.id = ANY($1::bigint[]) AND j.lease_token = ANY($2::bigint[]) AND j.leased_at IS NOT NULL
            RETURNING j.id, j.queue_id, j.payload, j.attempts, j.enqueued_at, j.last_error, j.priority,
                      j.unique_key, j.group_key
        ), a AS (
            INSERT INTO {s}.pgqrs_archive (id, queue_id, payload, attempts, enqueued_at, last_error, priority, unique_key, group_key)
            SELECT id, queue_id, payload, attempts, enqueued_at, last_error, priority, unique_key, group_key FROM d
        )
        SELECT id FROM d";
    delete = "DELETE FROM {s}.pgqrs_jobs j
        WHERE j.id = ANY($1::bigint[]) AND j.lease_token = ANY($2::bigint[]) AND j.leased_at IS NOT NULL
        RETURNING j.id";
    retry = "UPDATE {s}.pgqrs_jobs j
        SET visible_at = now() + make_interval(
                secs => ($3::float8[])[array_position($2::bigint[], j.lease_token)]),
            leased_at = NULL, worker_id = NULL,
            last_error = ($4::text[])[array_position($2::bigint[], j.lease_token)]
        WHERE j.id = ANY($1::bigint[]) AND j.lease_token = ANY($2::bigint[]) AND j.leased_at IS NOT NULL
        RETURNING j.id";
    bury = "WITH d AS (
            DELETE FROM {s}.pgqrs_jobs j
            WHERE j.id = ANY($1::bigint[]) AND j.lease_token = ANY($2::bigint[]) AND j.leased_at IS NOT NULL
            RETURNING j.id, j.queue_id, j.payload, j.attempts, j.max_attempts, j.enqueued_at, j.priority,
                      j.unique_key, j.timeout_ms, j.group_key,
                      ($3::text[])[array_position($2::bigint[], j.lease_token)] AS err
        ), a AS (
            INSERT INTO {s}.pgqrs_dead (id, queue_id, payload, attempts, max_attempts, enqueued_at, last_error, priority, unique_key, timeout_ms, group_key)
            SELECT id, queue_id, payload, attempts, max_attempts, enqueued_at, err, priority, unique_key, timeout_ms, group_key FROM d
        )
        SELECT id FROM d";
    extend = "UPDATE {s}.pgqrs_jobs j SET visible_at = now() + make_interval(secs => $3)
        WHERE j.id = ANY($1::bigint[]) AND j.lease_token = ANY($2::bigint[]) AND j.leased_at IS NOT NULL
        RETURNING j.id";
    release = "UPDATE {s}.pgqrs_jobs j
        SET visible_at = now() + make_interval(secs => $3), leased_at = NULL, worker_id = NULL,
            attempts = greatest(j.attempts - 1, 0)
        WHERE j.id = ANY($1::bigint[]) AND j.lease_token = ANY($2::bigint[]) AND j.leased_at IS NOT NULL
        RETURNING j.id";
    rescue = "WITH d AS (
            DELETE FROM {s}.pgqrs_jobs
            WHERE id = ANY (ARRAY(
                SELECT id FROM {s}.pgqrs_jobs
                WHERE queue_id = $1 AND visible_at <= now() AND attempts >= max_attempts
                FOR UPDATE SKIP LOCKED))
            RETURNING id, queue_id, payload, attempts, max_attempts, enqueued_at, last_error, priority,
                      unique_key, timeout_ms, group_key
        )
        INSERT INTO {s}.pgqrs_dead (id, queue_id, payload, attempts, max_attempts, enqueued_at, last_error, priority, unique_key, timeout_ms, group_key)
        SELECT id, queue_id, payload, attempts, max_attempts, enqueued_at,
               concat_ws(E'\\n', last_error, $2::text), priority, unique_key, timeout_ms, group_key FROM d";
    dead_letters = "SELECT d.id, d.payload, d.attempts, d.last_error, d.enqueued_at, d.failed_at
        FROM {s}.pgqrs_dead d WHERE d.queue_id = $1 ORDER BY d.id LIMIT $2";
    // A requeued dead letter gets its key back, unless a job of the queue holds the key now:
    // then it stays a dead letter (not counted), to be requeued after that job is done. The
    // dead letters are locked first, so two concurrent requeues move each one once.
    requeue_dead = "WITH d AS (
            SELECT id, queue_id, payload, max_attempts, enqueued_at, last_error, priority, unique_key, timeout_ms, group_key
            FROM {s}.pgqrs_dead WHERE id = ANY($2::bigint[]) AND queue_id = $1
            ORDER BY id FOR UPDATE
        ), ins AS (
            INSERT INTO {s}.pgqrs_jobs (id, queue_id, payload, attempts, max_attempts, enqueued_at, visible_at, last_error, priority, unique_key, timeout_ms, group_key)
            SELECT id, queue_id, payload, 0, max_attempts, enqueued_at, now(), last_error, priority, unique_key, timeout_ms, group_key
            FROM d ORDER BY id
            ON CONFLICT (queue_id, unique_key) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING id
        )
        DELETE FROM {s}.pgqrs_dead WHERE id = ANY (ARRAY(SELECT id FROM ins))";
    requeue_all_dead = "WITH d AS (
            SELECT id, queue_id, payload, max_attempts, enqueued_at, last_error, priority, unique_key, timeout_ms, group_key
            FROM {s}.pgqrs_dead WHERE queue_id = $1
            ORDER BY id FOR UPDATE
        ), ins AS (
            INSERT INTO {s}.pgqrs_jobs (id, queue_id, payload, attempts, max_attempts, enqueued_at, visible_at, last_error, priority, unique_key, timeout_ms, group_key)
            SELECT id, queue_id, payload, 0, max_attempts, enqueued_at, now(), last_error, priority, unique_key, timeout_ms, group_key
            FROM d ORDER BY id
            ON CONFLICT (queue_id, unique_key) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING id
        )
        DELETE FROM {s}.pgqrs_dead WHERE id = ANY (ARRAY(SELECT id FROM ins))";
    archived = "SELECT id, payload, attempts, enqueued_at, archived_at
        FROM {s}.pgqrs_archive WHERE queue_id = $1 ORDER BY archived_at DESC, id DESC LIMIT $2";

    // Retention: the oldest rows first, through the index that orders each table by age
    // ($2: seconds; $3: rows per statement). `SKIP LOCKED`: workers pruning at once take
    // different rows and never wait for one another (nor for a requeue of dead letters).
    prune_archive = "DELETE FROM {s}.pgqrs_archive WHERE id = ANY (ARRAY(
            SELECT id FROM {s}.pgqrs_archive
            WHERE queue_id = $1 AND archived_at < now() - make_interval(secs => $2)
            ORDER BY archived_at LIMIT $3
            FOR UPDATE SKIP LOCKED))";
    prune_dead = "DELETE FROM {s}.pgqrs_dead WHERE id = ANY (ARRAY(
            SELECT id FROM {s}.pgqrs_dead
            WHERE queue_id = $1 AND failed_at < now() - make_interval(secs => $2)
            ORDER BY failed_at LIMIT $3
            FOR UPDATE SKIP LOCKED))";
    // Steps go with their run (ON DELETE CASCADE, through the steps' primary key).
    prune_runs = "DELETE FROM {s}.pgqrs_workflow_runs WHERE id = ANY (ARRAY(
            SELECT id FROM {s}.pgqrs_workflow_runs
            WHERE finished_at < now() - make_interval(secs => $1)
                  AND status IN ('succeeded', 'failed', 'cancelled')
            ORDER BY finished_at LIMIT $2
            FOR UPDATE SKIP LOCKED))";
    get_setting = "SELECT value FROM {s}.pgqrs_settings WHERE name = $1";
    set_setting = "INSERT INTO {s}.pgqrs_settings (name, value) VALUES ($1, $2)
        ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()";

    register_worker = "INSERT INTO {s}.pgqrs_workers (hostname, pid, queue) VALUES ($1, $2, $3) RETURNING id";
    heartbeat = "UPDATE {s}.pgqrs_workers SET heartbeat_at = now(), status = $2 WHERE id = $1";
    list_workers = "SELECT id, hostname, pid, queue, started_at, heartbeat_at, status
        FROM {s}.pgqrs_workers ORDER BY id DESC";

    create_run = "INSERT INTO {s}.pgqrs_workflow_runs (name, input) VALUES ($1, $2::json)
        RETURNING id, name, input, status, output, error, owner, lease_until, attempts,
                  created_at, updated_at, finished_at";
    get_run = "SELECT id, name, input, status, output, error, owner, lease_until, attempts,
                  created_at, updated_at, finished_at
        FROM {s}.pgqrs_workflow_runs WHERE id = $1";
    acquire_run = "UPDATE {s}.pgqrs_workflow_runs
        SET status = 'running', owner = $2, lease_until = now() + make_interval(secs => $3),
            attempts = attempts + 1, updated_at = now()
        WHERE id = $1 AND (status = 'pending'
              OR (status = 'running' AND (owner = $2 OR lease_until IS NULL OR lease_until < now())))
        RETURNING id, name, input, status, output, error, owner, lease_until, attempts,
                  created_at, updated_at, finished_at";
    run_lease = "SELECT status, owner, coalesce(lease_until > now(), false)
        FROM {s}.pgqrs_workflow_runs WHERE id = $1";
    renew_run = "UPDATE {s}.pgqrs_workflow_runs
        SET lease_until = now() + make_interval(secs => $3), updated_at = now()
        WHERE id = $1 AND owner = $2 AND status = 'running' RETURNING id";
    list_steps = "SELECT run_id, position, name, status, output, error, attempts, next_retry_at
        FROM {s}.pgqrs_workflow_steps WHERE run_id = $1 ORDER BY position";
    record_step = "INSERT INTO {s}.pgqrs_workflow_steps
            (run_id, position, name, status, output, error, attempts, next_retry_at)
        SELECT $1, $2, $3, $4, $5::json, $6, $7,
               CASE WHEN $8::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $8) END
        WHERE EXISTS (SELECT 1 FROM {s}.pgqrs_workflow_runs
                      WHERE id = $1 AND owner = $9 AND status = 'running')
        ON CONFLICT (run_id, position) DO UPDATE
        SET name = excluded.name, status = excluded.status, output = excluded.output,
            error = excluded.error, attempts = excluded.attempts,
            next_retry_at = excluded.next_retry_at, updated_at = now()
        RETURNING run_id";
    finish_run = "UPDATE {s}.pgqrs_workflow_runs
        SET status = $3, output = $4::json, error = $5, finished_at = now(), updated_at = now(),
            lease_until = NULL
        WHERE id = $1 AND owner = $2 AND status = 'running' RETURNING id";
    cancel_run = "UPDATE {s}.pgqrs_workflow_runs
        SET status = 'cancelled', finished_at = now(), updated_at = now(), lease_until = NULL
        WHERE id = $1 AND status IN ('pending', 'running') RETURNING id";
    list_runs = "SELECT id, name, input, status, output, error, owner, lease_until, attempts,
                  created_at, updated_at, finished_at
        FROM {s}.pgqrs_workflow_runs ORDER BY id LIMIT $1";
    // Served by the (status, id) index: never an `$1 IS NULL OR …` that no index can serve.
    list_runs_by_status = "SELECT id, name, input, status, output, error, owner, lease_until,
                  attempts, created_at, updated_at, finished_at
        FROM {s}.pgqrs_workflow_runs WHERE status = $1 ORDER BY id LIMIT $2";

    // Inspecting and acting on jobs: one snapshot over the three tables, by primary key.
    get_job = concat!(
        "SELECT ", job_cols!(queue_name!()), " FROM {s}.pgqrs_jobs WHERE id = $1
        UNION ALL
        SELECT id, ", queue_name!(), ", payload, 'archived'::text, priority::int, attempts,
               NULL::int, enqueued_at, NULL::timestamptz, NULL::timestamptz, NULL::bigint,
               archived_at, last_error, group_key
        FROM {s}.pgqrs_archive WHERE id = $1
        UNION ALL
        SELECT id, ", queue_name!(), ", payload, 'dead'::text, priority::int, attempts,
               max_attempts, enqueued_at, NULL::timestamptz, NULL::timestamptz, NULL::bigint,
               failed_at, last_error, group_key
        FROM {s}.pgqrs_dead WHERE id = $1");
    list_ready = list_pending!("visible_at <= now() AND attempts < max_attempts");
    list_delayed = list_pending!("visible_at > now() AND leased_at IS NULL");
    list_leased = list_pending!(
        "((visible_at > now() AND leased_at IS NOT NULL)
          OR (visible_at <= now() AND attempts >= max_attempts))");
    // Newest first, after `($2, $3)`: a backward range of the (queue_id, archived_at) index.
    list_archived = "SELECT id, queue_id, payload, 'archived'::text, priority::int, attempts,
               NULL::int, enqueued_at, NULL::timestamptz, NULL::timestamptz, NULL::bigint,
               archived_at, last_error, group_key
        FROM {s}.pgqrs_archive
        WHERE queue_id = $1 AND archived_at <= $2 AND (archived_at < $2 OR id < $3)
        ORDER BY archived_at DESC, id DESC LIMIT $4";
    // By id after `$2`: a range of the (queue_id, id) index.
    list_dead = "SELECT id, queue_id, payload, 'dead'::text, priority::int, attempts,
               max_attempts, enqueued_at, NULL::timestamptz, NULL::timestamptz, NULL::bigint,
               failed_at, last_error, group_key
        FROM {s}.pgqrs_dead WHERE queue_id = $1 AND id > $2 ORDER BY id LIMIT $3";
    // The actions: by primary key, only while the job is waiting. A claim that locked the row
    // first makes these wait for it and then re-check the condition on the claimed row.
    cancel_job = concat!(
        "DELETE FROM {s}.pgqrs_jobs WHERE id = $1 AND ", waiting!(),
        " RETURNING ", job_cols!(queue_name!()));
    reschedule_job = concat!(
        "UPDATE {s}.pgqrs_jobs
        SET visible_at = COALESCE($2, now() + make_interval(secs => $3)),
            leased_at = NULL, worker_id = NULL
        WHERE id = $1 AND ", waiting!(),
        " RETURNING ", job_cols!(queue_name!()));
    set_job_priority = concat!(
        "UPDATE {s}.pgqrs_jobs SET priority = $2 WHERE id = $1 AND ", waiting!(),
        " RETURNING ", job_cols!(queue_name!()));

    // Schedules. Creating or resuming one also tells the tickers of every process ($n the
    // channel, $n+1 whether to notify): it may be due before their next read.
    create_schedule = concat!(
        "WITH ins AS (
            INSERT INTO {s}.pgqrs_schedules (name, queue, cron, every_ms, timezone, payload,
                workflow, priority, max_attempts, catch_up, next_at, created_at)
            VALUES ($1, $2, $3, $4, $5, $6::json, $7, $8, $9, $10, $11, $12)
            ON CONFLICT (name) DO NOTHING
            RETURNING ", schedule_cols!(), "
        )
        SELECT *, (SELECT pg_notify($13, ':schedules') WHERE $14) FROM ins");
    get_schedule = concat!("SELECT ", schedule_cols!(), " FROM {s}.pgqrs_schedules WHERE name = $1");
    list_schedules = concat!("SELECT ", schedule_cols!(), " FROM {s}.pgqrs_schedules ORDER BY name");
    // The `pgqrs_schedules_next` index, in order.
    upcoming_schedules = concat!(
        "SELECT ", schedule_cols!(), " FROM {s}.pgqrs_schedules
        WHERE NOT paused ORDER BY next_at LIMIT $1");
    set_schedule_paused = concat!(
        "WITH u AS (
            UPDATE {s}.pgqrs_schedules SET paused = $2, next_at = COALESCE($3, next_at)
            WHERE name = $1
            RETURNING ", schedule_cols!(), "
        )
        SELECT *, (SELECT pg_notify($4, ':schedules') WHERE $5 AND NOT $2) FROM u");
    delete_schedule = "DELETE FROM {s}.pgqrs_schedules WHERE name = $1 RETURNING id";
    // One firing, first statement: take the tick ($2 the tick expected, NULL for "fire now").
    // A concurrent firer of the same tick waits for this row's lock, then finds `next_at`
    // changed and updates nothing.
    take_tick = "UPDATE {s}.pgqrs_schedules
        SET next_at = COALESCE($3, next_at), last_tick_at = COALESCE($4, last_tick_at)
        WHERE id = $1 AND ($2::timestamptz IS NULL OR (next_at = $2 AND NOT paused))
        RETURNING id";
    queue_for_fire = "SELECT id FROM {s}.pgqrs_queues WHERE name = $1 FOR KEY SHARE";
    // A tick's job: visible from its tick, or now if that is earlier (the firer's clock may
    // be ahead of the database's).
    fire_job = "INSERT INTO {s}.pgqrs_jobs (queue_id, payload, max_attempts, visible_at, priority)
        VALUES ($1, $2::json, $3, LEAST($4, now()), $5) RETURNING id";
    notify = "SELECT pg_notify($1, $2)";
}
