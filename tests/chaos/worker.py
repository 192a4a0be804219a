"""A Python worker process for the chaos harness (see run.py); the Rust twin is the
``pgqrs-chaos-worker`` bin of benches/rust, with the same command line and log format.

    python worker.py queue    --dsn DSN --queue Q --log PATH [--concurrency N] [--batch-size N]
                              [--heartbeat S] [--handler-ms N] [--max-seconds N]
    python worker.py workflow --dsn DSN --queue Q --log PATH [--concurrency N] [--handler-ms N]
                              [--max-seconds N]

``--handler-ms N``: each handler run (each step body) sleeps 0..N ms after writing its log
line, so that kills land between a run's side effect and its completion (or journal entry).

Every handler run (and every workflow step body) appends one line to the side log before it
returns, with one ``write`` on an ``O_APPEND`` file (nothing is buffered in the process, so a
SIGKILL loses no line that was written):

* ``J <job id> <pid> <unix time ns>``
* ``S <run id> <position> <nonce> <pid> <unix time ns>`` (the step then returns ``nonce``)
* ``D <run id> <pid> <unix time ns>`` (the workflow body finished its last step)

It prints ``ready`` once connected and stops gracefully on SIGTERM, when standard input
reaches end of file (the harness is gone) or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import sys
import threading
import time
from typing import Any

import pgqrs
from pgqrs.decorators import step, workflow

WORKFLOW = "chaos_chain"
STEP = "chaos_step"
STEPS = 5


class SideLog:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def line(self, text: str) -> None:
        os.write(self.fd, (text + "\n").encode())


LOG: SideLog | None = None
PAUSE_MS = 0


async def pause() -> None:
    if PAUSE_MS:
        await asyncio.sleep(random.uniform(0, PAUSE_MS / 1000))


def side_log() -> SideLog:
    assert LOG is not None
    return LOG


@step(name=STEP)
async def chaos_step(ctx: pgqrs.WorkflowContext, position: int) -> str:
    nonce = "p" + secrets.token_hex(8)
    side_log().line(f"S {ctx.id} {position} {nonce} {os.getpid()} {time.time_ns()}")
    await pause()
    return nonce


@workflow(name=WORKFLOW)
async def chaos_chain(ctx: pgqrs.WorkflowContext, inp: Any) -> list[str]:
    nonces = [await chaos_step(ctx, position) for position in range(STEPS)]
    side_log().line(f"D {ctx.id} {os.getpid()} {time.time_ns()}")
    return nonces


def make_queue_worker(store: pgqrs.Store, a: argparse.Namespace) -> pgqrs.Worker:
    log = side_log()
    pid = os.getpid()

    async def handle(msg: pgqrs.Message) -> None:
        log.line(f"J {msg.id} {pid} {time.time_ns()}")
        await pause()

    return pgqrs.worker(
        store,
        a.queue,
        handle,
        concurrency=a.concurrency,
        batch_size=a.batch_size,
        heartbeat_interval=a.heartbeat,
    )


async def main(a: argparse.Namespace) -> None:
    global LOG, PAUSE_MS
    LOG = SideLog(a.log)
    PAUSE_MS = a.handler_ms
    store = await pgqrs.connect(a.dsn)
    if a.mode == "queue":
        w = make_queue_worker(store, a)
    else:
        w = pgqrs.workflow_worker(store, a.queue, [chaos_chain], concurrency=a.concurrency)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, w.stop)
    loop.call_later(a.max_seconds, w.stop)

    def watch_stdin() -> None:
        # Raw reads: a buffered reader's lock, held by this daemon thread, would abort the
        # interpreter's shutdown.
        while os.read(0, 4096):
            pass
        loop.call_soon_threadsafe(w.stop)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print("ready", flush=True)
    stats = await w.run()
    print(json.dumps({"succeeded": stats.succeeded, "failed": stats.failed}), flush=True)
    await store.close()


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="a pgqrs worker for the chaos harness")
    p.add_argument("mode", choices=["queue", "workflow"])
    p.add_argument("--dsn", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--heartbeat", type=float, default=None, help="seconds; default: the core's")
    p.add_argument("--handler-ms", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=3600)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse(sys.argv[1:])))
