"""A worker and other processes: Ctrl-C (SIGINT) stops a worker process cleanly, and an idle
worker wakes up for a job another process enqueues long before its poll interval.

The worker child is ``tests/wf_child.py queue_worker``: a worker run the way a program runs
one (``asyncio.run``), with no signal handling of its own.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest

import pgqrs
from conftest import TURSO_ONE_PROCESS
from support import TESTS_DIR, child_env, counts, store_with_queue

CHILD = str(TESTS_DIR / "wf_child.py")


@pytest.mark.parametrize(
    ("hold", "grace", "expected"),
    [
        # The handler finishes within the shutdown grace: the job is completed.
        (1.0, "", (0, 0, 0, 1, 0)),
        # It does not: the job is given back at once (ready, not leased until it expires).
        (600.0, "0.5", (1, 0, 0, 0, 0)),
    ],
    ids=["job-completes", "job-given-back"],
)
async def test_ctrl_c_stops_a_worker_process_cleanly(
    dsn: str,
    backend: str,
    tmp_path: Path,
    hold: float,
    grace: str,
    expected: tuple[int, int, int, int, int],
) -> None:
    store = await store_with_queue(dsn)
    job = await pgqrs.produce(store, "q", {"n": 1})
    # Turso: one process at a time on the file; the test looks again once the child is gone.
    await store.close()
    marker = tmp_path / "started"
    p = await asyncio.create_subprocess_exec(
        sys.executable,
        CHILD,
        "queue_worker",
        dsn,
        "q",
        str(marker),
        str(hold),
        grace,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert p.returncode is None, "the worker process exited before the job started"
            assert time.monotonic() < deadline, "the job did not start within 60 s"
            await asyncio.sleep(0.02)
        assert marker.read_text() == str(job)
        interrupted = time.monotonic()
        p.send_signal(signal.SIGINT)
        out_b, err_b = await asyncio.wait_for(p.communicate(), timeout=20)
    finally:
        if p.returncode is None:
            p.kill()
            await p.communicate()
    took = time.monotonic() - interrupted
    out, err = out_b.decode(), err_b.decode()
    # Ctrl-C ends the program the way it ends any asyncio program (KeyboardInterrupt out of
    # asyncio.run), after the worker's graceful shutdown, and nothing else goes wrong.
    assert p.returncode in (-signal.SIGINT, 128 + signal.SIGINT), (p.returncode, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1] == "KeyboardInterrupt", err
    # Python's report of it: run() re-raising the cancellation, then the KeyboardInterrupt.
    raised = {
        line
        for line in lines
        if not line[0].isspace()
        and not line.startswith(("Traceback", "During handling of the above exception"))
    }
    expected_lines = {"asyncio.exceptions.CancelledError", "KeyboardInterrupt"}
    if grace:
        # The worker's warning (through logging's last resort: no handler is configured).
        expected_lines.add(
            "shutdown grace period over: cancelling 1 handler(s); their jobs are released"
        )
    assert raised <= expected_lines, err
    for bad in ("was destroyed", "never awaited", "panicked", "WARNING", "ERROR"):
        assert bad not in err, f"{bad!r} in the worker's stderr:\n{err}"
    bound = (float(grace) if grace else hold) + 10
    assert took < bound, f"the worker took {took:.1f} s to exit after Ctrl-C"

    store = await pgqrs.connect(dsn)
    try:
        assert await counts(store, "q") == expected
        workers = await pgqrs.admin(store).list_workers()
        assert [w.status for w in workers] == ["stopped"], workers
        if expected[0]:
            # Given back, and claimable now: not leased to anyone until an expiry.
            c = await store.consumer("q")
            got = await c.dequeue(1)
            assert [m.id for m in got] == [job]
    finally:
        await store.close()


ENQUEUE = """
import asyncio, sys, time
import pgqrs

async def main():
    store = await pgqrs.connect(sys.argv[1])
    await pgqrs.produce(store, "q", "from another process")
    print(time.time(), flush=True)
    await store.close()

asyncio.run(main())
"""


async def test_idle_worker_wakes_for_a_job_from_another_process(dsn: str, backend: str) -> None:
    """PostgreSQL LISTEN/NOTIFY and the SQLite change watcher: with a 10 s poll interval a job
    enqueued by another process starts within 1 s."""
    if backend == "turso":
        pytest.skip(TURSO_ONE_PROCESS)
    store = await store_with_queue(dsn)
    started: list[float] = []
    done = asyncio.Event()

    async def handler(m: pgqrs.Message) -> None:
        started.append(time.time())
        done.set()

    w = pgqrs.worker(store, "q", handler, poll_interval=10.0)
    task = asyncio.create_task(w.run())
    try:
        admin = pgqrs.admin(store)
        deadline = time.monotonic() + 10
        while not any(x.status == "running" for x in await admin.list_workers()):
            assert time.monotonic() < deadline, "the worker did not register"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # it found the queue empty and waits
        p = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            ENQUEUE,
            dsn,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(),
        )
        out, err = await asyncio.wait_for(p.communicate(), timeout=60)
        assert p.returncode == 0, err.decode()
        enqueued = float(out.decode().split()[0])
        await asyncio.wait_for(done.wait(), timeout=15)
        waited = started[0] - enqueued
        assert waited < 1.0, f"started {waited:.2f} s after the enqueue (poll interval 10 s)"
    finally:
        w.stop()
        stats = await asyncio.wait_for(task, timeout=15)
        await store.close()
    assert stats.succeeded == 1
