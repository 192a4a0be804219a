-- pgqrs schema version 6 (SQLite dialect): retention of the archive, the dead letters and
-- finished workflow runs.
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
-- (No CHECK on the new columns: Turso's ADD COLUMN does not take one everywhere. The core
-- writes only positive values, and reads anything else as "forever".)
ALTER TABLE pgqrs_queues ADD COLUMN archive_retention INTEGER;
ALTER TABLE pgqrs_queues ADD COLUMN dead_retention INTEGER;

CREATE INDEX IF NOT EXISTS pgqrs_dead_failed ON pgqrs_dead (queue_id, failed_at);
CREATE INDEX IF NOT EXISTS pgqrs_workflow_runs_finished
    ON pgqrs_workflow_runs (finished_at) WHERE finished_at IS NOT NULL;

-- Job deadlines: a job's own handler timeout, in whole milliseconds (NULL: none of its own;
-- the worker's default applies, if any). Dead letters keep it for when they are requeued.
ALTER TABLE pgqrs_jobs ADD COLUMN timeout_ms INTEGER;
ALTER TABLE pgqrs_dead ADD COLUMN timeout_ms INTEGER;

-- Settings of the whole store, by name; `value` NULL means "no limit". A setting never set
-- has no row and takes the default of the pgqrs reading it.
CREATE TABLE IF NOT EXISTS pgqrs_settings (
    name       TEXT PRIMARY KEY,
    value      INTEGER,
    updated_at INTEGER NOT NULL
);
