"""Consuming: the one-shot ``consume``, the low-level ``Consumer``, leases, retries and dead
letters, message fields and ``store.messages()`` (mirrors ``cases/jobs.rs``,
``cases/consume.rs`` and ``cases/retry.rs``)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from datetime import datetime, timedelta, timezone

import pytest

import pgqrs
from conftest import with_query_param
from pgqrs.errors import JobNotFoundError, LeaseLostError, ValidationError
from support import counts, store_with_queue


async def test_consume_handles_ready_jobs_and_ends(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    seen: list[object] = []

    async def handler(msg: pgqrs.Message) -> bool:
        seen.append(msg.payload)
        return True

    assert await pgqrs.consume(store, "q", handler) == 0, "nothing ready: returns at once"
    await pgqrs.produce_batch(store, "q", [1, 2, 3, 4, 5])
    await pgqrs.produce(store, "q", "later", delay=3600)
    assert await pgqrs.consume(store, "q", handler) == 1, "batch_size defaults to 1"
    assert await pgqrs.consume(store, "q", handler, batch_size=3) == 3
    assert await pgqrs.consume(store, "q", handler, batch_size=10) == 1
    assert await pgqrs.consume(store, "q", handler, batch_size=10) == 0
    assert seen == [1, 2, 3, 4, 5]
    assert await counts(store, "q") == (0, 1, 0, 5, 0)


async def test_consume_batch_runs_handlers_concurrently(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    await pgqrs.produce_batch(store, "q", list(range(4)))
    running = 0
    peak = 0

    async def handler(msg: pgqrs.Message) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    assert await pgqrs.consume(store, "q", handler, batch_size=4) == 4
    assert peak == 4
    assert await counts(store, "q") == (0, 0, 0, 4, 0)


async def test_consume_sync_handler_runs_in_a_thread(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    await pgqrs.produce_batch(store, "q", ["a", "b"])
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def handler(msg: pgqrs.Message) -> None:
        threads.append(threading.get_ident())

    assert await pgqrs.consume(store, "q", handler, batch_size=2) == 2
    assert len(threads) == 2
    assert loop_thread not in threads, "a plain handler must not run on the event loop"
    assert await counts(store, "q") == (0, 0, 0, 2, 0)


async def test_consume_failures_retry_then_dead_letter_then_requeue(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    payload = {"task": "flaky", "n": 7}
    jid = await pgqrs.produce(store, "q", payload, max_attempts=3)
    attempts: list[int] = []

    async def failing(msg: pgqrs.Message) -> None:
        attempts.append(msg.attempts)
        raise RuntimeError(f"boom on attempt {msg.attempts}")

    no_wait = pgqrs.RetryPolicy(max_attempts=None, backoff="fixed", base=0.0, max=0.0)
    for _ in range(3):
        assert await pgqrs.consume(store, "q", failing, retry=no_wait) == 1
    assert attempts == [1, 2, 3]
    assert await pgqrs.consume(store, "q", failing, retry=no_wait) == 0, "a dead letter waits"
    assert await counts(store, "q") == (0, 0, 0, 0, 1)

    (dead,) = await admin.dead_letters("q")
    assert isinstance(dead, pgqrs.DeadLetter)
    assert (dead.id, dead.queue, dead.attempts, dead.payload) == (jid, "q", 3, payload)
    assert dead.last_error == "RuntimeError: boom on attempt 3", "the exception text is kept"
    assert dead.enqueued_at.tzinfo is not None and dead.failed_at >= dead.enqueued_at

    assert await admin.requeue_dead("q", []) == 0
    assert await admin.requeue_dead("q", [jid, jid + 1000, -1]) == 1, "others are skipped"
    assert await admin.requeue_dead("q", [jid]) == 0, "already re-queued"
    assert await admin.dead_letters("q") == []
    assert await counts(store, "q") == (1, 0, 0, 0, 0)
    got: list[tuple[int, int, object]] = []

    async def ok(msg: pgqrs.Message) -> None:
        got.append((msg.id, msg.attempts, msg.payload))

    assert await pgqrs.consume(store, "q", ok) == 1
    assert got == [(jid, 1, payload)], "attempts were reset"

    # A handler returning False counts as a failure; requeue_dead() re-queues them all.
    ids = await pgqrs.produce_batch(store, "q", [1, 2])

    async def refuses(msg: pgqrs.Message) -> bool:
        return False

    assert await pgqrs.consume(store, "q", refuses, 2, retry=pgqrs.RetryPolicy.none()) == 2
    dead_letters = await admin.dead_letters("q")
    assert sorted(d.id for d in dead_letters) == ids
    assert all(d.last_error == "handler returned False" for d in dead_letters)
    assert len(await admin.dead_letters("q", limit=1)) == 1
    assert await admin.requeue_dead("q") == 2
    assert await counts(store, "q") == (2, 0, 0, 1, 0)


async def test_consume_failure_backoff_delays_the_job(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    jid = await pgqrs.produce(store, "q", "x", max_attempts=5)

    def failing(msg: pgqrs.Message) -> None:
        raise ValueError("try again later")

    assert await pgqrs.consume(store, "q", failing, retry=pgqrs.RetryPolicy.fixed(5, 0.3)) == 1
    assert await counts(store, "q") == (0, 1, 0, 0, 0), "waiting out its backoff"
    c = await store.consumer("q")
    assert await c.dequeue() == []
    await asyncio.sleep(0.4)
    (m,) = await c.dequeue()
    assert (m.id, m.attempts, m.last_error) == (jid, 2, "ValueError: try again later")


async def test_consumer_dequeue_takes_a_lease(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    before = datetime.now(timezone.utc)
    jid = await pgqrs.produce(store, "q", {"hello": "world"})
    a = await store.consumer("q")
    b = await store.consumer("q")
    assert a.queue == "q"
    (m,) = await a.dequeue(5, visibility_timeout=30)
    assert isinstance(m, pgqrs.Message)
    assert (m.id, m.queue, m.payload, m.attempts, m.last_error) == (
        jid,
        "q",
        {"hello": "world"},
        1,
        None,
    )
    assert m.max_attempts >= 1
    assert isinstance(m.enqueued_at, datetime) and m.enqueued_at.tzinfo is not None
    assert m.enqueued_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=5) <= m.enqueued_at <= datetime.now(timezone.utc)
    assert m.visible_at.tzinfo is not None
    lease_left = (m.visible_at - datetime.now(timezone.utc)).total_seconds()
    assert 20 < lease_left <= 30.5, lease_left
    assert "Message(id=" in repr(m)
    assert await b.dequeue(5) == [], "leased jobs are invisible"
    assert await a.dequeue(5) == []
    assert await counts(store, "q") == (0, 0, 1, 0, 0)
    with pytest.raises(ValidationError):
        await a.dequeue(0)
    with pytest.raises(ValidationError):
        await a.dequeue(1, visibility_timeout=0)
    with pytest.raises(ValidationError):
        await a.dequeue(1, visibility_timeout=-1)
    await m.archive()
    assert await counts(store, "q") == (0, 0, 0, 1, 0)


async def test_consumer_archive_and_delete(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    ids = await pgqrs.produce_batch(store, "q", [{"i": i} for i in range(6)])
    c = await store.consumer("q")
    msgs = await c.dequeue(6)
    assert [m.id for m in msgs] == ids
    await c.archive(ids[0])
    assert await c.archive_many(ids[1:3]) == [True, True]
    await c.delete(ids[3])
    assert await c.delete_many(ids[4:]) == [True, True]
    assert await counts(store, "q") == (0, 0, 0, 3, 0)
    archived = await admin.archived_jobs("q")
    assert [a.id for a in archived] == sorted(ids[:3], reverse=True) or sorted(
        a.id for a in archived
    ) == ids[:3]
    assert all(isinstance(a, pgqrs.ArchivedJob) and a.attempts == 1 for a in archived)
    assert {a.id: a.payload for a in archived} == {i: {"i": n} for n, i in enumerate(ids[:3])}
    assert all(a.archived_at >= a.enqueued_at for a in archived)
    # Settling again, or a job never claimed: JobNotFoundError with the id.
    for call, jid in ((c.archive(ids[0]), ids[0]), (c.delete(ids[4]), ids[4])):
        with pytest.raises(JobNotFoundError) as exc:
            await call
        assert exc.value.job_id == jid
    assert await c.archive_many([]) == []


async def test_consumer_extend_and_release(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    jid = await pgqrs.produce(store, "q", "x")
    a = await store.consumer("q")
    b = await store.consumer("q")
    (m,) = await a.dequeue(1, visibility_timeout=0.3)
    await a.extend(m.id, 30)
    await asyncio.sleep(0.5)
    assert await b.dequeue(1) == [], "the extended lease still holds"
    with pytest.raises(ValidationError):
        await a.extend(m.id, -1)
    await m.extend(timedelta(seconds=30))
    # Release: claimable again at once, the attempt given back.
    await a.release(m.id)
    (again,) = await b.dequeue(1)
    assert (again.id, again.attempts) == (jid, 1)
    # Release with a delay: delayed, not ready.
    await again.release(delay=3600)
    assert await counts(store, "q") == (0, 1, 0, 0, 0)


async def test_consumer_fail(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    jid = await pgqrs.produce(store, "q", "x", max_attempts=3)
    c = await store.consumer("q")
    (m,) = await c.dequeue()
    await c.fail(m.id, "first", pgqrs.RetryPolicy.fixed(3, 0.0))
    (m,) = await c.dequeue()
    assert (m.id, m.attempts, m.last_error) == (jid, 2, "first")
    await c.fail(m.id, "final", pgqrs.RetryPolicy.none())
    (dead,) = await admin.dead_letters("q")
    assert (dead.id, dead.attempts, dead.last_error) == (jid, 2, "final")
    assert await counts(store, "q") == (0, 0, 0, 0, 1)


async def test_lease_expiry_and_redelivery(dsn: str) -> None:
    store = await store_with_queue(with_query_param(dsn, "visibility_timeout", "1"))
    jid = await pgqrs.produce(store, "q", "x", max_attempts=10)
    c = await store.consumer("q")
    tokens = set()
    for attempt in (1, 2):
        (m,) = await c.dequeue()  # the store's default lease: 1 s
        assert (m.id, m.attempts) == (jid, attempt)
        tokens.add(m.lease_token)
        assert await c.dequeue() == []
        await asyncio.sleep(1.2)  # the consumer "dies": nobody settles the job
        assert (await pgqrs.admin(store).queue_metrics("q")).ready == 1
    assert len(tokens) == 2, "a new lease token per claim"
    (m,) = await c.dequeue()
    assert m.attempts == 3
    await m.archive()
    (a,) = await pgqrs.admin(store).archived_jobs("q")
    assert (a.id, a.attempts) == (jid, 3)
    await store.close()


async def test_stale_consumer_gets_lease_lost(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    ids = await pgqrs.produce_batch(store, "q", list(range(5)))
    a = await store.consumer("q")
    b = await store.consumer("q")
    assert len(await a.dequeue(5, visibility_timeout=0.3)) == 5
    await asyncio.sleep(0.4)
    b_msgs = await b.dequeue(5, visibility_timeout=30)
    assert [m.id for m in b_msgs] == ids and all(m.attempts == 2 for m in b_msgs)
    stale_calls = [
        (a.archive(ids[0]), ids[0]),
        (a.delete(ids[1]), ids[1]),
        (a.extend(ids[2], 10), ids[2]),
        (a.release(ids[3]), ids[3]),
        (a.fail(ids[4], "A's error"), ids[4]),
    ]
    for call, jid in stale_calls:
        with pytest.raises(LeaseLostError) as exc:
            await call
        assert exc.value.job_id == jid, "the exception carries the job id"
        assert isinstance(exc.value, pgqrs.errors.JobError)
    assert await counts(store, "q") == (0, 0, 5, 0, 0), "nothing changed"
    assert await admin.dead_letters("q") == []
    # B holds the leases and settles every job.
    assert await b.archive_many(ids) == [True] * 5
    assert await counts(store, "q") == (0, 0, 0, 5, 0)

    # Many at once: per-job results. An expired lease nobody took over is still good.
    more = await pgqrs.produce_batch(store, "q", ["v", "w", "x", "y", "z"])
    c = await store.consumer("q")
    d = await store.consumer("q")
    assert len(await c.dequeue(5, visibility_timeout=0.3)) == 5
    await asyncio.sleep(0.4)
    taken = await d.dequeue(2)
    assert [t.id for t in taken] == more[:2]
    assert await c.archive_many(more[:3]) == [False, False, True]
    assert await c.delete_many(more[3:]) == [True, True]
    await d.archive_many(more[:2])
    assert await counts(store, "q") == (0, 0, 0, 8, 0)


async def test_store_messages_iteration(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    ids = await pgqrs.produce_batch(store, "q", [{"n": i} for i in range(7)])
    seen: list[int] = []
    async for msg in store.messages("q", batch_size=3, poll_interval=0.01):
        assert isinstance(msg, pgqrs.Message)
        seen.append(msg.payload["n"])
        await msg.archive()
        if len(seen) == 7:
            break
    assert seen == list(range(7))
    assert await counts(store, "q") == (0, 0, 0, 7, 0)

    # It waits for new messages when idle.
    async def later() -> None:
        await asyncio.sleep(0.3)
        await pgqrs.produce(store, "q", {"n": 99})

    producer = asyncio.create_task(later())
    stream = store.messages("q", poll_interval=0.02)
    msg = await stream.__anext__()
    assert msg.payload == {"n": 99}
    await msg.delete()
    await producer

    # Messages claimed but not yielded are released when the stream is closed.
    more = await pgqrs.produce_batch(store, "q", [1, 2, 3, 4])
    async with contextlib.aclosing(store.messages("q", batch_size=4)) as msgs:
        async for m in msgs:
            assert m.id == more[0]
            await m.archive()
            break
    (ready, _, leased, _, _) = await counts(store, "q")
    assert (ready, leased) == (3, 0), "the three buffered messages were released"
    assert ids[0] < more[0]


async def test_store_messages_waits_at_the_connection_strings_interval(dsn: str) -> None:
    """``store.messages()`` idles like a worker: at the store's ``poll_interval_ms``, backing
    off up to 10 times it. A delayed job becomes ready with no commit to wake anyone, so only
    polling finds it: within 0.2 s with ``poll_interval_ms=20`` (a hard-coded 0.2 s backed off
    to 2 s)."""
    store = await store_with_queue(with_query_param(dsn, "poll_interval_ms", "20"))
    try:
        loop = asyncio.get_running_loop()

        async def later() -> float:
            await asyncio.sleep(1.5)  # the stream idles long enough to back off fully
            await pgqrs.produce(store, "q", "late", delay=0.5)
            return loop.time() + 0.5

        producer = asyncio.create_task(later())
        async with contextlib.aclosing(store.messages("q")) as stream:
            msg = await asyncio.wait_for(stream.__anext__(), 30)
            got_at = loop.time()
            await msg.archive()
        late = got_at - await producer
        assert late < 0.75, f"the job waited {late:.2f} s after it became ready"
    finally:
        await store.close()
