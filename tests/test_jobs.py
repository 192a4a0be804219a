"""Producing jobs: ids, batches, delays, payloads of every JSON type, size limits and values
that are not JSON (mirrors ``cases/jobs.rs``, plus the Python-only serialization checks)."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

import pgqrs
from conftest import with_query_param
from pgqrs.errors import PayloadTooLargeError, SerializationError, ValidationError
from support import counts, store_with_queue


def deep(levels: int) -> Any:
    v: Any = "bottom"
    for i in range(levels):
        v = {"level": i, "next": [v]}
    return v


PAYLOADS: list[tuple[str, Any]] = [
    ("object", {"task": "send_email", "to": "user@example.com", "n": 3}),
    ("empty object", {}),
    ("array", [1, "two", 3.5, True, None, {"x": []}]),
    ("empty array", []),
    ("string", "just a string"),
    ("empty string", ""),
    ("integer", 42),
    ("zero", 0),
    ("negative", -7),
    ("i64 max", 2**63 - 1),
    ("i64 min", -(2**63)),
    ("u64 max", 2**64 - 1),
    ("float", 3.25),
    ("decimal", 0.1),
    ("big float", 1.5e300),
    ("tiny float", 5e-324),
    ("negative float", -2.5),
    ("true", True),
    ("false", False),
    ("null", None),
    ("nested", {"a": {"b": {"c": [1, [2, [3, {"d": None}]]]}}}),
    ("deep", deep(40)),
    (
        "unicode",
        {
            "emoji": "🦀🚀",
            "cjk": "日本語",
            "rtl": "שלום",
            "accents": "ünïcödé",
            "ключ": "значение",
            "escapes": 'quote" backslash\\ slash/ nl\n tab\t cr\r',
            "control": "\x01\x1f",
            "bmp edge": "\uffff",
            "astral": "\U0010ffff",
        },
    ),
    ("long string", "x" * 100_000),
]


async def test_produce_returns_ids(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    a = await pgqrs.produce(store, "q", {"n": 1})
    b = await pgqrs.produce(store, "q", {"n": 2})
    assert isinstance(a, int) and isinstance(b, int) and a < b
    ids = await pgqrs.produce_batch(store, "q", ({"n": i} for i in range(10)))
    assert len(ids) == 10 and ids == sorted(ids) and len(set(ids)) == 10
    assert await pgqrs.produce_batch(store, "q", []) == [], "an empty batch writes nothing"
    assert await counts(store, "q") == (12, 0, 0, 0, 0)
    c = await store.consumer("q")
    msgs = await c.dequeue(12)
    assert [m.id for m in msgs] == [a, b, *ids], "claims come oldest first, in batch order"
    assert [m.payload["n"] for m in msgs] == [1, 2, *range(10)]


async def test_payload_roundtrip(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    expected: dict[int, tuple[str, Any]] = {}
    for name, value in PAYLOADS:
        expected[await pgqrs.produce(store, "q", value)] = (name, value)
    batch = await pgqrs.produce_batch(store, "q", [v for _, v in PAYLOADS])
    expected.update(zip(batch, PAYLOADS, strict=True))
    # A tuple is a JSON array: it comes back as a list.
    tid = await pgqrs.produce(store, "q", (1, "two", (3,)))
    c = await store.consumer("q")
    msgs = await c.dequeue(len(expected) + 1)
    assert len(msgs) == len(expected) + 1
    for m in msgs:
        if m.id == tid:
            assert m.payload == [1, "two", [3]]
            continue
        name, value = expected[m.id]
        assert m.payload == value, f"payload {name} changed in the round trip"
        assert type(m.payload) is type(value), name
        assert m.queue == "q"
    await c.archive_many([m.id for m in msgs])
    archived = await pgqrs.admin(store).archived_jobs("q", limit=1000)
    assert len(archived) == len(msgs)
    for a in archived:
        if a.id != tid:
            assert a.payload == expected[a.id][1], f"archived {expected[a.id][0]} changed"


async def test_produce_batch_takes_any_iterable(store: pgqrs.Store) -> None:
    """A batch is encoded in one call and split in Rust: any iterable works, order is kept."""
    await pgqrs.admin(store).create_queue("q")
    ids = await pgqrs.produce_batch(store, "q", ({"i": i, "s": "é\u2603"} for i in range(3)))
    ids += await pgqrs.produce_batch(store, "q", ("a", ["b", {"c": None}]))
    assert await pgqrs.produce_batch(store, "q", []) == []
    assert ids == sorted(ids) and len(ids) == 5
    msgs = await (await store.consumer("q")).dequeue(10)
    assert [m.payload for m in sorted(msgs, key=lambda m: m.id)] == [
        {"i": 0, "s": "é\u2603"},
        {"i": 1, "s": "é\u2603"},
        {"i": 2, "s": "é\u2603"},
        "a",
        ["b", {"c": None}],
    ]


async def test_payload_nul_char(store: pgqrs.Store) -> None:
    """A NUL character is valid JSON: it round-trips, or is refused with a pgqrs validation
    error before anything is written -- never a raw database error."""
    await pgqrs.admin(store).create_queue("q")
    value = {"nul": "a\x00b"}
    try:
        (jid,) = await pgqrs.produce_batch(store, "q", [value])
    except (ValidationError, SerializationError):
        assert await counts(store, "q") == (0, 0, 0, 0, 0)
        return
    (m,) = await (await store.consumer("q")).dequeue(1)
    assert (m.id, m.payload) == (jid, value)


async def test_payload_integers_beyond_64_bits(store: pgqrs.Store) -> None:
    """Python ints are unbounded, JSON numbers too: an int beyond 64 bits must come back
    exactly, or be refused at enqueue -- never silently turned into a float."""
    await pgqrs.admin(store).create_queue("q")
    for value in (10**30, -(2**64), {"big": 2**100 + 1}):
        try:
            await pgqrs.produce(store, "q", value)
        except (ValidationError, SerializationError):
            assert await counts(store, "q") == (0, 0, 0, 0, 0)
            continue
        (m,) = await (await store.consumer("q")).dequeue(1)
        assert m.payload == value and repr(m.payload) == repr(value), (
            f"{value!r} came back as {m.payload!r}"
        )
        await m.archive()


class Opaque:
    pass


NOT_JSON: list[tuple[Any, str, str]] = [
    ({1, 2}, "$", "set"),
    (frozenset(), "$", "frozenset"),
    (datetime(2024, 1, 1, tzinfo=timezone.utc), "$", "datetime"),
    (Opaque(), "$", "Opaque"),
    (object(), "$", "object"),
    (b"bytes", "$", "bytes"),
    (Decimal("1.5"), "$", "Decimal"),
    ({"a": [1, {"b": {3}}]}, "$.a[1].b", "set"),
    ([1, 2, datetime.now(timezone.utc)], "$[2]", "datetime"),
    ({"when": {"at": Opaque()}}, "$.when.at", "Opaque"),
    (math.nan, "$", "float"),
    ({"x": [0.5, math.inf]}, "$.x[1]", "float"),
    ([-math.inf], "$[0]", "float"),
    ({(1, 2): "tuple key"}, "$[(1, 2)]", "tuple"),
    ("lone \ud800 surrogate", "$", "str"),
    ({"k": ["ok", "\udc00"]}, "$.k[1]", "str"),
]


@pytest.mark.parametrize(
    ("value", "path", "type_name"), NOT_JSON, ids=[f"{p}:{t}" for _, p, t in NOT_JSON]
)
async def test_non_serializable_payload(
    store: pgqrs.Store, value: Any, path: str, type_name: str
) -> None:
    await pgqrs.admin(store).create_queue("q")
    with pytest.raises(SerializationError) as exc:
        await pgqrs.produce(store, "q", value)
    e = exc.value
    assert (e.path, e.type_name, e.field) == (path, type_name, "payload")
    assert path in str(e) and type_name in str(e), str(e)
    assert isinstance(e, pgqrs.errors.ValidationError) and isinstance(e, TypeError)
    # In a batch, the item is named, and nothing of the batch is written.
    with pytest.raises(SerializationError) as exc:
        await pgqrs.produce_batch(store, "q", [{"ok": 1}, "fine", value])
    assert (exc.value.path, exc.value.type_name, exc.value.field) == (
        path,
        type_name,
        "payloads[2]",
    )
    assert await counts(store, "q") == (0, 0, 0, 0, 0), "nothing was written"


async def test_circular_payload_is_refused(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    loop: dict[str, Any] = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(SerializationError) as exc:
        await pgqrs.produce(store, "q", loop)
    assert "circular" in str(exc.value)
    assert await counts(store, "q") == (0, 0, 0, 0, 0)


async def test_payload_too_large(dsn: str) -> None:
    store = await store_with_queue(with_query_param(dsn, "max_payload_bytes", "100"))
    fits = "x" * 98  # '"' + 98 x + '"' = 100 bytes of JSON
    await pgqrs.produce(store, "q", fits)
    with pytest.raises(PayloadTooLargeError) as exc:
        await pgqrs.produce(store, "q", fits + "x")
    e = exc.value
    assert (e.size, e.max, e.field) == (101, 100, "payload")
    assert "max_payload_bytes" in str(e)
    assert isinstance(e, ValidationError)
    with pytest.raises(PayloadTooLargeError):
        await pgqrs.produce_batch(store, "q", ["small", fits + "xx", "small"])
    assert await counts(store, "q") == (1, 0, 0, 0, 0), "only the fitting payload was written"
    (m,) = await (await store.consumer("q")).dequeue(5)
    assert m.payload == fits
    await store.close()


async def test_delayed_produce(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    now = datetime.now(timezone.utc)
    past = await pgqrs.produce(store, "q", "past", at=now - timedelta(hours=1))
    ready = await pgqrs.produce(store, "q", "now", delay=0)
    d1 = await pgqrs.produce(store, "q", "delay", delay=1.5)
    d2, d3 = await pgqrs.produce_batch(store, "q", ["a", "b"], delay=timedelta(seconds=1.5))
    at = await pgqrs.produce(store, "q", "at", at=now + timedelta(seconds=1.5))
    far = await pgqrs.produce(store, "q", "far", delay=3600)
    m = await pgqrs.admin(store).queue_metrics("q")
    assert (m.ready, m.delayed) == (2, 5), m
    c = await store.consumer("q")
    got = await c.dequeue(10)
    assert sorted(x.id for x in got) == sorted([past, ready])
    assert await c.dequeue(10) == [], "claimable before its time"
    await asyncio.sleep(1.7)
    later = await c.dequeue(10)
    assert sorted(x.id for x in later) == sorted([d1, d2, d3, at])
    assert far not in {x.id for x in later}
    assert (await pgqrs.admin(store).queue_metrics("q")).delayed == 1


async def test_produce_argument_validation(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    naive = datetime.now()
    bad_calls = [
        pgqrs.produce(store, "q", 1, at=naive),
        pgqrs.produce(store, "q", 1, delay=-1),
        pgqrs.produce(store, "q", 1, delay="soon"),  # type: ignore[arg-type]
        pgqrs.produce(store, "q", 1, max_attempts=0),
        pgqrs.produce_batch(store, "q", [1], delay=timedelta(seconds=-1)),
    ]
    for call in bad_calls:
        with pytest.raises(ValidationError):
            await call
    with pytest.raises(TypeError):
        await pgqrs.produce("not a store", "q", 1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await pgqrs.connect(123)  # type: ignore[arg-type]
    assert await counts(store, "q") == (0, 0, 0, 0, 0)


async def test_max_attempts_per_job(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    await pgqrs.produce(store, "q", 1, max_attempts=2)
    await pgqrs.produce(store, "q", 2)
    c = await store.consumer("q")
    a, b = await c.dequeue(2)
    assert a.max_attempts == 2
    assert b.max_attempts >= 1


async def test_priorities(store: pgqrs.Store) -> None:
    """Higher priority first, then id; the priority shows on the message; out of range is a
    typed error and writes nothing."""
    await pgqrs.admin(store).create_queue("q")
    plain = await pgqrs.produce_batch(store, "q", ["a", "b"])
    high = await pgqrs.produce(store, "q", "high", priority=5)
    low = await pgqrs.produce(store, "q", "low", priority=-5)
    for bad in (32768, -32769, 2**40):
        with pytest.raises(pgqrs.errors.ValidationError, match="priority"):
            await pgqrs.produce(store, "q", "bad", priority=bad)
    c = await store.consumer("q")
    got = await c.dequeue(10)
    assert [(m.id, m.priority) for m in got] == [
        (high, 5),
        (plain[0], 0),
        (plain[1], 0),
        (low, -5),
    ]
