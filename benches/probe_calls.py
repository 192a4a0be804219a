"""Where the time of one awaited call and of one workflow step goes (not part of `make bench`).

    .venv/bin/python benches/probe_calls.py enqueue DSN [DSN ...]
    perf stat -e context-switches .venv/bin/python benches/probe_calls.py enqueue DSN
    .venv/bin/python benches/probe_calls.py steps sqlite:///tmp/a.db "sqlite:///tmp/b.db?synchronous=normal"

``enqueue`` times 3,000 awaited single enqueues (S1's loop). ``steps`` times the two awaited
calls of a workflow step through the native API: ``begin_step`` (the ownership and cancel read)
and ``Step.complete`` (the journal commit), medians of 450 steps per DSN.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import pgqrs


async def enqueue(dsn: str, n: int = 3000) -> None:
    store = await pgqrs.connect(dsn)
    admin = pgqrs.admin(store)
    await admin.install()
    if "probe" not in [q.name for q in await admin.list_queues()]:
        await admin.create_queue("probe")
    start = time.perf_counter()
    for i in range(n):
        await pgqrs.produce(store, "probe", {"i": i, "t": 0})
    per_call = (time.perf_counter() - start) / n
    print(f"{dsn}: {per_call * 1e3:.3f} ms per awaited enqueue ({1 / per_call:,.0f}/s)")
    await admin.purge_queue("probe")
    await store.close()


async def steps(dsn: str, runs: int = 150) -> None:
    store = await pgqrs.connect(dsn)
    await pgqrs.admin(store).install()
    begin: list[float] = []
    complete: list[float] = []
    for _ in range(runs):
        native = await store._native.create_workflow("probe", "null")
        await native.start()
        for i in range(3):
            t0 = time.perf_counter()
            step = await native.begin_step(f"s{i}")
            t1 = time.perf_counter()
            assert step.output_json is None, "a new step runs"
            await step.complete("1")
            t2 = time.perf_counter()
            begin.append(t1 - t0)
            complete.append(t2 - t1)
        await native.finish_ok("1")
    b, c = statistics.median(begin) * 1e3, statistics.median(complete) * 1e3
    print(f"{dsn}: begin_step {b:.3f} ms, Step.complete {c:.3f} ms, step {b + c:.3f} ms")
    await store.close()


def main() -> None:
    what, dsns = sys.argv[1], sys.argv[2:]
    if what not in ("enqueue", "steps") or not dsns:
        raise SystemExit(__doc__)
    for dsn in dsns:
        asyncio.run(enqueue(dsn) if what == "enqueue" else steps(dsn))


if __name__ == "__main__":
    main()
