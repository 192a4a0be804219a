"""Concurrency and rate limits from Python: queue settings, groups, and workers held to the
limits on every backend (the Rust conformance cases in ``crates/pgqrs/tests/cases/limits.rs``
cover the races across stores and the claim paths)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

import pgqrs
from pgqrs.errors import QueueNotFoundError, ValidationError


async def test_limit_settings(store: pgqrs.Store) -> None:
    """Limits given at creation, shown by the queue, replaced as a whole and cleared."""
    admin = pgqrs.admin(store)
    q = await admin.create_queue("plain")
    assert (q.concurrency_limit, q.group_concurrency_limit, q.rate_limit) == (None, None, None)

    q = await admin.create_queue(
        "lim",
        concurrency_limit=10,
        group_concurrency_limit=2,
        rate_limit=(100, timedelta(minutes=1)),
    )
    assert (q.concurrency_limit, q.group_concurrency_limit, q.rate_limit) == (10, 2, (100, 60.0))
    assert [x for x in await admin.list_queues() if x.name == "lim"] == [q]

    q = await admin.set_queue_limits("lim", rate_limit=(5, 0.5))
    assert (q.concurrency_limit, q.group_concurrency_limit, q.rate_limit) == (None, None, (5, 0.5))
    q = await admin.set_queue_limits("lim")
    assert (q.concurrency_limit, q.group_concurrency_limit, q.rate_limit) == (None, None, None)
    with pytest.raises(QueueNotFoundError):
        await admin.set_queue_limits("nope", concurrency_limit=1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"concurrency_limit": 0}, "concurrency_limit"),
        ({"concurrency_limit": -2}, "concurrency_limit"),
        ({"concurrency_limit": 1.5}, "concurrency_limit"),
        ({"group_concurrency_limit": 0}, "group_concurrency_limit"),
        ({"rate_limit": (0, 1)}, "rate_limit"),
        ({"rate_limit": (-1, 1)}, "rate_limit"),
        ({"rate_limit": (5, 0)}, "rate_limit"),
        ({"rate_limit": (5, -1)}, "rate_limit"),
        ({"rate_limit": 5}, "rate_limit"),
        ({"rate_limit": (5, "1s")}, "rate_limit"),
    ],
)
async def test_bad_limits_are_refused(
    store: pgqrs.Store, kwargs: dict[str, Any], field: str
) -> None:
    """Zero, negative and wrongly typed limits: ValidationError naming the setting and, for
    counts, saying how to have no limit; nothing written."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    with pytest.raises(ValidationError) as e:
        await admin.create_queue("bad", **kwargs)
    assert e.value.field == field
    with pytest.raises(ValidationError) as e:
        await admin.set_queue_limits("q", **kwargs)
    assert e.value.field == field
    if field != "rate_limit" and isinstance(kwargs.get(field), int):
        assert "leave it out" in str(e.value)
    assert [q.name for q in await admin.list_queues()] == ["q"]


async def test_groups_are_carried_and_checked(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    one = await pgqrs.produce(store, "q", {"a": 1}, group="customer-7")
    many = await pgqrs.produce_batch(store, "q", [1, 2], group="customer-8")
    assert (await admin.get_job(one)).group == "customer-7"
    assert [(await admin.get_job(i)).group for i in many] == ["customer-8"] * 2
    plain = await pgqrs.produce(store, "q", 3)
    assert (await admin.get_job(plain)).group is None
    for bad in ["", "a\0b", "g" * 513]:
        with pytest.raises(ValidationError) as e:
            await pgqrs.produce(store, "q", 1, group=bad)
        assert e.value.field == "group"
    c = await store.consumer("q")
    msgs = await c.dequeue(10)
    for m in msgs:
        await m.archive()
    assert (await admin.get_job(one)).group == "customer-7", "kept in the archive"


async def test_concurrency_limit_holds_for_workers(store: pgqrs.Store) -> None:
    """Two workers of concurrency 4 under a queue limit of 2: never more than 2 handlers at
    once, and never more than 2 jobs leased when sampled."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q", concurrency_limit=2)
    await pgqrs.produce_batch(store, "q", list(range(30)))
    running = 0
    most = 0
    sampled = 0

    async def handler(msg: pgqrs.Message) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1

    workers = [
        pgqrs.worker(store, "q", handler, concurrency=4, poll_interval=0.02) for _ in range(2)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    deadline = time.monotonic() + 60
    while True:
        m = await admin.queue_metrics("q")
        sampled = max(sampled, m.leased)
        if m.archived == 30:
            break
        assert time.monotonic() < deadline, "the workers did not drain the queue"
        await asyncio.sleep(0.005)
    for w in workers:
        w.stop()
    await asyncio.gather(*tasks)
    assert most <= 2, f"{most} handlers at once under a limit of 2"
    assert sampled <= 2, f"{sampled} leased at once under a limit of 2"
    assert most >= 1


async def test_group_limit_lets_other_groups_through(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("q", group_concurrency_limit=1)
    flood = await pgqrs.produce_batch(store, "q", list(range(50)), group="big")
    small = await pgqrs.produce(store, "q", "small", group="small")
    loose = await pgqrs.produce(store, "q", "no group")
    c = await store.consumer("q")
    got = sorted(m.id for m in await c.dequeue(20))
    assert got == sorted([flood[0], small, loose])
    assert await c.dequeue(20) == []


async def test_rate_limit_spreads_starts(store: pgqrs.Store) -> None:
    """8 jobs at 4 per 0.5 s: a worker starts them in two windows, waiting for the second."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q", rate_limit=(4, 0.5))
    await pgqrs.produce_batch(store, "q", list(range(8)))
    starts: list[float] = []

    async def handler(msg: pgqrs.Message) -> None:
        starts.append(time.monotonic())

    w = pgqrs.worker(store, "q", handler, concurrency=8, poll_interval=0.02)
    task = asyncio.create_task(w.run())
    deadline = time.monotonic() + 30
    while len(starts) < 8:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    w.stop()
    await task
    assert starts[-1] - starts[0] >= 0.45, f"8 jobs started within {starts[-1] - starts[0]:.3f} s"
    assert sum(1 for t in starts if t - starts[0] < 0.35) <= 4
