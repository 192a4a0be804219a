"""The runtime under asyncio: several event loops in sequence with one store, threads, and
``os.fork()``."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
from urllib.parse import parse_qsl, urlsplit

import pytest

import pgqrs
from support import child_env, counts, explain, run_python

# One store shared by the tests below, each run on its own (function-scoped) event loop.
_shared: dict[str, pgqrs.Store] = {}
_loops: dict[str, list[asyncio.AbstractEventLoop]] = {}


async def test_loop_1_creates_the_store(module_dsn: str) -> None:
    store = await pgqrs.connect(module_dsn)
    admin = pgqrs.admin(store)
    await admin.install()
    await admin.create_queue("loops")
    await pgqrs.produce(store, "loops", "from loop 1")
    _shared[module_dsn] = store
    _loops[module_dsn] = [asyncio.get_running_loop()]


async def test_loop_2_uses_it(module_dsn: str) -> None:
    store = _shared[module_dsn]
    loop = asyncio.get_running_loop()
    assert all(loop is not other for other in _loops[module_dsn]), "a new event loop"
    _loops[module_dsn].append(loop)
    await pgqrs.produce_batch(store, "loops", ["from loop 2", "again"])
    seen: list[str] = []

    async def handler(msg: pgqrs.Message) -> None:
        seen.append(msg.payload)

    assert await pgqrs.consume(store, "loops", handler, batch_size=10) == 3
    assert seen == ["from loop 1", "from loop 2", "again"]


async def test_loop_3_runs_a_worker_and_a_consumer(module_dsn: str) -> None:
    store = _shared[module_dsn]
    loop = asyncio.get_running_loop()
    assert all(loop is not other for other in _loops[module_dsn]), "a new event loop"
    _loops[module_dsn].append(loop)
    await pgqrs.produce_batch(store, "loops", list(range(5)))
    done = asyncio.Event()
    handled: list[int] = []

    async def handler(msg: pgqrs.Message) -> None:
        handled.append(msg.payload)
        if len(handled) == 5:
            done.set()

    w = pgqrs.worker(store, "loops", handler, concurrency=2, poll_interval=0.02)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(done.wait(), 30)
    w.stop()
    assert (await task).succeeded == 5
    assert sorted(handled) == list(range(5))
    assert await counts(store, "loops") == (0, 0, 0, 8, 0)


async def test_loop_4_closes_it(module_dsn: str) -> None:
    store = _shared.pop(module_dsn)
    assert len(_loops.pop(module_dsn)) == 3
    await store.close()
    with pytest.raises(pgqrs.errors.StoreClosedError):
        await pgqrs.produce(store, "loops", 1)


SEQUENTIAL_LOOPS = """
import asyncio, sys, threading
import pgqrs

dsn = sys.argv[1]
state = {}

async def first():
    store = await pgqrs.connect(dsn)
    await pgqrs.admin(store).install()
    await pgqrs.admin(store).create_queue("q")
    await pgqrs.produce(store, "q", {"loop": 1})
    state["store"] = store

async def second():
    store = state["store"]
    await pgqrs.produce(store, "q", {"loop": 2})
    got = []
    async def handler(msg):
        got.append(msg.payload["loop"])
    assert await pgqrs.consume(store, "q", handler, batch_size=10) == 2
    assert got == [1, 2], got
    await store.close()

def main():
    asyncio.run(first())
    asyncio.run(second())

if sys.argv[2] == "thread":
    errors = []
    def target():
        try:
            main()
        except BaseException as e:
            errors.append(e)
    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]
else:
    main()
print("OK")
"""


@pytest.mark.parametrize("where", ["main thread", "thread"])
def test_two_asyncio_runs_with_one_store(dsn: str, where: str) -> None:
    p = run_python(SEQUENTIAL_LOOPS, dsn, "thread" if where == "thread" else "main")
    assert p.returncode == 0 and p.stdout.strip() == "OK", explain(p)


def test_two_asyncio_runs_in_this_process(dsn: str) -> None:
    """The same, in the test process itself (from a thread, as pytest-asyncio's loop may be
    set on the main one)."""
    state: dict[str, pgqrs.Store] = {}
    errors: list[BaseException] = []

    async def first() -> None:
        store = await pgqrs.connect(dsn)
        await pgqrs.admin(store).install()
        await pgqrs.admin(store).create_queue("q")
        await pgqrs.produce(store, "q", 1)
        state["store"] = store

    async def second() -> None:
        store = state["store"]
        assert (await pgqrs.admin(store).queue_metrics("q")).ready == 1
        await store.close()

    def target() -> None:
        try:
            asyncio.run(first())
            asyncio.run(second())
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join(60)
    assert not t.is_alive()
    assert errors == []


FORK = """
import asyncio, os, sys
import pgqrs
from pgqrs.errors import ForkError, PgqrsError

dsn = sys.argv[1]

async def parent_setup():
    store = await pgqrs.connect(dsn)
    await pgqrs.admin(store).install()
    await pgqrs.admin(store).create_queue("q")
    await pgqrs.produce(store, "q", "before fork")
    consumer = await store.consumer("q")
    return store, consumer

store, consumer = asyncio.run(parent_setup())

