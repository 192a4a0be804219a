-- pgqrs schema version 7 (SQLite dialect): schedules (cron expressions and fixed intervals).
--
-- One row per schedule. The timing (`cron` with `timezone`, or `every_ms`) is read by the
-- core only, which computes every tick: the database keeps `next_at`, the next tick due
-- (microseconds since the epoch). Firing a schedule moves `next_at` on with an update
-- conditioned on the tick it expects, in the write transaction that inserts the tick's job,
-- so each tick makes one job however many workers fire at once. `pgqrs_schedules_next`
-- serves the tickers' "earliest next tick" read. The queue is named, not referenced: a
-- schedule may outlive its queue (its ticks are skipped meanwhile).
CREATE TABLE IF NOT EXISTS pgqrs_schedules (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL UNIQUE,
    queue        TEXT NOT NULL,
    cron         TEXT,
    timezone     TEXT,
    every_ms     INTEGER,
    payload      TEXT NOT NULL,
    workflow     TEXT,
    priority     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER,
    catch_up     INTEGER NOT NULL DEFAULT 0,
    paused       INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,
    last_tick_at INTEGER,
    created_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pgqrs_schedules_next ON pgqrs_schedules (next_at) WHERE paused = 0;
