"""The native module ``pgqrs._pgqrs`` loads, matches its stub, and really talks to both
backends through its tokio runtime."""

from __future__ import annotations

import asyncio

import pytest

import pgqrs
from pgqrs import _pgqrs


async def test_native_connect_and_install(dsn: str, backend: str) -> None:
    native = await _pgqrs.connect(dsn)
    assert isinstance(native, _pgqrs.Store)
    assert native.backend == backend
    assert await native.schema_version() is None
    await native.install()
    await native.verify()
    version = await native.schema_version()
    assert isinstance(version, int) and version >= 1
    qid, name, created_us = await native.create_queue("smoke")
    assert (name, isinstance(qid, int), isinstance(created_us, int)) == ("smoke", True, True)
    ids = await native.enqueue("smoke", ['{"a":1}', "[2]"])
    assert len(ids) == 2 and ids[0] < ids[1]
    consumer = await native.consumer("smoke")
    assert isinstance(consumer, _pgqrs.Consumer)
    rows = await consumer.dequeue(10, None)
    assert sorted((r[0], r[2]) for r in rows) == [(ids[0], '{"a":1}'), (ids[1], "[2]")]
    await consumer.archive_many([r[0] for r in rows])
    assert (await native.queue_metrics("smoke"))[1:6] == (0, 0, 0, 2, 0)
    await native.close()


async def test_native_calls_resolve_concurrently(dsn: str) -> None:
    native = await _pgqrs.connect(dsn)
    await native.install()
    results = await asyncio.gather(*(native.schema_version() for _ in range(200)))
    assert len(set(results)) == 1 and results[0] is not None
    await native.close()


def test_native_calls_need_a_running_event_loop() -> None:
    with pytest.raises(RuntimeError):
        _pgqrs.connect("sqlite::memory:")


def test_native_classes_are_not_constructible_nor_subclassable() -> None:
    for cls in (_pgqrs.Store, _pgqrs.Consumer, _pgqrs.WorkerSession, _pgqrs.Workflow):
        assert cls.__module__ == "pgqrs._pgqrs"
        with pytest.raises(TypeError):
            cls()
        with pytest.raises(TypeError):
            type("Sub", (cls,), {})


def test_native_module_exports() -> None:
    assert sorted(_pgqrs.__all__) == sorted(
        ["Consumer", "Store", "WorkerSession", "Workflow", "__version__", "_shutdown", "connect"]
    )


def test_version_is_exposed() -> None:
    assert pgqrs.__version__ == _pgqrs.__version__
    assert pgqrs.__version__.count(".") == 2
