-- pgqrs schema version 8 (SQLite dialect): concurrency limits and rate limits (flow
-- control, see flow.rs).
--
-- A queue may cap the jobs leased at once (`concurrency_limit`), the jobs of one group
-- leased at once (`group_concurrency_limit`), and the jobs started per period (`rate_limit`
-- per `rate_period_ms`); NULL: no limit. The rate limit's current window (when it opened,
-- in microseconds, and how many jobs it took) lives on the queue's row. A claim of a queue
-- without limits reads none of this and runs the same statements as before.
-- (No CHECK on the new columns: Turso's ADD COLUMN does not take one everywhere. The core
-- writes only positive limits, and reads anything else as "no limit".)
ALTER TABLE pgqrs_queues ADD COLUMN concurrency_limit INTEGER;
ALTER TABLE pgqrs_queues ADD COLUMN group_concurrency_limit INTEGER;
ALTER TABLE pgqrs_queues ADD COLUMN rate_limit INTEGER;
ALTER TABLE pgqrs_queues ADD COLUMN rate_period_ms INTEGER;
ALTER TABLE pgqrs_queues ADD COLUMN rate_window_start INTEGER;
ALTER TABLE pgqrs_queues ADD COLUMN rate_window_count INTEGER NOT NULL DEFAULT 0;

-- A job's group (NULL: none). Archive and dead letters keep it.
ALTER TABLE pgqrs_jobs ADD COLUMN group_key TEXT;
ALTER TABLE pgqrs_archive ADD COLUMN group_key TEXT;
ALTER TABLE pgqrs_dead ADD COLUMN group_key TEXT;

-- Grouped jobs only (partial): ungrouped jobs maintain nothing more. Serves a group-limited
-- claim: the distinct groups, each group's live leases and its ready jobs.
CREATE INDEX IF NOT EXISTS pgqrs_jobs_group
    ON pgqrs_jobs (queue_id, group_key, visible_at, id)
    WHERE group_key IS NOT NULL;
