"""Scenario driver for the published pgqrs 0.15.3 (PyPI), a peer. Runs in benches/.venv-peers
(its import name, ``pgqrs``, is the same as this repository's package).

The APIs used are 0.15.3's own (read from its installed stubs and decorators):

* connecting: ``pgqrs.Config(dsn, schema=…)`` + ``pgqrs.connect_with``; the default enqueue
  rate limiter (1,000 jobs/s, burst 50) is switched off so S1/S2 measure the queue, not it;
* S1: ``producer = await store.producer(q)``; ``await producer.enqueue(payload)`` per job;
* S2: ``pgqrs.enqueue_batch(producer, payloads)``;
* S3/S4: its worker loop, ``pgqrs.dequeue().worker(consumer).batch(b).from_queue(q)
  .handle(h)`` (``.handle_batch(h)`` when b > 1) ``.poll(store)``, one consumer per concurrent
  handler (it has no concurrency option), stopped with ``consumer.interrupt()``;
* S5: ``@pgqrs.decorators.workflow`` / ``@step``; a run is triggered
  (``pgqrs.workflow().name(n).trigger(input).execute()``) and executed directly
  (``pgqrs.run().message(msg).execute()``), as its own tests do.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import benchlib

import pgqrs
from pgqrs.decorators import step, workflow

QUEUE = "bench"
SCENARIOS = ["s1", "s2", "s3", "s4", "s5", "mem"]


async def connect(dsn: str) -> Any:
    base, schema = benchlib.split_schema(dsn)
    if not base.startswith(("postgres://", "postgresql://")):
        raise SystemExit("this driver runs pgqrs 0.15.3 on PostgreSQL only")
    cfg = pgqrs.Config(base, schema=schema or "public")
    cfg.max_enqueue_per_second = None
    cfg.max_enqueue_burst = None
    return await pgqrs.connect_with(cfg)


async def setup(dsn: str) -> Any:
    store = await connect(dsn)
    await pgqrs.admin(store).install()
    await store.queue(QUEUE)
    return store


async def prefill(store: Any, count: int) -> None:
    producer = await store.producer(QUEUE)
    for start in range(0, count, 500):
        n = min(500, count - start)
        await pgqrs.enqueue_batch(producer, [benchlib.payload(start + j) for j in range(n)])


async def s1(a: Any) -> dict[str, Any]:
    store = await setup(a.dsn)
    producer = await store.producer(QUEUE)
    start = time.perf_counter()
    for i in range(a.count):
        await producer.enqueue(benchlib.payload(i))
    return {"values": {"throughput": a.count / (time.perf_counter() - start)}}


async def s2(a: Any) -> dict[str, Any]:
    store = await setup(a.dsn)
    producer = await store.producer(QUEUE)
    start = time.perf_counter()
    for first in range(0, a.count, a.batch):
        n = min(a.batch, a.count - first)
        await pgqrs.enqueue_batch(producer, [benchlib.payload(first + j) for j in range(n)])
    return {"values": {"throughput": a.count / (time.perf_counter() - start)}}


async def run_workers(
    store: Any, consumers: int, batch: int, handler: Any, until: asyncio.Event
) -> None:
    """``consumers`` worker loops until ``until`` is set; then interrupt them and wait."""
    cons = [await store.consumer(QUEUE) for _ in range(consumers)]
    tasks = []
    for c in cons:
        b = pgqrs.dequeue().worker(c).batch(batch).from_queue(QUEUE)
        b = b.handle_batch(handler) if batch > 1 else b.handle(handler)
        tasks.append(asyncio.ensure_future(b.poll(store)))
    waiter = asyncio.ensure_future(until.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    for c in cons:
        await c.interrupt()
    for t in tasks:
        try:
            await t
        except pgqrs.PgqrsError as e:  # "worker interrupted" is how poll() ends
            if "interrupted" not in str(e):
                raise
    waiter.cancel()


async def s3(a: Any) -> dict[str, Any]:
    store = await setup(a.dsn)
    await prefill(store, a.count)
    handled = 0
    done = asyncio.Event()

    async def one(msg: Any) -> bool:
        nonlocal handled
        handled += 1
        if handled >= a.count:
            done.set()
        return True

    async def many(msgs: list[Any]) -> bool:
        nonlocal handled
        handled += len(msgs)
        if handled >= a.count:
            done.set()
        return True

    start = time.perf_counter()
    await run_workers(store, a.concurrency, a.batch, many if a.batch > 1 else one, done)
    elapsed = time.perf_counter() - start
    return {"values": {"throughput": a.count / elapsed}}


async def s4(a: Any) -> dict[str, Any]:
    store = await setup(a.dsn)
    producer_store = await connect(a.dsn)  # a pool of its own, as another process would
    producer = await producer_store.producer(QUEUE)
    latencies: list[float] = []
    total = round(a.rate * a.seconds)
    warm = 10
    seen = 0
    done = asyncio.Event()

    async def handler(msg: Any) -> bool:
        nonlocal seen
        now = time.time()
        p = msg.payload
        if not p.get("warm"):
            latencies.append(now - p["t"])
        seen += 1
        if seen >= total + warm:
            done.set()
        return True

    workers = asyncio.ensure_future(run_workers(store, a.concurrency, 1, handler, done))
    for i in range(warm):
        await producer.enqueue({"warm": True, "i": i})
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)
    calls = await benchlib.steady_producer(producer.enqueue, a.rate, a.seconds)
    try:
        await asyncio.wait_for(asyncio.shield(done.wait()), 30)
    finally:
        done.set()
        await workers
    return benchlib.latency_summary(latencies, total, a.seconds, calls)


async def s5(a: Any) -> dict[str, Any]:
    store = await setup(a.dsn)
    step_times: list[float] = []

    @step
    async def step_1(ctx: Any) -> int:
        return 1

    @step
    async def step_2(ctx: Any) -> int:
        return 2

    @step
    async def step_3(ctx: Any) -> int:
        return 3

    steps = [step_1, step_2, step_3]
    if a.steps != len(steps):
        raise SystemExit("this driver runs 3-step workflows")

    @workflow(name="bench_wf")
    async def bench_wf(ctx: Any, n: int) -> int:
        for s in steps:
            t = time.perf_counter()
            await s(ctx)
            step_times.append(time.perf_counter() - t)
        return n

    await pgqrs.workflow().name("bench_wf").store(store).create()
    next_run = 0

    async def runner() -> None:
        nonlocal next_run
        while next_run < a.count:
            n = next_run
            next_run += 1
            msg = await pgqrs.workflow().name("bench_wf").store(store).trigger({"n": n}).execute()
            run = await pgqrs.run().message(msg).store(store).execute()
            await bench_wf(run, n)

    start = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(a.concurrency)))
    elapsed = time.perf_counter() - start
    runs = await (await store.get_workflow_runs()).list()
    ok = sum(1 for r in runs if r.status == pgqrs.WorkflowStatus.Success)
    if ok != a.count:
        raise SystemExit(f"{ok} runs succeeded, expected {a.count}")
    return {
        "values": {
            "runs_per_s": a.count / elapsed,
            "step_ms": 1000.0 * sum(step_times) / len(step_times),
            "step_p50": 1000.0 * benchlib.percentile(step_times, 50),
        },
    }


def main() -> None:
    a = benchlib.parser(__doc__ or "", SCENARIOS).parse_args()
    if a.scenario == "mem":
        benchlib.unsupported("not measured: the memory check is for pgqrs itself")
    else:
        fn = {"s1": s1, "s2": s2, "s3": s3, "s4": s4, "s5": s5}[a.scenario]
        benchlib.run_async(lambda: fn(a))
    # 0.15.3's native module can crash while the interpreter finalizes; the result is out.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
