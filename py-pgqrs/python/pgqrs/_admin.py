"""Administration: schema, queues, metrics, dead letters, workers and workflow runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pgqrs import _json
from pgqrs._store import Store, _at_us
from pgqrs._types import (
    ArchivedJob,
    DeadLetter,
    Fired,
    Job,
    JobPage,
    JobState,
    Pruned,
    QueueInfo,
    QueueMetrics,
    RunStatus,
    ScheduleInfo,
    StepRecord,
    WorkerInfo,
    WorkflowRun,
    to_retention,
    to_seconds,
)
from pgqrs._types import Retention as _Retention
from pgqrs._workflows import WorkflowContext, workflow_name
from pgqrs.errors import ValidationError

_RateLimit = tuple[int, float | timedelta]
"""``(jobs, period)``: at most ``jobs`` started per ``period`` (seconds or a timedelta)."""


def _rate(rate_limit: _RateLimit | None) -> dict[str, Any]:
    """The native keyword arguments of a rate limit (its values are the engine's to check)."""
    if rate_limit is None:
        return {}
    if not isinstance(rate_limit, tuple) or len(rate_limit) != 2:
        raise ValidationError(
            "rate_limit must be (jobs, period), e.g. (100, 60) for 100 jobs a minute, "
            f"got {rate_limit!r:.60}",
            field="rate_limit",
        )
    jobs, period = rate_limit
    return {"rate_limit": jobs, "rate_period": to_seconds(period, "rate_limit")}


class Admin:
    """Administrative operations on a store. Get one with :func:`admin`."""

    __slots__ = ("_native", "_store")

    def __init__(self, store: Store) -> None:
        if not isinstance(store, Store):
            raise TypeError(f"admin() takes a pgqrs.Store, got {type(store).__name__}")
        self._store = store
        self._native = store._native

    async def install(self) -> None:
        """Create or upgrade pgqrs's tables. Idempotent: safe at every start."""
        await self._native.install()

    async def verify(self) -> None:
        """Check every table and index exists at the current schema version."""
        await self._native.verify()

    async def schema_version(self) -> int | None:
        """The installed schema version, or None before :meth:`install`."""
        return await self._native.schema_version()

    async def create_queue(
        self,
        name: str,
        *,
        archive_retention: _Retention | None = None,
        dead_retention: _Retention | None = None,
        concurrency_limit: int | None = None,
        group_concurrency_limit: int | None = None,
        rate_limit: _RateLimit | None = None,
    ) -> QueueInfo:
        """Create a queue (letters, digits, ``_`` and ``-``; at most 48 characters).

        ``archive_retention`` and ``dead_retention`` say how long completed jobs and dead
        letters are kept: seconds, a timedelta, or ``"forever"`` (by default 7 and 30 days).
        Running workers delete what is older in the background; see :meth:`prune`.

        Limits (not given: none), enforced by the claim across every worker and process:
        ``concurrency_limit`` jobs of the queue leased at once, ``group_concurrency_limit``
        jobs of one group (``produce(..., group=...)``) leased at once, and ``rate_limit``
        ``(jobs, period)`` (period in seconds or a timedelta) jobs started per period.
        """
        row = await self._native.create_queue(
            name,
            archive_retention=to_retention(archive_retention, "archive_retention"),
            dead_retention=to_retention(dead_retention, "dead_retention"),
            concurrency_limit=concurrency_limit,
            group_concurrency_limit=group_concurrency_limit,
            **_rate(rate_limit),
        )
        return QueueInfo._from(row)

    async def set_queue_limits(
        self,
        name: str,
        *,
        concurrency_limit: int | None = None,
        group_concurrency_limit: int | None = None,
        rate_limit: _RateLimit | None = None,
    ) -> QueueInfo:
        """Replace a queue's limits as a whole (see :meth:`create_queue`): a limit not given
        is no limit, so ``set_queue_limits(name)`` clears them all. Workers of this store
        apply them at their next claim, other processes within a second. Returns the queue.
        """
        row = await self._native.set_queue_limits(
            name,
            concurrency_limit=concurrency_limit,
            group_concurrency_limit=group_concurrency_limit,
            **_rate(rate_limit),
        )
        return QueueInfo._from(row)

    async def set_queue_retention(
        self,
        name: str,
        *,
        archive_retention: _Retention | None = None,
        dead_retention: _Retention | None = None,
    ) -> QueueInfo:
        """Change how long a queue keeps its archive and dead letters (seconds, a timedelta
        or ``"forever"``; those not given stay as they are). Returns the queue."""
        row = await self._native.set_queue_retention(
            name,
            archive_retention=to_retention(archive_retention, "archive_retention"),
            dead_retention=to_retention(dead_retention, "dead_retention"),
        )
        return QueueInfo._from(row)

    async def workflow_retention(self) -> float | None:
        """Seconds finished workflow runs are kept, for the whole store; None: forever (the
        default)."""
        return await self._native.workflow_retention()

    async def set_workflow_retention(self, retention: _Retention) -> None:
        """Set how long finished workflow runs (succeeded, failed, cancelled) are kept, with
        their steps, counted from when they finished: seconds, a timedelta or ``"forever"``."""
        value = to_retention(retention, "workflow_retention")
        if value is None:
            raise ValidationError(
                'workflow_retention must be seconds, a timedelta or "forever", got None',
                field="workflow_retention",
            )
        await self._native.set_workflow_retention(value)

    async def prune(
        self, queue: str | None = None, older_than: float | timedelta | None = None
    ) -> Pruned:
        """Delete now what is past its retention: the archive and dead letters of ``queue``
        (every queue when None) and, when ``queue`` is None, finished workflow runs.

        ``older_than`` (seconds or a timedelta) replaces the retentions: everything finished
        longer ago than that goes, whatever the settings (0: everything finished until now).
        Deletes 1,000 rows per statement until nothing is left; returns the counts.
        """
        row = await self._native.prune(queue, to_seconds(older_than, "older_than"))
        return Pruned._from(row)

    async def delete_queue(self, name: str, force: bool = False) -> None:
        """Delete a queue with its jobs, archive and dead letters.

        Refused with :class:`~pgqrs.errors.QueueInUseError` while jobs are leased, unless
        ``force``.
        """
        await self._native.delete_queue(name, force=force)

    async def purge_queue(self, name: str) -> int:
        """Delete every pending job of a queue; returns how many. Archive and dead letters stay."""
        return await self._native.purge_queue(name)

    async def list_queues(self) -> list[QueueInfo]:
        """All queues, by name."""
        return [QueueInfo._from(r) for r in await self._native.list_queues()]

    async def queue_metrics(self, name: str) -> QueueMetrics:
        """Ready, delayed, leased, archived and dead counts, and the oldest ready job's age."""
        return QueueMetrics._from(await self._native.queue_metrics(name))

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """Dead letters of a queue, oldest first."""
        return [DeadLetter._from(r) for r in await self._native.dead_letters(queue, limit)]

    async def requeue_dead(self, queue: str, ids: Sequence[int] | None = None) -> int:
        """Put dead letters back in their queue, ready now, attempts reset (all when ``ids``
        is None). Returns how many."""
        return await self._native.requeue_dead(queue, None if ids is None else list(ids))

    async def archived_jobs(self, queue: str, limit: int = 100) -> list[ArchivedJob]:
        """Completed jobs kept in the archive, newest first."""
        return [ArchivedJob._from(r) for r in await self._native.archived_jobs(queue, limit)]

    async def get_job(self, job_id: int) -> Job:
        """The job with this id in any state: waiting, leased, archived or dead.

        Raises :class:`~pgqrs.errors.JobNotFoundError` when no job has it.
        """
        return Job._from(await self._native.get_job(job_id))

    async def list_jobs(
        self,
        queue: str,
        state: JobState,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of the jobs of ``queue`` in ``state``: at most ``limit`` (default 100, at
        most 10,000), after ``cursor`` (the previous page's ``next_cursor``).

        Ready, delayed and leased jobs come in claim order (highest priority first, then
        earliest ``visible_at``, then lowest id); archived jobs newest first; dead jobs by id.
        """
        return JobPage._from(await self._native.list_jobs(queue, state, limit=limit, cursor=cursor))

    async def cancel_job(self, job_id: int) -> Job:
        """Delete a waiting (ready or delayed) job; returns it as it was.

        Never both with a claim: a job claimed at the same moment is not cancelled. A leased,
        archived or dead job raises :class:`~pgqrs.errors.JobStateError`; an unknown id
        :class:`~pgqrs.errors.JobNotFoundError`.
        """
        return Job._from(await self._native.cancel_job(job_id))

    async def retry_job(self, job_id: int) -> Job:
        """Put a dead job back in its queue, ready now, attempts reset; returns it as stored.

        A job that is not dead raises :class:`~pgqrs.errors.JobStateError`.
        """
        return Job._from(await self._native.retry_job(job_id))

    async def reschedule_job(
        self,
        job_id: int,
        *,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
    ) -> Job:
        """Make a waiting job claimable after ``delay`` (``0``: now) or at ``at`` (an aware
        datetime); give exactly one. Returns the job as changed.

        A leased, archived or dead job raises :class:`~pgqrs.errors.JobStateError`.
        """
        row = await self._native.reschedule_job(
            job_id, delay=to_seconds(delay, "delay"), at_us=_at_us(at)
        )
        return Job._from(row)

    async def set_job_priority(self, job_id: int, priority: int) -> Job:
        """Change a waiting job's priority (-32768 to 32767, higher runs first); returns the
        job as changed. A leased, archived or dead job raises
        :class:`~pgqrs.errors.JobStateError`."""
        return Job._from(await self._native.set_job_priority(job_id, priority))

    async def create_schedule(
        self,
        name: str,
        queue: str,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        timezone: str | None = None,
        payload: Any = None,
        catch_up: int | None = None,
        workflow: str | Callable[..., Any] | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
    ) -> ScheduleInfo:
        """Make a job on ``queue`` at each tick of a cron expression or of an interval; give
        exactly one of ``cron`` and ``every``.

        ``cron``: 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds
        first, read in ``timezone`` (an IANA name, default ``"UTC"``). ``every``: seconds or a
        timedelta (at least 1 s), counted from now. Every running worker (of any queue) fires
        due ticks, each tick making exactly one job however many run; :meth:`fire_due_schedules`
        does it without a worker.

        ``catch_up`` is the policy for ticks missed while no worker ran: 0 (the default) fires
        only a tick at most 60 s late and skips the rest; ``n`` (up to 1,000) fires the ``n``
        latest missed ticks, however late. ``workflow`` (a name or a ``@workflow`` function)
        starts a run at each tick, with ``payload`` as its input, instead of a plain job.
        Raises :class:`~pgqrs.errors.ScheduleAlreadyExistsError` if the name is taken, and
        :class:`~pgqrs.errors.ValidationError` (saying how to fix it) for a bad expression,
        time zone, interval or ``catch_up``.
        """
        wf = workflow if workflow is None or isinstance(workflow, str) else workflow_name(workflow)
        row = await self._native.create_schedule(
            name,
            queue,
            cron=cron,
            every=to_seconds(every, "every"),
            timezone=timezone,
            payload_json=_json.dumps(payload, "payload"),
            catch_up=catch_up,
            workflow=wf,
            priority=priority,
            max_attempts=max_attempts,
        )
        return ScheduleInfo._from(row)

    async def get_schedule(self, name: str) -> ScheduleInfo:
        """A schedule; :class:`~pgqrs.errors.ScheduleNotFoundError` if there is none."""
        return ScheduleInfo._from(await self._native.get_schedule(name))

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule, by name."""
        return [ScheduleInfo._from(r) for r in await self._native.list_schedules()]

    async def pause_schedule(self, name: str) -> ScheduleInfo:
        """Pause a schedule: no tick fires until :meth:`resume_schedule`."""
        return ScheduleInfo._from(await self._native.pause_schedule(name))

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """Resume a paused schedule from its first tick after now (the pause's ticks are
        not fired)."""
        return ScheduleInfo._from(await self._native.resume_schedule(name))

    async def delete_schedule(self, name: str) -> None:
        """Delete a schedule; the jobs it made stay."""
        await self._native.delete_schedule(name)

    async def trigger_schedule(self, name: str) -> Fired:
        """Fire a schedule now, once, paused or not: one more job (or run); its ticks do not
        move."""
        return Fired._from(await self._native.trigger_schedule(name))

    async def fire_due_schedules(self) -> int:
        """Fire every due tick of every schedule now, as running workers do; returns how many
        jobs were made. For programs that run no worker."""
        return await self._native.fire_due_schedules()

    async def list_workers(self) -> list[WorkerInfo]:
        """Registered workers, newest first. See :meth:`WorkerInfo.is_healthy`."""
        return [WorkerInfo._from(r) for r in await self._native.list_workers()]

    async def create_workflow(self, name: str, input: Any = None) -> WorkflowContext:
        """Create a workflow run and return its context; pass it to the workflow function."""
        native = await self._native.create_workflow(name, _json.dumps(input, "workflow input"))
        return WorkflowContext(self._store, native)

    async def get_workflow(self, run_id: int) -> WorkflowContext:
        """The context of an existing run, to resume it after a crash or to query it."""
        return WorkflowContext(self._store, await self._native.get_workflow(run_id))

    async def enqueue_workflow(
        self, queue: str, workflow: str | Callable[..., Any], input: Any = None
    ) -> WorkflowRun:
        """Create a run and ask for it on ``queue``; a :func:`pgqrs.workflow_worker` runs it."""
        name = workflow if isinstance(workflow, str) else workflow_name(workflow)
        row = await self._native.enqueue_workflow(queue, name, _json.dumps(input, "workflow input"))
        return WorkflowRun._from(row)

    async def workflow_run(self, run_id: int) -> WorkflowRun:
        """A run as stored now."""
        return WorkflowRun._from(await self._native.workflow_run(run_id))

    async def workflow_steps(self, run_id: int) -> list[StepRecord]:
        """The journaled steps of a run, in order."""
        return [StepRecord._from(r) for r in await self._native.workflow_steps(run_id)]

    async def list_workflows(
        self, status: RunStatus | None = None, limit: int = 1000
    ) -> list[WorkflowRun]:
        """Runs, oldest first, optionally only those with ``status``."""
        return [WorkflowRun._from(r) for r in await self._native.list_workflows(status, limit)]

    async def cancel_workflow(self, run_id: int) -> bool:
        """Cancel a run: it starts no new step and ends ``cancelled``. False if already done."""
        return await self._native.cancel_workflow(run_id)


def admin(store: Store) -> Admin:
    """Administrative operations on ``store``."""
    return Admin(store)
