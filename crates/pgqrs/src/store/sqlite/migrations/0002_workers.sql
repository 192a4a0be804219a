-- pgqrs schema version 2 (SQLite dialect): the worker registry.

CREATE TABLE IF NOT EXISTS pgqrs_workers (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    hostname     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    queue        TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    status       TEXT NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'stopping', 'stopped'))
);
