"""Scenario driver for pgqrs (this repository), through its Python API.

    .venv/bin/python benches/pgqrs_bench.py s3 --dsn sqlite:///tmp/b.db --count 20000 \\
        --concurrency 4 --batch 50

Prints one JSON line (see benchlib). Run by benches/run.py, one fresh database per call.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import benchlib

import pgqrs
from pgqrs.decorators import step, workflow

QUEUE = "bench"
SCENARIOS = ["s1", "s1u", "s2", "s3", "s4", "s5", "tick", "mem", "mem-worker"]


async def setup(dsn: str, **limits: Any) -> pgqrs.Store:
    """A store with the bench queue; ``limits``: the queue's concurrency limits, if any."""
    store = await pgqrs.connect(dsn)
    admin = pgqrs.admin(store)
    await admin.install()
    if QUEUE not in [q.name for q in await admin.list_queues()]:
        await admin.create_queue(QUEUE, **limits)
    return store


async def prefill(store: pgqrs.Store, count: int, groups: int | None = None) -> None:
    """``count`` jobs, in batches of 500; with ``groups``, batch ``i`` in group ``i % groups``
    (so every group's jobs are spread over the whole backlog)."""
    for i, start in enumerate(range(0, count, 500)):
        n = min(500, count - start)
        payloads = [benchlib.payload(start + j) for j in range(n)]
        if groups:
            await pgqrs.produce_batch(store, QUEUE, payloads, group=f"g{i % groups}")
        else:
            await pgqrs.produce_batch(store, QUEUE, payloads)


async def check_drained(store: pgqrs.Store, count: int) -> None:
    m = await pgqrs.admin(store).queue_metrics(QUEUE)
    if m.ready or m.leased or m.archived != count:
        raise SystemExit(f"queue not drained as expected: {m} (wanted {count} archived)")


async def s1(a: Any) -> dict[str, Any]:
    store = await setup(a.dsn)
    start = time.perf_counter()
    for i in range(a.count):
        await pgqrs.produce(store, QUEUE, benchlib.payload(i))
    elapsed = time.perf_counter() - start
    await store.close()
    return {"values": {"throughput": a.count / elapsed}}


async def s1u(a: Any) -> dict[str, Any]:
    """S1, each job with a key of its own (every key new: the check, then the insert)."""
    store = await setup(a.dsn)
    start = time.perf_counter()
    for i in range(a.count):
        await pgqrs.produce(store, QUEUE, benchlib.payload(i), key=f"job-{i}")
    elapsed = time.perf_counter() - start
    await store.close()
    return {"values": {"throughput": a.count / elapsed}}


async def s2(a: Any) -> dict[str, Any]:
    store = await setup(a.dsn)
    start = time.perf_counter()
    for first in range(0, a.count, a.batch):
        n = min(a.batch, a.count - first)
        await pgqrs.produce_batch(store, QUEUE, [benchlib.payload(first + j) for j in range(n)])
    elapsed = time.perf_counter() - start
    await store.close()
    return {"values": {"throughput": a.count / elapsed}}


async def drain(
    store: pgqrs.Store, count: int, concurrency: int, batch: int, on_job: Any = None
) -> float:
    """Run a worker until ``count`` jobs were handled; returns the seconds it took (until
    ``run()`` returned, i.e. with the last completions written)."""
    handled = 0
    w: pgqrs.Worker | None = None

    if batch > 1:

        async def handler(msgs: list[pgqrs.Message]) -> None:
            nonlocal handled
            handled += len(msgs)
            if handled >= count:
                assert w is not None
                w.stop()

    else:

        async def handler(msg: pgqrs.Message) -> None:  # type: ignore[misc]
            nonlocal handled
            handled += 1
            if handled >= count:
                assert w is not None
                w.stop()

    w = pgqrs.worker(
        store, QUEUE, handler, concurrency=concurrency, batch_size=batch, batch=batch > 1
    )
    if on_job is not None:
        on_job(lambda: handled)
    start = time.perf_counter()
    stats = await w.run()
    elapsed = time.perf_counter() - start
    if stats.succeeded != count:
        raise SystemExit(f"worker handled {stats.succeeded} jobs, expected {count}")
    return elapsed


async def s3(a: Any) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if a.limit:
        limits["concurrency_limit"] = a.limit
    if a.groups:
        limits["group_concurrency_limit"] = a.group_limit
    store = await setup(a.dsn, **limits)
    await prefill(store, a.count, a.groups)
    if a.analyze:
        benchlib.analyze(a.dsn, a.analyze)
    elapsed = await drain(store, a.count, a.concurrency, a.batch)
    await check_drained(store, a.count)
    await store.close()
    return {"values": {"throughput": a.count / elapsed}}


