-- pgqrs schema version 1: queues, the hot job table, the archive and dead letters.
-- Payloads are `json`, not `jsonb`: pgqrs never queries inside them, and `json` keeps the
-- producer's text exactly (number precision included) and is cheaper to insert.
-- `{s}` is replaced by the quoted schema name.

CREATE TABLE IF NOT EXISTS {s}.pgqrs_queues (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Only jobs still to be done live here (ready, delayed, leased); finished jobs move to the
-- archive or the dead letters, so this table stays small and vacuum-friendly.
CREATE TABLE IF NOT EXISTS {s}.pgqrs_jobs (
    id           BIGSERIAL PRIMARY KEY,
    queue_id     BIGINT NOT NULL REFERENCES {s}.pgqrs_queues (id) ON DELETE CASCADE,
    payload      JSON NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    lease_token  BIGINT NOT NULL DEFAULT 0,
    worker_id    BIGINT,
    enqueued_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    visible_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    leased_at    TIMESTAMPTZ,
    last_error   TEXT
) WITH (fillfactor = 90);

-- Serves the claim query's exact filter and ORDER BY.
CREATE INDEX IF NOT EXISTS pgqrs_jobs_claim
    ON {s}.pgqrs_jobs (queue_id, visible_at, id)
    WHERE attempts < max_attempts;

-- Jobs on their final attempt; tiny. Finds those whose lease expired.
CREATE INDEX IF NOT EXISTS pgqrs_jobs_exhausted
    ON {s}.pgqrs_jobs (queue_id, visible_at)
    WHERE attempts >= max_attempts;

CREATE TABLE IF NOT EXISTS {s}.pgqrs_archive (
    id           BIGINT PRIMARY KEY,
    queue_id     BIGINT NOT NULL,
    payload      JSON NOT NULL,
    attempts     INTEGER NOT NULL,
    enqueued_at  TIMESTAMPTZ NOT NULL,
    archived_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS pgqrs_archive_queue ON {s}.pgqrs_archive (queue_id, archived_at);

CREATE TABLE IF NOT EXISTS {s}.pgqrs_dead (
    id           BIGINT PRIMARY KEY,
    queue_id     BIGINT NOT NULL,
    payload      JSON NOT NULL,
    attempts     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    enqueued_at  TIMESTAMPTZ NOT NULL,
    failed_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS pgqrs_dead_queue ON {s}.pgqrs_dead (queue_id, id);