async def child():
    # Objects made before the fork refuse to work, with a clear error.
    for what, call in [
        ("produce", lambda: pgqrs.produce(store, "q", "from child")),
        ("admin", lambda: pgqrs.admin(store).list_queues()),
        ("consumer", lambda: store.consumer("q")),
        ("dequeue", lambda: consumer.dequeue(1)),
    ]:
        try:
            await call()
        except ForkError as e:
            assert isinstance(e, PgqrsError)
            assert "fork" in str(e) and "connect" in str(e), str(e)
        else:
            raise AssertionError(f"{what}: a store from before the fork worked in the child")
    # A new connection works.
    fresh = await pgqrs.connect(dsn)
    await pgqrs.produce(fresh, "q", "from child")
    got = []
    async def handler(msg):
        got.append(msg.payload)
    assert await pgqrs.consume(fresh, "q", handler, batch_size=10) == 2
    assert sorted(got) == ["before fork", "from child"], got
    await fresh.close()

pid = os.fork()
if pid == 0:
    code = 0
    try:
        asyncio.run(child())
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, f"child failed: {status}"

async def parent_after():
    # The parent's store still works after the fork.
    await pgqrs.produce(store, "q", "parent again")
    m = await pgqrs.admin(store).queue_metrics("q")
    assert (m.ready, m.archived) == (1, 2), m
    await store.close()

asyncio.run(parent_after())
print("OK")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="os.fork() is POSIX only")
def test_fork(dsn: str, backend: str) -> None:
    if backend == "turso":
        from conftest import TURSO_ONE_PROCESS

        pytest.skip(f"the child opens the parent's database: {TURSO_ONE_PROCESS}")
    p = run_python(FORK, dsn)
    assert p.returncode == 0 and p.stdout.strip().endswith("OK"), explain(p)


async def test_waiting_on_the_database_does_not_block_the_event_loop(
    store: pgqrs.Store, dsn: str, backend: str
) -> None:
    """While an operation waits on a lock held by another connection, the event loop keeps
    running (the wait happens on the tokio runtime, without the GIL); the operation finishes
    once the lock is released."""
    if backend == "turso":
        from conftest import TURSO_ONE_PROCESS

        pytest.skip(f"no other process can hold the lock: {TURSO_ONE_PROCESS}")
    await pgqrs.admin(store).create_queue("q")
    # The lock is held by another process: two copies of SQLite in one process (Python's
    # sqlite3 and the one in pgqrs) do not see each other's POSIX locks.
    if backend == "sqlite":
        path = dsn.removeprefix("sqlite://")
        cmd = [sys.executable, "-c", HOLD_SQLITE_LOCK, path]
    else:
        from conftest import without_query_param

        psql = shutil.which("psql")
        if psql is None:
            pytest.skip("psql is needed to hold a lock from another connection")
        cmd = [psql, without_query_param(dsn, "schema"), "-qtA", "-v", "ON_ERROR_STOP=1"]
    holder = await asyncio.create_subprocess_exec(
        *cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env()
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        if backend == "postgres":
            schema = dict(parse_qsl(urlsplit(dsn).query))["schema"]
            holder.stdin.write(
                f'BEGIN; LOCK TABLE "{schema}".pgqrs_jobs IN ACCESS EXCLUSIVE MODE;\n'
                "SELECT 'locked';\n".encode()
            )
            await holder.stdin.drain()
        assert (await asyncio.wait_for(holder.stdout.readline(), 30)).strip() == b"locked"
        task = asyncio.create_task(pgqrs.produce(store, "q", "waited"))
        ticks = 0
        while ticks < 30:
            await asyncio.sleep(0.01)
            ticks += 1
            assert not task.done(), "the write did not wait for the lock"
    finally:
        holder.stdin.write(b"COMMIT;\n")
        holder.stdin.close()
        await asyncio.wait_for(holder.wait(), 30)
    await task
    assert ticks == 30, "the event loop kept running while the write waited"
    assert (await pgqrs.admin(store).queue_metrics("q")).ready == 1


HOLD_SQLITE_LOCK = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
con.execute("COMMIT")
"""


async def test_calls_are_polled_once_on_the_calling_thread(store: pgqrs.Store) -> None:
    """A call that needs no database finishes before it is awaited (it is polled once on the
    calling thread); one that does is handed to the runtime, so the event loop never does
    database work itself (on Turso, whose engine works synchronously inside its futures,
    this is what keeps a statement or an fsync off the event loop)."""
    await pgqrs.admin(store).create_queue("q")
    # (ensure_future returns the native call's asyncio future itself.)
    pending = asyncio.ensure_future(store._native.enqueue("q", ["1"]))
    assert not pending.done(), "database work ran on the event loop's thread"
    assert len(await pending) == 1
    session = await store._native.worker_session("q")
    try:
        at_once = asyncio.ensure_future(
            session.claim_ahead(10_000, False)
        )  # the buffer is full: nothing to claim
        assert at_once.done() and at_once.result() == []
        failed = asyncio.ensure_future(store._native.enqueue("q", ["not json"]))
        assert failed.done(), "a validation error needs no database"
        with pytest.raises(pgqrs.errors.SerializationError):
            await failed
    finally:
        await session.stop()
    # A call cancelled while it waits is dropped; the store keeps working.
    waiting = asyncio.ensure_future(session_wait(store))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (await pgqrs.admin(store).queue_metrics("q")).ready == 1


async def session_wait(store: pgqrs.Store) -> None:
    session = await store._native.worker_session("q")
    try:
        # Waits may end early (a commit the SQLite change watcher sees, such as this
        # session's own registration, wakes idle workers): the caller cancels one that waits.
        while True:
            await session.wait_for_jobs(30.0)
    finally:
        await asyncio.shield(session.stop())
