-- pgqrs schema version 4 (SQLite dialect): job priorities.
--
-- A claim takes the highest priority first, then the earliest visible, then the lowest id;
-- the claim index is in exactly that order. Archive and dead letters keep the priority: a
-- requeued dead letter gets its own back.
ALTER TABLE pgqrs_jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pgqrs_archive ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pgqrs_dead ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;

DROP INDEX IF EXISTS pgqrs_jobs_claim;
CREATE INDEX pgqrs_jobs_claim
    ON pgqrs_jobs (queue_id, priority DESC, visible_at, id)
    WHERE attempts < max_attempts;
