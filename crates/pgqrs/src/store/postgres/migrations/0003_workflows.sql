-- pgqrs schema version 3: durable workflows — runs and their step journal.

CREATE TABLE IF NOT EXISTS {s}.pgqrs_workflow_runs (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL,
    input        JSON NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    output       JSON,
    error        TEXT,
    owner        TEXT,
    lease_until  TIMESTAMPTZ,
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS pgqrs_workflow_runs_status
    ON {s}.pgqrs_workflow_runs (status, id);

CREATE TABLE IF NOT EXISTS {s}.pgqrs_workflow_steps (
    run_id        BIGINT NOT NULL REFERENCES {s}.pgqrs_workflow_runs (id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'retrying')),
    output        JSON,
    error         TEXT,
    attempts      INTEGER NOT NULL,
    next_retry_at TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, position)
);
