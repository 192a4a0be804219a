"""Job deadlines from Python: a handler that runs longer than its job's ``timeout`` (or the
worker's ``job_timeout``) is cancelled and the attempt recorded as failed."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

import pgqrs
from pgqrs.errors import ValidationError
from support import counts


async def test_job_timeout_cancels_an_async_handler(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    job = await pgqrs.produce(store, "q", "slow", timeout=0.2, max_attempts=2)
    finished: list[int] = []
    seen: list[float | None] = []

    async def handle(msg: pgqrs.Message) -> None:
        seen.append(msg.timeout)
        await asyncio.sleep(10)
        finished.append(msg.id)

    w = pgqrs.worker(
        store,
        "q",
        handle,
        poll_interval=0.02,
        retry=pgqrs.RetryPolicy.fixed(max_attempts=2, delay=0.0),
    )
    run = asyncio.create_task(w.run())
    try:
        deadline = time.monotonic() + 20
        while (await counts(store, "q"))[4] < 1:
            assert time.monotonic() < deadline, await counts(store, "q")
            await asyncio.sleep(0.05)
    finally:
        w.stop()
        stats = await run
    assert (stats.failed, stats.dead) == (2, 1)
    assert seen == [0.2, 0.2] and finished == []
    dead = await admin.dead_letters("q")
    assert dead[0].id == job
    assert dead[0].last_error == "handler exceeded its timeout of 0.2 s and was cancelled"


async def test_worker_job_timeout_and_the_jobs_own(store: pgqrs.Store) -> None:
    """The worker's default applies to jobs without a timeout; a job's own wins."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    defaulted = await pgqrs.produce(store, "q", 0.8, max_attempts=1)
    longer = await pgqrs.produce(store, "q", 0.8, max_attempts=1, timeout=timedelta(seconds=5))

    async def handle(msg: pgqrs.Message) -> None:
        await asyncio.sleep(msg.payload)

    w = pgqrs.worker(store, "q", handle, concurrency=2, poll_interval=0.02, job_timeout=0.3)
    run = asyncio.create_task(w.run())
    try:
        deadline = time.monotonic() + 20
        while sum((await counts(store, "q"))[3:]) < 2:
            assert time.monotonic() < deadline, await counts(store, "q")
            await asyncio.sleep(0.05)
    finally:
        w.stop()
        await run
    assert [d.id for d in await admin.dead_letters("q")] == [defaulted]
    assert [j.id for j in await admin.archived_jobs("q")] == [longer]


async def test_consume_enforces_the_job_timeout(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    await pgqrs.produce(store, "q", "x", timeout=0.1, max_attempts=1)

    async def handle(msg: pgqrs.Message) -> None:
        await asyncio.sleep(10)

    started = time.monotonic()
    assert await pgqrs.consume(store, "q", handle) == 1
    assert time.monotonic() - started < 5
    dead = await pgqrs.admin(store).dead_letters("q")
    assert "exceeded its timeout of 0.1 s" in (dead[0].last_error or "")


@pytest.mark.parametrize("bad", [0, -1, 8 * 86400, "1", True])
async def test_bad_timeouts(store: pgqrs.Store, bad: object) -> None:
    await pgqrs.admin(store).create_queue("q")
    with pytest.raises(ValidationError) as e:
        await pgqrs.produce(store, "q", 1, timeout=bad)  # type: ignore[arg-type]
    assert e.value.field == "timeout"
    with pytest.raises(ValidationError) as e:
        pgqrs.worker(store, "q", lambda m: None, job_timeout=bad)  # type: ignore[arg-type]
    assert e.value.field == "job_timeout"
    assert await counts(store, "q") == (0, 0, 0, 0, 0)
