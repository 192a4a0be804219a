-- pgqrs schema version 9: schedules (cron expressions and fixed intervals).
--
-- One row per schedule. The timing (`cron` with `timezone`, or `every_ms`) is read by the
-- core only, which computes every tick: the database keeps `next_at`, the next tick due.
-- Firing a schedule moves `next_at` on with an update conditioned on the tick it expects, in
-- the transaction that inserts the tick's job, so each tick makes one job however many
-- workers fire at once. `pgqrs_schedules_next` serves the tickers' "earliest next tick"
-- read. The queue is named, not referenced: a schedule may outlive its queue (its ticks are
-- skipped meanwhile).
CREATE TABLE IF NOT EXISTS {s}.pgqrs_schedules (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    queue        TEXT NOT NULL,
    cron         TEXT,
    timezone     TEXT,
    every_ms     BIGINT CHECK (every_ms > 0),
    payload      JSON NOT NULL,
    workflow     TEXT,
    priority     SMALLINT NOT NULL DEFAULT 0,
    max_attempts INTEGER CHECK (max_attempts > 0),
    catch_up     INTEGER NOT NULL DEFAULT 0 CHECK (catch_up >= 0),
    paused       BOOLEAN NOT NULL DEFAULT false,
    next_at      TIMESTAMPTZ NOT NULL,
    last_tick_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL,
    CHECK ((cron IS NULL) <> (every_ms IS NULL))
);
CREATE INDEX IF NOT EXISTS pgqrs_schedules_next
    ON {s}.pgqrs_schedules (next_at) WHERE NOT paused;
