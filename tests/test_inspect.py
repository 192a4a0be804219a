"""Inspecting and acting on jobs from Python: get one in any state, list by state a page at a
time, cancel, retry, reschedule, re-prioritize (mirrors ``cases/inspect.rs``)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

import pgqrs
from pgqrs.errors import JobError, JobNotFoundError, JobStateError, ValidationError
from support import counts

STATES: list[pgqrs.JobState] = ["ready", "delayed", "leased", "archived", "dead"]


async def setup(store: pgqrs.Store) -> tuple[pgqrs.Admin, pgqrs.Consumer]:
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    return admin, await store.consumer("q")


async def all_pages(admin: pgqrs.Admin, state: pgqrs.JobState, limit: int) -> list[pgqrs.Job]:
    out: list[pgqrs.Job] = []
    cursor = None
    while True:
        page = await admin.list_jobs("q", state, limit=limit, cursor=cursor)
        assert len(page.jobs) <= limit
        assert all(j.state == state and j.queue == "q" for j in page.jobs)
        out.extend(page.jobs)
        if page.next_cursor is None:
            return out
        assert len(page.jobs) == limit
        cursor = page.next_cursor


async def test_get_job_in_every_state(store: pgqrs.Store) -> None:
    admin, c = await setup(store)
    done = await pgqrs.produce(store, "q", {"tag": "done"})
    dead = await pgqrs.produce(store, "q", {"tag": "dead"}, max_attempts=1, priority=4)
    got = await c.dequeue(batch_size=2)
    assert [m.id for m in got] == [dead, done]
    await c.archive(done)
    await c.fail(dead, "boom")
    leased = await pgqrs.produce(store, "q", {"tag": "leased"})
    [claimed] = await c.dequeue(batch_size=1, visibility_timeout=600)
    ready = await pgqrs.produce(store, "q", {"tag": "ready"}, priority=-3)
    delayed = await pgqrs.produce(store, "q", {"tag": "delayed"}, delay=3600)

    j = await admin.get_job(ready)
    assert isinstance(j, pgqrs.Job)
    assert (j.state, j.queue, j.payload, j.priority, j.attempts) == (
        "ready",
        "q",
        {"tag": "ready"},
        -3,
        0,
    )
    assert j.waiting and j.visible_at is not None and j.visible_at.tzinfo is not None
    assert (j.leased_at, j.finished_at, j.last_error, j.worker_id) == (None, None, None, None)
    j = await admin.get_job(delayed)
    assert j.state == "delayed" and j.waiting
    assert j.visible_at is not None
    assert j.visible_at > datetime.now(timezone.utc) + timedelta(seconds=3000)
    j = await admin.get_job(leased)
    assert (j.state, j.attempts, j.waiting) == ("leased", 1, False)
    assert j.visible_at == claimed.visible_at and j.leased_at is not None
    j = await admin.get_job(done)
    assert (j.state, j.max_attempts, j.visible_at) == ("archived", None, None)
    assert j.finished_at is not None
    j = await admin.get_job(dead)
    assert (j.state, j.priority, j.attempts, j.max_attempts) == ("dead", 4, 1, 1)
    assert j.last_error is not None and "boom" in j.last_error

    with pytest.raises(JobNotFoundError) as nf:
        await admin.get_job(2**63 - 1)
    assert nf.value.job_id == 2**63 - 1

    listed = [len(await all_pages(admin, s, 10)) for s in STATES]
    assert tuple(listed) == await counts(store, "q") == (1, 1, 1, 1, 1)


async def test_list_jobs_pages(store: pgqrs.Store) -> None:
    admin, c = await setup(store)
    ids = await pgqrs.produce_batch(store, "q", list(range(7)))
    top = await pgqrs.produce(store, "q", "top", priority=5)
    want = [top, *ids]
    for limit in (1, 3, 7, 100):
        assert [j.id for j in await all_pages(admin, "ready", limit)] == want
    page = await admin.list_jobs("q", "ready")
    assert page == pgqrs.JobPage(jobs=page.jobs, next_cursor=None) and len(page.jobs) == 8
    for m in await c.dequeue(batch_size=3):
        await c.archive(m.id)
        await asyncio.sleep(0.005)
    assert [j.id for j in await all_pages(admin, "archived", 2)] == [ids[1], ids[0], top]

    for bad in (0, -1, 10_001):
        with pytest.raises(ValidationError) as e:
            await admin.list_jobs("q", "ready", limit=bad)
        assert e.value.field == "limit"
    first = await admin.list_jobs("q", "ready", limit=1)
    assert first.next_cursor is not None
    with pytest.raises(ValidationError) as e:
        await admin.list_jobs("q", "dead", cursor=first.next_cursor)
    assert e.value.field == "cursor"
    with pytest.raises(ValidationError) as e:
        await admin.list_jobs("q", "ready", cursor="garbage")
    assert e.value.field == "cursor"
    with pytest.raises(ValidationError) as e:
        await admin.list_jobs("q", "finished")  # type: ignore[arg-type]
    assert e.value.field == "state"
    with pytest.raises(ValidationError):
        await admin.list_jobs("q", "ready", limit="10")  # type: ignore[arg-type]


async def test_cancel(store: pgqrs.Store) -> None:
    admin, c = await setup(store)
    leased = await pgqrs.produce(store, "q", "leased")
    await c.dequeue(batch_size=1, visibility_timeout=600)
    ready = await pgqrs.produce(store, "q", "ready")
    delayed = await pgqrs.produce(store, "q", "delayed", delay=timedelta(hours=1))

    j = await admin.cancel_job(ready)
    assert (j.id, j.state, j.payload) == (ready, "ready", "ready")
    assert (await admin.cancel_job(delayed)).state == "delayed"
    with pytest.raises(JobNotFoundError):
        await admin.cancel_job(ready)
    with pytest.raises(JobStateError) as e:
        await admin.cancel_job(leased)
    assert isinstance(e.value, JobError)
    assert (e.value.job_id, e.value.state, e.value.action) == (leased, "leased", "cancel")
    assert "leased" in str(e.value)
    await c.archive(leased)
    assert await counts(store, "q") == (0, 0, 0, 1, 0)


async def test_retry_reschedule_priority(store: pgqrs.Store) -> None:
    admin, c = await setup(store)
    dead = await pgqrs.produce(store, "q", "d", max_attempts=1)
    await c.dequeue(batch_size=1)
    await c.fail(dead, "boom")
    j = await admin.retry_job(dead)
    assert (j.state, j.attempts) == ("ready", 0)
    with pytest.raises(JobStateError) as e:
        await admin.retry_job(dead)
    assert (e.value.state, e.value.action) == ("ready", "retry")

    j = await admin.reschedule_job(dead, delay=3600)
    assert j.state == "delayed"
    at = datetime.now(timezone.utc) + timedelta(hours=2)
    j = await admin.reschedule_job(dead, at=at)
    assert j.visible_at is not None and abs((j.visible_at - at).total_seconds()) < 1
    j = await admin.reschedule_job(dead, delay=0)
    assert j.state == "ready"
    other = await pgqrs.produce(store, "q", "o")
    j = await admin.set_job_priority(other, 3)
    assert (j.priority, j.state) == (3, "ready")
    [m] = await c.dequeue(batch_size=1)
    assert (m.id, m.priority) == (other, 3)

    with pytest.raises(ValidationError) as v:
        await admin.set_job_priority(dead, 40_000)
    assert v.value.field == "priority"
    with pytest.raises(ValidationError):
        await admin.reschedule_job(dead)
    with pytest.raises(ValidationError):
        await admin.reschedule_job(dead, delay=1, at=at)
    with pytest.raises(ValidationError):
        await admin.reschedule_job(dead, at=datetime(2030, 1, 1))
    with pytest.raises(ValidationError):
        await admin.reschedule_job(dead, delay=-1)
    with pytest.raises(ValidationError):
        await admin.cancel_job("1")  # type: ignore[arg-type]
    with pytest.raises(JobStateError) as e:
        await admin.set_job_priority(other, 1)
    assert (e.value.state, e.value.action) == ("leased", "set_priority")
    assert (await admin.get_job(dead)).priority == 0
