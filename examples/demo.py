"""The main job of pgqrs, end to end: `make demo`.

Enqueues 20,000 jobs in batches, processes them with 4 concurrent consumers while showing a
progress bar, then prints the throughput and the queue's final metrics: every job archived,
none lost.

By default it uses an embedded SQLite file (pgqrs-demo.db, recreated at each run); set
``DSN=postgresql://user@host/db`` to run it on PostgreSQL (it uses a ``pgqrs_demo`` schema).
``JOBS`` and ``CONCURRENCY`` change the size of the run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pgqrs

JOBS = int(os.environ.get("JOBS", "20000"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "4"))
BATCH = 500
QUEUE = "demo"


def demo_dsn() -> str:
    dsn = os.environ.get("DSN", "").strip()
    if not dsn:
        path = Path("pgqrs-demo.db").resolve()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite://{path}"
    if dsn.startswith(("postgres://", "postgresql://")) and "schema=" not in dsn:
        dsn += ("&" if "?" in dsn else "?") + "schema=pgqrs_demo"
    return dsn


def bar(done: int, total: int, started: float, width: int = 40) -> str:
    frac = done / total if total else 1.0
    filled = int(frac * width)
    rate = done / max(time.perf_counter() - started, 1e-9)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:>6}/{total} {rate:>8.0f} jobs/s"


async def main() -> int:
    dsn = demo_dsn()
    store = await pgqrs.connect(dsn)
    admin = pgqrs.admin(store)
    await admin.install()
    if any(q.name == QUEUE for q in await admin.list_queues()):
        await admin.delete_queue(QUEUE, force=True)
    await admin.create_queue(QUEUE)
    print(f"pgqrs {pgqrs.__version__} on {store.backend}: {store.dsn}")

    t0 = time.perf_counter()
    for start in range(0, JOBS, BATCH):
        n = min(BATCH, JOBS - start)
        await pgqrs.produce_batch(
            store, QUEUE, [{"i": i, "task": "resize", "size": 128} for i in range(start, start + n)]
        )
    enqueue_s = time.perf_counter() - t0
    rate = JOBS / enqueue_s
    print(f"enqueued {JOBS} jobs in batches of {BATCH}: {enqueue_s:.2f}s ({rate:,.0f} jobs/s)")

    handled = 0
    seen: set[int] = set()

    async def handler(msg: pgqrs.Message) -> None:
        nonlocal handled
        seen.add(msg.payload["i"])
        handled += 1

    worker = pgqrs.worker(store, QUEUE, handler, concurrency=CONCURRENCY, batch_size=10)
    t1 = time.perf_counter()
    task = asyncio.create_task(worker.run())
    tty = sys.stderr.isatty()
    last_line = 0.0
    while True:
        await asyncio.sleep(0.1)
        now = time.perf_counter()
        if tty:
            print("\r" + bar(handled, JOBS, t1), end="", file=sys.stderr, flush=True)
        elif now - last_line >= 1.0:
            print(bar(handled, JOBS, t1), file=sys.stderr, flush=True)
            last_line = now
        if handled >= JOBS:
            metrics = await admin.queue_metrics(QUEUE)
            if metrics.pending == 0 and metrics.archived >= JOBS:
                break
        if task.done():
            break
    worker.stop()
    stats = await task
    process_s = time.perf_counter() - t1
    print(("\r" if tty else "") + bar(handled, JOBS, t1), file=sys.stderr)

    metrics = await admin.queue_metrics(QUEUE)
    print(
        f"processed {stats.succeeded} jobs with {CONCURRENCY} concurrent consumers: "
        f"{process_s:.2f}s ({stats.succeeded / process_s:,.0f} jobs/s)"
    )
    print(
        f"queue {QUEUE!r}: ready={metrics.ready} delayed={metrics.delayed} leased={metrics.leased} "
        f"archived={metrics.archived} dead={metrics.dead}"
    )
    lost = JOBS - len(seen)
    ok = metrics.archived == JOBS and metrics.pending == 0 and metrics.dead == 0 and lost == 0
    print(f"all archived: {'yes' if ok else 'NO'}; lost: {lost}")
    await store.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
