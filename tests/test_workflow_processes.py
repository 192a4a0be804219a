"""Workflows across real processes (issue 4): a run killed with SIGKILL inside each of its
steps is recovered by a new process, and 4 worker processes share 200 queued runs.

The child is tests/wf_child.py. Side effects are counted outside the database, in an
append-only file with one line per step execution. Turso allows one process at a time on a
file: there the test closes its store while children run, and the processes run one after
another.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter
from pathlib import Path

import pgqrs
from conftest import with_query_param
from support import TESTS_DIR, child_env

CHILD = str(TESTS_DIR / "wf_child.py")
STEPS = 5
EXPECTED_DIGITS = 12345  # the chain's output: its step numbers as digits


async def spawn(*args: str, crash: bool = False) -> asyncio.subprocess.Process:
    env = child_env(PGQRS_CRASH="1" if crash else "0")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        CHILD,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def output(p: asyncio.subprocess.Process, timeout: float = 120) -> str:
    try:
        out, err = await asyncio.wait_for(p.communicate(), timeout)
    except asyncio.TimeoutError:
        p.kill()
        out, err = await p.communicate()
        raise AssertionError(f"child hung\n{out.decode()}\n{err.decode()}") from None
    assert p.returncode == 0, f"child exited {p.returncode}\n{out.decode()}\n{err.decode()}"
    return out.decode()


def log_lines(log: Path) -> list[tuple[int, str, int]]:
    """(run, step or "done", pid) per line."""
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        run, what, pid = line.split()
        rows.append((int(run), what, int(pid)))
    return rows


async def crash_sequentially(dsn: str, run_id: int, marker: Path) -> asyncio.subprocess.Process:
    """Turso: one child at a time, killed inside its step."""
    p = await spawn("run", dsn, str(run_id), crash=True)
    for _ in range(6000):
        if marker.exists():  # noqa: ASYNC240
            p.send_signal(signal.SIGKILL)
            await p.wait()
            return p
        if p.returncode is not None:
            raise AssertionError(f"child for run {run_id} ended early: {await output(p)}")
        await asyncio.sleep(0.01)
    p.kill()
    await p.wait()
    raise AssertionError(f"run {run_id}: the crash step was never reached")


async def crash_concurrently(
    dsn: str, run_of: dict[int, int], tmp_path: Path
) -> dict[int, asyncio.subprocess.Process]:
    """One child per k, all at once; each is killed inside step k."""
    crashing = {k: await spawn("run", dsn, str(run_of[k]), crash=True) for k in run_of}
    killed: set[int] = set()
    try:
        pending = set(run_of)
        for _ in range(6000):
            for k in list(pending):
                if (tmp_path / f"marker-{k}").exists():
                    crashing[k].send_signal(signal.SIGKILL)
                    pending.discard(k)
                    killed.add(k)
                elif crashing[k].returncode is not None:
                    raise AssertionError(
                        f"child for k={k} ended early: {await output(crashing[k])}"
                    )
            if not pending:
                break
            await asyncio.sleep(0.01)
        assert not pending, f"steps {sorted(pending)} were never reached"
    finally:
        for k, p in crashing.items():
            # Signal only the children not killed yet: a second signal to a child that died
            # but was not yet reaped lets Popen.send_signal's poll() reap it behind asyncio's
            # child watcher, which then reports exit status 255 instead of -SIGKILL.
            if k not in killed and p.returncode is None:
                p.kill()
            await p.wait()
    return crashing


async def test_crash_in_each_step_then_recovery(dsn: str, tmp_path: Path, backend: str) -> None:
    """On Turso (one process at a time on a file) the test closes its store while children
    run, and the crashes and recoveries happen one after another."""
    sequential = backend == "turso"
    dsn = with_query_param(dsn, "visibility_timeout", "1")  # a run's lease: 1 s
    store = await pgqrs.connect(dsn)
    admin = pgqrs.admin(store)
    await admin.install()
    log = tmp_path / "steps.log"
    run_of: dict[int, int] = {}
    for k in range(1, STEPS + 1):
        inp = {"log": str(log), "crash_at": k, "marker": str(tmp_path / f"marker-{k}")}
        run_of[k] = (await admin.create_workflow("chain", inp)).id

    if sequential:
        await store.close()
        crashing = {
            k: await crash_sequentially(dsn, run_of[k], tmp_path / f"marker-{k}") for k in run_of
        }
        store = await pgqrs.connect(dsn)
        admin = pgqrs.admin(store)
    else:
        # One child per k, all at once; each is killed inside step k.
        crashing = await crash_concurrently(dsn, run_of, tmp_path)
    assert all(p.returncode == -signal.SIGKILL for p in crashing.values())
    crashed_pid = {k: p.pid for k, p in crashing.items()}
    before = Counter((r, s) for r, s, _ in log_lines(log))
    for k, rid in run_of.items():
        assert [before[(rid, str(i))] for i in range(1, STEPS + 1)] == [1] * k + [0] * (STEPS - k)
        run = await admin.workflow_run(rid)
        assert run.status == "running"
        assert [s.position for s in await admin.workflow_steps(rid)] == list(range(k - 1))

    # A new process per run recovers it once the dead executor's lease has expired.
    if sequential:
        await store.close()
        recovering, results = {}, {}
        for k in run_of:
            recovering[k] = await spawn("run", dsn, str(run_of[k]))
            results[k] = json.loads((await output(recovering[k])).strip().splitlines()[-1])
        store = await pgqrs.connect(dsn)
        admin = pgqrs.admin(store)
    else:
        recovering = {k: await spawn("run", dsn, str(run_of[k])) for k in run_of}
        results = {
            k: json.loads((await output(p)).strip().splitlines()[-1]) for k, p in recovering.items()
        }
    rows = log_lines(log)
    counts = Counter((r, s) for r, s, _ in rows)
    for k, rid in run_of.items():
        assert results[k] == {"run": rid, "digits": EXPECTED_DIGITS}, results[k]
        per_step = [counts[(rid, str(i))] for i in range(1, STEPS + 1)]
        # Steps before k ran exactly once (never again after the crash); step k ran in the
        # killed process and again in the new one; the steps after it once.
        assert per_step == [1] * (k - 1) + [2] + [1] * (STEPS - k), (k, per_step)
        assert counts[(rid, "done")] == 1
        pids = {s: {p for r, st, p in rows if r == rid and st == s} for s in map(str, range(1, 6))}
        for i in range(1, k):
            assert pids[str(i)] == {crashed_pid[k]}
        assert pids[str(k)] == {crashed_pid[k], recovering[k].pid}
        for i in range(k + 1, STEPS + 1):
            assert pids[str(i)] == {recovering[k].pid}
        run = await admin.workflow_run(rid)
        assert (run.status, run.output) == ("succeeded", results[k])
        assert run.attempts == 2, "one executor died, one finished"
        steps = await admin.workflow_steps(rid)
        assert [(s.position, s.status) for s in steps] == [(i, "succeeded") for i in range(5)]
        assert [s.output for s in steps] == [1, 12, 123, 1234, 12345]
    await store.close()


async def workers_at_once(
    admin: pgqrs.Admin, dsn: str, log: Path, n: int
) -> tuple[list[int], list[dict[str, int]]]:
    """4 worker processes at once; the runs are enqueued once they are all ready."""
    workers = [await spawn("worker", dsn, "wf") for _ in range(4)]
    try:
        for w in workers:
            assert w.stdout is not None
            line = await asyncio.wait_for(w.stdout.readline(), 60)
            assert line.strip() == b"ready", line
        ids = [
            (await admin.enqueue_workflow("wf", "chain", {"log": str(log)})).id for _ in range(n)
        ]
        for _ in range(12000):
            if len(await admin.list_workflows("succeeded", limit=n + 1)) == n:
                break
            if any(w.returncode is not None for w in workers):
                break
            await asyncio.sleep(0.05)
    finally:
        for w in workers:
            if w.returncode is None:
                w.send_signal(signal.SIGTERM)
    stats = [json.loads((await output(w)).strip().splitlines()[-1]) for w in workers]
    return ids, stats


async def workers_one_after_another(dsn: str, log: Path, n: int) -> list[dict[str, int]]:
    """Turso: 4 worker processes one at a time, each stopped (SIGTERM) once a quarter more of
    the ``n`` runs have finished (counted in the log: the database is theirs meanwhile)."""
    stats = []
    for i in range(4):
        w = await spawn("worker", dsn, "wf")
        try:
            target = n * (i + 1) // 4
            for _ in range(2400):
                done = sum(1 for _, what, _ in log_lines(log) if what == "done")
                if done >= target or w.returncode is not None:
                    break
                await asyncio.sleep(0.05)
        finally:
            if w.returncode is None:
                w.send_signal(signal.SIGTERM)
        stats.append(json.loads((await output(w)).strip().splitlines()[-1]))
        assert stats[-1]["succeeded"] > 0, f"worker {i} ran nothing: {stats[-1]}"
    return stats


async def test_four_worker_processes_share_200_runs(dsn: str, tmp_path: Path, backend: str) -> None:
    """On Turso (one process at a time on a file) the 4 worker processes run one after
    another and hand the runs over."""
    store = await pgqrs.connect(dsn)
    admin = pgqrs.admin(store)
    await admin.install()
    await admin.create_queue("wf")
    log = tmp_path / "steps.log"
    n = 200
    if backend == "turso":
        ids = [
            (await admin.enqueue_workflow("wf", "chain", {"log": str(log)})).id for _ in range(n)
        ]
        await store.close()
        stats = await workers_one_after_another(dsn, log, n)
        store = await pgqrs.connect(dsn)
        admin = pgqrs.admin(store)
    else:
        ids, stats = await workers_at_once(admin, dsn, log, n)
    succeeded = await admin.list_workflows("succeeded", limit=n + 1)
    succeeded = await admin.list_workflows("succeeded", limit=n + 1)
    assert sorted(r.id for r in succeeded) == sorted(ids), "every run succeeded"
    assert all(r.output == {"run": r.id, "digits": EXPECTED_DIGITS} for r in succeeded)
    rows = log_lines(log)
    counts = Counter((r, s) for r, s, _ in rows)
    for rid in ids:
        assert [counts[(rid, str(i))] for i in range(1, STEPS + 1)] == [1] * STEPS, rid
        assert counts[(rid, "done")] == 1, f"run {rid} completed {counts[(rid, 'done')]} times"
    assert len(rows) == n * (STEPS + 1)
    assert sum(s["succeeded"] for s in stats) == n, stats
    by_pid = Counter(p for _, s, p in rows if s == "done")
    assert len(by_pid) >= 2, f"the work was not shared: {by_pid}"
    assert (await admin.queue_metrics("wf")).archived == n
    await store.close()
