"""Arguments the engine refuses with a typed error (found by tests/test_bad_input.py): wrong
types and out-of-range numbers crossing into the native module, payloads that could not be
read back, and error texts that once could not be stored."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

import pgqrs
from pgqrs import errors


async def test_wrong_types_are_validation_errors(store: pgqrs.Store) -> None:
    """Once bare TypeError, OverflowError or UnicodeEncodeError from the binding."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    c = await store.consumer("q")
    cases: list[tuple[str, Any]] = [
        ("queue name", admin.create_queue(None)),  # type: ignore[arg-type]
        ("queue name", admin.purge_queue("lone \ud800")),
        ("queue name", pgqrs.produce(store, 42, 1)),  # type: ignore[arg-type]
        ("limit", admin.dead_letters("q", 2**70)),
        ("limit", admin.archived_jobs("q", "10")),  # type: ignore[arg-type]
        ("id", c.archive(2**63)),
        ("id", c.delete(1.5)),  # type: ignore[arg-type]
        ("ids", c.archive_many([1, "2"])),  # type: ignore[list-item]
        ("run id", admin.workflow_run(-(2**63) - 1)),
        ("run id", admin.get_workflow(True)),
        ("batch_size", c.dequeue(-1)),
        ("max_attempts", pgqrs.produce(store, "q", 1, max_attempts=-1)),
        ("workflow name", admin.create_workflow(b"wf")),  # type: ignore[arg-type]
        ("status", admin.list_workflows(status=3)),  # type: ignore[arg-type]
    ]
    for field, call in cases:
        with pytest.raises(errors.ValidationError) as e:
            await call
        assert type(e.value) is errors.ValidationError
        assert e.value.field == field, (field, e.value)
    assert (await admin.queue_metrics("q")).ready == 0


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -1.0, 1e30, 2**70])
async def test_bad_seconds_are_validation_errors(store: pgqrs.Store, seconds: float) -> None:
    """NaN and inf were bare ValueErrors; 1e30 panicked converting to a Duration."""
    await pgqrs.admin(store).create_queue("q")
    c = await store.consumer("q")
    for call in (
        pgqrs.produce(store, "q", 1, delay=seconds),
        c.dequeue(1, visibility_timeout=seconds),
    ):
        with pytest.raises(errors.ValidationError):
            await call
    with pytest.raises(errors.ValidationError):
        pgqrs.RetryPolicy(base=seconds)
    with pytest.raises(errors.ValidationError):
        pgqrs.worker(store, "q", lambda m: None, poll_interval=seconds)


async def test_engine_bounds_on_delays_and_leases(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    c = await store.consumer("q")
    with pytest.raises(errors.ValidationError) as e:
        await pgqrs.produce(store, "q", 1, timedelta(days=365 * 101))
    assert e.value.field == "delay" and "100 years" in str(e.value)
    with pytest.raises(errors.ValidationError) as e:
        await c.dequeue(1, visibility_timeout=timedelta(days=8))
    assert e.value.field == "visibility_timeout" and "7 days" in str(e.value)
    # The largest allowed values are accepted.
    await pgqrs.produce(store, "q", 1, timedelta(days=365 * 100))
    assert await c.dequeue(1, visibility_timeout=timedelta(days=7)) == []


async def test_payloads_that_could_not_be_read_back(store: pgqrs.Store) -> None:
    """Integers beyond 64 bits were stored and read back rounded; a workflow input over
    max_payload_bytes was accepted; 10,000 levels of nesting raised RecursionError."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    for big in (2**64, -(2**63) - 1, {"n": [10**30]}):
        with pytest.raises(errors.ValidationError, match="64-bit range"):
            await pgqrs.produce(store, "q", big)
        with pytest.raises(errors.ValidationError, match="64-bit range"):
            await admin.create_workflow("wf", big)
    for edge in (2**64 - 1, -(2**63)):
        await pgqrs.produce(store, "q", edge)
    got = await (await store.consumer("q")).dequeue(2)
    assert [m.payload for m in got] == [2**64 - 1, -(2**63)]

    with pytest.raises(errors.PayloadTooLargeError):
        await admin.create_workflow("wf", "x" * (1024 * 1024))
    with pytest.raises(errors.PayloadTooLargeError):
        await admin.enqueue_workflow("q", "wf", "x" * (1024 * 1024))

    deep: Any = 1
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(errors.SerializationError, match="recursion limit"):
        await pgqrs.produce(store, "q", deep)
    assert await admin.list_workflows() == []
    assert (await admin.queue_metrics("q")).ready == 0


async def test_long_arguments_are_not_echoed(store: pgqrs.Store) -> None:
    name = "x" * 1_000_000
    with pytest.raises(errors.ValidationError) as e:
        await pgqrs.admin(store).create_queue(name)
    assert len(str(e.value)) < 300 and "1000000 characters" in str(e.value)


async def test_error_texts_with_nul_are_recorded(store: pgqrs.Store) -> None:
    """On PostgreSQL a NUL in an error text failed the write that records the failure."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    jid = await pgqrs.produce(store, "q", 1, max_attempts=1)

    def handler(m: pgqrs.Message) -> None:
        raise ValueError("bad \x00 byte")

    assert await pgqrs.consume(store, "q", handler) == 1
    [dead] = await admin.dead_letters("q")
    assert dead.id == jid and dead.last_error == "ValueError: bad \ufffd byte"


@pytest.mark.parametrize(
    "dsn_tail",
    ["?visiblity_timeout=2", "?pool_size=0", "?connect_timeout=99999999999", "?foo=bar"],
)
async def test_connection_string_mistakes(dsn: str, dsn_tail: str) -> None:
    """A typo once passed silently on PostgreSQL; pool_size=0 was clamped; a huge
    connect_timeout panicked."""
    bad = dsn + ("&" + dsn_tail[1:] if "?" in dsn else dsn_tail)
    with pytest.raises((errors.InvalidDsnError, errors.ValidationError)):
        await pgqrs.connect(bad)


async def test_no_scheme_is_refused(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``connect("sqlite")`` once created a file named sqlite in the working directory."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.InvalidDsnError, match="no scheme"):
        await pgqrs.connect("sqlite")
    assert list(tmp_path.iterdir()) == []
