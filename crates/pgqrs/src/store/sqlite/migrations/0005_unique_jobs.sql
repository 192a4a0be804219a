-- pgqrs schema version 5 (SQLite dialect): unique jobs.
--
-- A job may carry a key; at most one job of a queue holds a key while it waits or runs. The
-- indexes are partial (keyless jobs, NULL, add nothing to them), so keyless enqueues,
-- archives and burials write what they wrote before. The archive keeps the key for
-- enqueues with a `unique_for` window (archived_at is the finish time). Dead letters keep
-- their key so that a requeued one gets it back, but hold none; their index finds the dead
-- letters of one key when many are requeued at once.
ALTER TABLE pgqrs_jobs ADD COLUMN unique_key TEXT;
ALTER TABLE pgqrs_archive ADD COLUMN unique_key TEXT;
ALTER TABLE pgqrs_dead ADD COLUMN unique_key TEXT;

CREATE UNIQUE INDEX IF NOT EXISTS pgqrs_jobs_unique
    ON pgqrs_jobs (queue_id, unique_key)
    WHERE unique_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS pgqrs_archive_unique
    ON pgqrs_archive (queue_id, unique_key, archived_at)
    WHERE unique_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS pgqrs_dead_unique
    ON pgqrs_dead (queue_id, unique_key)
    WHERE unique_key IS NOT NULL;