async def s4(a: Any) -> dict[str, Any]:
    store = await setup(a.dsn)
    # The producer has a store (a pool) of its own, as another process would.
    producer = await pgqrs.connect(a.dsn)
    latencies: list[float] = []
    total = round(a.rate * a.seconds)
    warm = 10
    seen = 0
    done = asyncio.Event()

    async def handler(msg: pgqrs.Message) -> None:
        nonlocal seen
        now = time.time()
        p = msg.payload
        if not p.get("warm"):
            latencies.append(now - p["t"])
        seen += 1
        if seen >= total + warm:
            done.set()

    w = pgqrs.worker(store, QUEUE, handler, concurrency=a.concurrency)
    run = asyncio.ensure_future(w.run())
    # Warm up both pools' connections and statements, then let the worker go idle.
    for i in range(warm):
        await pgqrs.produce(producer, QUEUE, {"warm": True, "i": i})
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)
    calls = await benchlib.steady_producer(
        lambda p: pgqrs.produce(producer, QUEUE, p), a.rate, a.seconds
    )
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        w.stop()
        await run
    await producer.close()
    await store.close()
    return benchlib.latency_summary(latencies, total, a.seconds, calls)


async def tick(a: Any) -> dict[str, Any]:
    """A schedule ticking every second (cron ``* * * * * *``) and one worker of its queue,
    which fires it (the default: every worker fires due ticks). Latency: from the tick's due
    time to its job's handler starting. With ``catch_up=0`` a late firing makes the job of the
    latest due tick, so the due time is the job's enqueue time rounded down to the second
    (one clock: the database's and this process's, on one host)."""
    store = await setup(a.dsn)
    admin = pgqrs.admin(store)
    latencies: list[float] = []
    done = asyncio.Event()
    wanted = int(a.seconds)

    async def handler(msg: pgqrs.Message) -> None:
        now = time.time()
        due = int(msg.enqueued_at.timestamp())
        latencies.append(now - due)
        if len(latencies) >= wanted:
            done.set()

    w = pgqrs.worker(store, QUEUE, handler)
    run = asyncio.ensure_future(w.run())
    await asyncio.sleep(0.5)  # the worker is idle, its ticker asleep, when the schedule comes
    await admin.create_schedule("bench-tick", QUEUE, cron="* * * * * *", payload={"t": "tick"})
    try:
        await asyncio.wait_for(done.wait(), a.seconds + 30)
    finally:
        w.stop()
        await run
    await store.close()
    return benchlib.latency_summary(latencies, wanted, a.seconds)


async def s5(a: Any) -> dict[str, Any]:
    store = await setup(a.dsn)
    admin = pgqrs.admin(store)
    step_times: list[float] = []

    @step
    async def step_1(ctx: pgqrs.WorkflowContext) -> int:
        return 1

    @step
    async def step_2(ctx: pgqrs.WorkflowContext) -> int:
        return 2

    @step
    async def step_3(ctx: pgqrs.WorkflowContext) -> int:
        return 3

    steps = [step_1, step_2, step_3]
    if a.steps != len(steps):
        raise SystemExit("this driver runs 3-step workflows")

    @workflow(name="bench_wf")
    async def bench_wf(ctx: pgqrs.WorkflowContext, n: int) -> int:
        for s in steps:
            t = time.perf_counter()
            await s(ctx)
            step_times.append(time.perf_counter() - t)
        return n

    next_run = 0

    async def runner() -> None:
        nonlocal next_run
        while next_run < a.count:
            n = next_run
            next_run += 1
            ctx = await admin.create_workflow("bench_wf", {"n": n})
            await bench_wf(ctx, n)

    start = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(a.concurrency)))
    elapsed = time.perf_counter() - start
    done = await admin.list_workflows("succeeded", limit=a.count + 1)
    if len(done) != a.count:
        raise SystemExit(f"{len(done)} runs succeeded, expected {a.count}")
    await store.close()
    return {
        "values": {
            "runs_per_s": a.count / elapsed,
            "step_ms": 1000.0 * sum(step_times) / len(step_times),
            "step_p50": 1000.0 * benchlib.percentile(step_times, 50),
        },
    }


async def mem(a: Any) -> dict[str, Any]:
    """Prefill here, then drain in a child process whose RSS is sampled as it goes."""
    store = await setup(a.dsn)
    await prefill(store, a.count)
    await store.close()
    cmd = [sys.executable, __file__, "mem-worker", "--dsn", a.dsn, "--count", str(a.count)]
    cmd += ["--concurrency", str(a.concurrency), "--batch", str(a.batch)]
    child = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"the draining worker exited with {child.returncode}")
    return benchlib.json_last_line(out.decode())


async def mem_worker(a: Any) -> dict[str, Any]:
    store = await pgqrs.connect(a.dsn)
    sampler: benchlib.Sampler | None = None

    def on_job(progress: Any) -> None:
        nonlocal sampler
        sampler = benchlib.Sampler(progress)
        sampler.start()

    elapsed = await drain(store, a.count, a.concurrency, a.batch, on_job)
    assert sampler is not None
    await sampler.stop()
    await check_drained(store, a.count)
    await store.close()
    result = benchlib.memory_summary(sampler.samples, a.count)
    result["extra"]["throughput"] = a.count / elapsed
    return result


def main() -> None:
    a = benchlib.parser(__doc__ or "", SCENARIOS).parse_args()
    fn = {"s1": s1, "s1u": s1u, "s2": s2, "s3": s3, "s4": s4, "s5": s5, "tick": tick, "mem": mem}
    fn["mem-worker"] = mem_worker
    benchlib.run_async(lambda: fn[a.scenario](a))


if __name__ == "__main__":
    main()
