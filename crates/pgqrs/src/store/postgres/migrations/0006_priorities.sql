-- pgqrs schema version 6: job priorities.
--
-- A claim takes the highest priority first, then the earliest visible, then the lowest id;
-- the claim index is in exactly that order, so a claim reads only the rows it takes while
-- every job has the same priority. (Rows that are not claimable yet — leased, or delayed —
-- in a higher priority than the one a claim takes from are skipped over in the index.)
-- Archive and dead letters keep the priority: a requeued dead letter gets its own back.
-- Adding a column with a constant default rewrites nothing.
ALTER TABLE {s}.pgqrs_jobs ADD COLUMN IF NOT EXISTS priority SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE {s}.pgqrs_archive ADD COLUMN IF NOT EXISTS priority SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE {s}.pgqrs_dead ADD COLUMN IF NOT EXISTS priority SMALLINT NOT NULL DEFAULT 0;

DROP INDEX IF EXISTS {s}.pgqrs_jobs_claim;
CREATE INDEX pgqrs_jobs_claim
    ON {s}.pgqrs_jobs (queue_id, priority DESC, visible_at, id)
    WHERE attempts < max_attempts;
