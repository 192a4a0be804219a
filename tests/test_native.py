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
    q = await native.create_queue("smoke")
    assert isinstance(q, _pgqrs.QueueRow)
    assert (q.name, isinstance(q.id, int), isinstance(q.created_at_us, int)) == (
        "smoke",
        True,
        True,
    )
    ids = await native.enqueue("smoke", ['{"a":1}', "[2]"])
    assert len(ids) == 2 and ids[0] < ids[1]
    consumer = await native.consumer("smoke")
    assert isinstance(consumer, _pgqrs.Consumer)
    rows = await consumer.dequeue(10, None)
    assert sorted((r.id, r.payload_json) for r in rows) == [(ids[0], '{"a":1}'), (ids[1], "[2]")]
    await consumer.archive_many([r.id for r in rows])
    m = await native.queue_metrics("smoke")
    assert (m.ready, m.delayed, m.leased, m.archived, m.dead) == (0, 0, 0, 2, 0)
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


ROWS = (
    _pgqrs.MessageRow,
    _pgqrs.Claimed,
    _pgqrs.QueueRow,
    _pgqrs.MetricsRow,
    _pgqrs.DeadLetterRow,
    _pgqrs.ArchivedJobRow,
    _pgqrs.WorkerRow,
    _pgqrs.StatsRow,
    _pgqrs.RunRow,
    _pgqrs.StepRow,
    _pgqrs.RetryRow,
    _pgqrs.JobRow,
    _pgqrs.JobPageRow,
    _pgqrs.PrunedRow,
    _pgqrs.ScheduleRow,
    _pgqrs.FiredRow,
)


def test_native_classes_are_not_constructible_nor_subclassable() -> None:
    for cls in (
        _pgqrs.Store,
        _pgqrs.Consumer,
        _pgqrs.WorkerSession,
        _pgqrs.Workflow,
        _pgqrs.Step,
        *ROWS,
    ):
        assert cls.__module__ == "pgqrs._pgqrs"
        with pytest.raises(TypeError):
            cls()
        with pytest.raises(TypeError):
            type("Sub", (cls,), {})


def test_native_module_exports() -> None:
    assert sorted(_pgqrs.__all__) == sorted(
        [
            "Consumer",
            "Store",
            "WorkerSession",
            "Workflow",
            "__version__",
            "_shutdown",
            "connect",
            # Added with named rows and keyword options:
            "Step",
            "WorkerOptions",
            *(cls.__name__ for cls in ROWS),
            "check_retry_policy",
            "default_retry_policy",
            "run_job_retry_policy",
            # Job deadlines:
            "timeout_error",
        ]
    )


def test_native_rows_are_frozen_and_named() -> None:
    policy = _pgqrs.default_retry_policy()
    assert (policy.max_attempts, policy.backoff, policy.base, policy.max) == (
        None,
        "exponential_jitter",
        1.0,
        300.0,
    ), "the core's RetryPolicy::default()"
    with pytest.raises(AttributeError):
        policy.base = 2.0  # type: ignore[misc]
    runs = _pgqrs.run_job_retry_policy()
    assert (runs.max_attempts, runs.backoff, runs.base, runs.max) == (100, "exponential", 0.5, 30.0)


def test_worker_options_are_keywords_checked_by_the_core() -> None:
    with pytest.raises(TypeError):
        _pgqrs.WorkerOptions(4)  # type: ignore[call-arg]
    with pytest.raises(pgqrs.errors.ValidationError) as e:
        _pgqrs.WorkerOptions(concurrency=0)
    assert e.value.field == "concurrency"
    with pytest.raises(pgqrs.errors.ValidationError):
        _pgqrs.WorkerOptions(batch_size=0)
    _pgqrs.WorkerOptions()


async def test_session_settings_default_to_the_core_and_the_store(dsn: str) -> None:
    """Settings not given come from the core (and the connection string), not the caller."""
    from conftest import with_query_param

    native = await _pgqrs.connect(with_query_param(dsn, "poll_interval_ms", "35"))
    await native.install()
    await native.create_queue("q")
    assert native.poll_interval == 0.035
    session = await native.worker_session("q")
    try:
        assert (session.concurrency, session.batch_size, session.shutdown_grace) == (1, 1, 30.0)
        assert session.poll_interval == 0.035, "the connection string's poll_interval_ms"
    finally:
        await session.stop()
    options = _pgqrs.WorkerOptions(concurrency=3, batch_size=2, poll_interval=0.5)
    session = await native.worker_session("q", options)
    try:
        assert (session.concurrency, session.batch_size, session.poll_interval) == (3, 2, 0.5)
    finally:
        await session.stop()
    await native.close()


def test_version_is_exposed() -> None:
    assert pgqrs.__version__ == _pgqrs.__version__
    assert pgqrs.__version__.count(".") == 2
