"""What is particular to the Turso backend (the generic suites run on it through the ``dsn``
fixture): in-memory databases, and the one-process-at-a-time limit as a typed error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import pgqrs
from conftest import selected_backends
from pgqrs.errors import ConnectionFailedError, PgqrsError
from support import explain, run_python

pytestmark = pytest.mark.skipif(
    "turso" not in selected_backends(), reason="PGQRS_TEST_BACKENDS leaves Turso out"
)

SECOND_PROCESS = """
import asyncio, sys
import pgqrs
from pgqrs.errors import ConnectionFailedError

async def main():
    try:
        await pgqrs.connect(sys.argv[1])
    except ConnectionFailedError as e:
        print("REFUSED", e.target, "|", e)
    else:
        print("CONNECTED")

asyncio.run(main())
"""


async def test_in_memory_database() -> None:
    store = await pgqrs.connect("turso::memory:")
    assert store.backend == "turso"
    admin = pgqrs.admin(store)
    await admin.install()
    await admin.create_queue("q")
    await pgqrs.produce(store, "q", {"n": 1})
    got = []

    async def handler(msg: pgqrs.Message) -> None:
        got.append(msg.payload)

    assert await pgqrs.consume(store, "q", handler) == 1
    assert got == [{"n": 1}]
    await store.close()


async def test_file_is_created_and_reopened(tmp_path: Path) -> None:
    dsn = f"turso://{tmp_path}/jobs.db"
    store = await pgqrs.connect(dsn)
    await pgqrs.admin(store).install()
    await pgqrs.admin(store).create_queue("q")
    await pgqrs.produce(store, "q", "kept")
    await store.close()
    assert (tmp_path / "jobs.db").exists()

    again = await pgqrs.connect(dsn)
    m = await pgqrs.admin(again).queue_metrics("q")
    assert m.ready == 1
    await again.close()


async def test_second_process_gets_a_typed_error(tmp_path: Path) -> None:
    dsn = f"turso://{tmp_path}/jobs.db"
    store = await pgqrs.connect(dsn)
    await pgqrs.admin(store).install()
    p = run_python(SECOND_PROCESS, dsn)
    assert p.returncode == 0 and p.stdout.startswith("REFUSED"), explain(p)
    assert "jobs.db" in p.stdout and "one process at a time" in p.stdout, explain(p)
    # This process's store is unaffected; once it is closed, another process may connect.
    await pgqrs.admin(store).create_queue("q")
    await store.close()
    p = run_python(SECOND_PROCESS, dsn)
    assert p.returncode == 0 and p.stdout.startswith("CONNECTED"), explain(p)


FORK = """
import asyncio, os, sys
import pgqrs
from pgqrs.errors import ConnectionFailedError

dsn = sys.argv[1]

async def setup():
    store = await pgqrs.connect(dsn)
    await pgqrs.admin(store).install()
    return store

store = asyncio.run(setup())

pid = os.fork()
if pid == 0:
    async def child():
        try:
            await pgqrs.connect(dsn)
        except ConnectionFailedError as e:
            return "one process at a time" in str(e)
        return False
    os._exit(0 if asyncio.run(child()) else 1)

_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, "the forked child opened the parent's database"

async def after():
    await pgqrs.admin(store).create_queue("q")
    assert [q.name for q in await pgqrs.admin(store).list_queues()] == ["q"]
    await store.close()

asyncio.run(after())
print("OK")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="os.fork() is POSIX only")
def test_forked_child_cannot_open_the_parents_database(tmp_path: Path) -> None:
    p = run_python(FORK, f"turso://{tmp_path}/jobs.db")
    assert p.returncode == 0 and p.stdout.strip().endswith("OK"), explain(p)


async def test_connection_errors(tmp_path: Path) -> None:
    with pytest.raises(ConnectionFailedError) as e:
        await pgqrs.connect(f"turso://{tmp_path}/no/such/dir/jobs.db")
    assert "no/such/dir" in str(e.value)
    with pytest.raises(PgqrsError, match="mode"):
        await pgqrs.connect(f"turso://{tmp_path}/jobs.db?mode=rwc")
