"""The long-running ``pgqrs.worker``: concurrency, batches, sync handlers, failures, graceful
shutdown, cancellation and registration (mirrors ``cases/worker.rs``)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

import pytest

import pgqrs
from conftest import with_query_param
from support import counts, store_with_queue


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0
) -> None:
    """Poll ``check`` until it holds; fail (not a speed assertion: a hang guard) after
    ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def run_until_done(
    store: pgqrs.Store, w: pgqrs.Worker, queue: str, done: int
) -> pgqrs.WorkerStats:
    """Run ``w`` until ``done`` jobs of ``queue`` are archived or dead, then stop it."""
    task = asyncio.create_task(w.run())

    async def finished() -> bool:
        if task.done():
            return True
        m = await pgqrs.admin(store).queue_metrics(queue)
        return m.archived + m.dead >= done

    try:
        await wait_until(finished, f"{done} jobs of {queue} to finish")
    finally:
        w.stop()
    return await task


async def test_worker_concurrency(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    ids = await pgqrs.produce_batch(store, "q", list(range(12)))
    seen: Counter[int] = Counter()
    running = 0
    peak = 0

    async def handler(msg: pgqrs.Message) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        seen[msg.id] += 1
        await asyncio.sleep(0.05)
        running -= 1

    w = pgqrs.worker(store, "q", handler, concurrency=4, poll_interval=0.02)
    stats = await run_until_done(store, w, "q", 12)
    assert isinstance(stats, pgqrs.WorkerStats)
    assert 2 <= peak <= 4, f"{peak} handlers ran at once with concurrency 4"
    assert sorted(seen) == ids and set(seen.values()) == {1}
    assert (stats.succeeded, stats.failed, stats.dead, stats.lease_lost) == (12, 0, 0, 0)
    assert stats.worker_id == w.worker_id
    assert await counts(store, "q") == (0, 0, 0, 12, 0)


async def test_worker_batch_handler(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    n = 23
    ids = await pgqrs.produce_batch(store, "q", list(range(n)), max_attempts=5)
    sizes: list[int] = []
    seen: Counter[int] = Counter()
    failed_batches: Counter[int] = Counter()

    async def handler(msgs: list[pgqrs.Message]) -> None:
        assert isinstance(msgs, list)
        sizes.append(len(msgs))
        if any(m.attempts == 1 for m in msgs) and len(sizes) % 3 == 0:
            for m in msgs:
                failed_batches[m.id] += 1
            raise RuntimeError("this batch fails as a whole")
        for m in msgs:
            seen[m.id] += 1

    w = pgqrs.worker(
        store,
        "q",
        handler,
        concurrency=2,
        batch_size=5,
        batch=True,
        retry=pgqrs.RetryPolicy.fixed(5, 0.0),
        poll_interval=0.02,
    )
    stats = await run_until_done(store, w, "q", n)
    assert all(1 <= s <= 5 for s in sizes), sizes
    assert any(s > 1 for s in sizes), f"never more than one message per call: {sizes}"
    assert sorted(seen) == ids and set(seen.values()) == {1}
    archived = {a.id: a for a in await pgqrs.admin(store).archived_jobs("q", limit=100)}
    for jid in ids:
        assert archived[jid].attempts == failed_batches[jid] + 1, "every failed batch counted"
    assert stats.succeeded == n
    assert stats.failed == sum(failed_batches.values()) and stats.dead == 0


async def test_worker_sync_handler_runs_off_the_event_loop(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    await pgqrs.produce_batch(store, "q", list(range(6)))
    loop_thread = threading.get_ident()
    threads: list[int] = []
    lock = threading.Lock()

    def handler(msg: pgqrs.Message) -> None:
        with lock:
            threads.append(threading.get_ident())

    w = pgqrs.worker(store, "q", handler, concurrency=3, poll_interval=0.02)
    stats = await run_until_done(store, w, "q", 6)
    assert len(threads) == 6
    assert loop_thread not in threads, "a plain handler must run in a thread"
    assert stats.succeeded == 6


async def test_worker_failures_retry_then_dead_letter(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    ids = await pgqrs.produce_batch(store, "q", ["ok", "flaky", "never", "refuse"], max_attempts=3)
    calls: Counter[str] = Counter()

    def handler(msg: pgqrs.Message) -> bool | None:
        calls[msg.payload] += 1
        if msg.payload == "flaky" and msg.attempts < 3:
            raise ConnectionError(f"flaky (attempt {msg.attempts})")
        if msg.payload == "never":
            raise ValueError(f"always fails (attempt {msg.attempts})")
        if msg.payload == "refuse":
            return False
        return None

    w = pgqrs.worker(store, "q", handler, retry=pgqrs.RetryPolicy.fixed(3, 0.0), poll_interval=0.02)
    stats = await run_until_done(store, w, "q", 4)
    assert calls == Counter({"ok": 1, "flaky": 3, "never": 3, "refuse": 3})
    dead = {d.id: d for d in await admin.dead_letters("q")}
    assert sorted(dead) == [ids[2], ids[3]]
    assert dead[ids[2]].last_error == "ValueError: always fails (attempt 3)"
    assert dead[ids[3]].last_error == "handler returned False", "False counts as a failure"
    assert all(d.attempts == 3 for d in dead.values())
    assert (stats.succeeded, stats.dead) == (2, 2)
    assert stats.failed == 2 + 3 + 3
    assert await counts(store, "q") == (0, 0, 0, 2, 2)


async def test_worker_stop_is_graceful(store: pgqrs.Store) -> None:
    """stop(): the running handler finishes; jobs never started are released (claimable at
    once, attempt given back); nothing new is claimed."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    ids = await pgqrs.produce_batch(store, "q", list(range(5)))
    started = asyncio.Event()
    go_on = asyncio.Event()
    handled: list[int] = []

    async def handler(msg: pgqrs.Message) -> None:
        handled.append(msg.id)
        started.set()
        await go_on.wait()

    w = pgqrs.worker(store, "q", handler, concurrency=1, poll_interval=0.02)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(started.wait(), 30)
    w.stop()
    await asyncio.sleep(0.1)
    assert not task.done(), "run() waits for the running handler"
    go_on.set()
    stats = await task
    assert handled == [ids[0]], "no handler started after stop()"
    assert stats.succeeded == 1
    assert await counts(store, "q") == (4, 0, 0, 1, 0), "nothing left leased"
    rest = await (await store.consumer("q")).dequeue(10)
    assert [m.id for m in rest] == ids[1:], "released jobs are claimable at once"
    assert all(m.attempts == 1 for m in rest), "released attempts were given back"
    (info,) = await admin.list_workers()
    assert info.status == "stopped"


async def test_worker_task_cancellation_releases_unfinished_jobs(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    ids = await pgqrs.produce_batch(store, "q", list(range(4)))
    started = 0
    cancelled = 0
    all_started = asyncio.Event()

    async def handler(msg: pgqrs.Message) -> None:
        nonlocal started, cancelled
        started += 1
        if started == 2:
            all_started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled += 1
            raise

    w = pgqrs.worker(store, "q", handler, concurrency=2, shutdown_grace=0.1, poll_interval=0.02)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(all_started.wait(), 30)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("run() must re-raise the cancellation")
    assert task.cancelled()
    assert cancelled == 2, "running handlers were cancelled after the grace period"
    assert await counts(store, "q") == (4, 0, 0, 0, 0), "every unfinished job was released"
    again = await (await store.consumer("q")).dequeue(10)
    assert sorted(m.id for m in again) == ids, "claimable again at once"
    assert all(m.attempts == 1 for m in again)


async def test_worker_cancellation_lets_short_handlers_finish(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    await pgqrs.produce_batch(store, "q", [1, 2, 3])
    started = asyncio.Event()

    async def handler(msg: pgqrs.Message) -> None:
        started.set()
        await asyncio.sleep(0.2)

    w = pgqrs.worker(store, "q", handler, concurrency=1, poll_interval=0.02)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    ready, delayed, leased, archived, dead = await counts(store, "q")
    assert (leased, delayed, dead) == (0, 0, 0)
    assert archived >= 1, "the running handler finished within the grace period"
    assert ready + archived == 3, "the rest was released"


async def test_worker_registration_and_heartbeat(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    await pgqrs.produce(store, "q", "slow")
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(msg: pgqrs.Message) -> None:
        started.set()
        await release.wait()

    w = pgqrs.worker(store, "q", handler, heartbeat_interval=0.2, poll_interval=0.02)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(started.wait(), 30)
    (first,) = await admin.list_workers()
    assert isinstance(first, pgqrs.WorkerInfo)
    assert (first.id, first.queue, first.pid, first.status) == (
        w.worker_id,
        "q",
        os.getpid(),
        "running",
    )
    assert first.hostname
    assert first.started_at.tzinfo is not None and first.heartbeat_at >= first.started_at
    assert first.started_at <= datetime.now(timezone.utc)
    assert first.is_healthy(stale_after=30)

    async def heartbeat_moved() -> bool:
        (now,) = await admin.list_workers()
        return now.heartbeat_at > first.heartbeat_at

    await wait_until(heartbeat_moved, "a heartbeat")
    (later,) = await admin.list_workers()
    assert later.status == "running" and later.started_at == first.started_at
    release.set()
    w.stop()
    stats = await task
    assert (stats.worker_id, stats.succeeded) == (first.id, 1)
    (end,) = await admin.list_workers()
    assert end.status == "stopped"
    assert not end.is_healthy(stale_after=3600), "a stopped worker is not healthy"

    # A second worker is listed first (newest first).
    w2 = pgqrs.worker(store, "q", handler, poll_interval=0.02)
    t2 = asyncio.create_task(w2.run())

    async def two() -> bool:
        return len(await admin.list_workers()) == 2

    await wait_until(two, "the second worker to register")
    w2.stop()
    await t2
    workers = await admin.list_workers()
    assert [x.id for x in workers] == [w2.worker_id, first.id]


async def test_worker_stop_before_run_returns_at_once(store: pgqrs.Store) -> None:
    await pgqrs.admin(store).create_queue("q")
    await pgqrs.produce(store, "q", 1)

    async def handler(msg: pgqrs.Message) -> None:
        raise AssertionError("never called")

    w = pgqrs.worker(store, "q", handler)
    w.stop()
    stats = await w.run()
    assert stats.succeeded == 0
    assert await counts(store, "q") == (1, 0, 0, 0, 0)


async def test_worker_polls_at_the_connection_strings_interval(dsn: str) -> None:
    """An idle worker polls at the store's ``poll_interval_ms`` (backing off up to 10 times
    it), like the Rust worker, not at a rate of its own. A delayed job becomes ready with no
    commit to wake anyone, so only polling finds it: with ``poll_interval_ms=20`` an idle
    worker looks at least every 0.2 s; the old hard-coded 0.2 s backed off to 2 s."""
    store = await store_with_queue(with_query_param(dsn, "poll_interval_ms", "20"))
    try:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        started_at = 0.0

        async def handler(msg: pgqrs.Message) -> None:
            nonlocal started_at
            started_at = loop.time()
            started.set()

        w = pgqrs.worker(store, "q", handler)
        task = asyncio.create_task(w.run())
        try:
            await asyncio.sleep(1.5)  # idle long enough to back off to the longest wait
            await pgqrs.produce(store, "q", "late", delay=0.5)
            ready_at = loop.time() + 0.5
            await asyncio.wait_for(started.wait(), 30)
        finally:
            w.stop()
            await task
        late = started_at - ready_at
        assert late < 0.75, f"the job waited {late:.2f} s after it became ready"
    finally:
        await store.close()


async def test_worker_heartbeat_follows_a_short_lease(store: pgqrs.Store) -> None:
    """Leases of 1 s, handlers of 2.5 s, two workers: the heartbeat (a third of the lease by
    default) keeps every lease, so each job runs once and no completion is refused."""
    await pgqrs.admin(store).create_queue("q")
    ids = await pgqrs.produce_batch(store, "q", [0, 1, 2])
    seen: Counter[int] = Counter()

    async def handler(msg: pgqrs.Message) -> None:
        seen[msg.id] += 1
        await asyncio.sleep(2.5)

    workers = [
        pgqrs.worker(store, "q", handler, concurrency=3, visibility_timeout=1, poll_interval=0.05)
        for _ in range(2)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]

    async def all_archived() -> bool:
        return (await pgqrs.admin(store).queue_metrics("q")).archived == 3

    await wait_until(all_archived, "three archived jobs")
    await asyncio.sleep(1.5)  # a lost lease would have been claimed again by now
    for w in workers:
        w.stop()
    stats = await asyncio.gather(*tasks)
    assert seen == Counter({i: 1 for i in ids})
    assert sum(s.lease_lost for s in stats) == 0
    assert await counts(store, "q") == (0, 0, 0, 3, 0)


def test_worker_refuses_a_heartbeat_longer_than_half_the_lease() -> None:
    with pytest.raises(pgqrs.errors.ValidationError, match=r"heartbeat_interval.*half the lease"):
        pgqrs.Worker(None, "q", print, visibility_timeout=2, heartbeat_interval=5)  # type: ignore[arg-type]
    with pytest.raises(pgqrs.errors.ValidationError, match="claim_ahead_timeout"):
        pgqrs.Worker(None, "q", print, claim_ahead_timeout=0)  # type: ignore[arg-type]


async def test_worker_gives_back_what_its_stalled_handlers_hold(store: pgqrs.Store) -> None:
    """Worker A's handlers are quick, then both hang: the jobs it claimed ahead are given back
    after the claim-ahead timeout (0.5 s here), and worker B, started afterwards, handles all
    but the two A runs."""
    jobs = 1500
    await pgqrs.admin(store).create_queue("q")
    await pgqrs.produce_batch(store, "q", list(range(jobs)))
    stall = False
    unblock = asyncio.Event()

    async def quick_then_stuck(msg: pgqrs.Message) -> None:
        if stall:
            await unblock.wait()

    async def quick(msg: pgqrs.Message) -> None:
        pass

    a = pgqrs.worker(
        store, "q", quick_then_stuck, concurrency=2, poll_interval=0.05, claim_ahead_timeout=0.5
    )
    ta = asyncio.create_task(a.run())

    async def a_warmed_up() -> bool:
        return (await pgqrs.admin(store).queue_metrics("q")).archived >= 500

    await wait_until(a_warmed_up, "A to handle 500 jobs")
    stall = True
    b = pgqrs.worker(store, "q", quick, concurrency=4, poll_interval=0.05)
    tb = asyncio.create_task(b.run())

    async def b_has_the_rest() -> bool:
        m = await pgqrs.admin(store).queue_metrics("q")
        return m.archived == jobs - 2 and m.leased == 2

    # Without the give-back A would keep its claimed-ahead jobs leased while it lives.
    await wait_until(b_has_the_rest, "B to handle all but A's two stalled jobs", timeout=20)
    unblock.set()
    a.stop()
    b.stop()
    sa, sb = await asyncio.gather(ta, tb)
    assert sa.lease_lost + sb.lease_lost == 0
    assert await counts(store, "q") == (0, 0, 0, jobs, 0)
