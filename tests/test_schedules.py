"""Schedules from Python: create (cron or interval), list, pause, resume, trigger, delete,
typed rows and typed errors, ticks fired by a running worker and by ``fire_due_schedules``
(the Rust conformance cases in ``crates/pgqrs/tests/cases/schedules.rs`` cover the races
and the missed-ticks policy with rewound clocks)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import pgqrs
from pgqrs.errors import (
    QueueNotFoundError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    ValidationError,
)


async def ready_payloads(store: pgqrs.Store, queue: str) -> list[Any]:
    page = await pgqrs.admin(store).list_jobs(queue, "ready", limit=1000)
    return [j.payload for j in page.jobs]


async def test_schedule_rows_and_lifecycle(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("reports")
    before = datetime.now(timezone.utc)
    s = await admin.create_schedule(
        "nightly",
        "reports",
        cron="0 30 3 * * *",
        timezone="Europe/Paris",
        payload={"kind": "daily"},
        catch_up=1,
        priority=3,
    )
    assert isinstance(s, pgqrs.ScheduleInfo)
    assert (s.name, s.queue, s.cron, s.timezone, s.every) == (
        "nightly",
        "reports",
        "0 30 3 * * *",
        "Europe/Paris",
        None,
    )
    assert (s.payload, s.catch_up, s.priority, s.max_attempts) == ({"kind": "daily"}, 1, 3, None)
    assert not s.paused and s.last_tick_at is None and s.workflow is None
    assert before < s.next_at <= before + timedelta(days=1)
    assert (s.next_at.minute, s.next_at.second) == (30, 0)

    e = await admin.create_schedule("poll", "reports", every=timedelta(minutes=5))
    assert e.every == 300.0 and e.cron is None and e.payload is None
    assert e.next_at - e.created_at == timedelta(minutes=5)

    assert [x.name for x in await admin.list_schedules()] == ["nightly", "poll"]
    assert await admin.get_schedule("nightly") == s

    paused = await admin.pause_schedule("nightly")
    assert paused.paused and paused.next_at == s.next_at
    resumed = await admin.resume_schedule("nightly")
    assert not resumed.paused

    with pytest.raises(ScheduleAlreadyExistsError) as exists:
        await admin.create_schedule("nightly", "reports", every=60)
    assert exists.value.name == "nightly"
    with pytest.raises(QueueNotFoundError):
        await admin.create_schedule("x", "missing", every=60)

    await admin.delete_schedule("nightly")
    for call in (
        admin.get_schedule,
        admin.delete_schedule,
        admin.pause_schedule,
        admin.resume_schedule,
        admin.trigger_schedule,
    ):
        with pytest.raises(ScheduleNotFoundError) as missing:
            await call("nightly")
        assert missing.value.name == "nightly"
        assert isinstance(missing.value, LookupError)


@pytest.mark.parametrize(
    ("kwargs", "field", "hint"),
    [
        ({"cron": "* * *"}, "cron", "give 5"),
        ({"cron": "61 * * * *"}, "cron", "give 5"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"every": 0}, "every", "positive"),
        ({"every": -5}, "every", "positive"),
        ({"every": timedelta(seconds=-1)}, "every", "positive"),
        ({"every": 0.5}, "every", "from 1s"),
        ({"every": float("nan")}, "every", "positive"),
        ({"every": "5"}, "every", "seconds"),
        ({"every": 60, "catch_up": -1}, "catch_up", "from 0"),
        ({"every": 60, "catch_up": 1001}, "catch_up", "from 0"),
        ({"every": 60, "catch_up": "all"}, "catch_up", "int"),
        ({"every": 60, "timezone": "UTC"}, "timezone", "drop timezone"),
        ({"cron": "* * * * *", "every": 60}, "cron", "not both"),
        ({}, "cron", "every="),
    ],
)
async def test_bad_schedules_say_how_to_fix_them(
    store: pgqrs.Store, kwargs: dict[str, Any], field: str, hint: str
) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    with pytest.raises(ValidationError) as e:
        await admin.create_schedule("s", "q", **kwargs)
    assert e.value.field == field, str(e.value)
    assert hint in str(e.value)
    assert await admin.list_schedules() == []


async def test_fire_due_trigger_and_workflow_schedule(store: pgqrs.Store) -> None:
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    s = await admin.create_schedule("tick", "q", every=1, payload={"n": 1})
    assert await admin.fire_due_schedules() == 0
    await asyncio.sleep(max(0.0, (s.next_at - datetime.now(timezone.utc)).total_seconds()) + 0.05)
    assert await admin.fire_due_schedules() == 1
    assert await admin.fire_due_schedules() == 0
    assert await ready_payloads(store, "q") == [{"n": 1}]
    assert (await admin.get_schedule("tick")).last_tick_at == s.next_at

    await admin.pause_schedule("tick")
    fired = await admin.trigger_schedule("tick")
    assert isinstance(fired, pgqrs.Fired)
    assert len(fired.job_ids) == 1 and fired.run_ids == []

    await admin.create_schedule("runs", "q", every=3600, workflow="report", payload={"day": 1})
    fired = await admin.trigger_schedule("runs")
    assert len(fired.job_ids) == len(fired.run_ids) == 1
    run = await admin.workflow_run(fired.run_ids[0])
    assert (run.name, run.input, run.status) == ("report", {"day": 1}, "pending")


async def test_running_worker_fires_every_schedule(store: pgqrs.Store) -> None:
    """A worker of another queue fires the schedule at its ticks."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    await admin.create_queue("other")
    w = pgqrs.worker(store, "other", lambda m: None, poll_interval=0.05)
    run = asyncio.create_task(w.run())
    try:
        await admin.create_schedule("tick", "q", cron="* * * * * *", payload="t")
        deadline = time.monotonic() + 10
        while len(await ready_payloads(store, "q")) < 2:
            assert time.monotonic() < deadline, "the worker fired no schedule"
            await asyncio.sleep(0.1)
        assert set(await ready_payloads(store, "q")) == {"t"}
    finally:
        w.stop()
        await run


async def test_worker_can_leave_schedules_to_others(store: pgqrs.Store) -> None:
    """``fire_schedules=False``: the worker fires nothing; ``fire_due_schedules`` still does."""
    admin = pgqrs.admin(store)
    await admin.create_queue("q")
    w = pgqrs.worker(store, "q", lambda m: None, fire_schedules=False)
    run = asyncio.create_task(w.run())
    try:
        await admin.create_queue("quiet")
        await admin.create_schedule("tick", "quiet", cron="* * * * * *")
        await asyncio.sleep(1.5)
        assert await ready_payloads(store, "quiet") == []
        assert await admin.fire_due_schedules() == 1
    finally:
        w.stop()
        await run
