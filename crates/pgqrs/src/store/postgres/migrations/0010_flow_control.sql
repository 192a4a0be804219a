-- pgqrs schema version 10: concurrency limits and rate limits (flow control, see flow.rs).
--
-- A queue may cap the jobs leased at once (`concurrency_limit`), the jobs of one group
-- leased at once (`group_concurrency_limit`), and the jobs started per period (`rate_limit`
-- per `rate_period_ms`); NULL: no limit. The rate limit's current window (when it opened,
-- how many jobs it took) lives on the same row, which a limited claim locks anyway. A claim
-- of a queue without limits reads none of this and runs the same statement as before.
ALTER TABLE {s}.pgqrs_queues ADD COLUMN IF NOT EXISTS concurrency_limit INTEGER
    CHECK (concurrency_limit > 0);
ALTER TABLE {s}.pgqrs_queues ADD COLUMN IF NOT EXISTS group_concurrency_limit INTEGER
    CHECK (group_concurrency_limit > 0);
ALTER TABLE {s}.pgqrs_queues ADD COLUMN IF NOT EXISTS rate_limit INTEGER
    CHECK (rate_limit > 0);
ALTER TABLE {s}.pgqrs_queues ADD COLUMN IF NOT EXISTS rate_period_ms BIGINT
    CHECK (rate_period_ms > 0);
ALTER TABLE {s}.pgqrs_queues ADD COLUMN IF NOT EXISTS rate_window_start TIMESTAMPTZ;
ALTER TABLE {s}.pgqrs_queues ADD COLUMN IF NOT EXISTS rate_window_count INTEGER NOT NULL DEFAULT 0;

-- A job's group (NULL: none). Archive and dead letters keep it (a requeued dead letter gets
-- it back). A nullable column without a default rewrites nothing.
ALTER TABLE {s}.pgqrs_jobs ADD COLUMN IF NOT EXISTS group_key TEXT;
ALTER TABLE {s}.pgqrs_archive ADD COLUMN IF NOT EXISTS group_key TEXT;
ALTER TABLE {s}.pgqrs_dead ADD COLUMN IF NOT EXISTS group_key TEXT;

-- Grouped jobs only (partial): a job without a group has no entry, so enqueues and claims
-- of ungrouped jobs maintain nothing more. Serves a group-limited claim: the distinct groups
-- (one descent each, a loose index scan), each group's live leases (the range after now)
-- and its ready jobs (the range up to now, in visible order).
CREATE INDEX IF NOT EXISTS pgqrs_jobs_group
    ON {s}.pgqrs_jobs (queue_id, group_key, visible_at, id)
    WHERE group_key IS NOT NULL;
