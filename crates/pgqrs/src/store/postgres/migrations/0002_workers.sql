-- pgqrs schema version 2: the worker registry.

CREATE TABLE IF NOT EXISTS {s}.pgqrs_workers (
    id           BIGSERIAL PRIMARY KEY,
    hostname     TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    queue        TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    status       TEXT NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'stopping', 'stopped'))
);
