"""Retention from Python: queue settings, the store's workflow retention, ``admin.prune`` and
workers pruning in the background (the Rust conformance cases in
``crates/pgqrs/tests/cases/retention.rs`` cover the batches and the races)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

import pgqrs
from pgqrs.decorators import step, workflow
from pgqrs.errors import QueueNotFoundError, ValidationError, WorkflowNotFoundError
from support import counts

DAY = 86400.0


async def test_queue_retention_settings(store: pgqrs.Store) -> None:
    """Defaults from the core, each setting given or changed on its own, read back by name."""
    admin = pgqrs.admin(store)
    q = await admin.create_queue("plain")
    assert (q.archive_retention, q.dead_retention) == (7 * DAY, 30 * DAY)

    q = await admin.create_queue(
        "custom", archive_retention=timedelta(hours=1), dead_retention="forever"
    )
    assert (q.archive_retention, q.dead_retention) == (3600.0, None)
    assert [x for x in await admin.list_queues() if x.name == "custom"] == [q]

    q = await admin.set_queue_retention("custom", dead_retention=1.5)
    assert (q.archive_retention, q.dead_retention) == (3600.0, 2.0), "rounded up to 2 s"
    q = await admin.set_queue_retention("custom", archive_retention="forever")
    assert (q.archive_retention, q.dead_retention) == (None, 2.0)
    q = await admin.set_queue_retention("custom")
    assert (q.archive_retention, q.dead_retention) == (None, 2.0), "nothing given, nothing changed"

    assert await admin.workflow_retention() is None, "finished runs are kept by default"
    await admin.set_workflow_retention(timedelta(days=90))
    assert await admin.workflow_retention() == 90 * DAY
    await admin.set_workflow_retention("forever")
    assert await admin.workflow_retention() is None


@pytest.mark.parametrize(
    "bad",
    [0, 0.5, -1, -0.0001, float("nan"), float("inf"), 2**70, 200 * 365 * DAY, "always", True, []],
)
async def test_bad_retentions_are_refused(store: pgqrs.Store, bad: Any) -> None:
    """Zero, negative, absurd and wrongly typed retentions: ValidationError naming the
    setting, nothing written."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q", archive_retention=60)
    with pytest.raises(ValidationError) as e:
        await admin.create_queue("bad", archive_retention=bad)
    assert e.value.field == "archive_retention"
    with pytest.raises(ValidationError) as e:
        await admin.create_queue("bad", dead_retention=bad)
    assert e.value.field == "dead_retention"
    with pytest.raises(ValidationError) as e:
        await admin.set_queue_retention("q", archive_retention=bad)
    assert e.value.field == "archive_retention"
    with pytest.raises(ValidationError) as e:
        await admin.set_workflow_retention(bad)
    assert e.value.field == "workflow_retention"
    assert [q.name for q in await admin.list_queues()] == ["q"]
    assert (await admin.list_queues())[0].archive_retention == 60.0
    assert await admin.workflow_retention() is None


async def test_prune_arguments(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    with pytest.raises(QueueNotFoundError):
        await admin.prune("nope")
    with pytest.raises(QueueNotFoundError):
        await admin.set_queue_retention("nope", archive_retention=60)
    for bad in (-1, "1", 200 * 365 * DAY):
        with pytest.raises(ValidationError) as e:
            await admin.prune(older_than=bad)  # type: ignore[arg-type]
        assert e.value.field == "older_than"
    with pytest.raises(ValidationError):
        await admin.set_workflow_retention(None)  # type: ignore[arg-type]
    assert await admin.prune() == pgqrs.Pruned(archived=0, dead=0, workflow_runs=0)


async def test_prune_on_demand(store: pgqrs.Store) -> None:
    """What is past the queue's retention goes; the rest, and a queue kept forever, stays;
    ``older_than`` replaces the settings."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q", archive_retention=1, dead_retention="forever")
    await admin.create_queue("keep", archive_retention="forever")
    for queue in ("q", "keep"):
        await pgqrs.produce_batch(store, queue, [1, 2, 3])
        await pgqrs.produce(store, queue, "doomed", max_attempts=1)

        async def handle(msg: pgqrs.Message) -> None:
            if msg.payload == "doomed":
                raise RuntimeError("boom")

        await pgqrs.consume(store, queue, handle, batch_size=10)
        assert await counts(store, queue) == (0, 0, 0, 3, 1)
    await asyncio.sleep(1.2)
    await pgqrs.produce(store, "q", "recent")
    await pgqrs.consume(store, "q", lambda msg: None)

    pruned = await admin.prune()
    assert pruned == pgqrs.Pruned(archived=3, dead=0, workflow_runs=0)
    assert pruned.total == 3
    assert await counts(store, "q") == (0, 0, 0, 1, 1), "the recent job and the dead letter stay"
    assert await counts(store, "keep") == (0, 0, 0, 3, 1)

    pruned = await admin.prune("q", older_than=0)
    assert (pruned.archived, pruned.dead) == (1, 1)
    assert await counts(store, "keep") == (0, 0, 0, 3, 1), "another queue is left alone"
    pruned = await admin.prune(older_than=timedelta(0))
    assert (pruned.archived, pruned.dead) == (3, 1)


@step
async def double(ctx: Any, n: int) -> int:
    return 2 * n


@workflow
async def doubling(ctx: Any, n: int) -> int:
    result: int = await double(ctx, n)
    return result


async def test_finished_runs_are_pruned(store: pgqrs.Store) -> None:
    """Finished runs go with their steps once past the store's retention; unfinished ones
    stay."""
    admin = pgqrs.admin(store)
    done = await admin.create_workflow("doubling", 21)
    assert await doubling(done, 21) == 42
    waiting = await admin.create_workflow("doubling", 1)
    assert (await admin.prune()).workflow_runs == 0, "kept forever by default"

    await admin.set_workflow_retention(1)
    await asyncio.sleep(1.2)
    assert (await admin.prune()).workflow_runs == 1
    with pytest.raises(WorkflowNotFoundError):
        await admin.workflow_run(done.id)
    with pytest.raises(WorkflowNotFoundError):
        await admin.workflow_steps(done.id)
    assert (await admin.workflow_run(waiting.id)).status == "pending"


async def test_worker_prunes_in_the_background(store: pgqrs.Store) -> None:
    """A running Python worker deletes its queue's archive past its retention by itself."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q", archive_retention=1)
    await pgqrs.produce_batch(store, "q", list(range(5)))
    handled: list[int] = []

    async def handle(msg: pgqrs.Message) -> None:
        handled.append(msg.payload)

    w = pgqrs.worker(store, "q", handle, poll_interval=0.02, prune_interval=0.1)
    run = asyncio.create_task(w.run())
    try:
        deadline = time.monotonic() + 20
        while len(handled) < 5 or (await counts(store, "q"))[3] > 0:
            assert time.monotonic() < deadline, f"not pruned: {await counts(store, 'q')}"
            await asyncio.sleep(0.1)
    finally:
        w.stop()
        stats = await run
    assert stats.succeeded == 5
    assert await counts(store, "q") == (0, 0, 0, 0, 0)


def test_bad_prune_interval() -> None:
    for bad in (0, -1, 2 * DAY, "1"):
        with pytest.raises(ValidationError) as e:
            pgqrs.worker(None, "q", lambda m: None, prune_interval=bad)  # type: ignore[arg-type]
        assert e.value.field == "prune_interval"
