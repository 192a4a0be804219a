"""A child process for test_workflow_processes.py (not a test module).

    python wf_child.py run DSN RUN_ID LOG [CRASH_AT MARKER]
        Execute (or resume) run RUN_ID of the 5-step ``chain`` workflow; print its result as
        JSON. Retries while another executor's lease on the run lives (WorkflowLockedError).
        With CRASH_AT=k, step k writes MARKER when it starts, then sleeps (to be SIGKILLed).
    python wf_child.py worker DSN QUEUE LOG
        A ``pgqrs.workflow_worker`` executing queued ``chain`` runs until SIGTERM.
    python wf_child.py queue_worker DSN QUEUE MARKER HOLD [GRACE]
        A ``pgqrs.worker`` run the way a program runs one (``asyncio.run``, no signal handling
        of its own), for the Ctrl-C tests: its handler writes MARKER (the job id) when it
        starts, then sleeps HOLD seconds. Prints ``ready`` once the worker is registered and
        its stats as JSON if ``run()`` returns.

Every step execution appends one line ``<run> <step> <pid>`` to LOG (O_APPEND, one write per
line); the workflow body appends ``<run> done <pid>`` after its last step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pgqrs
from pgqrs.decorators import step, workflow
from pgqrs.errors import WorkflowLockedError

STEPS = 5


def append(log: str, line: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@step
async def chain_step(ctx: pgqrs.WorkflowContext, i: int, acc: int) -> int:
    inp: dict[str, Any] = ctx.input
    append(inp["log"], f"{ctx.id} {i} {os.getpid()}")
    if inp.get("crash_at") == i and os.environ.get("PGQRS_CRASH") == "1":
        Path(inp["marker"]).write_text(str(os.getpid()))  # noqa: ASYNC240
        await asyncio.sleep(600)  # killed here
    return acc * 10 + i


@workflow
async def chain(ctx: pgqrs.WorkflowContext, inp: dict[str, Any]) -> dict[str, Any]:
    acc = 0
    for i in range(1, STEPS + 1):
        acc = await chain_step(ctx, i, acc)
    append(inp["log"], f"{ctx.id} done {os.getpid()}")
    return {"run": ctx.id, "digits": acc}


async def run(dsn: str, run_id: int) -> None:
    store = await pgqrs.connect(dsn)
    admin = pgqrs.admin(store)
    while True:
        ctx = await admin.get_workflow(run_id)
        try:
            result = await chain(ctx, ctx.input)
            break
        except WorkflowLockedError:
            await asyncio.sleep(0.1)
    print(json.dumps(result), flush=True)
    await store.close()


async def worker(dsn: str, queue: str) -> None:
    store = await pgqrs.connect(dsn)
    w = pgqrs.workflow_worker(store, queue, [chain], concurrency=4, poll_interval=0.05)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, w.stop)
    print("ready", flush=True)
    stats = await w.run()
    print(json.dumps(dataclasses.asdict(stats)), flush=True)
    await store.close()


async def queue_worker(dsn: str, queue: str, marker: str, hold: float, grace: str) -> None:
    store = await pgqrs.connect(dsn)

    async def handler(m: pgqrs.Message) -> None:
        Path(marker).write_text(str(m.id))  # noqa: ASYNC240
        await asyncio.sleep(hold)

    w = pgqrs.worker(
        store,
        queue,
        handler,
        poll_interval=0.05,
        shutdown_grace=float(grace) if grace else None,
    )
    print("ready", flush=True)
    stats = await w.run()
    print(json.dumps(dataclasses.asdict(stats)), flush=True)
    await store.close()


def main() -> None:
    mode, dsn = sys.argv[1], sys.argv[2]
    start = time.monotonic()
    if mode == "run":
        asyncio.run(run(dsn, int(sys.argv[3])))
    elif mode == "worker":
        asyncio.run(worker(dsn, sys.argv[3]))
    elif mode == "queue_worker":
        grace = sys.argv[6] if len(sys.argv) > 6 else ""
        asyncio.run(queue_worker(dsn, sys.argv[3], sys.argv[4], float(sys.argv[5]), grace))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(f"elapsed {time.monotonic() - start:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
