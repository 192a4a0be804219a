-- pgqrs schema version 8: retention of the archive, the dead letters and finished workflow
-- runs.
--
-- A queue keeps its archive and its dead letters for `archive_retention` and
-- `dead_retention` seconds (NULL: forever). Queues that exist before this version keep
-- everything, as they did: nothing is deleted by an upgrade. Queues created from now on get
-- the defaults of the pgqrs that creates them (see `retention.rs`).
--
-- Pruning deletes the oldest rows first through an index that orders each table by age: the
-- archive's (queue_id, archived_at) exists since version 1; dead letters get (queue_id,
-- failed_at) and finished runs (finished_at). Neither table is on the path of a claim, and
-- the job table gets no index.
ALTER TABLE {s}.pgqrs_queues ADD COLUMN IF NOT EXISTS archive_retention BIGINT
    CHECK (archive_retention > 0);
ALTER TABLE {s}.pgqrs_queues ADD COLUMN IF NOT EXISTS dead_retention BIGINT
    CHECK (dead_retention > 0);

CREATE INDEX IF NOT EXISTS pgqrs_dead_failed ON {s}.pgqrs_dead (queue_id, failed_at);
CREATE INDEX IF NOT EXISTS pgqrs_workflow_runs_finished
    ON {s}.pgqrs_workflow_runs (finished_at) WHERE finished_at IS NOT NULL;

-- Job deadlines: a job's own handler timeout, in whole milliseconds (NULL: none of its own;
-- the worker's default applies, if any). Dead letters keep it for when they are requeued.
-- A nullable column without a default rewrites nothing and costs an enqueue one null bit.
ALTER TABLE {s}.pgqrs_jobs ADD COLUMN IF NOT EXISTS timeout_ms BIGINT;
ALTER TABLE {s}.pgqrs_dead ADD COLUMN IF NOT EXISTS timeout_ms BIGINT;

-- Settings of the whole store, by name; `value` NULL means "no limit". A setting never set
-- has no row and takes the default of the pgqrs reading it.
CREATE TABLE IF NOT EXISTS {s}.pgqrs_settings (
    name       TEXT PRIMARY KEY,
    value      BIGINT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
