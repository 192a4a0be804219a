-- pgqrs schema version 1 (SQLite dialect): queues, the hot job table, archive, dead letters.
-- Timestamps are microseconds since the Unix epoch (UTC); payloads are JSON text.

CREATE TABLE IF NOT EXISTS pgqrs_queues (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- AUTOINCREMENT: a job id is never reused, so archive and dead-letter ids stay unique.
CREATE TABLE IF NOT EXISTS pgqrs_jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id     INTEGER NOT NULL REFERENCES pgqrs_queues (id) ON DELETE CASCADE,
    payload      TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    lease_token  INTEGER NOT NULL DEFAULT 0,
    worker_id    INTEGER,
    enqueued_at  INTEGER NOT NULL,
    visible_at   INTEGER NOT NULL,
    leased_at    INTEGER,
    last_error   TEXT
);

CREATE INDEX IF NOT EXISTS pgqrs_jobs_claim
    ON pgqrs_jobs (queue_id, visible_at, id)
    WHERE attempts < max_attempts;

CREATE INDEX IF NOT EXISTS pgqrs_jobs_exhausted
    ON pgqrs_jobs (queue_id, visible_at)
    WHERE attempts >= max_attempts;

CREATE TABLE IF NOT EXISTS pgqrs_archive (
    id           INTEGER PRIMARY KEY,
    queue_id     INTEGER NOT NULL,
    payload      TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    enqueued_at  INTEGER NOT NULL,
    archived_at  INTEGER NOT NULL,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS pgqrs_archive_queue ON pgqrs_archive (queue_id, archived_at);

CREATE TABLE IF NOT EXISTS pgqrs_dead (
    id           INTEGER PRIMARY KEY,
    queue_id     INTEGER NOT NULL,
    payload      TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    enqueued_at  INTEGER NOT NULL,
    failed_at    INTEGER NOT NULL,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS pgqrs_dead_queue ON pgqrs_dead (queue_id, id);
