"""Queues: create, list, delete, purge, metrics, name validation (mirrors the Rust
conformance suite's ``cases/queues.rs``)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

import pgqrs
from pgqrs.errors import (
    LeaseLostError,
    QueueAlreadyExistsError,
    QueueInUseError,
    QueueNotFoundError,
    ValidationError,
)
from support import counts


async def names(store: pgqrs.Store) -> list[str]:
    return [q.name for q in await pgqrs.admin(store).list_queues()]


async def test_queue_lifecycle(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    assert await names(store) == []
    before = datetime.now(timezone.utc).replace(microsecond=0)
    infos = [await admin.create_queue(n) for n in ("gamma", "alpha", "beta")]
    for info, name in zip(infos, ("gamma", "alpha", "beta"), strict=True):
        assert isinstance(info, pgqrs.QueueInfo)
        assert info.name == name
        assert info.created_at.tzinfo is not None
        assert info.created_at >= before
    assert len({i.id for i in infos}) == 3, "queue ids are distinct"
    with pytest.raises(QueueAlreadyExistsError) as exc:
        await admin.create_queue("beta")
    assert exc.value.queue == "beta"
    assert await names(store) == ["alpha", "beta", "gamma"], "listed by name"

    m = await admin.queue_metrics("beta")
    assert isinstance(m, pgqrs.QueueMetrics)
    assert (m.queue, m.ready, m.delayed, m.leased, m.archived, m.dead) == ("beta", 0, 0, 0, 0, 0)
    assert m.oldest_ready_age == 0.0 and m.pending == 0

    # beta: 2 ready, 1 delayed, 1 leased, 1 archived, 1 dead.
    await pgqrs.produce(store, "alpha", "other queue")
    ids = await pgqrs.produce_batch(store, "beta", ["a", "b", "c", "d", "e"])
    await pgqrs.produce(store, "beta", "later", delay=3600)
    c = await store.consumer("beta")
    got = await c.dequeue(3)
    assert [g.id for g in got] == ids[:3]
    await c.archive(got[0].id)
    await c.fail(got[1].id, "boom", pgqrs.RetryPolicy.none())
    assert await counts(store, "beta") == (2, 1, 1, 1, 1)
    m = await admin.queue_metrics("beta")
    assert m.pending == 4 and m.oldest_ready_age >= 0.0

    assert await admin.purge_queue("beta") == 4, "2 ready + 1 delayed + 1 leased"
    assert await counts(store, "beta") == (0, 0, 0, 1, 1), "archive and dead letters stay"
    assert (await admin.queue_metrics("alpha")).ready == 1, "other queues untouched"
    with pytest.raises(LeaseLostError):
        await c.archive(got[2].id)
    assert await admin.purge_queue("beta") == 0

    await admin.delete_queue("beta")
    assert await names(store) == ["alpha", "gamma"]
    for call in (
        admin.queue_metrics("beta"),
        admin.delete_queue("beta"),
        admin.delete_queue("beta", force=True),
        admin.purge_queue("beta"),
    ):
        with pytest.raises(QueueNotFoundError) as nf:
            await call
        assert nf.value.queue == "beta"

    # Re-created, it starts empty.
    await admin.create_queue("beta")
    assert await counts(store, "beta") == (0, 0, 0, 0, 0)
    assert await admin.dead_letters("beta") == []
    assert await admin.archived_jobs("beta") == []
    assert await names(store) == ["alpha", "beta", "gamma"]


async def test_delete_refused_while_leased(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("busy")
    await pgqrs.produce(store, "busy", 1)
    c = await store.consumer("busy")
    held = await c.dequeue(1, visibility_timeout=60)
    assert len(held) == 1
    with pytest.raises(QueueInUseError) as exc:
        await admin.delete_queue("busy")
    assert (exc.value.queue, exc.value.leased) == ("busy", 1)
    assert await counts(store, "busy") == (0, 0, 1, 0, 0), "nothing changed"
    await admin.delete_queue("busy", force=True)
    assert await names(store) == []
    with pytest.raises((LeaseLostError, QueueNotFoundError)):
        await c.archive(held[0].id)


BAD_NAMES = [
    "",
    "a" * 49,
    "has space",
    " lead",
    "trail ",
    "semi;colon",
    "x'; DROP TABLE pgqrs_jobs; --",
    'quote"d',
    "dot.ted",
    "sl/ash",
    "back\\slash",
    "tab\there",
    "new\nline",
    "nul\0byte",
    "ünïcödé",
    "名前",
    "emoji🦀",
    "%",
    "*",
]


async def test_queue_name_validation(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)

    async def handler(msg: pgqrs.Message) -> None:
        raise AssertionError("never called")

    for name in BAD_NAMES:
        with pytest.raises(ValidationError) as exc:
            await admin.create_queue(name)
        assert exc.value.field == "queue name", name
        assert str(exc.value)
        assert isinstance(exc.value, ValueError), "ValidationError is a ValueError"
        for call in (
            pgqrs.produce(store, name, 1),
            pgqrs.produce_batch(store, name, [1, 2]),
            pgqrs.consume(store, name, handler),
            admin.queue_metrics(name),
            admin.delete_queue(name, force=True),
            admin.purge_queue(name),
            store.consumer(name),
            pgqrs.worker(store, name, handler).run(),
        ):
            with pytest.raises(ValidationError):
                await call
    assert await names(store) == [], "nothing was written"
    assert await admin.list_workers() == [], "no worker registered"

    for name in ["a", "9", "A-b_9", "under_score", "da-sh", "Z" * 48]:
        await admin.create_queue(name)
    assert len(await names(store)) == 6
    await admin.create_queue("A")  # names are case-sensitive
    assert "A" in await names(store) and "a" in await names(store)


async def test_unknown_queue_errors(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)

    async def handler(msg: pgqrs.Message) -> None:
        raise AssertionError("never called")

    for call in (
        pgqrs.produce(store, "nope", 1),
        pgqrs.produce_batch(store, "nope", [1]),
        pgqrs.consume(store, "nope", handler),
        store.consumer("nope"),
        admin.queue_metrics("nope"),
        admin.purge_queue("nope"),
        admin.delete_queue("nope"),
        admin.dead_letters("nope"),
        admin.requeue_dead("nope"),
        admin.archived_jobs("nope"),
        pgqrs.worker(store, "nope", handler).run(),
    ):
        with pytest.raises(QueueNotFoundError) as exc:
            await call
        assert exc.value.queue == "nope"
        assert isinstance(exc.value, LookupError)
    assert "nope" in str(exc.value)
    assert await admin.list_workers() == [], "no worker registered"


async def test_install_is_idempotent_and_verifiable(dsn: str) -> None:
    store = await pgqrs.connect(dsn)
    admin = pgqrs.admin(store)
    assert await admin.schema_version() is None
    with pytest.raises(pgqrs.errors.SchemaNotInstalledError):
        await admin.create_queue("q")
    await admin.install()
    version = await admin.schema_version()
    assert version is not None
    await admin.install()
    await admin.verify()
    assert await admin.schema_version() == version
    await store.close()
    with pytest.raises(pgqrs.errors.StoreClosedError):
        await admin.list_queues()
