-- pgqrs schema version 3 (SQLite dialect): durable workflows — runs and their step journal.

CREATE TABLE IF NOT EXISTS pgqrs_workflow_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    input        TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    output       TEXT,
    error        TEXT,
    owner        TEXT,
    lease_until  INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE INDEX IF NOT EXISTS pgqrs_workflow_runs_status
    ON pgqrs_workflow_runs (status, id);

CREATE TABLE IF NOT EXISTS pgqrs_workflow_steps (
    run_id        INTEGER NOT NULL REFERENCES pgqrs_workflow_runs (id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'retrying')),
    output        TEXT,
    error         TEXT,
    attempts      INTEGER NOT NULL,
    next_retry_at INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (run_id, position)
);
