"""Scenario driver for PgQueuer (PyPI), a peer, with its asyncpg driver. Runs in
benches/.venv-peers.

The APIs used are PgQueuer's own (read from its installed source):

* objects live in the fresh schema through ``PGQUEUER_SCHEMA`` (its ``DBSettings.db_schema``);
  ``Queries(AsyncpgDriver(conn)).install()`` creates them (durability: its default, durable);
* S1: ``await queries.enqueue("bench", payload_bytes)`` per job;
* S2: ``queries.enqueue([...entrypoints], [...payloads], [...priorities])`` per batch;
* S3: ``c`` QueueManagers, one asyncpg connection each (PgQueuer's unit of concurrency: a
  worker process), each ``qm.run(batch_size=b)`` with a per-job ``@qm.entrypoint`` handler
  (PgQueuer has no handler that receives a batch: ``b`` is how many jobs one dequeue takes);
* S4: one QueueManager with its defaults (see s4 for why not its concurrency caps); the
  producer has a connection of its own;
* S5: PgQueuer has no durable workflows.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import benchlib

ENTRY = "bench"
SCENARIOS = ["s1", "s2", "s3", "s4", "s5", "mem"]


async def connect(dsn: str) -> Any:
    import asyncpg

    base, _ = benchlib.split_schema(dsn)
    return await asyncpg.connect(base)


async def setup(dsn: str) -> Any:
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await connect(dsn)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install(create_schema=False)
    return queries


def encode(p: dict[str, Any]) -> bytes:
    return json.dumps(p).encode()


async def enqueue_batch(queries: Any, first: int, n: int) -> None:
    payloads = [encode(benchlib.payload(first + j)) for j in range(n)]
    await queries.enqueue([ENTRY] * n, payloads, [0] * n)


async def s1(a: Any) -> dict[str, Any]:
    queries = await setup(a.dsn)
    start = time.perf_counter()
    for i in range(a.count):
        await queries.enqueue(ENTRY, encode(benchlib.payload(i)))
    return {"values": {"throughput": a.count / (time.perf_counter() - start)}}


async def s2(a: Any) -> dict[str, Any]:
    queries = await setup(a.dsn)
    start = time.perf_counter()
    for first in range(0, a.count, a.batch):
        await enqueue_batch(queries, first, min(a.batch, a.count - first))
    return {"values": {"throughput": a.count / (time.perf_counter() - start)}}


async def queue_manager(dsn: str, handler: Any) -> Any:
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    qm = QueueManager(Queries(AsyncpgDriver(await connect(dsn))))
    qm.entrypoint(ENTRY)(handler)
    return qm


async def s3(a: Any) -> dict[str, Any]:
    queries = await setup(a.dsn)
    for first in range(0, a.count, 500):
        await enqueue_batch(queries, first, min(500, a.count - first))
    handled = 0
    qms: list[Any] = []

    async def handler(job: Any) -> None:
        nonlocal handled
        handled += 1
        if handled >= a.count:
            for qm in qms:
                qm.shutdown.set()

    for _ in range(a.concurrency):
        qms.append(await queue_manager(a.dsn, handler))
    start = time.perf_counter()
    await asyncio.gather(*(qm.run(batch_size=a.batch) for qm in qms))
    elapsed = time.perf_counter() - start
    left = await queries.queued_work([ENTRY])
    if handled != a.count or left:
        raise SystemExit(f"handled {handled} jobs ({left} left), expected {a.count}")
    return {"values": {"throughput": a.count / elapsed}}


async def s4(a: Any) -> dict[str, Any]:
    await setup(a.dsn)
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    producer = Queries(AsyncpgDriver(await connect(a.dsn)))
    latencies: list[float] = []
    total = round(a.rate * a.seconds)
    warm = 10
    seen = 0
    qm: Any = None

    async def handler(job: Any) -> None:
        nonlocal seen
        now = time.time()
        p = json.loads(job.payload)
        if not p.get("warm"):
            latencies.append(now - p["t"])
        seen += 1
        if seen >= total + warm:
            qm.shutdown.set()

    # PgQueuer's defaults (no cap on in-flight jobs). Its caps made it slower here: with
    # ``entrypoint(concurrency_limit=4)`` the queue backed up (p50 of seconds at 200 jobs/s),
    # with ``run(batch_size=2, max_concurrent_tasks=4)`` p99 rose ~1.6x. A no-op handler never
    # has more than a few jobs in flight anyway.
    qm = await queue_manager(a.dsn, handler)
    run = asyncio.ensure_future(qm.run())
    for i in range(warm):
        await producer.enqueue(ENTRY, encode({"warm": True, "i": i}))
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)
    calls = await benchlib.steady_producer(
        lambda p: producer.enqueue(ENTRY, encode(p)), a.rate, a.seconds
    )
    try:
        await asyncio.wait_for(asyncio.shield(run), 30)
    finally:
        qm.shutdown.set()
        await run
    return benchlib.latency_summary(latencies, total, a.seconds, calls)


def main() -> None:
    a = benchlib.parser(__doc__ or "", SCENARIOS).parse_args()
    base, schema = benchlib.split_schema(a.dsn)
    if not base.startswith(("postgres://", "postgresql://")):
        raise SystemExit("PgQueuer runs on PostgreSQL only")
    if schema:
        os.environ["PGQUEUER_SCHEMA"] = schema
    if a.scenario == "s5":
        benchlib.unsupported("PgQueuer has no durable workflows (no journaled steps)")
    elif a.scenario == "mem":
        benchlib.unsupported("not measured: the memory check is for pgqrs itself")
    else:
        fn = {"s1": s1, "s2": s2, "s3": s3, "s4": s4}[a.scenario]
        benchlib.run_async(lambda: fn(a))


if __name__ == "__main__":
    main()
