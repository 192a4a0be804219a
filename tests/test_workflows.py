"""Durable workflows from Python: ``@workflow`` / ``@step`` over the engine (the Python half
of issue 4, mirroring ``crates/pgqrs/tests/workflows.rs``). The crash and multi-process
cases are in test_workflow_processes.py."""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
from collections import Counter
from typing import Any

import pytest

import pgqrs
from conftest import with_query_param
from pgqrs.decorators import Permanent, step, workflow
from pgqrs.errors import (
    NonDeterministicError,
    SerializationError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowLockedError,
    WorkflowNotFoundError,
)

# --- The seed's Python workflow, as written ------------------------------------------------


@step
async def fetch_data(ctx, url: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    # Fetch data from API
    return {"lines": 100, "data": "..."}


@step
async def process_data(ctx, data: dict) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return {"processed": True, "count": data["lines"]}


@workflow
async def data_pipeline(ctx, url: str):  # type: ignore[no-untyped-def]
    data = await fetch_data(ctx, url)
    result = await process_data(ctx, data)
    return result


async def test_seed_workflow_example(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    url = "https://example.com/data"
    ctx = await admin.create_workflow("data_pipeline", url)
    assert isinstance(ctx, pgqrs.WorkflowContext)
    assert (ctx.name, ctx.input) == ("data_pipeline", url)
    result = await data_pipeline(ctx, url)
    assert result == {"processed": True, "count": 100}

    run = await ctx.status()
    assert isinstance(run, pgqrs.WorkflowRun)
    assert (run.id, run.name, run.input, run.status, run.output, run.error) == (
        ctx.id,
        "data_pipeline",
        url,
        "succeeded",
        result,
        None,
    )
    assert run.finished and not run.lease_expired
    assert run.created_at.tzinfo is not None and run.finished_at is not None
    assert run.finished_at >= run.created_at
    steps = await ctx.steps()
    assert [(s.position, s.name, s.status, s.attempts) for s in steps] == [
        (0, "fetch_data", "succeeded", 1),
        (1, "process_data", "succeeded", 1),
    ]
    assert steps[0].output == {"lines": 100, "data": "..."}
    assert steps[1].output == result
    assert all(isinstance(s, pgqrs.StepRecord) and s.run_id == ctx.id for s in steps)
    assert await admin.workflow_steps(ctx.id) == steps
    assert (await admin.workflow_run(ctx.id)).status == "succeeded"
    assert [r.id for r in await admin.list_workflows("succeeded")] == [ctx.id]
    assert await admin.list_workflows("failed") == []
    assert "data_pipeline" in repr(ctx)


# --- A probe workflow that counts its side effects -----------------------------------------

calls: Counter[str] = Counter()
gates: dict[str, asyncio.Event] = {}
entered: dict[str, asyncio.Event] = {}


async def gate(name: str) -> None:
    """Signal that ``name`` was reached, then wait until the test opens it."""
    entered.setdefault(name, asyncio.Event()).set()
    await gates.setdefault(name, asyncio.Event()).wait()


@pytest.fixture(autouse=True)
def _reset_probes() -> None:
    calls.clear()
    gates.clear()
    entered.clear()


@step
async def one(ctx: pgqrs.WorkflowContext, x: int) -> int:
    calls["one"] += 1
    return x + 1


@step
async def two(ctx: pgqrs.WorkflowContext, x: int) -> int:
    calls["two"] += 1
    if "two" in gates:
        await gate("two")
    return x * 10


@step
async def three(ctx: pgqrs.WorkflowContext, x: int) -> dict[str, int]:
    calls["three"] += 1
    return {"result": x}


@workflow
async def probe(ctx: pgqrs.WorkflowContext, x: int) -> dict[str, int]:
    a = await one(ctx, x)
    if "between" in gates:
        await gate("between")
    b = await two(ctx, a)
    out: dict[str, int] = await three(ctx, b)
    return out


async def test_finished_run_is_idempotent(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    ctx = await admin.create_workflow("probe", 4)
    assert await probe(ctx, 4) == {"result": 50}
    assert calls == Counter(one=1, two=1, three=1)
    # Called again, with the same context or a fresh one: the stored output, nothing runs.
    assert await probe(ctx, 4) == {"result": 50}
    fresh = await admin.get_workflow(ctx.id)
    assert await probe(fresh, 4) == {"result": 50}
    assert calls == Counter(one=1, two=1, three=1)
    run = await admin.workflow_run(ctx.id)
    assert run.status == "succeeded" and run.attempts == 1, "the outcome was recorded once"


async def test_failed_run_is_final(store: pgqrs.Store) -> None:
    @workflow(name="fails_after_one")
    async def fails(ctx: pgqrs.WorkflowContext) -> None:
        await one(ctx, 1)
        raise ValueError("the body failed")

    ctx = await pgqrs.admin(store).create_workflow("fails_after_one")
    with pytest.raises(ValueError, match="the body failed"):
        await fails(ctx)
    run = await ctx.status()
    assert run.status == "failed" and run.error == "ValueError: the body failed"
    with pytest.raises(WorkflowFailedError) as exc:
        await fails(ctx)
    assert (exc.value.run_id, exc.value.error) == (ctx.id, "ValueError: the body failed")
    assert calls == Counter(one=1), "nothing ran again"


async def test_replay_after_a_crash_skips_completed_steps(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    gates["two"] = asyncio.Event()
    ctx = await admin.create_workflow("probe", 1)
    task = asyncio.create_task(probe(ctx, 1))
    await asyncio.wait_for(entered.setdefault("two", asyncio.Event()).wait(), 30)
    task.cancel()  # the executor "dies" inside step two
    with pytest.raises(asyncio.CancelledError):
        await task
    run = await ctx.status()
    assert run.status == "running", "a cancelled task leaves the run to be resumed"
    assert [s.name for s in await ctx.steps()] == ["one"]
    # Another executor cannot take it while this one's lease lives.
    other = await admin.get_workflow(ctx.id)
    with pytest.raises(WorkflowLockedError) as locked:
        await probe(other, 1)
    assert locked.value.run_id == ctx.id and locked.value.transient
    # Resume: step one is replayed from the journal, two and three run.
    gates["two"].set()
    assert await probe(ctx, 1) == {"result": 20}
    assert calls == Counter(one=1, two=2, three=1)
    assert [(s.name, s.attempts) for s in await ctx.steps()] == [
        ("one", 1),
        ("two", 1),
        ("three", 1),
    ]


async def test_resume_by_a_new_executor_after_the_lease_expires(dsn: str) -> None:
    store = await pgqrs.connect(with_query_param(dsn, "visibility_timeout", "1"))
    admin = pgqrs.admin(store)
    await admin.install()
    gates["two"] = asyncio.Event()
    ctx = await admin.create_workflow("probe", 2)
    task = asyncio.create_task(probe(ctx, 2))
    await asyncio.wait_for(entered.setdefault("two", asyncio.Event()).wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    run_id = ctx.id
    del ctx, task  # the old executor is gone: its lease is no longer renewed
    gc.collect()
    gates["two"].set()
    while True:
        fresh = await admin.get_workflow(run_id)
        try:
            result = await probe(fresh, 2)
            break
        except WorkflowLockedError:
            await asyncio.sleep(0.1)
    assert result == {"result": 30}
    assert calls == Counter(one=1, two=2, three=1)
    run = await admin.workflow_run(run_id)
    assert run.status == "succeeded" and run.attempts == 2
    await store.close()


async def test_non_determinism_is_detected(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)

    @step
    async def b(ctx: pgqrs.WorkflowContext) -> str:
        calls["b"] += 1
        return "b"

    @step
    async def x(ctx: pgqrs.WorkflowContext) -> str:
        calls["x"] += 1
        return "x"

    @workflow(name="nd")
    async def v1(ctx: pgqrs.WorkflowContext) -> str:
        await one(ctx, 0)
        await b(ctx)
        await gate("end")
        return "v1"

    @workflow(name="nd")
    async def v2(ctx: pgqrs.WorkflowContext) -> str:
        await one(ctx, 0)
        await x(ctx)  # position 1 recorded "b"
        return "v2"

    gates["end"] = asyncio.Event()
    ctx = await admin.create_workflow("nd")
    task = asyncio.create_task(v1(ctx))
    await asyncio.wait_for(entered.setdefault("end", asyncio.Event()).wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(NonDeterministicError) as exc:
        await v2(ctx)
    e = exc.value
    assert (e.run_id, e.position, e.recorded, e.called) == (ctx.id, 1, "b", "x")
    assert "b" in str(e) and "x" in str(e)
    assert calls == Counter(one=1, b=1), "no wrong replay: x never ran"
    run = await ctx.status()
    assert run.status == "failed" and run.error is not None
    assert "NonDeterministicError" in run.error


async def test_step_retries_with_backoff(store: pgqrs.Store) -> None:
    starts: list[float] = []

    @step(max_attempts=3, backoff=0.05)
    async def flaky(ctx: pgqrs.WorkflowContext) -> int:
        starts.append(time.monotonic())
        if len(starts) < 3:
            raise ConnectionError(f"transient failure {len(starts)}")
        return len(starts)

    @workflow(name="retrying")
    async def retrying(ctx: pgqrs.WorkflowContext) -> int:
        return await flaky(ctx)  # type: ignore[no-any-return]

    ctx = await pgqrs.admin(store).create_workflow("retrying")
    assert await retrying(ctx) == 3
    assert len(starts) == 3
    # Exponential with jitter from 0.05 s: at least half of 0.05, then half of 0.1.
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.025 - 0.005 and gaps[1] >= 0.05 - 0.005, gaps
    (rec,) = await ctx.steps()
    assert (rec.name, rec.status, rec.attempts, rec.output) == ("flaky", "succeeded", 3, 3)


async def test_step_retries_fixed_backoff_then_the_run_fails(store: pgqrs.Store) -> None:
    starts: list[float] = []

    @step(retry=pgqrs.RetryPolicy.fixed(3, 0.15))
    async def always(ctx: pgqrs.WorkflowContext) -> None:
        starts.append(time.monotonic())
        raise RuntimeError(f"attempt {len(starts)} failed")

    @workflow(name="doomed")
    async def doomed(ctx: pgqrs.WorkflowContext) -> None:
        await always(ctx)
        calls["after"] += 1

    ctx = await pgqrs.admin(store).create_workflow("doomed")
    with pytest.raises(RuntimeError, match="attempt 3 failed"):
        await doomed(ctx)
    assert len(starts) == 3, "max_attempts counts every attempt"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g >= 0.15 - 0.005 for g in gaps), gaps
    assert calls["after"] == 0
    (rec,) = await ctx.steps()
    assert (rec.status, rec.attempts, rec.error) == ("failed", 3, "RuntimeError: attempt 3 failed")
    run = await ctx.status()
    assert run.status == "failed" and run.error == "RuntimeError: attempt 3 failed"


async def test_permanent_errors_are_not_retried(store: pgqrs.Store) -> None:
    @step(max_attempts=5, backoff=0.01)
    async def refuses(ctx: pgqrs.WorkflowContext, kind: str) -> None:
        calls[kind] += 1
        if kind == "permanent":
            raise Permanent("bad input, retrying cannot help")
        raise KeyError("listed as non-retryable")

    refuses_keyerror = step(max_attempts=5, backoff=0.01, non_retryable=(KeyError,), name="nr")(
        refuses.__wrapped__  # type: ignore[attr-defined]
    )

    @workflow(name="permanent")
    async def wf(ctx: pgqrs.WorkflowContext, kind: str) -> None:
        if kind == "permanent":
            await refuses(ctx, kind)
        else:
            await refuses_keyerror(ctx, kind)

    admin = pgqrs.admin(store)
    for kind, exc_type in (("permanent", Permanent), ("non_retryable", KeyError)):
        ctx = await admin.create_workflow("permanent", kind)
        with pytest.raises(exc_type):
            await wf(ctx, kind)
        assert calls[kind] == 1, f"{kind}: tried once"
        (rec,) = await ctx.steps()
        assert (rec.status, rec.attempts) == ("failed", 1)
        assert (await ctx.status()).status == "failed"


async def test_cancellation_between_steps(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    gates["between"] = asyncio.Event()
    ctx = await admin.create_workflow("probe", 1)
    task = asyncio.create_task(probe(ctx, 1))
    await asyncio.wait_for(entered.setdefault("between", asyncio.Event()).wait(), 30)
    assert await admin.cancel_workflow(ctx.id) is True
    gates["between"].set()
    with pytest.raises(WorkflowCancelledError) as exc:
        await task
    assert exc.value.run_id == ctx.id
    assert calls == Counter(one=1), "no step started after the cancellation"
    run = await ctx.status()
    assert run.status == "cancelled" and run.finished
    assert [s.name for s in await ctx.steps()] == ["one"]
    assert await admin.cancel_workflow(ctx.id) is False, "already finished"
    with pytest.raises(WorkflowCancelledError):
        await probe(ctx, 1)
    assert calls == Counter(one=1)
    assert [r.id for r in await admin.list_workflows("cancelled")] == [ctx.id]


async def test_cancellation_inside_a_step(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    gates["two"] = asyncio.Event()
    ctx = await admin.create_workflow("probe", 1)
    task = asyncio.create_task(probe(ctx, 1))
    await asyncio.wait_for(entered.setdefault("two", asyncio.Event()).wait(), 30)
    assert await ctx.cancel() is True
    gates["two"].set()
    with pytest.raises(WorkflowCancelledError):
        await task
    assert calls == Counter(one=1, two=1) and calls["three"] == 0
    assert (await ctx.status()).status == "cancelled"
    assert [s.name for s in await ctx.steps()] == ["one"], "the cancelled step's output is not kept"


async def test_cancel_before_start(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    ctx = await admin.create_workflow("probe", 1)
    assert await admin.cancel_workflow(ctx.id) is True
    with pytest.raises(WorkflowCancelledError):
        await probe(ctx, 1)
    assert calls == Counter()


async def test_plain_def_steps_run_in_a_thread(store: pgqrs.Store) -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    @step
    def add(ctx: pgqrs.WorkflowContext, a: int, b: int) -> int:
        threads.append(threading.get_ident())
        return a + b

    @step(max_attempts=2, backoff=0.01)
    def flaky_sync(ctx: pgqrs.WorkflowContext, n: int) -> list[int]:
        threads.append(threading.get_ident())
        calls["flaky_sync"] += 1
        if calls["flaky_sync"] == 1:
            raise OSError("first attempt fails")
        return [n, n]

    @workflow(name="sync_steps")
    async def wf(ctx: pgqrs.WorkflowContext, n: int) -> Any:
        s = await add(ctx, n, 1)
        return await flaky_sync(ctx, s)

    ctx = await pgqrs.admin(store).create_workflow("sync_steps", 2)
    assert await wf(ctx, 2) == [3, 3]
    assert len(threads) == 3 and loop_thread not in threads
    assert [(s.name, s.attempts) for s in await ctx.steps()] == [("add", 1), ("flaky_sync", 2)]


async def test_loops_and_json_outputs(store: pgqrs.Store) -> None:
    @step
    async def item(ctx: pgqrs.WorkflowContext, i: int) -> Any:
        calls["item"] += 1
        return (i, {"sq": i * i}, None)

    @workflow(name="loop")
    async def wf(ctx: pgqrs.WorkflowContext, n: int) -> list[Any]:
        return [await item(ctx, i) for i in range(n)]

    ctx = await pgqrs.admin(store).create_workflow("loop", {"n": 4})
    assert ctx.input == {"n": 4}
    first = await wf(ctx, 4)
    assert first == [(i, {"sq": i * i}, None) for i in range(4)]
    # On replay (a finished run) the journaled JSON comes back: tuples become lists.
    assert await wf(ctx, 4) == [[i, {"sq": i * i}, None] for i in range(4)]
    steps = await ctx.steps()
    assert [(s.position, s.name) for s in steps] == [(i, "item") for i in range(4)]
    assert calls["item"] == 4


async def test_non_serializable_input_and_output(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    with pytest.raises(SerializationError) as exc:
        await admin.create_workflow("probe", {"when": {1, 2}})
    assert (exc.value.path, exc.value.type_name) == ("$.when", "set")
    assert await admin.list_workflows() == [], "no run was created"

    @step
    async def bad(ctx: pgqrs.WorkflowContext) -> Any:
        calls["bad"] += 1
        return {"ok": [1, object()]}

    @workflow(name="bad_output")
    async def wf(ctx: pgqrs.WorkflowContext) -> Any:
        await one(ctx, 1)
        return await bad(ctx)

    ctx = await admin.create_workflow("bad_output")
    with pytest.raises(SerializationError) as out:
        await wf(ctx)
    assert (out.value.path, out.value.type_name) == ("$.ok[1]", "object")
    assert "bad" in str(out.value), "the step that produced it is named"
    assert [s.name for s in await ctx.steps()] == ["one"]
    assert (await ctx.status()).status == "failed"

    @workflow(name="bad_result")
    async def wf2(ctx: pgqrs.WorkflowContext) -> Any:
        return {1, 2}

    ctx2 = await admin.create_workflow("bad_result")
    with pytest.raises(SerializationError):
        await wf2(ctx2)


async def test_workflow_argument_errors(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    with pytest.raises(TypeError):
        await probe("not a context", 1)
    with pytest.raises(TypeError):
        await one(None, 1)
    with pytest.raises(WorkflowNotFoundError) as nf:
        await admin.get_workflow(424242)
    assert nf.value.run_id == 424242
    with pytest.raises(pgqrs.errors.ValidationError):
        await admin.enqueue_workflow("q", lambda ctx: None)


async def test_workflow_worker_runs_enqueued_runs(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("wf")
    runs = [await admin.enqueue_workflow("wf", probe, i) for i in range(6)]
    by_name = await admin.enqueue_workflow("wf", "probe", 100)
    assert all(isinstance(r, pgqrs.WorkflowRun) and r.status == "pending" for r in runs)
    assert (runs[0].name, runs[0].input) == ("probe", 0)
    w = pgqrs.workflow_worker(store, "wf", [probe], concurrency=3, poll_interval=0.02)
    task = asyncio.create_task(w.run())
    try:
        for _ in range(1500):
            done = await admin.list_workflows("succeeded")
            if len(done) == 7:
                break
            await asyncio.sleep(0.02)
    finally:
        w.stop()
    stats = await task
    for r in [*runs, by_name]:
        run = await admin.workflow_run(r.id)
        x = r.input
        assert (run.status, run.output) == ("succeeded", {"result": (x + 1) * 10}), run
    assert calls == Counter(one=7, two=7, three=7)
    assert stats.succeeded == 7
    assert (await admin.queue_metrics("wf")).archived == 7


async def test_workflow_worker_fails_unknown_workflows(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("wf")
    run = await admin.enqueue_workflow("wf", "not_registered", None)
    w = pgqrs.workflow_worker(store, "wf", [probe], poll_interval=0.02)
    task = asyncio.create_task(w.run())
    try:
        for _ in range(1500):
            if (await admin.queue_metrics("wf")).delayed == 1:
                break
            await asyncio.sleep(0.02)
    finally:
        w.stop()
    stats = await task
    assert stats.failed == 1 and stats.succeeded == 0
    assert (await admin.workflow_run(run.id)).status == "pending", "the run never started"
