-- pgqrs schema version 7: unique jobs.
--
-- A job may carry a key; at most one job of a queue holds a key while it waits or runs. The
-- unique index is partial, so a job without a key (NULL) adds nothing to it: a keyless
-- enqueue writes the same index entries as before. The archive keeps the key (and already
-- has the finish time, archived_at) for enqueues with a `unique_for` window; its index is
-- partial too, so archiving a keyless job costs nothing more. Dead letters keep their key so
-- that a requeued one gets it back, but hold none: the job table's index alone decides.
-- Adding a nullable column rewrites nothing.
ALTER TABLE {s}.pgqrs_jobs ADD COLUMN IF NOT EXISTS unique_key TEXT;
ALTER TABLE {s}.pgqrs_archive ADD COLUMN IF NOT EXISTS unique_key TEXT;
ALTER TABLE {s}.pgqrs_dead ADD COLUMN IF NOT EXISTS unique_key TEXT;

CREATE UNIQUE INDEX IF NOT EXISTS pgqrs_jobs_unique
    ON {s}.pgqrs_jobs (queue_id, unique_key)
    WHERE unique_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS pgqrs_archive_unique
    ON {s}.pgqrs_archive (queue_id, unique_key, archived_at)
    WHERE unique_key IS NOT NULL;
