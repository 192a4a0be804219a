"""Enqueue inside the caller's own transaction from a client that is not pgqrs: PostgreSQL's
SQL function ``pgqrs_enqueue`` called from psycopg. Rolled back: no job; committed: the job
is claimable, and an idle pgqrs worker (polling every 30 s) wakes within a second of the
commit. Its defaults and checks are tested in Rust (crates/pgqrs/tests/cases/sql_enqueue.rs).

PostgreSQL only: SQLite has no server-side functions that another client could call (Rust
callers use ``execute_in`` on their sqlx connection, crates/pgqrs/tests/cases/tx.rs), and
Turso is not reachable by other clients at all."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest
from psycopg.types.json import Json

import pgqrs
from conftest import without_query_param
from pgqrs.errors import JobNotFoundError
from support import counts, store_with_queue

# Far longer than the test waits: a job that starts sooner was not found by polling.
LONG_POLL = 30.0


def postgres_only(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("the SQL enqueue function is PostgreSQL's (see the module docstring)")


def libpq(dsn: str) -> tuple[str, str]:
    """The DSN psycopg takes (without pgqrs's ``schema``), and the function's qualified name."""
    schema = dict(parse_qsl(urlsplit(dsn).query))["schema"]
    return without_query_param(dsn, "schema"), f'"{schema}".pgqrs_enqueue'


async def test_rollback_no_job_commit_claimable_worker_wakes(backend: str, dsn: str) -> None:
    postgres_only(backend)
    store = await store_with_queue(dsn, "emails")
    admin = pgqrs.admin(store)
    conninfo, fn = libpq(dsn)
    started: asyncio.Queue[tuple[int, float]] = asyncio.Queue()

    async def handler(msg: pgqrs.Message) -> None:
        await started.put((msg.id, time.monotonic()))

    w = pgqrs.worker(store, "emails", handler, poll_interval=LONG_POLL)
    run = asyncio.create_task(w.run())
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        # The worker is idle: registered, listening, and past its first (empty) claim.
        channel = f"pgqrs_{fn.split('.')[0].strip(chr(34))}"
        deadline = time.monotonic() + 10
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s",
                [f"LISTEN %{channel}%"],
            )
            row = await cur.fetchone()
            if row is not None and row[0] > 0:
                break
            assert time.monotonic() < deadline, "the worker's store never listened"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)

        # Rolled back: no job, and the worker is not woken to anything.
        async with conn.transaction():
            cur = await conn.execute(f"SELECT {fn}('emails', %s)", [Json({"n": 1})])
            row = await cur.fetchone()
            assert row is not None
            rolled_back = row[0]
            raise psycopg.Rollback()
        with pytest.raises(JobNotFoundError):
            await admin.get_job(rolled_back)
        assert await counts(store, "emails") == (0, 0, 0, 0, 0)

        # Committed: invisible until the commit, then the idle worker has it at once.
        async with conn.transaction():
            cur = await conn.execute(f"SELECT {fn}('emails', %s, priority => 3)", [Json({"n": 2})])
            row = await cur.fetchone()
            assert row is not None
            job_id = row[0]
            await asyncio.sleep(0.3)
            assert started.empty(), "a worker started a job before its transaction committed"
            with pytest.raises(JobNotFoundError):
                await admin.get_job(job_id)
        committed = time.monotonic()
        got, at = await asyncio.wait_for(started.get(), timeout=2.0)
        assert got == job_id
        assert at - committed < 2.0, f"started {at - committed:.3f} s after the commit"
        print(
            f"SQL enqueue: the idle worker started the job {at - committed:.4f} s after the commit"
        )
    w.stop()
    stats = await run
    assert stats.succeeded == 1, stats
    job = await admin.get_job(job_id)
    assert (job.state, job.priority) == ("archived", 3)
    await store.close()


async def test_typed_errors_reach_psycopg(backend: str, dsn: str) -> None:
    postgres_only(backend)
    store = await store_with_queue(dsn, "q")
    conninfo, fn = libpq(dsn)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="priority"):
            await conn.execute(f"SELECT {fn}('q', %s, priority => 40000)", [Json(1)])
        with pytest.raises(psycopg.errors.UndefinedObject, match="does not exist"):
            await conn.execute(f"SELECT {fn}('nope', %s)", [Json(1)])
        cur = await conn.execute(f"SELECT {fn}('q', %s, key => 'k')", [Json(1)])
        row = await cur.fetchone()
        assert row is not None
        with pytest.raises(psycopg.errors.UniqueViolation, match=f"job {row[0]} already holds"):
            await conn.execute(
                f"SELECT {fn}('q', %s, key => 'k', on_duplicate => 'error')", [Json(2)]
            )
        # The library sees the key the function set.
        assert await pgqrs.produce(store, "q", 3, key="k") == row[0]
    await store.close()
